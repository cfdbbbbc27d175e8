//! The argument schemas of `pool.dataset.create` and `.update`, as strict as the 25.10 models.

use crate::schema::{self, Ty, list, null, opt, req};

use super::*;

/// The 25.10 model's compression literals, exactly (GZIP has levels 1 and 9 only).
pub(crate) const COMPRESSION: &[&str] = &[
    "ON",
    "OFF",
    "LZ4",
    "GZIP",
    "GZIP-1",
    "GZIP-9",
    "ZSTD",
    "ZSTD-FAST",
    "ZLE",
    "LZJB",
    "ZSTD-1",
    "ZSTD-2",
    "ZSTD-3",
    "ZSTD-4",
    "ZSTD-5",
    "ZSTD-6",
    "ZSTD-7",
    "ZSTD-8",
    "ZSTD-9",
    "ZSTD-10",
    "ZSTD-11",
    "ZSTD-12",
    "ZSTD-13",
    "ZSTD-14",
    "ZSTD-15",
    "ZSTD-16",
    "ZSTD-17",
    "ZSTD-18",
    "ZSTD-19",
    "ZSTD-FAST-1",
    "ZSTD-FAST-2",
    "ZSTD-FAST-3",
    "ZSTD-FAST-4",
    "ZSTD-FAST-5",
    "ZSTD-FAST-6",
    "ZSTD-FAST-7",
    "ZSTD-FAST-8",
    "ZSTD-FAST-9",
    "ZSTD-FAST-10",
    "ZSTD-FAST-20",
    "ZSTD-FAST-30",
    "ZSTD-FAST-40",
    "ZSTD-FAST-50",
    "ZSTD-FAST-60",
    "ZSTD-FAST-70",
    "ZSTD-FAST-80",
    "ZSTD-FAST-90",
    "ZSTD-FAST-100",
    "ZSTD-FAST-500",
    "ZSTD-FAST-1000",
    "INHERIT",
];

pub(crate) const ONOFF: &[&str] = &["ON", "OFF", "INHERIT"];

pub(crate) fn common_fields(update: bool) -> Vec<schema::Field> {
    let mut fields = vec![
        opt("comments", Ty::Str),
        opt(
            "sync",
            Ty::Lit(&["STANDARD", "ALWAYS", "DISABLED", "INHERIT"]),
        ),
        opt("compression", Ty::Lit(COMPRESSION)),
        opt("exec", Ty::Lit(ONOFF)),
        opt("readonly", Ty::Lit(ONOFF)),
        opt(
            "deduplication",
            Ty::Lit(&["ON", "VERIFY", "OFF", "INHERIT"]),
        ),
        opt(
            "checksum",
            Ty::Lit(&[
                "ON",
                "OFF",
                "FLETCHER2",
                "FLETCHER4",
                "SHA256",
                "SHA512",
                "SKEIN",
                "EDONR",
                "BLAKE3",
                "INHERIT",
            ]),
        ),
        opt(
            "snapdir",
            Ty::Lit(&["DISABLED", "VISIBLE", "HIDDEN", "INHERIT"]),
        ),
        opt("snapdev", Ty::Lit(&["HIDDEN", "VISIBLE", "INHERIT"])),
        opt("copies", Ty::IntOr(&["INHERIT"])),
        opt("reservation", Ty::Int),
        opt("refreservation", Ty::Int),
        opt("special_small_block_size", Ty::IntOr(&["INHERIT"])),
        opt("managedby", Ty::Str),
        opt("quota_warning", Ty::IntOr(&["INHERIT"])),
        opt("quota_critical", Ty::IntOr(&["INHERIT"])),
        opt("refquota_warning", Ty::IntOr(&["INHERIT"])),
        opt("refquota_critical", Ty::IntOr(&["INHERIT"])),
        opt(
            "user_properties",
            list(Ty::Obj(vec![req("key", Ty::Str), req("value", Ty::Str)])),
        ),
    ];
    if !update {
        fields.extend([
            opt(
                "share_type",
                Ty::Lit(&["GENERIC", "NFS", "SMB", "MULTIPROTOCOL", "APPS"]),
            ),
            opt("encryption", Ty::Bool),
            opt("inherit_encryption", Ty::Bool),
            opt(
                "encryption_options",
                Ty::Obj(vec![
                    opt("generate_key", Ty::Bool),
                    opt("pbkdf2iters", Ty::Int),
                    opt(
                        "algorithm",
                        Ty::Lit(&[
                            "AES-128-CCM",
                            "AES-192-CCM",
                            "AES-256-CCM",
                            "AES-128-GCM",
                            "AES-192-GCM",
                            "AES-256-GCM",
                        ]),
                    ),
                    opt("passphrase", null(Ty::Str)),
                    opt("key", null(Ty::Str)),
                ]),
            ),
            opt("create_ancestors", Ty::Bool),
        ]);
    }
    fields
}

pub(crate) fn fs_fields() -> Vec<schema::Field> {
    vec![
        opt(
            "aclmode",
            Ty::Lit(&["PASSTHROUGH", "RESTRICTED", "DISCARD", "INHERIT"]),
        ),
        opt("acltype", Ty::Lit(&["OFF", "NFSV4", "POSIX", "INHERIT"])),
        opt("atime", Ty::Lit(ONOFF)),
        opt("quota", null(Ty::Int)),
        opt("refquota", null(Ty::Int)),
        opt("recordsize", Ty::Str),
    ]
}

pub(crate) fn create_schema() -> Ty {
    let mut fs = vec![
        req("name", Ty::Str),
        opt("type", Ty::Lit(&["FILESYSTEM"])),
        opt(
            "casesensitivity",
            Ty::Lit(&["SENSITIVE", "INSENSITIVE", "INHERIT"]),
        ),
    ];
    fs.extend(common_fields(false));
    fs.extend(fs_fields());
    let mut vol = vec![
        req("name", Ty::Str),
        // Optional: a body with `volsize` and no `type` is a volume (the filesystem branch
        // refuses `volsize` as an extra input).
        opt("type", Ty::Lit(&["VOLUME"])),
        req("volsize", Ty::Int),
        opt("force_size", Ty::Bool),
        opt("volblocksize", Ty::Lit(VOLBLOCKSIZES)),
        opt("sparse", Ty::Bool),
    ];
    vol.extend(common_fields(false));
    Ty::Union(vec![
        ("PoolDatasetCreateFilesystem", Ty::Obj(fs)),
        ("PoolDatasetCreateVolume", Ty::Obj(vol)),
    ])
}

pub(crate) fn update_schema() -> Ty {
    let mut fields = common_fields(true);
    fields.extend(fs_fields());
    fields.extend([
        opt("volsize", Ty::Int),
        opt("force_size", Ty::Bool),
        opt(
            "user_properties_update",
            list(Ty::Obj(vec![
                req("key", Ty::Str),
                opt("value", Ty::Str),
                opt("remove", Ty::Bool),
            ])),
        ),
    ]);
    Ty::Obj(fields)
}
