//! The simulated NAS state: pools, the dataset tree, snapshots and the share/target tables.
//! Serializable so `--state DIR` survives restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{self, DataDir};

/// A pool and its logical size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PoolRec {
    /// Database id.
    pub(crate) id: i64,
    /// Name (also the root dataset).
    pub(crate) name: String,
    /// Bytes.
    pub(crate) size: u64,
    /// GUID string.
    pub(crate) guid: String,
}

/// A dataset or zvol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DatasetRec {
    /// Full name.
    pub(crate) name: String,
    /// Zvol rather than filesystem.
    pub(crate) volume: bool,
    /// Locally set native properties, raw ZFS values (`compression` → `lz4`).
    pub(crate) props: BTreeMap<String, String>,
    /// Locally set user properties (TrueNAS-internal ones under their ZFS names).
    pub(crate) user: BTreeMap<String, String>,
    /// `ds@snap` for clones, empty otherwise.
    pub(crate) origin: String,
    /// Epoch seconds.
    pub(crate) creation: i64,
    /// Transaction group at creation.
    pub(crate) createtxg: u64,
    /// Encrypted (root of its own key).
    pub(crate) encrypted: bool,
    /// How it is keyed, when it is an encryption root.
    #[serde(default)]
    pub(crate) encryption: Option<crate::encryption::EncryptionRec>,
    /// Its key is not loaded: data out of sight until `pool.dataset.unlock`.
    #[serde(default)]
    pub(crate) locked: bool,
}

/// A snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapRec {
    /// `dataset@name`.
    pub(crate) id: String,
    /// Its dataset.
    pub(crate) dataset: String,
    /// After the `@`.
    pub(crate) name: String,
    /// Epoch seconds.
    pub(crate) creation: i64,
    /// Transaction group.
    pub(crate) createtxg: u64,
    /// Locally set user properties.
    pub(crate) user: BTreeMap<String, String>,
    /// Destroy deferred until its last clone goes.
    pub(crate) defer_destroy: bool,
    /// Bytes the dataset referred to when it was taken.
    pub(crate) referenced: u64,
}

/// Integer-keyed rows of a CRUD service; ids are never reused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Table {
    /// Next id to hand out.
    pub(crate) next_id: i64,
    /// Rows by id, stored as the service's entry (nested objects by id).
    pub(crate) rows: BTreeMap<i64, Value>,
}

impl Table {
    /// Inserts `row` with a fresh id; returns it.
    pub(crate) fn insert(&mut self, mut row: Value) -> i64 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        row["id"] = Value::from(id);
        self.rows.insert(id, row);
        id
    }
}

/// The whole state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Model {
    /// Pools by name.
    pub(crate) pools: BTreeMap<String, PoolRec>,
    /// Datasets by full name.
    pub(crate) datasets: BTreeMap<String, DatasetRec>,
    /// Snapshots by id.
    pub(crate) snapshots: BTreeMap<String, SnapRec>,
    /// CRUD tables by service name (`sharing.nfs`, `nvmet.subsys`, …).
    pub(crate) tables: BTreeMap<String, Table>,
    /// NVMe-oF base NQN.
    pub(crate) basenqn: String,
    /// Transaction group counter.
    pub(crate) txg: u64,
    /// Key ids revoked for insecure transport.
    pub(crate) revoked_keys: BTreeSet<u64>,
}

/// Native properties children inherit, with their defaults (raw ZFS values).
pub(crate) const INHERITABLE: &[(&str, &str)] = &[
    ("compression", "lz4"),
    ("sync", "standard"),
    ("readonly", "off"),
    ("atime", "off"),
    ("exec", "on"),
    ("checksum", "on"),
    ("dedup", "off"),
    ("snapdir", "hidden"),
    ("snapdev", "hidden"),
    ("copies", "1"),
    ("recordsize", "131072"),
    ("aclmode", "discard"),
    ("acltype", "posix"),
    ("special_small_blocks", "0"),
];

