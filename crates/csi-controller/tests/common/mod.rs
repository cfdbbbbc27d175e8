//! A simulator, a controller serving on a real unix socket, and gRPC clients to it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::controller_server::ControllerServer;
use csi_api::csi::identity_client::IdentityClient;
use csi_api::csi::identity_server::IdentityServer;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_api::csi::*;
use csi_api::{CsiMetrics, IdentityService};
use csi_controller::{ControllerService, ControllerSettings};
use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use tonic::transport::{Channel, Endpoint, Uri};
use truenas::query::Query;
use truenas::{ApiKey, Client, ClientMetrics, ClientSettings};
use truenas_sim::{SimConfig, Simulator};

pub(crate) const GIB: i64 = 1 << 30;

/// The nodes the test cluster has; anything else is NOT_FOUND to ControllerPublishVolume.
pub(crate) const NODES: [&str; 6] = [
    "node-1",
    "node-2",
    "node-3",
    "evil node",
    "evil-node-",
    "evil_node-",
];

pub(crate) struct Harness {
    pub(crate) sim: Simulator,
    pub(crate) key: String,
    pub(crate) truenas: Client,
    pub(crate) controller: ControllerClient<Channel>,
    pub(crate) identity: IdentityClient<Channel>,
    pub(crate) metrics: prometheus_client::registry::Registry,
    pub(crate) socket: PathBuf,
    server: tokio::task::JoinHandle<()>,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) fn truenas_client(sim: &Simulator, key: &str) -> Client {
    let mut settings = ClientSettings::new(
        sim.url().parse().unwrap(),
        ApiKey::fixed(SecretString::from(key.to_owned())),
    );
    settings.allow_insecure_transport = true;
    settings.call_timeout = Duration::from_secs(10);
    settings.backoff_initial = Duration::from_millis(20);
    settings.backoff_max = Duration::from_millis(200);
    Client::new(settings, ClientMetrics::default()).unwrap()
}

/// Starts a controller for `sim` on a fresh unix socket under `dir`.
pub(crate) async fn serve_controller(
    client: Client,
    dir: &std::path::Path,
    name: &str,
    registry: &mut prometheus_client::registry::Registry,
) -> (PathBuf, tokio::task::JoinHandle<()>) {
    let socket = dir.join(format!("{name}.sock"));
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let metrics = CsiMetrics::register(registry);
    let probe = client.clone();
    let identity = IdentityService::new(
        "test",
        true,
        std::sync::Arc::new(move || {
            let client = probe.clone();
            Box::pin(async move { client.connection_problem().map_or(Ok(()), Err) })
        }),
    );
    let controller = ControllerService::new(
        std::sync::Arc::new(csi_controller::Systems::single(client, "127.0.0.1".into())),
        ControllerSettings {
            nodes: std::sync::Arc::new(csi_controller::StaticNodes::new(NODES)),
            locks: Default::default(),
        },
        metrics,
    );
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(identity))
            .add_service(ControllerServer::new(controller))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    (socket, server)
}

pub(crate) async fn channel(socket: PathBuf) -> Channel {
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

pub(crate) async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig::new(dir.path().join("data"));
    let key = config.api_key.clone();
    let sim = Simulator::start(config).await.unwrap();
    let truenas = truenas_client(&sim, &key);
    truenas.ready().await.unwrap();
    let mut metrics = prometheus_client::registry::Registry::default();
    let (socket, server) = serve_controller(truenas.clone(), dir.path(), "csi", &mut metrics).await;
    let channel = channel(socket.clone()).await;
    Harness {
        sim,
        key,
        truenas,
        controller: ControllerClient::new(channel.clone()),
        identity: IdentityClient::new(channel),
        metrics,
        socket,
        server,
        dir,
    }
}

pub(crate) fn mount(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub(crate) fn block(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub(crate) fn params(protocol: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = [("protocol", protocol), ("pool", "tank")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (k, v) in extra {
        params.insert((*k).to_owned(), (*v).to_owned());
    }
    params
}

pub(crate) fn create_request(name: &str, protocol: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount(Mode::SingleNodeWriter)],
        parameters: params(protocol, &[]),
        ..Default::default()
    }
}

pub(crate) const PROTOCOLS: [&str; 4] = ["nfs", "smb", "nvmeof", "iscsi"];

/// Everything the driver could leak, listed; empty when nothing is left.
pub(crate) async fn leftovers(client: &Client) -> Vec<String> {
    let mut left = Vec::new();
    for ds in client
        .datasets()
        .query(&Query::all().extra("retrieve_children", false))
        .await
        .unwrap()
    {
        if ds.id != "tank" && ds.id != "tank/csi" {
            left.push(format!("dataset {}", ds.id));
        }
    }
    for s in client.snapshots().query(&Query::all()).await.unwrap() {
        left.push(format!("snapshot {}", s.id));
    }
    for s in client.nfs().query(&Query::all()).await.unwrap() {
        left.push(format!("nfs share {}", s.path));
    }
    for s in client.smb().query(&Query::all()).await.unwrap() {
        left.push(format!("smb share {}", s.name));
    }
    for s in client.nvmet().subsystems(&Query::all()).await.unwrap() {
        left.push(format!("nvmet subsystem {}", s.name));
    }
    for n in client.nvmet().namespaces(&Query::all()).await.unwrap() {
        left.push(format!("nvmet namespace {}", n.device_path));
    }
    for t in client.iscsi().targets(&Query::all()).await.unwrap() {
        left.push(format!("iscsi target {}", t.name));
    }
    for e in client.iscsi().extents(&Query::all()).await.unwrap() {
        left.push(format!("iscsi extent {}", e.name));
    }
    for g in client.iscsi().initiators(&Query::all()).await.unwrap() {
        if g.comment.starts_with("tns-csi:") {
            left.push(format!("iscsi initiator group {}", g.comment));
        }
    }
    left
}
