//! Snapshots: idempotent by name, looked up by full id, deferred destroy when clones depend on
//! them, and the hidden volume they belong to destroyed with the last of them.

use std::collections::BTreeMap;

use crate::error::ControllerError;
use csi_api::{SnapshotId, VolumeId};
use truenas::Client;
use truenas::api::{NewSnapshot, Snapshot};
use truenas::query::{Filter, Query};

use crate::error::tn;
use crate::props;
use crate::volumes::{self, ManagedVolume};

/// A snapshot the driver made.
pub(crate) struct ManagedSnapshot {
    /// Where it lives: the volume's dataset, or for a detached snapshot the dataset its data
    /// was copied to (`<detachedSnapshotsParentDataset>/<name>`).
    pub(crate) id: SnapshotId,
    /// The volume it was taken of.
    pub(crate) source: VolumeId,
    pub(crate) inner: Snapshot,
}

/// How CreateSnapshot keeps the data (VolumeSnapshotClass parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SnapshotParams {
    /// Copy the data out with a local replication into this parent dataset.
    pub(crate) detached_parent: Option<String>,
}

impl SnapshotParams {
    /// Parses `detachedSnapshots` and `detachedSnapshotsParentDataset`; anything else that is
    /// not a `csi.storage.k8s.io/` key is refused by name.
    pub(crate) fn parse(
        parameters: &std::collections::HashMap<String, String>,
    ) -> Result<Self, ControllerError> {
        if let Some(key) = parameters.keys().find(|k| {
            !k.starts_with("csi.storage.k8s.io/")
                && *k != "detachedSnapshots"
                && *k != "detachedSnapshotsParentDataset"
        }) {
            return Err(ControllerError::invalid_argument(format!(
                "unknown VolumeSnapshotClass parameter `{key}`; known: detachedSnapshots, detachedSnapshotsParentDataset"
            )));
        }
        let detached = match parameters.get("detachedSnapshots").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ControllerError::invalid_argument(format!(
                    "VolumeSnapshotClass parameter `detachedSnapshots`: `{other}` is not \"true\" or \"false\""
                )));
            }
        };
        let parent = parameters.get("detachedSnapshotsParentDataset");
        match (detached, parent) {
            (false, None) => Ok(Self::default()),
            (false, Some(_)) => Err(ControllerError::invalid_argument(
                "VolumeSnapshotClass parameter `detachedSnapshotsParentDataset` applies only with detachedSnapshots: \"true\"",
            )),
            (true, None) => Err(ControllerError::invalid_argument(
                "VolumeSnapshotClass parameter `detachedSnapshotsParentDataset` is required with detachedSnapshots: \"true\" (e.g. tank/k8s-snapshots)",
            )),
            (true, Some(parent)) => {
                let parent = parent.trim_matches('/');
                let valid = parent.contains('/')
                    && parent.split('/').all(|c| {
                        !c.is_empty()
                            && c != "."
                            && c != ".."
                            && c.chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || "_-:.".contains(ch))
                    });
                if !valid {
                    return Err(ControllerError::invalid_argument(format!(
                        "VolumeSnapshotClass parameter `detachedSnapshotsParentDataset`: `{parent}` is not a dataset below a pool (pool/name)"
                    )));
                }
                Ok(Self {
                    detached_parent: Some(parent.to_owned()),
                })
            }
        }
    }
}

impl ManagedSnapshot {
    pub(crate) fn from_snapshot(snapshot: Snapshot) -> Option<Self> {
        // Only a locally set CSI name marks ours; inherited markers do not count.
        let local = snapshot
            .properties
            .get(props::CSI_SNAPSHOT_NAME)?
            .source
            .as_deref()
            == Some("LOCAL");
        if !local || snapshot.property("defer_destroy") == Some("on") {
            return None;
        }
        let source: VolumeId = snapshot.property(props::SOURCE_VOLUME_ID)?.parse().ok()?;
        let volume = if snapshot.property(props::DETACHED) == Some("true") {
            VolumeId {
                system: source.system.clone(),
                protocol: source.protocol,
                dataset: snapshot.dataset.clone(),
            }
        } else {
            source.clone()
        };
        let id = SnapshotId {
            volume,
            name: snapshot.snapshot_name.clone(),
        };
        Some(Self {
            id,
            source,
            inner: snapshot,
        })
    }

