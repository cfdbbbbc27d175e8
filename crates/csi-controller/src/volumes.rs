//! Volumes: create (empty, from a snapshot, from a volume), export per protocol, delete with
//! the snapshot rules, expand, get, publish to a node. Every step is idempotent and every
//! lookup exact, so a retry after any failure or restart carries on where the last one stopped.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::{CapacityRange, VolumeCapability, VolumeContentSource, volume_content_source};
use csi_api::{Protocol, SnapshotId, VolumeId, context};
use serde_json::json;
use tonic::Status;
use truenas::api::{
    Dataset, DatasetChanges, Encryption, NewDataset, NewDatasetKind, NewExtent, NewNamespace,
    NewNfsShare, NewPort, NewSmbShare, NewSnapshot, NewSubsystem, NewTarget, TargetGroup,
};
use truenas::query::{Filter, Query};
use truenas::{Client, Error};

use crate::params::{DeleteStrategy, VolumeParams};
use crate::props;
use crate::status::tn;

const GIB: u64 = 1 << 30;
/// How long to wait for a new zvol's device node before a namespace or extent can use it.
const ZVOL_DEVICE_WAIT: Duration = Duration::from_secs(15);

/// The dataset fields a volume lookup needs.
const LOOKUP_FIELDS: &[&str] = &[
    "id",
    "type",
    "pool",
    "mountpoint",
    "user_properties",
    "volsize",
    "volblocksize",
    "refquota",
    "origin",
];

/// A volume the driver owns, read from its dataset.
#[derive(Debug, Clone)]
pub(crate) struct ManagedVolume {
    pub(crate) id: VolumeId,
    pub(crate) dataset: Dataset,
    pub(crate) csi_name: String,
    pub(crate) capacity: u64,
    pub(crate) context: HashMap<String, String>,
    pub(crate) deleted: bool,
    pub(crate) retained: bool,
    pub(crate) adoptable: bool,
    pub(crate) digest: String,
    pub(crate) allow_any_host: bool,
}

impl ManagedVolume {
    fn from_dataset(dataset: Dataset) -> Option<Self> {
        if dataset.user_property(props::MANAGED_BY) != Some(props::MANAGER) {
            return None;
        }
        let protocol: Protocol = dataset.user_property(props::PROTOCOL)?.parse().ok()?;
        let prop = |key: &str| dataset.user_property(key).unwrap_or_default().to_owned();
        let context = serde_json::from_str(&prop(props::VOLUME_CONTEXT)).unwrap_or_default();
        Some(Self {
            id: VolumeId {
                protocol,
                dataset: dataset.id.clone(),
            },
            csi_name: prop(props::CSI_VOLUME_NAME),
            capacity: prop(props::CAPACITY).parse().unwrap_or(0),
            context,
            deleted: prop(props::DELETED) == "true",
            retained: prop(props::RETAINED) == "true",
            adoptable: prop(props::ADOPTABLE) == "true",
            digest: prop(props::PARAMS_DIGEST),
            allow_any_host: prop(props::ALLOW_ANY_HOST) == "true",
            dataset,
        })
    }

    /// The CSI `Volume` message.
    pub(crate) fn to_csi(&self) -> csi_api::csi::Volume {
        let content_source = match (
            self.dataset.user_property(props::CONTENT_SOURCE_TYPE),
            self.dataset.user_property(props::CONTENT_SOURCE_ID),
        ) {
            (Some("snapshot"), Some(id)) => Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: id.to_owned(),
                    },
                )),
            }),
            (Some("volume"), Some(id)) => Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Volume(
                    volume_content_source::VolumeSource {
                        volume_id: id.to_owned(),
                    },
                )),
            }),
            _ => None,
        };
        csi_api::csi::Volume {
            capacity_bytes: self.capacity as i64,
            volume_id: self.id.to_string(),
            volume_context: self.context.clone(),
            content_source,
            accessible_topology: Vec::new(),
        }
    }

    /// The volume name (last path component).
    pub(crate) fn name(&self) -> &str {
        self.id
            .dataset
            .rsplit('/')
            .next()
            .unwrap_or(&self.id.dataset)
    }
}

/// Reads a dataset by exact name: `None` if absent, `Some(None)` if present but not ours.
pub(crate) async fn load(
    client: &Client,
    dataset: &str,
) -> Result<Option<Option<ManagedVolume>>, Status> {
    // Exact id, no children, only the fields the driver reads (spec: no scans on the hot path).
    let query = Query::all()
        .filter(Filter::eq("id", dataset))
        .select(LOOKUP_FIELDS)
        .extra("retrieve_children", false);
    let found = client
        .datasets()
        .query(&query)
        .await
        .map_err(tn("looking up the volume's dataset"))?;
    Ok(found.into_iter().next().map(ManagedVolume::from_dataset))
}

/// Loads a volume by id for an RPC that needs it to exist and be live.
pub(crate) async fn require(client: &Client, volume_id: &str) -> Result<ManagedVolume, Status> {
    let id: VolumeId = volume_id
        .parse()
        .map_err(|err| Status::not_found(format!("volume {volume_id} does not exist: {err}")))?;
    match load(client, &id.dataset).await? {
        Some(Some(volume)) if !volume.deleted && volume.id.protocol == id.protocol => Ok(volume),
        _ => Err(Status::not_found(format!(
            "volume {volume_id} does not exist"
        ))),
    }
}

