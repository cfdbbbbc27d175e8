//! The filesystem core, free of FUSE types: the backends, settings and shared state every
//! subsystem works on. Requests are answered by the modules around it: `listing`
//! (lookups, listings, `stat`), `blocks` (reads through the block cache),
//! `prefetch` (handles and readahead) and `warm`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blockcache::BlockCache;
use object_store::ObjectStore;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::blocks::{Cached, MAX_PENDING_STORES, RECENT_BLOCK_BYTES};
use crate::error::{FsError, ToErrno};
use crate::health::Health;
use crate::inodes::{Attr, Inodes, Kind, Node, Shape};
use crate::listing::{DirStream, Growing, Listing};
use crate::metrics::FsMetrics;
use crate::namespace::SyntheticDir;
use crate::paged::PagedList;
use crate::prefetch::{Handle, LEDGER_BLOCKS};
use crate::readahead::{Ledger, ReadaheadSettings};
use crate::recent::RecentBlocks;
use crate::usage::{Usage, UsageReport, UsageSettings};

/// One object store mounted somewhere in the tree.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Name (metrics labels, logs).
    pub name: String,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix inside the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Limit for each call to the store (each page of a listing).
    pub timeout: Duration,
    /// The store's listing page by page, where it has one; else a listing is one
    /// `list_with_delimiter` call, held whole until it is done.
    pub pages: Option<Arc<dyn PagedList>>,
}

/// What every entry shows and how long the kernel may cache it.
#[derive(Debug, Clone)]
pub struct FsSettings {
    /// Owner shown for every entry.
    pub uid: u32,
    /// Group shown for every entry.
    pub gid: u32,
    /// Permission bits of files.
    pub file_mode: u16,
    /// Permission bits of directories.
    pub dir_mode: u16,
    /// How long file metadata is trusted before it is checked again.
    pub attr_ttl: Duration,
    /// Directory listings kept in memory.
    pub list_cache_entries: usize,
    /// Names in all kept listings together (the oldest listings go first past it).
    pub list_cache_names: usize,
    /// How long a listing is trusted.
    pub list_cache_ttl: Duration,
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Ranged GETs sent to backends.
    pub backend_gets: AtomicU64,
    /// Bytes received from backends.
    pub backend_bytes: AtomicU64,
    /// Pages of backend listings taken.
    pub list_pages: AtomicU64,
}

/// The filesystem core.
pub struct Core {
    pub(crate) backends: Vec<Backend>,
    pub(crate) tree: SyntheticDir,
    pub(crate) settings: FsSettings,
    pub(crate) inodes: Mutex<Inodes>,
    pub(crate) listings: Mutex<HashMap<u64, (Instant, Listing)>>,
    pub(crate) cached: Option<Cached>,
    pub(crate) stats: CoreStats,
    pub(crate) metrics: FsMetrics,
    pub(crate) readahead: ReadaheadSettings,
    /// Speculative bytes in flight, in KiB permits.
    pub(crate) budget: Arc<Semaphore>,
    /// Backend fetch slots speculative work may take, so foreground reads always find some.
    pub(crate) speculative_slots: Arc<Semaphore>,
    pub(crate) handles: Mutex<HashMap<u64, Handle>>,
    /// Open directory streams: the listing each one pages through, fixed at opendir.
    pub(crate) dir_handles: Mutex<HashMap<u64, DirStream>>,
    /// Backend listings being taken, by directory inode (one at a time per directory).
    pub(crate) growing: Mutex<HashMap<u64, Arc<Growing>>>,
    pub(crate) next_handle: AtomicU64,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) directory_order: Mutex<HashMap<u64, usize>>,
    /// Per backend, in configuration order.
    pub(crate) health: Vec<Health>,
    pub(crate) usage: Usage,
}

