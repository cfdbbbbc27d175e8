//! What one TrueNAS system holds that could be the driver's, read in one go, and the pure
//! judgement of which of it is orphaned: ownership comes only from markers, liveness only
//! from the cluster's records.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use truenas::Client;
use truenas::api::{
    Dataset, DatasetType, Extent, Host, HostSubsystem, Initiator, Namespace, NfsShare, SmbShare,
    Snapshot, Subsystem, Target, TargetExtent,
};
use truenas::query::{Filter, Query};

use super::{Orphan, OrphanKind};
use crate::error::{ControllerError, tn};
use crate::{names, props};

/// The default NFS/SMB share comment, which marks a share as the driver's (a StorageClass
/// `commentTemplate` replaces it; such shares are judged only through their dataset).
pub(crate) const SHARE_COMMENT_PREFIX: &str = "tns-csi volume ";

/// Everything on one system the judgement looks at.
#[derive(Default)]
pub(crate) struct Inventory {
    /// Datasets and zvols with `tns-csi:managed_by=tns-csi`.
    pub(crate) managed: Vec<Dataset>,
    /// The name of every dataset and zvol (ours or not): an export whose dataset is not here
    /// has lost it.
    pub(crate) existing: HashSet<String>,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) nfs: Vec<NfsShare>,
    pub(crate) smb: Vec<SmbShare>,
    pub(crate) subsystems: Vec<Subsystem>,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) hosts: Vec<Host>,
    pub(crate) host_links: Vec<HostSubsystem>,
    pub(crate) targets: Vec<Target>,
    pub(crate) extents: Vec<Extent>,
    pub(crate) luns: Vec<TargetExtent>,
    pub(crate) initiators: Vec<Initiator>,
}

impl Inventory {
    /// Reads everything from `client` (objects created after this read are not judged in
    /// this pass, which is why the cluster is read after it).
    pub(crate) async fn read(client: &Client) -> Result<Self, ControllerError> {
        let managed_field = truenas::query::field(&["user_properties", props::MANAGED_BY, "value"]);
        let managed = client
            .datasets()
            .query(
                &Query::all()
                    .filter(Filter::eq(managed_field, props::MANAGER))
                    .select(&["id", "type", "user_properties"])
                    .extra("retrieve_children", false)
                    .extra("properties", serde_json::json!([])),
            )
            .await
            .map_err(tn("listing the driver's datasets"))?;
        let existing = client
            .datasets()
            .query(
                &Query::all()
                    .select(&["id", "type"])
                    .extra("retrieve_children", false)
                    .extra("properties", serde_json::json!([])),
            )
            .await
            .map_err(tn("listing datasets"))?
            .into_iter()
            .map(|d| d.id)
            .collect();
        let nvmet = client.nvmet();
        let iscsi = client.iscsi();
        let all = Query::all();
        Ok(Self {
            managed,
            existing,
            snapshots: client
                .snapshots()
                .query(&all)
                .await
                .map_err(tn("listing snapshots"))?,
            nfs: client
                .nfs()
                .query(&all)
                .await
                .map_err(tn("listing NFS shares"))?,
            smb: client
                .smb()
                .query(&all)
                .await
                .map_err(tn("listing SMB shares"))?,
            subsystems: nvmet
                .subsystems(&all)
                .await
                .map_err(tn("listing NVMe-oF subsystems"))?,
            namespaces: nvmet
                .namespaces(&all)
                .await
                .map_err(tn("listing NVMe-oF namespaces"))?,
            hosts: nvmet
                .hosts(&all)
                .await
                .map_err(tn("listing NVMe-oF hosts"))?,
            host_links: nvmet
                .host_subsystems(&all)
                .await
                .map_err(tn("listing NVMe-oF host links"))?,
            targets: iscsi
                .targets(&all)
                .await
                .map_err(tn("listing iSCSI targets"))?,
            extents: iscsi
                .extents(&all)
                .await
                .map_err(tn("listing iSCSI extents"))?,
            luns: iscsi
                .target_extents(&all)
                .await
                .map_err(tn("listing iSCSI LUNs"))?,
            initiators: iscsi
                .initiators(&all)
                .await
                .map_err(tn("listing iSCSI initiator groups"))?,
        })
    }
}

/// What the cluster names on one system.
pub(crate) struct Named {
    /// Datasets a PersistentVolume of the driver names.
    pub(crate) volumes: BTreeSet<String>,
    /// ZFS snapshot ids (`dataset@name`) a VolumeSnapshotContent names; `None` when the
    /// cluster has no snapshot API, so snapshots cannot be judged.
    pub(crate) snapshots: Option<BTreeSet<String>>,
}

