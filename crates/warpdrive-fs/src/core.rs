//! The filesystem itself, free of FUSE types: inodes, lookups, listings, reads. Every backend
//! call has the backend's timeout; failures map to errno values a POSIX reader expects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blockcache::{BlockCache, BlockKey};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::metrics::FsMetrics;
use crate::namespace::SyntheticDir;
use crate::readahead::{Ledger, Pattern, ReadaheadSettings};
use crate::recent::RecentBlocks;

/// The root inode.
pub const ROOT: u64 = 1;

/// One object store mounted somewhere in the tree.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Name (metrics labels, logs).
    pub name: String,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix inside the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Limit for each call to the store.
    pub timeout: Duration,
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
    /// How long a listing is trusted.
    pub list_cache_ttl: Duration,
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A directory (synthetic, a key prefix, or a backend root).
    Dir,
    /// An object.
    File,
}

/// What `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number, stable for the life of the mount.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Object size (0 for directories).
    pub size: u64,
    /// Object last-modified time.
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// errno values the FUSE layer returns.
pub mod errno {
    /// No such entry.
    pub const ENOENT: i32 = 2;
    /// I/O error (backend down, timeout).
    pub const EIO: i32 = 5;
    /// Permission denied by the backend.
    pub const EACCES: i32 = 13;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid name.
    pub const EINVAL: i32 = 22;
}

#[derive(Debug, Clone)]
enum Node {
    Synthetic(Vec<String>),
    Dir {
        backend: usize,
        key: String,
    },
    File {
        backend: usize,
        key: String,
        size: u64,
        mtime: SystemTime,
        etag: Option<String>,
        checked: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum NodeKey {
    Synthetic(Vec<String>),
    Dir(usize, String),
    File(usize, String),
}

#[derive(Default)]
struct Inodes {
    nodes: HashMap<u64, Node>,
    index: HashMap<NodeKey, u64>,
    next: u64,
}

impl Inodes {
    fn key_of(node: &Node) -> NodeKey {
        match node {
            Node::Synthetic(path) => NodeKey::Synthetic(path.clone()),
            Node::Dir { backend, key } => NodeKey::Dir(*backend, key.clone()),
            Node::File { backend, key, .. } => NodeKey::File(*backend, key.clone()),
        }
    }

    /// The inode of `node`, creating it; file metadata is refreshed.
    fn intern(&mut self, node: Node) -> u64 {
        let key = Self::key_of(&node);
        if let Some(&ino) = self.index.get(&key) {
            if matches!(node, Node::File { .. }) {
                self.nodes.insert(ino, node);
            }
            return ino;
        }
        self.next = self.next.max(ROOT + 1);
        let ino = self.next;
        self.next += 1;
        self.index.insert(key, ino);
        self.nodes.insert(ino, node);
        ino
    }
}

type Listing = Arc<Vec<(String, u64)>>;

/// A block being fetched: resolves to its bytes or an errno.
type Flight = watch::Receiver<Option<Result<Bytes, i32>>>;

/// A claim on a block: the fetcher publishes the block's bytes through it.
type Claim = (BlockKey, watch::Sender<Option<Result<Bytes, i32>>>);

/// Waits for a block someone else is fetching; `None` when that fetch was abandoned.
async fn wait_for(mut flight: Flight) -> Option<Result<Bytes, i32>> {
    loop {
        if let Some(result) = flight.borrow_and_update().clone() {
            return Some(result);
        }
        if flight.changed().await.is_err() {
            return flight.borrow().clone();
        }
    }
}

/// One version of one object, as the cache keys it.
#[derive(Debug)]
struct Object {
    backend: usize,
    key: String,
    etag: String,
    length: u64,
}

impl Object {
    fn block(&self, backends: &[Backend], index: u64) -> BlockKey {
        BlockKey {
            backend: backends[self.backend].name.clone(),
            key: self.key.clone(),
            etag: self.etag.clone(),
            index,
        }
    }

    /// The GET range for `[start, end)`: none for the whole object, since some servers (moto
    /// among them) do more work for a range than for a plain GET.
    fn range(&self, start: u64, end: u64) -> Option<GetRange> {
        (start > 0 || end < self.length).then_some(GetRange::Bounded(start..end))
    }

    /// How many bytes block `index` holds (the last block of an object is short).
    fn block_len(&self, index: u64, block_size: u64) -> u64 {
        self.block_end(index, block_size) - index * block_size
    }

    /// Where block `index` ends (the last block of an object is short).
    fn block_end(&self, index: u64, block_size: u64) -> u64 {
        ((index + 1) * block_size).min(self.length)
    }
}

/// The block cache and what guards the backends behind it.
struct Cached {
    cache: Arc<BlockCache>,
    /// Backend fetches in flight, all backends together.
    fetches: Semaphore,
    /// One fetch per block however many readers miss it at once.
    inflight: Arc<Mutex<HashMap<BlockKey, Flight>>>,
    /// Room in the write-behind queue ([`MAX_PENDING_STORES`]); every queued write holds a
    /// permit until its block is on disk.
    store_slots: Arc<Semaphore>,
    /// Blocks just fetched that readers are part-way through (and readahead blocks the cache
    /// disk refused).
    recent: Arc<RecentBlocks>,
    /// When a refused cache write was last logged (seconds since the Unix epoch).
    write_error_logged: Arc<AtomicU64>,
}

impl Cached {
    /// Whether the block is on disk or held in memory: either way nobody needs to fetch it.
    fn holds(&self, key: &BlockKey) -> bool {
        self.cache.contains(key) || self.recent.contains(key)
    }
}

/// Memory for blocks a reader is part-way through (8 blocks of the default size).
const RECENT_BLOCK_BYTES: usize = 32 << 20;

/// One open file.
#[derive(Debug)]
struct Handle {
    pattern: Pattern,
    /// The sequential stream feeding this handle, if one runs.
    stream: Option<Stream>,
    /// Parallel mode: the next block a segment GET starts at.
    segments_from: Option<u64>,
}

/// What a read asks of readahead, decided under the handles lock and done after it.
enum Ahead {
    Nothing,
    /// Start a stream: its reader position and its done flag.
    Stream(
        watch::Receiver<(u64, u64)>,
        Arc<std::sync::atomic::AtomicBool>,
    ),
    /// Fetch these byte ranges, each with its own ranged GET, in parallel.
    Segments(Vec<(u64, u64)>),
}

/// A handle's side of its readahead stream: where the reader is and how far ahead to stay.
/// Dropping it (the handle closed) tells the stream to stop.
#[derive(Debug)]
struct Stream {
    reader: watch::Sender<(u64, u64)>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

/// Directories whose files are being opened in name order: dir inode → position last opened.
const DIRECTORY_ORDER_ENTRIES: usize = 4096;
/// Speculative blocks remembered until read (to count used and wasted bytes).
const LEDGER_BLOCKS: usize = 16384;

/// How far a cache warm has come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmProgress {
    /// Objects found under the prefix so far.
    pub files_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
    /// Whether the listing is complete (the totals are final).
    pub listed: bool,
    /// Objects finished (cached, fetched, or failed).
    pub files_done: u64,
    /// Objects that could not be cached completely (backend errors, no ETag).
    pub files_failed: u64,
    /// Bytes finished.
    pub bytes_done: u64,
    /// Bytes that were cached already (skipped).
    pub bytes_cached: u64,
    /// Bytes fetched from the backend by this warm.
    pub bytes_fetched: u64,
    /// Whether the warm has ended.
    pub finished: bool,
}

/// Why a warm could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The mount runs without a block cache.
    #[error("this mount has no block cache to warm")]
    NoCache,
    /// No backend has that name.
    #[error("no backend is named `{name}`; configured backends: {known}")]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The prefix tries to leave the backend.
    #[error("prefix `{0}` is not a key prefix (it contains `..`)")]
    BadPrefix(String),
    /// Listing failed.
    #[error("listing the backend failed: {0}")]
    Backend(String),
}

/// Whether a fetch waits for its blocks to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// Warm: the point is the cache.
    Wait,
    /// Foreground reads: write behind, skipped when the disk falls behind.
    Behind,
    /// Readahead: write behind, waiting for the disk when it falls behind.
    Ahead,
}