/// Checks the requested capabilities against what the protocol can do.
pub(crate) fn check_capabilities(
    protocol: Protocol,
    capabilities: &[VolumeCapability],
) -> Result<(), Status> {
    if capabilities.is_empty() {
        return Err(Status::invalid_argument(
            "volume_capabilities: at least one is required",
        ));
    }
    for capability in capabilities {
        check_capability(protocol, capability).map_err(Status::invalid_argument)?;
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

/// Bytes to provision for a capacity range (zvols round up to the block size; filesystem
/// quotas have TrueNAS's 1 GiB minimum).
pub(crate) fn capacity_for(
    params: &VolumeParams,
    range: Option<&CapacityRange>,
) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument(
            "capacity_range: sizes must not be negative",
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(Status::invalid_argument(
            "capacity_range: required_bytes exceeds limit_bytes",
        ));
    }
    let wanted = if required > 0 {
        required
    } else {
        GIB.min(if limit > 0 { limit } else { GIB })
    };
    let size = if params.protocol.is_block() {
        wanted.div_ceil(params.volblocksize.bytes()) * params.volblocksize.bytes()
    } else {
        wanted.max(GIB)
    };
    if limit > 0 && size > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range: the smallest {} volume that satisfies {required} bytes is {size} bytes, over limit_bytes {limit}{}",
            params.protocol,
            if params.protocol.is_block() {
                ""
            } else {
                " (TrueNAS quotas start at 1 GiB)"
            }
        )));
    }
    Ok(size)
}

/// Where a new volume's data comes from.
pub(crate) enum Source {
    Snapshot(SnapshotId),
    Volume(VolumeId),
}

impl Source {
    pub(crate) fn parse(source: Option<&VolumeContentSource>) -> Result<Option<Self>, Status> {
        match source.and_then(|s| s.r#type.as_ref()) {
            None => Ok(None),
            Some(volume_content_source::Type::Snapshot(s)) => s
                .snapshot_id
                .parse()
                .map(|id| Some(Self::Snapshot(id)))
                .map_err(|err| {
                    Status::not_found(format!(
                        "source snapshot {} does not exist: {err}",
                        s.snapshot_id
                    ))
                }),
            Some(volume_content_source::Type::Volume(v)) => v
                .volume_id
                .parse()
                .map(|id| Some(Self::Volume(id)))
                .map_err(|err| {
                    Status::not_found(format!(
                        "source volume {} does not exist: {err}",
                        v.volume_id
                    ))
                }),
        }
    }

    fn kind_and_id(&self) -> (&'static str, String) {
        match self {
            Self::Snapshot(id) => ("snapshot", id.to_string()),
            Self::Volume(id) => ("volume", id.to_string()),
        }
    }
}

fn user_props(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Makes the parent dataset of a StorageClass if it is missing.
pub(crate) async fn ensure_parent_of(client: &Client, params: &VolumeParams) -> Result<(), Status> {
    ensure_parent(client, &params.parent_dataset()).await
}

async fn ensure_parent(client: &Client, parent: &str) -> Result<(), Status> {
    if client
        .datasets()
        .get(parent)
        .await
        .map_err(tn("looking up the parent dataset"))?
        .is_some()
    {
        return Ok(());
    }
    let mut new = NewDataset::filesystem(parent);
    new.create_ancestors = true;
    match client.datasets().create(&new).await {
        Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(err) => Err(crate::status::from_truenas(
            &format!("creating parent dataset {parent}"),
            err,
        )),
    }
}

/// Everything CreateVolume decided before touching TrueNAS.
pub(crate) struct Plan<'a> {
    pub(crate) csi_name: &'a str,
    pub(crate) params: &'a VolumeParams,
    pub(crate) dataset: String,
    pub(crate) volume_name: String,
    pub(crate) capacity: u64,
    pub(crate) source: Option<Source>,
    pub(crate) server: String,
    pub(crate) secrets: &'a HashMap<String, String>,
}

impl Plan<'_> {
    fn metadata(&self) -> Vec<(String, String)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut pairs = vec![
            (props::MANAGED_BY, props::MANAGER.to_owned()),
            (props::SCHEMA_VERSION, "1".to_owned()),
            (props::CSI_VOLUME_NAME, self.csi_name.to_owned()),
            (props::PROTOCOL, self.params.protocol.to_string()),
            (props::CAPACITY, self.capacity.to_string()),
            (props::CREATED_AT, now.to_string()),
            (
                props::DELETE_STRATEGY,
                self.params.delete_strategy.as_str().to_owned(),
            ),
            (props::PARAMS_DIGEST, self.params.digest.clone()),
            (props::DELETED, "false".to_owned()),
            (
                props::ALLOW_ANY_HOST,
                self.params.allow_any_host.to_string(),
            ),
        ];
        if let Some(pvc) = &self.params.pvc_name {
            pairs.push((props::PVC_NAME, pvc.clone()));
        }
        if let Some(ns) = &self.params.pvc_namespace {
            pairs.push((props::PVC_NAMESPACE, ns.clone()));
        }
        if self.params.mark_adoptable {
            pairs.push((props::ADOPTABLE, "true".to_owned()));
        }
        if let Some(source) = &self.source {
            let (kind, id) = source.kind_and_id();
            pairs.push((props::CONTENT_SOURCE_TYPE, kind.to_owned()));
            pairs.push((props::CONTENT_SOURCE_ID, id));
            pairs.push((props::CLONE_MODE, "cow".to_owned()));
        }
        user_props(&pairs)
    }
}

