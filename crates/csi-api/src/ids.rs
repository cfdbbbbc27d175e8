//! Volume and snapshot ids: self-describing, so a restarted controller finds everything on
//! TrueNAS with exact lookups and no local state.
//!
//! - volume: `[<system>:]<protocol>:<dataset>` e.g. `nfs:tank/csi/pvc-1` or
//!   `nas-b:nfs:tank/csi/pvc-1`
//! - snapshot: `<volume id>@<snapshot>` e.g. `nfs:tank/csi/pvc-1@snapshot-2`
//!
//! The system is the name of a configured TrueNAS system; an id without one was made by a
//! single-system deployment and belongs to the default system.

use std::fmt;
use std::str::FromStr;

/// How a volume reaches its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A dataset exported over NFS.
    Nfs,
    /// A dataset shared over SMB.
    Smb,
    /// A zvol exposed over NVMe-oF/TCP.
    Nvmeof,
    /// A zvol exposed over iSCSI.
    Iscsi,
}

impl Protocol {
    /// The StorageClass spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nfs => "nfs",
            Self::Smb => "smb",
            Self::Nvmeof => "nvmeof",
            Self::Iscsi => "iscsi",
        }
    }

    /// Block protocols carry a zvol; file protocols a filesystem dataset.
    pub fn is_block(self) -> bool {
        matches!(self, Self::Nvmeof | Self::Iscsi)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        match text {
            "nfs" => Ok(Self::Nfs),
            "smb" => Ok(Self::Smb),
            "nvmeof" => Ok(Self::Nvmeof),
            "iscsi" => Ok(Self::Iscsi),
            other => Err(IdError(format!(
                "unknown protocol `{other}`; expected nfs, smb, nvmeof or iscsi"
            ))),
        }
    }
}

/// Why an id cannot be one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

fn valid_dataset(dataset: &str) -> bool {
    dataset.contains('/')
        && !dataset.contains('@')
        && dataset.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-:.".contains(ch))
        })
}

/// Whether `name` can be a system name in an id: a DNS label (lowercase letters, digits and
/// `-`, at most 63) that is not a protocol name, so `nfs:tank/x` never reads as a system.
pub fn valid_system_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.parse::<Protocol>().is_err()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A volume id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeId {
    /// The TrueNAS system it lives on; `None` for an id of a single-system deployment.
    pub system: Option<String>,
    /// How it is attached.
    pub protocol: Protocol,
    /// Its dataset or zvol on TrueNAS.
    pub dataset: String,
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(system) = &self.system {
            write!(f, "{system}:")?;
        }
        write!(f, "{}:{}", self.protocol, self.dataset)
    }
}

impl FromStr for VolumeId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        let shape = || {
            IdError(format!(
                "volume id `{text}` is not `[<system>:]<protocol>:<dataset>`"
            ))
        };
        let (first, rest) = text.split_once(':').ok_or_else(shape)?;
        let (system, protocol, dataset) = match first.parse::<Protocol>() {
            Ok(protocol) => (None, protocol, rest),
            Err(_) if valid_system_name(first) => {
                let (protocol, dataset) = rest.split_once(':').ok_or_else(shape)?;
                (Some(first.to_owned()), protocol.parse()?, dataset)
            }
            Err(err) => return Err(err),
        };
        if !valid_dataset(dataset) {
            return Err(IdError(format!(
                "volume id `{text}` does not name a dataset"
            )));
        }
        Ok(Self {
            system,
            protocol,
            dataset: dataset.to_owned(),
        })
    }
}

/// A snapshot id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotId {
    /// The volume it was taken of.
    pub volume: VolumeId,
    /// The ZFS snapshot name after `@`.
    pub name: String,
}

impl SnapshotId {
    /// `dataset@name`, the TrueNAS snapshot id.
    pub fn zfs_id(&self) -> String {
        format!("{}@{}", self.volume.dataset, self.name)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.volume, self.name)
    }
}

impl FromStr for SnapshotId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        let (volume, name) = text
            .split_once('@')
            .ok_or_else(|| IdError(format!("snapshot id `{text}` is not `<volume id>@<name>`")))?;
        let volume: VolumeId = volume
            .parse()
            .map_err(|IdError(why)| IdError(format!("snapshot id `{text}`: {why}")))?;
        if name.is_empty()
            || name == "."
            || name == ".."
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
        {
            return Err(IdError(format!(
                "snapshot id `{text}` has no valid snapshot name"
            )));
        }
        Ok(Self {
            volume,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let volume: VolumeId = "nvmeof:tank/csi/pvc-1".parse().unwrap();
        assert_eq!(volume.protocol, Protocol::Nvmeof);
        assert_eq!(volume.to_string(), "nvmeof:tank/csi/pvc-1");
        let snapshot: SnapshotId = "nfs:tank/csi/pvc-1@snapshot-9".parse().unwrap();
        assert_eq!(snapshot.zfs_id(), "tank/csi/pvc-1@snapshot-9");
        assert_eq!(snapshot.to_string(), "nfs:tank/csi/pvc-1@snapshot-9");
        for bad in [
            "",
            "nfs",
            "ftp:tank/x",
            "nfs:tank",
            "nfs:tank/a@b",
            "nfs:tank//x",
            "nfs:../x",
        ] {
            assert!(bad.parse::<VolumeId>().is_err(), "{bad}");
        }
        for bad in ["nfs:tank/x", "nfs:tank/x@", "nfs:tank/x@a b"] {
            assert!(bad.parse::<SnapshotId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_may_name_their_system_and_old_ids_still_parse() {
        let volume: VolumeId = "nas-b:iscsi:tank/csi/pvc-1".parse().unwrap();
        assert_eq!(volume.system.as_deref(), Some("nas-b"));
        assert_eq!(volume.protocol, Protocol::Iscsi);
        assert_eq!(volume.dataset, "tank/csi/pvc-1");
        assert_eq!(volume.to_string(), "nas-b:iscsi:tank/csi/pvc-1");
        let old: VolumeId = "nfs:tank/csi/pvc-1".parse().unwrap();
        assert_eq!(old.system, None);
        // A colon inside an old id's dataset does not make its protocol a system.
        let colon: VolumeId = "nfs:tank/csi/a:b".parse().unwrap();
        assert_eq!(
            (colon.system, colon.dataset.as_str()),
            (None, "tank/csi/a:b")
        );
        let snapshot: SnapshotId = "nas-b:nfs:tank/csi/pvc-1@s1".parse().unwrap();
        assert_eq!(snapshot.volume.system.as_deref(), Some("nas-b"));
        assert_eq!(snapshot.zfs_id(), "tank/csi/pvc-1@s1");
        assert_eq!(snapshot.to_string(), "nas-b:nfs:tank/csi/pvc-1@s1");
        for bad in [
            "NAS:nfs:tank/x",
            "nas-b:ftp:tank/x",
            "nas-b:nfs:tank",
            "nas-b:tank/x",
            "-b:nfs:tank/x",
            "nas_b:nfs:tank/x",
        ] {
            assert!(bad.parse::<VolumeId>().is_err(), "{bad}");
        }
        for name in ["nfs", "smb", "iscsi", "nvmeof", "", "A", "a_b"] {
            assert!(!valid_system_name(name), "{name}");
        }
        assert!(valid_system_name("nas-1"));
    }
}