/// Internal user props and the names TrueNAS 25.10 shows them under (spec §5).
pub(crate) const RENAMED_USER_PROPS: &[(&str, &str)] = &[
    ("org.freenas:description", "comments"),
    ("org.freenas:quota_warning", "quota_warning"),
    ("org.freenas:quota_critical", "quota_critical"),
    ("org.freenas:refquota_warning", "refquota_warning"),
    ("org.freenas:refquota_critical", "refquota_critical"),
    ("org.truenas:managedby", "managedby"),
];

impl Model {
    /// A table, created empty on first use.
    pub(crate) fn table(&mut self, name: &str) -> &mut Table {
        self.tables.entry(name.to_owned()).or_default()
    }

    /// Rows of a table (empty if it was never used), borrowed: a lookup clones only what it
    /// answers with, so a call costs no more with 10,000 rows than its reply needs.
    pub(crate) fn rows(&self, name: &str) -> Vec<&Value> {
        self.tables
            .get(name)
            .map(|t| t.rows.values().collect())
            .unwrap_or_default()
    }

    /// One row by id.
    pub(crate) fn row(&self, table: &str, id: i64) -> Option<&Value> {
        self.tables.get(table).and_then(|t| t.rows.get(&id))
    }

    /// Next transaction group.
    pub(crate) fn next_txg(&mut self) -> u64 {
        self.txg += 1;
        self.txg
    }

    /// The parent dataset's name (`None` for a pool root).
    pub(crate) fn parent(name: &str) -> Option<&str> {
        name.rsplit_once('/').map(|(parent, _)| parent)
    }

    /// Effective native property: (raw value, source, source dataset).
    pub(crate) fn effective(
        &self,
        name: &str,
        prop: &str,
    ) -> Option<(String, &'static str, Option<String>)> {
        let rec = self.datasets.get(name)?;
        if let Some(value) = rec.props.get(prop) {
            return Some((value.clone(), "LOCAL", None));
        }
        let default = INHERITABLE.iter().find(|(p, _)| *p == prop)?.1;
        let mut current = Self::parent(name);
        while let Some(ancestor) = current {
            if let Some(value) = self.datasets.get(ancestor).and_then(|r| r.props.get(prop)) {
                return Some((value.clone(), "INHERITED", Some(ancestor.to_owned())));
            }
            current = Self::parent(ancestor);
        }
        Some((default.to_owned(), "DEFAULT", None))
    }

    /// Effective user properties: own and inherited, key → (value, local?).
    pub(crate) fn user_props(&self, name: &str) -> BTreeMap<String, (String, bool)> {
        let mut chain = vec![name];
        let mut current = Self::parent(name);
        while let Some(ancestor) = current {
            chain.push(ancestor);
            current = Self::parent(ancestor);
        }
        let mut out = BTreeMap::new();
        for (depth, ds) in chain.iter().enumerate().rev() {
            if let Some(rec) = self.datasets.get(*ds) {
                for (key, value) in &rec.user {
                    out.insert(key.clone(), (value.clone(), depth == 0));
                }
            }
        }
        out
    }

    /// Direct child datasets.
    pub(crate) fn children(&self, name: &str) -> Vec<String> {
        self.under(name)
            .filter(|k| !k[name.len() + 1..].contains('/'))
            .cloned()
            .collect()
    }

