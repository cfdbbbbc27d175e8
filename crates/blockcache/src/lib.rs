//! A block cache on local disk (warpdrive's cache on NVMe). Blocks are keyed by backend, object
//! key, object version (ETag) and block index, so a changed object can never be served from old
//! blocks. Each block file carries a CRC32 per 64 KiB chunk: a read touches and verifies only the
//! chunks it needs (not the whole block), and a corrupt block is dropped and counted.
//!
//! Crash safety without a separate index: a block is written to a unique temporary name and
//! renamed into place, so a block file either is complete or does not exist; at open the
//! directory is scanned to rebuild sizes and owners (each block's header names its backend,
//! key and ETag, so blocks can be evicted by prefix and counted per backend), and leftover
//! temporaries are removed. Eviction starts above the high-water mark and stops at the low-water
//! mark, taking blocks read only once before blocks that keep being re-read, least recently
//! used first within each group, so one scan of a large dataset cannot flush the hot set.
//!
//! This crate knows no backend, FUSE or async runtime: callers run it on blocking threads.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

const MARKER: &str = "warpdrive-blockcache.v1";
/// Held locked (exclusively) for as long as a cache is open; it holds the holder's PID.
const LOCK: &str = "lock";
const MAGIC: &[u8; 8] = b"WDBLK002";
/// A directory beside the shards for the daemon's own durable state (warm jobs).
const STATE_DIR: &str = "state";
/// Magic, data length, owner length.
const FIXED_HEADER: usize = 8 + 8 + 4;
/// Bytes covered by one checksum.
pub const CHUNK: usize = 64 * 1024;

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory holds files that are not ours; it is never wiped silently.
    #[error(
        "{0} is not a warpdrive cache directory (it has other files and no {MARKER}); choose an empty or dedicated directory"
    )]
    NotOurs(PathBuf),
    /// Another process (a second daemon) holds the directory.
    #[error(
        "{dir} is in use by another warpdrive-mount{}; one cache directory serves one daemon",
        pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    InUse {
        /// The cache directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it.
        pid: Option<u32>,
    },
    /// The settings cannot work.
    #[error("invalid cache settings: {0}")]
    Settings(String),
    /// File-system error.
    #[error("cache {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Which block of which version of which object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Backend name.
    pub backend: String,
    /// Object key inside the backend.
    pub key: String,
    /// Object version (ETag).
    pub etag: String,
    /// Block number (offset / block size).
    pub index: u64,
}

impl BlockKey {
    /// What the header records: backend, key and ETag, NUL-separated.
    fn owner_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.backend.len() + self.key.len() + self.etag.len() + 2);
        out.extend_from_slice(self.backend.as_bytes());
        out.push(0);
        out.extend_from_slice(self.key.as_bytes());
        out.push(0);
        out.extend_from_slice(self.etag.as_bytes());
        out
    }

    fn file_name(&self) -> String {
        let mut hash = Sha256::new();
        for part in [&self.backend, &self.key, &self.etag] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        let digest: String = hash
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{digest}-{}", self.index)
    }
}

/// Cache sizes and eviction marks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest total size of block files.
    pub max_size: u64,
    /// Bytes per block.
    pub block_size: u64,
    /// Evict when above this fraction of `max_size`.
    pub high_water: f64,
    /// Evict down to this fraction.
    pub low_water: f64,
}

/// Hits and misses of one backend's blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lookups {
    /// Reads answered from disk.
    pub hits: u64,
    /// Reads that found no block.
    pub misses: u64,
}

/// What one backend holds in the cache, for the control plane's cache view.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackendUsage {
    /// Backend name.
    pub backend: String,
    /// Blocks on disk.
    pub blocks: u64,
    /// Bytes of their files.
    pub bytes: u64,
    /// Hits and misses since the cache was opened.
    pub lookups: Lookups,
}

/// What an eviction removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Blocks removed.
    pub blocks: u64,
    /// Bytes of their files.
    pub bytes: u64,
}

/// Counters, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reads answered from disk.
    pub hits: AtomicU64,
    /// Reads that found no block.
    pub misses: AtomicU64,
    /// Bytes returned from disk.
    pub bytes_served: AtomicU64,
    /// Blocks evicted.
    pub evictions: AtomicU64,
    /// Blocks dropped because a checksum did not match.
    pub checksum_failures: AtomicU64,
    /// Hits and misses per backend (a map as small as the configured backends).
    per_backend: Mutex<HashMap<String, Lookups>>,
}

