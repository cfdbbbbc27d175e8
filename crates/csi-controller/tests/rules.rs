//! CSI rules for what the controller advertises, each test named after the rule, against the
//! controller on its unix socket and the simulator on the real wire protocol.

mod common;

use common::*;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;
use tonic::Code;
use truenas::query::Query;

fn publish(id: &str, node: &str, cap: VolumeCapability) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: id.to_owned(),
        node_id: node.to_owned(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

fn unpublish(id: &str, node: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: id.to_owned(),
        node_id: node.to_owned(),
        ..Default::default()
    }
}

async fn delete(h: &mut Harness, id: &str) {
    h.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn create(h: &mut Harness, request: CreateVolumeRequest) -> Volume {
    h.controller
        .create_volume(request)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_node_ids_get_distinct_host_identities_and_impossible_ones_are_refused() {
    let mut h = harness().await;
    let nv = create(&mut h, create_request("pvc-nodes", "nvmeof", GIB)).await;
    let is = create(&mut h, create_request("pvc-nodes-i", "iscsi", GIB)).await;
    let mut nqns = std::collections::BTreeSet::new();
    let mut iqns = std::collections::BTreeSet::new();
    for node in ["evil node", "evil-node-", "evil_node-"] {
        let ctx = h
            .controller
            .controller_publish_volume(publish(&nv.volume_id, node, mount(Mode::SingleNodeWriter)))
            .await
            .unwrap()
            .into_inner()
            .publish_context;
        nqns.insert(ctx["hostNqn"].clone());
        let ctx = h
            .controller
            .controller_publish_volume(publish(&is.volume_id, node, mount(Mode::SingleNodeWriter)))
            .await
            .unwrap()
            .into_inner()
            .publish_context;
        iqns.insert(ctx["initiatorIqn"].clone());
    }
    assert_eq!(nqns.len(), 3, "{nqns:?}");
    assert_eq!(iqns.len(), 3, "{iqns:?}");
    for bad in ["evil node\n", &"n".repeat(257)] {
        let err = h
            .controller
            .controller_publish_volume(publish(&nv.volume_id, bad, mount(Mode::SingleNodeWriter)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("node_id"), "{}", err.message());
    }
    for node in ["evil node", "evil-node-", "evil_node-"] {
        h.controller
            .controller_unpublish_volume(unpublish(&nv.volume_id, node))
            .await
            .unwrap();
        h.controller
            .controller_unpublish_volume(unpublish(&is.volume_id, node))
            .await
            .unwrap();
    }
    delete(&mut h, &nv.volume_id).await;
    delete(&mut h, &is.volume_id).await;
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_capacity_answers_without_parameters() {
    let mut h = harness().await;
    let all = h
        .controller
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    let tank = h
        .controller
        .get_capacity(GetCapacityRequest {
            parameters: params("nfs", &[]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all.available_capacity > 90 * GIB, "{all:?}");
    assert!(all.available_capacity >= tank.available_capacity);
    assert_eq!(
        all.maximum_volume_size,
        Some(all.available_capacity),
        "one pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_volume_larger_than_its_pool_is_resource_exhausted() {
    let mut h = harness().await;
    for protocol in ["nfs", "smb"] {
        let err = h
            .controller
            .create_volume(create_request("pvc-huge", protocol, 1 << 60))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{protocol}: {err:?}");
        assert!(err.message().contains("does not fit"), "{}", err.message());
    }
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_template_over_the_limit_is_invalid_argument_naming_it() {
    let mut h = harness().await;
    let mut request = create_request("pvc-comment", "nfs", GIB);
    request
        .parameters
        .insert("commentTemplate".into(), "x".repeat(70_000));
    let err = h.controller.create_volume(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("commentTemplate"),
        "{}",
        err.message()
    );
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_name_the_csi_spec_allows_maps_to_valid_truenas_names_for_every_protocol() {
    let mut h = harness().await;
    // 128 characters with ones TrueNAS refuses in names (`+`, space, `é`, `/`).
    let odd = format!("pvc+Odd é/{}", "x".repeat(128 - 10));
    assert_eq!(odd.chars().count(), 128);
    for protocol in PROTOCOLS {
        let mut ids = Vec::new();
        for name in [odd.clone(), format!("{protocol}-{}", "l".repeat(120))] {
            let mut request = create_request(&name, protocol, GIB);
            if protocol == "nfs" || protocol == "smb" {
                request.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter)];
            }
            let volume = create(&mut h, request.clone()).await;
            // Deterministic: the same request finds the same volume.
            assert_eq!(create(&mut h, request).await.volume_id, volume.volume_id);
            let dataset = volume.volume_id.split_once(':').unwrap().1.to_owned();
            assert!(dataset.len() <= 255, "{dataset}");
            let got = h
                .controller
                .controller_get_volume(ControllerGetVolumeRequest {
                    volume_id: volume.volume_id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            let status = got.status.unwrap();
            let condition = status.volume_condition.unwrap();
            assert!(
                !condition.abnormal,
                "{protocol} {name}: {}",
                condition.message
            );
            ids.push(volume.volume_id);
        }
        assert_ne!(ids[0], ids[1]);
        for id in ids {
            delete(&mut h, &id).await;
        }
    }
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_record_goes_with_its_last_volume() {
    let mut h = harness().await;
    let a = create(&mut h, create_request("pvc-host-a", "nvmeof", GIB)).await;
    let b = create(&mut h, create_request("pvc-host-b", "nvmeof", GIB)).await;
    for volume in [&a, &b] {
        h.controller
            .controller_publish_volume(publish(
                &volume.volume_id,
                "node-1",
                mount(Mode::SingleNodeWriter),
            ))
            .await
            .unwrap();
    }
    let hosts = |h: &Harness| {
        let client = h.truenas.clone();
        async move {
            client
                .nvmet()
                .hosts(&Query::all())
                .await
                .unwrap()
                .into_iter()
                .map(|host| host.hostnqn)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(hosts(&h).await, ["nqn.2014-08.io.tns-csi:node:node-1"]);
    h.controller
        .controller_unpublish_volume(unpublish(&a.volume_id, "node-1"))
        .await
        .unwrap();
    assert_eq!(hosts(&h).await.len(), 1, "volume b still allows node-1");
    h.controller
        .controller_unpublish_volume(unpublish(&b.volume_id, "node-1"))
        .await
        .unwrap();
    assert_eq!(
        hosts(&h).await,
        Vec::<String>::new(),
        "the last one took it"
    );
    // Deleting a volume that is still published takes the host as well.
    h.controller
        .controller_publish_volume(publish(
            &a.volume_id,
            "node-2",
            mount(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap();
    delete(&mut h, &a.volume_id).await;
    delete(&mut h, &b.volume_id).await;
    assert_eq!(hosts(&h).await, Vec::<String>::new());
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volumes_metric_counts_live_volumes_by_protocol() {
    let mut h = harness().await;
    let mut ids = Vec::new();
    for (name, protocol) in [("pvc-m1", "nfs"), ("pvc-m2", "iscsi"), ("pvc-m3", "iscsi")] {
        ids.push(
            create(&mut h, create_request(name, protocol, GIB))
                .await
                .volume_id,
        );
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = csi_api::CsiMetrics::register(&mut registry);
    let service = csi_controller::ControllerService::new(
        std::sync::Arc::new(csi_controller::Systems::single(
            h.truenas.clone(),
            "127.0.0.1".into(),
        )),
        csi_controller::ControllerSettings {
            nodes: std::sync::Arc::new(csi_controller::StaticNodes::new(NODES)),
            locks: Default::default(),
        },
        metrics,
    );
    let scrape = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    };
    service.count_volumes().await.unwrap();
    let text = scrape(&registry);
    for line in [
        r#"volumes{protocol="nfs"} 1"#,
        r#"volumes{protocol="iscsi"} 2"#,
        r#"volumes{protocol="smb"} 0"#,
        r#"volumes{protocol="nvmeof"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    delete(&mut h, &ids[1]).await;
    service.count_volumes().await.unwrap();
    assert!(scrape(&registry).contains(r#"volumes{protocol="iscsi"} 1"#));
    for id in [&ids[0], &ids[2]] {
        delete(&mut h, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_capabilities_include_get_snapshot_publish_readonly_and_modify_volume() {
    use csi_api::csi::controller_service_capability::rpc::Type;
    let mut h = harness().await;
    let capabilities: Vec<i32> = h
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| {
            c.r#type
                .map(|controller_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    for wanted in [Type::GetSnapshot, Type::PublishReadonly, Type::ModifyVolume] {
        assert!(
            capabilities.contains(&(wanted as i32)),
            "{wanted:?} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_snapshot_answers_for_ours_and_not_found_otherwise() {
    let mut h = harness().await;
    let volume = create(&mut h, create_request("pvc-gs", "nfs", GIB)).await;
    let snapshot = h
        .controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "snap-gs".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let got = h
        .controller
        .get_snapshot(GetSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(got.snapshot_id, snapshot.snapshot_id);
    assert_eq!(got.source_volume_id, volume.volume_id);
    assert!(got.ready_to_use);
    for missing in [format!("{}x", snapshot.snapshot_id), "garbage".to_owned()] {
        let err = h
            .controller
            .get_snapshot(GetSnapshotRequest {
                snapshot_id: missing,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    h.controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id,
            ..Default::default()
        })
        .await
        .unwrap();
    delete(&mut h, &volume.volume_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_volume_changes_what_truenas_can_change_in_place_and_refuses_the_rest() {
    let mut h = harness().await;
    let mut request = create_request("pvc-vac", "nfs", GIB);
    request.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter)];
    request
        .mutable_parameters
        .insert("zfs.compression".into(), "zstd".into());
    let nfs = create(&mut h, request).await;
    let dataset = nfs.volume_id.split_once(':').unwrap().1.to_owned();
    let compression = |h: &Harness| {
        let (client, dataset) = (h.truenas.clone(), dataset.clone());
        async move {
            client
                .datasets()
                .get(&dataset)
                .await
                .unwrap()
                .unwrap()
                .compression
                .and_then(|p| p.value)
                .unwrap_or_default()
        }
    };
    assert_eq!(compression(&h).await, "ZSTD", "applied at creation");
    let modify = |id: &str, pairs: &[(&str, &str)]| ControllerModifyVolumeRequest {
        volume_id: id.to_owned(),
        mutable_parameters: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    for _ in 0..2 {
        h.controller
            .controller_modify_volume(modify(
                &nfs.volume_id,
                &[("zfs.compression", "lz4"), ("nfs.hosts", "10.0.0.7")],
            ))
            .await
            .unwrap();
    }
    assert_eq!(compression(&h).await, "LZ4");
    let share = h
        .truenas
        .nfs()
        .by_path(&format!("/mnt/{dataset}"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(share.hosts, ["10.0.0.7"]);
    let nv = create(&mut h, create_request("pvc-vac-b", "nvmeof", GIB)).await;
    for (id, pairs, named) in [
        (&nfs.volume_id, vec![("protocol", "smb")], "`protocol`"),
        (
            &nfs.volume_id,
            vec![("zfs.volblocksize", "64K")],
            "`zfs.volblocksize`",
        ),
        (
            &nfs.volume_id,
            vec![("zfs.compression", "brotli")],
            "`zfs.compression`",
        ),
        (
            &nv.volume_id,
            vec![("nfs.hosts", "10.0.0.7")],
            "`nfs.hosts`",
        ),
    ] {
        let err = h
            .controller
            .controller_modify_volume(modify(id, &pairs))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{pairs:?}: {err:?}");
        assert!(err.message().contains(named), "{}", err.message());
    }
    let err = h
        .controller
        .controller_modify_volume(modify("nfs:tank/csi/none", &[("zfs.compression", "lz4")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // An immutable key in a CreateVolume's mutable parameters: refused before anything exists.
    let mut bad = create_request("pvc-vac-c", "nfs", GIB);
    bad.mutable_parameters.insert("pool".into(), "other".into());
    let err = h.controller.create_volume(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    delete(&mut h, &nfs.volume_id).await;
    delete(&mut h, &nv.volume_id).await;
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_node_the_cluster_does_not_have_is_not_found_and_writes_nothing() {
    let mut h = harness().await;
    for protocol in PROTOCOLS {
        let volume = create(
            &mut h,
            create_request(&format!("pvc-ghost-{protocol}"), protocol, GIB),
        )
        .await;
        let err = h
            .controller
            .controller_publish_volume(publish(
                &volume.volume_id,
                "node-ghost",
                mount(Mode::SingleNodeWriter),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{protocol}: {err:?}");
        assert!(err.message().contains("node-ghost"), "{}", err.message());
        delete(&mut h, &volume.volume_id).await;
    }
    let hosts = h.truenas.nvmet().hosts(&Query::all()).await.unwrap();
    assert!(hosts.is_empty(), "an access entry was written: {hosts:?}");
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_nodes_are_listed_and_an_unpublish_without_a_node_covers_them_all() {
    let mut h = harness().await;
    let nv = create(&mut h, create_request("pvc-pub", "nvmeof", GIB)).await;
    for node in ["node-2", "node-1", "node-1"] {
        h.controller
            .controller_publish_volume(publish(
                &nv.volume_id,
                node,
                block(Mode::MultiNodeMultiWriter),
            ))
            .await
            .unwrap();
    }
    let published = |h: &mut Harness| {
        let mut controller = h.controller.clone();
        let id = nv.volume_id.clone();
        async move {
            let got = controller
                .controller_get_volume(ControllerGetVolumeRequest {
                    volume_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap()
                .published_node_ids;
            let listed = controller
                .list_volumes(ListVolumesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .entries
                .into_iter()
                .find(|e| e.volume.as_ref().unwrap().volume_id == id)
                .unwrap()
                .status
                .unwrap()
                .published_node_ids;
            assert_eq!(got, listed);
            got
        }
    };
    assert_eq!(published(&mut h).await, ["node-1", "node-2"]);
    h.controller
        .controller_unpublish_volume(unpublish(&nv.volume_id, "node-2"))
        .await
        .unwrap();
    assert_eq!(published(&mut h).await, ["node-1"]);
    h.controller
        .controller_publish_volume(publish(
            &nv.volume_id,
            "node-3",
            block(Mode::MultiNodeMultiWriter),
        ))
        .await
        .unwrap();
    h.controller
        .controller_unpublish_volume(unpublish(&nv.volume_id, ""))
        .await
        .unwrap();
    assert_eq!(published(&mut h).await, Vec::<String>::new());
    let subsys = h
        .truenas
        .nvmet()
        .subsystem_by_name("pvc-pub")
        .await
        .unwrap()
        .unwrap();
    let allowed = h
        .truenas
        .nvmet()
        .host_subsystems(&Query::all().filter(truenas::query::Filter::eq("subsys.id", subsys.id)))
        .await
        .unwrap();
    assert!(allowed.is_empty(), "still allowed: {allowed:?}");
    delete(&mut h, &nv.volume_id).await;
    assert_eq!(leftovers(&h.truenas).await, Vec::<String>::new());
}
