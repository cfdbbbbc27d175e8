//! NodeStageVolume and NodeUnstageVolume: attach through the protocol's connector, format only
//! a blank device, mount at the staging path; undo exactly what the record says.

use std::path::Path;

use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::*;
use csi_api::{Protocol, context};
use tonic::Status;

use crate::connectors::{AttachRequest, Attached, Detach};
use crate::record::{MountId, Staged};
use crate::runner::check;
use crate::{FS_TIMEOUT, NodeError, NodeService, mounts, required};

impl NodeService {
    pub(crate) async fn stage(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = self.own_path("staging_target_path", &req.staging_target_path)?;
        let capability = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability: required"))?;
        let access = capability
            .access_type
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability.access_type: required"))?;
        let protocol: Protocol = req
            .volume_context
            .get(context::keys::PROTOCOL)
            .map(String::as_str)
            .or_else(|| volume_id.split(':').next())
            .unwrap_or_default()
            .parse()
            .map_err(|err| Status::invalid_argument(format!("volume_context.protocol: {err}")))?;
        let mut context_map = req.volume_context.clone();
        context_map
            .entry(context::keys::PROTOCOL.to_owned())
            .or_insert_with(|| protocol.to_string());
        let raw_block = matches!(access, AccessType::Block(_));
        if raw_block && !protocol.is_block() {
            return Err(Status::invalid_argument(format!(
                "{protocol} volumes cannot be used as raw block devices"
            )));
        }
        let _held = self.locks.try_lock(&volume_id)?;
        if let Some(staged) = self.read_state(&volume_id)? {
            let mounted = if staged.raw_block {
                mounts::at(&staged.staging.join("block"))?
            } else {
                mounts::at(&staged.staging)?
            };
            if staged.staging == staging && mounted.is_some() {
                return Ok(NodeStageVolumeResponse {});
            }
            if staged.staging != staging {
                return Err(NodeError::Conflict(format!(
                    "volume {volume_id} is already staged at {}",
                    staged.staging.display()
                ))
                .into());
            }
            // Recorded but no longer mounted (e.g. after a node reboot): undo and stage again.
            self.undo(&staged).await?;
        } else if let Some(other) = mounts::at(&staging)? {
            return Err(NodeError::Conflict(format!(
                "{} already has {} mounted, and not by tns-csi for volume {volume_id}",
                staging.display(),
                other.source
            ))
            .into());
        }
        std::fs::create_dir_all(&staging)
            .map_err(NodeError::io(format!("creating {}", staging.display())))?;
        let connector = self
            .connectors
            .get(&protocol)
            .cloned()
            .ok_or_else(|| Status::internal(format!("no connector for {protocol}")))?;
        let mount_flags = match access {
            AccessType::Mount(mount) => mount.mount_flags.clone(),
            AccessType::Block(_) => Vec::new(),
        };
        let attach = AttachRequest {
            volume_id: &volume_id,
            context: &context_map,
            publish: &req.publish_context,
            secrets: &req.secrets,
            staging: &staging,
            mount_flags: &mount_flags,
        };
        // Recorded before anything is attached, so a crash in between leaves a record that
        // unstage (or the next stage) can act on, and no mount that is nobody's.
        let mut staged = Staged {
            volume_id: volume_id.clone(),
            staging: staging.clone(),
            detach: Detach::planned(protocol, &context_map),
            raw_block,
            fs_type: None,
            mount: None,
            published: Vec::new(),
        };
        self.write_state(&staged)?;
        let (attached, detach) = match connector.attach(&attach).await {
            Ok(done) => done,
            Err(err) => {
                // The connector leaves no half-made connection; nothing is staged.
                self.remove_state(&volume_id)?;
                return Err(err.into());
            }
        };
        staged.detach = detach;
        self.write_state(&staged)?;
        let finished = match (&attached, access) {
            (Attached::Mounted, _) => Ok(()),
            (Attached::Device(device), AccessType::Block(_)) => {
                self.stage_raw(device, &staging).await
            }
            (Attached::Device(device), AccessType::Mount(mount)) => {
                let wanted = if mount.fs_type.is_empty() {
                    context_map
                        .get(context::keys::FS_TYPE)
                        .cloned()
                        .unwrap_or_else(|| "ext4".into())
                } else {
                    mount.fs_type.clone()
                };
                match self
                    .stage_filesystem(device, &staging, &wanted, &mount.mount_flags)
                    .await
                {
                    Ok(fs) => {
                        staged.fs_type = Some(fs);
                        self.write_state(&staged)
                    }
                    Err(err) => Err(err),
                }
            }
        };
        if let Err(err) = finished {
            tracing::warn!(volume = %volume_id, %err, "staging failed; undoing the attach");
            if let Err(undo) = self.undo(&staged).await {
                tracing::warn!(volume = %volume_id, %undo, "could not undo the attach; unstage will retry");
            }
            return Err(err.into());
        }
        // What is mounted at the staging path now is this volume's, and only that is undone.
        staged.mount = mounts::at(&staged.staged_at())?.map(|m| MountId::of(&m));
        self.write_state(&staged)?;
        Ok(NodeStageVolumeResponse {})
    }

    pub(crate) async fn stage_raw(&self, device: &Path, staging: &Path) -> Result<(), NodeError> {
        let file = staging.join("block");
        if !file.exists() {
            std::fs::File::create(&file)
                .map_err(NodeError::io(format!("creating {}", file.display())))?;
        }
        mounts::bind(
            self.runner.as_ref(),
            self.settings.command_timeout,
            device,
            &file,
            false,
        )
        .await
    }

