//! End to end across controller, node and simulator: `tns-csi --mode all --host simulated`
//! drives every protocol's whole volume life through CSI gRPC on a unix socket, with real
//! bind mounts, loop devices and filesystems (needs root, as CI runs).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;

mod common;

use common::{mount_cap, mounted, start_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_lives_a_whole_life_through_controller_node_and_simulator() {
    let (world, sim, mut controller, mut node) = start_all().await;
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-1");
    let root = world.dir.path().to_owned();

    for (protocol, fs) in [
        ("nfs", ""),
        ("smb", ""),
        ("nvmeof", "xfs"),
        ("iscsi", "ext4"),
    ] {
        let mut parameters = HashMap::from([
            ("protocol".to_owned(), protocol.to_owned()),
            ("pool".to_owned(), "tank".to_owned()),
        ]);
        if !fs.is_empty() {
            parameters.insert("fsType".into(), fs.into());
        }
        let mode = if fs.is_empty() {
            Mode::MultiNodeMultiWriter
        } else {
            Mode::SingleNodeWriter
        };
        let create = |name: &str, source: Option<VolumeContentSource>| CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_cap(mode)],
            parameters: parameters.clone(),
            volume_content_source: source,
            ..Default::default()
        };
        let secrets = HashMap::from([
            ("username".to_owned(), "k8s".to_owned()),
            ("password".to_owned(), "pw".to_owned()),
        ]);

        // One volume through its whole life; `source` makes it a restore.
        let (attach_controller, attach_node) = (controller.clone(), node.clone());
        let attach = async |volume: &csi_api::csi::Volume,
                            tag: &str|
               -> (PathBuf, PathBuf, HashMap<String, String>) {
            let (mut controller, mut node) = (attach_controller.clone(), attach_node.clone());
            let publish_context = controller
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: volume.volume_id.clone(),
                    node_id: "node-1".into(),
                    volume_capability: Some(mount_cap(mode)),
                    volume_context: volume.volume_context.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .publish_context;
            let staging = root.join(format!("staging/{protocol}-{tag}"));
            let target = root.join(format!("pods/{protocol}-{tag}/mount"));
            node.node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(mount_cap(mode)),
                secrets: secrets.clone(),
                volume_context: volume.volume_context.clone(),
            })
            .await
            .unwrap();
            node.node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(mount_cap(mode)),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            assert!(mounted(&target), "{protocol}-{tag} published");
            (staging, target, publish_context)
        };

        let volume = controller
            .create_volume(create(&format!("e2e-{protocol}"), None))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let (staging, target, _) = attach(&volume, "a").await;
        let payload = format!("written through {protocol}");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(target.join("data.txt")).unwrap();
            file.write_all(payload.as_bytes()).unwrap();
            file.sync_all().unwrap();
        }
        let _ = Command::new("sync").status();

        let snapshot = controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: volume.volume_id.clone(),
                name: format!("snap-{protocol}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        let source = VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: snapshot.snapshot_id.clone(),
                },
            )),
        };
        let clone = controller
            .create_volume(create(&format!("e2e-{protocol}-clone"), Some(source)))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let (clone_staging, clone_target, _) = attach(&clone, "b").await;
        assert_eq!(
            std::fs::read_to_string(clone_target.join("data.txt")).unwrap(),
            payload,
            "{protocol}: the clone shows the snapshot's data"
        );

        // Expand the original: the controller grows it, the node grows the filesystem.
        let expanded = controller
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: volume.volume_id.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 2 << 30,
                    limit_bytes: 0,
                }),
                volume_capability: Some(mount_cap(mode)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(expanded.capacity_bytes, 2 << 30);
        if expanded.node_expansion_required && fs == "xfs" {
            let grown = node
                .node_expand_volume(NodeExpandVolumeRequest {
                    volume_id: volume.volume_id.clone(),
                    volume_path: target.display().to_string(),
                    staging_target_path: staging.display().to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(grown.capacity_bytes, 2 << 30);
            let stats = node
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: volume.volume_id.clone(),
                    volume_path: target.display().to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                stats.usage[0].total > 3 << 29,
                "{protocol}: the filesystem grew ({} bytes)",
                stats.usage[0].total
            );
        }

        // Tear everything down in the CO's order; nothing stays mounted or attached.
        for (vol, staging, target) in [
            (&clone, &clone_staging, &clone_target),
            (&volume, &staging, &target),
        ] {
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: vol.volume_id.clone(),
                target_path: target.display().to_string(),
            })
            .await
            .unwrap();
            node.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: vol.volume_id.clone(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .unwrap();
            assert!(!mounted(target) && !mounted(staging));
            controller
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: vol.volume_id.clone(),
                    node_id: "node-1".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snapshot.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: clone.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let left: Vec<String> = sim
            .dataset_names()
            .into_iter()
            .filter(|n| n.matches('/').count() > 1)
            .collect();
        assert!(left.is_empty(), "{protocol}: left {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_rpcs_follow_the_csi_rules_against_the_binary() {
    use tonic::Code;
    let (world, _sim, mut controller, mut node) = start_all().await;
    let root = world.dir.path().to_owned();
    let caps = node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        caps.capabilities.len() >= 4,
        "stage, stats, expand, condition"
    );
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-1");
    assert!(info.accessible_topology.is_some());

    let volume = controller
        .create_volume(CreateVolumeRequest {
            name: "rules".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
            parameters: HashMap::from([
                ("protocol".into(), "nvmeof".into()),
                ("pool".into(), "tank".into()),
                ("fsType".into(), "ext4".into()),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let publish = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: "node-1".into(),
            volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    let staging = root.join("staging");
    let target = root.join("target");
    let stage = NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        publish_context: publish.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    let publish_req = NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        publish_context: publish,
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    // Publish before stage fails; missing fields are InvalidArgument.
    assert_eq!(
        node.node_publish_volume(publish_req.clone())
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    for broken in [
        NodeStageVolumeRequest {
            volume_id: String::new(),
            ..stage.clone()
        },
        NodeStageVolumeRequest {
            staging_target_path: String::new(),
            ..stage.clone()
        },
        NodeStageVolumeRequest {
            volume_capability: None,
            ..stage.clone()
        },
    ] {
        assert_eq!(
            node.node_stage_volume(broken).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    // Idempotent stage and publish.
    node.node_stage_volume(stage.clone()).await.unwrap();
    node.node_stage_volume(stage.clone()).await.unwrap();
    node.node_publish_volume(publish_req.clone()).await.unwrap();
    node.node_publish_volume(publish_req.clone()).await.unwrap();
    assert!(mounted(&target));
    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        stats
            .usage
            .iter()
            .any(|u| u.unit == volume_usage::Unit::Inodes as i32)
    );
    let missing = NodeGetVolumeStatsRequest {
        volume_id: volume.volume_id.clone(),
        volume_path: root.join("nope").display().to_string(),
        ..Default::default()
    };
    assert_eq!(
        node.node_get_volume_stats(missing)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Idempotent unpublish and unstage; nothing left mounted.
    for _ in 0..2 {
        node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
    }
    for _ in 0..2 {
        node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .unwrap();
    }
    assert!(!mounted(&target) && !mounted(&staging));
    assert_eq!(
        node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: String::new(),
            target_path: target.display().to_string()
        })
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
}