/// Cache writes that may wait for the disk before new blocks go uncached (64 MiB of 4 MiB blocks).
const MAX_PENDING_STORES: usize = 16;

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Ranged GETs sent to backends.
    pub backend_gets: AtomicU64,
    /// Bytes received from backends.
    pub backend_bytes: AtomicU64,
}

/// The filesystem core.
pub struct Core {
    backends: Vec<Backend>,
    tree: SyntheticDir,
    settings: FsSettings,
    inodes: Mutex<Inodes>,
    listings: Mutex<HashMap<u64, (Instant, Listing)>>,
    cached: Option<Cached>,
    stats: CoreStats,
    metrics: FsMetrics,
    readahead: ReadaheadSettings,
    /// Speculative bytes in flight, in KiB permits.
    budget: Arc<Semaphore>,
    /// Backend fetch slots speculative work may take, so foreground reads always find some.
    speculative_slots: Arc<Semaphore>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
    ledger: Mutex<Ledger>,
    directory_order: Mutex<HashMap<u64, usize>>,
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

fn map_store_error(backend: &Backend, err: &object_store::Error) -> i32 {
    match err {
        object_store::Error::NotFound { .. } => errno::ENOENT,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            tracing::warn!(backend = %backend.name, %err, "backend refused access");
            errno::EACCES
        }
        _ => {
            tracing::warn!(backend = %backend.name, %err, "backend call failed");
            errno::EIO
        }
    }
}

/// Whether a key segment can be a path component.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('\0') && !name.contains('/')
}

