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
    pub(crate) id: SnapshotId,
    pub(crate) inner: Snapshot,
}

impl ManagedSnapshot {
    fn from_snapshot(snapshot: Snapshot) -> Option<Self> {
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
        let volume: VolumeId = snapshot.property(props::SOURCE_VOLUME_ID)?.parse().ok()?;
        let id = SnapshotId {
            volume,
            name: snapshot.snapshot_name.clone(),
        };
        Some(Self {
            id,
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
            source_volume_id: self.id.volume.to_string(),
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
        if existing.id.volume.dataset == source.id.dataset {
            return Ok(existing);
        }
        return Err(ControllerError::already_exists(format!(
            "snapshot name {name} is already used for volume {}",
            existing.id.volume
        )));
    }
    let mut properties = BTreeMap::new();
    properties.insert(props::MANAGED_BY.to_owned(), props::MANAGER.to_owned());
    properties.insert(props::CSI_SNAPSHOT_NAME.to_owned(), name.to_owned());
    properties.insert(props::SOURCE_VOLUME_ID.to_owned(), source.id.to_string());
    properties.insert(props::CAPACITY.to_owned(), source.capacity.to_string());
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

/// One page of managed snapshots, optionally of one volume.
pub(crate) async fn list(
    client: &Client,
    source: Option<&VolumeId>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<ManagedSnapshot>, bool), ControllerError> {
    let marker = truenas::query::field(&["properties", props::CSI_SNAPSHOT_NAME, "source"]);
    let mut query = Query::all()
        .filter(Filter::eq(marker, "LOCAL"))
        .order_by("id", false);
    if let Some(volume) = source {
        query = query.filter(Filter::eq("dataset", volume.dataset.as_str()));
    }
    let all: Vec<ManagedSnapshot> = client
        .snapshots()
        .query(&query)
        .await
        .map_err(tn("listing snapshots"))?
        .into_iter()
        .filter_map(ManagedSnapshot::from_snapshot)
        .filter(|s| source.is_none_or(|v| s.id.volume == *v))
        .collect();
    let more = limit > 0 && all.len() > offset + limit;
    let page = all
        .into_iter()
        .skip(offset)
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
