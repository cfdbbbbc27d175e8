//! Datasets (FILESYSTEM) and zvols (VOLUME): spec §4.2–4.6 and §6.

use crate::Method;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Property, UserProperties, create, decode, delete};
use crate::query::{Filter, Query};
use crate::{Client, Error};

/// Whether a dataset holds files or is a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DatasetType {
    /// A mounted filesystem (NFS/SMB volumes).
    Filesystem,
    /// A zvol (NVMe-oF/iSCSI volumes).
    Volume,
}

/// One dataset entry (spec §6); properties absent for the type are `None`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Dataset {
    /// Full path, e.g. `tank/k8s/pvc-1`.
    pub id: String,
    /// FILESYSTEM or VOLUME.
    #[serde(rename = "type")]
    pub kind: DatasetType,
    /// Pool name.
    #[serde(default)]
    pub pool: String,
    /// `/mnt/<id>` for filesystems, null for zvols.
    #[serde(default)]
    pub mountpoint: Option<String>,
    /// Whether it is encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// Whether its key is not loaded (after a NAS reboot, a passphrase or supplied key):
    /// its data cannot be served until it is unlocked.
    #[serde(default)]
    pub locked: bool,
    /// `PASSPHRASE`, `HEX` or `RAW` for an encryption root.
    #[serde(default)]
    pub key_format: Option<Property<String>>,
    /// Nested descendants (when the query asked for them).
    #[serde(default)]
    pub children: Vec<Dataset>,
    /// ZFS user properties (inherited ones included).
    #[serde(default)]
    pub user_properties: UserProperties,
    /// Space used, snapshots and children included.
    #[serde(default)]
    pub used: Option<Property<u64>>,
    /// Space available to it (reflects refquota).
    #[serde(default)]
    pub available: Option<Property<u64>>,
    /// Limit on the dataset and its descendants.
    #[serde(default)]
    pub quota: Option<Property<u64>>,
    /// Limit on the dataset itself.
    #[serde(default)]
    pub refquota: Option<Property<u64>>,
    /// Space guaranteed to the dataset (null for sparse zvols).
    #[serde(default)]
    pub refreservation: Option<Property<u64>>,
    /// zvol size in bytes.
    #[serde(default)]
    pub volsize: Option<Property<u64>>,
    /// zvol block size in bytes.
    #[serde(default)]
    pub volblocksize: Option<Property<u64>>,
    /// Filesystem record size in bytes.
    #[serde(default)]
    pub recordsize: Option<Property<u64>>,
    /// Compression algorithm.
    #[serde(default)]
    pub compression: Option<Property<String>>,
    /// `pool/ds@snap` for clones, empty otherwise.
    #[serde(default)]
    pub origin: Option<Property<String>>,
}

fn parsed(property: &Option<Property<u64>>) -> Option<u64> {
    property.as_ref().and_then(|p| p.parsed)
}

impl Dataset {
    /// The full path of the dataset.
    pub fn name(&self) -> &str {
        &self.id
    }
    /// The value of a user property, e.g. `tns-csi:managed_by`.
    pub fn user_property(&self, key: &str) -> Option<&str> {
        self.user_properties.get(key).map(|p| p.rawvalue.as_str())
    }
    /// Bytes available to the dataset.
    pub fn available_bytes(&self) -> Option<u64> {
        parsed(&self.available)
    }
    /// Bytes used, snapshots included.
    pub fn used_bytes(&self) -> Option<u64> {
        parsed(&self.used)
    }
    /// refquota in bytes, `None` when unset.
    pub fn refquota_bytes(&self) -> Option<u64> {
        parsed(&self.refquota)
    }
    /// zvol size in bytes.
    pub fn volsize_bytes(&self) -> Option<u64> {
        parsed(&self.volsize)
    }
    /// zvol block size in bytes.
    pub fn volblocksize_bytes(&self) -> Option<u64> {
        parsed(&self.volblocksize)
    }
    /// The snapshot it was cloned from, if it is a clone.
    pub fn origin(&self) -> Option<&str> {
        self.origin
            .as_ref()
            .map(|p| p.rawvalue.as_str())
            .filter(|origin| !origin.is_empty())
    }
    /// The zvol device path TrueNAS uses for shares: `zvol/<id>`.
    pub fn zvol_device_path(&self) -> String {
        format!("zvol/{}", self.id)
    }
}

const COMPRESSION: &[&str] = &[
    "ON",
    "OFF",
    "LZ4",
    "GZIP",
    "ZSTD",
    "ZSTD-FAST",
    "ZLE",
    "LZJB",
    "INHERIT",
];

