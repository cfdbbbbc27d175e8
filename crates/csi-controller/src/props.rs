//! The ZFS user properties that make TrueNAS the only source of truth (spec: Metadata).

/// Present with value `tns-csi` on everything the driver owns.
pub(crate) const MANAGED_BY: &str = "tns-csi:managed_by";
pub(crate) const SCHEMA_VERSION: &str = "tns-csi:schema_version";
pub(crate) const CSI_VOLUME_NAME: &str = "tns-csi:csi_volume_name";
pub(crate) const PROTOCOL: &str = "tns-csi:protocol";
pub(crate) const CAPACITY: &str = "tns-csi:capacity_bytes";
pub(crate) const CREATED_AT: &str = "tns-csi:created_at";
pub(crate) const DELETE_STRATEGY: &str = "tns-csi:delete_strategy";
pub(crate) const PARAMS_DIGEST: &str = "tns-csi:params_digest";
pub(crate) const PVC_NAME: &str = "tns-csi:pvc_name";
pub(crate) const PVC_NAMESPACE: &str = "tns-csi:pvc_namespace";
/// `true` once DeleteVolume ran but the dataset must wait for its snapshots (or was retained).
pub(crate) const DELETED: &str = "tns-csi:deleted";
/// `true` when DeleteVolume kept the data (`deleteStrategy: retain`).
pub(crate) const RETAINED: &str = "tns-csi:retained";
pub(crate) const ADOPTABLE: &str = "tns-csi:adoptable";
pub(crate) const ALLOW_ANY_HOST: &str = "tns-csi:allow_any_host";
/// The volume context, as JSON, so list and get answer exactly what create did.
pub(crate) const VOLUME_CONTEXT: &str = "tns-csi:volume_context";
pub(crate) const CONTENT_SOURCE_TYPE: &str = "tns-csi:content_source_type";
pub(crate) const CONTENT_SOURCE_ID: &str = "tns-csi:content_source_id";
pub(crate) const CLONE_MODE: &str = "tns-csi:clone_mode";
pub(crate) const NFS_SHARE_ID: &str = "tns-csi:nfs_share_id";
pub(crate) const SMB_SHARE_ID: &str = "tns-csi:smb_share_id";
pub(crate) const NVMEOF_SUBSYSTEM_NQN: &str = "tns-csi:nvmeof_subsystem_nqn";
pub(crate) const NVMEOF_SUBSYSTEM_ID: &str = "tns-csi:nvmeof_subsystem_id";
pub(crate) const NVMEOF_NAMESPACE_ID: &str = "tns-csi:nvmeof_namespace_id";
pub(crate) const ISCSI_IQN: &str = "tns-csi:iscsi_iqn";
pub(crate) const ISCSI_TARGET_ID: &str = "tns-csi:iscsi_target_id";
pub(crate) const ISCSI_EXTENT_ID: &str = "tns-csi:iscsi_extent_id";
/// On snapshots: the CSI snapshot name (only snapshots with it set locally are ours).
pub(crate) const CSI_SNAPSHOT_NAME: &str = "tns-csi:csi_snapshot_name";
pub(crate) const SOURCE_VOLUME_ID: &str = "tns-csi:source_volume_id";
/// On a snapshot: its data was copied out of its volume (a detached snapshot), so it lives on
/// a dataset of its own and outlives the volume.
pub(crate) const DETACHED: &str = "tns-csi:detached";
/// The system name a volume was made on by a several-system deployment: its id names the
/// system (volumes without it have ids of a single-system deployment).
pub(crate) const SYSTEM: &str = "tns-csi:system";
/// Value of [`MANAGED_BY`].
pub(crate) const MANAGER: &str = "tns-csi";
/// Placeholder IQN that keeps an initiator group closed until a node is published (an empty
/// group means "any initiator" on TrueNAS).
pub(crate) const NO_INITIATOR: &str = "iqn.2014-08.io.tns-csi:no-node-published";
/// The name of the volume's share, target or subsystem on TrueNAS (derived from the volume
/// name; recorded for people and for the orphan reconciler).
pub(crate) const EXPORT_NAME: &str = "tns-csi:export_name";

/// Prefix of the user properties that record which nodes a volume is published to (one each,
/// `<prefix><hash of the node id>` = node id), for ListVolumes' and ControllerGetVolume's
/// published nodes and for an unpublish from every node.
pub(crate) const PUBLISHED_PREFIX: &str = "tns-csi:published.";

/// The user property recording that a volume is published to `node_id`.
pub(crate) fn published_key(node_id: &str) -> String {
    format!("{PUBLISHED_PREFIX}{}", crate::names::hash16(node_id))
}
