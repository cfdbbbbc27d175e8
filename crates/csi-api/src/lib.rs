//! The CSI contract as this driver speaks it: the generated protobuf types and services
//! ([`csi`]), the volume and snapshot id formats ([`VolumeId`], [`SnapshotId`]), the typed
//! volume context the node reads ([`VolumeContext`]), the per-name operation locks both
//! services take ([`NameLocks`]), and the node identities the controller allows.

/// Generated from `proto/csi.proto` (package `csi.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}

use sha2::{Digest, Sha256};

pub mod context;
mod identity;
mod ids;
mod locks;
pub mod metrics;

pub use context::{ContextError, Export, VolumeContext};
pub use identity::{IdentityService, ReadyCheck};
pub use ids::{IdError, Protocol, SnapshotId, VolumeId, valid_system_name};
pub use locks::{NameBusy, NameHeld, NameLocks};
pub use metrics::CsiMetrics;

/// The driver name Kubernetes objects refer to.
pub const DRIVER_NAME: &str = "tns.csi.io";

/// Keys of the publish context ControllerPublish returns for block volumes.
pub mod publish {
    /// The host NQN the node must connect with (it is on the subsystem's allow-list).
    pub const HOST_NQN: &str = "hostNqn";
    /// The initiator IQN the node must log in with (it is in the target's initiator group).
    pub const INITIATOR_IQN: &str = "initiatorIqn";
}

/// The NVMe host NQN a node uses: derived from its node id so the controller can allow it
/// without asking the node (the node passes it to `nvme connect --hostnqn`). Distinct node ids
/// always get distinct NQNs (access lists are per NQN); see [`node_identity`].
pub fn node_host_nqn(node_id: &str) -> Result<String, IdError> {
    Ok(format!("{HOST_NQN_PREFIX}{}", node_identity(node_id)?))
}

/// What every host NQN of ours starts with (so the controller only ever removes its own).
pub const HOST_NQN_PREFIX: &str = "nqn.2014-08.io.tns-csi:node:";

/// The iSCSI initiator IQN a node uses, derived from its node id the same way.
pub fn node_initiator_iqn(node_id: &str) -> Result<String, IdError> {
    Ok(format!(
        "iqn.2014-08.io.tns-csi:{}",
        node_identity(node_id)?
    ))
}

/// The longest node id used as it is; longer ones are shortened and hashed, so an NQN stays
/// within its 223 bytes.
const PLAIN_NODE_ID: usize = 160;

/// The node part of a host NQN or initiator IQN. A Kubernetes node name (lowercase letters,
/// digits, `-` and `.`) is used as it is, so existing allow-lists keep working. Anything else is
/// lowercased with other characters turned into `-`, shortened, and followed by `:` and a hash
/// of the exact id: `:` never appears in a plain name, so a hashed identity can never equal a
/// plain one, and two different ids differ in their hash. Ids that no CO could send (empty,
/// over 256 bytes, control characters) are refused.
pub fn node_identity(node_id: &str) -> Result<String, IdError> {
    if node_id.is_empty() {
        return Err(IdError("node_id: required".into()));
    }
    if node_id.len() > 256 {
        return Err(IdError(format!(
            "node_id: {} bytes, over the 256 the CSI spec allows",
            node_id.len()
        )));
    }
    if node_id.chars().any(char::is_control) {
        return Err(IdError(
            "node_id: contains control characters; no node is named that way".into(),
        ));
    }
    let plain = node_id.len() <= PLAIN_NODE_ID
        && node_id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && node_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if plain {
        return Ok(node_id.to_owned());
    }
    let cleaned: String = node_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .take(64)
        .collect();
    let digest = Sha256::digest(node_id.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{cleaned}:{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities_are_valid_and_stable() {
        assert_eq!(
            node_host_nqn("worker-1").unwrap(),
            "nqn.2014-08.io.tns-csi:node:worker-1"
        );
        assert_eq!(
            node_initiator_iqn("worker-1.example").unwrap(),
            "iqn.2014-08.io.tns-csi:worker-1.example"
        );
        // Not a Kubernetes name: cleaned, then a hash of the exact id.
        let odd = node_host_nqn("Worker_1").unwrap();
        assert!(
            odd.starts_with("nqn.2014-08.io.tns-csi:node:worker-1:"),
            "{odd}"
        );
        assert_eq!(odd, node_host_nqn("Worker_1").unwrap(), "stable");
    }

    #[test]
    fn node_identity_is_injective_and_refuses_impossible_ids() {
        let ids = [
            "evil-node-",
            "evil node",
            "evil_node-",
            "Evil-node-",
            "evil-node-:0011223344556677",
        ];
        let mapped: std::collections::BTreeSet<String> =
            ids.iter().map(|id| node_host_nqn(id).unwrap()).collect();
        assert_eq!(mapped.len(), ids.len(), "{mapped:?}");
        let long = "n".repeat(256);
        let nqn = node_host_nqn(&long).unwrap();
        assert!(nqn.len() <= 223, "{} bytes", nqn.len());
        assert_ne!(nqn, node_host_nqn(&"n".repeat(255)).unwrap());
        for bad in ["", "evil node\n", "tab\there", &"x".repeat(257)] {
            let err = node_host_nqn(bad).unwrap_err().to_string();
            assert!(err.starts_with("node_id: "), "{bad:?}: {err}");
        }
    }
}