/// Creates the dataset or zvol (empty or cloned), already carrying its metadata.
pub(crate) async fn create_dataset(client: &Client, plan: &Plan<'_>) -> Result<(), Status> {
    let params = plan.params;
    let metadata = plan.metadata();
    match &plan.source {
        None => {
            let mut new = if params.protocol.is_block() {
                let mut new = NewDataset::volume(&plan.dataset, plan.capacity);
                new.kind = NewDatasetKind::Volume {
                    volsize: plan.capacity,
                    volblocksize: Some(params.volblocksize),
                    sparse: params.sparse,
                    force_size: false,
                };
                new
            } else {
                let mut new = NewDataset::filesystem(&plan.dataset);
                new.kind = NewDatasetKind::Filesystem {
                    refquota: Some(plan.capacity),
                    quota: None,
                    recordsize: params.recordsize.clone(),
                };
                new.share_type = Some(
                    if params.protocol == Protocol::Smb {
                        "SMB"
                    } else {
                        "GENERIC"
                    }
                    .to_owned(),
                );
                new
            };
            new.compression = params.compression.clone();
            new.sync = params.sync.clone();
            new.comments = Some(params.comment(&plan.volume_name));
            new.properties = params.dataset_properties.clone();
            new.user_properties = metadata;
            if params.encryption {
                new.encryption = Some(Encryption {
                    algorithm: params.encryption_algorithm.clone(),
                    passphrase: plan
                        .secrets
                        .get("encryptionPassphrase")
                        .map(|p| secrecy::SecretString::from(p.clone())),
                });
            }
            client
                .datasets()
                .create(&new)
                .await
                .map_err(tn("creating the volume's dataset"))?;
        }
        Some(source) => {
            let snapshot = match source {
                Source::Snapshot(id) => {
                    let found = client
                        .snapshots()
                        .get(&id.zfs_id())
                        .await
                        .map_err(tn("looking up the source snapshot"))?;
                    let Some(found) =
                        found.filter(|s| s.property(props::CSI_SNAPSHOT_NAME).is_some())
                    else {
                        return Err(Status::not_found(format!(
                            "source snapshot {id} does not exist"
                        )));
                    };
                    if id.volume.protocol.is_block() != params.protocol.is_block() {
                        return Err(Status::invalid_argument(format!(
                            "snapshot {id} holds a {} volume; it cannot become a {} volume",
                            id.volume.protocol, params.protocol
                        )));
                    }
                    let source_size: u64 = found
                        .property(props::CAPACITY)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if plan.capacity < source_size {
                        return Err(Status::out_of_range(format!(
                            "the volume ({} bytes) would be smaller than snapshot {id} ({source_size} bytes)",
                            plan.capacity
                        )));
                    }
                    id.zfs_id()
                }
                Source::Volume(id) => {
                    let source = match load(client, &id.dataset).await? {
                        Some(Some(v)) if !v.deleted => v,
                        _ => {
                            return Err(Status::not_found(format!(
                                "source volume {id} does not exist"
                            )));
                        }
                    };
                    if id.protocol.is_block() != params.protocol.is_block() {
                        return Err(Status::invalid_argument(format!(
                            "volume {id} is a {} volume; it cannot be cloned into a {} volume",
                            id.protocol, params.protocol
                        )));
                    }
                    if plan.capacity < source.capacity {
                        return Err(Status::out_of_range(format!(
                            "the clone ({} bytes) would be smaller than volume {id} ({} bytes)",
                            plan.capacity, source.capacity
                        )));
                    }
                    // A temporary snapshot, destroyed (deferred) once the clone is gone.
                    let name = format!("csi-clone-{}", plan.volume_name);
                    let temp = NewSnapshot {
                        dataset: id.dataset.clone(),
                        name: name.clone(),
                        ..Default::default()
                    };
                    match client.snapshots().create(&temp).await {
                        Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                        Err(err) => {
                            return Err(crate::status::from_truenas(
                                "taking the clone's source snapshot",
                                err,
                            ));
                        }
                    }
                    format!("{}@{name}", id.dataset)
                }
            };
            match client
                .snapshots()
                .clone_to(&snapshot, &plan.dataset, &BTreeMap::new())
                .await
            {
                Ok(()) => {}
                Err(Error::AlreadyExists { .. }) => {}
                Err(err) => return Err(crate::status::from_truenas("cloning the source", err)),
            }
            if matches!(source, Source::Volume(_)) {
                // Deferred: it disappears when its last clone does, so nothing leaks.
                client
                    .snapshots()
                    .delete(&snapshot, true, false)
                    .await
                    .map_err(tn("releasing the clone's source snapshot"))?;
            }
            let grow = if params.protocol.is_block() {
                DatasetChanges {
                    volsize: Some(plan.capacity),
                    force_size: true,
                    ..Default::default()
                }
            } else {
                DatasetChanges {
                    refquota: Some(Some(plan.capacity)),
                    ..Default::default()
                }
            };
            let changes = DatasetChanges {
                set_user_properties: metadata,
                ..grow
            };
            let current = client
                .datasets()
                .get(&plan.dataset)
                .await
                .map_err(tn("reading the clone"))?;
            let current_size = current.as_ref().and_then(|d| {
                if params.protocol.is_block() {
                    d.volsize_bytes()
                } else {
                    d.refquota_bytes()
                }
            });
            let changes = if current_size == Some(plan.capacity) {
                DatasetChanges {
                    set_user_properties: changes.set_user_properties,
                    ..Default::default()
                }
            } else {
                changes
            };
            client
                .datasets()
                .update(&plan.dataset, &changes)
                .await
                .map_err(tn("growing the clone and recording its metadata"))?;
        }
    }
    Ok(())
}

