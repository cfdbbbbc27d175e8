//! The CSI gRPC server on a unix socket: Identity always, Controller in controller mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use csi_api::csi::controller_server::ControllerServer;
use csi_api::csi::identity_server::IdentityServer;
use csi_api::{CsiMetrics, IdentityService, ReadyCheck};
use csi_controller::{ControllerService, ControllerSettings, NodeDirectory, StaticNodes};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::CsiSettings;

/// The nodes ControllerPublishVolume may give access to: `csi.known_nodes` when set (plus
/// this process's own node in `all` mode), else the cluster's CSINode objects when running in
/// one, else none (every publish is NOT_FOUND, and a warning says why).
async fn node_directory(csi: &CsiSettings) -> anyhow::Result<Arc<dyn NodeDirectory>> {
    let mut known: Vec<String> = csi.known_nodes.clone();
    if csi.mode.node()
        && let Some(own) = &csi.node_id
    {
        known.push(own.clone());
    }
    if !csi.known_nodes.is_empty() {
        return Ok(Arc::new(StaticNodes::new(known)));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach the Kubernetes API to look up CSINode objects (its service account and RBAC to list csinodes are needed)")?;
        return Ok(Arc::new(crate::cluster::KubernetesNodes::new(client)));
    }
    if known.is_empty() {
        tracing::warn!(
            "not in a cluster and csi.known_nodes is empty: ControllerPublishVolume will refuse every node"
        );
    }
    Ok(Arc::new(StaticNodes::new(known)))
}

/// Serves until SIGTERM/SIGINT, then removes the socket.
pub(crate) async fn serve(
    socket: PathBuf,
    csi: CsiSettings,
    client: Option<truenas::Client>,
    truenas_url: Option<String>,
    metrics: CsiMetrics,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A socket left by a previous run would make bind fail; nothing else may live there.
    match std::fs::symlink_metadata(&socket) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(&socket)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "csi.endpoint {} exists and is not a socket; refusing to replace it",
            socket.display()
        ),
        Err(_) => {}
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let ready: ReadyCheck = match &client {
        Some(client) => {
            let client = client.clone();
            Arc::new(move || {
                let client = client.clone();
                Box::pin(async move {
                    if let Some(problem) = client.connection_problem() {
                        return Err(problem);
                    }
                    client
                        .call_within(
                            truenas::Method::read("system.version"),
                            vec![],
                            Duration::from_secs(3),
                        )
                        .await
                        .map(drop)
                        .map_err(|err| err.to_string())
                })
            })
        }
        None => Arc::new(|| Box::pin(async { Ok(()) })),
    };
    let version = telemetry::version_string(env!("CARGO_PKG_VERSION"));
    let identity = IdentityService::new(version, csi.mode.controller(), ready);
    let mut router = tonic::transport::Server::builder().add_service(IdentityServer::new(identity));
    if let (true, Some(client)) = (csi.mode.controller(), client) {
        let default_server = truenas_url
            .as_deref()
            .and_then(|url| url::Url::parse(url).ok())
            .and_then(|url| {
                url.host_str()
                    .map(|h| h.trim_matches(['[', ']']).to_owned())
            })
            .unwrap_or_default();
        let controller = ControllerService::new(
            client,
            ControllerSettings {
                default_server,
                nodes: node_directory(&csi).await?,
            },
            metrics.clone(),
        );
        let counter = controller.clone();
        tokio::spawn(async move {
            // tns_csi_volumes{protocol}: one listing of managed datasets a minute.
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                if let Err(err) = counter.count_volumes().await {
                    tracing::debug!(%err, "could not count volumes");
                }
            }
        });
        router = router.add_service(ControllerServer::new(controller));
    }
    if csi.mode.node() {
        let host = match csi.host {
            crate::config::Host::Real => csi_node::HostMode::Real,
            crate::config::Host::Simulated => csi_node::HostMode::Simulated {
                data_dir: csi
                    .sim_data_dir
                    .clone()
                    .context("csi.sim_data_dir is required for host: simulated")?,
            },
        };
        let mut settings = csi_node::NodeSettings::new(
            csi.node_id.clone().unwrap_or_default(),
            csi.state_dir.clone(),
            host,
        );
        settings.max_volumes = csi.max_volumes;
        settings.kubelet_dir = csi.kubelet_dir.clone();
        let node =
            csi_node::NodeService::new(settings, Arc::new(csi_node::SystemRunner), metrics.clone());
        router = router.add_service(csi_api::csi::node_server::NodeServer::new(node));
    }
    tracing::info!(endpoint = %socket.display(), mode = ?csi.mode, "serving CSI");
    let result = router
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            telemetry::shutdown_signal(),
        )
        .await;
    let _ = std::fs::remove_file(&socket);
    result.context("the CSI gRPC server failed")
}
