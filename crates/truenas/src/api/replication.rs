//! Jobs that move or open data: a LOCAL `replication.run_onetime` (zfs send | zfs recv inside
//! the NAS), which gives a copy with no origin, and `pool.dataset.unlock`, which loads the key
//! of a dataset that came back locked after a reboot. Both are awaited to their end.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::EncryptionKey;
use crate::{Client, Error, Method};

/// The jobs.
#[derive(Debug, Clone, Copy)]
pub struct Replication<'a>(pub(crate) &'a Client);

/// What `pool.dataset.unlock` did.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Unlocked {
    /// Datasets now unlocked.
    #[serde(default)]
    pub unlocked: Vec<String>,
    /// Datasets that stayed locked, with TrueNAS's reason (`Invalid Key`).
    #[serde(default)]
    pub failed: BTreeMap<String, FailedUnlock>,
}

/// Why one dataset stayed locked.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FailedUnlock {
    /// The reason.
    #[serde(default)]
    pub error: Option<String>,
}

/// Python's `re.escape` for the characters a snapshot name may hold.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Replication<'_> {
    /// Copies snapshot `snapshot` of `source` into a new dataset `target` (zfs send | recv,
    /// LOCAL): the target holds the data and that snapshot and depends on nothing. Properties
    /// are not sent; `overrides` are set on the target as it is received (zfs recv -o), so it
    /// is born carrying them. A retry after the copy landed succeeds without copying again.
    pub async fn copy_snapshot(
        &self,
        source: &str,
        snapshot: &str,
        target: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let data = json!({
            "direction": "PUSH",
            "transport": "LOCAL",
            "source_datasets": [source],
            "target_dataset": target,
            "recursive": false,
            "properties": false,
            "properties_override": overrides,
            "replicate": false,
            "name_regex": escape(snapshot),
            "retention_policy": "NONE",
            "readonly": "IGNORE",
            "allow_from_scratch": true,
        });
        tracing::info!(%source, %snapshot, %target, "copying a snapshot with a local replication job");
        self.0
            .call_job(Method::change("replication.run_onetime"), vec![data])
            .await?;
        Ok(())
    }

    /// Loads the key of the locked encryption root `dataset`.
    pub async fn unlock(&self, dataset: &str, key: &EncryptionKey) -> Result<Unlocked, Error> {
        let mut entry = json!({"name": dataset});
        match key {
            EncryptionKey::Passphrase(p) => entry["passphrase"] = json!(p.expose_secret()),
            EncryptionKey::Hex(k) => entry["key"] = json!(k.expose_secret()),
            EncryptionKey::Generate => {}
        }
        let options = json!({"key_file": false, "recursive": false, "force": false,
            "toggle_attachments": true, "datasets": [entry]});
        let method = "pool.dataset.unlock";
        let result: Value = self
            .0
            .call_job(Method::change(method), vec![json!(dataset), options])
            .await?;
        super::decode(method, result)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_names_are_escaped_as_python_would() {
        assert_eq!(super::escape("csi-snap.1"), "csi\\-snap\\.1");
        assert_eq!(super::escape("a_b9"), "a_b9");
    }
}