/// The path component a key segment shows as: object_store percent-encodes some characters in
/// its paths (the local store encodes non-ASCII file names, for one); names show them decoded.
fn display_name(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&segment[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A store path for a key exactly as listings spell it (no second encoding).
fn store_path(full: &str) -> StorePath {
    StorePath::parse(full).unwrap_or_else(|_| StorePath::from_iter(full.split('/')))
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

impl Core {
    /// A filesystem over `backends` arranged by `tree`.
    pub fn new(backends: Vec<Backend>, tree: SyntheticDir, settings: FsSettings) -> Self {
        let mut inodes = Inodes::default();
        let root = match tree.backend {
            Some(backend) => Node::Dir {
                backend,
                key: String::new(),
            },
            None => Node::Synthetic(Vec::new()),
        };
        inodes.index.insert(Inodes::key_of(&root), ROOT);
        inodes.nodes.insert(ROOT, root);
        inodes.next = ROOT + 1;
        Self {
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

    fn node(&self, ino: u64) -> Result<Node, i32> {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .get(&ino)
            .cloned()
            .ok_or(errno::ENOENT)
    }

    fn intern(&self, node: Node) -> u64 {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .intern(node)
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        let s = &self.settings;
        match node {
            Node::File { size, mtime, .. } => Attr {
                ino,
                kind: Kind::File,
                size: *size,
                mtime: *mtime,
                perm: s.file_mode,
                uid: s.uid,
                gid: s.gid,
            },
            _ => Attr {
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

    fn synthetic(&self, path: &[String]) -> Option<&SyntheticDir> {
        let mut dir = &self.tree;
        for part in path {
            dir = dir.dirs.get(part)?;
        }
        Some(dir)
    }

    async fn with_timeout<T>(
        &self,
        backend: usize,
        work: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, i32> {
        let b = &self.backends[backend];
        let started = Instant::now();
        let result = match tokio::time::timeout(b.timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(map_store_error(b, &err)),
            Err(_) => {
                tracing::warn!(backend = %b.name, timeout = ?b.timeout, "backend call timed out");
                Err(errno::EIO)
            }
        };
        let code = result.as_ref().err().copied().unwrap_or(0);
        self.metrics.request(&b.name, code, started.elapsed());
        result
    }

    /// The entries of a directory: `(name, inode)`, from the listing cache when fresh.
    async fn list(&self, ino: u64) -> Result<Listing, i32> {
        if let Some((at, listing)) = self
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            && at.elapsed() < self.settings.list_cache_ttl
        {
            return Ok(listing.clone());
        }
        let entries = match self.node(ino)? {
            Node::File { .. } => return Err(errno::ENOTDIR),
            Node::Synthetic(path) => {
                let dir = self.synthetic(&path).ok_or(errno::ENOENT)?;
                let mut entries = Vec::new();
                for name in dir.dirs.keys() {
                    let mut child = path.clone();
                    child.push(name.clone());
                    entries.push((name.clone(), self.intern(Node::Synthetic(child))));
                }
                for (name, backend) in &dir.backends {
                    entries.push((
                        name.clone(),
                        self.intern(Node::Dir {
                            backend: *backend,
                            key: String::new(),
                        }),
                    ));
                }
                entries.sort();
                entries
            }
            Node::Dir { backend, key } => self.list_backend(backend, &key).await?,
        };
        let listing = Arc::new(entries);
        let mut cache = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.settings.list_cache_entries.max(1)
            && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k)
        {
            cache.remove(&oldest);
        }
        cache.insert(ino, (Instant::now(), listing.clone()));
        Ok(listing)
    }

    async fn list_backend(&self, backend: usize, key: &str) -> Result<Vec<(String, u64)>, i32> {
        let b = &self.backends[backend];
        let full = join(&b.prefix, key);
        let prefix = if full.is_empty() {
            None
        } else {
            Some(store_path(&full))
        };
        let store = b.store.clone();
        let listed = self
            .with_timeout(backend, async move {
                store.list_with_delimiter(prefix.as_ref()).await
            })
            .await?;
        let strip = |location: &StorePath| -> Option<String> {
            let text = location.as_ref();
            let rest = if full.is_empty() {
                text
            } else {
                text.strip_prefix(full.as_str())?.strip_prefix('/')?
            };
            Some(rest.to_owned())
        };
        let mut names: HashMap<String, u64> = HashMap::new();
        for dir in &listed.common_prefixes {
            let Some(raw) = strip(dir) else { continue };
            let name = display_name(&raw);
            if !valid_name(&name) {
                tracing::warn!(backend = %b.name, key = %dir, "skipping a key prefix that is not a valid path component");
                continue;
            }
            let ino = self.intern(Node::Dir {
                backend,
                key: join(key, &raw),
            });
            names.insert(name, ino);
        }
        for object in &listed.objects {
            let Some(raw) = strip(&object.location) else {
                continue;
            };
            let name = display_name(&raw);
            if name.is_empty() {
                continue; // the directory marker of this directory itself
            }
            if !valid_name(&name) {
                tracing::warn!(backend = %b.name, key = %object.location, "skipping a key that is not a valid path component");
                continue;
            }
            if names.contains_key(&name) {
                tracing::warn!(backend = %b.name, key = %object.location, "a key is both a file and a prefix; showing the directory");
                continue;
            }
            let ino = self.intern(Node::File {
                backend,
                key: join(key, &raw),
                size: object.size,
                mtime: object.last_modified.into(),
                etag: object.e_tag.clone(),
                checked: Instant::now(),
            });
            names.insert(name, ino);
        }
        let mut entries: Vec<(String, u64)> = names.into_iter().collect();
        entries.sort();
        Ok(entries)
    }

    /// Looks `name` up in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, i32> {
        if !valid_name(name) {
            return Err(if name == "." || name == ".." {
                errno::EINVAL
            } else {
                errno::ENOENT
            });
        }
        let listing = self.list(parent).await?;
        let ino = listing
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ino)| *ino)
            .ok_or(errno::ENOENT)?;
        self.getattr(ino).await
    }

    /// The attributes of `ino`, file metadata checked again after `attr_ttl`.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, i32> {
        let node = self.node(ino)?;
        if let Node::File {
            backend,
            key,
            checked,
            ..
        } = &node
            && checked.elapsed() >= self.settings.attr_ttl
        {
            let b = &self.backends[*backend];
            let path = store_path(&join(&b.prefix, key));
            let store = b.store.clone();
            let options = GetOptions {
                head: true,
                ..Default::default()
            };
            let meta = self
                .with_timeout(*backend, async move {
                    store.get_opts(&path, options).await.map(|r| r.meta)
                })
                .await?;
            let fresh = Node::File {
                backend: *backend,
                key: key.clone(),
                size: meta.size,
                mtime: meta.last_modified.into(),
                etag: meta.e_tag,
                checked: Instant::now(),
            };
            self.intern(fresh.clone());
            return Ok(self.attr_of(ino, &fresh));
        }
        Ok(self.attr_of(ino, &node))
    }

    /// Directory entries with their attributes (readdir and readdirplus answer from the listing).
    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Attr)>, i32> {
        let listing = self.list(ino).await?;
        let inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(listing
            .iter()
            .filter_map(|(name, child)| {
                inodes
                    .nodes
                    .get(child)
                    .map(|node| (name.clone(), self.attr_of(*child, node)))
            })
            .collect())
    }

    /// One ranged GET of `[start, end)` with no cache, pinned to `etag`.
    async fn get_range(
        &self,
        backend: usize,
        key: &str,
        etag: Option<String>,
        start: u64,
        end: u64,
    ) -> Result<Bytes, i32> {
        let b = &self.backends[backend];
        let path = store_path(&join(&b.prefix, key));
        let store = b.store.clone();
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            if_match: etag,
            ..Default::default()
        };
        self.stats.backend_gets.fetch_add(1, Ordering::Relaxed);
        let result = self
            .with_timeout(backend, async move {
                let got = store.get_opts(&path, options).await?;
                got.bytes().await
            })
            .await;
        match &result {
            Ok(bytes) => self.count_bytes(backend, bytes.len() as u64),
            Err(_) => self.forget_listings(),
        }
        result
    }

    fn count_bytes(&self, backend: usize, bytes: u64) {
        self.stats.backend_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.metrics
            .backend_bytes(&self.backends[backend].name, bytes);
    }

    /// The object may have changed under us: list again next time.
    fn forget_listings(&self) {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Reads `size` bytes at `offset`: through the block cache when there is one (blocks keyed
    /// by the ETag seen at lookup; the missing blocks of one request come in one ranged GET,
    /// and a block someone is already fetching is waited for, not fetched again), else with
    /// one ranged GET.
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Bytes, i32> {
        let Node::File {
            backend,
            key,
            size: length,
            etag,
            ..
        } = self.node(ino)?
        else {
            return Err(errno::EISDIR);
        };
        if offset >= length || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + u64::from(size)).min(length);
        let (Some(cached), Some(etag)) = (&self.cached, etag.clone()) else {
            return self.get_range(backend, &key, etag, offset, end).await;
        };
        let object = Object {
            backend,
            key,
            etag,
            length,
        };
        let block_size = cached.cache.block_size();
        let mut index = offset / block_size;
        let last = (end - 1) / block_size;
        // Most requests lie inside one block: hand its bytes over without copying them.
        let mut pieces: Vec<Bytes> = Vec::with_capacity((last - index + 1) as usize);
        while index <= last {
            let block_start = index * block_size;
            let from = (offset.max(block_start) - block_start) as usize;
            let to = (end.min(block_start + block_size) - block_start) as usize;
            let block_key = object.block(&self.backends, index);
            self.note_read(&block_key);
            // In memory (just fetched, or being fetched): no disk probe, no thread hop.
            if let Some(block) = cached.recent.get(&block_key) {
                self.metrics.memory_served((to - from) as u64);
                pieces.push(block.slice(from.min(block.len())..to.min(block.len())));
                index += 1;
                continue;
            }
            let flying = cached
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&block_key);
            if !flying {
                let cache = cached.cache.clone();
                let probe = block_key.clone();
                let hit = tokio::task::spawn_blocking(move || cache.get(&probe, from, to - from))
                    .await
                    .ok()
                    .flatten();
                if let Some(bytes) = hit {
                    pieces.push(Bytes::from(bytes));
                    index += 1;
                    continue;
                }
            }
            let block = self.fetch_block(cached, &object, index, last).await?;
            if to < block.len() {
                // The reader will be back for the rest of this block.
                cached.recent.put(block_key, block.clone());
            }
            pieces.push(block.slice(from.min(block.len())..to.min(block.len())));
            index += 1;
        }
        if pieces.len() == 1 {
            return Ok(pieces.pop().unwrap_or_default());
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
        Ok(out.freeze())
    }

    /// Block `index`, fetched once however many readers want it: joins a fetch in flight, or
    /// fetches it with the following missing blocks up to `last` in one ranged GET.
    async fn fetch_block(
        &self,
        cached: &Cached,
        object: &Object,
        index: u64,
        last: u64,
    ) -> Result<Bytes, i32> {
        loop {
            let flying = cached
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&object.block(&self.backends, index))
                .cloned();
            if let Some(flight) = flying {
                let probe = flight.clone();
                match wait_for(flight).await {
                    Some(result) => return result,
                    None => {
                        // That fetch was abandoned (its task was cancelled): drop its entry
                        // and try ourselves.
                        let mut inflight =
                            cached.inflight.lock().unwrap_or_else(|e| e.into_inner());
                        let key = object.block(&self.backends, index);
                        if inflight.get(&key).is_some_and(|f| f.same_channel(&probe)) {
                            inflight.remove(&key);
                        }
                        continue;
                    }
                }
            }
            let claimed = self.claim(cached, object, index, last);
            let Some((_, first)) = claimed.first() else {
                continue; // someone claimed it between our look and our claim
            };
            let mine = first.subscribe();
            // A fetch that just ended may have stored the block: look before fetching.
            let cache = cached.cache.clone();
            let probe = object.block(&self.backends, index);
            let len = object.block_len(index, cached.cache.block_size()) as usize;
            let held = cached.recent.get(&probe);
            let stored = match held {
                Some(block) => Some(block),
                None if cached.cache.contains(&probe) => {
                    tokio::task::spawn_blocking(move || cache.get(&probe, 0, len))
                        .await
                        .ok()
                        .flatten()
                        .map(Bytes::from)
                }
                None => None,
            };
            if let Some(bytes) = stored {
                claimed[0].1.send_replace(Some(Ok(bytes.clone())));
                // The other claims end unresolved: their waiters look again.
                self.unclaim(cached, &claimed);
                return Ok(bytes);
            }
            let permit = cached.fetches.acquire().await.map_err(|_| errno::EIO)?;
            self.fetch_run(cached, object, claimed, Store::Behind).await;
            drop(permit);
            match wait_for(mine).await {
                Some(result) => return result,
                None => return Err(errno::EIO),
            }
        }
    }

    /// Writes a fetched block to the cache and then releases its claim. `Wait` writes before
    /// returning. `Behind` writes on a blocking thread while the caller goes on, unless
    /// [`MAX_PENDING_STORES`] writes are already queued: then the block (which its reader
    /// already has) is not cached, counted, so a cache disk slower than the network never
    /// slows a cold read. `Ahead` (speculative blocks nobody has read yet) waits for a queue
    /// slot instead, so a slow disk slows readahead rather than throwing fetched bytes away.
    async fn store(
        &self,
        cached: &Cached,
        claim: Claim,
        block: Bytes,
        when: Store,
        hold: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let slot = match when {
            Store::Behind => cached.store_slots.clone().try_acquire_owned().ok(),
            Store::Ahead | Store::Wait => cached.store_slots.clone().acquire_owned().await.ok(),
        };
        let Some(slot) = slot else {
            self.metrics.cache_write_skipped();
            self.unclaim(cached, &[claim]); // its readers already have the bytes
            return;
        };
        let (key, sender) = claim;
        let cache = cached.cache.clone();
        let inflight = cached.inflight.clone();
        let (recent, metrics) = (cached.recent.clone(), self.metrics.clone());
        let logged = cached.write_error_logged.clone();
        let write = move || {
            if let Err(err) = cache.put(&key, &block) {
                // A full or failing disk refuses every block: say so once a minute, and keep
                // readahead blocks in memory so their reader need not fetch them again.
                let refused = metrics.cache_write_error();
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if logged.load(Ordering::Relaxed) + 60 <= now {
                    logged.store(now, Ordering::Relaxed);
                    tracing::warn!(%err, refused, "the cache disk refuses blocks, so they are served uncached: free space on, or check, the disk under cache.path (count: warpdrive_cache_write_errors_total)");
                }
                if when == Store::Ahead {
                    recent.put(key.clone(), block);
                }
            }
            inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            drop(sender);
            drop(hold);
            drop(slot);
        };
        let task = tokio::task::spawn_blocking(write);
        if when == Store::Wait {
            let _ = task.await;
        }
    }

    /// Cache writes queued and not yet on disk (tests wait for 0 before a restart).
    pub fn pending_stores(&self) -> u64 {
        self.cached.as_ref().map_or(0, |c| {
            (MAX_PENDING_STORES - c.store_slots.available_permits()) as u64
        })
    }

    /// Marks blocks `first..=last` of `object` as being fetched by the caller, stopping at the
    /// first one that is cached or already in flight.
    fn claim(&self, cached: &Cached, object: &Object, first: u64, last: u64) -> Vec<Claim> {
        let mut inflight = cached.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = Vec::new();
        for index in first..=last {
            let key = object.block(&self.backends, index);
            if inflight.contains_key(&key) || (index > first && cached.holds(&key)) {
                break;
            }
            let (sender, receiver) = watch::channel(None);
            inflight.insert(key.clone(), receiver);
            claimed.push((key, sender));
        }
        claimed
    }

    fn unclaim(&self, cached: &Cached, claims: &[Claim]) {
        let mut inflight = cached.inflight.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in claims {
            inflight.remove(key);
        }
    }

    /// Fetches the claimed consecutive blocks with one ranged GET, storing and publishing each
    /// block as soon as its bytes are in, so a reader of the first block never waits for the
    /// last. Every claim is resolved (bytes or an errno) and released when this returns.
    /// Returns the bytes fetched.
    async fn fetch_run(
        &self,
        cached: &Cached,
        object: &Object,
        claims: Vec<Claim>,
        when: Store,
    ) -> u64 {
        let (Some((first_key, _)), Some((last_key, _))) = (claims.first(), claims.last()) else {
            return 0;
        };
        let mut fetched = 0u64;
        let block_size = cached.cache.block_size();
        let start = first_key.index * block_size;
        let end = object.block_end(last_key.index, block_size);
        let b = &self.backends[object.backend];
        let path = store_path(&join(&b.prefix, &object.key));
        let options = GetOptions {
            range: object.range(start, end),
            if_match: Some(object.etag.clone()),
            ..Default::default()
        };
        self.stats.backend_gets.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let store = b.store.clone();
        let opened = tokio::time::timeout(b.timeout, store.get_opts(&path, options)).await;
        let mut pending = claims.into_iter();
        let outcome: Result<(), i32> = async {
            let mut body = match opened {
                Ok(Ok(got)) => got.into_stream(),
                Ok(Err(err)) => return Err(map_store_error(b, &err)),
                Err(_) => return Err(errno::EIO),
            };
            let mut buffer = BytesMut::new();
            for (key, sender) in pending.by_ref() {
                let want = object.block_len(key.index, block_size) as usize;
                buffer.reserve(want.saturating_sub(buffer.len()));
                while buffer.len() < want {
                    match tokio::time::timeout(b.timeout, body.next()).await {
                        Ok(Some(Ok(chunk))) => buffer.extend_from_slice(&chunk),
                        Ok(Some(Err(err))) => {
                            let code = map_store_error(b, &err);
                            sender.send_replace(Some(Err(code)));
                            self.unclaim(cached, &[(key, sender)]);
                            return Err(code);
                        }
                        Ok(None) | Err(_) => {
                            tracing::warn!(backend = %b.name, key = %object.key, "backend body ended early or stalled");
                            sender.send_replace(Some(Err(errno::EIO)));
                            self.unclaim(cached, &[(key, sender)]);
                            return Err(errno::EIO);
                        }
                    }
                }
                let block = buffer.split_to(want).freeze();
                self.count_bytes(object.backend, block.len() as u64);
                fetched += block.len() as u64;
                // Readers get the bytes at once; the claim stays until the block is on disk.
                sender.send_replace(Some(Ok(block.clone())));
                self.store(cached, (key, sender), block, when, None).await;
            }
            Ok(())
        }
        .await;
        let code = outcome.err().unwrap_or(0);
        // Whatever was not fetched fails with the same error, so its readers do not hang.
        let rest: Vec<Claim> = pending.collect();
        for (_, sender) in &rest {
            sender.send_replace(Some(Err(if code == 0 { errno::EIO } else { code })));
        }
        self.unclaim(cached, &rest);
        if code != 0 {
            self.forget_listings();
        }
        self.metrics.request(&b.name, code, started.elapsed());
        fetched
    }

    /// A reader asked for `key`: if it was prefetched, that prefetch was used.
    fn note_read(&self, key: &BlockKey) {
        self.settle_ledger(|ledger| ledger.read(key));
    }

    /// Applies a read or a close to the ledger and counts the bytes it settles as used or
    /// wasted.
    fn settle_ledger(&self, change: impl FnOnce(&mut Ledger) -> crate::readahead::Outcome) {
        if self.readahead.enabled {
            let outcome = change(&mut self.ledger.lock().unwrap_or_else(|e| e.into_inner()));
            self.metrics.readahead(0, &outcome);
        }
    }

    /// Opens a file: a handle that tracks its access pattern, and the ETag the kernel's page
    /// cache is kept by. Opening files of a directory in name order prefetches the next ones.
    pub async fn open(self: &Arc<Self>, ino: u64) -> Result<(u64, Option<String>), i32> {
        let etag = self.etag(ino).await?;
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                Handle {
                    pattern: Pattern::default(),
                    stream: None,
                    segments_from: None,
                },
            );
        if self.readahead.enabled && self.readahead.directory_prefetch {
            self.directory_prefetch(ino);
        }
        Ok((fh, etag))
    }

    /// Closes a handle; what it prefetched and nobody read counts as wasted.
    pub fn release(&self, fh: u64) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
        self.settle_ledger(|ledger| ledger.release(fh));
    }

    /// Reads through an open handle: like [`Core::read`], and sequential reads prefetch ahead.
    pub async fn read_handle(
        self: &Arc<Self>,
        fh: u64,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, i32> {
        if self.readahead.enabled
            && let Some(cached) = &self.cached
            && let Node::File {
                backend,
                key,
                size: length,
                etag: Some(etag),
                ..
            } = self.node(ino)?
        {
            let end = (offset + u64::from(size)).min(length);
            let block_size = cached.cache.block_size();
            let ahead = {
                let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
                let alone = handles.len() == 1;
                match handles.get_mut(&fh) {
                    Some(h) => self
                        .plan_ahead(h, alone, cached, &backend, &key, &etag, offset, end, length),
                    None => Ahead::Nothing,
                }
            };
            if let Ahead::Segments(ranges) = &ahead {
                for (from, to) in ranges {
                    self.prefetch(fh, backend, &key, &etag, length, *from, *to);
                }
            }
            if let Ahead::Stream(receiver, done) = ahead {
                let object = Object {
                    backend,
                    key,
                    etag,
                    length,
                };
                // The block being read now is the stream's first when nobody has it yet, so a
                // file read from the start costs one request, not two.
                let here = offset / block_size;
                let mut first = end.div_ceil(block_size);
                let mut initial = None;
                if !self.has_block(cached, &backend, &object.key, &object.etag, here) {
                    let len = object.block_len(here, block_size);
                    if let Ok(budget) = self.budget.clone().try_acquire_many_owned(kib(len))
                        && let Some(claim) = self.claim(cached, &object, here, here).pop()
                    {
                        first = here;
                        initial = Some((claim, budget));
                    }
                }
                let core = self.clone();
                tokio::spawn(async move {
                    core.stream(fh, object, first, initial, receiver).await;
                    done.store(true, Ordering::Relaxed);
                });
            }
        }
        self.read(ino, offset, size).await
    }

    /// Decides what a read through handle `h` asks of readahead. A sequential reader gets one
    /// streaming GET. A sequential reader of the only open file (`alone`), past its first
    /// `max_window` bytes with more than a window left, gets parallel ranged GETs instead (up
    /// to `parallel_gets` segments across the window), since one connection caps one reader's
    /// throughput while concurrent readers already keep several connections busy (and some
    /// servers pay for every ranged GET).
    #[allow(clippy::too_many_arguments)]
    fn plan_ahead(
        &self,
        h: &mut Handle,
        alone: bool,
        cached: &Cached,
        backend: &usize,
        key: &str,
        etag: &str,
        offset: u64,
        end: u64,
        length: u64,
    ) -> Ahead {
        let block_size = cached.cache.block_size();
        h.pattern
            .on_read(offset, end, &self.readahead, block_size, length);
        if !h.pattern.sequential() {
            h.stream = None; // random access: stop streaming
            h.segments_from = None;
            return Ahead::Nothing;
        }
        let window = h.pattern.window();
        let parallel = self.readahead.parallel_gets > 1
            && alone
            && window >= self.readahead.max_window
            && end >= self.readahead.max_window
            && length - end > window;
        if parallel {
            // The stream (if any) finishes the blocks it claimed and stops; segments take
            // over from the first block nobody has.
            h.stream = None;
            let segment = (window / self.readahead.parallel_gets as u64 / block_size).max(1);
            let last = (length - 1) / block_size;
            let mut next = h.segments_from.unwrap_or(0).max(end.div_ceil(block_size));
            let mut ranges = Vec::new();
            while next <= last && next * block_size < end + window {
                let to = ((next + segment) * block_size).min(length);
                ranges.push((next * block_size, to));
                next += segment;
            }
            h.segments_from = Some(next);
            return Ahead::Segments(ranges);
        }
        h.segments_from = None;
        match &h.stream {
            Some(stream) if !stream.done.load(Ordering::Relaxed) => {
                stream.reader.send_replace((end, window));
                Ahead::Nothing
            }
            _ if end < length
                && !self.has_block(cached, backend, key, etag, end.div_ceil(block_size)) =>
            {
                let (reader, receiver) = watch::channel((end, window));
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                h.stream = Some(Stream {
                    reader,
                    done: done.clone(),
                });
                Ahead::Stream(receiver, done)
            }
            _ => Ahead::Nothing,
        }
    }

    /// Whether block `index` of an object is cached, being fetched, or already asked for.
    fn has_block(
        &self,
        cached: &Cached,
        backend: &usize,
        key: &str,
        etag: &str,
        index: u64,
    ) -> bool {
        let block_key = BlockKey {
            backend: self.backends[*backend].name.clone(),
            key: key.to_owned(),
            etag: etag.to_owned(),
            index,
        };
        cached
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&block_key)
            || self.prefetched_or_held(cached, &block_key)
    }

    /// Whether a block was already asked for by readahead, or is on disk or in memory.
    fn prefetched_or_held(&self, cached: &Cached, key: &BlockKey) -> bool {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
            || cached.holds(key)
    }

    /// Sequential readahead for one handle: one ranged GET from `first` to the end of the
    /// object, its body read only while the reader is less than its window behind, so a
    /// whole file costs one request, speculative bytes stay within the window and the budget,
    /// and a reader that stops (or closes) stops the transfer. Blocks are claimed ahead as the
    /// window allows, so foreground reads of them wait for the stream instead of fetching.
    async fn stream(
        self: Arc<Self>,
        handle: u64,
        object: Object,
        first: u64,
        initial: Option<(Claim, tokio::sync::OwnedSemaphorePermit)>,
        mut reader: watch::Receiver<(u64, u64)>,
    ) {
        let Some(cached) = &self.cached else { return };

        let block_size = cached.cache.block_size();
        let last = object.length.saturating_sub(1) / block_size;
        if first > last {
            return;
        }
        let Ok(_slot) = self.speculative_slots.clone().acquire_owned().await else {
            return;
        };
        let Ok(_permit) = cached.fetches.acquire().await else {
            return;
        };
        // The reader may have moved on while this waited for a slot.
        let mut next = match &initial {
            Some(_) => first + 1,
            None => first.max(reader.borrow().0.div_ceil(block_size)),
        };
        let b = &self.backends[object.backend];
        let mut claimed: std::collections::VecDeque<(Claim, tokio::sync::OwnedSemaphorePermit)> =
            initial.into_iter().collect();
        let mut extending = true;
        let mut body = None;
        let mut buffer = BytesMut::new();
        let started = Instant::now();
        let mut code = 0;
        loop {
            if reader.has_changed().is_err() {
                extending = false; // the handle closed: finish what was asked, then stop
            }
            if extending {
                let (position, window) = *reader.borrow_and_update();
                let limit =
                    (position.saturating_add(window.max(block_size)) / block_size).min(last);
                while next <= limit {
                    let key = object.block(&self.backends, next);
                    if self.prefetched_or_held(cached, &key) {
                        extending = false; // the body cannot skip: stop at the first gap
                        break;
                    }
                    let mut claims = self.claim(cached, &object, next, next);
                    let Some(claim) = claims.pop() else {
                        extending = false;
                        break;
                    };
                    let len = object.block_len(next, block_size);
                    let Ok(budget) = self.budget.clone().try_acquire_many_owned(kib(len)) else {
                        self.unclaim(cached, &[claim]);
                        self.metrics.readahead_skipped();
                        break;
                    };
                    let outcome = self.ledger.lock().unwrap_or_else(|e| e.into_inner()).issue(
                        claim.0.clone(),
                        len,
                        handle,
                    );
                    self.metrics.readahead(len, &outcome);
                    claimed.push_back((claim, budget));
                    next += 1;
                }
            }
            let Some(((key, sender), budget)) = claimed.pop_front() else {
                if !extending || next > last || reader.changed().await.is_err() {
                    break;
                }
                continue;
            };
            if body.is_none() {
                self.stats.backend_gets.fetch_add(1, Ordering::Relaxed);
                let path = store_path(&join(&b.prefix, &object.key));
                let options = GetOptions {
                    range: object.range(key.index * block_size, object.length),
                    if_match: Some(object.etag.clone()),
                    ..Default::default()
                };
                match tokio::time::timeout(b.timeout, b.store.get_opts(&path, options)).await {
                    Ok(Ok(got)) => body = Some(got.into_stream()),
                    Ok(Err(err)) => code = map_store_error(b, &err),
                    Err(_) => code = errno::EIO,
                }
            }
            let Some(stream) = body.as_mut() else {
                sender.send_replace(Some(Err(code)));
                self.unclaim(cached, &[(key, sender)]);
                break;
            };
            let want = object.block_len(key.index, block_size) as usize;
            buffer.reserve(want.saturating_sub(buffer.len()));
            while buffer.len() < want && code == 0 {
                match tokio::time::timeout(b.timeout, stream.next()).await {
                    Ok(Some(Ok(chunk))) => buffer.extend_from_slice(&chunk),
                    Ok(Some(Err(err))) => code = map_store_error(b, &err),
                    Ok(None) | Err(_) => code = errno::EIO,
                }
            }
            if code != 0 {
                sender.send_replace(Some(Err(code)));
                self.unclaim(cached, &[(key, sender)]);
                break;
            }
            let block = buffer.split_to(want).freeze();
            self.count_bytes(object.backend, block.len() as u64);
            // Readers get the bytes now; the claim stays until the block is on disk (so no one
            // fetches it again meanwhile), and the budget is held until then too.
            sender.send_replace(Some(Ok(block.clone())));
            self.store(cached, (key, sender), block, Store::Ahead, Some(budget))
                .await;
        }

        tracing::debug!(key = %object.key, from = first, to = next, extending, code, "readahead stream ended");
        // Claims never fetched end unresolved: their readers fetch for themselves.
        let rest: Vec<Claim> = claimed.into_iter().map(|(claim, _)| claim).collect();
        self.unclaim(cached, &rest);
        if body.is_some() || code != 0 {
            if code != 0 {
                self.forget_listings();
            }
            self.metrics.request(&b.name, code, started.elapsed());
        }
    }

    /// Fetches the blocks covering `[from, to)` in the background, within the budget: each
    /// stretch of missing blocks is one ranged GET, and stretches run in parallel.
    #[allow(clippy::too_many_arguments)]
    fn prefetch(
        self: &Arc<Self>,
        handle: u64,
        backend: usize,
        key: &str,
        etag: &str,
        length: u64,
        from: u64,
        to: u64,
    ) {
        let Some(cached) = &self.cached else { return };
        let block_size = cached.cache.block_size();
        let object = Arc::new(Object {
            backend,
            key: key.to_owned(),
            etag: etag.to_owned(),
            length,
        });
        let last = to.min(length).div_ceil(block_size).saturating_sub(1);
        let mut index = from / block_size;
        while index <= last && index * block_size < length {
            let block_key = object.block(&self.backends, index);
            if self.prefetched_or_held(cached, &block_key) {
                index += 1;
                continue;
            }
            let claims = self.claim(cached, &object, index, last);
            if claims.is_empty() {
                index += 1;
                continue;
            }
            let bytes: u64 = claims
                .iter()
                .map(|(k, _)| object.block_len(k.index, block_size))
                .sum();
            let Ok(budget) = self.budget.clone().try_acquire_many_owned(kib(bytes)) else {
                self.unclaim(cached, &claims);
                self.metrics.readahead_skipped();
                break;
            };
            index += claims.len() as u64;
            {
                let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
                for (k, _) in &claims {
                    let len = object.block_len(k.index, block_size);
                    let outcome = ledger.issue(k.clone(), len, handle);
                    self.metrics.readahead(len, &outcome);
                }
            }
            let core = self.clone();
            let object = object.clone();
            tokio::spawn(async move {
                let _budget = budget;
                let Ok(_slot) = core.speculative_slots.clone().acquire_owned().await else {
                    return;
                };
                if let Some(cached) = &core.cached {
                    let Ok(_permit) = cached.fetches.acquire().await else {
                        return;
                    };
                    core.fetch_run(cached, &object, claims, Store::Ahead).await;
                }
            });
        }
    }

    /// When the files of a directory are opened in name order, fetches the first block of
    /// the next few (their ETags come from the listing, so the blocks are keyed right).
    fn directory_prefetch(self: &Arc<Self>, ino: u64) {
        let Ok(Node::File { backend, key, .. }) = self.node(ino) else {
            return;
        };
        let parent = key.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let Some(&dir) = self
            .inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .get(&NodeKey::Dir(backend, parent))
        else {
            return;
        };
        let Some(listing) = self
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dir)
            .map(|(_, l)| l.clone())
        else {
            return;
        };
        let Some(position) = listing.iter().position(|(_, i)| *i == ino) else {
            return;
        };
        let previous = {
            let mut order = self
                .directory_order
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if order.len() >= DIRECTORY_ORDER_ENTRIES && !order.contains_key(&dir) {
                order.clear();
            }
            order.insert(dir, position)
        };
        if previous.is_none() || previous != position.checked_sub(1) {
            return;
        }
        let Some(cached) = &self.cached else { return };
        let block_size = cached.cache.block_size();
        for (_, next) in listing
            .iter()
            .skip(position + 1)
            .take(self.readahead.directory_files)
        {
            if let Ok(Node::File {
                backend,
                key,
                size,
                etag: Some(etag),
                ..
            }) = self.node(*next)
                && size > 0
            {
                self.prefetch(0, backend, &key, &etag, size, 0, block_size.min(size));
            }
        }
    }

    /// Fills the cache with every object under `prefix` of backend `backend` (names as in the
    /// config), `workers` objects at a time, skipping blocks already cached, so running it
    /// again after an interruption goes on where it stopped. `progress` sees every step.
    pub async fn warm(
        &self,
        backend: &str,
        prefix: &str,
        workers: usize,
        progress: &watch::Sender<WarmProgress>,
    ) -> Result<WarmProgress, WarmError> {
        let Some(cached) = &self.cached else {
            return Err(WarmError::NoCache);
        };
        let Some(index) = self.backends.iter().position(|b| b.name == backend) else {
            return Err(WarmError::UnknownBackend {
                name: backend.to_owned(),
                known: self
                    .backends
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let b = &self.backends[index];
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "..") {
            return Err(WarmError::BadPrefix(prefix.to_owned()));
        }
        let full = join(&b.prefix, prefix);
        let list_prefix = (!full.is_empty()).then(|| store_path(&full));
        // List first (full keys, so nested prefixes keep their parents), so the totals and
        // the ETA are known before fetching starts.
        let mut objects = Vec::new();
        let mut listing = b.store.list(list_prefix.as_ref());
        while let Some(item) = tokio::time::timeout(b.timeout, listing.next())
            .await
            .map_err(|_| WarmError::Backend("listing timed out".into()))?
        {
            let meta = item.map_err(|e| WarmError::Backend(e.to_string()))?;
            let location = meta.location.as_ref();
            let key = if b.prefix.is_empty() {
                location.to_owned()
            } else {
                match location
                    .strip_prefix(b.prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                {
                    Some(rest) => rest.to_owned(),
                    None => continue,
                }
            };
            if key.is_empty() || key.ends_with('/') {
                continue; // directory markers
            }
            progress.send_modify(|p| {
                p.files_total += 1;
                p.bytes_total += meta.size;
            });
            objects.push((key, meta.size, meta.e_tag));
        }
        progress.send_modify(|p| p.listed = true);
        let block_size = cached.cache.block_size();
        futures_util::stream::iter(objects)
            .for_each_concurrent(workers.max(1), |(key, size, etag)| async move {
                let Some(etag) = etag else {
                    progress.send_modify(|p| {
                        p.files_done += 1;
                        p.files_failed += 1;
                    });
                    return;
                };
                let object = Object {
                    backend: index,
                    key,
                    etag,
                    length: size,
                };
                let mut failed = false;
                let blocks = size.div_ceil(block_size);
                let mut i = 0;
                while i < blocks {
                    let key = object.block(&self.backends, i);
                    let len = object.block_len(i, block_size);
                    if cached.cache.contains(&key) {
                        progress.send_modify(|p| {
                            p.bytes_done += len;
                            p.bytes_cached += len;
                        });
                        i += 1;
                        continue;
                    }
                    // The missing stretch (up to 16 blocks) in one ranged GET.
                    let last = (i + 15).min(blocks - 1);
                    let claims = self.claim(cached, &object, i, last);
                    if claims.is_empty() {
                        // Someone is fetching it: wait for that, then count it.
                        let ok = self.fetch_block(cached, &object, i, i).await.is_ok();
                        failed |= !ok;
                        progress.send_modify(|p| p.bytes_done += len);
                        i += 1;
                        continue;
                    }
                    let n = claims.len() as u64;
                    let bytes: u64 = (i..i + n).map(|j| object.block_len(j, block_size)).sum();
                    let fetched = {
                        let _slot = self.speculative_slots.acquire().await;
                        let _permit = cached.fetches.acquire().await;
                        self.fetch_run(cached, &object, claims, Store::Wait).await
                    };
                    failed |= !(i..i + n)
                        .all(|j| cached.cache.contains(&object.block(&self.backends, j)));
                    progress.send_modify(|p| {
                        p.bytes_done += bytes;
                        p.bytes_fetched += fetched;
                    });
                    i += n;
                }
                progress.send_modify(|p| {
                    p.files_done += 1;
                    if failed {
                        p.files_failed += 1;
                    }
                });
            })
            .await;
        progress.send_modify(|p| p.finished = true);
        Ok(progress.borrow().clone())
    }

    /// The object version of a file, its metadata checked again after `attr_ttl`.
    pub async fn etag(&self, ino: u64) -> Result<Option<String>, i32> {
        self.getattr(ino).await?;
        match self.node(ino)? {
            Node::File { etag, .. } => Ok(etag),
            _ => Err(errno::EISDIR),
        }
    }

    /// Whether `ino` is a directory.
    pub fn is_dir(&self, ino: u64) -> Result<bool, i32> {
        Ok(!matches!(self.node(ino)?, Node::File { .. }))
    }
}
