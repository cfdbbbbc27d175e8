//! Snapshots, clones and rollback: `pool.snapshot.*` (spec §4.7).

use crate::Method;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Property, create, delete};
use crate::query::{Filter, Query};
use crate::{Client, Error};

/// One snapshot entry; user properties are mixed into `properties`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// `dataset@name`.
    pub id: String,
    /// The part after `@`.
    pub snapshot_name: String,
    /// The dataset it belongs to.
    pub dataset: String,
    /// Pool name.
    #[serde(default)]
    pub pool: String,
    /// Native and user properties.
    #[serde(default)]
    pub properties: BTreeMap<String, Property<Value>>,
}

impl Snapshot {
    /// A user (or native) property's raw value.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(|p| p.rawvalue.as_str())
    }
    /// Bytes the snapshot refers to (the size of a volume restored from it).
    pub fn referenced_bytes(&self) -> Option<u64> {
        self.property("referenced").and_then(|raw| raw.parse().ok())
    }
    /// Creation time, seconds since the epoch.
    pub fn created_secs(&self) -> Option<i64> {
        self.property("creation").and_then(|raw| raw.parse().ok())
    }
}

/// A `pool.snapshot.create` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewSnapshot {
    /// Dataset to snapshot.
    pub dataset: String,
    /// Short name (after `@`).
    pub name: String,
    /// Also snapshot descendants.
    pub recursive: bool,
    /// Properties (user properties included) set at creation.
    pub properties: BTreeMap<String, String>,
}

/// What a rollback may destroy to get back to the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollback {
    /// Destroy newer snapshots.
    pub recursive: bool,
    /// Destroy newer snapshots' clones too.
    pub recursive_clones: bool,
    /// Unmount if needed.
    pub force: bool,
}

/// `pool.snapshot.*`.
#[derive(Debug, Clone, Copy)]
pub struct Snapshots<'a>(pub(super) &'a Client);

impl Snapshots<'_> {
    /// Any query. Filter by full `id` for the fast path (spec §7.16).
    pub async fn query(&self, query: &Query) -> Result<Vec<Snapshot>, Error> {
        super::query(self.0, "pool.snapshot.query", query).await
    }

    /// One snapshot by full id (`dataset@name`); `None` if absent.
    pub async fn get(&self, id: &str) -> Result<Option<Snapshot>, Error> {
        Ok(self
            .query(&Query::all().filter(Filter::eq("id", id)))
            .await?
            .into_iter()
            .next())
    }

    /// Snapshots of one dataset (walks every snapshot on the NAS: not for hot paths).
    pub async fn of_dataset(&self, dataset: &str) -> Result<Vec<Snapshot>, Error> {
        self.query(&Query::all().filter(Filter::eq("dataset", dataset)))
            .await
    }

    /// Takes a snapshot; returns its entry.
    pub async fn create(&self, new: &NewSnapshot) -> Result<Snapshot, Error> {
        let mut data = json!({"dataset": new.dataset, "name": new.name});
        if new.recursive {
            data["recursive"] = json!(true);
        }
        if !new.properties.is_empty() {
            data["properties"] = json!(new.properties);
        }
        create(self.0, "pool.snapshot.create", vec![data]).await
    }

    /// Destroys a snapshot; with `defer`, one that still has clones goes when they do.
    /// `Ok(false)` if it was already gone.
    pub async fn delete(&self, id: &str, defer: bool, recursive: bool) -> Result<bool, Error> {
        delete(
            self.0,
            "pool.snapshot.delete",
            vec![json!(id), json!({"defer": defer, "recursive": recursive})],
        )
        .await
    }

    /// Creates dataset `target` from `snapshot`, with extra ZFS properties.
    pub async fn clone_to(
        &self,
        snapshot: &str,
        target: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let mut data = json!({"snapshot": snapshot, "dataset_dst": target});
        if !properties.is_empty() {
            data["dataset_properties"] = json!(properties);
        }
        self.0
            .call(Method::change("pool.snapshot.clone"), vec![data])
            .await?;
        Ok(())
    }

    /// Rolls the dataset back to the snapshot.
    pub async fn rollback(&self, id: &str, options: Rollback) -> Result<(), Error> {
        let options = json!({
            "recursive": options.recursive,
            "recursive_clones": options.recursive_clones,
            "force": options.force,
        });
        self.0
            .call(
                Method::change("pool.snapshot.rollback"),
                vec![json!(id), options],
            )
            .await?;
        Ok(())
    }

    /// Sets and removes user properties on a snapshot.
    pub async fn update_user_properties(
        &self,
        id: &str,
        set: &[(String, String)],
        remove: &[String],
    ) -> Result<Snapshot, Error> {
        let set: Vec<Value> = set
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect();
        let method = "pool.snapshot.update";
        let value = self
            .0
            .call(
                Method::change(method),
                vec![
                    json!(id),
                    json!({"user_properties_update": set, "user_properties_remove": remove}),
                ],
            )
            .await?;
        super::decode(method, value)
    }
}
