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
