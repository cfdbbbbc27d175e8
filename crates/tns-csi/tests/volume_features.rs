//! Detached clones, detached snapshots and encrypted volumes through the CSI socket of the
//! real binary against the simulator, with real bind mounts (needs root, as CI runs): a
//! detached clone outlives its origin, a detached snapshot outlives its volume and restores,
//! and an encrypted volume comes back locked after a simulated NAS reboot and is unlocked by
//! the controller-publish secret, never writing the secret to the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::node_client::NodeClient;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;
use tonic::transport::Channel;

mod common;

use common::{mount_cap, mounted, start_with};

const PASSPHRASE: &str = "a passphrase only the Secret knows";

struct Clients {
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    root: PathBuf,
}

fn cap() -> VolumeCapability {
    mount_cap(Mode::MultiNodeMultiWriter)
}

impl Clients {
    async fn create(
        &mut self,
        name: &str,
        parameters: &[(&str, &str)],
        source: Option<volume_content_source::Type>,
        secrets: HashMap<String, String>,
    ) -> Result<Volume, tonic::Status> {
        let mut params: HashMap<String, String> = HashMap::from([
            ("protocol".to_owned(), "nfs".to_owned()),
            ("pool".to_owned(), "tank".to_owned()),
        ]);
        for (k, v) in parameters {
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        self.controller
            .create_volume(CreateVolumeRequest {
                name: name.to_owned(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 1 << 30,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap()],
                parameters: params,
                volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
                secrets,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().volume.unwrap())
    }

    /// ControllerPublish (with `secrets`), NodeStage, NodePublish; the published path.
    async fn attach(
        &mut self,
        volume: &Volume,
        tag: &str,
        secrets: HashMap<String, String>,
    ) -> Result<(PathBuf, PathBuf), tonic::Status> {
        let publish_context = self
            .controller
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                node_id: "node-1".into(),
                volume_capability: Some(cap()),
                volume_context: volume.volume_context.clone(),
                secrets,
                ..Default::default()
            })
            .await?
            .into_inner()
            .publish_context;
        let staging = self.root.join(format!("staging/{tag}"));
        let target = self.root.join(format!("pods/{tag}/mount"));
        self.node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await?;
        self.node
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context,
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(cap()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await?;
        assert!(mounted(&target), "{tag} published");
        Ok((staging, target))
    }

    async fn detach(&mut self, volume: &Volume, staging: &Path, target: &Path) {
        self.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                target_path: target.display().to_string(),
            })
            .await
            .unwrap();
        self.node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .unwrap();
        self.controller
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                node_id: "node-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn write(
        &mut self,
        volume: &Volume,
        tag: &str,
        text: &str,
        secrets: HashMap<String, String>,
    ) {
        let (staging, target) = self.attach(volume, tag, secrets).await.unwrap();
        std::fs::write(target.join("data.txt"), text).unwrap();
        let _ = std::process::Command::new("sync").status();
        self.detach(volume, &staging, &target).await;
    }

    async fn read(
        &mut self,
        volume: &Volume,
        tag: &str,
        secrets: HashMap<String, String>,
    ) -> String {
        let (staging, target) = self.attach(volume, tag, secrets).await.unwrap();
        let text = std::fs::read_to_string(target.join("data.txt")).unwrap();
        self.detach(volume, &staging, &target).await;
        text
    }

    async fn snapshot(
        &mut self,
        volume: &Volume,
        name: &str,
        parameters: &[(&str, &str)],
    ) -> Snapshot {
        self.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: volume.volume_id.clone(),
                name: name.to_owned(),
                parameters: parameters
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap()
    }

    async fn delete_volume(&mut self, volume: &Volume) {
        self.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn delete_snapshot(&mut self, snapshot: &Snapshot) {
        self.controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snapshot.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn dataset_of(volume: &Volume) -> String {
    volume.volume_id.split_once(':').unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_clones_and_snapshots_outlive_their_origins() {
    let (world, sim, _, controller, node) = start_with(false, None).await;
    let mut c = Clients {
        controller,
        node,
        root: world.dir.path().to_owned(),
    };
    let origin = c.create("origin", &[], None, HashMap::new()).await.unwrap();
    c.write(&origin, "origin", "bytes of the origin", HashMap::new())
        .await;
    let snap = c.snapshot(&origin, "snap-1", &[]).await;

    // Detached clones of the snapshot and of the volume itself.
    let from_snapshot = c
        .create(
            "from-snapshot",
            &[("detached", "true")],
            Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: snap.snapshot_id.clone(),
                },
            )),
            HashMap::new(),
        )
        .await
        .unwrap();
    let from_volume = c
        .create(
            "from-volume",
            &[("detached", "true")],
            Some(volume_content_source::Type::Volume(
                volume_content_source::VolumeSource {
                    volume_id: origin.volume_id.clone(),
                },
            )),
            HashMap::new(),
        )
        .await
        .unwrap();
    // The origin and its snapshot go at once: nothing depends on them.
    c.delete_snapshot(&snap).await;
    c.delete_volume(&origin).await;
    let names = sim.dataset_names();
    assert!(!names.contains(&dataset_of(&origin)), "{names:?}");
    for clone in [&from_snapshot, &from_volume] {
        assert_eq!(
            c.read(clone, &dataset_of(clone).replace('/', "-"), HashMap::new())
                .await,
            "bytes of the origin"
        );
    }

    // A detached snapshot outlives its volume and restores.
    let class = [
        ("detachedSnapshots", "true"),
        ("detachedSnapshotsParentDataset", "tank/k8s-snapshots"),
    ];
    let detached = c.snapshot(&from_snapshot, "snap-detached", &class).await;
    assert_eq!(detached.source_volume_id, from_snapshot.volume_id);
    // A retry returns the same snapshot.
    let again = c.snapshot(&from_snapshot, "snap-detached", &class).await;
    assert_eq!(again.snapshot_id, detached.snapshot_id);
    c.delete_volume(&from_snapshot).await;
    assert!(
        !sim.dataset_names().contains(&dataset_of(&from_snapshot)),
        "the volume was deleted at once"
    );
    let listed = c
        .controller
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: detached.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1, "found by id");
    let by_source = c
        .controller
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: from_snapshot.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_source.entries.len(), 1, "found by its source volume");
    // The copy is not a volume anyone sees.
    let volumes = c
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        volumes.entries.iter().all(|e| !e
            .volume
            .as_ref()
            .unwrap()
            .volume_id
            .contains("k8s-snapshots")),
        "{volumes:?}"
    );
    let restored = c
        .create(
            "restored",
            &[],
            Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: detached.snapshot_id.clone(),
                },
            )),
            HashMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        c.read(&restored, "restored", HashMap::new()).await,
        "bytes of the origin"
    );
    // Delete in any order: nothing is left behind.
    c.delete_snapshot(&detached).await;
    c.delete_volume(&restored).await;
    c.delete_volume(&from_volume).await;
    let left: Vec<String> = sim
        .dataset_names()
        .into_iter()
        .filter(|n| n.matches('/').count() > 1)
        .collect();
    assert!(left.is_empty(), "left {left:?}");
    // Bad classes are refused by name.
    let err = c
        .controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: from_volume.volume_id.clone(),
            name: "x".into(),
            parameters: HashMap::from([("detachedSnapshots".into(), "true".into())]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("detachedSnapshotsParentDataset"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_volume_is_unlocked_after_a_nas_reboot_by_the_publish_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("driver.log");
    let (world, sim, config, controller, node) = start_with(true, Some(&log)).await;
    let mut c = Clients {
        controller,
        node,
        root: world.dir.path().to_owned(),
    };
    let secret = HashMap::from([("encryptionPassphrase".to_owned(), PASSPHRASE.to_owned())]);
    let encrypted = [
        ("encryption", "true"),
        ("encryptionAlgorithm", "AES-256-GCM"),
    ];
    // Without a key source the request is refused, naming what to set.
    let err = c
        .create("no-key", &encrypted, None, HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("encryptionGenerateKey"), "{err:?}");
    let short = HashMap::from([("encryptionPassphrase".to_owned(), "short".to_owned())]);
    let err = c
        .create("short", &encrypted, None, short)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("at least 8") && !err.message().contains("short\""),
        "{err:?}"
    );

    let volume = c
        .create("secret-data", &encrypted, None, secret.clone())
        .await
        .unwrap();
    c.write(&volume, "enc", "encrypted bytes", secret.clone())
        .await;
    // A generated key is kept by TrueNAS: that volume is never locked.
    let generated = c
        .create(
            "generated",
            &[("encryption", "true"), ("encryptionGenerateKey", "true")],
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    c.write(&generated, "gen", "generated-key bytes", HashMap::new())
        .await;

    // The NAS reboots.
    sim.stop().await;
    let sim = truenas_sim::Simulator::start(config.clone()).await.unwrap();

    // Locked: no secret, or a wrong one, is FAILED_PRECONDITION naming the dataset.
    let dataset = dataset_of(&volume);
    let err = c
        .attach(&volume, "enc-2", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&dataset) && err.message().contains("locked"),
        "{err:?}"
    );
    let wrong = HashMap::from([(
        "encryptionPassphrase".to_owned(),
        "not the right passphrase".to_owned(),
    )]);
    let err = c.attach(&volume, "enc-2", wrong).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("Invalid Key"), "{err:?}");
    // The right secret unlocks it and the bytes are there.
    assert_eq!(
        c.read(&volume, "enc-3", secret.clone()).await,
        "encrypted bytes"
    );
    assert_eq!(
        c.read(&generated, "gen-2", HashMap::new()).await,
        "generated-key bytes"
    );
    c.delete_volume(&volume).await;
    c.delete_volume(&generated).await;
    drop(sim);
    drop(world);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("TRACE") || text.contains("\"level\":\"TRACE\""),
        "the log is at TRACE"
    );
    for secret in [PASSPHRASE, "not the right passphrase"] {
        assert!(
            !text.contains(secret),
            "a passphrase reached the driver's log"
        );
    }
}