/// A compression setting TrueNAS accepts (spec §4.3), stored in its UPPERCASE form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compression(String);

impl Compression {
    /// Accepts any case: `lz4`, `zstd-3`, `gzip-9`, `zstd-fast-100`, …
    pub fn parse(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase();
        let level = |prefix: &str, ok: &dyn Fn(u32) -> bool| {
            upper
                .strip_prefix(prefix)
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(ok)
        };
        // The 25.10 model's literal set: GZIP levels 1 and 9 only; ZSTD 1-19; ZSTD-FAST
        // 1-10, 20-100 by tens, 500 and 1000.
        let valid = COMPRESSION.contains(&upper.as_str())
            || level("GZIP-", &|n| n == 1 || n == 9)
            || level("ZSTD-FAST-", &|n| {
                (1..=10).contains(&n)
                    || (n % 10 == 0 && (20..=100).contains(&n))
                    || n == 500
                    || n == 1000
            })
            || (!upper.starts_with("ZSTD-FAST") && level("ZSTD-", &|n| (1..=19).contains(&n)));
        if valid {
            Ok(Self(upper))
        } else {
            Err(format!(
                "unknown compression `{text}`; expected one of off, lz4, zstd, zstd-1…19, zstd-fast-1…10, zstd-fast-20…100 by tens, zstd-fast-500, zstd-fast-1000, gzip, gzip-1, gzip-9, zle, lzjb"
            ))
        }
    }
    /// The value sent to TrueNAS.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const VOLBLOCKSIZES: &[(&str, u64)] = &[
    ("512", 512),
    ("512B", 512),
    ("1K", 1024),
    ("2K", 2048),
    ("4K", 4096),
    ("8K", 8192),
    ("16K", 16384),
    ("32K", 32768),
    ("64K", 65536),
    ("128K", 131072),
];

/// A zvol block size TrueNAS accepts (`512` to `128K`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolBlockSize(&'static str, u64);

impl VolBlockSize {
    /// TrueNAS's default, 16 KiB.
    pub const DEFAULT: Self = Self("16K", 16384);
    /// Accepts `16K`, `16k`, `16KiB` or bytes (`16384`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase().replace("IB", "");
        VOLBLOCKSIZES
            .iter()
            .find(|(name, bytes)| *name == upper || bytes.to_string() == upper)
            .map(|(name, bytes)| Self(name, *bytes))
            .ok_or_else(|| format!("unknown volblocksize `{text}`; expected 512, 1K, 2K, 4K, 8K, 16K, 32K, 64K or 128K"))
    }
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.1
    }
    /// The form TrueNAS takes.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// What kind of dataset to make, with the fields only that kind takes.
#[derive(Debug, Clone, PartialEq)]
pub enum NewDatasetKind {
    /// A filesystem.
    Filesystem {
        /// Limit for the dataset itself, bytes (TrueNAS needs ≥ 1 GiB).
        refquota: Option<u64>,
        /// Limit including descendants, bytes (≥ 1 GiB).
        quota: Option<u64>,
        /// e.g. `128K`.
        recordsize: Option<String>,
    },
    /// A zvol.
    Volume {
        /// Size in bytes; a multiple of the block size.
        volsize: u64,
        /// Block size (TrueNAS default 16K).
        volblocksize: Option<VolBlockSize>,
        /// Thin provisioning: no reservation.
        sparse: bool,
        /// Allows more than 80% of the parent's free space.
        force_size: bool,
    },
}

/// A `pool.dataset.create` request; only what is set is sent (TrueNAS rejects unknown keys).
#[derive(Clone)]
pub struct NewDataset {
    /// Full path.
    pub name: String,
    /// Filesystem or zvol, with its fields.
    pub kind: NewDatasetKind,
    /// Compression; inherited when `None`.
    pub compression: Option<Compression>,
    /// `STANDARD`, `ALWAYS` or `DISABLED`; inherited when `None`.
    pub sync: Option<String>,
    /// Free-text comment.
    pub comments: Option<String>,
    /// `GENERIC`, `NFS`, `SMB`, `MULTIPROTOCOL` or `APPS`.
    pub share_type: Option<String>,
    /// ZFS user properties set at creation.
    pub user_properties: Vec<(String, String)>,
    /// Creates missing parents.
    pub create_ancestors: bool,
    /// Encrypts the dataset with its own key (generated by TrueNAS unless a passphrase is given).
    pub encryption: Option<Encryption>,
    /// Further create fields by API name with values as TrueNAS takes them (`atime`: `"OFF"`,
    /// `copies`: `2`); the caller validates them.
    pub properties: Vec<(String, Value)>,
}

