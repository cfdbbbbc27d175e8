//! What both binaries need to be observed: logs, Prometheus metrics, and health endpoints.
//!
//! Libraries register their metrics into a [`prometheus_client::registry::Registry`] the
//! binary gives them; the binary hands the finished registry and its readiness checks to
//! [`server::serve`], which answers `/metrics`, `/healthz` and `/readyz` on 127.0.0.1 unless
//! told otherwise.

pub mod logging;
pub mod readiness;
pub mod server;

pub use prometheus_client;

/// The git commit this binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("TELEMETRY_GIT_COMMIT");

/// `--version` text: the package version and the commit it was built from.
pub fn version_string(package_version: &str) -> String {
    format!("{package_version} (commit {GIT_COMMIT})")
}

/// Registers `<prefix>_build_info{version,commit} 1`, so dashboards can tell releases apart.
pub fn register_build_info(
    registry: &mut prometheus_client::registry::Registry,
    prefix: &str,
    version: &str,
) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    family
        .get_or_create(&vec![
            ("version".to_owned(), version.to_owned()),
            ("commit".to_owned(), GIT_COMMIT.to_owned()),
        ])
        .set(1);
    registry.register(
        format!("{prefix}_build_info"),
        "Version and git commit of the running binary",
        family,
    );
}

/// Resolves when the process is asked to stop (SIGTERM from Kubernetes/systemd, or Ctrl-C).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
    }
}
