//! The CSI gRPC server on a unix socket: Identity always, Controller in controller mode.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use csi_api::csi::controller_server::ControllerServer;
use csi_api::csi::identity_server::IdentityServer;
use csi_api::{CsiMetrics, IdentityService, ReadyCheck};
use csi_controller::{ControllerService, ControllerSettings, NodeDirectory, StaticNodes, Systems};
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

/// The topology segments the node reports: `csi.topology`, plus in a cluster its Node
/// object's labels under `csi.topology_from_node_labels`.
async fn node_topology(
    csi: &CsiSettings,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut segments = csi.topology.clone();
    if csi.topology_from_node_labels.is_empty() {
        return Ok(segments);
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        tracing::warn!("not in a cluster: csi.topology_from_node_labels is ignored");
        return Ok(segments);
    }
    let node = csi.node_id.clone().unwrap_or_default();
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API to read this node's labels (csi.topology_from_node_labels needs RBAC to get nodes)")?;
    let labels = crate::cluster::node_labels(client, &node, &csi.topology_from_node_labels).await?;
    segments.extend(labels);
    Ok(segments)
}

/// Serves until SIGTERM/SIGINT, then removes the socket.
pub(crate) async fn serve(
    socket: PathBuf,
    csi: CsiSettings,
    systems: Option<Arc<Systems>>,
    metrics: CsiMetrics,
    locks: csi_api::NameLocks,
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
    // Probe: ready when some TrueNAS system answers (one that is down must not get the
    // controller restarted while the others serve); `/readyz` names each one.
    let ready: ReadyCheck = match &systems {
        Some(systems) => {
            let systems = systems.clone();
            Arc::new(move || {
                let systems = systems.clone();
                Box::pin(async move {
                    let mut problems = Vec::new();
                    for system in systems.all() {
                        match crate::run::answers(system.client.clone()).await {
                            Ok(()) => return Ok(()),
                            Err(problem) => problems.push(problem),
                        }
                    }
                    Err(problems.join("; "))
                })
            })
        }
        None => Arc::new(|| Box::pin(async { Ok(()) })),
    };
    let version = telemetry::version_string(env!("CARGO_PKG_VERSION"));
    let topology = systems.as_ref().is_some_and(|s| s.has_topology());
    let identity = IdentityService::new(version, csi.mode.controller(), ready)
        .with_topology(topology || !csi.topology.is_empty());
    let mut router = tonic::transport::Server::builder().add_service(IdentityServer::new(identity));
    if let (true, Some(systems)) = (csi.mode.controller(), systems) {
        let controller = ControllerService::new(
            systems,
            ControllerSettings {
                nodes: node_directory(&csi).await?,
                locks,
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
        settings.topology = node_topology(&csi).await?;
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
