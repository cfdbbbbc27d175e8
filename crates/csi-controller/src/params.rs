//! StorageClass parameters (listed in docs/tns-csi.md): parsed, validated, and every mistake
//! reported as `InvalidArgument` naming the parameter and what it accepts.

use std::collections::{BTreeMap, HashMap};

use crate::error::ControllerError;
use csi_api::Protocol;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use truenas::api::{Compression, VolBlockSize};

/// What to do with the data when the PV is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteStrategy {
    Delete,
    Retain,
}

impl DeleteStrategy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Retain => "retain",
        }
    }
}

/// Validated StorageClass parameters.
#[derive(Debug, Clone)]
pub(crate) struct VolumeParams {
    pub(crate) protocol: Protocol,
    pub(crate) pool: String,
    pub(crate) parent: String,
    pub(crate) server: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) fs_type: String,
    pub(crate) delete_strategy: DeleteStrategy,
    pub(crate) detached: bool,
    pub(crate) allow_any_host: bool,
    pub(crate) nfs_hosts: Vec<String>,
    pub(crate) nfs_networks: Vec<String>,
    pub(crate) nfs_maproot_user: String,
    pub(crate) nfs_maproot_group: String,
    pub(crate) smb_browsable: bool,
    pub(crate) compression: Option<Compression>,
    pub(crate) sync: Option<String>,
    /// Further dataset fields, by API name, already in TrueNAS's form.
    pub(crate) dataset_properties: Vec<(String, Value)>,
    pub(crate) recordsize: Option<String>,
    pub(crate) volblocksize: VolBlockSize,
    pub(crate) sparse: bool,
    pub(crate) encryption: bool,
    pub(crate) encryption_algorithm: Option<String>,
    /// TrueNAS generates (and keeps) the key.
    pub(crate) encryption_generate_key: bool,
    pub(crate) name_prefix: String,
    pub(crate) name_suffix: String,
    pub(crate) name_template: Option<String>,
    pub(crate) comment_template: Option<String>,
    pub(crate) mark_adoptable: bool,
    pub(crate) adopt_existing: bool,
    pub(crate) pvc_name: Option<String>,
    pub(crate) pvc_namespace: Option<String>,
    /// The configured TrueNAS system to create on (`None`: chosen by topology).
    pub(crate) system: Option<String>,
    /// Digest of the parameters that shape the volume (same name + other digest = AlreadyExists).
    pub(crate) digest: String,
}

const KNOWN: &[&str] = &[
    "system",
    "protocol",
    "pool",
    "parentDataset",
    "server",
    "port",
    "fsType",
    "deleteStrategy",
    "detached",
    "allowAnyHost",
    "nfs.hosts",
    "nfs.networks",
    "nfs.maprootUser",
    "nfs.maprootGroup",
    "smb.browsable",
    "zfs.compression",
    "zfs.dedup",
    "zfs.atime",
    "zfs.sync",
    "zfs.recordsize",
    "zfs.copies",
    "zfs.snapdir",
    "zfs.readonly",
    "zfs.exec",
    "zfs.aclmode",
    "zfs.acltype",
    "zfs.casesensitivity",
    "zfs.volblocksize",
    "zfs.sparse",
    "encryption",
    "encryptionAlgorithm",
    "encryptionGenerateKey",
    "namePrefix",
    "nameSuffix",
    "nameTemplate",
    "commentTemplate",
    "markAdoptable",
    "adoptExisting",
];

/// Parameters Kubernetes sidecars add (`csi.storage.k8s.io/pvc/name`, …).
const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

/// The longest comment put on a dataset or share (TrueNAS keeps share comments short, and
/// every request must fit its 64 KiB message limit).
const MAX_COMMENT: usize = 1024;

fn bad(parameter: &str, message: impl std::fmt::Display) -> ControllerError {
    ControllerError::invalid_argument(format!("StorageClass parameter `{parameter}`: {message}"))
}

fn boolean(
    params: &HashMap<String, String>,
    key: &str,
    default: bool,
) -> Result<bool, ControllerError> {
    match params.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(bad(key, format!("`{v}` is not true or false"))),
    }
}

