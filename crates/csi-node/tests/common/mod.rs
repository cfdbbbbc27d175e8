//! What the node tests on real mounts share: a simulated host in a temp directory that is
//! also the kubelet directory, request builders, and cleanup that runs even when a test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use csi_api::CsiMetrics;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_api::csi::*;
use csi_node::{HostMode, NodeService, NodeSettings, SystemRunner};

/// Cleans up even when a test fails: every mount under the directory, every loop device
/// backed by a file under it.
pub(crate) struct Guard {
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let root = self
            .dir
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.dir.path().to_owned());
        let mut mounted: Vec<PathBuf> = csi_node::mounts::mounts()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&root))
            .collect();
        mounted.reverse();
        for path in mounted {
            let _ = Command::new("umount").arg("-l").arg(&path).status();
        }
        for file in loop_backed(&root) {
            let _ = Command::new("losetup").arg("-d").arg(file).status();
        }
    }
}

/// Loop devices whose backing file is under `root`.
/// Every loop device over a file under `root` is gone. `losetup -d` on a device something
/// still holds open (udev probing it after a change, say) only marks it for autoclear, and the
/// kernel drops it when the last opener closes; so this waits up to 5 s for that.
pub(crate) fn assert_released(root: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = loop_backed(root);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loop devices not released: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub(crate) fn loop_backed(root: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, file) = (parts.next()?, parts.next()?);
            file.starts_with(&*root.to_string_lossy())
                .then(|| name.to_owned())
        })
        .collect()
}

pub(crate) struct Node_ {
    pub(crate) guard: Guard,
    pub(crate) service: NodeService,
    pub(crate) data: PathBuf,
}

pub(crate) fn setup() -> Node_ {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .unwrap();
    assert_eq!(
        uid, "0",
        "these tests mount filesystems and need root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sim");
    std::fs::create_dir_all(data.join("zvol/tank/csi")).unwrap();
    std::fs::create_dir_all(data.join("mnt/tank/csi")).unwrap();
    let mut settings = NodeSettings::new(
        "node-1",
        dir.path().join("state"),
        HostMode::Simulated {
            data_dir: data.clone(),
        },
    );
    settings.kubelet_dir = dir.path().to_owned();
    let service = NodeService::new(settings, Arc::new(SystemRunner), CsiMetrics::default());
    Node_ {
        guard: Guard { dir },
        service,
        data,
    }
}

pub(crate) fn zvol(data: &Path, name: &str, bytes: u64) {
    let file = std::fs::File::create(data.join("zvol/tank/csi").join(name)).unwrap();
    file.set_len(bytes).unwrap();
}

pub(crate) fn context(protocol: &str, name: &str, fs: &str) -> HashMap<String, String> {
    HashMap::from([
        ("protocol".to_owned(), protocol.to_owned()),
        ("dataset".to_owned(), format!("tank/csi/{name}")),
        ("fsType".to_owned(), fs.to_owned()),
    ])
}

pub(crate) fn mount_cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.to_owned(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

pub(crate) fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

pub(crate) fn blkid_uuid(device: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value", device])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn df_bytes(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_blocks * stat.f_frsize
}

pub(crate) fn stage(
    volume: &str,
    protocol: &str,
    staging: &Path,
    cap: VolumeCapability,
    fs: &str,
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: format!("{protocol}:tank/csi/{volume}"),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        volume_context: context(protocol, volume, fs),
        ..Default::default()
    }
}

pub(crate) fn publish(
    volume: &str,
    protocol: &str,
    staging: &Path,
    target: &Path,
    cap: VolumeCapability,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: format!("{protocol}:tank/csi/{volume}"),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}
