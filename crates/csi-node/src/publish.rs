//! NodePublishVolume and NodeUnpublishVolume: bind mounts from the staging path to the pod's
//! target path (read-only when asked; raw block binds the device node onto a file).

use std::path::Path;

use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;
use tonic::Status;

use crate::record::{Published, Staged};
use crate::{NodeError, NodeService, mounts, required};

impl NodeService {
    pub(crate) async fn publish(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = self.own_path("target_path", &req.target_path)?;
        let staging = self.own_path("staging_target_path", &req.staging_target_path)?;
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
        let mode = capability.access_mode.as_ref().map(|m| m.mode);
        let single_writer = mode == Some(Mode::SingleNodeSingleWriter as i32);
        // Reader-only access modes are mounted read-only even when `readonly` is not set.
        let read_only = req.readonly
            || mode == Some(Mode::SingleNodeReaderOnly as i32)
            || mode == Some(Mode::MultiNodeReaderOnly as i32);
        let _held = self.locks.try_lock(&volume_id)?;
        let mut staged = self
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
                self.record_published(&mut staged, &target, single_writer)?;
                return Ok(NodePublishVolumeResponse {});
            }
            return Err(NodeError::Conflict(format!(
                "{} already has {} mounted",
                target.display(),
                existing.source
            ))
            .into());
        }
        // SINGLE_NODE_SINGLE_WRITER: one target path on the node, whichever side asks.
        if let Some(other) = staged
            .published
            .iter()
            .find(|p| p.target != target && (single_writer || p.single_writer))
        {
            return Err(Status::failed_precondition(format!(
                "volume {volume_id} is single-writer (SINGLE_NODE_SINGLE_WRITER) and already published at {}",
                other.target.display()
            )));
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
            read_only,
        )
        .await?;
        self.record_published(&mut staged, &target, single_writer)?;
        Ok(NodePublishVolumeResponse {})
    }

    /// Adds `target` to the volume's record of where it is published.
    fn record_published(
        &self,
        staged: &mut Staged,
        target: &Path,
        single_writer: bool,
    ) -> Result<(), NodeError> {
        if !staged.published.iter().any(|p| p.target == target) {
            staged.published.push(Published {
                target: target.to_owned(),
                single_writer,
            });
            self.write_state(staged)?;
        }
        Ok(())
    }

    pub(crate) async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = self.own_path("target_path", &req.target_path)?;
        let _held = self.locks.try_lock(&volume_id)?;
        let mut staged = self.read_state(&volume_id)?;
        let recorded = staged.as_ref().is_some_and(|s| s.has_path(&target));
        let mut unmounted = false;
        while let Some(top) = mounts::at(&target)? {
            // Only a bind of this volume's own staging mount is unmounted; anything else at
            // the path (another volume, a mount tns-csi never made) is left alone.
            let ours = match &staged {
                Some(s) if s.staging != target => s.owns(&top)?,
                _ => false,
            };
            if !ours {
                return Err(NodeError::NotFound(format!(
                    "volume {volume_id} is not published at {}: the {} mounted there is not this volume's, so it is left alone",
                    target.display(),
                    top.source
                ))
                .into());
            }
            mounts::unmount(self.runner.as_ref(), self.settings.command_timeout, &target).await?;
            unmounted = true;
        }
        // The file or directory publish made goes too; a path never ours is not touched.
        if unmounted || recorded {
            match std::fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir(&target)
                    .map_err(NodeError::io(format!("removing {}", target.display())))?,
                Ok(_) => std::fs::remove_file(&target)
                    .map_err(NodeError::io(format!("removing {}", target.display())))?,
                Err(_) => {}
            }
        }
        if let Some(staged) = staged.as_mut()
            && staged.published.iter().any(|p| p.target == target)
        {
            staged.published.retain(|p| p.target != target);
            self.write_state(staged)?;
        }
        Ok(NodeUnpublishVolumeResponse {})
    }
}
