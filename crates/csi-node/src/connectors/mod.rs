//! Protocol connectors behind one small trait: each makes a volume reachable on this node (a
//! share mounted at the staging path, or a block device) and undoes it. The simulated one does
//! the same with bind mounts of the simulator's dataset directories and loop devices of its
//! zvol files, so all node code above it runs unchanged in tests and the demo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_api::{Protocol, VolumeContext};
use serde::{Deserialize, Serialize};

use crate::NodeError;

mod iscsi;
mod nfs;
mod nvme;
mod simulated;
mod smb;

pub use iscsi::IscsiConnector;
pub use nfs::NfsConnector;
pub use nvme::NvmeConnector;
pub use simulated::SimulatedConnector;
pub use smb::SmbConnector;

/// What NodeStageVolume asks a connector for.
#[derive(Debug)]
pub struct AttachRequest<'a> {
    /// The CSI volume id.
    pub volume_id: &'a str,
    /// Volume context from CreateVolume (as the CO carries it; read it with
    /// [`AttachRequest::volume_context`]).
    pub context: &'a HashMap<String, String>,
    /// Publish context from ControllerPublishVolume.
    pub publish: &'a HashMap<String, String>,
    /// Node-stage secrets (SMB user/password).
    pub secrets: &'a HashMap<String, String>,
    /// Where a share is mounted.
    pub staging: &'a Path,
    /// Mount options from the StorageClass.
    pub mount_flags: &'a [String],
}

/// What attaching produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// The share is mounted at the staging path.
    Mounted,
    /// The volume is this block device.
    Device(PathBuf),
}

/// What the node remembers about a staged volume, to undo it later: one shape per protocol.
/// The JSON is `{"protocol": "...", ...}`, the shape records had before it was typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Detach {
    /// An NFS mount: nothing to undo past the unmount.
    Nfs {},
    /// An SMB mount: nothing to undo past the unmount.
    Smb {},
    /// An NVMe-oF namespace (or, simulated, a loop device).
    Nvmeof {
        /// The block device.
        device: Option<PathBuf>,
        /// The subsystem NQN to disconnect.
        nqn: Option<String>,
    },
    /// An iSCSI LUN (or, simulated, a loop device).
    Iscsi {
        /// The block device.
        device: Option<PathBuf>,
        /// The target IQN to log out of.
        iqn: Option<String>,
        /// The portal `server:port`.
        portal: Option<String>,
    },
}

impl Detach {
    /// A mounted share of `protocol` (NFS or SMB).
    pub fn mounted(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Smb => Self::Smb {},
            _ => Self::Nfs {},
        }
    }

    /// A block device of `protocol` with no connection to undo (a loop device).
    pub fn block(protocol: Protocol, device: PathBuf) -> Self {
        match protocol {
            Protocol::Iscsi => Self::Iscsi {
                device: Some(device),
                iqn: None,
                portal: None,
            },
            _ => Self::Nvmeof {
                device: Some(device),
                nqn: None,
            },
        }
    }

    /// What attaching a volume of `protocol` with `context` will leave to undo, known before
    /// it is attached (the device comes later), so a record can be written first.
    pub fn planned(protocol: Protocol, context: &HashMap<String, String>) -> Self {
        let get = |key: &str| context.get(key).filter(|v| !v.is_empty()).cloned();
        match protocol {
            Protocol::Nfs | Protocol::Smb => Self::mounted(protocol),
            Protocol::Nvmeof => Self::Nvmeof {
                device: None,
                nqn: get(csi_api::context::keys::NQN),
            },
            Protocol::Iscsi => Self::Iscsi {
                device: None,
                iqn: get(csi_api::context::keys::IQN),
                portal: match (
                    get(csi_api::context::keys::SERVER),
                    get(csi_api::context::keys::PORT),
                ) {
                    (Some(server), Some(port)) => Some(format!("{server}:{port}")),
                    _ => None,
                },
            },
        }
    }

    /// The protocol whose connector undoes this.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Nfs {} => Protocol::Nfs,
            Self::Smb {} => Protocol::Smb,
            Self::Nvmeof { .. } => Protocol::Nvmeof,
            Self::Iscsi { .. } => Protocol::Iscsi,
        }
    }

    /// The block device, for block protocols.
    pub fn device(&self) -> Option<&PathBuf> {
        match self {
            Self::Nvmeof { device, .. } | Self::Iscsi { device, .. } => device.as_ref(),
            Self::Nfs {} | Self::Smb {} => None,
        }
    }

    /// Whether `other` uses the same NVMe-oF subsystem or iSCSI target (so a detach must
    /// keep the connection).
    pub fn shares_target_with(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Nvmeof { nqn: Some(a), .. }, Self::Nvmeof { nqn: Some(b), .. }) => a == b,
            (Self::Iscsi { iqn: Some(a), .. }, Self::Iscsi { iqn: Some(b), .. }) => a == b,
            _ => false,
        }
    }
}

