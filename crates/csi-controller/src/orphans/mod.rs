//! The orphan reconciler: finds what the driver made on each TrueNAS system that the cluster
//! no longer names (datasets, zvols, snapshots, deferred destroys, shares, NVMe-oF
//! subsystems, namespaces and hosts, iSCSI targets, extents and initiator groups), reports
//! it, and — only when told to, and only after a grace period — deletes it.
//!
//! Rules: an object is judged only if it carries the driver's marker (a ZFS user property, a
//! share or extent comment, the subsystem NQN, the host NQN prefix) or serves a dataset that
//! does; anything a PersistentVolume or VolumeSnapshotContent names is live. TrueNAS is read
//! before the cluster, so a volume created during a pass is either not seen or seen with its
//! PV. Deletions go through the same code and per-volume locks as DeleteVolume and
//! DeleteSnapshot.

mod inventory;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csi_api::{NameLocks, SnapshotId, VolumeId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use truenas::Client;

use crate::error::{ControllerError, tn};
use crate::systems::{System, Systems};
use crate::{snapshots, volumes};
use inventory::{Inventory, Named};

/// What the cluster says is live: where the reconciler learns which objects are still used.
#[tonic::async_trait]
pub trait ClusterRecords: Send + Sync {
    /// The `volumeHandle` of every PersistentVolume of driver `tns.csi.io`.
    async fn volume_handles(&self) -> Result<Vec<String>, String>;
    /// The snapshot handle of every VolumeSnapshotContent of driver `tns.csi.io`; `None` when
    /// the cluster serves no snapshot API (then snapshots are not judged at all).
    async fn snapshot_handles(&self) -> Result<Option<Vec<String>>, String>;
}

/// The kinds of object the reconciler judges (the `kind` label of its metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrphanKind {
    /// A filesystem dataset of an NFS or SMB volume.
    Dataset,
    /// A zvol of an NVMe-oF or iSCSI volume.
    Zvol,
    /// A CSI snapshot (on its volume, or a detached one on its own dataset).
    Snapshot,
    /// A volume DeleteVolume hid while snapshots existed, none of which is wanted now.
    DeferredDestroy,
    /// An NFS share.
    NfsShare,
    /// An SMB share.
    SmbShare,
    /// An NVMe-oF subsystem.
    NvmeofSubsystem,
    /// An NVMe-oF namespace.
    NvmeofNamespace,
    /// An NVMe-oF host (a node's host NQN).
    NvmeofHost,
    /// An iSCSI target.
    IscsiTarget,
    /// An iSCSI extent.
    IscsiExtent,
    /// An iSCSI initiator group.
    IscsiInitiatorGroup,
}

impl OrphanKind {
    /// Every kind, in the order deletions run (what depends on something goes first).
    pub const ALL: [Self; 12] = [
        Self::IscsiTarget,
        Self::IscsiExtent,
        Self::IscsiInitiatorGroup,
        Self::NvmeofSubsystem,
        Self::NvmeofNamespace,
        Self::NvmeofHost,
        Self::NfsShare,
        Self::SmbShare,
        Self::Snapshot,
        Self::Dataset,
        Self::Zvol,
        Self::DeferredDestroy,
    ];

    /// The name in logs, metrics and `tns-csi orphans`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Zvol => "zvol",
            Self::Snapshot => "snapshot",
            Self::DeferredDestroy => "deferred_destroy",
            Self::NfsShare => "nfs_share",
            Self::SmbShare => "smb_share",
            Self::NvmeofSubsystem => "nvmeof_subsystem",
            Self::NvmeofNamespace => "nvmeof_namespace",
            Self::NvmeofHost => "nvmeof_host",
            Self::IscsiTarget => "iscsi_target",
            Self::IscsiExtent => "iscsi_extent",
            Self::IscsiInitiatorGroup => "iscsi_initiator_group",
        }
    }
}

/// One orphaned object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The TrueNAS system it is on.
    pub system: String,
    /// What it is.
    pub kind: OrphanKind,
    /// How a person finds it: dataset or snapshot name, share path or name, subsystem name,
    /// host NQN, target or extent name, initiator group comment.
    pub object: String,
    /// Its TrueNAS id, for objects that have one.
    pub id: Option<i64>,
    /// Why it is an orphan.
    pub reason: String,
    /// How long this reconciler has seen it orphaned (zero on the first sighting).
    pub orphaned_for: Duration,
}

