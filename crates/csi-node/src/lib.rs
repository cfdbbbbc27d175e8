//! The CSI Node service of tns-csi: stage (attach + format + mount), publish (bind mount),
//! expand, stats. It holds no TrueNAS credentials: everything it needs arrives in the volume
//! and publish contexts. Host work goes through [`Runner`] and one [`Connector`] per protocol;
//! the simulated host swaps the connectors for bind mounts and loop devices.

mod connectors;
mod error;
pub mod mounts;
mod runner;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_api::csi::node_server::Node;
use csi_api::csi::node_service_capability::{Rpc, rpc};
use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::*;
use csi_api::{CsiMetrics, Protocol, context};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

pub use connectors::{
    AttachRequest, Attached, Connector, Detach, IscsiConnector, NfsConnector, NvmeConnector,
    SimulatedConnector, SmbConnector,
};
pub use error::NodeError;
pub use runner::{Output, RecordingRunner, Runner, Scripted, SystemRunner, check};

const FS_TIMEOUT: Duration = Duration::from_secs(600);

/// Where volumes really come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMode {
    /// Real NFS/SMB mounts, nvme-cli and iscsiadm.
    Real,
    /// The simulator's files: bind mounts and loop devices (`--host simulated --sim-data-dir`).
    Simulated {
        /// The simulator's data directory.
        data_dir: PathBuf,
    },
}

/// What the node service needs.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This node's id (the Kubernetes node name).
    pub node_id: String,
    /// Volumes the CO may put on this node (0: no limit).
    pub max_volumes: i64,
    /// Node-local directory recording what each staged volume attached (to undo it).
    pub state_dir: PathBuf,
    /// Real or simulated host.
    pub host: HostMode,
    /// `/sys`.
    pub sysfs: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// How long to wait for a device after connecting.
    pub device_wait: Duration,
    /// Limit for each host command (connect, login, mount).
    pub command_timeout: Duration,
}

impl NodeSettings {
    /// Defaults for a real node.
    pub fn new(node_id: impl Into<String>, state_dir: impl Into<PathBuf>, host: HostMode) -> Self {
        Self {
            node_id: node_id.into(),
            max_volumes: 0,
            state_dir: state_dir.into(),
            host,
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            device_wait: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
        }
    }
}

/// What the node remembers about a staged volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Staged {
    volume_id: String,
    staging: PathBuf,
    detach: Detach,
    raw_block: bool,
    fs_type: Option<String>,
}

/// The Node service.
#[derive(Clone)]
pub struct NodeService {
    settings: Arc<NodeSettings>,
    runner: Arc<dyn Runner>,
    connectors: Arc<HashMap<Protocol, Arc<dyn Connector>>>,
    busy: Arc<Mutex<HashSet<String>>>,
    metrics: CsiMetrics,
}

struct Held {
    busy: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field}: required")))
    } else {
        Ok(value)
    }
}

impl NodeService {
    /// A node service; `runner` runs host commands (use [`SystemRunner`]).
    pub fn new(settings: NodeSettings, runner: Arc<dyn Runner>, metrics: CsiMetrics) -> Self {
        let mut connectors: HashMap<Protocol, Arc<dyn Connector>> = HashMap::new();
        match &settings.host {
            HostMode::Simulated { data_dir } => {
                let simulated: Arc<dyn Connector> = Arc::new(SimulatedConnector {
                    runner: runner.clone(),
                    data_dir: data_dir.clone(),
                    timeout: settings.command_timeout,
                });
                for protocol in [
                    Protocol::Nfs,
                    Protocol::Smb,
                    Protocol::Nvmeof,
                    Protocol::Iscsi,
                ] {
                    connectors.insert(protocol, simulated.clone());
                }
            }
            HostMode::Real => {
                connectors.insert(
                    Protocol::Nfs,
                    Arc::new(NfsConnector {
                        runner: runner.clone(),
                        timeout: settings.command_timeout,
                    }),
                );
                connectors.insert(
                    Protocol::Smb,
                    Arc::new(SmbConnector {
                        runner: runner.clone(),
                        private_dir: settings.state_dir.join("private"),
                        timeout: settings.command_timeout,
                    }),
                );
                connectors.insert(
                    Protocol::Nvmeof,
                    Arc::new(NvmeConnector {
                        runner: runner.clone(),
                        sysfs: settings.sysfs.clone(),
                        dev: settings.dev.clone(),
                        device_wait: settings.device_wait,
                        timeout: settings.command_timeout,
                    }),
                );
                connectors.insert(
                    Protocol::Iscsi,
                    Arc::new(IscsiConnector {
                        runner: runner.clone(),
                        dev: settings.dev.clone(),
                        device_wait: settings.device_wait,
                        timeout: settings.command_timeout,
                    }),
                );
            }
        }
        Self {
            settings: Arc::new(settings),
            runner,
            connectors: Arc::new(connectors),
            busy: Arc::default(),
            metrics,
        }
    }