    /// The names of every dataset below `name`, in name order (a range of the index, not a
    /// scan of every dataset).
    fn under<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = format!("{name}/");
        self.datasets
            .range::<String, _>(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(&prefix))
    }

    /// Every descendant dataset, deepest first.
    pub(crate) fn descendants(&self, name: &str) -> Vec<String> {
        let mut all: Vec<String> = self.under(name).cloned().collect();
        all.sort_by_key(|k| std::cmp::Reverse(k.matches('/').count()));
        all
    }

    /// Snapshots of one dataset, oldest first.
    pub(crate) fn snapshots_of(&self, dataset: &str) -> Vec<&SnapRec> {
        let mut snaps: Vec<&SnapRec> = self
            .snapshots
            .values()
            .filter(|s| s.dataset == dataset)
            .collect();
        snaps.sort_by_key(|s| s.createtxg);
        snaps
    }

    /// Datasets cloned from a snapshot.
    pub(crate) fn clones_of(&self, snapshot: &str) -> Vec<String> {
        self.datasets
            .values()
            .filter(|d| d.origin == snapshot)
            .map(|d| d.name.clone())
            .collect()
    }

    /// Bytes a dataset itself holds on disk.
    pub(crate) fn used_by_dataset(&self, data: &DataDir, name: &str) -> u64 {
        let Some(rec) = self.datasets.get(name) else {
            return 0;
        };
        data.measured(name, || {
            if rec.volume {
                data::allocated(&data.zvol_file(name), &|_| false)
            } else {
                let root = data.dataset_dir(name);
                data::allocated(&root, &|path| {
                    path.strip_prefix(&root)
                        .ok()
                        .and_then(|rel| rel.to_str())
                        .is_some_and(|rel| self.datasets.contains_key(&format!("{name}/{rel}")))
                })
            }
        })
    }

    /// refreservation in bytes (a non-sparse zvol reserves its size).
    pub(crate) fn refreservation(&self, name: &str) -> u64 {
        self.datasets
            .get(name)
            .and_then(|r| r.props.get("refreservation"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// What a dataset is charged against its parents: its own bytes and the unused part of
    /// its reservation.
    fn charge(&self, data: &DataDir, name: &str) -> u64 {
        let own = self.used_by_dataset(data, name);
        own + self.refreservation(name).saturating_sub(own)
    }

    /// Space accounting for one dataset: (usedbydataset, usedbyrefreservation, usedbychildren),
    /// from the ledger (rebuilt every `LEDGER_REBUILD`, moved by deltas in between).
    pub(crate) fn usage(&self, data: &DataDir, name: &str) -> (u64, u64, u64) {
        if data.ledger().due() {
            let charges: Vec<(String, u64)> = self
                .datasets
                .keys()
                .map(|d| (d.clone(), self.charge(data, d)))
                .collect();
            data.ledger().rebuild(charges.into_iter());
        }
        let own = self.used_by_dataset(data, name);
        let refres = self.refreservation(name).saturating_sub(own);
        let mut ledger = data.ledger();
        if self.datasets.contains_key(name) {
            ledger.set(name, Some(own + refres));
        }
        (own, refres, ledger.below(name))
    }

    /// A call changed `name` (made, changed or destroyed it, or its descendants): measure it
    /// again and move the ledger by the difference.
    pub(crate) fn refresh(&self, data: &DataDir, name: &str) {
        let mut touched = data.ledger().at_and_below(name);
        if self.datasets.contains_key(name) && !touched.iter().any(|n| n == name) {
            touched.push(name.to_owned());
        }
        for dataset in touched {
            data.forget(&dataset);
            let charge = self
                .datasets
                .contains_key(&dataset)
                .then(|| self.charge(data, &dataset));
            data.ledger().set(&dataset, charge);
        }
    }

    /// Bytes left in the pool after data and reservations.
    pub(crate) fn pool_free(&self, data: &DataDir, pool: &str) -> u64 {
        let Some(rec) = self.pools.get(pool) else {
            return 0;
        };
        let (a, b, c) = self.usage(data, pool);
        rec.size.saturating_sub(a + b + c)
    }

    /// `available` of a dataset: pool free space plus its own unused reservation, capped by
    /// its refquota and every quota on the way up.
    pub(crate) fn available(&self, data: &DataDir, name: &str) -> u64 {
        let pool = name.split('/').next().unwrap_or(name);
        let (own, refres, _) = self.usage(data, name);
        let mut available = self.pool_free(data, pool) + refres;
        let prop = |ds: &str, p: &str| -> u64 {
            self.datasets
                .get(ds)
                .and_then(|r| r.props.get(p))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let refquota = prop(name, "refquota");
        if refquota > 0 {
            available = available.min(refquota.saturating_sub(own));
        }
        let mut current = Some(name);
        while let Some(ds) = current {
            let quota = prop(ds, "quota");
            if quota > 0 {
                let (a, b, c) = self.usage(data, ds);
                available = available.min(quota.saturating_sub(a + b + c));
            }
            current = Self::parent(ds);
        }
        available
    }

    /// Loads the state file, if there is one.
    pub(crate) fn load(path: &Path) -> io::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {err}", path.display()),
                )
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Writes the state file atomically (temp file + rename).
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, path)
    }
}
