//! The volume context: everything a node needs to attach a volume travels here from the
//! controller, so node pods hold no TrueNAS credentials. It crosses the CO as a string map;
//! both sides use [`VolumeContext`], so the keys are written down once.

use std::collections::HashMap;

use crate::ids::Protocol;

/// Keys of the volume context map.
pub mod keys {
    /// `nfs`, `smb`, `nvmeof` or `iscsi`.
    pub const PROTOCOL: &str = "protocol";
    /// Address nodes use to reach TrueNAS data ports.
    pub const SERVER: &str = "server";
    /// TCP port of the data protocol (NVMe-oF 4420, iSCSI 3260).
    pub const PORT: &str = "port";
    /// NFS export path (`/mnt/<dataset>`).
    pub const SHARE_PATH: &str = "sharePath";
    /// SMB share name.
    pub const SHARE_NAME: &str = "shareName";
    /// NVMe-oF subsystem NQN.
    pub const NQN: &str = "nqn";
    /// NVMe-oF namespace id inside the subsystem.
    pub const NSID: &str = "nsid";
    /// iSCSI target IQN.
    pub const IQN: &str = "iqn";
    /// iSCSI LUN.
    pub const LUN: &str = "lun";
    /// Filesystem for block volumes (`ext4` or `xfs`).
    pub const FS_TYPE: &str = "fsType";
    /// Dataset path on TrueNAS (for the simulated host and for humans).
    pub const DATASET: &str = "dataset";
}

/// How a volume is exported, with what the node needs for that protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// An NFS share.
    Nfs {
        /// The export path (`/mnt/<dataset>`).
        share_path: String,
    },
    /// An SMB share.
    Smb {
        /// The share name.
        share_name: String,
    },
    /// An NVMe-oF/TCP namespace.
    Nvmeof {
        /// TCP port.
        port: String,
        /// Subsystem NQN.
        nqn: String,
        /// Namespace id.
        nsid: String,
        /// Filesystem to put on the device.
        fs_type: String,
    },
    /// An iSCSI LUN.
    Iscsi {
        /// TCP port.
        port: String,
        /// Target IQN.
        iqn: String,
        /// LUN number.
        lun: String,
        /// Filesystem to put on the device.
        fs_type: String,
    },
}

/// The volume context of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeContext {
    /// Address of the TrueNAS data ports.
    pub server: String,
    /// The dataset or zvol on TrueNAS.
    pub dataset: String,
    /// The protocol and its export.
    pub export: Export,
}

/// A volume context map that lacks what its protocol needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// A key is absent or empty.
    #[error("volume context: `{0}` is required")]
    Missing(&'static str),
    /// The protocol is not one of ours.
    #[error("volume_context.protocol: {0}")]
    Protocol(#[source] crate::ids::IdError),
}

impl VolumeContext {
    /// The protocol the export is of.
    pub fn protocol(&self) -> Protocol {
        match self.export {
            Export::Nfs { .. } => Protocol::Nfs,
            Export::Smb { .. } => Protocol::Smb,
            Export::Nvmeof { .. } => Protocol::Nvmeof,
            Export::Iscsi { .. } => Protocol::Iscsi,
        }
    }

    /// The filesystem a block volume is formatted with (`None` for file protocols).
    pub fn fs_type(&self) -> Option<&str> {
        match &self.export {
            Export::Nvmeof { fs_type, .. } | Export::Iscsi { fs_type, .. } => Some(fs_type),
            Export::Nfs { .. } | Export::Smb { .. } => None,
        }
    }

    /// The map the CO carries.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (keys::PROTOCOL, self.protocol().to_string()),
            (keys::SERVER, self.server.clone()),
            (keys::DATASET, self.dataset.clone()),
        ]);
        match &self.export {
            Export::Nfs { share_path } => {
                map.insert(keys::SHARE_PATH, share_path.clone());
            }
            Export::Smb { share_name } => {
                map.insert(keys::SHARE_NAME, share_name.clone());
            }
            Export::Nvmeof {
                port,
                nqn,
                nsid,
                fs_type,
            } => {
                map.insert(keys::PORT, port.clone());
                map.insert(keys::NQN, nqn.clone());
                map.insert(keys::NSID, nsid.clone());
                map.insert(keys::FS_TYPE, fs_type.clone());
            }
            Export::Iscsi {
                port,
                iqn,
                lun,
                fs_type,
            } => {
                map.insert(keys::PORT, port.clone());
                map.insert(keys::IQN, iqn.clone());
                map.insert(keys::LUN, lun.clone());
                map.insert(keys::FS_TYPE, fs_type.clone());
            }
        }
        map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Reads a map; the error names the first key that is missing. Unknown keys (the CO adds
    /// its own, such as pod info) are ignored.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ContextError> {
        let need = |key: &'static str| {
            map.get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(ContextError::Missing(key))
        };
        let protocol: Protocol = need(keys::PROTOCOL)?
            .parse()
            .map_err(ContextError::Protocol)?;
        let server = need(keys::SERVER)?;
        let export = match protocol {
            Protocol::Nfs => Export::Nfs {
                share_path: need(keys::SHARE_PATH)?,
            },
            Protocol::Smb => Export::Smb {
                share_name: need(keys::SHARE_NAME)?,
            },
            Protocol::Nvmeof => Export::Nvmeof {
                port: need(keys::PORT)?,
                nqn: need(keys::NQN)?,
                nsid: need(keys::NSID)?,
                fs_type: map.get(keys::FS_TYPE).cloned().unwrap_or_default(),
            },
            Protocol::Iscsi => Export::Iscsi {
                port: need(keys::PORT)?,
                iqn: need(keys::IQN)?,
                lun: need(keys::LUN)?,
                fs_type: map.get(keys::FS_TYPE).cloned().unwrap_or_default(),
            },
        };
        Ok(Self {
            server,
            dataset: map.get(keys::DATASET).cloned().unwrap_or_default(),
            export,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_missing_key() {
        let context = VolumeContext {
            server: "nas".into(),
            dataset: "tank/csi/v".into(),
            export: Export::Iscsi {
                port: "3260".into(),
                iqn: "iqn.2005-10.org.freenas.ctl:v".into(),
                lun: "0".into(),
                fs_type: "xfs".into(),
            },
        };
        let mut map = context.to_map();
        assert_eq!(VolumeContext::from_map(&map).unwrap(), context);
        map.remove(keys::LUN);
        assert_eq!(
            VolumeContext::from_map(&map).unwrap_err().to_string(),
            "volume context: `lun` is required"
        );
        map.insert(keys::PROTOCOL.into(), "ftp".into());
        assert!(
            VolumeContext::from_map(&map)
                .unwrap_err()
                .to_string()
                .starts_with("volume_context.protocol:")
        );
    }
}
