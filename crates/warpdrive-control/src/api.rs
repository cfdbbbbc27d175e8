//! The wire types of the control plane, shared by the server and `warpdrive-mount ctl`: one
//! definition, so the two cannot drift apart (the OpenAPI document is checked against them).

use serde::{Deserialize, Serialize};
pub use warpdrive_fs::{BackendHealth, UsageReport, UsageRow};

/// The API's path prefix; a breaking change gets a new one.
pub const PREFIX: &str = "/v1";

/// An error answer: what went wrong, never an echo of what was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The reason, naming the field or header at fault.
    pub error: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Version and commit of the daemon.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Where the tree is mounted.
    pub mount_point: String,
    /// Whether the mount answers.
    pub mounted: bool,
    /// Backends configured.
    pub backends: usize,
    /// Cache totals (none without a cache).
    pub cache: Option<CacheTotals>,
    /// Warm jobs still running.
    pub jobs_running: usize,
}

/// The whole cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheTotals {
    /// Blocks on disk.
    pub blocks: u64,
    /// Bytes of block files.
    pub bytes: u64,
    /// The limit (`cache.max_size`).
    pub max_bytes: u64,
    /// `bytes / max_bytes`.
    pub utilization: f64,
    /// Reads answered from disk since start.
    pub hits: u64,
    /// Block reads the cache could not answer.
    pub misses: u64,
    /// Blocks evicted since start.
    pub evictions: u64,
}

/// `GET /v1/cache`: totals and each backend's share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheStats {
    /// The whole cache.
    pub totals: CacheTotals,
    /// Per backend.
    pub backends: Vec<BackendCache>,
}

/// One backend's share of the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendCache {
    /// Backend name.
    pub backend: String,
    /// Blocks on disk.
    pub blocks: u64,
    /// Bytes of their files.
    pub bytes: u64,
    /// Reads answered from disk.
    pub hits: u64,
    /// Block reads the cache could not answer.
    pub misses: u64,
}

/// `GET /v1/backends`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backends {
    /// Each backend in configuration order.
    pub backends: Vec<BackendHealth>,
}

/// `POST /v1/jobs`: what to warm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmSpec {
    /// The backend's `name` in the config.
    pub backend: String,
    /// Key prefix inside the backend (a directory path; empty: all of it).
    #[serde(default)]
    pub prefix: String,
    /// Objects fetched at once (1–256).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Backend bytes per second the job may fetch at most.
    #[serde(default)]
    pub max_bytes_per_second: Option<u64>,
}

fn default_workers() -> usize {
    8
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Listing or fetching (and resumed after a restart).
    Running,
    /// Every object was cached.
    Succeeded,
    /// Finished, but some objects could not be cached, or it could not start.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn finished(self) -> bool {
        self != Self::Running
    }
}

/// How far a job has come (totals are final once `listed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Objects found under the prefix so far.
    pub files_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
    /// Whether the listing is complete.
    pub listed: bool,
    /// Objects finished.
    pub files_done: u64,
    /// Objects that could not be cached.
    pub files_failed: u64,
    /// Bytes finished.
    pub bytes_done: u64,
    /// Bytes found cached already.
    pub bytes_cached: u64,
    /// Bytes fetched from the backend, over every run of the job.
    pub bytes_fetched: u64,
}

/// A warm job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id (`warm-…`).
    pub id: String,
    /// What it warms.
    pub spec: WarmSpec,
    /// Where it is.
    pub state: JobState,
    /// How far it has come (this run's progress, plus what earlier runs fetched).
    pub progress: JobProgress,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since the epoch when it was created.
    pub created_at: u64,
    /// When it last changed.
    pub updated_at: u64,
    /// Daemon starts that resumed it.
    pub resumed: u32,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jobs {
    /// Newest first.
    pub jobs: Vec<Job>,
}

/// `POST /v1/evict` and `POST /v1/invalidate`: which part of which backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The backend's `name` in the config.
    pub backend: String,
    /// A directory path inside the backend (empty: all of it).
    #[serde(default)]
    pub prefix: String,
}

/// What an eviction removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evicted {
    /// Blocks removed.
    pub blocks: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// What an invalidation touched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invalidated {
    /// Files whose version is checked again at their next open.
    pub files: u64,
    /// Directories listed again at their next use.
    pub dirs: u64,
}
