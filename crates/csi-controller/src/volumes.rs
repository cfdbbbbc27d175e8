//! Volumes: create (empty, from a snapshot, from a volume), export per protocol, delete with
//! the snapshot rules, expand, get, publish to a node. Every step is idempotent and every
//! lookup exact, so a retry after any failure or restart carries on where the last one stopped.

use std::collections::{BTreeMap, HashMap};

use crate::error::ControllerError;
use csi_api::csi::{CapacityRange, VolumeContentSource, volume_content_source};
use csi_api::{Protocol, SnapshotId, VolumeId};
use serde_json::json;
use truenas::api::{
    Dataset, DatasetChanges, Encryption, EncryptionKey, NewDataset, NewDatasetKind, NewSnapshot,
};
use truenas::query::{Filter, Query};
use truenas::{Client, Error};

use crate::error::tn;
use crate::params::{DeleteStrategy, VolumeParams};
use crate::props;

const GIB: u64 = 1 << 30;

/// The ZFS properties a volume's reads use (its size, block size, clone origin), asked for
/// by name: TrueNAS returns only the properties `extra.properties` lists.
pub(crate) const VOLUME_PROPERTIES: &[&str] = &["volsize", "volblocksize", "refquota", "origin"];

/// The dataset fields a volume lookup needs: the entry's own fields and
/// [`VOLUME_PROPERTIES`].
const LOOKUP_FIELDS: &[&str] = &[
    "id",
    "type",
    "pool",
    "user_properties",
    "encrypted",
    "locked",
    "volsize",
    "volblocksize",
    "refquota",
    "origin",
];

/// A volume query: exact fields, exactly the properties read, no children.
fn volume_query() -> Query {
    Query::all()
        .select(LOOKUP_FIELDS)
        .extra("retrieve_children", false)
        .extra("properties", json!(VOLUME_PROPERTIES))
}

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
                system: None,
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

    /// The nodes the volume is published to, in name order.
    pub(crate) fn published_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .dataset
            .user_properties
            .iter()
            .filter(|(key, _)| key.starts_with(props::PUBLISHED_PREFIX))
            .map(|(_, value)| value.rawvalue.clone())
            .collect();
        nodes.sort();
        nodes
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
) -> Result<Option<Option<ManagedVolume>>, ControllerError> {
    // Exact id, no children, only the fields the driver reads (spec: no scans on the hot path).
    let query = volume_query().filter(Filter::eq("id", dataset));
    let found = client
        .datasets()
        .query(&query)
        .await
        .map_err(tn("looking up the volume's dataset"))?;
    Ok(found.into_iter().next().map(ManagedVolume::from_dataset))
}

/// What CreateVolume learns in one query: the volume's dataset (as `load` reports it) and its
/// parent (to know whether it must be made, and how much room it has).
pub(crate) struct Lookup {
    /// `None` if absent, `Some(None)` if present but not ours.
    pub(crate) volume: Option<Option<ManagedVolume>>,
    /// The parent dataset, if it exists.
    pub(crate) parent: Option<Dataset>,
}

/// Reads the dataset and its parent with one exact query.
pub(crate) async fn lookup(
    client: &Client,
    dataset: &str,
    parent: &str,
) -> Result<Lookup, ControllerError> {
    let mut fields = LOOKUP_FIELDS.to_vec();
    fields.push("available");
    let mut properties = VOLUME_PROPERTIES.to_vec();
    properties.push("available");
    let query = Query::all()
        .filter(Filter::cond(
            "id",
            truenas::query::Op::In,
            json!([dataset, parent]),
        ))
        .select(&fields)
        .extra("retrieve_children", false)
        .extra("properties", json!(properties));
    let found = client
        .datasets()
        .query(&query)
        .await
        .map_err(tn("looking up the volume's dataset and its parent"))?;
    let mut lookup = Lookup {
        volume: None,
        parent: None,
    };
    for row in found {
        if row.id == dataset {
            lookup.volume = Some(ManagedVolume::from_dataset(row));
        } else if row.id == parent {
            lookup.parent = Some(row);
        }
    }
    Ok(lookup)
}

