//! The REST API (axum): the same routes on the local socket (0600 in a 0700 directory, so
//! only the daemon's user reaches it; no token) and, when `control_plane.enabled`, on a TCP
//! address where every route needs the bearer token, over HTTPS when a certificate is set.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use warpdrive_fs::Core;

use crate::api::{self, ErrorBody};
use crate::auth::{self, Token};
use crate::jobs::{JobError, JobStore};

/// The OpenAPI 3.1 description of these routes (also in docs/control-plane.md).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Drops the kernel's caches of inodes an invalidation touched (the FUSE session's notifier).
pub type KernelInvalidator = Arc<dyn Fn(&[u64]) + Send + Sync>;

/// What the handlers work on.
pub struct Control {
    /// The filesystem.
    pub core: Arc<Core>,
    /// Warm jobs.
    pub jobs: Arc<JobStore>,
    /// Version and commit.
    pub version: String,
    /// Where the tree is mounted.
    pub mount_point: std::path::PathBuf,
    /// When the daemon started.
    pub started: Instant,
    /// Set once the mount exists.
    pub kernel: OnceLock<KernelInvalidator>,
    /// Whether the mount answers (the binary's probe).
    pub mounted: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("mount_point", &self.mount_point)
            .finish()
    }
}

/// A failed request, as the client sees it.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        let status = match &err {
            JobError::Unknown(_) => StatusCode::NOT_FOUND,
            JobError::Save { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            JobError::Target(warpdrive_fs::WarmError::NoCache) => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self(status, err.to_string())
    }
}

impl From<warpdrive_fs::WarmError> for ApiError {
    fn from(err: warpdrive_fs::WarmError) -> Self {
        JobError::from(err).into()
    }
}

type Shared = Arc<Control>;

fn totals(core: &Core) -> Option<api::CacheTotals> {
    use std::sync::atomic::Ordering::Relaxed;
    let cache = core.cache()?;
    let max = cache.max_size();
    Some(api::CacheTotals {
        blocks: cache.blocks() as u64,
        bytes: cache.size(),
        max_bytes: max,
        utilization: cache.size() as f64 / max.max(1) as f64,
        hits: cache.stats().hits.load(Relaxed),
        misses: cache.stats().misses.load(Relaxed),
        evictions: cache.stats().evictions.load(Relaxed),
    })
}

async fn status(State(c): State<Shared>) -> Json<api::Status> {
    Json(api::Status {
        version: c.version.clone(),
        uptime_seconds: c.started.elapsed().as_secs(),
        mount_point: c.mount_point.display().to_string(),
        mounted: (c.mounted)(),
        backends: c.core.backends().len(),
        cache: totals(&c.core),
        jobs_running: c.jobs.running(),
    })
}

async fn backends(State(c): State<Shared>) -> Json<api::Backends> {
    Json(api::Backends {
        backends: c.core.health().await,
    })
}

async fn cache(State(c): State<Shared>) -> Result<Json<api::CacheStats>, ApiError> {
    let Some(totals) = totals(&c.core) else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this mount has no block cache".into(),
        ));
    };
    let usage = c
        .core
        .cache()
        .map(|c| c.usage_by_backend())
        .unwrap_or_default();
    let backends = c
        .core
        .backends()
        .iter()
        .map(|b| {
            let u = usage.iter().find(|u| u.backend == b.name);
            api::BackendCache {
                backend: b.name.clone(),
                blocks: u.map_or(0, |u| u.blocks),
                bytes: u.map_or(0, |u| u.bytes),
                hits: u.map_or(0, |u| u.lookups.hits),
                misses: u.map_or(0, |u| u.lookups.misses),
            }
        })
        .collect();
    Ok(Json(api::CacheStats { totals, backends }))
}

async fn list_jobs(State(c): State<Shared>) -> Json<api::Jobs> {
    Json(api::Jobs {
        jobs: c.jobs.list(),
    })
}

async fn start_job(
    State(c): State<Shared>,
    body: Result<Json<api::WarmSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(spec) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (job, started) = c.jobs.start(spec)?;
    let status = if started {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job)).into_response())
}

async fn get_job(
    State(c): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<api::Job>, ApiError> {
    Ok(Json(c.jobs.get(&id)?))
}

async fn cancel_job(
    State(c): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<api::Job>, ApiError> {
    Ok(Json(c.jobs.cancel(&id)?))
}

fn target(
    body: Result<Json<api::Target>, axum::extract::rejection::JsonRejection>,
) -> Result<api::Target, ApiError> {
    body.map(|Json(t)| t)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

async fn evict(
    State(c): State<Shared>,
    body: Result<Json<api::Target>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<api::Evicted>, ApiError> {
    let t = target(body)?;
    let (evicted, files) = c.core.evict(&t.backend, &t.prefix)?;
    if let Some(kernel) = c.kernel.get() {
        kernel(&files);
    }
    Ok(Json(api::Evicted {
        blocks: evicted.blocks,
        bytes: evicted.bytes,
    }))
}

async fn invalidate(
    State(c): State<Shared>,
    body: Result<Json<api::Target>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<api::Invalidated>, ApiError> {
    let t = target(body)?;
    let done = c.core.invalidate(&t.backend, &t.prefix)?;
    if let Some(kernel) = c.kernel.get() {
        kernel(&done.inodes);
    }
    Ok(Json(api::Invalidated {
        files: done.files,
        dirs: done.dirs,
    }))
}

async fn usage(State(c): State<Shared>) -> Json<api::UsageReport> {
    Json(c.core.usage())
}

async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/json")], OPENAPI)
}

/// The routes, without authentication.
pub fn routes(control: Shared) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/backends", get(backends))
        .route("/v1/cache", get(cache))
        .route("/v1/jobs", get(list_jobs).post(start_job))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/v1/evict", post(evict))
        .route("/v1/invalidate", post(invalidate))
        .route("/v1/usage", get(usage))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; GET /v1/openapi.json lists them".into(),
            )
        })
        .with_state(control)
}

