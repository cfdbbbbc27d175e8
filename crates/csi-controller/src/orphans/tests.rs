//! The judgement rules, one planted object per rule.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::inventory::{Inventory, Named, judge};
use super::{Orphan, OrphanKind};

fn user(props: &[(&str, &str)]) -> Value {
    props
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!({"value": v, "rawvalue": v, "parsed": v, "source": "LOCAL"}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn dataset(id: &str, kind: &str, extra: &[(&str, &str)]) -> truenas::api::Dataset {
    let mut props = vec![
        ("tns-csi:managed_by", "tns-csi"),
        ("tns-csi:protocol", "nfs"),
    ];
    props.extend_from_slice(extra);
    serde_json::from_value(json!({"id": id, "type": kind, "user_properties": user(&props)}))
        .unwrap()
}

fn snapshot(id: &str, ours: bool, clones: &str) -> truenas::api::Snapshot {
    let (dataset, name) = id.split_once('@').unwrap();
    let mut properties = json!({"clones": {"value": clones, "rawvalue": clones, "parsed": clones, "source": "NONE"}});
    if ours {
        properties["tns-csi:csi_snapshot_name"] =
            json!({"value": name, "rawvalue": name, "parsed": name, "source": "LOCAL"});
    }
    serde_json::from_value(
        json!({"id": id, "snapshot_name": name, "dataset": dataset, "properties": properties}),
    )
    .unwrap()
}

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn subsys(id: i64, name: &str, marked: bool) -> Value {
    let nqn = if marked {
        format!("nqn.2011-06.com.truenas:uuid:x:tns-csi:{name}")
    } else {
        format!("nqn.2011-06.com.truenas:uuid:x:{name}")
    };
    json!({"id": id, "name": name, "subnqn": nqn})
}

/// A system holding one live volume of each protocol, one orphan of each kind, and foreign
/// objects beside them.
fn planted() -> Inventory {
    let managed = vec![
        dataset("tank/csi/live", "FILESYSTEM", &[]),
        dataset("tank/csi/live-block", "VOLUME", &[]),
        dataset("tank/csi/lost", "FILESYSTEM", &[]),
        dataset("tank/csi/lost-block", "VOLUME", &[]),
        dataset(
            "tank/csi/kept",
            "FILESYSTEM",
            &[("tns-csi:deleted", "true"), ("tns-csi:retained", "true")],
        ),
        dataset(
            "tank/csi/waiting",
            "FILESYSTEM",
            &[("tns-csi:deleted", "true")],
        ),
        dataset(
            "tank/csi/wanted",
            "FILESYSTEM",
            &[("tns-csi:deleted", "true")],
        ),
        dataset(
            "tank/csi/origin",
            "FILESYSTEM",
            &[("tns-csi:deleted", "true")],
        ),
    ];
    let mut existing: std::collections::HashSet<String> =
        managed.iter().map(|d| d.id.clone()).collect();
    existing.insert("tank/foreign".into());
    existing.insert("tank/foreign-block".into());
    Inventory {
        managed,
        existing,
        snapshots: vec![
            snapshot("tank/csi/live@s-live", true, ""),
            snapshot("tank/csi/live@s-lost", true, ""),
            snapshot("tank/csi/live@admin", false, ""),
            snapshot("tank/csi/waiting@s-w", true, ""),
            snapshot("tank/csi/wanted@s-wanted", true, ""),
            snapshot("tank/csi/origin@s-o", true, "tank/csi/live"),
            snapshot("tank/foreign@s-f", false, ""),
        ],
        nfs: from(json!([
            {"id": 1, "path": "/mnt/tank/csi/live", "comment": "tns-csi volume live"},
            {"id": 2, "path": "/mnt/tank/csi/lost", "comment": "team share"},
            {"id": 3, "path": "/mnt/tank/csi/gone", "comment": "tns-csi volume gone"},
            {"id": 4, "path": "/mnt/tank/foreign", "comment": "tns-csi volume foreign"},
            {"id": 5, "path": "/mnt/tank/elsewhere", "comment": "not ours"}
        ])),
        smb: from(json!([
            {"id": 1, "name": "live", "path": "/mnt/tank/csi/live", "comment": "tns-csi volume live"},
            {"id": 2, "name": "gone", "path": "/mnt/tank/csi/gone2", "comment": "tns-csi volume gone2"},
            {"id": 3, "name": "home", "path": "/mnt/tank/home", "comment": ""}
        ])),
        subsystems: from(json!([
            subsys(1, "live-block", false),
            subsys(2, "lost-block", false),
            subsys(3, "empty", true),
            subsys(4, "someone", false)
        ])),
        namespaces: from(json!([
            {"id": 1, "nsid": 1, "subsys": subsys(1, "live-block", false), "device_type": "ZVOL", "device_path": "zvol/tank/csi/live-block"},
            {"id": 2, "nsid": 1, "subsys": subsys(2, "lost-block", false), "device_type": "ZVOL", "device_path": "zvol/tank/csi/lost-block"},
            {"id": 3, "nsid": 1, "subsys": subsys(4, "someone", false), "device_type": "ZVOL", "device_path": "zvol/tank/foreign-block"}
        ])),
        hosts: from(json!([
            {"id": 1, "hostnqn": "nqn.2014-08.io.tns-csi:node:worker-1"},
            {"id": 2, "hostnqn": "nqn.2014-08.io.tns-csi:node:worker-gone"},
            {"id": 3, "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:someone"}
        ])),
        host_links: from(json!([
            {"id": 1, "host": {"id": 1, "hostnqn": "nqn.2014-08.io.tns-csi:node:worker-1"}, "subsys": subsys(1, "live-block", false)},
            {"id": 2, "host": {"id": 2, "hostnqn": "nqn.2014-08.io.tns-csi:node:worker-gone"}, "subsys": subsys(2, "lost-block", false)}
        ])),
        targets: from(json!([
            {"id": 1, "name": "live-block", "groups": [{"portal": 1, "initiator": 1, "authmethod": "NONE", "auth": null}]},
            {"id": 2, "name": "dangling", "groups": [{"portal": 1, "initiator": 2, "authmethod": "NONE", "auth": null}]},
            {"id": 3, "name": "theirs", "groups": [{"portal": 1, "initiator": 3, "authmethod": "NONE", "auth": null}]}
        ])),
        extents: from(json!([
            {"id": 1, "name": "live-block", "type": "DISK", "disk": "zvol/tank/csi/live-block", "comment": "tns-csi:live-block"},
            {"id": 2, "name": "lost-block", "type": "DISK", "disk": "zvol/tank/csi/lost-block", "comment": ""},
            {"id": 3, "name": "theirs", "type": "DISK", "disk": "zvol/tank/foreign-block", "comment": ""}
        ])),
        luns: from(json!([
            {"id": 1, "target": 1, "extent": 1, "lunid": 0},
            {"id": 2, "target": 3, "extent": 3, "lunid": 0}
        ])),
        initiators: from(json!([
            {"id": 1, "initiators": [], "comment": "tns-csi:live-block"},
            {"id": 2, "initiators": [], "comment": "tns-csi:dangling"},
            {"id": 3, "initiators": [], "comment": "theirs"},
            {"id": 4, "initiators": [], "comment": "tns-csi:alone"}
        ])),
    }
}

fn named() -> Named {
    Named {
        volumes: ["tank/csi/live", "tank/csi/live-block"]
            .map(str::to_owned)
            .into(),
        snapshots: Some(
            ["tank/csi/live@s-live", "tank/csi/wanted@s-wanted"]
                .map(str::to_owned)
                .into(),
        ),
    }
}

fn found(orphans: &[Orphan]) -> BTreeSet<(&'static str, String)> {
    orphans
        .iter()
        .map(|o| (o.kind.as_str(), o.object.clone()))
        .collect()
}

#[test]
fn exactly_the_planted_orphans_are_found() {
    let orphans = judge("nas-a", &planted(), &named());
    assert!(orphans.iter().all(|o| o.system == "nas-a"));
    let expected: BTreeSet<(&str, String)> = [
        ("dataset", "tank/csi/lost"),
        ("zvol", "tank/csi/lost-block"),
        ("snapshot", "tank/csi/live@s-lost"),
        ("snapshot", "tank/csi/waiting@s-w"),
        // Unnamed, though a clone uses it: its delete is a ZFS deferred destroy, and the
        // deleted volume it is on stays (a clone depends on it).
        ("snapshot", "tank/csi/origin@s-o"),
        ("deferred_destroy", "tank/csi/waiting"),
        // A share of an orphaned volume (its comment replaced by a template).
        ("nfs_share", "/mnt/tank/csi/lost"),
        // Marked, and its dataset is gone.
        ("nfs_share", "/mnt/tank/csi/gone"),
        ("smb_share", "gone"),
        ("nvmeof_namespace", "lost-block/1"),
        ("nvmeof_subsystem", "lost-block"),
        ("nvmeof_subsystem", "empty"),
        ("nvmeof_host", "nqn.2014-08.io.tns-csi:node:worker-gone"),
        ("iscsi_extent", "lost-block"),
        ("iscsi_target", "dangling"),
        ("iscsi_initiator_group", "tns-csi:dangling"),
        ("iscsi_initiator_group", "tns-csi:alone"),
    ]
    .into_iter()
    .map(|(k, o)| (k, o.to_owned()))
    .collect();
    assert_eq!(found(&orphans), expected);
}

#[test]
fn without_a_snapshot_api_snapshots_and_deferred_destroys_are_not_judged() {
    let mut names = named();
    names.snapshots = None;
    let orphans = judge("nas-a", &planted(), &names);
    assert!(
        orphans
            .iter()
            .all(|o| !matches!(o.kind, OrphanKind::Snapshot | OrphanKind::DeferredDestroy)),
        "{orphans:?}"
    );
    assert!(found(&orphans).contains(&("dataset", "tank/csi/lost".to_owned())));
}

#[test]
fn a_pv_naming_a_volume_keeps_it_and_its_exports() {
    let mut names = named();
    names.volumes.insert("tank/csi/lost".into());
    names.volumes.insert("tank/csi/lost-block".into());
    let kinds = found(&judge("nas-a", &planted(), &names));
    for kept in [
        ("dataset", "tank/csi/lost"),
        ("zvol", "tank/csi/lost-block"),
        ("nfs_share", "/mnt/tank/csi/lost"),
        ("nvmeof_subsystem", "lost-block"),
        ("iscsi_extent", "lost-block"),
        ("nvmeof_host", "nqn.2014-08.io.tns-csi:node:worker-gone"),
    ] {
        assert!(
            !kinds.contains(&(kept.0, kept.1.to_owned())),
            "{kept:?} is named"
        );
    }
}
