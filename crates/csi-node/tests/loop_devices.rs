//! The node service on real loop devices, filesystems and bind mounts (simulated host: the
//! loop device stands in for an NVMe-oF/iSCSI namespace). Needs root, as CI runs.

use std::process::Command;

use csi_api::csi::node_server::Node;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_api::csi::*;
use tonic::{Code, Request};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_filesystems_stage_publish_survive_restage_and_grow() {
    let n = setup();
    let root = n.guard.dir.path().to_owned();
    for (fs, protocol) in [("xfs", "nvmeof"), ("ext4", "iscsi")] {
        let volume = format!("vol-{fs}");
        zvol(&n.data, &volume, 400 << 20);
        let staging = root.join(format!("staging-{fs}"));
        let target = root.join(format!("pods/{fs}/mount"));
        let id = format!("{protocol}:tank/csi/{volume}");
        n.service
            .node_stage_volume(Request::new(stage(
                &volume,
                protocol,
                &staging,
                mount_cap(fs),
                fs,
            )))
            .await
            .unwrap();
        let mounted = csi_node::mounts::at(&staging).unwrap().expect("staged");
        assert_eq!(mounted.fs_type, fs);
        assert!(mounted.source.starts_with("/dev/loop"), "{mounted:?}");
        let uuid = blkid_uuid(&mounted.source);
        assert!(!uuid.is_empty());
        // Staging twice is fine.
        n.service
            .node_stage_volume(Request::new(stage(
                &volume,
                protocol,
                &staging,
                mount_cap(fs),
                fs,
            )))
            .await
            .unwrap();

        n.service
            .node_publish_volume(Request::new(publish(
                &volume,
                protocol,
                &staging,
                &target,
                mount_cap(fs),
                false,
            )))
            .await
            .unwrap();
        n.service
            .node_publish_volume(Request::new(publish(
                &volume,
                protocol,
                &staging,
                &target,
                mount_cap(fs),
                false,
            )))
            .await
            .unwrap();
        std::fs::write(target.join("data.txt"), b"survives").unwrap();

        // Stats: bytes and inodes of the mounted filesystem.
        let stats = n
            .service
            .node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
                volume_id: id.clone(),
                volume_path: target.display().to_string(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.usage.len(), 2);
        let total = stats.usage[0].total as u64;
        assert!(total > 300 << 20 && total <= 400 << 20, "{total}");
        assert!(!stats.volume_condition.unwrap().abnormal);

        // Grow the "zvol": xfs grows online; ext4 cannot here (no CAP_SYS_RESOURCE), so it
        // grows offline at the next stage.
        std::fs::OpenOptions::new()
            .write(true)
            .open(n.data.join("zvol/tank/csi").join(&volume))
            .unwrap()
            .set_len(800 << 20)
            .unwrap();
        if fs == "xfs" {
            let grown = n
                .service
                .node_expand_volume(Request::new(NodeExpandVolumeRequest {
                    volume_id: id.clone(),
                    volume_path: target.display().to_string(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(grown.capacity_bytes, 800 << 20);
            assert!(
                df_bytes(&target) > 700 << 20,
                "xfs grew online: {}",
                df_bytes(&target)
            );
        }

        n.service
            .node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.display().to_string(),
            }))
            .await
            .unwrap();
        n.service
            .node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.display().to_string(),
            }))
            .await
            .unwrap();
        assert!(!target.exists());
        n.service
            .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
            }))
            .await
            .unwrap();
        n.service
            .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
            }))
            .await
            .unwrap();
        assert!(csi_node::mounts::at(&staging).unwrap().is_none());
        assert_released(&root);

        // Restage: same filesystem (no reformat), data still there, ext4 now grown.
        n.service
            .node_stage_volume(Request::new(stage(
                &volume,
                protocol,
                &staging,
                mount_cap(fs),
                fs,
            )))
            .await
            .unwrap();
        let again = csi_node::mounts::at(&staging).unwrap().unwrap();
        assert_eq!(blkid_uuid(&again.source), uuid, "never reformatted");
        assert_eq!(
            std::fs::read(staging.join("data.txt")).unwrap(),
            b"survives"
        );
        assert!(
            df_bytes(&staging) > 700 << 20,
            "{fs} grown to the device: {}",
            df_bytes(&staging)
        );
        n.service
            .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
            }))
            .await
            .unwrap();
    }
    assert_released(&root);
    assert!(
        csi_node::mounts::mounts()
            .unwrap()
            .iter()
            .all(|m| !m.mount_point.starts_with(root.canonicalize().unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_block_publish_exposes_the_device_and_read_only_is_enforced() {
    let n = setup();
    let root = n.guard.dir.path().to_owned();
    zvol(&n.data, "raw", 64 << 20);
    let staging = root.join("staging-raw");
    let target = root.join("pods/raw/dev");
    let id = "nvmeof:tank/csi/raw";
    n.service
        .node_stage_volume(Request::new(stage(
            "raw",
            "nvmeof",
            &staging,
            block_cap(),
            "ext4",
        )))
        .await
        .unwrap();
    n.service
        .node_publish_volume(Request::new(publish(
            "raw",
            "nvmeof",
            &staging,
            &target,
            block_cap(),
            false,
        )))
        .await
        .unwrap();
    // Writing through the published device reaches the zvol file.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap();
        dev.seek(SeekFrom::Start(1 << 20)).unwrap();
        dev.write_all(b"raw block").unwrap();
        dev.sync_all().unwrap();
    }
    let stats = n
        .service
        .node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: target.display().to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage[0].total, 64 << 20);
    // A blank device is not formatted for raw block use.
    let blank = Command::new("blkid")
        .args(["-p"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(blank.status.code(), Some(2), "raw block left unformatted");
    n.service
        .node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.display().to_string(),
        }))
        .await
        .unwrap();
    n.service
        .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
        }))
        .await
        .unwrap();
    let bytes = std::fs::read(n.data.join("zvol/tank/csi/raw")).unwrap();
    assert_eq!(&bytes[1 << 20..(1 << 20) + 9], b"raw block");
    assert_released(&root);

    // A filesystem share (simulated NFS) published read-only refuses writes.
    std::fs::create_dir_all(n.data.join("mnt/tank/csi/share")).unwrap();
    std::fs::write(n.data.join("mnt/tank/csi/share/hello"), b"hi").unwrap();
    let fs_staging = root.join("staging-nfs");
    let fs_target = root.join("pods/nfs/mount");
    let nfs_cap = VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeReaderOnly as i32,
        }),
    };
    n.service
        .node_stage_volume(Request::new(stage(
            "share",
            "nfs",
            &fs_staging,
            nfs_cap.clone(),
            "",
        )))
        .await
        .unwrap();
    n.service
        .node_publish_volume(Request::new(publish(
            "share",
            "nfs",
            &fs_staging,
            &fs_target,
            nfs_cap.clone(),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(std::fs::read(fs_target.join("hello")).unwrap(), b"hi");
    let err = std::fs::write(fs_target.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    assert!(
        csi_node::mounts::at(&fs_target)
            .unwrap()
            .unwrap()
            .read_only()
    );
    n.service
        .node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
            volume_id: "nfs:tank/csi/share".into(),
            target_path: fs_target.display().to_string(),
        }))
        .await
        .unwrap();
    n.service
        .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
            volume_id: "nfs:tank/csi/share".into(),
            staging_target_path: fs_staging.display().to_string(),
        }))
        .await
        .unwrap();
    assert!(csi_node::mounts::at(&fs_staging).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_mounts_existing_filesystems_and_bad_requests() {
    let n = setup();
    let root = n.guard.dir.path().to_owned();
    // A device that already holds a filesystem is mounted as it is, never reformatted.
    zvol(&n.data, "used", 300 << 20);
    let file = n.data.join("zvol/tank/csi/used");
    assert!(
        Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    let before = Command::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value"])
        .arg(&file)
        .output()
        .unwrap()
        .stdout;
    let staging = root.join("staging-used");
    n.service
        .node_stage_volume(Request::new(stage(
            "used",
            "iscsi",
            &staging,
            mount_cap("xfs"),
            "xfs",
        )))
        .await
        .unwrap();
    let mounted = csi_node::mounts::at(&staging).unwrap().unwrap();
    assert_eq!(
        mounted.fs_type, "ext4",
        "the existing ext4 is kept even though xfs was asked for"
    );
    n.service
        .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
            volume_id: "iscsi:tank/csi/used".into(),
            staging_target_path: staging.display().to_string(),
        }))
        .await
        .unwrap();
    let after = Command::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value"])
        .arg(&file)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(before, after);

    // Something else mounted at the staging path: a clear error, and it is left alone.
    let foreign = root.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let busy = root.join("staging-busy");
    std::fs::create_dir_all(&busy).unwrap();
    assert!(
        Command::new("mount")
            .arg("--bind")
            .arg(&foreign)
            .arg(&busy)
            .status()
            .unwrap()
            .success()
    );
    zvol(&n.data, "other", 300 << 20);
    let err = n
        .service
        .node_stage_volume(Request::new(stage(
            "other",
            "nvmeof",
            &busy,
            mount_cap("ext4"),
            "ext4",
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("already has"), "{}", err.message());
    assert!(
        csi_node::mounts::at(&busy).unwrap().is_some(),
        "the foreign mount is untouched"
    );
    assert_released(&root);
    let _ = Command::new("umount").arg(&busy).status();

    // Publish before stage, missing fields, block access on NFS.
    let err = n
        .service
        .node_publish_volume(Request::new(publish(
            "other",
            "nvmeof",
            &root.join("nowhere"),
            &root.join("t"),
            mount_cap("ext4"),
            false,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut missing = stage(
        "other",
        "nvmeof",
        &root.join("s"),
        mount_cap("ext4"),
        "ext4",
    );
    missing.staging_target_path.clear();
    assert_eq!(
        n.service
            .node_stage_volume(Request::new(missing))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let err = n
        .service
        .node_stage_volume(Request::new(stage(
            "share",
            "nfs",
            &root.join("s"),
            block_cap(),
            "",
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Stats of a path that is not mounted: abnormal, not an error.
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let stats = n
        .service
        .node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
            volume_id: "nfs:tank/csi/x".into(),
            volume_path: root.join("empty").display().to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(stats.volume_condition.unwrap().abnormal);
    let info = n
        .service
        .node_get_info(Request::new(NodeGetInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-1");
}