/// A volume from the entry `pool.dataset.update` answered with (no second lookup).
pub(crate) fn from_entry(dataset: Dataset) -> Option<ManagedVolume> {
    ManagedVolume::from_dataset(dataset)
}

/// Loads a volume by id for an RPC that needs it to exist and be live (the id's system is
/// the caller's to set).
pub(crate) async fn require(
    client: &Client,
    id: &VolumeId,
) -> Result<ManagedVolume, ControllerError> {
    match load(client, &id.dataset).await? {
        Some(Some(volume)) if !volume.deleted && volume.id.protocol == id.protocol => Ok(volume),
        _ => Err(ControllerError::not_found(format!(
            "volume {id} does not exist"
        ))),
    }
}

/// Bytes to provision for a capacity range (zvols round up to the block size; filesystem
/// quotas have TrueNAS's 1 GiB minimum).
pub(crate) fn capacity_for(
    params: &VolumeParams,
    range: Option<&CapacityRange>,
) -> Result<u64, ControllerError> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(ControllerError::invalid_argument(
            "capacity_range: sizes must not be negative",
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(ControllerError::invalid_argument(
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
        return Err(ControllerError::out_of_range(format!(
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
    pub(crate) fn parse(
        source: Option<&VolumeContentSource>,
    ) -> Result<Option<Self>, ControllerError> {
        match source.and_then(|s| s.r#type.as_ref()) {
            None => Ok(None),
            Some(volume_content_source::Type::Snapshot(s)) => s
                .snapshot_id
                .parse()
                .map(|id| Some(Self::Snapshot(id)))
                .map_err(|err| {
                    ControllerError::not_found(format!(
                        "source snapshot {} does not exist: {err}",
                        s.snapshot_id
                    ))
                }),
            Some(volume_content_source::Type::Volume(v)) => v
                .volume_id
                .parse()
                .map(|id| Some(Self::Volume(id)))
                .map_err(|err| {
                    ControllerError::not_found(format!(
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

/// Makes the parent dataset of a StorageClass if the lookup found it missing.
pub(crate) async fn ensure_parent_of(
    client: &Client,
    params: &VolumeParams,
    known: Option<&Dataset>,
) -> Result<(), ControllerError> {
    if known.is_some() {
        return Ok(());
    }
    ensure_parent(client, &params.parent_dataset()).await
}

/// Makes a dataset (and its ancestors) if it is missing.
pub(crate) async fn ensure_dataset(client: &Client, name: &str) -> Result<(), ControllerError> {
    ensure_parent(client, name).await
}

async fn ensure_parent(client: &Client, parent: &str) -> Result<(), ControllerError> {
    if client
        .datasets()
        .get_properties(parent, &[])
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
        Err(err) => Err(crate::error::from_truenas(
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
    /// The dataset was made by this call (nothing of it existed before), so its exports
    /// cannot exist yet: they are created without a lookup first, and looked up only when a
    /// create is refused.
    pub(crate) fresh: bool,
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

/// Refuses a filesystem quota the parent dataset has no room for: ZFS would accept the quota
/// and fail writes later, so the CO hears it now (RESOURCE_EXHAUSTED).
async fn check_room(
    client: &Client,
    parent: &str,
    known: Option<&Dataset>,
    capacity: u64,
) -> Result<(), ControllerError> {
    let available = match known {
        Some(parent) => parent.available_bytes(),
        None => client
            .datasets()
            .get_properties(parent, &["available"])
            .await
            .map_err(tn("reading the parent dataset's free space"))?
            .and_then(|d| d.available_bytes()),
    };
    match available {
        Some(available) if capacity > available => Err(ControllerError::NoSpace(format!(
            "a {capacity}-byte volume does not fit: {parent} has {available} bytes available"
        ))),
        _ => Ok(()),
    }
}

/// Creates the dataset or zvol (empty or cloned), already carrying its metadata.
pub(crate) async fn create_dataset(
    client: &Client,
    plan: &Plan<'_>,
    parent: Option<&Dataset>,
) -> Result<(), ControllerError> {
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
                check_room(client, &params.parent_dataset(), parent, plan.capacity).await?;
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
                    key: creation_key(params.encryption_generate_key, plan.secrets)?,
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
                        return Err(ControllerError::not_found(format!(
                            "source snapshot {id} does not exist"
                        )));
                    };
                    if id.volume.protocol.is_block() != params.protocol.is_block() {
                        return Err(ControllerError::invalid_argument(format!(
                            "snapshot {id} holds a {} volume; it cannot become a {} volume",
                            id.volume.protocol, params.protocol
                        )));
                    }
                    let source_size: u64 = found
                        .property(props::CAPACITY)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if plan.capacity < source_size {
                        return Err(ControllerError::out_of_range(format!(
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
                            return Err(ControllerError::not_found(format!(
                                "source volume {id} does not exist"
                            )));
                        }
                    };
                    if id.protocol.is_block() != params.protocol.is_block() {
                        return Err(ControllerError::invalid_argument(format!(
                            "volume {id} is a {} volume; it cannot be cloned into a {} volume",
                            id.protocol, params.protocol
                        )));
                    }
                    if plan.capacity < source.capacity {
                        return Err(ControllerError::out_of_range(format!(
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
                            return Err(crate::error::from_truenas(
                                "taking the clone's source snapshot",
                                err,
                            ));
                        }
                    }
                    format!("{}@{name}", id.dataset)
                }
            };
            if params.detached {
                // A copy that depends on nothing (zfs send | recv on the NAS), born carrying
                // its metadata so a retry finds it as ours; then neither the source snapshot
                // nor the copy of it on the new volume is needed.
                let (from, name) = snapshot.split_once('@').unwrap_or((&snapshot, ""));
                let overrides: BTreeMap<String, String> = metadata.iter().cloned().collect();
                client
                    .replication()
                    .copy_snapshot(from, name, &plan.dataset, &overrides)
                    .await
                    .map_err(tn(
                        "copying the source into an independent volume (a local replication job)",
                    ))?;
                client
                    .snapshots()
                    .delete(&format!("{}@{name}", plan.dataset), false, false)
                    .await
                    .map_err(tn("removing the replicated snapshot from the new volume"))?;
                if matches!(source, Source::Volume(_)) {
                    client
                        .snapshots()
                        .delete(&snapshot, false, false)
                        .await
                        .map_err(tn("removing the temporary source snapshot"))?;
                }
            } else {
                match client
                    .snapshots()
                    .clone_to(&snapshot, &plan.dataset, &BTreeMap::new())
                    .await
                {
                    Ok(()) => {}
                    Err(Error::AlreadyExists { .. }) => {}
                    Err(err) => return Err(crate::error::from_truenas("cloning the source", err)),
                }
                if matches!(source, Source::Volume(_)) {
                    // Deferred: it disappears when its last clone does, so nothing leaks.
                    client
                        .snapshots()
                        .delete(&snapshot, true, false)
                        .await
                        .map_err(tn("releasing the clone's source snapshot"))?;
                }
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
                .get_properties(&plan.dataset, &["volsize", "refquota"])
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

/// Records (or forgets) that `volume` is published to `node_id`.
pub(crate) async fn record_published(
    client: &Client,
    volume: &ManagedVolume,
    node_id: &str,
    published: bool,
) -> Result<(), ControllerError> {
    let key = props::published_key(node_id);
    let recorded = volume.dataset.user_property(&key).is_some();
    let changes = match (published, recorded) {
        (true, false) => DatasetChanges {
            set_user_properties: vec![(key, node_id.to_owned())],
            ..Default::default()
        },
        (false, true) => DatasetChanges {
            remove_user_properties: vec![key],
            ..Default::default()
        },
        _ => return Ok(()),
    };
    client
        .datasets()
        .update(&volume.id.dataset, &changes)
        .await
        .map_err(tn("recording which nodes the volume is published to"))?;
    Ok(())
}

/// Records user properties on a volume's dataset.
pub(crate) async fn set_props(
    client: &Client,
    dataset: &str,
    pairs: Vec<(String, String)>,
) -> Result<(), ControllerError> {
    record(client, dataset, pairs).await.map(|_| ())
}

/// Sets user properties and returns the dataset as TrueNAS answered (the updated entry).
pub(crate) async fn record(
    client: &Client,
    dataset: &str,
    pairs: Vec<(String, String)>,
) -> Result<Dataset, ControllerError> {
    let changes = DatasetChanges {
        set_user_properties: pairs,
        ..Default::default()
    };
    client
        .datasets()
        .update(dataset, &changes)
        .await
        .map_err(tn("recording the volume's metadata"))
}

/// Destroys a volume whose DeleteVolume already ran, once nothing depends on it any more:
/// no snapshots (deferred ones included). Then does the same for the volume it was cloned from.
pub(crate) async fn reap(client: &Client, dataset: &str) -> Result<(), ControllerError> {
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
pub(crate) async fn destroy(client: &Client, id: &VolumeId) -> Result<(), ControllerError> {
    crate::exports::remove(client, id).await?;
    client
        .datasets()
        .delete(&id.dataset, false, false)
        .await
        .map_err(tn("destroying the volume's dataset"))?;
    Ok(())
}

/// DeleteVolume after the lookup: retain, hide while snapshots exist, or destroy.
pub(crate) async fn delete(client: &Client, volume: ManagedVolume) -> Result<(), ControllerError> {
    let strategy = match volume.dataset.user_property(props::DELETE_STRATEGY) {
        Some("retain") => DeleteStrategy::Retain,
        _ => DeleteStrategy::Delete,
    };
    crate::exports::remove(client, &volume.id).await?;
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
) -> Result<u64, ControllerError> {
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

/// Managed, live volumes in id order, one page.
pub(crate) async fn list(
    client: &Client,
    offset: u32,
    limit: u32,
) -> Result<Vec<ManagedVolume>, ControllerError> {
    let managed = truenas::query::field(&["user_properties", props::MANAGED_BY, "value"]);
    let deleted = truenas::query::field(&["user_properties", props::DELETED, "value"]);
    let mut query = volume_query()
        .filter(Filter::eq(managed, props::MANAGER))
        .filter(Filter::eq(deleted, "false"))
        .order_by("id", false);
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

/// Live volumes of each protocol, counted on TrueNAS (one `count` query per protocol, so the
/// reply stays one number with any number of volumes).
pub(crate) async fn count_by_protocol(
    client: &Client,
) -> Result<Vec<(Protocol, u64)>, ControllerError> {
    let managed = truenas::query::field(&["user_properties", props::MANAGED_BY, "value"]);
    let deleted = truenas::query::field(&["user_properties", props::DELETED, "value"]);
    let protocol_field = truenas::query::field(&["user_properties", props::PROTOCOL, "value"]);
    let mut counts = Vec::new();
    for protocol in [
        Protocol::Nfs,
        Protocol::Smb,
        Protocol::Nvmeof,
        Protocol::Iscsi,
    ] {
        let query = Query::all()
            .filter(Filter::eq(managed.clone(), props::MANAGER))
            .filter(Filter::eq(deleted.clone(), "false"))
            .filter(Filter::eq(protocol_field.clone(), protocol.to_string()))
            .extra("retrieve_children", false)
            .extra("properties", json!([]));
        let count = client
            .datasets()
            .count(&query)
            .await
            .map_err(tn("counting volumes"))?;
        counts.push((protocol, count));
    }
    Ok(counts)
}

/// Secret keys the driver reads an encryption secret from (provisioner, controller-publish).
pub(crate) const PASSPHRASE_SECRET: &str = "encryptionPassphrase";
/// A 64-hex-digit key instead of a passphrase.
pub(crate) const KEY_SECRET: &str = "encryptionKey";

/// The secret a request carries for an encrypted volume, checked (never echoed): a
/// passphrase of at least 8 characters, or 64 hex digits; `None` when it carries neither.
pub(crate) fn secret_key(
    secrets: &HashMap<String, String>,
) -> Result<Option<EncryptionKey>, ControllerError> {
    match (secrets.get(PASSPHRASE_SECRET), secrets.get(KEY_SECRET)) {
        (Some(_), Some(_)) => Err(ControllerError::invalid_argument(format!(
            "secrets: give {PASSPHRASE_SECRET} or {KEY_SECRET}, not both"
        ))),
        (Some(passphrase), None) => {
            if passphrase.chars().count() < 8 {
                return Err(ControllerError::invalid_argument(format!(
                    "secret {PASSPHRASE_SECRET}: must be at least 8 characters (it has {})",
                    passphrase.chars().count()
                )));
            }
            Ok(Some(EncryptionKey::Passphrase(passphrase.clone().into())))
        }
        (None, Some(key)) => {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ControllerError::invalid_argument(format!(
                    "secret {KEY_SECRET}: must be 64 hexadecimal digits (it has {} characters)",
                    key.chars().count()
                )));
            }
            Ok(Some(EncryptionKey::Hex(key.clone().into())))
        }
        (None, None) => Ok(None),
    }
}

/// How a new encrypted volume is keyed: a generated key (TrueNAS keeps it and unlocks it at
/// boot), or the provisioner secret's passphrase or key (not kept: the volume is locked after
/// a NAS reboot until a publish brings the secret again).
fn creation_key(
    generate: bool,
    secrets: &HashMap<String, String>,
) -> Result<EncryptionKey, ControllerError> {
    match (generate, secret_key(secrets)?) {
        (true, None) => Ok(EncryptionKey::Generate),
        (true, Some(_)) => Err(ControllerError::invalid_argument(format!(
            "StorageClass parameter `encryptionGenerateKey` is \"true\" but the provisioner secret also has {PASSPHRASE_SECRET} or {KEY_SECRET}; use one"
        ))),
        (false, Some(key)) => Ok(key),
        (false, None) => Err(ControllerError::invalid_argument(format!(
            "StorageClass parameter `encryption` is \"true\": set `encryptionGenerateKey: \"true\"`, or put {PASSPHRASE_SECRET} (8+ characters) or {KEY_SECRET} (64 hex digits) in the provisioner secret (csi.storage.k8s.io/provisioner-secret-name)"
        ))),
    }
}

/// Unlocks a volume whose dataset came back locked (a NAS reboot) with the secret the request
/// carries; FAILED_PRECONDITION naming the dataset when it has none or the wrong one.
pub(crate) async fn unlock(
    client: &Client,
    volume: &ManagedVolume,
    secrets: &HashMap<String, String>,
) -> Result<(), ControllerError> {
    if !volume.dataset.locked {
        return Ok(());
    }
    let dataset = &volume.id.dataset;
    let Some(key) = secret_key(secrets)? else {
        return Err(ControllerError::failed_precondition(format!(
            "volume {}: dataset {dataset} is locked (its key is not loaded, as after a NAS reboot) and the request carries no {PASSPHRASE_SECRET} or {KEY_SECRET} secret to unlock it; set csi.storage.k8s.io/controller-publish-secret-name (and -namespace) on the StorageClass to the Secret the volume was created with",
            volume.id
        )));
    };
    tracing::info!(volume = %volume.id, %dataset, "unlocking an encrypted volume that is locked");
    let outcome = match client.replication().unlock(dataset, &key).await {
        Ok(outcome) => outcome,
        // Someone else unlocked it in the meantime.
        Err(err) if err.to_string().contains("is not locked") => return Ok(()),
        Err(err) => return Err(crate::error::from_truenas("unlocking the volume", err)),
    };
    if outcome.unlocked.iter().any(|d| d == dataset) {
        return Ok(());
    }
    let reason = outcome
        .failed
        .get(dataset)
        .and_then(|f| f.error.clone())
        .unwrap_or_else(|| "no reason given".into());
    Err(ControllerError::failed_precondition(format!(
        "volume {}: dataset {dataset} stays locked: TrueNAS refused the secret ({reason}); the request's {PASSPHRASE_SECRET}/{KEY_SECRET} must be the one the volume was created with",
        volume.id
    )))
}