    fn lock(&self, volume_id: &str) -> Result<Held, Status> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(volume_id.to_owned()) {
            return Err(Status::aborted(format!(
                "an operation on volume {volume_id} is already in progress"
            )));
        }
        Ok(Held {
            busy: self.busy.clone(),
            key: volume_id.to_owned(),
        })
    }

    fn state_file(&self, volume_id: &str) -> PathBuf {
        let name: String = volume_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.settings
            .state_dir
            .join("staged")
            .join(format!("{name}.json"))
    }

    fn read_state(&self, volume_id: &str) -> Result<Option<Staged>, NodeError> {
        match std::fs::read(self.state_file(volume_id)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(NodeError::io("reading the node state")(err)),
        }
    }

    fn write_state(&self, staged: &Staged) -> Result<(), NodeError> {
        let path = self.state_file(&staged.volume_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(NodeError::io("creating the node state directory"))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(staged).unwrap_or_default())
            .map_err(NodeError::io("writing the node state"))?;
        std::fs::rename(tmp, path).map_err(NodeError::io("writing the node state"))
    }

    fn all_states(&self) -> Vec<Staged> {
        std::fs::read_dir(self.settings.state_dir.join("staged"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = PathBuf::from(required(&req.staging_target_path, "staging_target_path")?);
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
            .get(context::PROTOCOL)
            .map(String::as_str)
            .or_else(|| volume_id.split(':').next())
            .unwrap_or_default()
            .parse()
            .map_err(|err| Status::invalid_argument(format!("volume_context.protocol: {err}")))?;
        let raw_block = matches!(access, AccessType::Block(_));
        if raw_block && !protocol.is_block() {
            return Err(Status::invalid_argument(format!(
                "{protocol} volumes cannot be used as raw block devices"
            )));
        }
        let _held = self.lock(&volume_id)?;
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
            context: &req.volume_context,
            publish: &req.publish_context,
            secrets: &req.secrets,
            staging: &staging,
            mount_flags: &mount_flags,
        };
        let (attached, detach) = connector.attach(&attach).await?;
        let mut staged = Staged {
            volume_id: volume_id.clone(),
            staging: staging.clone(),
            detach,
            raw_block,
            fs_type: None,
        };
        self.write_state(&staged)?;
        let finished = match (&attached, access) {
            (Attached::Mounted, _) => Ok(()),
            (Attached::Device(device), AccessType::Block(_)) => {
                self.stage_raw(device, &staging).await
            }
            (Attached::Device(device), AccessType::Mount(mount)) => {
                let wanted = if mount.fs_type.is_empty() {
                    req.volume_context
                        .get(context::FS_TYPE)
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
        Ok(NodeStageVolumeResponse {})
    }

    async fn stage_raw(&self, device: &Path, staging: &Path) -> Result<(), NodeError> {
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
    async fn stage_filesystem(
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
    async fn undo(&self, staged: &Staged) -> Result<(), NodeError> {
        let target = if staged.raw_block {
            staged.staging.join("block")
        } else {
            staged.staging.clone()
        };
        while mounts::at(&target)?.is_some() {
            mounts::unmount(self.runner.as_ref(), self.settings.command_timeout, &target).await?;
        }
        if staged.raw_block {
            let _ = std::fs::remove_file(&target);
        }
        let shared = self.all_states().iter().any(|other| {
            other.volume_id != staged.volume_id
                && ((other.detach.nqn.is_some() && other.detach.nqn == staged.detach.nqn)
                    || (other.detach.iqn.is_some() && other.detach.iqn == staged.detach.iqn))
        });
        let protocol: Protocol = staged
            .detach
            .protocol
            .parse()
            .map_err(|err| NodeError::Invalid(format!("{err}")))?;
        if let Some(connector) = self.connectors.get(&protocol) {
            connector.detach(&staged.detach, shared).await?;
        }
        match std::fs::remove_file(self.state_file(&staged.volume_id)) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(NodeError::io("removing the node state")(err)),
        }
    }

    async fn unstage(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = PathBuf::from(required(&req.staging_target_path, "staging_target_path")?);
        let _held = self.lock(&volume_id)?;
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
                // Nothing recorded: at most a leftover mount at exactly the staging path.
                while mounts::at(&staging)?.is_some() {
                    mounts::unmount(
                        self.runner.as_ref(),
                        self.settings.command_timeout,
                        &staging,
                    )
                    .await?;
                }
            }
        }
        Ok(NodeUnstageVolumeResponse {})
    }

    async fn publish(
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
        let _held = self.lock(&volume_id)?;
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

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = PathBuf::from(required(&req.target_path, "target_path")?);
        let _held = self.lock(&volume_id)?;
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

    fn device_size(&self, device: &Path) -> Option<u64> {
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

    async fn stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let path = PathBuf::from(required(&req.volume_path, "volume_path")?);
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
        if staged.as_ref().is_some_and(|s| s.raw_block) {
            let device = staged.and_then(|s| s.detach.device);
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

    async fn expand(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, Status> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let path = PathBuf::from(required(&req.volume_path, "volume_path")?);
        let _held = self.lock(&volume_id)?;
        let staged = self.read_state(&volume_id)?.ok_or_else(|| {
            Status::not_found(format!("volume {volume_id} is not staged on this node"))
        })?;
        if !path.exists() {
            return Err(Status::not_found(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let Some(device) = staged.detach.device.clone() else {
            return Ok(NodeExpandVolumeResponse { capacity_bytes: 0 }); // NFS/SMB grow on the server
        };
        let dev = device.display().to_string();
        match staged.detach.protocol.as_str() {
            "iscsi" if self.settings.host == HostMode::Real => {
                if let (Some(iqn), Some(portal)) = (&staged.detach.iqn, &staged.detach.portal) {
                    check(
                        self.runner.as_ref(),
                        "iscsiadm",
                        &[
                            "-m".into(),
                            "node".into(),
                            "-T".into(),
                            iqn.clone(),
                            "-p".into(),
                            portal.clone(),
                            "-R".into(),
                        ],
                        FS_TIMEOUT,
                    )
                    .await?;
                }
            }
            "nvmeof" if self.settings.host == HostMode::Real => {
                check(
                    self.runner.as_ref(),
                    "nvme",
                    &["ns-rescan".into(), dev.clone()],
                    FS_TIMEOUT,
                )
                .await?;
            }
            _ if matches!(self.settings.host, HostMode::Simulated { .. }) => {
                check(
                    self.runner.as_ref(),
                    "losetup",
                    &["-c".into(), dev.clone()],
                    FS_TIMEOUT,
                )
                .await?;
            }
            _ => {}
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

fn node_capability(kind: rpc::Type) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(Rpc {
            r#type: kind as i32,
        })),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        self.metrics
            .observe("NodeStageVolume", self.stage(request.into_inner()))
            .await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        self.metrics
            .observe("NodeUnstageVolume", self.unstage(request.into_inner()))
            .await
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        self.metrics
            .observe("NodePublishVolume", self.publish(request.into_inner()))
            .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        self.metrics
            .observe("NodeUnpublishVolume", self.unpublish(request.into_inner()))
            .await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        self.metrics
            .observe("NodeGetVolumeStats", self.stats(request.into_inner()))
            .await
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        self.metrics
            .observe("NodeExpandVolume", self.expand(request.into_inner()))
            .await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        self.metrics
            .observe("NodeGetCapabilities", async {
                use rpc::Type::*;
                let capabilities = [
                    StageUnstageVolume,
                    GetVolumeStats,
                    ExpandVolume,
                    VolumeCondition,
                    SingleNodeMultiWriter,
                ]
                .into_iter()
                .map(node_capability)
                .collect();
                Ok(NodeGetCapabilitiesResponse { capabilities })
            })
            .await
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        self.metrics
            .observe("NodeGetInfo", async {
                Ok(NodeGetInfoResponse {
                    node_id: self.settings.node_id.clone(),
                    max_volumes_per_node: self.settings.max_volumes,
                    accessible_topology: Some(Topology {
                        segments: HashMap::from([(
                            "topology.tns.csi.io/node".to_owned(),
                            self.settings.node_id.clone(),
                        )]),
                    }),
                })
            })
            .await
    }
}