/// Polls while TrueNAS says a new zvol is not a block device yet (spec §7.12).
async fn with_zvol_wait<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = tokio::time::Instant::now() + ZVOL_DEVICE_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(err)
                if (err.to_string().contains("must be a block device")
                    || err.to_string().contains("does not exist"))
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Shares or targets the volume and returns its volume context (idempotent).
pub(crate) async fn ensure_exports(
    client: &Client,
    plan: &Plan<'_>,
) -> Result<(HashMap<String, String>, Vec<(String, String)>), Status> {
    let params = plan.params;
    let dataset = &plan.dataset;
    let name = &plan.volume_name;
    let mut ctx = HashMap::from([
        (context::PROTOCOL.to_owned(), params.protocol.to_string()),
        (context::SERVER.to_owned(), plan.server.clone()),
        (context::DATASET.to_owned(), dataset.clone()),
    ]);
    let mut ids = Vec::new();
    match params.protocol {
        Protocol::Nfs => {
            let path = format!("/mnt/{dataset}");
            let existing = client
                .nfs()
                .by_path(&path)
                .await
                .map_err(tn("looking up the NFS share"))?;
            let share = match existing.into_iter().next() {
                Some(share) => share,
                None => client
                    .nfs()
                    .create(&NewNfsShare {
                        path: path.clone(),
                        comment: params.comment(name),
                        networks: params.nfs_networks.clone(),
                        hosts: params.nfs_hosts.clone(),
                        ro: false,
                        maproot_user: Some(params.nfs_maproot_user.clone()),
                        maproot_group: Some(params.nfs_maproot_group.clone()),
                    })
                    .await
                    .map_err(tn("creating the NFS share"))?,
            };
            ctx.insert(context::SHARE_PATH.to_owned(), path);
            ids.push((props::NFS_SHARE_ID.to_owned(), share.id.to_string()));
        }
        Protocol::Smb => {
            let path = format!("/mnt/{dataset}");
            let share = match client
                .smb()
                .by_name(name)
                .await
                .map_err(tn("looking up the SMB share"))?
            {
                Some(share) if share.path == path => share,
                Some(share) => {
                    return Err(Status::already_exists(format!(
                        "an SMB share named {name} already serves {}, not this volume",
                        share.path
                    )));
                }
                None => client
                    .smb()
                    .create(&NewSmbShare {
                        name: name.clone(),
                        path,
                        comment: params.comment(name),
                        readonly: false,
                        browsable: params.smb_browsable,
                    })
                    .await
                    .map_err(tn("creating the SMB share"))?,
            };
            ctx.insert(context::SHARE_NAME.to_owned(), share.name.clone());
            ids.push((props::SMB_SHARE_ID.to_owned(), share.id.to_string()));
        }
        Protocol::Nvmeof => {
            let nvmet = client.nvmet();
            let subsys = match nvmet
                .subsystem_by_name(name)
                .await
                .map_err(tn("looking up the NVMe-oF subsystem"))?
            {
                Some(subsys) => subsys,
                None => nvmet
                    .create_subsystem(&NewSubsystem {
                        name: name.clone(),
                        subnqn: None,
                        allow_any_host: params.allow_any_host,
                    })
                    .await
                    .map_err(tn("creating the NVMe-oF subsystem"))?,
            };
            let device = format!("zvol/{dataset}");
            let namespaces = nvmet
                .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await
                .map_err(tn("looking up the NVMe-oF namespace"))?;
            let namespace = match namespaces.into_iter().find(|n| n.device_path == device) {
                Some(ns) => ns,
                None => with_zvol_wait(|| {
                    let new = NewNamespace::zvol(subsys.id, dataset);
                    async move { nvmet.create_namespace(&new).await }
                })
                .await
                .map_err(tn("creating the NVMe-oF namespace"))?,
            };
            let port_number = params.port.unwrap_or(4420);
            let ports = nvmet
                .ports(&Query::all().filter(Filter::eq("addr_trtype", "TCP")))
                .await
                .map_err(tn("looking up NVMe-oF ports"))?;
            let port = match ports
                .into_iter()
                .find(|p| p.tcp_port() == Some(port_number))
            {
                Some(port) => port,
                None => match nvmet
                    .create_port(&NewPort {
                        addr_trtype: "TCP",
                        addr_traddr: "0.0.0.0".into(),
                        addr_trsvcid: port_number,
                    })
                    .await
                {
                    Ok(port) => port,
                    Err(Error::AlreadyExists { .. } | Error::Validation { .. }) => nvmet
                        .ports(&Query::all().filter(Filter::eq("addr_trtype", "TCP")))
                        .await
                        .map_err(tn("looking up NVMe-oF ports"))?
                        .into_iter()
                        .find(|p| p.tcp_port() == Some(port_number))
                        .ok_or_else(|| {
                            Status::internal(format!(
                                "no NVMe-oF TCP port {port_number} and none could be made"
                            ))
                        })?,
                    Err(err) => {
                        return Err(crate::status::from_truenas(
                            "creating the NVMe-oF port",
                            err,
                        ));
                    }
                },
            };
            let links = nvmet
                .port_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await
                .map_err(tn("looking up NVMe-oF port links"))?;
            if !links.iter().any(|l| l.port.id == port.id) {
                nvmet
                    .link_port(port.id, subsys.id)
                    .await
                    .map_err(tn("linking the subsystem to its port"))?;
            }
            ctx.insert(context::PORT.to_owned(), port_number.to_string());
            ctx.insert(context::NQN.to_owned(), subsys.subnqn.clone());
            ctx.insert(context::NSID.to_owned(), namespace.nsid.to_string());
            ctx.insert(context::FS_TYPE.to_owned(), params.fs_type.clone());
            ids.push((props::NVMEOF_SUBSYSTEM_NQN.to_owned(), subsys.subnqn));
            ids.push((props::NVMEOF_SUBSYSTEM_ID.to_owned(), subsys.id.to_string()));
            ids.push((
                props::NVMEOF_NAMESPACE_ID.to_owned(),
                namespace.id.to_string(),
            ));
        }
        Protocol::Iscsi => {
            let iscsi = client.iscsi();
            let basename = iscsi
                .global()
                .await
                .map_err(tn("reading the iSCSI base name"))?
                .basename;
            let comment = format!("tns-csi:{name}");
            let groups = iscsi
                .initiators(&Query::all().filter(Filter::eq("comment", comment.as_str())))
                .await
                .map_err(tn("looking up the initiator group"))?;
            let group = match groups.into_iter().next() {
                Some(group) => group,
                None => {
                    let initial = if params.allow_any_host {
                        vec![]
                    } else {
                        vec![props::NO_INITIATOR.to_owned()]
                    };
                    iscsi
                        .create_initiator(&initial, &comment)
                        .await
                        .map_err(tn("creating the initiator group"))?
                }
            };
            let port_number = params.port.unwrap_or(3260);
            let portals = iscsi.portals().await.map_err(tn("reading iSCSI portals"))?;
            let portal = portals
                .iter()
                .find(|p| {
                    p.listen
                        .iter()
                        .any(|l| l.port.unwrap_or(3260) == port_number)
                })
                .or(portals.first())
                .ok_or_else(|| {
                    Status::failed_precondition(
                        "TrueNAS has no iSCSI portal; create one (Shares → iSCSI → Portals)",
                    )
                })?;
            let target_name = name.to_lowercase();
            let target = match iscsi
                .target_by_name(&target_name)
                .await
                .map_err(tn("looking up the iSCSI target"))?
            {
                Some(target) => target,
                None => iscsi
                    .create_target(&NewTarget {
                        name: target_name.clone(),
                        mode: "ISCSI",
                        groups: vec![TargetGroup {
                            portal: portal.id,
                            initiator: Some(group.id),
                            authmethod: "NONE".into(),
                            auth: None,
                        }],
                    })
                    .await
                    .map_err(tn("creating the iSCSI target"))?,
            };
            let disk = format!("zvol/{dataset}");
            let extents = iscsi
                .extents(&Query::all().filter(Filter::eq("disk", disk.as_str())))
                .await
                .map_err(tn("looking up the iSCSI extent"))?;
            let extent = match extents.into_iter().next() {
                Some(extent) => extent,
                None => {
                    let extent_name: String = name.chars().take(64).collect();
                    with_zvol_wait(|| {
                        let new = NewExtent::zvol(extent_name.clone(), dataset);
                        async move { iscsi.create_extent(&new).await }
                    })
                    .await
                    .map_err(tn("creating the iSCSI extent"))?
                }
            };
            let luns = iscsi
                .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
                .await
                .map_err(tn("looking up the LUN"))?;
            let lun = match luns.into_iter().find(|l| l.extent == extent.id) {
                Some(lun) => lun,
                None => iscsi
                    .map_extent(target.id, extent.id, Some(0))
                    .await
                    .map_err(tn("mapping the LUN"))?,
            };
            let iqn = format!("{basename}:{target_name}");
            ctx.insert(context::PORT.to_owned(), port_number.to_string());
            ctx.insert(context::IQN.to_owned(), iqn.clone());
            ctx.insert(context::LUN.to_owned(), lun.lunid.to_string());
            ctx.insert(context::FS_TYPE.to_owned(), params.fs_type.clone());
            ids.push((props::ISCSI_IQN.to_owned(), iqn));
            ids.push((props::ISCSI_TARGET_ID.to_owned(), target.id.to_string()));
            ids.push((props::ISCSI_EXTENT_ID.to_owned(), extent.id.to_string()));
        }
    }
    Ok((ctx, ids))
}

