//! The demo's CSI walkthrough: one NVMe-oF volume through its whole life against
//! `tns-csi --mode all --host simulated` and the TrueNAS simulator, each step printed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::node_client::NodeClient;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_api::csi::*;
use tonic::transport::Channel;

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_owned();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:1")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(channel)
}

fn step(text: &str) {
    println!("    - {text}");
}

fn df(path: &Path) -> String {
    std::process::Command::new("df")
        .args(["-h", "--output=size"])
        .arg(path)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("?")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

/// Runs the walkthrough; `node` says whether the node steps can run (they mount: root only).
pub(crate) async fn run(socket: &Path, work: &Path, node: bool) -> anyhow::Result<()> {
    let channel = connect(socket)
        .await
        .context("connecting to the CSI socket")?;
    let mut controller = ControllerClient::new(channel.clone());
    let mut node_client = NodeClient::new(channel);
    let parameters = HashMap::from([
        ("protocol".to_owned(), "nvmeof".to_owned()),
        ("pool".to_owned(), "tank".to_owned()),
        ("fsType".to_owned(), "xfs".to_owned()),
    ]);
    let create = |name: &str, source: Option<VolumeContentSource>| CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability()],
        parameters: parameters.clone(),
        volume_content_source: source,
        ..Default::default()
    };
    let volume = controller
        .create_volume(create("demo-volume", None))
        .await?
        .into_inner()
        .volume
        .context("no volume")?;
    step(&format!(
        "CreateVolume demo-volume → {} (1 GiB zvol, NVMe-oF subsystem {})",
        volume.volume_id,
        volume.volume_context.get("nqn").map_or("?", String::as_str)
    ));
    let publish = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: "demo-node".into(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .publish_context;
    step(&format!(
        "ControllerPublishVolume → only {} may connect",
        publish.get("hostNqn").map_or("?", String::as_str)
    ));
    let staging: PathBuf = work.join("staging/demo-volume");
    let target: PathBuf = work.join("pods/demo/volume");
    if node {
        node_client
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context: publish.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await?;
        step(&format!(
            "NodeStageVolume → zvol attached as a loop device, formatted xfs, mounted at {}",
            staging.display()
        ));
        node_client
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context: publish.clone(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await?;
        step(&format!(
            "NodePublishVolume → bind-mounted at {}",
            target.display()
        ));
        std::fs::write(target.join("hello.txt"), "hello from the demo volume\n")?;
        let _ = std::process::Command::new("sync").status();
        step("wrote hello.txt into the volume");
    }
    let snapshot = controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "demo-snapshot".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .snapshot
        .context("no snapshot")?;
    step(&format!("CreateSnapshot → {}", snapshot.snapshot_id));
    let source = VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    };
    let clone = controller
        .create_volume(create("demo-clone", Some(source)))
        .await?
        .into_inner()
        .volume
        .context("no clone")?;
    step(&format!(
        "CreateVolume demo-clone from the snapshot → {}",
        clone.volume_id
    ));
    let clone_staging = work.join("staging/demo-clone");
    if node {
        node_client
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: clone.volume_id.clone(),
                staging_target_path: clone_staging.display().to_string(),
                volume_capability: Some(capability()),
                volume_context: clone.volume_context.clone(),
                ..Default::default()
            })
            .await?;
        let text = std::fs::read_to_string(clone_staging.join("hello.txt"))?;
        step(&format!(
            "read hello.txt back from the clone: {:?}",
            text.trim()
        ));
    }
    let expanded = controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 << 30,
                limit_bytes: 0,
            }),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await?
        .into_inner();
    step(&format!(
        "ControllerExpandVolume → {} bytes",
        expanded.capacity_bytes
    ));
    if node {
        let before = df(&target);
        node_client
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: volume.volume_id.clone(),
                volume_path: target.display().to_string(),
                staging_target_path: staging.display().to_string(),
                ..Default::default()
            })
            .await?;
        step(&format!(
            "NodeExpandVolume → xfs grown online: df {before} → {}",
            df(&target)
        ));
        node_client
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                target_path: target.display().to_string(),
            })
            .await?;
        for (id, path) in [
            (&volume.volume_id, &staging),
            (&clone.volume_id, &clone_staging),
        ] {
            node_client
                .node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: id.clone(),
                    staging_target_path: path.display().to_string(),
                })
                .await?;
        }
        step("NodeUnpublishVolume + NodeUnstageVolume → unmounted, loop devices released");
    }
    controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: "demo-node".into(),
            ..Default::default()
        })
        .await?;
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await?;
    step(
        "DeleteVolume demo-volume → hidden until its snapshot is gone (CSI snapshots outlive volumes)",
    );
    controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await?;
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: clone.volume_id.clone(),
            ..Default::default()
        })
        .await?;
    step("DeleteSnapshot + DeleteVolume demo-clone → everything destroyed on the simulator");
    Ok(())
}
