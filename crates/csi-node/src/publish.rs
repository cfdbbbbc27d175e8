//! NodePublishVolume and NodeUnpublishVolume: bind mounts from the staging path to the pod's
//! target path (read-only when asked; raw block binds the device node onto a file).

use std::path::PathBuf;

use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::*;
use tonic::Status;

use crate::{NodeError, NodeService, mounts, required};

impl NodeService {
    pub(crate) async fn publish(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = PathBuf::from(required(&req.target_path, "target_path")?);
        let staging = PathBuf::from(required(&req.staging_target_path, "staging_target_path")?);
        let capability = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability: required"))?;
        let raw_block = match capability.access_type {
            Some(AccessType::Block(_)) => true,
            Some(AccessType::Mount(_)) => false,
            None => {
                return Err(Status::invalid_argument(
                    "volume_capability.access_type: required",
                ));
            }
        };
        let _held = self.locks.try_lock(&volume_id)?;
        let staged = self
            .read_state(&volume_id)?
            .filter(|s| s.staging == staging)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "volume {volume_id} is not staged at {}",
                    staging.display()
                ))
            })?;
        if staged.raw_block != raw_block {
            return Err(Status::invalid_argument(
                "volume_capability: the access type differs from the one the volume was staged with",
            ));
        }
        let source = if raw_block {
            staging.join("block")
        } else {
            staging.clone()
        };
        let source_mount = mounts::at(&source)?.ok_or_else(|| {
            Status::failed_precondition(format!(
                "{} is not mounted; stage the volume again",
                source.display()
            ))
        })?;
        if let Some(existing) = mounts::at(&target)? {
            if existing.same_source(&source_mount) {
                return Ok(NodePublishVolumeResponse {});
            }
            return Err(NodeError::Conflict(format!(
                "{} already has {} mounted",
                target.display(),
                existing.source
            ))
            .into());
        }
        if raw_block {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(NodeError::io(format!("creating {}", parent.display())))?;
            }
            if !target.exists() {
                std::fs::File::create(&target)
                    .map_err(NodeError::io(format!("creating {}", target.display())))?;
            }
        } else {
            std::fs::create_dir_all(&target)
                .map_err(NodeError::io(format!("creating {}", target.display())))?;
        }
        mounts::bind(
            self.runner.as_ref(),
            self.settings.command_timeout,
            &source,
            &target,
            req.readonly,
        )
        .await?;
        Ok(NodePublishVolumeResponse {})
    }

    pub(crate) async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = PathBuf::from(required(&req.target_path, "target_path")?);
        let _held = self.locks.try_lock(&volume_id)?;
        while mounts::at(&target)?.is_some() {
            mounts::unmount(self.runner.as_ref(), self.settings.command_timeout, &target).await?;
        }
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(&target)
                .map_err(NodeError::io(format!("removing {}", target.display())))?,
            Ok(_) => std::fs::remove_file(&target)
                .map_err(NodeError::io(format!("removing {}", target.display())))?,
            Err(_) => {}
        }
        Ok(NodeUnpublishVolumeResponse {})
    }
}