/// Removes the share or target of a volume (idempotent; found by exact name and path).
pub(crate) async fn remove_exports(client: &Client, id: &VolumeId) -> Result<(), Status> {
    let name = id
        .dataset
        .rsplit('/')
        .next()
        .unwrap_or(&id.dataset)
        .to_owned();
    let path = format!("/mnt/{}", id.dataset);
    match id.protocol {
        Protocol::Nfs => {
            for share in client
                .nfs()
                .by_path(&path)
                .await
                .map_err(tn("looking up the NFS share"))?
            {
                client
                    .nfs()
                    .delete(share.id)
                    .await
                    .map_err(tn("removing the NFS share"))?;
            }
        }
        Protocol::Smb => {
            if let Some(share) = client
                .smb()
                .by_name(&name)
                .await
                .map_err(tn("looking up the SMB share"))?
                && share.path == path
            {
                client
                    .smb()
                    .delete(share.id)
                    .await
                    .map_err(tn("removing the SMB share"))?;
            }
        }
        Protocol::Nvmeof => {
            let nvmet = client.nvmet();
            if let Some(subsys) = nvmet
                .subsystem_by_name(&name)
                .await
                .map_err(tn("looking up the NVMe-oF subsystem"))?
            {
                let namespaces = nvmet
                    .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("looking up the NVMe-oF namespace"))?;
                let device = format!("zvol/{}", id.dataset);
                if namespaces.iter().all(|n| n.device_path == device) {
                    // force: its namespace and port links go with it, in dependency order.
                    nvmet
                        .delete_subsystem(subsys.id, true)
                        .await
                        .map_err(tn("removing the NVMe-oF subsystem"))?;
                } else {
                    return Err(Status::failed_precondition(format!(
                        "NVMe-oF subsystem {name} also exposes other zvols; not removing it"
                    )));
                }
            }
        }
        Protocol::Iscsi => {
            let iscsi = client.iscsi();
            let disk = format!("zvol/{}", id.dataset);
            let target = iscsi
                .target_by_name(&name.to_lowercase())
                .await
                .map_err(tn("looking up the iSCSI target"))?;
            let extents = iscsi
                .extents(&Query::all().filter(Filter::eq("disk", disk.as_str())))
                .await
                .map_err(tn("looking up the iSCSI extent"))?;
            if let Some(target) = &target {
                for lun in iscsi
                    .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
                    .await
                    .map_err(tn("looking up LUNs"))?
                {
                    iscsi
                        .unmap_extent(lun.id, true)
                        .await
                        .map_err(tn("unmapping the LUN"))?;
                }
            }
            for extent in extents {
                iscsi
                    .delete_extent(extent.id, true)
                    .await
                    .map_err(tn("removing the iSCSI extent"))?;
            }
            if let Some(target) = target {
                iscsi
                    .delete_target(target.id, true, false)
                    .await
                    .map_err(tn("removing the iSCSI target"))?;
            }
            let comment = format!("tns-csi:{name}");
            for group in iscsi
                .initiators(&Query::all().filter(Filter::eq("comment", comment.as_str())))
                .await
                .map_err(tn("looking up the initiator group"))?
            {
                iscsi
                    .delete_initiator(group.id)
                    .await
                    .map_err(tn("removing the initiator group"))?;
            }
        }
    }
    Ok(())
}

