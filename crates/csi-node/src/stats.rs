//! NodeGetVolumeStats and NodeExpandVolume: usage from statvfs or the device size; a grown
//! device rescanned through its connector, then the filesystem grown.

use std::path::Path;

use csi_api::csi::*;
use tonic::Status;

use crate::runner::check;
use crate::{FS_TIMEOUT, NodeService, mounts, required};

impl NodeService {
    pub(crate) fn device_size(&self, device: &Path) -> Option<u64> {
        let real = device.canonicalize().ok()?;
        let name = real.file_name()?.to_str()?.to_owned();
        let sectors: u64 = std::fs::read_to_string(
            self.settings
                .sysfs
                .join("class/block")
                .join(name)
                .join("size"),
        )
        .ok()?
        .trim()
        .parse()
        .ok()?;
        Some(sectors * 512)
    }

    pub(crate) async fn stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let path = self.own_path("volume_path", &req.volume_path)?;
        if !path.exists() {
            return Err(Status::not_found(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let staged = self.read_state(&volume_id)?;
        let condition =
            |abnormal: bool, message: String| Some(VolumeCondition { abnormal, message });
        let Some(mount) = mounts::at(&path)? else {
            return Ok(NodeGetVolumeStatsResponse {
                usage: Vec::new(),
                volume_condition: condition(true, format!("{} is not mounted", path.display())),
            });
        };
        // A mount that is not this volume's says nothing about it.
        let ours = match &staged {
            Some(s) => s.owns(&mount)?,
            None => false,
        };
        if !ours {
            return Err(Status::not_found(format!(
                "volume {volume_id} is not mounted at {}: what is mounted there ({}) is not this volume",
                path.display(),
                mount.source
            )));
        }
        if staged.as_ref().is_some_and(|s| s.raw_block) {
            let device = staged.and_then(|s| s.detach.device().cloned());
            let size = device.as_deref().and_then(|d| self.device_size(d));
            return Ok(match size {
                Some(bytes) => NodeGetVolumeStatsResponse {
                    usage: vec![VolumeUsage {
                        available: 0,
                        total: bytes as i64,
                        used: 0,
                        unit: volume_usage::Unit::Bytes as i32,
                    }],
                    volume_condition: condition(false, "attached".into()),
                },
                None => NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: condition(
                        true,
                        format!("block device of {} is gone", mount.source),
                    ),
                },
            });
        }
        let stat = match rustix::fs::statvfs(&path) {
            Ok(stat) => stat,
            Err(err) => {
                return Ok(NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: condition(true, format!("statvfs {}: {err}", path.display())),
                });
            }
        };
        let block = stat.f_frsize;
        let usage = vec![
            VolumeUsage {
                available: (stat.f_bavail * block) as i64,
                total: (stat.f_blocks * block) as i64,
                used: ((stat.f_blocks - stat.f_bfree) * block) as i64,
                unit: volume_usage::Unit::Bytes as i32,
            },
            VolumeUsage {
                available: stat.f_favail as i64,
                total: stat.f_files as i64,
                used: (stat.f_files - stat.f_ffree) as i64,
                unit: volume_usage::Unit::Inodes as i32,
            },
        ];
        Ok(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: condition(false, "mounted".into()),
        })
    }

    pub(crate) async fn expand(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let path = self.own_path("volume_path", &req.volume_path)?;
        let _held = self.locks.try_lock(&volume_id)?;
        let staged = self.read_state(&volume_id)?.ok_or_else(|| {
            Status::not_found(format!("volume {volume_id} is not staged on this node"))
        })?;
        if !path.exists() {
            return Err(Status::not_found(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let ours = match mounts::at(&path)? {
            Some(mount) => staged.owns(&mount)?,
            None => staged.has_path(&path),
        };
        if !ours {
            return Err(Status::not_found(format!(
                "{} is not where volume {volume_id} is staged or published",
                path.display()
            )));
        }
        let Some(device) = staged.detach.device().cloned() else {
            return Ok(NodeExpandVolumeResponse { capacity_bytes: 0 }); // NFS/SMB grow on the server
        };
        let dev = device.display().to_string();
        if let Some(connector) = self.connectors.get(&staged.detach.protocol()) {
            connector.rescan(&staged.detach, FS_TIMEOUT).await?;
        }
        if !staged.raw_block {
            match staged.fs_type.as_deref() {
                Some("xfs") => {
                    check(
                        self.runner.as_ref(),
                        "xfs_growfs",
                        &[staged.staging.display().to_string()],
                        FS_TIMEOUT,
                    )
                    .await?
                }
                _ => {
                    check(
                        self.runner.as_ref(),
                        "resize2fs",
                        std::slice::from_ref(&dev),
                        FS_TIMEOUT,
                    )
                    .await?
                }
            };
        }
        let capacity = self.device_size(&device).unwrap_or(0);
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: capacity as i64,
        })
    }
}