fn one_of(
    params: &HashMap<String, String>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, ControllerError> {
    match params.get(key) {
        None => Ok(None),
        Some(value) => {
            let upper = value.trim().to_ascii_uppercase();
            if allowed.contains(&upper.as_str()) {
                Ok(Some(upper))
            } else {
                Err(bad(
                    key,
                    format!(
                        "`{value}` is not one of {}",
                        allowed.join(", ").to_lowercase()
                    ),
                ))
            }
        }
    }
}

fn list(params: &HashMap<String, String>, key: &str) -> Vec<String> {
    params
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn dataset_component(key: &str, value: &str) -> Result<(), ControllerError> {
    let ok = value.split('/').all(|c| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-:.".contains(ch))
    });
    if ok {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("`{value}` is not a valid ZFS dataset name"),
        ))
    }
}

impl VolumeParams {
    /// Parses the parameters of a CreateVolume (or GetCapacity) request.
    pub(crate) fn parse(params: &HashMap<String, String>) -> Result<Self, ControllerError> {
        let mut unknown: Vec<&str> = params
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN.contains(k) && !k.starts_with(SIDECAR_PREFIX))
            .collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            return Err(ControllerError::invalid_argument(format!(
                "unknown StorageClass parameter(s): {}; see the tns-csi StorageClass reference",
                unknown.join(", ")
            )));
        }
        let system = match params.get("system") {
            None => None,
            Some(name) if csi_api::valid_system_name(name) => Some(name.clone()),
            Some(name) => {
                return Err(bad(
                    "system",
                    format!(
                        "`{name}` is not a system name (lowercase letters, digits and -, as in the driver's config)"
                    ),
                ));
            }
        };
        let protocol: Protocol = params
            .get("protocol")
            .ok_or_else(|| bad("protocol", "required: nfs, smb, nvmeof or iscsi"))?
            .parse()
            .map_err(|err| bad("protocol", err))?;
        let pool = params
            .get("pool")
            .ok_or_else(|| bad("pool", "required: the ZFS pool to create volumes in"))?
            .clone();
        dataset_component("pool", &pool)?;
        if pool.contains('/') {
            return Err(bad(
                "pool",
                "a pool name has no `/`; put the rest in parentDataset",
            ));
        }
        let parent = params
            .get("parentDataset")
            .cloned()
            .unwrap_or_else(|| "csi".into());
        dataset_component("parentDataset", &parent)?;
        let port = match params.get("port") {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("port", format!("`{p}` is not a TCP port")))?,
            ),
        };
        let fs_type = match params.get("fsType").map(|v| v.to_ascii_lowercase()) {
            None => "ext4".to_owned(),
            Some(v) if v == "ext4" || v == "xfs" => v,
            Some(v) => return Err(bad("fsType", format!("`{v}` is not ext4 or xfs"))),
        };
        let delete_strategy = match params.get("deleteStrategy").map(|v| v.to_ascii_lowercase()) {
            None => DeleteStrategy::Delete,
            Some(v) if v == "delete" => DeleteStrategy::Delete,
            Some(v) if v == "retain" => DeleteStrategy::Retain,
            Some(v) => {
                return Err(bad(
                    "deleteStrategy",
                    format!("`{v}` is not delete or retain"),
                ));
            }
        };
        let compression = match params.get("zfs.compression") {
            None => None,
            Some(v) => Some(Compression::parse(v).map_err(|err| bad("zfs.compression", err))?),
        };
        let sync = one_of(params, "zfs.sync", &["STANDARD", "ALWAYS", "DISABLED"])?;
        let mut dataset_properties = Vec::new();
        let fs_only = [
            ("zfs.atime", "atime", &["ON", "OFF"][..]),
            ("zfs.exec", "exec", &["ON", "OFF"][..]),
            (
                "zfs.snapdir",
                "snapdir",
                &["VISIBLE", "HIDDEN", "DISABLED"][..],
            ),
            (
                "zfs.aclmode",
                "aclmode",
                &["PASSTHROUGH", "RESTRICTED", "DISCARD"][..],
            ),
            ("zfs.acltype", "acltype", &["OFF", "NFSV4", "POSIX"][..]),
            (
                "zfs.casesensitivity",
                "casesensitivity",
                &["SENSITIVE", "INSENSITIVE"][..],
            ),
        ];
        for (key, field, allowed) in fs_only {
            if let Some(value) = one_of(params, key, allowed)? {
                if protocol.is_block() {
                    return Err(bad(
                        key,
                        format!("applies to filesystems, not {protocol} zvols"),
                    ));
                }
                dataset_properties.push((field.to_owned(), json!(value)));
            }
        }
        for (key, field, allowed) in [
            ("zfs.dedup", "deduplication", &["ON", "OFF", "VERIFY"][..]),
            ("zfs.readonly", "readonly", &["ON", "OFF"][..]),
        ] {
            if let Some(value) = one_of(params, key, allowed)? {
                dataset_properties.push((field.to_owned(), json!(value)));
            }
        }
        if let Some(copies) = params.get("zfs.copies") {
            let n = copies
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=3).contains(n))
                .ok_or_else(|| bad("zfs.copies", format!("`{copies}` is not 1, 2 or 3")))?;
            dataset_properties.push(("copies".into(), json!(n)));
        }
        let recordsize = match params.get("zfs.recordsize") {
            None => None,
            Some(_) if protocol.is_block() => {
                return Err(bad(
                    "zfs.recordsize",
                    "applies to filesystems; use zfs.volblocksize for zvols",
                ));
            }
            Some(v) => {
                let upper = v.trim().to_ascii_uppercase();
                const SIZES: &[&str] = &[
                    "512", "1K", "2K", "4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K",
                    "1M", "2M", "4M", "8M", "16M",
                ];
                if !SIZES.contains(&upper.as_str()) {
                    return Err(bad(
                        "zfs.recordsize",
                        format!("`{v}` is not a power of two from 512 to 16M (e.g. 128K)"),
                    ));
                }
                Some(upper)
            }
        };
        let volblocksize = match params.get("zfs.volblocksize") {
            None => VolBlockSize::DEFAULT,
            Some(_) if !protocol.is_block() => {
                return Err(bad("zfs.volblocksize", "applies to zvols (nvmeof, iscsi)"));
            }
            Some(v) => VolBlockSize::parse(v).map_err(|err| bad("zfs.volblocksize", err))?,
        };
        if params.contains_key("zfs.sparse") && !protocol.is_block() {
            return Err(bad("zfs.sparse", "applies to zvols (nvmeof, iscsi)"));
        }
        let encryption = boolean(params, "encryption", false)?;
        let encryption_algorithm = one_of(
            params,
            "encryptionAlgorithm",
            &[
                "AES-128-CCM",
                "AES-192-CCM",
                "AES-256-CCM",
                "AES-128-GCM",
                "AES-192-GCM",
                "AES-256-GCM",
            ],
        )?;
        let encryption_generate_key = boolean(params, "encryptionGenerateKey", false)?;
        if !encryption && (encryption_generate_key || params.contains_key("encryptionAlgorithm")) {
            return Err(bad(
                if encryption_generate_key {
                    "encryptionGenerateKey"
                } else {
                    "encryptionAlgorithm"
                },
                "applies only with encryption: \"true\"",
            ));
        }
        let name_template = params.get("nameTemplate").cloned();
        if let Some(template) = &name_template {
            let rest = template
                .replace("{pvc_namespace}", "")
                .replace("{pvc_name}", "")
                .replace("{name}", "");
            if rest.contains('{') || rest.contains('}') {
                return Err(bad(
                    "nameTemplate",
                    "only {name}, {pvc_namespace} and {pvc_name} may be used",
                ));
            }
        }
        if (protocol == Protocol::Nfs || protocol == Protocol::Smb)
            && params.contains_key("allowAnyHost")
        {
            return Err(bad(
                "allowAnyHost",
                "applies to nvmeof and iscsi; use nfs.hosts / nfs.networks for NFS",
            ));
        }
        let nfs_networks = list(params, "nfs.networks");
        for net in &nfs_networks {
            let (ip, prefix) = net.split_once('/').unwrap_or((net, "32"));
            if ip.parse::<std::net::IpAddr>().is_err() || prefix.parse::<u8>().is_err() {
                return Err(bad(
                    "nfs.networks",
                    format!("`{net}` is not a CIDR network (e.g. 10.0.0.0/24)"),
                ));
            }
        }
        let shaping: BTreeMap<&String, &String> = params
            .iter()
            .filter(|(k, _)| {
                !k.starts_with(SIDECAR_PREFIX)
                    && !matches!(
                        k.as_str(),
                        "deleteStrategy" | "markAdoptable" | "adoptExisting" | "commentTemplate"
                    )
            })
            .collect();
        let digest = Sha256::digest(serde_json::to_vec(&shaping).unwrap_or_default());
        Ok(Self {
            protocol,
            pool,
            parent,
            server: params.get("server").cloned(),
            port,
            fs_type,
            delete_strategy,
            detached: boolean(params, "detached", false)?,
            allow_any_host: boolean(params, "allowAnyHost", false)?,
            nfs_hosts: list(params, "nfs.hosts"),
            nfs_networks,
            nfs_maproot_user: params
                .get("nfs.maprootUser")
                .cloned()
                .unwrap_or_else(|| "root".into()),
            nfs_maproot_group: params
                .get("nfs.maprootGroup")
                .cloned()
                .unwrap_or_else(|| "wheel".into()),
            smb_browsable: boolean(params, "smb.browsable", true)?,
            compression,
            sync,
            dataset_properties,
            recordsize,
            volblocksize,
            sparse: boolean(params, "zfs.sparse", true)?,
            encryption,
            encryption_algorithm,
            encryption_generate_key,
            name_prefix: params.get("namePrefix").cloned().unwrap_or_default(),
            name_suffix: params.get("nameSuffix").cloned().unwrap_or_default(),
            name_template,
            comment_template: params.get("commentTemplate").cloned(),
            mark_adoptable: boolean(params, "markAdoptable", false)?,
            adopt_existing: boolean(params, "adoptExisting", false)?,
            pvc_name: params.get("csi.storage.k8s.io/pvc/name").cloned(),
            pvc_namespace: params.get("csi.storage.k8s.io/pvc/namespace").cloned(),
            system,
            digest: digest.iter().take(8).map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// The dataset that holds this class's volumes.
    pub(crate) fn parent_dataset(&self) -> String {
        format!("{}/{}", self.pool, self.parent)
    }

    /// The volume's dataset name from the CSI name and the naming parameters.
    pub(crate) fn volume_name(&self, csi_name: &str) -> Result<String, ControllerError> {
        let base = match &self.name_template {
            Some(template) => {
                let ns = self.pvc_namespace.as_deref().ok_or_else(|| bad("nameTemplate", "needs the external-provisioner's --extra-create-metadata (PVC namespace missing)"))?;
                let pvc = self.pvc_name.as_deref().ok_or_else(|| bad("nameTemplate", "needs the external-provisioner's --extra-create-metadata (PVC name missing)"))?;
                template
                    .replace("{pvc_namespace}", ns)
                    .replace("{pvc_name}", pvc)
                    .replace("{name}", csi_name)
            }
            None => csi_name.to_owned(),
        };
        let raw = format!("{}{base}{}", self.name_prefix, self.name_suffix);
        let parent = self.parent_dataset();
        crate::names::dataset_component(&raw, &parent).ok_or_else(|| {
            bad(
                "parentDataset",
                format!("{parent} is too long to hold volumes under libzfs's 255-byte limit"),
            )
        })
    }

    /// Refuses a `commentTemplate` whose comment for `volume` TrueNAS would not take.
    pub(crate) fn check_comment(&self, volume: &str) -> Result<(), ControllerError> {
        if let Some(template) = &self.comment_template {
            let comment = self.comment(volume);
            if comment.len() > MAX_COMMENT {
                return Err(bad(
                    "commentTemplate",
                    format!(
                        "renders to {} bytes for this volume (template {} bytes); TrueNAS comments hold at most {MAX_COMMENT}",
                        comment.len(),
                        template.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The comment stored on shares and datasets.
    pub(crate) fn comment(&self, volume: &str) -> String {
        match &self.comment_template {
            Some(template) => template
                .replace(
                    "{pvc_namespace}",
                    self.pvc_namespace.as_deref().unwrap_or(""),
                )
                .replace("{pvc_name}", self.pvc_name.as_deref().unwrap_or(""))
                .replace("{name}", volume),
            None => format!("tns-csi volume {volume}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<VolumeParams, ControllerError> {
        VolumeParams::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn every_mistake_names_the_parameter() {
        let base = [("protocol", "nfs"), ("pool", "tank")];
        assert!(parse(&base).is_ok());
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("pool", "tank")], "`protocol`"),
            (&[("protocol", "ftp"), ("pool", "tank")], "`protocol`"),
            (&[("protocol", "nfs")], "`pool`"),
            (
                &[("protocol", "nfs"), ("pool", "tank"), ("bogus", "1")],
                "bogus",
            ),
            (
                &[
                    ("protocol", "nfs"),
                    ("pool", "tank"),
                    ("zfs.compression", "brotli"),
                ],
                "`zfs.compression`",
            ),
            (
                &[
                    ("protocol", "nvmeof"),
                    ("pool", "tank"),
                    ("fsType", "btrfs"),
                ],
                "`fsType`",
            ),
            (
                &[
                    ("protocol", "nfs"),
                    ("pool", "tank"),
                    ("zfs.volblocksize", "16K"),
                ],
                "`zfs.volblocksize`",
            ),
            (
                &[
                    ("protocol", "iscsi"),
                    ("pool", "tank"),
                    ("zfs.recordsize", "1M"),
                ],
                "`zfs.recordsize`",
            ),
            (
                &[
                    ("protocol", "nfs"),
                    ("pool", "tank"),
                    ("deleteStrategy", "keep"),
                ],
                "`deleteStrategy`",
            ),
            (
                &[
                    ("protocol", "nfs"),
                    ("pool", "tank"),
                    ("nfs.networks", "10.0.0.0/33x"),
                ],
                "`nfs.networks`",
            ),
            (
                &[("protocol", "nfs"), ("pool", "tank"), ("port", "99999")],
                "`port`",
            ),
            (&[("protocol", "nfs"), ("pool", "tank/x")], "`pool`"),
            (
                &[
                    ("protocol", "nfs"),
                    ("pool", "tank"),
                    ("nameTemplate", "{oops}"),
                ],
                "`nameTemplate`",
            ),
            (
                &[
                    ("protocol", "nfs"),
                    ("pool", "tank"),
                    ("allowAnyHost", "true"),
                ],
                "`allowAnyHost`",
            ),
        ];
        for (pairs, needle) in cases {
            let err = parse(pairs).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().contains(needle),
                "{needle}: {}",
                err.message()
            );
        }
        let sidecar = parse(&[
            ("protocol", "nfs"),
            ("pool", "tank"),
            ("csi.storage.k8s.io/pvc/name", "data"),
        ])
        .unwrap();
        assert_eq!(sidecar.pvc_name.as_deref(), Some("data"));
    }

    #[test]
    fn names_and_digest() {
        let p = parse(&[
            ("protocol", "nfs"),
            ("pool", "tank"),
            ("namePrefix", "k8s-"),
            ("csi.storage.k8s.io/pvc/name", "a"),
        ])
        .unwrap();
        assert_eq!(p.volume_name("pvc-1").unwrap(), "k8s-pvc-1");
        let t = parse(&[
            ("protocol", "nfs"),
            ("pool", "tank"),
            ("nameTemplate", "{pvc_namespace}-{pvc_name}"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "ml"),
        ])
        .unwrap();
        assert_eq!(t.volume_name("pvc-1").unwrap(), "ml-data");
        assert_ne!(p.digest, t.digest);
        let same = parse(&[
            ("protocol", "nfs"),
            ("pool", "tank"),
            ("namePrefix", "k8s-"),
            ("csi.storage.k8s.io/pvc/name", "b"),
        ])
        .unwrap();
        assert_eq!(
            p.digest, same.digest,
            "sidecar keys do not change the digest"
        );
        // Any CSI name maps to a valid dataset component (names::dataset_component).
        assert!(
            p.volume_name("bad name")
                .unwrap()
                .starts_with("k8s-bad-name-")
        );
        let plain = parse(&[("protocol", "nfs"), ("pool", "tank")]).unwrap();
        assert!(plain.volume_name("..").unwrap().starts_with("vol-"));
        assert!(plain.volume_name(".hidden").unwrap().starts_with("hidden-"));
        assert!(
            parse(&[
                ("protocol", "nfs"),
                ("pool", "tank"),
                ("parentDataset", "a/../b")
            ])
            .is_err()
        );
    }
}