    /// The CSI `Snapshot` message.
    pub(crate) fn to_csi(&self) -> csi_api::csi::Snapshot {
        let size = self
            .inner
            .property(props::CAPACITY)
            .and_then(|v| v.parse::<i64>().ok())
            .or_else(|| self.inner.referenced_bytes().map(|b| b as i64))
            .unwrap_or(0);
        csi_api::csi::Snapshot {
            size_bytes: size,
            snapshot_id: self.id.to_string(),
            source_volume_id: self.source.to_string(),
            creation_time: self
                .inner
                .created_secs()
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            ready_to_use: true,
            group_snapshot_id: String::new(),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
}

/// CreateSnapshot after validation: returns the existing one or makes it.
pub(crate) async fn create(
    client: &Client,
    source: &ManagedVolume,
    name: &str,
    params: &SnapshotParams,
) -> Result<ManagedSnapshot, ControllerError> {
    if !valid_name(name) {
        return Err(ControllerError::invalid_argument(format!(
            "snapshot name `{name}` must be 1-200 letters, digits, `_`, `-`, `:` or `.`"
        )));
    }
    // The same CSI name on another volume is a conflict; on this one it is a retry.
    let same_name = client
        .snapshots()
        .query(&Query::all().filter(Filter::eq("snapshot_name", name)))
        .await
        .map_err(tn("looking up snapshots by name"))?;
    if let Some(existing) = same_name
        .into_iter()
        .find_map(ManagedSnapshot::from_snapshot)
    {
        if existing.source.dataset == source.id.dataset {
            return Ok(existing);
        }
        return Err(ControllerError::already_exists(format!(
            "snapshot name {name} is already used for volume {}",
            existing.source
        )));
    }
    let mut properties = BTreeMap::new();
    properties.insert(props::MANAGED_BY.to_owned(), props::MANAGER.to_owned());
    properties.insert(props::CSI_SNAPSHOT_NAME.to_owned(), name.to_owned());
    properties.insert(props::SOURCE_VOLUME_ID.to_owned(), source.id.to_string());
    properties.insert(props::CAPACITY.to_owned(), source.capacity.to_string());
    if let Some(parent) = &params.detached_parent {
        return create_detached(client, source, name, parent, properties).await;
    }
    let new = NewSnapshot {
        dataset: source.id.dataset.clone(),
        name: name.to_owned(),
        recursive: false,
        properties,
    };
    let snapshot = match client.snapshots().create(&new).await {
        Ok(snapshot) => snapshot,
        Err(truenas::Error::AlreadyExists { .. }) => client
            .snapshots()
            .get(&format!("{}@{name}", source.id.dataset))
            .await
            .map_err(tn("reading the snapshot"))?
            .ok_or_else(|| {
                ControllerError::unavailable("the snapshot vanished right after it was made; retry")
            })?,
        Err(err) => return Err(crate::error::from_truenas("taking the snapshot", err)),
    };
    ManagedSnapshot::from_snapshot(snapshot).ok_or_else(|| {
        ControllerError::already_exists(format!(
            "a snapshot {name} not made by tns-csi exists on {}",
            source.id
        ))
    })
}

/// A detached snapshot: a plain ZFS snapshot of the volume, copied by a local replication job
/// into `<parent>/<name>` (a hidden volume of the driver's, destroyed with its last
/// snapshot), marked there as ours, and the snapshot on the volume removed, so the volume can
/// be deleted at once and the snapshot lives on. Each step is safe to repeat.
async fn create_detached(
    client: &Client,
    source: &ManagedVolume,
    name: &str,
    parent: &str,
    mut properties: BTreeMap<String, String>,
) -> Result<ManagedSnapshot, ControllerError> {
    let copy = format!("{parent}/{name}");
    volumes::ensure_dataset(client, parent).await?;
    let temp = NewSnapshot {
        dataset: source.id.dataset.clone(),
        name: name.to_owned(),
        recursive: false,
        properties: BTreeMap::new(),
    };
    match client.snapshots().create(&temp).await {
        Ok(_) | Err(truenas::Error::AlreadyExists { .. }) => {}
        Err(err) => {
            return Err(crate::error::from_truenas(
                "taking the snapshot to copy out",
                err,
            ));
        }
    }
    // The copy is one of the driver's datasets from birth: managed, already deleted (so no
    // listing shows it as a volume), removed by `reap` when its last snapshot goes.
    let overrides: BTreeMap<String, String> = [
        (props::MANAGED_BY, props::MANAGER.to_owned()),
        (props::CSI_VOLUME_NAME, format!("detached-snapshot:{name}")),
        (props::PROTOCOL, source.id.protocol.to_string()),
        (props::CAPACITY, source.capacity.to_string()),
        (props::DELETED, "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    client
        .replication()
        .copy_snapshot(&source.id.dataset, name, &copy, &overrides)
        .await
        .map_err(tn(
            "copying the snapshot out of its volume (a local replication job)",
        ))?;
    properties.insert(props::DETACHED.to_owned(), "true".to_owned());
    let zfs_id = format!("{copy}@{name}");
    client
        .snapshots()
        .update_user_properties(&zfs_id, &properties.into_iter().collect::<Vec<_>>(), &[])
        .await
        .map_err(tn("marking the detached snapshot"))?;
    client
        .snapshots()
        .delete(&format!("{}@{name}", source.id.dataset), false, false)
        .await
        .map_err(tn(
            "removing the snapshot from its volume after copying it out",
        ))?;
    let snapshot = client
        .snapshots()
        .get(&zfs_id)
        .await
        .map_err(tn("reading the detached snapshot"))?
        .ok_or_else(|| ControllerError::unavailable("the detached snapshot vanished; retry"))?;
    ManagedSnapshot::from_snapshot(snapshot)
        .ok_or_else(|| ControllerError::internal("the detached snapshot lost its markers"))
}

/// DeleteSnapshot after parsing: destroys it (deferred while clones use it), then the hidden
/// volume it belonged to if it was the last.
pub(crate) async fn delete(client: &Client, id: &SnapshotId) -> Result<(), ControllerError> {
    let zfs_id = id.zfs_id();
    if let Some(snapshot) = client
        .snapshots()
        .get(&zfs_id)
        .await
        .map_err(tn("looking up the snapshot"))?
    {
        if snapshot
            .properties
            .get(props::CSI_SNAPSHOT_NAME)
            .and_then(|p| p.source.as_deref())
            != Some("LOCAL")
        {
            return Err(ControllerError::failed_precondition(format!(
                "snapshot {zfs_id} was not made by tns-csi; not deleting it"
            )));
        }
        let has_clones = snapshot.property("clones").is_some_and(|c| !c.is_empty());
        client
            .snapshots()
            .delete(&zfs_id, has_clones, false)
            .await
            .map_err(tn("destroying the snapshot"))?;
    }
    volumes::reap(client, &id.volume.dataset).await
}

/// One page of managed snapshots, optionally of one volume. Without a volume the page is cut
/// on TrueNAS (`offset`/`limit`, every filter server-side so offsets count the same
/// snapshots), so each page costs one bounded request and reply however many snapshots exist.
pub(crate) async fn list(
    client: &Client,
    source: Option<&VolumeId>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<ManagedSnapshot>, bool), ControllerError> {
    let marker = truenas::query::field(&["properties", props::CSI_SNAPSHOT_NAME, "source"]);
    let deferred = truenas::query::field(&["properties", "defer_destroy", "value"]);
    let mut query = Query::all()
        .filter(Filter::eq(marker, "LOCAL"))
        .filter(Filter::cond(
            deferred,
            truenas::query::Op::Ne,
            serde_json::json!("on"),
        ))
        .order_by("id", false);
    // Without a volume the page is cut on TrueNAS (one more than asked: whether there is a
    // next page); a volume's snapshots include detached ones, found by their source here.
    let on_server = source.is_none();
    if on_server {
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if limit > 0 {
            query = query.page(to_u32(offset), to_u32(limit.saturating_add(1)));
        } else if offset > 0 {
            query = query.page(to_u32(offset), 0);
        }
    }
    let matching: Vec<ManagedSnapshot> = client
        .snapshots()
        .query(&query)
        .await
        .map_err(tn("listing snapshots"))?
        .into_iter()
        .filter_map(ManagedSnapshot::from_snapshot)
        .filter(|s| source.is_none_or(|v| s.source == *v))
        .collect();
    let skip = if on_server { 0 } else { offset };
    let more = limit > 0 && matching.len() > skip + limit;
    let page = matching
        .into_iter()
        .skip(skip)
        .take(if limit == 0 { usize::MAX } else { limit })
        .collect();
    Ok((page, more))
}

/// One snapshot by id, if it exists and is ours.
pub(crate) async fn get(
    client: &Client,
    id: &SnapshotId,
) -> Result<Option<ManagedSnapshot>, ControllerError> {
    let found = client
        .snapshots()
        .get(&id.zfs_id())
        .await
        .map_err(tn("looking up the snapshot"))?;
    Ok(found
        .and_then(ManagedSnapshot::from_snapshot)
        .filter(|s| s.id == *id))
}
