//! Volume capabilities: what each protocol can serve (access modes, mount or raw block,
//! filesystem types), checked with a message that says what to use instead.

use csi_api::Protocol;
use csi_api::csi::VolumeCapability;
use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::volume_capability::access_mode::Mode;

use crate::error::ControllerError;

/// Checks the requested capabilities against what the protocol can do.
pub(crate) fn check_capabilities(
    protocol: Protocol,
    capabilities: &[VolumeCapability],
) -> Result<(), ControllerError> {
    if capabilities.is_empty() {
        return Err(ControllerError::invalid_argument(
            "volume_capabilities: at least one is required",
        ));
    }
    for capability in capabilities {
        check_capability(protocol, capability).map_err(ControllerError::invalid_argument)?;
    }
    Ok(())
}

/// `Err` says why one capability cannot be served.
pub(crate) fn check_capability(
    protocol: Protocol,
    capability: &VolumeCapability,
) -> Result<(), String> {
    let mode = capability
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .filter(|m| *m != Mode::Unknown)
        .ok_or("volume_capability.access_mode is required")?;
    let multi_node = matches!(
        mode,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
    );
    match &capability.access_type {
        None => Err("volume_capability.access_type (mount or block) is required".into()),
        Some(AccessType::Block(_)) if !protocol.is_block() => Err(format!(
            "raw block access needs protocol nvmeof or iscsi; {protocol} volumes are filesystems"
        )),
        Some(AccessType::Block(_)) => Ok(()),
        Some(AccessType::Mount(mount)) => {
            if protocol.is_block() {
                if multi_node {
                    return Err(format!(
                        "{protocol} filesystem volumes are single-node (RWO/RWOP); use nfs or smb for RWX, or raw block"
                    ));
                }
                if !mount.fs_type.is_empty() && mount.fs_type != "ext4" && mount.fs_type != "xfs" {
                    return Err(format!("fs_type `{}` is not ext4 or xfs", mount.fs_type));
                }
            } else if !mount.fs_type.is_empty()
                && !matches!(mount.fs_type.as_str(), "nfs" | "nfs4" | "cifs" | "smb")
            {
                return Err(format!(
                    "fs_type `{}` does not apply to {protocol} volumes",
                    mount.fs_type
                ));
            }
            Ok(())
        }
    }
}