/// Records user properties on a volume's dataset.
pub(crate) async fn set_props(
    client: &Client,
    dataset: &str,
    pairs: Vec<(String, String)>,
) -> Result<(), Status> {
    let changes = DatasetChanges {
        set_user_properties: pairs,
        ..Default::default()
    };
    client
        .datasets()
        .update(dataset, &changes)
        .await
        .map_err(tn("recording the volume's metadata"))?;
    Ok(())
}

/// Destroys a volume whose DeleteVolume already ran, once nothing depends on it any more:
/// no snapshots (deferred ones included). Then does the same for the volume it was cloned from.
pub(crate) async fn reap(client: &Client, dataset: &str) -> Result<(), Status> {
    let mut next = Some(dataset.to_owned());
    let mut guard = 0;
    while let Some(dataset) = next.take() {
        guard += 1;
        if guard > 32 {
            break;
        }
        let Some(Some(volume)) = load(client, &dataset).await? else {
            break;
        };
        if !volume.deleted || volume.retained {
            break;
        }
        let snapshots = client
            .snapshots()
            .of_dataset(&dataset)
            .await
            .map_err(tn("listing the volume's snapshots"))?;
        if !snapshots.is_empty() {
            break;
        }
        let origin = volume
            .dataset
            .origin()
            .map(|o| o.split('@').next().unwrap_or(o).to_owned());
        destroy(client, &volume.id).await?;
        next = origin;
    }
    Ok(())
}

/// Removes exports and the dataset itself.
pub(crate) async fn destroy(client: &Client, id: &VolumeId) -> Result<(), Status> {
    remove_exports(client, id).await?;
    client
        .datasets()
        .delete(&id.dataset, false, false)
        .await
        .map_err(tn("destroying the volume's dataset"))?;
    Ok(())
}