/// The secret an encrypted dataset is created with, and unlocked by.
#[derive(Clone)]
pub enum EncryptionKey {
    /// TrueNAS generates a key and keeps it (unlocked at boot).
    Generate,
    /// A passphrase of at least 8 characters.
    Passphrase(SecretString),
    /// 64 hex digits.
    Hex(SecretString),
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Generate => "Generate",
            Self::Passphrase(_) => "Passphrase([redacted])",
            Self::Hex(_) => "Hex([redacted])",
        })
    }
}

/// Encryption of a new dataset.
#[derive(Clone)]
pub struct Encryption {
    /// e.g. `AES-256-GCM`.
    pub algorithm: Option<String>,
    /// Where the key comes from.
    pub key: EncryptionKey,
}

impl fmt::Debug for NewDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDataset")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("encrypted", &self.encryption.is_some())
            .finish_non_exhaustive()
    }
}

impl NewDataset {
    /// A filesystem with TrueNAS defaults.
    pub fn filesystem(name: impl Into<String>) -> Self {
        Self::new(
            name,
            NewDatasetKind::Filesystem {
                refquota: None,
                quota: None,
                recordsize: None,
            },
        )
    }

    /// A zvol of `volsize` bytes with TrueNAS defaults.
    pub fn volume(name: impl Into<String>, volsize: u64) -> Self {
        Self::new(
            name,
            NewDatasetKind::Volume {
                volsize,
                volblocksize: None,
                sparse: false,
                force_size: false,
            },
        )
    }

    fn new(name: impl Into<String>, kind: NewDatasetKind) -> Self {
        Self {
            name: name.into(),
            kind,
            compression: None,
            sync: None,
            comments: None,
            share_type: None,
            user_properties: Vec::new(),
            create_ancestors: false,
            encryption: None,
            properties: Vec::new(),
        }
    }

    /// Adds a user property (`module:name` key).
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.user_properties.push((key.into(), value.into()));
        self
    }

    fn to_params(&self) -> Vec<Value> {
        let mut data = Map::new();
        data.insert("name".into(), json!(self.name));
        match &self.kind {
            NewDatasetKind::Filesystem {
                refquota,
                quota,
                recordsize,
            } => {
                data.insert("type".into(), json!("FILESYSTEM"));
                if let Some(refquota) = refquota {
                    data.insert("refquota".into(), json!(refquota));
                }
                if let Some(quota) = quota {
                    data.insert("quota".into(), json!(quota));
                }
                if let Some(recordsize) = recordsize {
                    data.insert("recordsize".into(), json!(recordsize));
                }
            }
            NewDatasetKind::Volume {
                volsize,
                volblocksize,
                sparse,
                force_size,
            } => {
                data.insert("type".into(), json!("VOLUME"));
                data.insert("volsize".into(), json!(volsize));
                if let Some(block) = volblocksize {
                    data.insert("volblocksize".into(), json!(block.as_str()));
                }
                data.insert("sparse".into(), json!(sparse));
                if *force_size {
                    data.insert("force_size".into(), json!(true));
                }
            }
        }
        if let Some(compression) = &self.compression {
            data.insert("compression".into(), json!(compression.as_str()));
        }
        if let Some(sync) = &self.sync {
            data.insert("sync".into(), json!(sync));
        }
        if let Some(comments) = &self.comments {
            data.insert("comments".into(), json!(comments));
        }
        if let Some(share_type) = &self.share_type {
            data.insert("share_type".into(), json!(share_type));
        }
        if !self.user_properties.is_empty() {
            let props: Vec<Value> = self
                .user_properties
                .iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect();
            data.insert("user_properties".into(), Value::Array(props));
        }
        if self.create_ancestors {
            data.insert("create_ancestors".into(), json!(true));
        }
        for (key, value) in &self.properties {
            data.insert(key.clone(), value.clone());
        }
        if let Some(encryption) = &self.encryption {
            data.insert("encryption".into(), json!(true));
            data.insert("inherit_encryption".into(), json!(false));
            let mut options = Map::new();
            if let Some(algorithm) = &encryption.algorithm {
                options.insert("algorithm".into(), json!(algorithm));
            }
            match &encryption.key {
                EncryptionKey::Passphrase(passphrase) => {
                    options.insert("passphrase".into(), json!(passphrase.expose_secret()));
                }
                EncryptionKey::Hex(key) => {
                    options.insert("key".into(), json!(key.expose_secret()));
                }
                EncryptionKey::Generate => {
                    options.insert("generate_key".into(), json!(true));
                }
            }
            data.insert("encryption_options".into(), Value::Object(options));
        }
        vec![Value::Object(data)]
    }
}