impl Orphan {
    fn key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{:?}",
            self.system,
            self.kind.as_str(),
            self.object,
            self.id
        )
    }
}

/// What one pass found and did.
#[derive(Debug, Default)]
pub struct OrphanReport {
    /// Every orphan found, by system, kind and object.
    pub orphans: Vec<Orphan>,
    /// The orphans deleted in this pass.
    pub deleted: Vec<Orphan>,
    /// Systems that could not be read (`system`, `error`): their objects were not judged.
    pub errors: Vec<(String, String)>,
}

/// How the reconciler acts.
#[derive(Debug, Clone)]
pub struct OrphanSettings {
    /// Delete orphans (otherwise only report them: a dry run).
    pub delete: bool,
    /// How long an object must have been seen orphaned before it is deleted.
    pub grace: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    system: String,
    kind: &'static str,
}

/// The reconciler's metrics: orphans now and deletions so far, by system and kind.
#[derive(Clone, Debug, Default)]
pub struct OrphanMetrics {
    orphans: Family<KindLabels, Gauge>,
    deleted: Family<KindLabels, Counter>,
    failed_passes: Counter,
}

impl OrphanMetrics {
    /// Registers in `registry` (the binary adds the `tns_csi_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "orphans",
            "Objects of the driver on TrueNAS that the cluster no longer names, by system and kind (last reconciler pass)",
            metrics.orphans.clone(),
        );
        registry.register(
            "orphans_deleted",
            "Orphans the reconciler deleted, by system and kind",
            metrics.deleted.clone(),
        );
        registry.register(
            "orphan_passes_failed",
            "Reconciler passes that could not read the cluster (nothing was judged)",
            metrics.failed_passes.clone(),
        );
        metrics
    }
}

/// Finds (and when told to, deletes) orphans on every system.
pub struct Reconciler {
    systems: Arc<Systems>,
    cluster: Arc<dyn ClusterRecords>,
    settings: OrphanSettings,
    locks: NameLocks,
    metrics: OrphanMetrics,
    /// When each orphan was first seen (by this process: a restart starts the grace again).
    seen: Mutex<HashMap<String, Instant>>,
}

impl Reconciler {
    /// A reconciler over `systems` that shares the controller's per-volume `locks`.
    pub fn new(
        systems: Arc<Systems>,
        cluster: Arc<dyn ClusterRecords>,
        settings: OrphanSettings,
        locks: NameLocks,
        metrics: OrphanMetrics,
    ) -> Self {
        Self {
            systems,
            cluster,
            settings,
            locks,
            metrics,
            seen: Mutex::default(),
        }
    }

