//! Every typed method against the simulator, with its error cases (spec §4).

mod common;

use std::collections::BTreeMap;

use serde_json::json;
use truenas::Error;
use truenas::api::{
    Compression, DatasetChanges, DatasetType, NewDataset, NewDatasetKind, NewExtent, NewNamespace,
    NewNfsShare, NewPort, NewSmbShare, NewSnapshot, NewSubsystem, NewTarget, Rollback, TargetGroup,
    VolBlockSize,
};
use truenas::query::{Filter, Query};

const GIB: u64 = 1 << 30;

fn validation_attr(err: &Error) -> Vec<String> {
    match err {
        Error::Validation { entries, .. } => {
            entries.iter().filter_map(|e| e.attribute.clone()).collect()
        }
        other => panic!("expected a validation error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_system_and_capacity() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    assert_eq!(client.system().version().await.unwrap(), "TrueNAS-25.10.0");
    assert_eq!(
        client.system().info().await.unwrap().hostname,
        "truenas-sim"
    );
    client.system().ping().await.unwrap();
    use truenas::api::ServiceVerb;
    assert!(
        client
            .system()
            .control_service(ServiceVerb::Reload, "nfs")
            .await
            .unwrap()
    );
    let err = client
        .system()
        .control_service(ServiceVerb::Start, "nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let pool = client.pools().get("tank").await.unwrap().unwrap();
    assert_eq!(pool.size, 100 * GIB);
    assert!(client.pools().get("nope").await.unwrap().is_none());

    // A thick zvol reserves its size; a sparse one does not.
    let root_before = client
        .datasets()
        .get("tank")
        .await
        .unwrap()
        .unwrap()
        .available_bytes()
        .unwrap();
    client
        .datasets()
        .create(&NewDataset::volume("tank/thick", 10 * GIB))
        .await
        .unwrap();
    let root_after = client
        .datasets()
        .get("tank")
        .await
        .unwrap()
        .unwrap()
        .available_bytes()
        .unwrap();
    assert_eq!(root_before - root_after, 10 * GIB);
    let mut sparse = NewDataset::volume("tank/thin", 10 * GIB);
    if let NewDatasetKind::Volume { sparse, .. } = &mut sparse.kind {
        *sparse = true;
    }
    let thin = client.datasets().create(&sparse).await.unwrap();
    assert_eq!(
        thin.refreservation.unwrap().parsed,
        None,
        "sparse: no refreservation"
    );
    let root_thin = client
        .datasets()
        .get("tank")
        .await
        .unwrap()
        .unwrap()
        .available_bytes()
        .unwrap();
    assert!(root_after - root_thin < 1 << 20);
    assert_eq!(
        client.pools().get("tank").await.unwrap().unwrap().free,
        root_thin
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_create_query_update_delete_with_spec_errors() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    let ds = client.datasets();

    let mut fs = NewDataset::filesystem("tank/k8s").user_property("tns-csi:managed_by", "tns-csi");
    fs.compression = Some(Compression::parse("zstd-3").unwrap());
    fs.comments = Some("volumes".into());
    let created = ds.create(&fs).await.unwrap();
    assert_eq!(created.kind, DatasetType::Filesystem);
    assert_eq!(created.mountpoint.as_deref(), Some("/mnt/tank/k8s"));
    assert_eq!(created.user_property("tns-csi:managed_by"), Some("tns-csi"));
    assert_eq!(
        created.user_property("comments"),
        Some("volumes"),
        "internal prop renamed (spec §5)"
    );
    assert_eq!(
        created.compression.as_ref().unwrap().value.as_deref(),
        Some("ZSTD-3")
    );
    assert!(
        env.sim.data_dir().join("mnt/tank/k8s").is_dir(),
        "a real directory backs it"
    );

    // Already exists, missing parent, no slash, bad name.
    let err = ds.create(&fs).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = ds
        .create(&NewDataset::filesystem("tank/missing/child"))
        .await
        .unwrap_err();
    assert_eq!(validation_attr(&err), ["pool_dataset_create.name"]);
    assert!(
        err.to_string()
            .contains("Parent dataset (tank/missing) does not exist"),
        "{err}"
    );
    let err = ds
        .create(&NewDataset::filesystem("tank"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("You need a full name"), "{err}");
    let mut ancestors = NewDataset::filesystem("tank/a/b/c");
    ancestors.create_ancestors = true;
    ds.create(&ancestors).await.unwrap();

    // Record size and encryption with a generated key.
    let mut tuned = NewDataset::filesystem("tank/tuned");
    tuned.kind = NewDatasetKind::Filesystem {
        refquota: None,
        quota: None,
        recordsize: Some("1M".into()),
    };
    tuned.encryption = Some(truenas::api::Encryption {
        algorithm: Some("AES-256-GCM".into()),
        key: truenas::api::EncryptionKey::Generate,
    });
    let tuned = ds.create(&tuned).await.unwrap();
    assert_eq!(tuned.recordsize.unwrap().parsed, Some(1 << 20));
    assert!(tuned.encrypted);

    // Inherited user props show on children; exact lookups by user property.
    let child = ds
        .create(
            &NewDataset::filesystem("tank/k8s/pvc-1")
                .user_property("tns-csi:csi_volume_name", "pvc-1"),
        )
        .await
        .unwrap();
    assert_eq!(child.user_property("tns-csi:managed_by"), Some("tns-csi"));
    let found = ds
        .with_user_property("tns-csi:csi_volume_name", "pvc-1")
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["tank/k8s/pvc-1"]
    );
    assert!(
        ds.with_user_property("tns-csi:csi_volume_name", "pvc")
            .await
            .unwrap()
            .is_empty(),
        "exact, not prefix"
    );

    // refquota: 1 GiB minimum, then caps available.
    let small = DatasetChanges {
        refquota: Some(Some(1 << 20)),
        ..Default::default()
    };
    let err = ds.update("tank/k8s/pvc-1", &small).await.unwrap_err();
    // The model's bound: reported under the argument name, as 25.10 does.
    assert_eq!(validation_attr(&err), ["data.refquota"]);
    let quota = DatasetChanges {
        refquota: Some(Some(2 * GIB)),
        ..Default::default()
    };
    let updated = ds.update("tank/k8s/pvc-1", &quota).await.unwrap();
    assert_eq!(updated.refquota_bytes(), Some(2 * GIB));
    assert!(updated.available_bytes().unwrap() <= 2 * GIB);

    // User property update and removal rules.
    let props = DatasetChanges {
        set_user_properties: vec![("tns-csi:x".into(), "1".into())],
        ..Default::default()
    };
    ds.update("tank/k8s/pvc-1", &props).await.unwrap();
    let remove = DatasetChanges {
        remove_user_properties: vec!["tns-csi:x".into()],
        ..Default::default()
    };
    let after = ds.update("tank/k8s/pvc-1", &remove).await.unwrap();
    assert_eq!(after.user_property("tns-csi:x"), None);
    let err = ds.update("tank/k8s/pvc-1", &remove).await.unwrap_err();
    assert_eq!(validation_attr(&err), ["properties.tns-csi:x"]);
    let err = ds.update("tank/nope", &props).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // Zvols: multiple of volblocksize, 80% rule, grow but never shrink.
    let err = ds
        .create(&NewDataset::volume("tank/k8s/odd", GIB + 512))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("multiple of volume block size"),
        "{err}"
    );
    let err = ds
        .create(&NewDataset::volume("tank/k8s/huge", 90 * GIB))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("80%"), "{err}");
    let mut vol = NewDataset::volume("tank/k8s/vol", GIB);
    if let NewDatasetKind::Volume { volblocksize, .. } = &mut vol.kind {
        *volblocksize = Some(VolBlockSize::parse("64K").unwrap());
    }
    let zvol = ds.create(&vol).await.unwrap();
    assert_eq!(zvol.volblocksize_bytes(), Some(65536));
    assert_eq!(zvol.mountpoint, None);
    let grown = ds
        .update(
            "tank/k8s/vol",
            &DatasetChanges {
                volsize: Some(2 * GIB),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(grown.volsize_bytes(), Some(2 * GIB));
    assert_eq!(
        std::fs::metadata(env.sim.data_dir().join("zvol/tank/k8s/vol"))
            .unwrap()
            .len(),
        2 * GIB
    );
    let err = ds
        .update(
            "tank/k8s/vol",
            &DatasetChanges {
                volsize: Some(GIB),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot shrink"), "{err}");
    let err = ds
        .create(&NewDataset::volume("tank/k8s/vol", GIB))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { .. }),
        "a zvol that exists: {err}"
    );

    // Strict input: a string where an int belongs is refused and named.
    let err = client
        .call(
            truenas::Method::change("pool.dataset.create"),
            vec![json!({"name": "tank/s", "type": "VOLUME", "volsize": "10"})],
        )
        .await
        .unwrap_err();
    let attrs = validation_attr(&err);
    assert!(
        attrs.contains(&"data.PoolDatasetCreateVolume.volsize".to_owned()),
        "{attrs:?}"
    );

    // Delete: children need recursive; missing is reported as already gone.
    let err = ds.delete("tank/k8s", false, false).await.unwrap_err();
    assert!(err.to_string().contains("has children"), "{err}");
    env.sim.faults().mark_busy("tank/k8s/pvc-1", true);
    let err = ds.delete("tank/k8s/pvc-1", false, false).await.unwrap_err();
    assert!(
        matches!(err, Error::Busy { .. }) && err.is_retryable(),
        "{err}"
    );
    env.sim.faults().mark_busy("tank/k8s/pvc-1", false);
    assert!(ds.delete("tank/k8s", true, false).await.unwrap());
    assert!(
        !ds.delete("tank/k8s", true, false).await.unwrap(),
        "second delete: already gone"
    );
    assert!(!env.sim.data_dir().join("mnt/tank/k8s").exists());

    // Queries are typed: order, page, select.
    let page = ds
        .query(
            &Query::all()
                .filter(Filter::cond("id", truenas::query::Op::StartsWith, "tank/a"))
                .order_by("id", true)
                .page(0, 2)
                .extra("retrieve_children", false),
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["tank/a/b/c", "tank/a/b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_clones_rollback_promote_and_deferred_destroy() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    let ds = client.datasets();
    let snaps = client.snapshots();
    ds.create(&NewDataset::filesystem("tank/src").user_property("tns-csi:managed_by", "tns-csi"))
        .await
        .unwrap();
    let dir = env.sim.data_dir().join("mnt/tank/src");
    std::fs::write(dir.join("data.txt"), b"version 1").unwrap();

    let mut new = NewSnapshot {
        dataset: "tank/src".into(),
        name: "s1".into(),
        ..Default::default()
    };
    new.properties
        .insert("tns-csi:snapshot_of".into(), "src".into());
    let s1 = snaps.create(&new).await.unwrap();
    assert_eq!(s1.id, "tank/src@s1");
    assert_eq!(s1.property("tns-csi:snapshot_of"), Some("src"));
    assert_eq!(
        s1.properties["tns-csi:managed_by"].source.as_deref(),
        Some("INHERITED")
    );
    assert!(s1.created_secs().is_some());
    let err = snaps.create(&new).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let bad = NewSnapshot {
        dataset: "tank/src".into(),
        name: "bad name!".into(),
        ..Default::default()
    };
    assert_eq!(
        validation_attr(&snaps.create(&bad).await.unwrap_err()),
        ["snapshot_create.name"]
    );
    let missing = NewSnapshot {
        dataset: "tank/none".into(),
        name: "s".into(),
        ..Default::default()
    };
    assert!(snaps.create(&missing).await.is_err());
    assert!(snaps.get("tank/src@s1").await.unwrap().is_some());
    assert!(
        snaps.get("s1").await.unwrap().is_none(),
        "a short name finds nothing (spec §7.16)"
    );
    assert_eq!(snaps.of_dataset("tank/src").await.unwrap().len(), 1);

    // Snapshot user properties.
    let updated = snaps
        .update_user_properties("tank/src@s1", &[("tns-csi:k".into(), "v".into())], &[])
        .await
        .unwrap();
    assert_eq!(updated.property("tns-csi:k"), Some("v"));
    let err = snaps
        .update_user_properties("tank/src@s1", &[], &["tns-csi:nope".into()])
        .await
        .unwrap_err();
    assert_eq!(validation_attr(&err), ["properties.tns-csi:nope"]);

    // A clone starts from the snapshot's data, not the live data.
    std::fs::write(dir.join("data.txt"), b"version 2").unwrap();
    snaps
        .clone_to("tank/src@s1", "tank/clone", &BTreeMap::new())
        .await
        .unwrap();
    let clone = ds.get("tank/clone").await.unwrap().unwrap();
    assert_eq!(clone.origin(), Some("tank/src@s1"));
    assert_eq!(
        std::fs::read(env.sim.data_dir().join("mnt/tank/clone/data.txt")).unwrap(),
        b"version 1"
    );
    let err = snaps
        .clone_to("tank/src@s1", "tank/clone", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = snaps
        .clone_to("tank/src@none", "tank/c2", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // A snapshot with clones: plain delete is refused naming `options.defer`; defer works.
    let err = snaps.delete("tank/src@s1", false, false).await.unwrap_err();
    assert_eq!(validation_attr(&err), ["options.defer"]);
    // A dataset whose snapshot has clones cannot be destroyed, even recursively.
    let err = ds.delete("tank/src", true, false).await.unwrap_err();
    assert!(err.to_string().contains("dependent clones"), "{err}");

    // Rollback restores data; newer snapshots need `recursive`.
    snaps
        .create(&NewSnapshot {
            dataset: "tank/src".into(),
            name: "s2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = snaps
        .rollback("tank/src@s1", Rollback::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more recent snapshots"), "{err}");
    snaps
        .rollback(
            "tank/src@s1",
            Rollback {
                recursive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.join("data.txt")).unwrap(), b"version 1");
    assert!(snaps.get("tank/src@s2").await.unwrap().is_none());

    // Promote swaps the dependency: the clone owns s1 and the source becomes its clone.
    let err = ds.promote("tank/src").await.unwrap_err();
    assert!(err.to_string().contains("Only cloned datasets"), "{err}");
    let err = ds.promote("tank/none").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    ds.promote("tank/clone").await.unwrap();
    assert!(snaps.get("tank/clone@s1").await.unwrap().is_some());
    assert_eq!(ds.get("tank/clone").await.unwrap().unwrap().origin(), None);
    assert_eq!(
        ds.get("tank/src").await.unwrap().unwrap().origin(),
        Some("tank/clone@s1")
    );
    // Now the old source can go, and the snapshot is deferred until its last clone is gone.
    assert!(ds.delete("tank/src", true, false).await.unwrap());
    snaps
        .clone_to("tank/clone@s1", "tank/c3", &BTreeMap::new())
        .await
        .unwrap();
    assert!(snaps.delete("tank/clone@s1", true, false).await.unwrap());
    assert!(
        snaps
            .get("tank/clone@s1")
            .await
            .unwrap()
            .unwrap()
            .property("defer_destroy")
            == Some("on")
    );
    assert!(ds.delete("tank/c3", false, false).await.unwrap());
    assert!(
        snaps.get("tank/clone@s1").await.unwrap().is_none(),
        "deferred destroy happened"
    );
    assert!(
        !snaps.delete("tank/clone@s1", false, false).await.unwrap(),
        "already gone"
    );
    // A dataset with snapshots needs recursive.
    snaps
        .create(&NewSnapshot {
            dataset: "tank/clone".into(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = ds.delete("tank/clone", false, false).await.unwrap_err();
    assert!(err.to_string().contains("use '-r'"), "{err}");
    assert!(ds.delete("tank/clone", true, false).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zvol_data_survives_snapshot_and_clone() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let env = common::sim().await;
    let client = common::client(&env).await;
    client
        .datasets()
        .create(&NewDataset::volume("tank/v", 256 << 20))
        .await
        .unwrap();
    let file = env.sim.data_dir().join("zvol/tank/v");
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    f.write_all(b"block data").unwrap();
    drop(f);
    client
        .snapshots()
        .create(&NewSnapshot {
            dataset: "tank/v".into(),
            name: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .snapshots()
        .clone_to("tank/v@s", "tank/v2", &BTreeMap::new())
        .await
        .unwrap();
    let clone = client.datasets().get("tank/v2").await.unwrap().unwrap();
    assert_eq!(clone.volsize_bytes(), Some(256 << 20));
    let mut buf = [0u8; 10];
    let mut f = std::fs::File::open(env.sim.data_dir().join("zvol/tank/v2")).unwrap();
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"block data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfs_and_smb_shares() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    client
        .datasets()
        .create(&NewDataset::filesystem("tank/share"))
        .await
        .unwrap();
    let nfs = client.nfs();
    let share = nfs
        .create(&NewNfsShare {
            path: "/mnt/tank/share".into(),
            comment: "pvc-1".into(),
            networks: vec!["10.0.0.5".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(share.networks, ["10.0.0.5/32"], "plain IPs become CIDRs");
    let conflict = NewNfsShare {
        path: "/mnt/tank/share".into(),
        networks: vec!["10.0.0.5/32".into()],
        ..Default::default()
    };
    assert_eq!(
        validation_attr(&nfs.create(&conflict).await.unwrap_err()),
        ["sharingnfs_create.networks"]
    );
    let outside = NewNfsShare {
        path: "/srv/x".into(),
        ..Default::default()
    };
    assert_eq!(
        validation_attr(&nfs.create(&outside).await.unwrap_err()),
        ["sharingnfs_create.path"]
    );
    let missing = NewNfsShare {
        path: "/mnt/tank/none".into(),
        ..Default::default()
    };
    assert!(matches!(
        nfs.create(&missing).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    let changed = nfs
        .set_access(share.id, &["10.1.0.0/16".into()], &[])
        .await
        .unwrap();
    assert_eq!(changed.networks, ["10.1.0.0/16"]);
    assert_eq!(nfs.by_path("/mnt/tank/share").await.unwrap().len(), 1);
    assert!(nfs.delete(share.id).await.unwrap());
    assert!(!nfs.delete(share.id).await.unwrap());

    let smb = client.smb();
    let new = NewSmbShare {
        name: "pvc-1".into(),
        path: "/mnt/tank/share".into(),
        ..Default::default()
    };
    let share = smb.create(&new).await.unwrap();
    assert!(smb.by_name("pvc-1").await.unwrap().is_some());
    assert!(matches!(
        smb.create(&new).await.unwrap_err(),
        Error::AlreadyExists { .. }
    ));
    let bad = NewSmbShare {
        name: "a/b".into(),
        path: "/mnt/tank/share".into(),
        ..Default::default()
    };
    assert_eq!(
        validation_attr(&smb.create(&bad).await.unwrap_err()),
        ["sharingsmb_create.name"]
    );
    assert!(smb.set_readonly(share.id, true).await.unwrap().readonly);

    // Deleting the dataset removes the shares inside it (spec §4.5).
    let again = nfs
        .create(&NewNfsShare {
            path: "/mnt/tank/share".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .datasets()
        .delete("tank/share", false, false)
        .await
        .unwrap();
    assert!(
        nfs.query(&Query::all())
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != again.id)
    );
    assert!(smb.by_name("pvc-1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvmet_subsystems_namespaces_ports_and_hosts() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    client
        .datasets()
        .create(&NewDataset::volume("tank/nv", GIB))
        .await
        .unwrap();
    let nvmet = client.nvmet();
    let global = nvmet.global().await.unwrap();
    assert!(global.basenqn.starts_with("nqn.2011-06.com.truenas:uuid:"));

    let subsys = nvmet
        .create_subsystem(&NewSubsystem {
            name: "pvc-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(subsys.subnqn, format!("{}:pvc-1", global.basenqn));
    assert_eq!(subsys.serial.len(), 20);
    let err = nvmet
        .create_subsystem(&NewSubsystem {
            name: "pvc-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let err = nvmet
        .create_namespace(&NewNamespace::zvol(subsys.id, "tank/none"))
        .await
        .unwrap_err();
    assert_eq!(
        validation_attr(&err),
        ["nvmet_namespace_create.device_path"]
    );
    let err = nvmet
        .create_namespace(&NewNamespace::zvol(999, "tank/nv"))
        .await
        .unwrap_err();
    assert_eq!(validation_attr(&err), ["nvmet_namespace_create.subsys_id"]);
    let ns = nvmet
        .create_namespace(&NewNamespace::zvol(subsys.id, "tank/nv"))
        .await
        .unwrap();
    assert_eq!(
        (ns.nsid, ns.subsys.id, ns.device_path.as_str()),
        (1, subsys.id, "zvol/tank/nv")
    );
    let err = nvmet
        .create_namespace(&NewNamespace::zvol(subsys.id, "tank/nv"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already used by subsystem"),
        "{err}"
    );
    let by_subsys = nvmet
        .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
        .await
        .unwrap();
    assert_eq!(by_subsys.len(), 1);

    let port = nvmet
        .create_port(&NewPort {
            addr_trtype: "TCP",
            addr_traddr: "0.0.0.0".into(),
            addr_trsvcid: 4420,
        })
        .await
        .unwrap();
    assert_eq!(port.tcp_port(), Some(4420));
    let err = nvmet
        .create_port(&NewPort {
            addr_trtype: "TCP",
            addr_traddr: "0.0.0.0".into(),
            addr_trsvcid: 4420,
        })
        .await
        .unwrap_err();
    assert_eq!(validation_attr(&err), ["nvmet_port_create.addr_traddr"]);
    let link = nvmet.link_port(port.id, subsys.id).await.unwrap();
    assert_eq!(link.subsys.id, subsys.id);
    assert!(nvmet.link_port(port.id, subsys.id).await.is_err());
    assert_eq!(
        nvmet
            .port_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
            .await
            .unwrap()
            .len(),
        1
    );

    let host = nvmet
        .create_host("nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555")
        .await
        .unwrap();
    assert!(nvmet.create_host("not-an-nqn").await.is_err());
    let allowed = nvmet.allow_host(host.id, subsys.id).await.unwrap();
    assert_eq!(nvmet.host_subsystems(&Query::all()).await.unwrap().len(), 1);
    let closed = nvmet.set_allow_any_host(subsys.id, false).await.unwrap();
    assert!(!closed.allow_any_host);
    let verbose = nvmet
        .subsystems(&Query::all().extra("verbose", true))
        .await
        .unwrap();
    assert_eq!(
        (
            verbose[0].namespaces.len(),
            verbose[0].ports.len(),
            verbose[0].hosts.len()
        ),
        (1, 1, 1)
    );
    assert!(
        nvmet.delete_host(host.id, false).await.is_err(),
        "host in use"
    );
    assert!(nvmet.disallow_host(allowed.id).await.unwrap());
    assert!(nvmet.delete_host(host.id, false).await.unwrap());

    // Subsystem delete refuses while namespaces or ports exist; dependency order works.
    let err = nvmet.delete_subsystem(subsys.id, false).await.unwrap_err();
    // Both refusals at once (a namespace and a port), as 25.10 does.
    assert_eq!(
        validation_attr(&err),
        ["nvmet_subsys_delete.id", "nvmet_subsys_delete.id"]
    );
    assert!(nvmet.unlink_port(link.id).await.unwrap());
    assert!(nvmet.delete_namespace(ns.id).await.unwrap());
    assert!(nvmet.delete_subsystem(subsys.id, false).await.unwrap());
    assert!(!nvmet.delete_subsystem(subsys.id, false).await.unwrap());

    // Dataset delete removes namespaces on the zvol.
    let s2 = nvmet
        .create_subsystem(&NewSubsystem {
            name: "pvc-2".into(),
            allow_any_host: true,
            ..Default::default()
        })
        .await
        .unwrap();
    nvmet
        .create_namespace(&NewNamespace::zvol(s2.id, "tank/nv"))
        .await
        .unwrap();
    client
        .datasets()
        .delete("tank/nv", false, false)
        .await
        .unwrap();
    assert!(nvmet.namespaces(&Query::all()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zvol_device_lag_is_reported_like_truenas() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    env.sim
        .faults()
        .set_zvol_lag(std::time::Duration::from_secs(1));
    client
        .datasets()
        .create(&NewDataset::volume("tank/lag", GIB))
        .await
        .unwrap();
    let subsys = client
        .nvmet()
        .create_subsystem(&NewSubsystem {
            name: "lag".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = client
        .nvmet()
        .create_namespace(&NewNamespace::zvol(subsys.id, "tank/lag"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be a block device"), "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    client
        .nvmet()
        .create_namespace(&NewNamespace::zvol(subsys.id, "tank/lag"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_targets_extents_and_luns() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    client
        .datasets()
        .create(&NewDataset::volume("tank/lun", GIB))
        .await
        .unwrap();
    let iscsi = client.iscsi();
    assert_eq!(
        iscsi.global().await.unwrap().basename,
        "iqn.2005-10.org.freenas.ctl"
    );
    let portals = iscsi.portals().await.unwrap();
    assert_eq!(portals[0].listen[0].port, Some(3260));
    let group = iscsi
        .create_initiator(&["iqn.2020-01.io.node:a".into()], "pvc-1")
        .await
        .unwrap();
    let group = iscsi
        .set_initiators(group.id, &["iqn.2020-01.io.node:b".into()])
        .await
        .unwrap();
    assert_eq!(group.initiators, ["iqn.2020-01.io.node:b"]);

    let new = NewTarget {
        name: "pvc-1".into(),
        mode: "ISCSI",
        groups: vec![TargetGroup {
            portal: portals[0].id,
            initiator: Some(group.id),
            authmethod: "NONE".into(),
            auth: None,
        }],
    };
    let target = iscsi.create_target(&new).await.unwrap();
    assert!(matches!(
        iscsi.create_target(&new).await.unwrap_err(),
        Error::AlreadyExists { .. }
    ));
    let bad = NewTarget {
        name: "Upper".into(),
        ..new.clone()
    };
    assert_eq!(
        validation_attr(&iscsi.create_target(&bad).await.unwrap_err()),
        ["iscsi_target_create.name"]
    );
    assert!(iscsi.target_by_name("pvc-1").await.unwrap().is_some());

    let extent = iscsi
        .create_extent(&NewExtent::zvol("pvc-1", "tank/lun"))
        .await
        .unwrap();
    assert_eq!(extent.disk.as_deref(), Some("zvol/tank/lun"));
    assert!(extent.naa.as_deref().unwrap().starts_with("0x6589cfc"));
    let err = iscsi
        .create_extent(&NewExtent::zvol("pvc-2", "tank/lun"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in use by extent"), "{err}");
    let lun = iscsi.map_extent(target.id, extent.id, None).await.unwrap();
    assert_eq!(lun.lunid, 0);
    assert!(
        iscsi.map_extent(target.id, extent.id, None).await.is_err(),
        "extent in use"
    );
    assert_eq!(
        iscsi
            .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        iscsi
            .extents(&Query::all().filter(Filter::eq("disk", "zvol/tank/lun")))
            .await
            .unwrap()
            .len(),
        1
    );

    assert!(iscsi.unmap_extent(lun.id, false).await.unwrap());
    assert!(iscsi.delete_extent(extent.id, false).await.unwrap());
    assert!(iscsi.delete_target(target.id, false, false).await.unwrap());
    assert!(!iscsi.delete_target(target.id, false, false).await.unwrap());
    assert!(iscsi.delete_initiator(group.id).await.unwrap());

    // Dataset delete removes extents, their LUNs and targets left without extents.
    let open = TargetGroup {
        portal: portals[0].id,
        initiator: None,
        authmethod: "NONE".into(),
        auth: None,
    };
    let target = iscsi
        .create_target(&NewTarget {
            name: "pvc-9".into(),
            mode: "ISCSI",
            groups: vec![open],
        })
        .await
        .unwrap();
    let extent = iscsi
        .create_extent(&NewExtent::zvol("pvc-9", "tank/lun"))
        .await
        .unwrap();
    iscsi
        .map_extent(target.id, extent.id, Some(0))
        .await
        .unwrap();
    client
        .datasets()
        .delete("tank/lun", false, false)
        .await
        .unwrap();
    assert!(iscsi.extents(&Query::all()).await.unwrap().is_empty());
    assert!(
        iscsi
            .target_extents(&Query::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(iscsi.target_by_name("pvc-9").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_data_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = truenas_sim::SimConfig::new(dir.path().join("data"));
    config.state_dir = Some(dir.path().join("state"));
    let key = config.api_key.clone();
    let sim = truenas_sim::Simulator::start(config.clone()).await.unwrap();
    let env = common::Env { sim, key, dir };
    let client = common::client(&env).await;
    client
        .datasets()
        .create(&NewDataset::filesystem("tank/keep").user_property("a:b", "c"))
        .await
        .unwrap();
    std::fs::write(env.sim.data_dir().join("mnt/tank/keep/f"), b"kept").unwrap();
    client
        .snapshots()
        .create(&NewSnapshot {
            dataset: "tank/keep".into(),
            name: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let subsys = client
        .nvmet()
        .create_subsystem(&NewSubsystem {
            name: "keep".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(client);
    let common::Env { sim, key, dir } = env;
    sim.stop().await;

    let sim = truenas_sim::Simulator::start(config).await.unwrap();
    let env = common::Env { sim, key, dir };
    let client = common::client(&env).await;
    let kept = client.datasets().get("tank/keep").await.unwrap().unwrap();
    assert_eq!(kept.user_property("a:b"), Some("c"));
    assert!(
        client
            .snapshots()
            .get("tank/keep@s")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        std::fs::read(env.sim.data_dir().join("mnt/tank/keep/f")).unwrap(),
        b"kept"
    );
    let again = client
        .nvmet()
        .subsystem_by_name("keep")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, subsys.id);
    let next = client
        .nvmet()
        .create_subsystem(&NewSubsystem {
            name: "next".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(next.id > subsys.id, "ids are never reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_typed() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    let err = client
        .call(truenas::Method::change("pool.nothing"), vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchMethod { .. }), "{err}");
    let err = client
        .call(
            truenas::Method::read("pool.query"),
            vec![json!([["name", "==", "x"]])],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Invalid operation"), "{err}");
    let err = client
        .call(
            truenas::Method::read("pool.query"),
            vec![json!([]), json!({"get": true, "limit": 2})],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    let err = client
        .call(
            truenas::Method::read("pool.dataset.query"),
            vec![json!([["id", "=", "tank/x"]]), json!({"get": true})],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "MatchNotFound: {err}"
    );
    let err = client
        .call(truenas::Method::read("core.ping"), vec![json!(1)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Too many arguments"), "{err}");
    env.sim
        .faults()
        .fail_method("pool.query", "EBUSY", "pool is busy");
    let err = client.pools().list().await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
}
