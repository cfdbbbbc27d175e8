//! The CSI rules for every controller RPC, for all four protocols, against the simulator over
//! a real unix socket (the ground csi-sanity covers, written in Rust).

mod common;

use common::*;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;
use tonic::Code;
use truenas::query::{Filter, Query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_reports_the_driver_and_probes_truenas() {
    let mut h = harness().await;
    let info = h
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "tns.csi.io");
    assert!(!info.vendor_version.is_empty());
    let caps = h
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        caps.capabilities.len(),
        2,
        "controller service + online expansion"
    );
    assert_eq!(
        h.identity
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(true)
    );
    let controller_caps = h
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(controller_caps.capabilities.len() >= 9);
    let common::Harness { sim, .. } = &h;
    // Every socket drops and no login succeeds any more.
    sim.faults().refuse_logins(true);
    sim.faults().drop_randomly(1.0);
    for _ in 0..6 {
        let _ = h
            .truenas
            .call_within(
                truenas::Method::read("core.ping"),
                vec![],
                std::time::Duration::from_millis(200),
            )
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        h.identity
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(false),
        "not ready while TrueNAS refuses us"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_delete_leaves_nothing_for_every_protocol() {
    let mut h = harness().await;
    for protocol in PROTOCOLS {
        let name = format!("pvc-{protocol}");
        let request = create_request(&name, protocol, GIB);
        let first = h
            .controller
            .create_volume(request.clone())
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(first.volume_id, format!("{protocol}:tank/csi/{name}"));
        assert_eq!(first.capacity_bytes, GIB);
        let ctx = &first.volume_context;
        assert_eq!(ctx["protocol"], protocol);
        assert_eq!(ctx["server"], "127.0.0.1");
        match protocol {
            "nfs" => assert_eq!(ctx["sharePath"], format!("/mnt/tank/csi/{name}")),
            "smb" => assert_eq!(ctx["shareName"], name),
            "nvmeof" => {
                assert!(ctx["nqn"].ends_with(&format!(":{name}")), "{ctx:?}");
                assert_eq!(
                    (
                        ctx["nsid"].as_str(),
                        ctx["port"].as_str(),
                        ctx["fsType"].as_str()
                    ),
                    ("1", "4420", "ext4")
                );
            }
            _ => {
                assert_eq!(ctx["iqn"], format!("iqn.2005-10.org.freenas.ctl:{name}"));
                assert_eq!((ctx["lun"].as_str(), ctx["port"].as_str()), ("0", "3260"));
            }
        }
        let again = h
            .controller
            .create_volume(request.clone())
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(
            again, first,
            "{protocol}: the same request gives the same answer"
        );

        let mut bigger = request.clone();
        bigger.capacity_range = Some(CapacityRange {
            required_bytes: 2 * GIB,
            limit_bytes: 0,
        });
        assert_eq!(
            h.controller.create_volume(bigger).await.unwrap_err().code(),
            Code::AlreadyExists
        );
        let mut other = request.clone();
        other
            .parameters
            .insert("zfs.compression".into(), "zstd".into());
        assert_eq!(
            h.controller.create_volume(other).await.unwrap_err().code(),
            Code::AlreadyExists,
            "{protocol}: same name, other parameters"
        );

        let dataset = h
            .truenas
            .datasets()
            .get(&format!("tank/csi/{name}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dataset.user_property("tns-csi:managed_by"), Some("tns-csi"));
        assert_eq!(
            dataset.user_property("tns-csi:csi_volume_name"),
            Some(name.as_str())
        );
        assert_eq!(dataset.user_property("tns-csi:protocol"), Some(protocol));

        h.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: first.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        h.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: first.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            leftovers(&h.truenas).await,
            Vec::<String>::new(),
            "{protocol}"
        );
    }
    // Unknown and malformed ids delete fine.
    for id in ["nfs:tank/csi/never", "garbage"] {
        h.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        h.controller
            .delete_volume(DeleteVolumeRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_codes_and_name_the_field() {
    let mut h = harness().await;
    let mut no_name = create_request("", "nfs", GIB);
    no_name.name.clear();
    let err = h.controller.create_volume(no_name).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message().contains("name")),
        (Code::InvalidArgument, true)
    );
    let mut no_caps = create_request("pvc-x", "nfs", GIB);
    no_caps.volume_capabilities.clear();
    assert_eq!(
        h.controller
            .create_volume(no_caps)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut bad_param = create_request("pvc-x", "nfs", GIB);
    bad_param
        .parameters
        .insert("zfs.compresion".into(), "lz4".into());
    let err = h.controller.create_volume(bad_param).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("zfs.compresion"),
        "{}",
        err.message()
    );
    let mut bad_value = create_request("pvc-x", "nvmeof", GIB);
    bad_value.parameters.insert("fsType".into(), "btrfs".into());
    let err = h.controller.create_volume(bad_value).await.unwrap_err();
    assert!(err.message().contains("`fsType`"), "{}", err.message());
    let mut nfs_block = create_request("pvc-x", "nfs", GIB);
    nfs_block.volume_capabilities = vec![block(Mode::MultiNodeMultiWriter)];
    assert_eq!(
        h.controller
            .create_volume(nfs_block)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut rwx_fs_on_block = create_request("pvc-x", "iscsi", GIB);
    rwx_fs_on_block.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter)];
    assert_eq!(
        h.controller
            .create_volume(rwx_fs_on_block)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut rwx_block = create_request("pvc-rwx", "nvmeof", GIB);
    rwx_block.volume_capabilities = vec![block(Mode::MultiNodeMultiWriter)];
    h.controller.create_volume(rwx_block).await.unwrap();
    let mut tiny = create_request("pvc-x", "nfs", 1 << 20);
    tiny.capacity_range = Some(CapacityRange {
        required_bytes: 1 << 20,
        limit_bytes: 2 << 20,
    });
    assert_eq!(
        h.controller.create_volume(tiny).await.unwrap_err().code(),
        Code::OutOfRange,
        "refquota starts at 1 GiB"
    );
    let mut inverted = create_request("pvc-x", "nfs", 2 * GIB);
    inverted.capacity_range = Some(CapacityRange {
        required_bytes: 2 * GIB,
        limit_bytes: GIB,
    });
    assert_eq!(
        h.controller
            .create_volume(inverted)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut huge = create_request("pvc-huge", "nvmeof", 500 * GIB);
    huge.parameters.insert("zfs.sparse".into(), "false".into());
    assert_eq!(
        h.controller.create_volume(huge).await.unwrap_err().code(),
        Code::ResourceExhausted,
        "pool full"
    );
    assert_eq!(
        leftovers(&h.truenas).await,
        vec![
            "dataset tank/csi/pvc-rwx",
            "nvmet subsystem pvc-rwx",
            "nvmet namespace zvol/tank/csi/pvc-rwx"
        ]
    );
    // Sizes round up: zvols to the block size, quotas to 1 GiB.
    let odd = h
        .controller
        .create_volume(create_request("pvc-odd", "nvmeof", GIB + 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(odd.volume.unwrap().capacity_bytes, GIB + 16384);
    let small = h
        .controller
        .create_volume(create_request("pvc-small", "nfs", 5 << 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.volume.unwrap().capacity_bytes, GIB);
    // A dataset someone else made is never taken over.
    h.truenas
        .datasets()
        .create(&truenas::api::NewDataset::filesystem("tank/csi/pvc-theirs"))
        .await
        .unwrap();
    assert_eq!(
        h.controller
            .create_volume(create_request("pvc-theirs", "nfs", GIB))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    let err = h
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: "nfs:tank/csi/pvc-theirs".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        h.truenas
            .datasets()
            .get("tank/csi/pvc-theirs")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restores_clones_and_deletion_order_leak_nothing() {
    let mut h = harness().await;
    for protocol in PROTOCOLS {
        let vol = h
            .controller
            .create_volume(create_request(&format!("src-{protocol}"), protocol, GIB))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let dataset = vol.volume_id.split_once(':').unwrap().1.to_owned();
        // Data written through the volume.
        let marker = if protocol == "nfs" || protocol == "smb" {
            let path = h.sim.data_dir().join("mnt").join(&dataset).join("data.txt");
            std::fs::write(&path, b"snapshot me").unwrap();
            path
        } else {
            use std::io::Write;
            let path = h.sim.data_dir().join("zvol").join(&dataset);
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all(b"snapshot me").unwrap();
            path
        };
        let snap_req = CreateSnapshotRequest {
            source_volume_id: vol.volume_id.clone(),
            name: format!("snap-{protocol}"),
            ..Default::default()
        };
        let snap = h
            .controller
            .create_snapshot(snap_req.clone())
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert_eq!(snap.source_volume_id, vol.volume_id);
        assert!(snap.ready_to_use && snap.size_bytes == GIB && snap.creation_time.is_some());
        assert_eq!(
            h.controller
                .create_snapshot(snap_req.clone())
                .await
                .unwrap()
                .into_inner()
                .snapshot
                .unwrap(),
            snap
        );

        // Restore into a bigger volume: grown, and the data is there.
        let mut restore = create_request(&format!("restore-{protocol}"), protocol, 2 * GIB);
        restore.volume_content_source = Some(VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: snap.snapshot_id.clone(),
                },
            )),
        });
        let restored = h
            .controller
            .create_volume(restore.clone())
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(
            restored.capacity_bytes,
            2 * GIB,
            "{protocol}: clone grown to the request"
        );
        assert!(restored.content_source.is_some());
        assert_eq!(
            h.controller
                .create_volume(restore)
                .await
                .unwrap()
                .into_inner()
                .volume
                .unwrap(),
            restored,
            "idempotent restore"
        );
        let restored_ds = restored.volume_id.split_once(':').unwrap().1.to_owned();
        let ds = h
            .truenas
            .datasets()
            .get(&restored_ds)
            .await
            .unwrap()
            .unwrap();
        let size = if protocol == "nfs" || protocol == "smb" {
            ds.refquota_bytes()
        } else {
            ds.volsize_bytes()
        };
        assert_eq!(size, Some(2 << 30));
        let copy = if protocol == "nfs" || protocol == "smb" {
            std::fs::read(
                h.sim
                    .data_dir()
                    .join("mnt")
                    .join(&restored_ds)
                    .join("data.txt"),
            )
            .unwrap()
        } else {
            std::fs::read(h.sim.data_dir().join("zvol").join(&restored_ds)).unwrap()[..11].to_vec()
        };
        assert_eq!(copy, b"snapshot me");
        let _ = marker;

        // Clone of a volume.
        let mut clone = create_request(&format!("clone-{protocol}"), protocol, GIB);
        clone.volume_content_source = Some(VolumeContentSource {
            r#type: Some(volume_content_source::Type::Volume(
                volume_content_source::VolumeSource {
                    volume_id: vol.volume_id.clone(),
                },
            )),
        });
        let cloned = h
            .controller
            .create_volume(clone)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();

        // Deleting the source while snapshots and clones depend on it: OK, hidden, kept.
        h.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: vol.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let listed = h
            .controller
            .list_volumes(ListVolumesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed
                .entries
                .iter()
                .all(|e| e.volume.as_ref().unwrap().volume_id != vol.volume_id),
            "hidden"
        );
        assert!(
            h.truenas.datasets().get(&dataset).await.unwrap().is_some(),
            "kept for its snapshot"
        );
        assert_eq!(
            h.controller
                .controller_get_volume(ControllerGetVolumeRequest {
                    volume_id: vol.volume_id.clone()
                })
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
        // The snapshot is still listed and usable.
        let by_id = h
            .controller
            .list_snapshots(ListSnapshotsRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_id.entries.len(), 1);
        // Deleting a snapshot that a restored volume depends on succeeds (deferred).
        h.controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        h.controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let by_id = h
            .controller
            .list_snapshots(ListSnapshotsRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            by_id.entries.is_empty(),
            "a deferred snapshot is no longer listed"
        );
        // The dependents go; with the last one, the hidden source goes too.
        for id in [&restored.volume_id, &cloned.volume_id] {
            h.controller
                .delete_volume(DeleteVolumeRequest {
                    volume_id: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        assert_eq!(
            leftovers(&h.truenas).await,
            Vec::<String>::new(),
            "{protocol}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rules_listing_and_pagination() {
    let mut h = harness().await;
    let a = h
        .controller
        .create_volume(create_request("pvc-a", "nfs", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let b = h
        .controller
        .create_volume(create_request("pvc-b", "nfs", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    for i in 0..3 {
        h.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: a.volume_id.clone(),
                name: format!("snap-a{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    h.controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: b.volume_id.clone(),
            name: "snap-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let clash = CreateSnapshotRequest {
        source_volume_id: b.volume_id.clone(),
        name: "snap-a0".into(),
        ..Default::default()
    };
    assert_eq!(
        h.controller
            .create_snapshot(clash)
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    let missing = CreateSnapshotRequest {
        source_volume_id: "nfs:tank/csi/none".into(),
        name: "s".into(),
        ..Default::default()
    };
    assert_eq!(
        h.controller
            .create_snapshot(missing)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        h.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: a.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let of_a = h
        .controller
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: a.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_a.entries.len(), 3);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .controller
            .list_snapshots(ListSnapshotsRequest {
                max_entries: 3,
                starting_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 3);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.snapshot.unwrap().snapshot_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen.len(), 4);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 4, "no snapshot twice across pages");
    let bad = ListSnapshotsRequest {
        starting_token: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        h.controller.list_snapshots(bad).await.unwrap_err().code(),
        Code::Aborted
    );
    let none = h
        .controller
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: "nfs:tank/csi/pvc-a@zzz".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_volumes_paginates_and_get_volume_reports_health() {
    let mut h = harness().await;
    for i in 0..5 {
        h.controller
            .create_volume(create_request(&format!("pvc-{i}"), "nfs", GIB))
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .controller
            .list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        ids.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(
        ids,
        (0..5)
            .map(|i| format!("nfs:tank/csi/pvc-{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        h.controller
            .list_volumes(ListVolumesRequest {
                max_entries: 0,
                starting_token: "99".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::Aborted
    );
    assert_eq!(
        h.controller
            .list_volumes(ListVolumesRequest {
                max_entries: -1,
                starting_token: String::new()
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let get = h
        .controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "nfs:tank/csi/pvc-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!get.status.unwrap().volume_condition.unwrap().abnormal);
    // The share disappears behind our back: abnormal, with the reason.
    for share in h
        .truenas
        .nfs()
        .by_path("/mnt/tank/csi/pvc-1")
        .await
        .unwrap()
    {
        h.truenas.nfs().delete(share.id).await.unwrap();
    }
    let get = h
        .controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "nfs:tank/csi/pvc-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let condition = get.status.unwrap().volume_condition.unwrap();
    assert!(
        condition.abnormal && condition.message.contains("NFS share"),
        "{condition:?}"
    );
    // A CreateVolume retry repairs it.
    h.controller
        .create_volume(create_request("pvc-1", "nfs", GIB))
        .await
        .unwrap();
    assert_eq!(
        h.truenas
            .nfs()
            .by_path("/mnt/tank/csi/pvc-1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        h.controller
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: "nfs:tank/csi/none".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_capacity_and_validate() {
    let mut h = harness().await;
    let nfs = h
        .controller
        .create_volume(create_request("pvc-n", "nfs", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let expand =
        |id: &str, bytes: i64, cap: Option<VolumeCapability>| ControllerExpandVolumeRequest {
            volume_id: id.to_owned(),
            capacity_range: Some(CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            volume_capability: cap,
            ..Default::default()
        };
    let grown = h
        .controller
        .controller_expand_volume(expand(&nfs.volume_id, 3 * GIB, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (grown.capacity_bytes, grown.node_expansion_required),
        (3 * GIB, false)
    );
    assert_eq!(
        h.truenas
            .datasets()
            .get("tank/csi/pvc-n")
            .await
            .unwrap()
            .unwrap()
            .refquota_bytes(),
        Some(3 << 30)
    );
    let nv = h
        .controller
        .create_volume(create_request("pvc-v", "nvmeof", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let grown = h
        .controller
        .controller_expand_volume(expand(
            &nv.volume_id,
            2 * GIB,
            Some(mount(Mode::SingleNodeWriter)),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (grown.capacity_bytes, grown.node_expansion_required),
        (2 * GIB, true)
    );
    let raw = h
        .controller
        .controller_expand_volume(expand(
            &nv.volume_id,
            2 * GIB,
            Some(block(Mode::SingleNodeWriter)),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !raw.node_expansion_required,
        "raw block needs no node expansion"
    );
    let shrink = h
        .controller
        .controller_expand_volume(expand(&nv.volume_id, GIB, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shrink.capacity_bytes, 2 * GIB, "never shrinks");
    assert_eq!(
        h.controller
            .controller_expand_volume(expand("nvmeof:tank/csi/none", GIB, None))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = h
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let nv_listed = listed
        .entries
        .iter()
        .find(|e| e.volume.as_ref().unwrap().volume_id == nv.volume_id)
        .unwrap();
    assert_eq!(nv_listed.volume.as_ref().unwrap().capacity_bytes, 2 * GIB);

    // Capacity: a thick zvol takes its size from what is left.
    let capacity = |params| GetCapacityRequest {
        parameters: params,
        ..Default::default()
    };
    let before = h
        .controller
        .get_capacity(capacity(params("nvmeof", &[])))
        .await
        .unwrap()
        .into_inner()
        .available_capacity;
    let mut thick = create_request("pvc-thick", "nvmeof", 10 * GIB);
    thick.parameters.insert("zfs.sparse".into(), "false".into());
    h.controller.create_volume(thick).await.unwrap();
    let after = h
        .controller
        .get_capacity(capacity(params("nvmeof", &[])))
        .await
        .unwrap()
        .into_inner()
        .available_capacity;
    assert_eq!(before - after, 10 * GIB);
    assert!(before > 90 * GIB);
    let err = h
        .controller
        .get_capacity(capacity(params("nfs", &[("pool", "nopool")])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // ValidateVolumeCapabilities.
    let validate = |id: &str, caps| ValidateVolumeCapabilitiesRequest {
        volume_id: id.to_owned(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let ok = h
        .controller
        .validate_volume_capabilities(validate(
            &nfs.volume_id,
            vec![mount(Mode::MultiNodeMultiWriter)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let no = h
        .controller
        .validate_volume_capabilities(validate(
            &nfs.volume_id,
            vec![block(Mode::SingleNodeWriter)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none() && !no.message.is_empty());
    assert_eq!(
        h.controller
            .validate_volume_capabilities(validate(
                "nfs:tank/csi/none",
                vec![mount(Mode::SingleNodeWriter)]
            ))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        h.controller
            .validate_volume_capabilities(validate(&nfs.volume_id, vec![]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_puts_only_that_node_on_the_allow_list() {
    let mut h = harness().await;
    let publish = |id: &str, node: &str| ControllerPublishVolumeRequest {
        volume_id: id.to_owned(),
        node_id: node.to_owned(),
        volume_capability: Some(mount(Mode::SingleNodeWriter)),
        ..Default::default()
    };
    let unpublish = |id: &str, node: &str| ControllerUnpublishVolumeRequest {
        volume_id: id.to_owned(),
        node_id: node.to_owned(),
        ..Default::default()
    };

    let nv = h
        .controller
        .create_volume(create_request("pvc-nv", "nvmeof", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let subsys = h
        .truenas
        .nvmet()
        .subsystem_by_name("pvc-nv")
        .await
        .unwrap()
        .unwrap();
    assert!(!subsys.allow_any_host, "closed by default");
    let ctx = h
        .controller
        .controller_publish_volume(publish(&nv.volume_id, "node-1"))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(ctx["hostNqn"], "nqn.2014-08.io.tns-csi:node:node-1");
    h.controller
        .controller_publish_volume(publish(&nv.volume_id, "node-1"))
        .await
        .unwrap();
    let hosts = h
        .truenas
        .nvmet()
        .host_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
        .await
        .unwrap();
    assert_eq!(
        hosts
            .iter()
            .map(|l| l.host.hostnqn.as_str())
            .collect::<Vec<_>>(),
        ["nqn.2014-08.io.tns-csi:node:node-1"]
    );
    h.controller
        .controller_unpublish_volume(unpublish(&nv.volume_id, "node-1"))
        .await
        .unwrap();
    h.controller
        .controller_unpublish_volume(unpublish(&nv.volume_id, "node-1"))
        .await
        .unwrap();
    assert!(
        h.truenas
            .nvmet()
            .host_subsystems(&Query::all())
            .await
            .unwrap()
            .is_empty()
    );

    let is = h
        .controller
        .create_volume(create_request("pvc-is", "iscsi", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let group = |h: &Harness| {
        let client = h.truenas.clone();
        async move {
            client
                .iscsi()
                .initiators(&Query::all().filter(Filter::eq("comment", "tns-csi:pvc-is")))
                .await
                .unwrap()
                .remove(0)
                .initiators
        }
    };
    assert_eq!(
        group(&h).await,
        ["iqn.2014-08.io.tns-csi:no-node-published"],
        "no node, no access"
    );
    let ctx = h
        .controller
        .controller_publish_volume(publish(&is.volume_id, "node-2"))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(ctx["initiatorIqn"], "iqn.2014-08.io.tns-csi:node-2");
    assert_eq!(group(&h).await, ["iqn.2014-08.io.tns-csi:node-2"]);
    h.controller
        .controller_unpublish_volume(unpublish(&is.volume_id, "node-2"))
        .await
        .unwrap();
    assert_eq!(
        group(&h).await,
        ["iqn.2014-08.io.tns-csi:no-node-published"]
    );

    // allowAnyHost opens the target and publish changes nothing.
    let mut open = create_request("pvc-open", "nvmeof", GIB);
    open.parameters.insert("allowAnyHost".into(), "true".into());
    let open = h
        .controller
        .create_volume(open)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(
        h.truenas
            .nvmet()
            .subsystem_by_name("pvc-open")
            .await
            .unwrap()
            .unwrap()
            .allow_any_host
    );
    h.controller
        .controller_publish_volume(publish(&open.volume_id, "node-3"))
        .await
        .unwrap();
    assert!(
        h.truenas
            .nvmet()
            .host_subsystems(&Query::all())
            .await
            .unwrap()
            .is_empty()
    );

    let nfs = h
        .controller
        .create_volume(create_request("pvc-f", "nfs", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(
        h.controller
            .controller_publish_volume(publish(&nfs.volume_id, "node-1"))
            .await
            .unwrap()
            .into_inner()
            .publish_context
            .is_empty()
    );
    assert_eq!(
        h.controller
            .controller_publish_volume(publish("nvmeof:tank/csi/none", "n"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        h.controller
            .controller_publish_volume(publish(&nv.volume_id, ""))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    h.controller
        .controller_unpublish_volume(unpublish("nvmeof:tank/csi/none", "n"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_the_data_unexported_and_adoption_brings_it_back() {
    let mut h = harness().await;
    let mut req = create_request("pvc-keep", "nfs", GIB);
    req.parameters
        .insert("deleteStrategy".into(), "retain".into());
    req.parameters.insert("markAdoptable".into(), "true".into());
    let vol = h
        .controller
        .create_volume(req.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    std::fs::write(
        h.sim.data_dir().join("mnt/tank/csi/pvc-keep/important"),
        b"keep me",
    )
    .unwrap();
    h.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        h.truenas
            .nfs()
            .by_path("/mnt/tank/csi/pvc-keep")
            .await
            .unwrap()
            .is_empty(),
        "not exported"
    );
    assert_eq!(
        std::fs::read(h.sim.data_dir().join("mnt/tank/csi/pvc-keep/important")).unwrap(),
        b"keep me"
    );
    assert!(
        h.controller
            .list_volumes(ListVolumesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries
            .is_empty()
    );
    // A new claim with the same PV name adopts it.
    let mut adopt = req.clone();
    adopt.name = "pvc-keep".into();
    adopt
        .parameters
        .insert("adoptExisting".into(), "true".into());
    adopt.parameters.remove("markAdoptable");
    // Different digest-relevant params are not involved: deleteStrategy/markAdoptable/adoptExisting are excluded.
    let back = h
        .controller
        .create_volume(adopt)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(back.volume_id, vol.volume_id);
    assert_eq!(
        h.truenas
            .nfs()
            .by_path("/mnt/tank/csi/pvc-keep")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_run_in_parallel_and_same_name_is_serialised() {
    let h = harness().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut controller = h.controller.clone();
        let protocol = PROTOCOLS[i % 4];
        tasks.push(tokio::spawn(async move {
            controller
                .create_volume(create_request(&format!("par-{i}"), protocol, GIB))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // The same name twice at once: one runs, the other is Aborted or gets the same answer.
    h.sim
        .faults()
        .set_latency(std::time::Duration::from_millis(20));
    let (mut a, mut b) = (h.controller.clone(), h.controller.clone());
    let (ra, rb) = tokio::join!(
        a.create_volume(create_request("same", "nvmeof", GIB)),
        b.create_volume(create_request("same", "nvmeof", GIB)),
    );
    h.sim.faults().set_latency(std::time::Duration::ZERO);
    let codes: Vec<Code> = [&ra, &rb]
        .iter()
        .map(|r| r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok))
        .collect();
    assert!(codes.contains(&Code::Ok), "{codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, Code::Ok | Code::Aborted)),
        "{codes:?}"
    );
    assert_eq!(
        h.truenas
            .nvmet()
            .subsystems(&Query::all().filter(Filter::eq("name", "same")))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_method_and_code() {
    let mut h = harness().await;
    h.controller
        .create_volume(create_request("pvc-m", "nfs", GIB))
        .await
        .unwrap();
    let _ = h
        .controller
        .create_volume(create_request("", "nfs", GIB))
        .await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &h.metrics).unwrap();
    assert!(
        text.contains("operations_total{method=\"CreateVolume\",grpc_code=\"OK\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("operations_total{method=\"CreateVolume\",grpc_code=\"InvalidArgument\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("operation_duration_seconds_count{method=\"CreateVolume\"} 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_exact_never_by_prefix() {
    let mut h = harness().await;
    let ten = h
        .controller
        .create_volume(create_request("app-10", "nfs", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let one = h
        .controller
        .create_volume(create_request("app-1", "nfs", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_ne!(ten.volume_id, one.volume_id);
    h.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: one.volume_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let still = h
        .controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: ten.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !still.status.unwrap().volume_condition.unwrap().abnormal,
        "app-10 untouched by app-1's delete"
    );
    let snap = h
        .controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: ten.volume_id.clone(),
            name: "s-10".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let other = CreateSnapshotRequest {
        source_volume_id: ten.volume_id.clone(),
        name: "s-1".into(),
        ..Default::default()
    };
    let s1 = h
        .controller
        .create_snapshot(other)
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_ne!(snap.snapshot_id, s1.snapshot_id);
}
