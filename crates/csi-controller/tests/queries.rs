//! TrueNAS returns only the ZFS properties a query lists in `extra.properties` (25.10,
//! `dataset_query_utils`), and the simulator does the same: so every read of the driver must
//! be asked for, and a read that was not asked for shows up here as a wrong answer.

mod common;

use common::*;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;
use serde_json::json;
use truenas::query::{Filter, Query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_returns_only_the_properties_a_query_lists() {
    let h = harness().await;
    let datasets = h.truenas.datasets();
    let by_id = || Query::all().filter(Filter::eq("id", "tank"));
    let all = datasets.query(&by_id()).await.unwrap().remove(0);
    assert!(all.available.is_some() && all.mountpoint.is_some() && all.used.is_some());
    let none = datasets
        .query(&by_id().extra("properties", json!([])))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(none.id, "tank", "the entry's own fields stay");
    assert!(
        none.available.is_none() && none.mountpoint.is_none() && none.used.is_none(),
        "an empty list means no properties: {none:?}"
    );
    let some = datasets
        .query(&by_id().extra("properties", json!(["available", "dedup"])))
        .await
        .unwrap()
        .remove(0);
    assert!(some.available.is_some() && some.used.is_none() && some.recordsize.is_none());
    let raw = h
        .truenas
        .call(
            truenas::Method::read("pool.dataset.query"),
            vec![
                json!([["id", "=", "tank"]]),
                json!({"extra": {"properties": ["dedup"]}}),
            ],
        )
        .await
        .unwrap();
    assert!(
        raw[0].get("deduplication").is_some(),
        "ZFS names select API keys: {raw}"
    );
    let refused = h
        .truenas
        .call(
            truenas::Method::read("pool.dataset.query"),
            vec![json!([]), json!({"extra": {"properties": "available"}})],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("extra.properties"), "{refused}");

    // Snapshots: only the listed native and user properties.
    h.truenas
        .snapshots()
        .create(&truenas::api::NewSnapshot {
            dataset: "tank".into(),
            name: "s".into(),
            properties: [("tns-csi:mark".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let snapshot = h
        .truenas
        .snapshots()
        .query(
            &Query::all()
                .filter(Filter::eq("id", "tank@s"))
                .extra("properties", json!(["tns-csi:mark"])),
        )
        .await
        .unwrap()
        .remove(0);
    let keys: Vec<&String> = snapshot.properties.keys().collect();
    assert_eq!(keys, ["tns-csi:mark"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_property_the_driver_reads_is_one_it_asked_for() {
    let mut h = harness().await;
    let mut request = create_request("blocky", "nvmeof", GIB);
    request
        .parameters
        .insert("zfs.volblocksize".into(), "64K".into());
    let volume = h
        .controller
        .create_volume(request.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    // Expansion rounds to the zvol's block size, read back from TrueNAS: 64 KiB, not the
    // 16 KiB default a missing `volblocksize` would give.
    let grown = h
        .controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: GIB + 1,
                limit_bytes: 0,
            }),
            volume_capability: Some(mount(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, GIB + 65536);
    // Listing reads the size back: it must be the grown one.
    let listed = h
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let entry = listed.entries[0].volume.as_ref().unwrap();
    assert_eq!(entry.capacity_bytes, GIB + 65536);
    assert_eq!(entry.volume_context, volume.volume_context);
    // Capacity reads `available` of the parent and of the pool.
    for parameters in [params("nfs", &[]), HashMap::new()] {
        let capacity = h
            .controller
            .get_capacity(GetCapacityRequest {
                parameters,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(capacity.available_capacity > 0, "{capacity:?}");
    }
    // A retried create reads the dataset and its parent's free space again.
    let again = h
        .controller
        .create_volume(request)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, volume.volume_id);
}

use std::collections::HashMap;