/// One protocol's attach and detach.
#[tonic::async_trait]
pub trait Connector: Send + Sync {
    /// Mounts the share at the staging path, or attaches and returns the block device.
    async fn attach(&self, request: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError>;
    /// Undoes `attach` (the staging mount is already gone). `shared` says another staged
    /// volume still uses the same target, so the connection must stay.
    async fn detach(&self, detach: &Detach, shared: bool) -> Result<(), NodeError>;
    /// Makes the kernel see a grown volume's new size (NodeExpandVolume); shares need nothing.
    async fn rescan(&self, _detach: &Detach, _timeout: Duration) -> Result<(), NodeError> {
        Ok(())
    }
}

impl AttachRequest<'_> {
    /// The typed volume context; the error names the key that is missing.
    pub fn volume_context(&self) -> Result<VolumeContext, NodeError> {
        VolumeContext::from_map(self.context).map_err(|err| NodeError::Invalid(err.to_string()))
    }
}

/// Runs `<program> <flag> <device>` so the kernel sees a grown device (nothing to do without one).
async fn rescan_device(
    runner: &dyn crate::runner::Runner,
    detach: &Detach,
    program: &str,
    flag: &str,
    timeout: Duration,
) -> Result<(), NodeError> {
    let Some(device) = detach.device() else {
        return Ok(());
    };
    let argv = strings([flag.to_owned(), device.display().to_string()]);
    crate::runner::check(runner, program, &argv, timeout)
        .await
        .map(drop)
}

/// The error for a volume context of another protocol than the connector's.
fn wrong_export(r: &AttachRequest<'_>, context: &VolumeContext, wanted: Protocol) -> NodeError {
    NodeError::Invalid(format!(
        "volume {} has a {} volume context; the {wanted} connector cannot attach it",
        r.volume_id,
        context.protocol()
    ))
}

/// A secret the connector needs, by name.
fn need<'a>(map: &'a HashMap<String, String>, key: &str, what: &str) -> Result<&'a str, NodeError> {
    map.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "{what} `{key}` is missing; was the volume created by tns-csi?"
            ))
        })
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

fn with_default(flags: &[String], default: &str) -> Vec<String> {
    let mut options: Vec<String> = flags.to_vec();
    let key = default.split('=').next().unwrap_or(default);
    if !options
        .iter()
        .any(|o| o.split('=').next() == Some(key) || (key == "vers" && o.starts_with("nfsvers")))
    {
        options.insert(0, default.to_owned());
    }
    options
}

/// Waits for `check` to find the device, polling.
async fn wait_for<F: Fn() -> Option<PathBuf>>(
    what: &str,
    timeout: Duration,
    find: F,
) -> Result<PathBuf, NodeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = find() {
            return Ok(found);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NodeError::NotFound(format!(
                "{what} did not appear within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