impl Stats {
    fn lookup(&self, backend: &str, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut map = self.per_backend.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match map.get_mut(backend) {
            Some(entry) => entry,
            None => map.entry(backend.to_owned()).or_default(),
        };
        if hit {
            entry.hits += 1;
        } else {
            entry.misses += 1;
        }
    }

    /// Hits and misses of `backend`'s blocks.
    pub fn lookups(&self, backend: &str) -> Lookups {
        self.per_backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(backend)
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Entry {
    size: u64,
    reads: u32,
    last_use: u64,
}

/// The object a run of blocks belongs to (one per digest, shared by its blocks).
#[derive(Debug)]
struct Owner {
    backend: String,
    key: String,
    blocks: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    /// Digest (the file name before `-index`) → the object its blocks belong to.
    owners: HashMap<String, Owner>,
    total: u64,
    clock: u64,
}

fn digest_of(name: &str) -> &str {
    name.rsplit_once('-').map_or(name, |(digest, _)| digest)
}

impl Index {
    fn insert(&mut self, name: String, entry: Entry, owner: impl FnOnce() -> (String, String)) {
        self.total += entry.size;
        if let Some(old) = self.entries.insert(name.clone(), entry) {
            self.total -= old.size;
            return;
        }
        let digest = digest_of(&name).to_owned();
        self.owners
            .entry(digest)
            .or_insert_with(|| {
                let (backend, key) = owner();
                Owner {
                    backend,
                    key,
                    blocks: 0,
                }
            })
            .blocks += 1;
    }

    fn remove(&mut self, name: &str) -> Option<Entry> {
        let entry = self.entries.remove(name)?;
        self.total -= entry.size;
        let digest = digest_of(name);
        if let Some(owner) = self.owners.get_mut(digest) {
            owner.blocks = owner.blocks.saturating_sub(1);
            if owner.blocks == 0 {
                self.owners.remove(digest);
            }
        }
        Some(entry)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.owners.clear();
        self.total = 0;
    }
}

/// Whether `key` lies under the directory prefix `prefix` (empty: everything).
fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The cache.
#[derive(Debug)]
pub struct BlockCache {
    dir: PathBuf,
    settings: Settings,
    index: Mutex<Index>,
    stats: Stats,
    temp_counter: AtomicU64,
    /// The exclusive lock on the directory, released when the cache is dropped.
    _lock: File,
}

/// Takes the directory's lock (without waiting) and writes our PID into it.
fn lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("opening the cache lock"))?;
    // A POSIX record lock: held per process, so another daemon is refused while a process
    // reopening its own cache (a restart inside tests) is not.
    match rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(err) if err == rustix::io::Errno::AGAIN || err == rustix::io::Errno::ACCESS => {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(Error::InUse {
                dir: dir.to_owned(),
                pid,
            });
        }
        Err(err) => return Err(io("locking the cache")(err.into())),
    }
    file.set_len(0).map_err(io("writing the cache lock"))?;
    writeln!(file, "{}", std::process::id()).map_err(io("writing the cache lock"))?;
    Ok(file)
}

fn header_len(data_len: usize, owner_len: usize) -> usize {
    FIXED_HEADER + owner_len + 4 * data_len.div_ceil(CHUNK)
}

/// Reads the owner recorded in a block file's header: `None` for a file in another format.
fn read_owner(path: &Path) -> std::io::Result<Option<(String, String)>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; FIXED_HEADER];
    file.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Ok(None);
    }
    let owner_len = u32::from_le_bytes(head[16..20].try_into().unwrap_or([0; 4])) as usize;
    if owner_len > 64 * 1024 {
        return Ok(None);
    }
    let mut owner = vec![0u8; owner_len];
    file.read_exact(&mut owner)?;
    let text = String::from_utf8_lossy(&owner);
    let mut parts = text.splitn(3, '\0');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(backend), Some(key), Some(_etag)) => Ok(Some((backend.to_owned(), key.to_owned()))),
        _ => Ok(None),
    }
}

/// Directories a cache must never be put in, whatever they hold: the system's own.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
];

