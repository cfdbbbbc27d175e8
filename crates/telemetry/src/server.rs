//! The HTTP endpoint for operators: `/metrics` (OpenMetrics), `/healthz`, `/readyz`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::readiness::{Readiness, Severity};

/// Content type of the OpenMetrics text exposition format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `metrics:` section of both binaries' config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Listen address; loopback by default because the endpoint has no authentication.
    pub addr: SocketAddr,
}

impl MetricsSettings {
    /// Enabled on 127.0.0.1:`port`.
    pub fn loopback(port: u16) -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self::loopback(9090)
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} for /metrics; pick a free address with `metrics.addr`")]
    Bind {
        /// The address from config.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

/// A running endpoint; dropping it leaves it running until [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The bound address (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, finishes in-flight requests and waits for the task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct AppState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Binds `addr` and serves the registry and readiness checks until shut down.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
) -> Result<RunningServer, Error> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics endpoint listens beyond loopback; it has no authentication");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(AppState {
            registry,
            readiness,
        }));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(err) = server.await {
            tracing::error!(error = %err, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %local_addr, "serving /metrics, /healthz and /readyz");
    Ok(RunningServer {
        local_addr,
        stop,
        task,
    })
}

/// Serves the endpoint (when enabled) until SIGTERM/SIGINT, then stops it cleanly.
pub async fn serve_until_shutdown(
    settings: &MetricsSettings,
    registry: Arc<Registry>,
    readiness: Readiness,
) -> Result<(), Error> {
    let server = if settings.enabled {
        Some(serve(settings.addr, registry, readiness).await?)
    } else {
        None
    };
    crate::shutdown_signal().await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    Ok(())
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            body,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {err}\n"),
        ),
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let results = state.readiness.evaluate().await;
    let mut body = String::new();
    let mut ready = true;
    for result in &results {
        match (&result.outcome, result.severity) {
            (Ok(()), _) => body.push_str(&format!("ok {}\n", result.name)),
            (Err(reason), Severity::Degradable) => {
                body.push_str(&format!("degraded {}: {reason}\n", result.name));
            }
            (Err(reason), Severity::Required) => {
                ready = false;
                body.push_str(&format!("failed {}: {reason}\n", result.name));
            }
        }
    }
    if results.is_empty() {
        body.push_str("ok (no checks registered)\n");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    async fn get(url: String) -> (u16, String, String) {
        let resp = reqwest::get(url).await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ctype, resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("demo_events", "Events seen by the test", counter.clone());
        counter.inc_by(3);
        let readiness = Readiness::default();
        readiness.register("always", || async { Ok(()) });
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            readiness.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", server.local_addr());

        let (status, ctype, body) = get(format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        assert_eq!(ctype, OPENMETRICS_CONTENT_TYPE);
        assert!(body.contains("demo_events_total 3"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        assert_eq!(get(format!("{base}/healthz")).await.0, 200);
        let (status, _, body) = get(format!("{base}/readyz")).await;
        assert_eq!((status, body.as_str()), (200, "ok always\n"));

        readiness.register_degradable("replica", || async { Err("down".to_owned()) });
        let (status, _, body) = get(format!("{base}/readyz")).await;
        assert_eq!(status, 200, "a degradable check never makes it unready");
        assert!(body.contains("degraded replica: down"), "{body}");

        readiness.register("truenas", || async {
            Err("cannot reach wss://nas/api/current".to_owned())
        });
        let (status, _, body) = get(format!("{base}/readyz")).await;
        assert_eq!(status, 503);
        assert!(
            body.contains("failed truenas: cannot reach wss://nas/api/current"),
            "{body}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn default_address_is_loopback() {
        assert!(MetricsSettings::default().addr.ip().is_loopback());
        let taken = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::default(),
            Readiness::default(),
        )
        .await
        .unwrap();
        let err = serve(taken.local_addr(), Arc::default(), Readiness::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {}", taken.local_addr()))
        );
        taken.shutdown().await;
    }
}
