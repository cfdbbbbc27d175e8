//! ControllerModifyVolume (Kubernetes VolumeAttributesClass): the parameters TrueNAS can change
//! on a live volume, checked with the same rules as the StorageClass's and applied in place;
//! anything else is refused naming it. Applying the same set again changes nothing.

use std::collections::HashMap;

use serde_json::json;
use truenas::Client;
use truenas::api::DatasetChanges;

use crate::error::{ControllerError, tn};
use crate::params::VolumeParams;
use crate::volumes::ManagedVolume;

/// Parameters a live volume's dataset takes in place (ZFS properties that only affect what is
/// written next, or how it is served).
const MUTABLE: &[&str] = &[
    "zfs.compression",
    "zfs.sync",
    "zfs.atime",
    "zfs.exec",
    "zfs.snapdir",
    "zfs.dedup",
    "zfs.readonly",
    "zfs.recordsize",
    "zfs.copies",
    "nfs.hosts",
    "nfs.networks",
];

/// Checks `mutable` for `volume` and applies it.
pub(crate) async fn modify(
    client: &Client,
    volume: &ManagedVolume,
    mutable: &HashMap<String, String>,
) -> Result<(), ControllerError> {
    let params = check(volume.id.protocol, &volume.id.dataset, mutable)?;
    apply(client, volume, mutable, &params).await
}

/// Checks `mutable` for a `protocol` volume on `dataset` (before anything is made, when a
/// CreateVolume carries them); the values parsed as StorageClass parameters.
pub(crate) fn check(
    protocol: csi_api::Protocol,
    dataset: &str,
    mutable: &HashMap<String, String>,
) -> Result<VolumeParams, ControllerError> {
    let mut keys: Vec<&String> = mutable.keys().collect();
    keys.sort();
    for key in keys {
        if !MUTABLE.contains(&key.as_str()) {
            return Err(ControllerError::invalid_argument(format!(
                "mutable parameter `{key}` cannot be changed on an existing volume; mutable are: {}",
                MUTABLE.join(", ")
            )));
        }
    }
    if protocol != csi_api::Protocol::Nfs
        && let Some(key) = mutable.keys().find(|k| k.starts_with("nfs."))
    {
        return Err(ControllerError::invalid_argument(format!(
            "mutable parameter `{key}` applies to nfs volumes, not {protocol}"
        )));
    }
    // The StorageClass rules check the values (and name the parameter when one is wrong).
    let mut checked: HashMap<String, String> = mutable.clone();
    checked.insert("protocol".into(), protocol.to_string());
    checked.insert(
        "pool".into(),
        dataset.split('/').next().unwrap_or_default().to_owned(),
    );
    VolumeParams::parse(&checked)
}

/// Applies checked `mutable` parameters to `volume`.
async fn apply(
    client: &Client,
    volume: &ManagedVolume,
    mutable: &HashMap<String, String>,
    params: &VolumeParams,
) -> Result<(), ControllerError> {
    let mut properties: Vec<(String, serde_json::Value)> = params.dataset_properties.clone();
    if let Some(sync) = &params.sync {
        properties.push(("sync".into(), json!(sync)));
    }
    if let Some(recordsize) = &params.recordsize {
        properties.push(("recordsize".into(), json!(recordsize)));
    }
    if params.compression.is_some() || !properties.is_empty() {
        let changes = DatasetChanges {
            compression: params.compression.clone(),
            properties,
            ..Default::default()
        };
        client
            .datasets()
            .update(&volume.id.dataset, &changes)
            .await
            .map_err(tn("changing the volume's dataset properties"))?;
    }
    if mutable.contains_key("nfs.hosts") || mutable.contains_key("nfs.networks") {
        let path = format!("/mnt/{}", volume.id.dataset);
        let shares = client
            .nfs()
            .by_path(&path)
            .await
            .map_err(tn("looking up the NFS share"))?;
        let share = shares.first().ok_or_else(|| {
            ControllerError::not_found(format!("volume {} has no NFS share", volume.id))
        })?;
        let hosts = if mutable.contains_key("nfs.hosts") {
            params.nfs_hosts.clone()
        } else {
            share.hosts.clone()
        };
        let networks = if mutable.contains_key("nfs.networks") {
            params.nfs_networks.clone()
        } else {
            share.networks.clone()
        };
        client
            .nfs()
            .set_access(share.id, &networks, &hosts)
            .await
            .map_err(tn("changing the NFS share's hosts and networks"))?;
    }
    Ok(())
}