/// Whether `dir` can be opened as a cache, without changing anything: the rule [`BlockCache::open`]
/// applies, for a configuration check before start.
pub fn check_dir(dir: &Path) -> Result<(), Error> {
    if SYSTEM_DIRS.iter().any(|d| Path::new(d) == dir) {
        return Err(Error::NotOurs(dir.to_owned()));
    }
    match fs::metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()), // made at start
        Err(err) => Err(io(format!("looking at {}", dir.display()))(err)),
        Ok(meta) if !meta.is_dir() => Err(Error::NotOurs(dir.to_owned())),
        Ok(_) => {
            let empty = fs::read_dir(dir)
                .map_err(io("reading the cache directory"))?
                .next()
                .is_none();
            if empty || dir.join(MARKER).exists() {
                Ok(())
            } else {
                Err(Error::NotOurs(dir.to_owned()))
            }
        }
    }
}

impl BlockCache {
    /// Opens (creating, 0700) the cache directory and rebuilds the index from its files.
    pub fn open(dir: &Path, settings: Settings) -> Result<Self, Error> {
        if settings.block_size < CHUNK as u64 || !settings.block_size.is_multiple_of(CHUNK as u64) {
            return Err(Error::Settings(format!(
                "block_size must be a multiple of {CHUNK} bytes"
            )));
        }
        if !(0.0 < settings.low_water
            && settings.low_water < settings.high_water
            && settings.high_water <= 1.0)
        {
            return Err(Error::Settings(
                "need 0 < low_water < high_water <= 1".into(),
            ));
        }
        if SYSTEM_DIRS.iter().any(|d| Path::new(d) == dir) {
            return Err(Error::NotOurs(dir.to_owned()));
        }
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        // A directory that is not ours is left exactly as it is, its permissions included.
        let marker = dir.join(MARKER);
        if !marker.exists() {
            let foreign = fs::read_dir(dir)
                .map_err(io("reading the cache directory"))?
                .next()
                .is_some();
            if foreign {
                return Err(Error::NotOurs(dir.to_owned()));
            }
        }
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io("restricting the cache directory to 0700"))?;
        }
        if !marker.exists() {
            fs::write(&marker, b"warpdrive block cache, format 1\n")
                .map_err(io("writing the cache marker"))?;
        }
        let lock = lock(dir)?;
        let cache = Self {
            dir: dir.to_owned(),
            settings,
            index: Mutex::default(),
            stats: Stats::default(),
            temp_counter: AtomicU64::new(0),
            _lock: lock,
        };
        cache.rebuild()?;
        cache.evict(); // max_size may have been lowered since the last run
        Ok(cache)
    }

    /// The directory was deleted (or emptied) under a running cache: make it whole again, as
    /// `open` would (0700, marker), so the next start still knows it as ours. Blocks that were
    /// in it are gone; the index forgets them.
    fn recreate(&self) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(&self.dir).map_err(io(format!("re-creating {}", self.dir.display())))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io("restricting the cache directory to 0700"))?;
        let marker = self.dir.join(MARKER);
        if !marker.exists() {
            fs::write(&marker, b"warpdrive block cache, format 1\n")
                .map_err(io("writing the cache marker"))?;
            self.index.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(())
    }

    fn rebuild(&self) -> Result<(), Error> {
        let mut index = Index::default();
        let mut old_format = 0u64;
        for shard in fs::read_dir(&self.dir)
            .map_err(io("scanning the cache"))?
            .flatten()
        {
            // Shards are two hex digits; anything else (the state directory) is not blocks.
            let shard_name = shard.file_name();
            let is_shard = shard_name.len() == 2
                && shard_name
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_shard || !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for file in fs::read_dir(shard.path())
                .map_err(io("scanning the cache"))?
                .flatten()
            {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp") {
                    let _ = fs::remove_file(file.path()); // an interrupted write
                    continue;
                }
                let Ok(meta) = file.metadata() else { continue };
                let owner = match read_owner(&file.path()) {
                    Ok(Some(owner)) => owner,
                    _ => {
                        // An older format or a torn header: a cache may always drop a block.
                        old_format += 1;
                        let _ = fs::remove_file(file.path());
                        continue;
                    }
                };
                index.insert(
                    name,
                    Entry {
                        size: meta.len(),
                        reads: 1,
                        last_use: 0,
                    },
                    || owner,
                );
            }
        }
        if old_format > 0 {
            tracing::info!(
                blocks = old_format,
                "dropped cache blocks of an older format (they are fetched again when read)"
            );
        }
        tracing::info!(
            blocks = index.entries.len(),
            bytes = index.total,
            "block cache ready"
        );
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    /// A directory inside the cache's own (0700, locked with it) for the daemon's durable
    /// state, such as warm jobs; created on first use, never scanned as blocks.
    pub fn state_dir(&self) -> Result<PathBuf, Error> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir.join(STATE_DIR);
        fs::create_dir_all(&dir).map_err(io("creating the cache's state directory"))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io("restricting the cache's state directory to 0700"))?;
        Ok(dir)
    }

    /// The configured size limit.
    pub fn max_size(&self) -> u64 {
        self.settings.max_size
    }

    /// Removes every block of `backend` whose key lies under the directory `prefix` (empty:
    /// all of the backend's blocks), whatever object version it belongs to.
    pub fn evict_prefix(&self, backend: &str, prefix: &str) -> Evicted {
        let prefix = prefix.trim_matches('/');
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let digests: std::collections::HashSet<String> = index
            .owners
            .iter()
            .filter(|(_, o)| o.backend == backend && under(&o.key, prefix))
            .map(|(d, _)| d.clone())
            .collect();
        let names: Vec<String> = index
            .entries
            .keys()
            .filter(|name| digests.contains(digest_of(name)))
            .cloned()
            .collect();
        let mut evicted = Evicted::default();
        for name in &names {
            if let Some(entry) = index.remove(name) {
                evicted.blocks += 1;
                evicted.bytes += entry.size;
            }
        }
        drop(index);
        for name in names {
            let _ = fs::remove_file(self.path_of(&name));
        }
        evicted
    }

    /// Blocks, bytes and lookups per backend, for every backend that has blocks or lookups.
    pub fn usage_by_backend(&self) -> Vec<BackendUsage> {
        let mut by: HashMap<String, BackendUsage> = HashMap::new();
        {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            for (name, entry) in &index.entries {
                if let Some(owner) = index.owners.get(digest_of(name)) {
                    let usage = by.entry(owner.backend.clone()).or_default();
                    usage.blocks += 1;
                    usage.bytes += entry.size;
                }
            }
        }
        let lookups = self
            .stats
            .per_backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (backend, l) in lookups {
            by.entry(backend).or_default().lookups = l;
        }
        let mut out: Vec<BackendUsage> = by
            .into_iter()
            .map(|(backend, mut usage)| {
                usage.backend = backend;
                usage
            })
            .collect();
        out.sort_by(|a, b| a.backend.cmp(&b.backend));
        out
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(&name[..2]).join(name)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes of block files on disk.
    pub fn size(&self) -> u64 {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Blocks on disk.
    pub fn blocks(&self) -> usize {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// The block size.
    pub fn block_size(&self) -> u64 {
        self.settings.block_size
    }

    /// Whether the block is stored (not verified, not counted as a read): prefetch and warm
    /// skip what is already here.
    pub fn contains(&self, key: &BlockKey) -> bool {
        let name = key.file_name();
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .contains_key(&name)
    }

    /// `len` bytes at `offset` inside the block, verified; `None` when the block is absent or
    /// was corrupt (then it is removed).
    pub fn get(&self, key: &BlockKey, offset: usize, len: usize) -> Option<Vec<u8>> {
        let name = key.file_name();
        let present = {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            index.clock += 1;
            let clock = index.clock;
            match index.entries.get_mut(&name) {
                Some(entry) => {
                    entry.reads = entry.reads.saturating_add(1);
                    entry.last_use = clock;
                    true
                }
                None => false,
            }
        };
        if !present {
            self.stats.lookup(&key.backend, false);
            return None;
        }
        match self.read_verified(&self.path_of(&name), offset, len) {
            Ok(Some(bytes)) => {
                self.stats.lookup(&key.backend, true);
                self.stats
                    .bytes_served
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Some(bytes)
            }
            Ok(None) => {
                self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(block = %name, "cache block failed its checksum; dropping it");
                self.remove(&name);
                self.stats.lookup(&key.backend, false);
                None
            }
            Err(_) => {
                self.remove(&name);
                self.stats.lookup(&key.backend, false);
                None
            }
        }
    }

    /// Reads and checks only the chunks covering `[offset, offset + len)`. `Ok(None)`: corrupt.
    fn read_verified(
        &self,
        path: &Path,
        offset: usize,
        len: usize,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let mut file = File::open(path)?;
        let mut head = [0u8; FIXED_HEADER];
        file.read_exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Ok(None);
        }
        let data_len = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8])) as usize;
        let owner_len = u32::from_le_bytes(head[16..20].try_into().unwrap_or([0; 4])) as usize;
        let chunks = data_len.div_ceil(CHUNK);
        let mut sums = vec![0u8; 4 * chunks];
        file.seek(SeekFrom::Start((FIXED_HEADER + owner_len) as u64))?;
        file.read_exact(&mut sums)?;
        if offset >= data_len {
            return Ok(Some(Vec::new()));
        }
        let end = (offset + len).min(data_len);
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let start = first * CHUNK;
        let stop = ((last + 1) * CHUNK).min(data_len);
        let mut buf = vec![0u8; stop - start];
        file.seek(SeekFrom::Start(
            (header_len(data_len, owner_len) + start) as u64,
        ))?;
        file.read_exact(&mut buf)?;
        for chunk in first..=last {
            let from = chunk * CHUNK - start;
            let to = ((chunk + 1) * CHUNK).min(data_len) - start;
            let want =
                u32::from_le_bytes(sums[4 * chunk..4 * chunk + 4].try_into().unwrap_or([0; 4]));
            if crc32fast::hash(&buf[from..to]) != want {
                return Ok(None);
            }
        }
        Ok(Some(buf[offset - start..end - start].to_vec()))
    }

    fn remove(&self, name: &str) {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let _ = fs::remove_file(self.path_of(name));
    }

    /// Stores a whole block (the last block of an object may be short), then evicts if needed.
    pub fn put(&self, key: &BlockKey, data: &[u8]) -> Result<(), Error> {
        let name = key.file_name();
        let path = self.path_of(&name);
        let dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.dir.clone());
        if !self.dir.join(MARKER).exists() {
            self.recreate()?;
        }
        fs::create_dir_all(&dir).map_err(io("creating a cache shard"))?;
        let temp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let owner = key.owner_bytes();
        let mut header = Vec::with_capacity(header_len(data.len(), owner.len()));
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        header.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        header.extend_from_slice(&owner);
        for chunk in data.chunks(CHUNK) {
            header.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
        }
        let written = (|| -> std::io::Result<()> {
            let mut file = File::create(&temp)?;
            file.write_all(&header)?;
            file.write_all(data)?;
            fs::rename(&temp, &path)
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&temp);
            return Err(io("writing a block")(err));
        }
        {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            index.clock += 1;
            let clock = index.clock;
            let size = (header.len() + data.len()) as u64;
            index.insert(
                name,
                Entry {
                    size,
                    reads: 0,
                    last_use: clock,
                },
                || (key.backend.clone(), key.key.clone()),
            );
        }
        self.evict();
        Ok(())
    }

    /// Evicts down to the low-water mark once above the high-water mark.
    fn evict(&self) {
        let max = self.settings.max_size as f64;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if (index.total as f64) <= max * self.settings.high_water {
            return;
        }
        let target = (max * self.settings.low_water) as u64;
        // Read-once (or never re-read) blocks first, then the rest; oldest first in each group.
        let mut order: Vec<(bool, u64, String)> = index
            .entries
            .iter()
            .map(|(name, e)| (e.reads > 1, e.last_use, name.clone()))
            .collect();
        order.sort();
        let mut gone = Vec::new();
        for (_, _, name) in order {
            if index.total <= target {
                break;
            }
            if index.remove(&name).is_some() {
                gone.push(name);
            }
        }
        drop(index);
        self.stats
            .evictions
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        for name in gone {
            let _ = fs::remove_file(self.path_of(&name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: u64) -> Settings {
        Settings {
            max_size: max,
            block_size: 256 * 1024,
            high_water: 0.9,
            low_water: 0.8,
        }
    }

    fn key(name: &str, index: u64) -> BlockKey {
        BlockKey {
            backend: "b".into(),
            key: name.into(),
            etag: "e1".into(),
            index,
        }
    }

    fn block(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn owned(backend: &str, name: &str, etag: &str, index: u64) -> BlockKey {
        BlockKey {
            backend: backend.into(),
            key: name.into(),
            etag: etag.into(),
            index,
        }
    }

    #[test]
    fn evicting_a_prefix_drops_every_version_under_it_and_nothing_else_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        for (backend, name, etag) in [
            ("s3", "train/a.bin", "v1"),
            ("s3", "train/a.bin", "v2"),
            ("s3", "train/deep/b.bin", "v1"),
            ("s3", "training/c.bin", "v1"), // shares a string prefix, not a directory
            ("s3", "eval/d.bin", "v1"),
            ("gcs", "train/a.bin", "v1"),
        ] {
            for i in 0..3 {
                cache
                    .put(&owned(backend, name, etag, i), &block(1, 1000))
                    .unwrap();
            }
        }
        drop(cache);
        // The owners come back from the block headers.
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        let before = cache.size();
        let evicted = cache.evict_prefix("s3", "/train/");
        assert_eq!(evicted.blocks, 9);
        assert_eq!(cache.size(), before - evicted.bytes);
        assert!(
            cache
                .get(&owned("s3", "train/a.bin", "v2", 0), 0, 10)
                .is_none()
        );
        assert!(
            cache
                .get(&owned("s3", "train/deep/b.bin", "v1", 2), 0, 10)
                .is_none()
        );
        assert!(
            cache
                .get(&owned("s3", "training/c.bin", "v1", 0), 0, 10)
                .is_some()
        );
        assert!(
            cache
                .get(&owned("gcs", "train/a.bin", "v1", 0), 0, 10)
                .is_some()
        );
        let usage = cache.usage_by_backend();
        let s3 = usage.iter().find(|u| u.backend == "s3").unwrap();
        assert_eq!(s3.blocks, 6);
        assert_eq!(s3.lookups, Lookups { hits: 1, misses: 2 });
        let gcs = usage.iter().find(|u| u.backend == "gcs").unwrap();
        assert_eq!((gcs.blocks, gcs.lookups.hits), (3, 1));
        assert_eq!(cache.evict_prefix("s3", "").blocks, 6);
        assert_eq!(cache.blocks(), 3);
        drop(cache);
        let again = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        assert_eq!(again.blocks(), 3, "evicted files are gone from disk");
    }

    #[test]
    fn the_state_directory_is_not_taken_for_blocks_and_old_format_blocks_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        cache.put(&key("a", 0), &block(1, 1000)).unwrap();
        let state = cache.state_dir().unwrap();
        fs::write(state.join("job-1.json"), b"{}").unwrap();
        // A block of the first format, which did not name its object.
        let old = dir
            .path()
            .join("ab")
            .join("abababababababababababababababab-0");
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        fs::write(&old, b"WDBLK001\x05\0\0\0\0\0\0\0").unwrap();
        drop(cache);
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        assert_eq!(cache.blocks(), 1);
        assert!(state.join("job-1.json").exists(), "state is kept");
        assert!(!old.exists(), "an old-format block is dropped");
        assert_eq!(cache.get(&key("a", 0), 0, 1000).unwrap(), block(1, 1000));
    }

    #[test]
    fn a_directory_deleted_under_a_running_cache_comes_back_whole() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("cache");
        let cache = BlockCache::open(&dir, settings(1 << 30)).unwrap();
        cache.put(&key("a", 0), &block(1, 1000)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        cache.put(&key("b", 0), &block(2, 1000)).unwrap();
        assert!(dir.join(MARKER).exists(), "marker re-created");
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(
            cache.get(&key("a", 0), 0, 10).is_none(),
            "gone blocks are misses"
        );
        assert_eq!(cache.get(&key("b", 0), 0, 1000).unwrap(), block(2, 1000));
        drop(cache);
        // The next start knows it as its own.
        let again = BlockCache::open(&dir, settings(1 << 30)).unwrap();
        assert_eq!(again.get(&key("b", 0), 0, 1000).unwrap(), block(2, 1000));
    }

    #[test]
    fn a_foreign_or_system_directory_is_refused_and_left_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("theirs.txt"), b"x").unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(check_dir(dir.path()), Err(Error::NotOurs(_))));
        let err = BlockCache::open(dir.path(), settings(1 << 30)).unwrap_err();
        assert!(matches!(err, Error::NotOurs(_)), "{err}");
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "its permissions were changed");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "files added");
        for system in ["/etc", "/", "/usr"] {
            assert!(matches!(
                check_dir(Path::new(system)),
                Err(Error::NotOurs(_))
            ));
        }
        let fresh = dir.path().join("new");
        check_dir(&fresh).unwrap();
        assert!(!fresh.exists(), "a check changes nothing");
    }

    #[test]
    fn the_lock_names_the_holder_and_a_process_may_reopen_its_own_cache() {
        // Another process is refused (the binary's tests start a second daemon); the same
        // process reopening its cache, as in-process restarts in tests do, is not.
        let dir = tempfile::tempdir().unwrap();
        let first = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        let pid: u32 = fs::read_to_string(dir.path().join(LOCK))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
        let again = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        drop((first, again));
    }

    #[test]
    fn ranges_round_trip_and_versions_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        let data = block(7, 200_000);
        cache.put(&key("obj", 0), &data).unwrap();
        for (offset, len) in [
            (0, 10),
            (65_530, 20),
            (199_990, 100),
            (0, 200_000),
            (300_000, 5),
        ] {
            let got = cache.get(&key("obj", 0), offset, len).unwrap();
            assert_eq!(
                got,
                data[offset.min(data.len())..(offset + len).min(data.len())],
                "{offset}+{len}"
            );
        }
        let other_version = BlockKey {
            etag: "e2".into(),
            ..key("obj", 0)
        };
        assert!(
            cache.get(&other_version, 0, 10).is_none(),
            "a new ETag never reads old blocks"
        );
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn corruption_is_detected_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        cache.put(&key("obj", 3), &block(1, 150_000)).unwrap();
        let path = cache.path_of(&key("obj", 3).file_name());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(
            cache.get(&key("obj", 3), 0, 10).is_some(),
            "the first chunk is intact and still served"
        );
        assert!(
            cache.get(&key("obj", 3), 140_000, 100).is_none(),
            "the damaged chunk is caught"
        );
        assert_eq!(cache.stats().checksum_failures.load(Ordering::Relaxed), 1);
        assert!(!path.exists() && cache.blocks() == 0, "dropped");
    }

    #[test]
    fn restart_rebuilds_sizes_and_clears_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
            for i in 0..50 {
                cache.put(&key("obj", i), &block(i as u8, 100_000)).unwrap();
            }
            fs::write(
                cache
                    .path_of(&key("obj", 0).file_name())
                    .with_file_name(".tmp-999-1"),
                b"partial",
            )
            .unwrap();
        }
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        assert_eq!(cache.blocks(), 50);
        assert_eq!(
            cache.size(),
            50 * (100_000 + header_len(100_000, key("obj", 0).owner_bytes().len()) as u64)
        );
        assert_eq!(
            cache.get(&key("obj", 42), 5, 5).unwrap(),
            block(42, 100_000)[5..10]
        );
        // A directory that is not ours is refused, not wiped.
        let foreign = tempfile::tempdir().unwrap();
        fs::write(foreign.path().join("precious.txt"), b"x").unwrap();
        assert!(matches!(
            BlockCache::open(foreign.path(), settings(1 << 30)),
            Err(Error::NotOurs(_))
        ));
        assert!(foreign.path().join("precious.txt").exists());
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set_and_the_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let size = 100_000 + header_len(100_000, key("obj", 0).owner_bytes().len()) as u64;
        let cache = BlockCache::open(dir.path(), settings(20 * size)).unwrap();
        for i in 0..5 {
            cache.put(&key("hot", i), &block(1, 100_000)).unwrap();
            for _ in 0..3 {
                cache.get(&key("hot", i), 0, 10).unwrap();
            }
        }
        for i in 0..100 {
            cache.put(&key("scan", i), &block(2, 100_000)).unwrap();
            assert!(cache.size() <= 20 * size, "never past the limit");
        }
        for i in 0..5 {
            assert!(
                cache.get(&key("hot", i), 0, 10).is_some(),
                "hot block {i} survived the scan"
            );
        }
        assert!(cache.stats().evictions.load(Ordering::Relaxed) > 0);
    }
}