/// A `pool.dataset.update` request; only what is set is sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetChanges {
    /// New zvol size (grow only).
    pub volsize: Option<u64>,
    /// New refquota; `Some(None)` removes it.
    pub refquota: Option<Option<u64>>,
    /// New quota; `Some(None)` removes it.
    pub quota: Option<Option<u64>>,
    /// Allows a zvol over 80% of the parent's free space.
    pub force_size: bool,
    /// New compression.
    pub compression: Option<Compression>,
    /// User properties to set.
    pub set_user_properties: Vec<(String, String)>,
    /// User properties to remove (each must exist, or TrueNAS refuses).
    pub remove_user_properties: Vec<String>,
    /// Other dataset properties by their API field name (`sync`, `atime`, `recordsize`, …).
    pub properties: Vec<(String, Value)>,
}

impl DatasetChanges {
    fn to_params(&self, id: &str) -> Vec<Value> {
        let mut data = Map::new();
        if let Some(volsize) = self.volsize {
            data.insert("volsize".into(), json!(volsize));
        }
        if let Some(refquota) = self.refquota {
            data.insert("refquota".into(), json!(refquota.unwrap_or(0)));
        }
        if let Some(quota) = self.quota {
            data.insert("quota".into(), json!(quota.unwrap_or(0)));
        }
        if self.force_size {
            data.insert("force_size".into(), json!(true));
        }
        if let Some(compression) = &self.compression {
            data.insert("compression".into(), json!(compression.as_str()));
        }
        for (field, value) in &self.properties {
            data.insert(field.clone(), value.clone());
        }
        let updates: Vec<Value> = self
            .set_user_properties
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .chain(
                self.remove_user_properties
                    .iter()
                    .map(|key| json!({"key": key, "remove": true})),
            )
            .collect();
        if !updates.is_empty() {
            data.insert("user_properties_update".into(), Value::Array(updates));
        }
        vec![json!(id), Value::Object(data)]
    }
}

/// `pool.dataset.*`.
#[derive(Debug, Clone, Copy)]
pub struct Datasets<'a>(pub(super) &'a Client);