    /// Runs a pass every `interval` until the task is dropped; a failed pass is logged and
    /// counted, and the next one tries again.
    pub async fn run(self, interval: Duration) {
        tracing::info!(
            interval = ?interval,
            grace = ?self.settings.grace,
            delete = self.settings.delete,
            "orphan reconciler started{}",
            if self.settings.delete { "" } else { " (dry run: reports only)" }
        );
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(err) = self.pass().await {
                self.metrics.failed_passes.inc();
                tracing::warn!(error = %err, "orphan pass skipped");
            }
        }
    }

    /// One pass: read every system, then the cluster, judge, log, count, and delete what is
    /// due. Fails (judging nothing) when the cluster cannot be read.
    pub async fn pass(&self) -> Result<OrphanReport, String> {
        let mut report = OrphanReport::default();
        let mut inventories = Vec::new();
        for system in self.systems.all() {
            match Inventory::read(&system.client).await {
                Ok(inventory) => inventories.push((system, inventory)),
                Err(err) => {
                    tracing::warn!(system = %system.name, error = %err, "cannot read TrueNAS system for the orphan pass");
                    report.errors.push((system.name.clone(), err.to_string()));
                }
            }
        }
        let named = self.named().await?;
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut still = HashMap::new();
        for (system, inventory) in &inventories {
            let empty = Named {
                volumes: BTreeSet::new(),
                snapshots: named.snapshot_api.then(BTreeSet::new),
            };
            let on_system = named.by_system.get(&system.name).unwrap_or(&empty);
            let mut found = inventory::judge(&system.name, inventory, on_system);
            for orphan in &mut found {
                let key = orphan.key();
                let first = *seen.entry(key.clone()).or_insert(now);
                orphan.orphaned_for = now - first;
                if orphan.orphaned_for.is_zero() {
                    tracing::warn!(system = %orphan.system, kind = orphan.kind.as_str(), object = %orphan.object, id = ?orphan.id, reason = %orphan.reason, "orphan found");
                }
                still.insert(key, first);
            }
            let mut counts: BTreeMap<OrphanKind, i64> =
                OrphanKind::ALL.iter().map(|k| (*k, 0)).collect();
            for orphan in &found {
                *counts.entry(orphan.kind).or_default() += 1;
            }
            for (kind, count) in counts {
                self.metrics
                    .orphans
                    .get_or_create(&KindLabels {
                        system: system.name.clone(),
                        kind: kind.as_str(),
                    })
                    .set(count);
            }
            if self.settings.delete {
                let due: Vec<&Orphan> = found
                    .iter()
                    .filter(|o| o.orphaned_for >= self.settings.grace)
                    .collect();
                for orphan in self.delete(system, inventory, &due).await {
                    self.metrics
                        .deleted
                        .get_or_create(&KindLabels {
                            system: system.name.clone(),
                            kind: orphan.kind.as_str(),
                        })
                        .inc();
                    report.deleted.push(orphan);
                }
            }
            report.orphans.extend(found);
        }
        // Forget what is no longer orphaned (a PV came back, or it was deleted), but keep
        // the clock of systems this pass could not read.
        seen.retain(|key, _| {
            still.contains_key(key)
                || report
                    .errors
                    .iter()
                    .any(|(system, _)| key.starts_with(&format!("{system}\u{0}")))
        });
        seen.extend(still);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        tracing::info!(
            orphans = report.orphans.len(),
            deleted = report.deleted.len(),
            unreadable_systems = report.errors.len(),
            "orphan pass done"
        );
        Ok(report)
    }

    /// What the cluster names, by system name.
    async fn named(&self) -> Result<ClusterNames, String> {
        let volumes = self
            .cluster
            .volume_handles()
            .await
            .map_err(|err| format!("reading PersistentVolumes: {err}"))?;
        let snapshots = self
            .cluster
            .snapshot_handles()
            .await
            .map_err(|err| format!("reading VolumeSnapshotContents: {err}"))?;
        if snapshots.is_none() {
            tracing::warn!(
                "the cluster serves no VolumeSnapshotContent API: snapshots and deferred destroys are not judged"
            );
        }
        let default = self.systems.default_name().to_owned();
        let mut by_system: BTreeMap<String, Named> = BTreeMap::new();
        let fresh = || Named {
            volumes: BTreeSet::new(),
            snapshots: snapshots.as_ref().map(|_| BTreeSet::new()),
        };
        // Handles that are not ours (or malformed) name nothing of ours.
        for id in volumes.iter().filter_map(|h| h.parse::<VolumeId>().ok()) {
            let system = id.system.unwrap_or_else(|| default.clone());
            by_system
                .entry(system)
                .or_insert_with(fresh)
                .volumes
                .insert(id.dataset);
        }
        for id in snapshots
            .iter()
            .flatten()
            .filter_map(|h| h.parse::<SnapshotId>().ok())
        {
            let zfs_id = id.zfs_id();
            let system = id.volume.system.unwrap_or_else(|| default.clone());
            if let Some(set) = by_system
                .entry(system)
                .or_insert_with(fresh)
                .snapshots
                .as_mut()
            {
                set.insert(zfs_id);
            }
        }
        Ok(ClusterNames {
            by_system,
            snapshot_api: snapshots.is_some(),
        })
    }

    /// Deletes `due` on `system` in dependency order; returns what is gone. A failure is
    /// logged and the object kept for the next pass.
    async fn delete(&self, system: &System, inventory: &Inventory, due: &[&Orphan]) -> Vec<Orphan> {
        let mut gone = Vec::new();
        for kind in OrphanKind::ALL {
            for orphan in due.iter().filter(|o| o.kind == kind) {
                match self.delete_one(&system.client, inventory, orphan).await {
                    Ok(()) => {
                        tracing::warn!(system = %orphan.system, kind = orphan.kind.as_str(), object = %orphan.object, id = ?orphan.id, orphaned_for = ?orphan.orphaned_for, "orphan deleted");
                        gone.push((*orphan).clone());
                    }
                    Err(err) => {
                        tracing::warn!(system = %orphan.system, kind = orphan.kind.as_str(), object = %orphan.object, error = %err, "cannot delete orphan; will retry next pass");
                    }
                }
            }
        }
        gone
    }

    async fn delete_one(
        &self,
        client: &Client,
        inventory: &Inventory,
        orphan: &Orphan,
    ) -> Result<(), ControllerError> {
        let id = orphan.id.unwrap_or_default();
        match orphan.kind {
            OrphanKind::IscsiTarget => {
                client
                    .iscsi()
                    .delete_target(id, true, false)
                    .await
                    .map_err(tn("deleting the iSCSI target"))?;
            }
            OrphanKind::IscsiExtent => {
                client
                    .iscsi()
                    .delete_extent(id, true)
                    .await
                    .map_err(tn("deleting the iSCSI extent"))?;
            }
            OrphanKind::IscsiInitiatorGroup => {
                client
                    .iscsi()
                    .delete_initiator(id)
                    .await
                    .map_err(tn("deleting the iSCSI initiator group"))?;
            }
            OrphanKind::NvmeofSubsystem => {
                client
                    .nvmet()
                    .delete_subsystem(id, true)
                    .await
                    .map_err(tn("deleting the NVMe-oF subsystem"))?;
            }
            OrphanKind::NvmeofNamespace => {
                client
                    .nvmet()
                    .delete_namespace(id)
                    .await
                    .map_err(tn("deleting the NVMe-oF namespace"))?;
            }
            OrphanKind::NvmeofHost => {
                client
                    .nvmet()
                    .delete_host(id, false)
                    .await
                    .map_err(tn("deleting the NVMe-oF host"))?;
            }
            OrphanKind::NfsShare => {
                client
                    .nfs()
                    .delete(id)
                    .await
                    .map_err(tn("deleting the NFS share"))?;
            }
            OrphanKind::SmbShare => {
                client
                    .smb()
                    .delete(id)
                    .await
                    .map_err(tn("deleting the SMB share"))?;
            }
            OrphanKind::Snapshot => {
                let snapshot = inventory
                    .snapshots
                    .iter()
                    .find(|s| s.id == orphan.object)
                    .cloned()
                    .and_then(snapshots::ManagedSnapshot::from_snapshot)
                    .ok_or_else(|| {
                        ControllerError::internal(format!(
                            "snapshot {} lost its markers",
                            orphan.object
                        ))
                    })?;
                let _held = self
                    .locks
                    .try_lock(&format!("snapshot:{}", snapshot.id.name))?;
                let _volume = self.locks.try_lock(&snapshot.id.volume.dataset)?;
                snapshots::delete(client, &snapshot.id).await?;
            }
            OrphanKind::Dataset | OrphanKind::Zvol => {
                let _held = self.locks.try_lock(&orphan.object)?;
                // Read again under the lock: it must still be ours and live.
                match volumes::load(client, &orphan.object).await? {
                    Some(Some(volume)) if !volume.deleted => {
                        volumes::delete(client, volume).await?
                    }
                    _ => {}
                }
            }
            OrphanKind::DeferredDestroy => {
                let _held = self.locks.try_lock(&orphan.object)?;
                volumes::reap(client, &orphan.object).await?;
            }
        }
        Ok(())
    }
}

/// What the cluster names, split by system.
struct ClusterNames {
    by_system: BTreeMap<String, Named>,
    /// Whether the cluster serves VolumeSnapshotContents (else snapshots are not judged).
    snapshot_api: bool,
}

#[cfg(test)]
mod tests;
