//! The CSI Node service of tns-csi: stage (attach + format + mount), publish (bind mount),
//! expand, stats. It holds no TrueNAS credentials: everything it needs arrives in the volume
//! and publish contexts. Host work goes through [`Runner`] and one [`Connector`] per protocol;
//! the simulated host swaps the connectors for bind mounts and loop devices.

mod connectors;
mod error;
pub mod mounts;
mod paths;
mod publish;
mod record;
mod runner;
mod stage;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_api::csi::node_server::Node;
use csi_api::csi::node_service_capability::{Rpc, rpc};
use csi_api::csi::*;
use csi_api::{CsiMetrics, NameLocks, Protocol};
use tonic::{Request, Response, Status};

pub use connectors::{
    AttachRequest, Attached, Connector, Detach, IscsiConnector, NfsConnector, NvmeConnector,
    SimulatedConnector, SmbConnector,
};
pub use error::NodeError;
pub use runner::{Output, RecordingRunner, Runner, Scripted, SystemRunner, check};

/// Limit for filesystem commands (mkfs, fsck, grow), which take long on large volumes.
pub(crate) const FS_TIMEOUT: Duration = Duration::from_secs(600);

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
    /// The kubelet's directory: every staging and target path must be inside it.
    pub kubelet_dir: PathBuf,
    /// Topology segments besides the node's own (which TrueNAS systems it reaches).
    pub topology: std::collections::BTreeMap<String, String>,
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
            kubelet_dir: PathBuf::from("/var/lib/kubelet"),
            topology: std::collections::BTreeMap::new(),
        }
    }
}

/// The Node service.
#[derive(Clone)]
pub struct NodeService {
    settings: Arc<NodeSettings>,
    runner: Arc<dyn Runner>,
    connectors: Arc<HashMap<Protocol, Arc<dyn Connector>>>,
    locks: NameLocks,
    metrics: CsiMetrics,
}

impl NodeService {
    /// A path from request field `field`, checked to be the node's to act on.
    pub(crate) fn own_path(&self, field: &str, value: &str) -> Result<PathBuf, NodeError> {
        paths::checked(&self.settings.kubelet_dir, field, value)
    }
}

/// The value of a required request field.
pub(crate) fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
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
            locks: NameLocks::default(),
            metrics,
        }
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
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.metrics
            .observe_volume("NodeStageVolume", &volume, self.stage(req))
            .await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.metrics
            .observe_volume("NodeUnstageVolume", &volume, self.unstage(req))
            .await
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.metrics
            .observe_volume("NodePublishVolume", &volume, self.publish(req))
            .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.metrics
            .observe_volume("NodeUnpublishVolume", &volume, self.unpublish(req))
            .await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.metrics
            .observe_volume("NodeGetVolumeStats", &volume, self.stats(req))
            .await
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.metrics
            .observe_volume("NodeExpandVolume", &volume, self.expand(req))
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
                        segments: self
                            .settings
                            .topology
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .chain([(
                                "topology.tns.csi.io/node".to_owned(),
                                self.settings.node_id.clone(),
                            )])
                            .collect::<HashMap<_, _>>(),
                    }),
                })
            })
            .await
    }
}