impl Datasets<'_> {
    /// Any query; use `extra` `retrieve_children:false` and `properties` to keep it cheap.
    pub async fn query(&self, query: &Query) -> Result<Vec<Dataset>, Error> {
        super::query(self.0, "pool.dataset.query", query).await
    }

    /// How many datasets match `query` (`count` option: the reply is one number, however
    /// many match).
    pub async fn count(&self, query: &Query) -> Result<u64, Error> {
        let method = "pool.dataset.query";
        let query = query.clone().count();
        decode(
            method,
            self.0.call(Method::read(method), query.params()).await?,
        )
    }

    /// One dataset by exact name, without its children; `None` if absent.
    pub async fn get(&self, id: &str) -> Result<Option<Dataset>, Error> {
        let query = Query::all()
            .filter(Filter::eq("id", id))
            .extra("retrieve_children", false);
        Ok(self.query(&query).await?.into_iter().next())
    }

    /// One dataset by exact id with only the ZFS `properties` listed (`extra.properties`, so
    /// TrueNAS reads no others), plus its id, type, pool and user properties.
    pub async fn get_properties(
        &self,
        id: &str,
        properties: &[&str],
    ) -> Result<Option<Dataset>, Error> {
        let mut select = vec!["id", "type", "pool", "user_properties"];
        select.extend_from_slice(properties);
        let query = Query::all()
            .filter(Filter::eq("id", id))
            .select(&select)
            .extra("retrieve_children", false)
            .extra("properties", serde_json::json!(properties));
        Ok(self.query(&query).await?.into_iter().next())
    }

    /// Datasets whose user property `key` equals `value` (exact match, server-side filter).
    pub async fn with_user_property(&self, key: &str, value: &str) -> Result<Vec<Dataset>, Error> {
        let field = crate::query::field(&["user_properties", key, "value"]);
        let query = Query::all()
            .filter(Filter::eq(field, value))
            .extra("retrieve_children", false);
        self.query(&query).await
    }

    /// Creates a dataset or zvol; returns the new entry.
    pub async fn create(&self, new: &NewDataset) -> Result<Dataset, Error> {
        create(self.0, "pool.dataset.create", new.to_params()).await
    }

    /// Changes properties; returns the updated entry.
    pub async fn update(&self, id: &str, changes: &DatasetChanges) -> Result<Dataset, Error> {
        let method = "pool.dataset.update";
        decode(
            method,
            self.0
                .call(Method::change(method), changes.to_params(id))
                .await?,
        )
    }

    /// Deletes a dataset (its shares and namespaces go with it); `Ok(false)` if it was gone.
    pub async fn delete(&self, id: &str, recursive: bool, force: bool) -> Result<bool, Error> {
        delete(
            self.0,
            "pool.dataset.delete",
            vec![json!(id), json!({"recursive": recursive, "force": force})],
        )
        .await
    }

    /// Makes a clone independent of its origin snapshot (the origin becomes the clone).
    pub async fn promote(&self, id: &str) -> Result<(), Error> {
        self.0
            .call(Method::change("pool.dataset.promote"), vec![json!(id)])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_levels() {
        assert_eq!(Compression::parse("lz4").unwrap().as_str(), "LZ4");
        assert_eq!(Compression::parse("zstd-19").unwrap().as_str(), "ZSTD-19");
        assert_eq!(
            Compression::parse("zstd-fast-500").unwrap().as_str(),
            "ZSTD-FAST-500"
        );
        assert!(Compression::parse("zstd-20").is_err());
        assert!(Compression::parse("zstd-fast-15").is_err());
        assert!(Compression::parse("gzip-10").is_err());
        // The 25.10 literals have GZIP-1 and GZIP-9 only.
        assert!(Compression::parse("gzip-9").is_ok() && Compression::parse("gzip-1").is_ok());
        assert!(Compression::parse("gzip-5").is_err());
        assert!(Compression::parse("brotli").is_err());
    }

    #[test]
    fn volblocksize_forms() {
        assert_eq!(VolBlockSize::parse("16k").unwrap().bytes(), 16384);
        assert_eq!(VolBlockSize::parse("16KiB").unwrap().as_str(), "16K");
        assert_eq!(VolBlockSize::parse("4096").unwrap().as_str(), "4K");
        assert!(VolBlockSize::parse("3K").is_err());
    }

    #[test]
    fn create_sends_only_what_is_set() {
        let params = NewDataset::volume("tank/v", 1 << 30)
            .user_property("tns-csi:managed_by", "tns-csi")
            .to_params();
        assert_eq!(
            params[0],
            json!({"name":"tank/v","type":"VOLUME","volsize":1073741824,"sparse":false,
                   "user_properties":[{"key":"tns-csi:managed_by","value":"tns-csi"}]})
        );
        let changes = DatasetChanges {
            refquota: Some(None),
            remove_user_properties: vec!["a:b".into()],
            ..Default::default()
        };
        assert_eq!(
            changes.to_params("tank/x"),
            vec![
                json!("tank/x"),
                json!({"refquota":0,"user_properties_update":[{"key":"a:b","remove":true}]})
            ]
        );
    }

    #[test]
    fn entry_from_spec_example_decodes() {
        let entry = json!({"id":"tank/k8s/pvc-2","name":"tank/k8s/pvc-2","type":"VOLUME","pool":"tank","mountpoint":null,"children":[],
 "encrypted":false,"encryption_root":null,"key_loaded":false,"locked":false,
 "volsize":{"parsed":10737418240u64,"rawvalue":"10737418240","value":"10 GiB","source":"LOCAL","source_info":null},
 "volblocksize":{"parsed":16384,"rawvalue":"16384","value":"16K","source":"NONE","source_info":null},
 "refreservation":{"parsed":null,"rawvalue":"0","value":null,"source":"DEFAULT","source_info":null},
 "origin":{"parsed":"","rawvalue":"","value":"","source":"NONE","source_info":null},
 "user_properties":{"tns-csi:managed_by":{"parsed":"tns-csi","rawvalue":"tns-csi","value":"tns-csi","source":"LOCAL","source_info":null}}});
        let dataset: Dataset = decode("m", entry).unwrap();
        assert_eq!(dataset.kind, DatasetType::Volume);
        assert_eq!(dataset.volsize_bytes(), Some(10 << 30));
        assert_eq!(dataset.refreservation.as_ref().unwrap().parsed, None);
        assert_eq!(dataset.origin(), None);
        assert_eq!(dataset.user_property("tns-csi:managed_by"), Some("tns-csi"));
    }
}
