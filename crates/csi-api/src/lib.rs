//! The CSI contract as this driver speaks it: the generated protobuf types and services
//! ([`csi`]), the volume and snapshot id formats ([`VolumeId`], [`SnapshotId`]), the typed
//! volume context the node reads ([`VolumeContext`]), the per-name operation locks both
//! services take ([`NameLocks`]), and the node identities the controller allows.

/// Generated from `proto/csi.proto` (package `csi.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}

pub mod context;
mod identity;
mod ids;
mod locks;
pub mod metrics;

pub use context::{ContextError, Export, VolumeContext};
pub use identity::{IdentityService, ReadyCheck};
pub use ids::{IdError, Protocol, SnapshotId, VolumeId};
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
/// without asking the node (the node passes it to `nvme connect --hostnqn`).
pub fn node_host_nqn(node_id: &str) -> String {
    format!("nqn.2014-08.io.tns-csi:node:{}", sanitize(node_id))
}

/// The iSCSI initiator IQN a node uses, derived from its node id the same way.
pub fn node_initiator_iqn(node_id: &str) -> String {
    format!("iqn.2014-08.io.tns-csi:{}", sanitize(node_id))
}

fn sanitize(node_id: &str) -> String {
    node_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities_are_valid_and_stable() {
        assert_eq!(
            node_host_nqn("Worker_1"),
            "nqn.2014-08.io.tns-csi:node:worker-1"
        );
        assert_eq!(
            node_initiator_iqn("worker-1.example"),
            "iqn.2014-08.io.tns-csi:worker-1.example"
        );
    }
}
