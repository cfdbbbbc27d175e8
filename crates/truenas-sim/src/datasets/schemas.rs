//! The argument schemas of `pool.dataset.create` and `.update`, as strict as the 25.10 models.

use crate::schema::{self, Ty, list, null, opt, req};

use super::*;

pub(crate) fn compression_ok(value: &str) -> bool {
    const PLAIN: &[&str] = &[
        "ON",
        "OFF",
        "LZ4",
        "GZIP",
        "ZSTD",
        "ZSTD-FAST",
        "ZLE",
        "LZJB",
        "INHERIT",
    ];
    let level = |prefix: &str, ok: &dyn Fn(u32) -> bool| {
        value
            .strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .is_some_and(ok)
    };
    PLAIN.contains(&value)
        || level("GZIP-", &|n| (1..=9).contains(&n))
        || level("ZSTD-FAST-", &|n| {
            (1..=10).contains(&n)
                || (n % 10 == 0 && (20..=100).contains(&n))
                || n == 500
                || n == 1000
        })
        || (!value.starts_with("ZSTD-FAST") && level("ZSTD-", &|n| (1..=19).contains(&n)))
}

pub(crate) const ONOFF: &[&str] = &["ON", "OFF", "INHERIT"];

pub(crate) fn common_fields(update: bool) -> Vec<schema::Field> {
    let mut fields = vec![
        opt("comments", Ty::Str),
        opt(
            "sync",
            Ty::Lit(&["STANDARD", "ALWAYS", "DISABLED", "INHERIT"]),
        ),
        opt(
            "compression",
            Ty::Pred(
                compression_ok,
                "Input should be 'ON', 'OFF', 'LZ4', 'GZIP', 'GZIP-1'…'GZIP-9', 'ZSTD', 'ZSTD-1'…'ZSTD-19', 'ZSTD-FAST', 'ZSTD-FAST-N', 'ZLE', 'LZJB' or 'INHERIT'",
            ),
        ),
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
        opt("force_size", Ty::Bool),
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
        req("type", Ty::Lit(&["VOLUME"])),
        req("volsize", Ty::Int),
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