/// DeleteVolume after the lookup: retain, hide while snapshots exist, or destroy.
pub(crate) async fn delete(client: &Client, volume: ManagedVolume) -> Result<(), Status> {
    let strategy = match volume.dataset.user_property(props::DELETE_STRATEGY) {
        Some("retain") => DeleteStrategy::Retain,
        _ => DeleteStrategy::Delete,
    };
    remove_exports(client, &volume.id).await?;
    if strategy == DeleteStrategy::Retain {
        let marks = user_props(&[
            (props::DELETED, "true".into()),
            (props::RETAINED, "true".into()),
        ]);
        return set_props(client, &volume.id.dataset, marks).await;
    }
    let snapshots = client
        .snapshots()
        .of_dataset(&volume.id.dataset)
        .await
        .map_err(tn("listing the volume's snapshots"))?;
    if !snapshots.is_empty() {
        // CSI snapshots outlive their volume: hide it, destroy it with its last snapshot.
        tracing::info!(volume = %volume.id, snapshots = snapshots.len(), "volume has snapshots; hiding it until they are deleted");
        return set_props(
            client,
            &volume.id.dataset,
            user_props(&[(props::DELETED, "true".into())]),
        )
        .await;
    }
    let origin = volume
        .dataset
        .origin()
        .map(|o| o.split('@').next().unwrap_or(o).to_owned());
    client
        .datasets()
        .delete(&volume.id.dataset, false, false)
        .await
        .map_err(tn("destroying the volume's dataset"))?;
    if let Some(origin) = origin {
        reap(client, &origin).await?;
    }
    Ok(())
}

/// ControllerExpandVolume after the lookup; returns the new capacity.
pub(crate) async fn expand(
    client: &Client,
    volume: &ManagedVolume,
    params_block: u64,
    wanted: u64,
) -> Result<u64, Status> {
    let block = volume.id.protocol.is_block();
    let size = if block {
        wanted.div_ceil(params_block) * params_block
    } else {
        wanted.max(GIB)
    };
    if size <= volume.capacity {
        return Ok(volume.capacity);
    }
    let changes = if block {
        DatasetChanges {
            volsize: Some(size),
            ..Default::default()
        }
    } else {
        DatasetChanges {
            refquota: Some(Some(size)),
            ..Default::default()
        }
    };
    client
        .datasets()
        .update(&volume.id.dataset, &changes)
        .await
        .map_err(tn("growing the volume"))?;
    set_props(
        client,
        &volume.id.dataset,
        user_props(&[(props::CAPACITY, size.to_string())]),
    )
    .await?;
    Ok(size)
}

/// Why a volume is not healthy, or `None`.
pub(crate) async fn condition(
    client: &Client,
    volume: &ManagedVolume,
) -> Result<Option<String>, Status> {
    let name = volume.name().to_owned();
    let path = format!("/mnt/{}", volume.id.dataset);
    let problem = match volume.id.protocol {
        Protocol::Nfs => match client
            .nfs()
            .by_path(&path)
            .await
            .map_err(tn("checking the NFS share"))?
            .first()
        {
            None => Some(format!("NFS share of {path} is missing")),
            Some(share) if !share.enabled => Some(format!("NFS share of {path} is disabled")),
            Some(_) => None,
        },
        Protocol::Smb => match client
            .smb()
            .by_name(&name)
            .await
            .map_err(tn("checking the SMB share"))?
        {
            None => Some(format!("SMB share {name} is missing")),
            Some(share) if !share.enabled => Some(format!("SMB share {name} is disabled")),
            Some(_) => None,
        },
        Protocol::Nvmeof => match client
            .nvmet()
            .subsystem_by_name(&name)
            .await
            .map_err(tn("checking the subsystem"))?
        {
            None => Some(format!("NVMe-oF subsystem {name} is missing")),
            Some(subsys) => {
                let namespaces = client
                    .nvmet()
                    .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("checking the namespace"))?;
                let links = client
                    .nvmet()
                    .port_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("checking the port link"))?;
                match namespaces.first() {
                    None => Some(format!("NVMe-oF namespace of {name} is missing")),
                    Some(ns) if !ns.enabled => {
                        Some(format!("NVMe-oF namespace of {name} is disabled"))
                    }
                    Some(_) if links.is_empty() => {
                        Some(format!("NVMe-oF subsystem {name} is on no port"))
                    }
                    Some(_) => None,
                }
            }
        },
        Protocol::Iscsi => match client
            .iscsi()
            .target_by_name(&name.to_lowercase())
            .await
            .map_err(tn("checking the target"))?
        {
            None => Some(format!("iSCSI target {name} is missing")),
            Some(target) => {
                let luns = client
                    .iscsi()
                    .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
                    .await
                    .map_err(tn("checking the LUN"))?;
                if luns.is_empty() {
                    Some(format!("iSCSI target {name} has no LUN"))
                } else {
                    None
                }
            }
        },
    };
    let problem = match problem {
        None if volume.id.protocol.is_block() && volume.dataset.volsize_bytes().is_none() => {
            Some(format!("zvol {} reports no size", volume.id.dataset))
        }
        other => other,
    };
    Ok(problem)
}