/// The routes behind the bearer token.
pub fn authenticated(control: Shared, token: Token) -> Router {
    routes(control).layer(axum::middleware::from_fn_with_state(token, auth::require))
}

/// Why the TCP listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error("config key `control_plane.addr`: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key cannot be used.
    #[error("config key `control_plane.tls`: {0}")]
    Tls(#[from] tls::Error),
}

/// A running listener; dropping it stops accepting.
#[derive(Debug)]
pub struct Listening {
    /// The bound address (the port chosen when 0 was asked for).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `addr`, over TLS with `tls` when given.
pub async fn serve_tcp(
    addr: SocketAddr,
    tls: Option<&tls::ServerTlsSettings>,
    router: Router,
) -> Result<Listening, ServeError> {
    let config = tls.map(tls::server_config).transpose()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    if !bound.ip().is_loopback() {
        tracing::info!(addr = %bound, "control plane listens beyond loopback (every call needs the bearer token)");
    }
    let task = match config {
        None => tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "control plane stopped");
            }
        }),
        Some(config) => tokio::spawn(async move {
            let listener = TlsListener::new(listener, config);
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "control plane stopped");
            }
        }),
    };
    tracing::info!(addr = %bound, https = tls.is_some(), "control plane listening");
    Ok(Listening { addr: bound, task })
}

/// Serves `router` on an already bound unix socket until the task is dropped.
pub async fn serve_unix(listener: tokio::net::UnixListener, router: Router) {
    if let Err(err) = axum::serve(listener, router).await {
        tracing::error!(%err, "control socket stopped");
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on accepted connections, each handshake on its own task so one slow client cannot hold
/// up the others.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    _acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, %err, "control plane TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "control plane TLS handshake timed out"),
                    }
                });
            }
        });
        Self {
            rx,
            addr,
            _acceptor: task,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor task ended (only when the runtime stops): wait for good.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn control(dir: &std::path::Path) -> Shared {
        let core =
            crate::test_support::memory_core(dir, Arc::new(object_store::memory::InMemory::new()));
        let jobs =
            JobStore::open(&core.cache().unwrap().state_dir().unwrap(), core.clone()).unwrap();
        Arc::new(Control {
            core,
            jobs,
            version: "test".into(),
            mount_point: dir.to_owned(),
            started: Instant::now(),
            kernel: OnceLock::new(),
            mounted: Box::new(|| true),
        })
    }

    #[tokio::test]
    async fn every_documented_route_is_served_and_every_served_route_is_documented() {
        let dir = tempfile::tempdir().unwrap();
        let router = routes(control(dir.path()));
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = 0;
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                documented += 1;
                let uri = path.replace("{id}", "warm-none");
                let mut request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri);
                let body = if method == "post" {
                    request = request.header("content-type", "application/json");
                    Body::from(r#"{"backend":"mem"}"#)
                } else {
                    Body::empty()
                };
                let response = router
                    .clone()
                    .oneshot(request.body(body).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                let text = String::from_utf8_lossy(
                    &axum::body::to_bytes(response.into_body(), 1 << 20)
                        .await
                        .unwrap(),
                )
                .into_owned();
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("no such endpoint"),
                    "{method} {path}: {status} {text}"
                );
            }
        }
        // routes() registers these (method, path) pairs; keep the count in step with it.
        assert_eq!(
            documented, 11,
            "a route was added without documenting it (or the reverse)"
        );
    }

    #[tokio::test]
    async fn bad_requests_name_the_field_and_unknown_jobs_are_404() {
        let dir = tempfile::tempdir().unwrap();
        let router = routes(control(dir.path()));
        let send = |method: &str, uri: &str, body: &str| {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, text) = send("POST", "/v1/jobs", r#"{"backend":"mem","workers":0}"#).await;
        assert_eq!(status, 400);
        assert!(text.contains("field `workers`"), "{text}");
        let (status, text) = send("POST", "/v1/jobs", r#"{"backend":"nope"}"#).await;
        assert_eq!(status, 400);
        assert!(text.contains("no backend is named `nope`"), "{text}");
        let (status, text) = send(
            "POST",
            "/v1/evict",
            r#"{"backend":"mem","prefix":"a/../.."}"#,
        )
        .await;
        assert_eq!(status, 400);
        assert!(text.contains("not a key prefix"), "{text}");
        let (status, text) = send("POST", "/v1/invalidate", r#"{"backend":"mem","extra":1}"#).await;
        assert_eq!(status, 400);
        assert!(text.contains("extra"), "{text}");
        let (status, _) = send("DELETE", "/v1/jobs/warm-none", "").await;
        assert_eq!(status, 404);
    }
}
