//! The typed TrueNAS API, one handle per namespace, so call sites never spell method names,
//! positional params or filter JSON by hand. Deletes treat "already gone" as success and say so.

use crate::Method;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::query::{Filter, Query};
use crate::{Client, Error};

mod dataset;
mod iscsi;
mod nvmet;
mod pool;
mod replication;
mod sharing;
mod snapshot;
mod system;

pub use dataset::{
    Compression, Dataset, DatasetChanges, DatasetType, Datasets, Encryption, EncryptionKey,
    NewDataset, NewDatasetKind, VolBlockSize,
};
pub use iscsi::{
    Extent, Initiator, Iscsi, IscsiGlobal, NewExtent, NewTarget, Portal, PortalListen, Target,
    TargetExtent, TargetGroup,
};
pub use nvmet::{
    Host, HostSubsystem, Namespace, NewNamespace, NewPort, NewSubsystem, Nvmet, NvmetGlobal, Port,
    PortSubsystem, Subsystem,
};
pub use pool::{Pool, Pools};
pub use replication::{Replication, Unlocked};
pub use sharing::{NewNfsShare, NewSmbShare, NfsShare, NfsShares, SmbShare, SmbShares};
pub use snapshot::{NewSnapshot, Rollback, Snapshot, Snapshots};
pub use system::{ServiceVerb, System, SystemInfo};

/// A ZFS property as TrueNAS reports it: the typed value plus the raw and display forms.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Property<T> {
    /// Typed value; `None` for "none" (e.g. a quota of 0).
    #[serde(default = "none")]
    pub parsed: Option<T>,
    /// What `zfs get -p` prints.
    #[serde(default)]
    pub rawvalue: String,
    /// Display form (`10 GiB`), or null.
    #[serde(default)]
    pub value: Option<String>,
    /// `LOCAL`, `INHERITED`, `DEFAULT`, `NONE`, …
    #[serde(default)]
    pub source: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

/// User properties as TrueNAS returns them on datasets: key → property object.
pub type UserProperties = BTreeMap<String, Property<String>>;

impl Client {
    /// Pools and their capacity.
    pub fn pools(&self) -> Pools<'_> {
        Pools(self)
    }
    /// Datasets and zvols.
    pub fn datasets(&self) -> Datasets<'_> {
        Datasets(self)
    }
    /// Snapshots, clones and rollback.
    pub fn snapshots(&self) -> Snapshots<'_> {
        Snapshots(self)
    }
    /// NFS exports.
    pub fn nfs(&self) -> NfsShares<'_> {
        NfsShares(self)
    }
    /// SMB shares.
    pub fn smb(&self) -> SmbShares<'_> {
        SmbShares(self)
    }
    /// The NVMe-oF target.
    pub fn nvmet(&self) -> Nvmet<'_> {
        Nvmet(self)
    }
    /// The iSCSI target.
    pub fn iscsi(&self) -> Iscsi<'_> {
        Iscsi(self)
    }
    /// Version and liveness.
    pub fn system(&self) -> System<'_> {
        System(self)
    }
    /// Local replication (zfs send | zfs recv) and dataset unlocking, both jobs.
    pub fn replication(&self) -> Replication<'_> {
        Replication(self)
    }
}

/// Turns a result into `T`, or a protocol error naming the method.
pub(crate) fn decode<T: DeserializeOwned>(method: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|err| Error::Protocol {
        reason: format!("{method} returned an unexpected shape: {err}"),
    })
}

/// Serializes a request body (our own types always serialize).
pub(crate) fn body<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("request bodies are plain data")
}

pub(crate) async fn query<T: DeserializeOwned>(
    client: &Client,
    method: &'static str,
    query: &Query,
) -> Result<Vec<T>, Error> {
    decode(
        method,
        client.call(Method::read(method), query.params()).await?,
    )
}

/// The first match, or `None`: a plain query, never `get:true` (which errors on no match).
pub(crate) async fn find<T: DeserializeOwned>(
    client: &Client,
    method: &'static str,
    filter: Filter,
) -> Result<Option<T>, Error> {
    let rows: Vec<T> = query(client, method, &Query::all().filter(filter)).await?;
    Ok(rows.into_iter().next())
}

/// A create: the created entry.
pub(crate) async fn create<T: DeserializeOwned>(
    client: &Client,
    method: &'static str,
    params: Vec<Value>,
) -> Result<T, Error> {
    decode(method, client.call(Method::change(method), params).await?)
}

/// A delete that succeeds when the object is already gone: `Ok(false)` says it was.
pub(crate) async fn delete(
    client: &Client,
    method: &'static str,
    params: Vec<Value>,
) -> Result<bool, Error> {
    match client.call(Method::change(method), params).await {
        Ok(_) => Ok(true),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}