/// A snapshot the driver made (marked locally, not already destroyed-deferred).
fn ours(snapshot: &Snapshot) -> bool {
    snapshot
        .properties
        .get(props::CSI_SNAPSHOT_NAME)
        .and_then(|p| p.source.as_deref())
        == Some("LOCAL")
        && snapshot.property("defer_destroy") != Some("on")
}

fn has_clones(snapshot: &Snapshot) -> bool {
    snapshot.property("clones").is_some_and(|c| !c.is_empty())
}

/// The orphans among `inventory` on system `system`. Pure, so every rule is unit-tested.
pub(crate) fn judge(system: &str, inventory: &Inventory, named: &Named) -> Vec<Orphan> {
    let mut found = Vec::new();
    let mut orphan = |kind, object: String, id, reason: String| {
        found.push(Orphan {
            system: system.to_owned(),
            kind,
            object,
            id,
            reason,
            orphaned_for: std::time::Duration::ZERO,
        });
    };
    let managed: BTreeMap<&str, &Dataset> = inventory
        .managed
        .iter()
        .map(|d| (d.id.as_str(), d))
        .collect();
    let flag = |d: &Dataset, key| d.user_property(key) == Some("true");
    // Datasets whose exports must not exist any more: orphaned volumes, and volumes whose
    // DeleteVolume already ran (it removes the exports first).
    let mut dead: HashSet<&str> = HashSet::new();
    for dataset in &inventory.managed {
        let id = dataset.id.as_str();
        if flag(dataset, props::RETAINED) {
            continue; // kept on purpose (deleteStrategy: retain)
        }
        if flag(dataset, props::DELETED) {
            dead.insert(id);
            let Some(named_snapshots) = &named.snapshots else {
                continue;
            };
            let held: Vec<&Snapshot> = inventory
                .snapshots
                .iter()
                .filter(|s| s.dataset == id)
                .collect();
            let wanted = held.iter().any(|s| named_snapshots.contains(&s.id));
            let cloned = held.iter().any(|s| has_clones(s));
            if wanted || cloned || named.volumes.contains(id) {
                continue;
            }
            let foreign = held.iter().filter(|s| !ours(s)).count();
            let mut reason = format!(
                "deleted volume waiting on {} snapshot(s), none named by a VolumeSnapshotContent",
                held.len()
            );
            if foreign > 0 {
                reason.push_str(&format!(
                    "; {foreign} of them not made by tns-csi, so it is never destroyed"
                ));
            }
            orphan(OrphanKind::DeferredDestroy, id.to_owned(), None, reason);
            continue;
        }
        if named.volumes.contains(id) {
            continue;
        }
        dead.insert(id);
        let kind = match dataset.kind {
            DatasetType::Volume => OrphanKind::Zvol,
            DatasetType::Filesystem => OrphanKind::Dataset,
        };
        orphan(
            kind,
            id.to_owned(),
            None,
            "no PersistentVolume of tns.csi.io names it".to_owned(),
        );
    }
    if let Some(named_snapshots) = &named.snapshots {
        for snapshot in inventory.snapshots.iter().filter(|s| ours(s)) {
            let owner = managed.get(snapshot.dataset.as_str());
            if owner.is_some_and(|d| flag(d, props::RETAINED))
                || named_snapshots.contains(&snapshot.id)
            {
                continue;
            }
            orphan(
                OrphanKind::Snapshot,
                snapshot.id.clone(),
                None,
                "no VolumeSnapshotContent of tns.csi.io names it".to_owned(),
            );
        }
    }

    // Exports. `gone`: the dataset it serves no longer exists.
    let gone = |dataset: &str| !inventory.existing.contains(dataset);
    let judge_export = |dataset: &str, marked: bool| -> Option<String> {
        let ours = marked || managed.contains_key(dataset);
        if !ours {
            None
        } else if dead.contains(dataset) {
            Some(format!("serves {dataset}, which is orphaned or deleted"))
        } else if gone(dataset) {
            Some(format!("serves {dataset}, which no longer exists"))
        } else {
            None
        }
    };
    for share in &inventory.nfs {
        let dataset = share.path.strip_prefix("/mnt/").unwrap_or(&share.path);
        if let Some(reason) = judge_export(dataset, share.comment.starts_with(SHARE_COMMENT_PREFIX))
        {
            orphan(
                OrphanKind::NfsShare,
                share.path.clone(),
                Some(share.id),
                reason,
            );
        }
    }
    for share in &inventory.smb {
        let dataset = share.path.strip_prefix("/mnt/").unwrap_or(&share.path);
        if let Some(reason) = judge_export(dataset, share.comment.starts_with(SHARE_COMMENT_PREFIX))
        {
            orphan(
                OrphanKind::SmbShare,
                share.name.clone(),
                Some(share.id),
                reason,
            );
        }
    }

    // NVMe-oF: namespaces by their zvol, subsystems by their marker or namespaces, hosts by
    // their NQN prefix.
    let marked_subsystem = |s: &Subsystem| s.subnqn.contains(names::SUBNQN_MARK);
    let zvol_of = |path: &str| path.strip_prefix("zvol/").unwrap_or(path).to_owned();
    let mut dead_namespaces: HashSet<i64> = HashSet::new();
    let mut subsystem_namespaces: BTreeMap<i64, Vec<&Namespace>> = BTreeMap::new();
    for namespace in &inventory.namespaces {
        subsystem_namespaces
            .entry(namespace.subsys.id)
            .or_default()
            .push(namespace);
        let zvol = zvol_of(&namespace.device_path);
        if let Some(reason) = judge_export(&zvol, marked_subsystem(&namespace.subsys)) {
            dead_namespaces.insert(namespace.id);
            orphan(
                OrphanKind::NvmeofNamespace,
                format!("{}/{}", namespace.subsys.name, namespace.nsid),
                Some(namespace.id),
                reason,
            );
        }
    }
    let mut dead_subsystems: HashSet<i64> = HashSet::new();
    for subsystem in &inventory.subsystems {
        let namespaces = subsystem_namespaces
            .get(&subsystem.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ours = marked_subsystem(subsystem)
            || namespaces
                .iter()
                .any(|n| managed.contains_key(zvol_of(&n.device_path).as_str()));
        if ours && namespaces.iter().all(|n| dead_namespaces.contains(&n.id)) {
            dead_subsystems.insert(subsystem.id);
            let reason = if namespaces.is_empty() {
                "has no namespace left".to_owned()
            } else {
                "every namespace in it serves an orphaned, deleted or missing zvol".to_owned()
            };
            orphan(
                OrphanKind::NvmeofSubsystem,
                subsystem.name.clone(),
                Some(subsystem.id),
                reason,
            );
        }
    }
    for host in &inventory.hosts {
        if !host.hostnqn.starts_with(csi_api::HOST_NQN_PREFIX) {
            continue;
        }
        let live = inventory
            .host_links
            .iter()
            .filter(|l| l.host.id == host.id)
            .any(|l| !dead_subsystems.contains(&l.subsys.id));
        if !live {
            orphan(
                OrphanKind::NvmeofHost,
                host.hostnqn.clone(),
                Some(host.id),
                "allowed into no live subsystem".to_owned(),
            );
        }
    }

    // iSCSI: extents by their zvol, targets through their extents or initiator group, groups
    // by their comment.
    let marked_group = |id: Option<i64>| {
        inventory
            .initiators
            .iter()
            .any(|g| Some(g.id) == id && g.comment.starts_with(names::MARKER_PREFIX))
    };
    let mut dead_extents: HashSet<i64> = HashSet::new();
    let mut our_extents: HashSet<i64> = HashSet::new();
    for extent in &inventory.extents {
        let Some(disk) = extent.disk.as_deref().filter(|_| extent.kind == "DISK") else {
            continue;
        };
        let zvol = zvol_of(disk);
        let marked = extent.comment.starts_with(names::MARKER_PREFIX);
        if marked || managed.contains_key(zvol.as_str()) {
            our_extents.insert(extent.id);
        }
        if let Some(reason) = judge_export(&zvol, marked) {
            dead_extents.insert(extent.id);
            orphan(
                OrphanKind::IscsiExtent,
                extent.name.clone(),
                Some(extent.id),
                reason,
            );
        }
    }
    let mut live_targets_groups: HashSet<i64> = HashSet::new();
    for target in &inventory.targets {
        let extents: Vec<i64> = inventory
            .luns
            .iter()
            .filter(|l| l.target == target.id)
            .map(|l| l.extent)
            .collect();
        let ours = target.groups.iter().any(|g| marked_group(g.initiator))
            || extents.iter().any(|e| our_extents.contains(e));
        if ours && extents.iter().all(|e| dead_extents.contains(e)) {
            let reason = if extents.is_empty() {
                "has no LUN left".to_owned()
            } else {
                "every LUN in it is an orphaned extent".to_owned()
            };
            orphan(
                OrphanKind::IscsiTarget,
                target.name.clone(),
                Some(target.id),
                reason,
            );
        } else {
            live_targets_groups.extend(target.groups.iter().filter_map(|g| g.initiator));
        }
    }
    for group in &inventory.initiators {
        if group.comment.starts_with(names::MARKER_PREFIX)
            && !live_targets_groups.contains(&group.id)
        {
            orphan(
                OrphanKind::IscsiInitiatorGroup,
                group.comment.clone(),
                Some(group.id),
                "no live target uses it".to_owned(),
            );
        }
    }
    found
}