    /// Formats only a blank device, grows an existing filesystem to the device, mounts it.
    pub(crate) async fn stage_filesystem(
        &self,
        device: &Path,
        staging: &Path,
        wanted: &str,
        flags: &[String],
    ) -> Result<String, NodeError> {
        if wanted != "ext4" && wanted != "xfs" {
            return Err(NodeError::Invalid(format!(
                "fs_type `{wanted}` is not ext4 or xfs"
            )));
        }
        let dev = device.display().to_string();
        let probe = self
            .runner
            .run(
                "blkid",
                &[
                    "-p".into(),
                    "-s".into(),
                    "TYPE".into(),
                    "-o".into(),
                    "value".into(),
                    dev.clone(),
                ],
                FS_TIMEOUT,
            )
            .await?;
        let existing = probe.stdout.trim().to_owned();
        let fs = match probe.status {
            0 if !existing.is_empty() => {
                if existing != wanted {
                    tracing::warn!(device = %dev, existing = %existing, wanted, "the device already holds a different filesystem; mounting it as it is, never reformatting");
                }
                if existing == "ext4" {
                    // Offline grow before mounting: a volume restored or expanded while unstaged.
                    let fsck = self
                        .runner
                        .run(
                            "e2fsck",
                            &["-f".into(), "-y".into(), dev.clone()],
                            FS_TIMEOUT,
                        )
                        .await?;
                    if fsck.status > 1 {
                        return Err(NodeError::Command {
                            command: format!("e2fsck -f -y {dev}"),
                            status: fsck.status,
                            stderr: fsck.stderr.trim().to_owned(),
                        });
                    }
                    check(
                        self.runner.as_ref(),
                        "resize2fs",
                        std::slice::from_ref(&dev),
                        FS_TIMEOUT,
                    )
                    .await?;
                }
                existing
            }
            2 => {
                let mkfs = format!("mkfs.{wanted}");
                let mut argv = vec!["-q".to_owned()];
                if wanted == "ext4" {
                    argv.push("-F".into());
                }
                argv.push(dev.clone());
                check(self.runner.as_ref(), &mkfs, &argv, FS_TIMEOUT).await?;
                wanted.to_owned()
            }
            status => {
                return Err(NodeError::Command {
                    command: format!("blkid -p {dev}"),
                    status,
                    stderr: probe.stderr.trim().to_owned(),
                });
            }
        };
        let mut options = if flags.is_empty() {
            vec!["noatime".to_owned()]
        } else {
            flags.to_vec()
        };
        if fs == "xfs" && !options.iter().any(|o| o == "nouuid") {
            // A clone or restore carries its source's UUID; xfs refuses a second mount of
            // the same UUID on one host without this.
            options.push("nouuid".to_owned());
        }
        mounts::mount(
            self.runner.as_ref(),
            self.settings.command_timeout,
            Some(&fs),
            &dev,
            staging,
            &options,
        )
        .await?;
        if fs == "xfs" {
            check(
                self.runner.as_ref(),
                "xfs_growfs",
                &[staging.display().to_string()],
                FS_TIMEOUT,
            )
            .await?;
        }
        Ok(fs)
    }

    /// Unmounts the staging path (only it) and detaches; removes the record.
    pub(crate) async fn undo(&self, staged: &Staged) -> Result<(), NodeError> {
        let target = staged.staged_at();
        while let Some(top) = mounts::at(&target)? {
            // Only this volume's own mount: something mounted over it is left alone.
            if staged.mount.as_ref().is_some_and(|id| !id.matches(&top)) {
                return Err(NodeError::Conflict(format!(
                    "{} has {} mounted over volume {}'s staging mount; not unmounting what tns-csi did not mount",
                    target.display(),
                    top.source,
                    staged.volume_id
                )));
            }
            mounts::unmount(self.runner.as_ref(), self.settings.command_timeout, &target).await?;
        }
        if staged.raw_block {
            let _ = std::fs::remove_file(&target);
        }
        let shared = self.all_states().iter().any(|other| {
            other.volume_id != staged.volume_id && other.detach.shares_target_with(&staged.detach)
        });
        if let Some(connector) = self.connectors.get(&staged.detach.protocol()) {
            connector.detach(&staged.detach, shared).await?;
        }
        self.remove_state(&staged.volume_id)
    }

    pub(crate) async fn unstage(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = self.own_path("staging_target_path", &req.staging_target_path)?;
        let _held = self.locks.try_lock(&volume_id)?;
        match self.read_state(&volume_id)? {
            Some(staged) => {
                if staged.staging != staging {
                    return Err(NodeError::Conflict(format!(
                        "volume {volume_id} is staged at {}, not {}",
                        staged.staging.display(),
                        staging.display()
                    ))
                    .into());
                }
                self.undo(&staged).await?;
            }
            None => {
                // Nothing recorded: not staged here (idempotent), unless something is mounted
                // there, which tns-csi did not mount and so leaves alone.
                if let Some(other) = mounts::at(&staging)? {
                    return Err(NodeError::NotFound(format!(
                        "volume {volume_id} is not staged at {}; the {} mounted there is not tns-csi's, so it is left alone",
                        staging.display(),
                        other.source
                    ))
                    .into());
                }
            }
        }
        Ok(NodeUnstageVolumeResponse {})
    }
}