/// Bytes as KiB permits of the speculative budget (at least one).
pub(crate) fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Core {
    /// A filesystem over `backends` arranged by `tree`.
    pub fn new(backends: Vec<Backend>, tree: SyntheticDir, settings: FsSettings) -> Self {
        let root = match tree.backend {
            Some(backend) => Node::Dir {
                backend,
                key: String::new(),
            },
            None => Node::Synthetic(Vec::new()),
        };
        let inodes = Inodes::new(root);
        let health = backends.iter().map(|_| Health::default()).collect();
        Self {
            health,
            usage: Usage::new(UsageSettings::default()),
            backends,
            tree,
            settings,
            inodes: Mutex::new(inodes),
            listings: Mutex::default(),
            cached: None,
            stats: CoreStats::default(),
            metrics: FsMetrics::default(),
            readahead: ReadaheadSettings {
                enabled: false,
                ..ReadaheadSettings::default()
            },
            budget: Arc::new(Semaphore::new(0)),
            speculative_slots: Arc::new(Semaphore::new(1)),
            handles: Mutex::default(),
            dir_handles: Mutex::default(),
            growing: Mutex::default(),
            next_handle: AtomicU64::new(1),
            ledger: Mutex::new(Ledger::new(LEDGER_BLOCKS)),
            directory_order: Mutex::default(),
        }
    }

    /// Prefetches by `settings` (needs the block cache: prefetched blocks land there).
    pub fn with_readahead(mut self, settings: ReadaheadSettings) -> Self {
        let budget = kib(settings.budget) as usize;
        self.budget = Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS)));
        self.readahead = settings;
        self
    }

    /// Groups and bounds the usage table by `settings`.
    pub fn with_usage(mut self, settings: UsageSettings) -> Self {
        self.usage = Usage::new(settings);
        self
    }

    /// Bytes and files read per backend, prefix and uid.
    pub fn usage(&self) -> UsageReport {
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        self.usage.report(&names)
    }

    /// Counts `bytes` read through handle `fh` by `uid` (the FUSE layer calls it per read).
    pub fn account(&self, fh: u64, uid: u32, bytes: u64) {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let Some(handle) = handles.get_mut(&fh) else {
            return;
        };
        let first = !handle.accounted;
        handle.accounted = true;
        if let Some(Node::File { backend, key, .. }) = &handle.version {
            let (backend, key) = (*backend, key.clone());
            drop(handles);
            self.usage.record(backend, &key, uid, bytes, first);
        }
    }

    /// Counts handle `fh`, which the kernel reads by itself (FUSE passthrough), as read whole
    /// by `uid`: its reads never reach the daemon, so for such files usage is an upper bound.
    pub fn account_whole(&self, fh: u64, uid: u32) {
        let size = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .and_then(|h| match &h.version {
                Some(Node::File { size, .. }) => Some(*size),
                _ => None,
            });
        if let Some(size) = size {
            self.account(fh, uid, size);
        }
    }

    /// One backend request finished: counted by outcome and, when it failed, by kind and in
    /// the backend's health.
    pub(crate) fn finished_request(
        &self,
        backend: usize,
        error: Option<&FsError>,
        took: std::time::Duration,
    ) {
        let name = &self.backends[backend].name;
        self.metrics
            .request(name, error.map_or(0, ToErrno::errno), took);
        if let Some(err) = error {
            self.metrics.backend_error(name, err.kind());
            if matches!(err.kind(), "denied" | "timeout" | "short_body" | "backend") {
                self.health[backend].failed(err);
            }
        }
    }

    /// Counts into `metrics` (registered by the binary).
    pub fn with_metrics(mut self, metrics: FsMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metric handles, for the FUSE layer.
    pub fn metrics(&self) -> &FsMetrics {
        &self.metrics
    }

    /// Serves reads through `cache`, with at most `max_parallel_fetch` backend GETs at once.
    pub fn with_cache(mut self, cache: Arc<BlockCache>, max_parallel_fetch: usize) -> Self {
        let slots = max_parallel_fetch.max(1);
        self.cached = Some(Cached {
            cache,
            fetches: Semaphore::new(slots),
            inflight: Arc::default(),
            store_slots: Arc::new(Semaphore::new(MAX_PENDING_STORES)),
            recent: Arc::new(RecentBlocks::new(RECENT_BLOCK_BYTES)),
            write_error_logged: Arc::default(),
        });
        self.speculative_slots = Arc::new(Semaphore::new((slots * 3 / 4).max(1)));
        self
    }

    /// Backend traffic counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The block cache, if any.
    pub fn cache(&self) -> Option<&Arc<BlockCache>> {
        self.cached.as_ref().map(|c| &c.cache)
    }

    /// The backends, in configuration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The kernel cache settings and ownership.
    pub fn settings(&self) -> &FsSettings {
        &self.settings
    }

    pub(crate) fn node(&self, ino: u64) -> Result<Node, FsError> {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ino)
            .ok_or(FsError::NoEntry)
    }

    pub(crate) fn intern(&self, node: Node) -> u64 {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .intern(node)
    }

    pub(crate) fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        self.attr_of_shape(
            ino,
            match node {
                Node::File { size, mtime, .. } => Shape::File {
                    size: *size,
                    mtime: *mtime,
                },
                _ => Shape::Dir,
            },
        )
    }

    pub(crate) fn attr_of_shape(&self, ino: u64, shape: Shape) -> Attr {
        let s = &self.settings;
        match shape {
            Shape::File { size, mtime } => Attr {
                ino,
                kind: Kind::File,
                size,
                mtime,
                perm: s.file_mode,
                uid: s.uid,
                gid: s.gid,
            },
            Shape::Dir => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                mtime: SystemTime::UNIX_EPOCH,
                perm: s.dir_mode,
                uid: s.uid,
                gid: s.gid,
            },
        }
    }

    pub(crate) fn synthetic(&self, path: &[String]) -> Option<&SyntheticDir> {
        let mut dir = &self.tree;
        for part in path {
            dir = dir.dirs.get(part)?;
        }
        Some(dir)
    }

    /// A metadata call to a backend (list, head) within its timeout, counted.
    pub(crate) async fn backend_call<T>(
        &self,
        backend: usize,
        what: &'static str,
        work: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, FsError> {
        let b = &self.backends[backend];
        let started = Instant::now();
        let span = tracing::info_span!("backend_call", backend = %b.name, what);
        let result = match tokio::time::timeout(b.timeout, work).instrument(span).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(FsError::store(&b.name, err)),
            Err(_) => {
                tracing::warn!(backend = %b.name, what, timeout = ?b.timeout, "backend call timed out");
                Err(FsError::Timeout {
                    backend: b.name.clone(),
                    timeout: b.timeout,
                })
            }
        };
        self.finished_request(backend, result.as_ref().err(), started.elapsed());
        result
    }

    /// Counts object bytes received from `backend`.
    pub(crate) fn count_bytes(&self, backend: usize, bytes: u64) {
        self.stats.backend_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.metrics
            .backend_bytes(&self.backends[backend].name, bytes);
    }

    /// Cache writes queued and not yet on disk (tests wait for 0 before a restart).
    pub fn pending_stores(&self) -> u64 {
        self.cached.as_ref().map_or(0, |c| {
            (MAX_PENDING_STORES - c.store_slots.available_permits()) as u64
        })
    }

    /// The object version of a file, its metadata checked again after `attr_ttl`.
    pub async fn etag(&self, ino: u64) -> Result<Option<String>, FsError> {
        self.getattr(ino).await?;
        match self.node(ino)? {
            Node::File { etag, .. } => Ok(etag),
            _ => Err(FsError::IsDir),
        }
    }

    /// Whether `ino` is a directory.
    pub fn is_dir(&self, ino: u64) -> Result<bool, FsError> {
        Ok(!matches!(self.node(ino)?, Node::File { .. }))
    }
}