/// ControllerPublishVolume for block volumes: puts the node on the allow-list.
pub(crate) async fn publish(
    client: &Client,
    volume: &ManagedVolume,
    node_id: &str,
) -> Result<HashMap<String, String>, Status> {
    let name = volume.name().to_owned();
    let mut ctx = HashMap::new();
    match volume.id.protocol {
        Protocol::Nfs | Protocol::Smb => {}
        Protocol::Nvmeof => {
            let hostnqn = csi_api::node_host_nqn(node_id);
            ctx.insert(csi_api::publish::HOST_NQN.to_owned(), hostnqn.clone());
            if volume.allow_any_host {
                return Ok(ctx);
            }
            let nvmet = client.nvmet();
            let subsys = nvmet
                .subsystem_by_name(&name)
                .await
                .map_err(tn("looking up the subsystem"))?
                .ok_or_else(|| {
                    Status::not_found(format!("volume {} has no NVMe-oF subsystem", volume.id))
                })?;
            let host = match nvmet
                .hosts(&Query::all().filter(Filter::eq("hostnqn", hostnqn.as_str())))
                .await
                .map_err(tn("looking up the host"))?
                .into_iter()
                .next()
            {
                Some(host) => host,
                None => match nvmet.create_host(&hostnqn).await {
                    Ok(host) => host,
                    Err(Error::AlreadyExists { .. } | Error::Validation { .. }) => nvmet
                        .hosts(&Query::all().filter(Filter::eq("hostnqn", hostnqn.as_str())))
                        .await
                        .map_err(tn("looking up the host"))?
                        .into_iter()
                        .next()
                        .ok_or_else(|| {
                            Status::internal(format!("host {hostnqn} could not be registered"))
                        })?,
                    Err(err) => {
                        return Err(crate::status::from_truenas(
                            "registering the node's host NQN",
                            err,
                        ));
                    }
                },
            };
            let links = nvmet
                .host_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await
                .map_err(tn("looking up allowed hosts"))?;
            if !links.iter().any(|l| l.host.id == host.id) {
                nvmet
                    .allow_host(host.id, subsys.id)
                    .await
                    .map_err(tn("allowing the node's host NQN"))?;
            }
        }
        Protocol::Iscsi => {
            let iqn = csi_api::node_initiator_iqn(node_id);
            ctx.insert(csi_api::publish::INITIATOR_IQN.to_owned(), iqn.clone());
            if volume.allow_any_host {
                return Ok(ctx);
            }
            edit_initiators(client, &name, |list| {
                list.retain(|i| i != props::NO_INITIATOR);
                if !list.contains(&iqn) {
                    list.push(iqn.clone());
                }
            })
            .await?;
        }
    }
    Ok(ctx)
}

/// ControllerUnpublishVolume: takes the node off the allow-list.
pub(crate) async fn unpublish(
    client: &Client,
    volume: &ManagedVolume,
    node_id: &str,
) -> Result<(), Status> {
    if volume.allow_any_host {
        return Ok(());
    }
    let name = volume.name().to_owned();
    match volume.id.protocol {
        Protocol::Nfs | Protocol::Smb => {}
        Protocol::Nvmeof => {
            let hostnqn = csi_api::node_host_nqn(node_id);
            let nvmet = client.nvmet();
            if let Some(subsys) = nvmet
                .subsystem_by_name(&name)
                .await
                .map_err(tn("looking up the subsystem"))?
            {
                for link in nvmet
                    .host_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("looking up allowed hosts"))?
                {
                    if link.host.hostnqn == hostnqn {
                        nvmet
                            .disallow_host(link.id)
                            .await
                            .map_err(tn("removing the node's host NQN"))?;
                    }
                }
            }
        }
        Protocol::Iscsi => {
            let iqn = csi_api::node_initiator_iqn(node_id);
            edit_initiators(client, &name, |list| {
                list.retain(|i| *i != iqn);
                if list.is_empty() {
                    list.push(props::NO_INITIATOR.to_owned());
                }
            })
            .await?;
        }
    }
    Ok(())
}

async fn edit_initiators(
    client: &Client,
    name: &str,
    edit: impl FnOnce(&mut Vec<String>),
) -> Result<(), Status> {
    let comment = format!("tns-csi:{name}");
    let Some(group) = client
        .iscsi()
        .initiators(&Query::all().filter(Filter::eq("comment", comment.as_str())))
        .await
        .map_err(tn("looking up the initiator group"))?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    let mut list = group.initiators.clone();
    edit(&mut list);
    if list != group.initiators {
        client
            .iscsi()
            .set_initiators(group.id, &list)
            .await
            .map_err(tn("updating the initiator group"))?;
    }
    Ok(())
}

/// Managed, live volumes in id order, one page.
pub(crate) async fn list(
    client: &Client,
    offset: u32,
    limit: u32,
) -> Result<Vec<ManagedVolume>, Status> {
    let managed = truenas::query::field(&["user_properties", props::MANAGED_BY, "value"]);
    let deleted = truenas::query::field(&["user_properties", props::DELETED, "value"]);
    let mut query = Query::all()
        .filter(Filter::eq(managed, props::MANAGER))
        .select(LOOKUP_FIELDS)
        .filter(Filter::eq(deleted, "false"))
        .order_by("id", false)
        .extra("retrieve_children", false)
        .extra("properties", json!(["volsize", "refquota", "origin"]));
    if limit > 0 {
        query = query.page(offset, limit);
    } else if offset > 0 {
        query = query.page(offset, 0);
    }
    let datasets = client
        .datasets()
        .query(&query)
        .await
        .map_err(tn("listing volumes"))?;
    Ok(datasets
        .into_iter()
        .filter_map(ManagedVolume::from_dataset)
        .collect())
}
