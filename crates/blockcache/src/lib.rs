//! A block cache on local disk (warpdrive's cache on NVMe). Everything is keyed by backend,
//! object key and object version (ETag), so a changed object can never be served from old
//! bytes.
//!
//! Layout (format 3, see [`record`]): one sparse data file per cached object version, its
//! bytes written in place at their own offsets, so a cold read of an object creates one file
//! however many blocks it has, and a whole object is a plain file the kernel can read itself
//! (FUSE passthrough, [`BlockCache::backing`]). Beside it a record file lists the ranges present
//! with a CRC32 per 64 KiB chunk: a read touches and verifies only the chunks it needs, and a
//! corrupt range is dropped and counted.
//!
//! Crash safety without a second source of truth: the record is the only index, appended
//! after the bytes it describes; at open every record is read back to rebuild sizes and
//! owners, torn tails are cut off, and bytes that never reached the disk fail their checksums.
//! Files of the older one-file-per-block format are removed at open, with a log line.
//! Eviction starts above the high-water mark and stops at the low-water mark, taking ranges
//! read only once before ranges that keep being re-read, least recently used first within each
//! group, so one scan of a large dataset cannot flush the hot set; an evicted range's disk
//! space is given back by punching a hole.
//!
//! This crate knows no backend, FUSE or async runtime: callers run it on blocking threads.

mod index;
pub mod record;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::index::{Index, Object};
use crate::record::{Entry, Header};

const MARKER: &str = "warpdrive-blockcache.v1";
/// What the marker says: the format of the files beside it.
const MARKER_TEXT: &[u8] = b"warpdrive block cache, format 3\n";
/// Held locked (exclusively) for as long as a cache is open; it holds the holder's PID.
const LOCK: &str = "lock";
/// A directory beside the shards for the daemon's own durable state (warm jobs).
const STATE_DIR: &str = "state";
/// Bytes covered by one checksum.
pub const CHUNK: usize = 64 * 1024;
/// Writers to one object are serialised on one of these (chosen by its digest).
const STRIPES: usize = 64;
/// Bytes verified per read when a whole object is checked before it is handed out.
const VERIFY_STEP: usize = 16 * CHUNK;

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
    /// The object version's file name: a hash, so keys of any length and character are safe.
    fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for part in [&self.backend, &self.key, &self.etag] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        hash.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
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
    index: Arc<Mutex<Index>>,
    stats: Stats,
    /// Serialise the file work on one object (create, write, punch, delete).
    stripes: Vec<Mutex<()>>,
    /// Whether the cache's filesystem takes O_DIRECT writes (until one is refused).
    direct: std::sync::atomic::AtomicBool,
    temp_counter: AtomicU64,
    /// The exclusive lock on the directory, released when the cache is dropped.
    _lock: File,
}

/// A whole, verified cached object version held open for the kernel to read directly: while
/// it lives, the object is neither evicted nor punched, so the kernel never reads a hole.
#[derive(Debug)]
pub struct Backing {
    file: File,
    digest: String,
    generation: u64,
    index: Arc<Mutex<Index>>,
}

impl Backing {
    /// The data file, holding the object's bytes at their own offsets.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(object) = index.objects.get_mut(&self.digest)
            && object.generation == self.generation
        {
            object.pins = object.pins.saturating_sub(1);
        }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Punches `[offset, offset + len)` out of `file`, giving the disk space back.
fn punch(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .map_err(std::io::Error::from)
}

/// Whether `name` is a shard directory's (two hex digits).
fn is_shard(name: &std::ffi::OsStr) -> bool {
    name.len() == 2
        && name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl BlockCache {
    /// Opens (creating, 0700) the cache directory and rebuilds the index from its records.
    pub fn open(dir: &Path, settings: Settings) -> Result<Self, Error> {
        if settings.block_size < CHUNK as u64 || !settings.block_size.is_multiple_of(CHUNK as u64) {
            return Err(Error::Settings(format!(
                "block_size must be a multiple of {CHUNK} bytes"
            )));
        }
        if settings.block_size > u64::from(u32::MAX) / 2 {
            return Err(Error::Settings("block_size must be below 2 GiB".into()));
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
        let lock = lock(dir)?;
        let cache = Self {
            dir: dir.to_owned(),
            settings,
            index: Arc::default(),
            stats: Stats::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            direct: std::sync::atomic::AtomicBool::new(true),
            temp_counter: AtomicU64::new(0),
            _lock: lock,
        };
        cache.rebuild()?;
        if fs::read(&marker).ok().as_deref() != Some(MARKER_TEXT) {
            fs::write(&marker, MARKER_TEXT).map_err(io("writing the cache marker"))?;
        }
        cache.evict(); // max_size may have been lowered since the last run
        Ok(cache)
    }

    /// The directory was deleted (or emptied) under a running cache: make it whole again, as
    /// `open` would (0700, marker), so the next start still knows it as ours. Objects that were
    /// in it are gone; the index forgets them.
    fn recreate(&self) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(&self.dir).map_err(io(format!("re-creating {}", self.dir.display())))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io("restricting the cache directory to 0700"))?;
        let marker = self.dir.join(MARKER);
        if !marker.exists() {
            fs::write(&marker, MARKER_TEXT).map_err(io("writing the cache marker"))?;
            locked(&self.index).clear();
        }
        Ok(())
    }

    fn path_of(&self, digest: &str, ext: &str) -> PathBuf {
        self.dir.join(&digest[..2]).join(format!("{digest}.{ext}"))
    }

    fn stripe(&self, digest: &str) -> MutexGuard<'_, ()> {
        let at = usize::from_str_radix(&digest[..2], 16).unwrap_or(0) % STRIPES;
        locked(&self.stripes[at])
    }

    /// Reads every record back: the index as it was, less torn tails and unreadable files.
    fn rebuild(&self) -> Result<(), Error> {
        let mut index = Index::default();
        let mut old_format = 0u64;
        let mut torn = 0u64;
        for shard in fs::read_dir(&self.dir)
            .map_err(io("scanning the cache"))?
            .flatten()
        {
            // Shards are two hex digits; anything else (the state directory) is not ours to scan.
            if !is_shard(&shard.file_name()) || !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for file in fs::read_dir(shard.path())
                .map_err(io("scanning the cache"))?
                .flatten()
            {
                let name = file.file_name().to_string_lossy().into_owned();
                let path = file.path();
                if let Some(digest) = name.strip_suffix(".rec") {
                    match self.load(digest, &path) {
                        Some(mut object) if !object.units.is_empty() => {
                            object.generation = index.tick();
                            index.total += object.bytes;
                            index.units += object.units.len() as u64;
                            index.objects.insert(digest.to_owned(), object);
                        }
                        Some(_) => self.delete_files(digest),
                        None => {
                            torn += 1;
                            self.delete_files(digest);
                        }
                    }
                } else if let Some(digest) = name.strip_suffix(".data") {
                    if !self.path_of(digest, "rec").exists() {
                        let _ = fs::remove_file(&path); // its record never got written
                    }
                } else {
                    // An interrupted compaction, or a block of the one-file-per-block format.
                    if !name.starts_with(".tmp") {
                        old_format += 1;
                    }
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if old_format > 0 {
            tracing::info!(
                files = old_format,
                "removed cache files of the older one-file-per-block format (format 2); their objects are fetched again when read"
            );
        }
        if torn > 0 {
            tracing::info!(
                objects = torn,
                "removed cached objects whose record was unreadable (a crash while it was created)"
            );
        }
        tracing::info!(
            objects = index.objects.len(),
            ranges = index.units,
            bytes = index.total,
            "block cache ready"
        );
        *locked(&self.index) = index;
        Ok(())
    }

    /// One object from its record: `None` when the record or its data file is unusable. Cuts
    /// a torn tail off and rewrites a record that is mostly dead entries.
    fn load(&self, digest: &str, path: &Path) -> Option<Object> {
        let bytes = fs::read(path).ok()?;
        let (header, start) = Header::decode(&bytes)?;
        if header.block_size != self.settings.block_size {
            return None; // another block size: its ranges do not line up with ours
        }
        let data = self.path_of(digest, "data");
        if !data.exists() {
            return None;
        }
        let (entries, used) = Entry::decode_all(&bytes[start..]);
        let mut object = Object::new(header);
        for entry in &entries {
            object.apply(entry, 0);
        }
        let live = object.units.len() as u64;
        if start + used < bytes.len() || object.entries > 2 * live + 16 {
            let mut compact = object.header.encode();
            for (offset, unit) in &object.units {
                compact.extend_from_slice(
                    &Entry::Present {
                        offset: *offset,
                        len: unit.len,
                        sums: unit.sums.to_vec(),
                    }
                    .encode(),
                );
            }
            let temp = path.with_file_name(format!(".tmp-rec-{}", std::process::id()));
            if fs::write(&temp, &compact).is_ok() && fs::rename(&temp, path).is_ok() {
                object.entries = live;
            } else {
                let _ = fs::remove_file(&temp);
                return None;
            }
        }
        // Rebuilt ranges count as read once: a restart must not make the hot set look cold.
        for unit in object.units.values_mut() {
            unit.reads = 1;
        }
        Some(object)
    }

    fn delete_files(&self, digest: &str) {
        let _ = fs::remove_file(self.path_of(digest, "rec"));
        let _ = fs::remove_file(self.path_of(digest, "data"));
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

    /// Removes every cached object of `backend` whose key lies under the directory `prefix`
    /// (empty: all of the backend's), whatever version it is.
    pub fn evict_prefix(&self, backend: &str, prefix: &str) -> Evicted {
        let prefix = prefix.trim_matches('/');
        let digests: Vec<String> = locked(&self.index)
            .objects
            .iter()
            .filter(|(_, o)| o.header.backend == backend && under(&o.header.key, prefix))
            .map(|(d, _)| d.clone())
            .collect();
        let mut evicted = Evicted::default();
        for digest in digests {
            let _stripe = self.stripe(&digest);
            let removed = locked(&self.index).remove(&digest);
            if let Some(object) = removed {
                evicted.blocks += object.units.len() as u64;
                evicted.bytes += object.bytes;
                // An open backing file keeps its inode: the kernel reads on, undisturbed.
                self.delete_files(&digest);
            }
        }
        evicted
    }

    /// Ranges, bytes and lookups per backend, for every backend that has ranges or lookups.
    pub fn usage_by_backend(&self) -> Vec<BackendUsage> {
        let mut by: HashMap<String, BackendUsage> = HashMap::new();
        for object in locked(&self.index).objects.values() {
            let usage = by.entry(object.header.backend.clone()).or_default();
            usage.blocks += object.units.len() as u64;
            usage.bytes += object.bytes;
        }
        let lookups = locked(&self.stats.per_backend).clone();
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

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes of cached data.
    pub fn size(&self) -> u64 {
        locked(&self.index).total
    }

    /// Ranges on disk (a block, or the part of one a random read fetched).
    pub fn blocks(&self) -> usize {
        locked(&self.index).units as usize
    }

    /// Object versions with something on disk.
    pub fn objects(&self) -> usize {
        locked(&self.index).objects.len()
    }

    /// The block size.
    pub fn block_size(&self) -> u64 {
        self.settings.block_size
    }

    /// The byte range block `key` spans, given what its object's record says of its length.
    fn block_range(&self, object: &Object, index: u64) -> (u64, u64) {
        let start = index * self.settings.block_size;
        (
            start,
            (start + self.settings.block_size).min(object.header.length),
        )
    }

    /// Whether the whole block is stored (not verified, not counted as a read): prefetch and
    /// warm skip what is already here.
    pub fn contains(&self, key: &BlockKey) -> bool {
        let digest = key.digest();
        let index = locked(&self.index);
        index.objects.get(&digest).is_some_and(|object| {
            let (start, end) = self.block_range(object, key.index);
            start < end && object.covering(start, end).is_some()
        })
    }

    /// `len` bytes at `offset` inside the block, verified; `None` when any of them is absent or
    /// was corrupt (then that range is dropped).
    pub fn get(&self, key: &BlockKey, offset: usize, len: usize) -> Option<Bytes> {
        let digest = key.digest();
        let start = key.index * self.settings.block_size + offset as u64;
        let found = {
            let mut index = locked(&self.index);
            let clock = index.tick();
            match index.objects.get_mut(&digest) {
                Some(object) => {
                    let end = (start + len as u64).min(object.header.length.max(start));
                    object.covering(start, end.max(start + 1)).map(|units| {
                        let pieces: Vec<(u64, Box<[u32]>)> = units
                            .iter()
                            .filter_map(|at| {
                                let unit = object.units.get_mut(at)?;
                                unit.reads = unit.reads.saturating_add(1);
                                unit.last_use = clock;
                                Some((*at, unit.sums.clone()))
                            })
                            .collect();
                        (end, pieces)
                    })
                }
                None => None,
            }
        };
        let Some((end, pieces)) = found else {
            self.stats.lookup(&key.backend, false);
            return None;
        };
        match self.read_verified(&digest, start, end, &pieces) {
            Ok(bytes) => {
                self.stats.lookup(&key.backend, true);
                self.stats
                    .bytes_served
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Some(bytes)
            }
            Err(bad) => {
                if let Some(unit) = bad {
                    self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(object = %digest, offset = unit, "a cached range failed its checksum; dropping it");
                    self.drop_range(&digest, unit);
                } else {
                    // The data file is gone or unreadable: nothing of it can be trusted.
                    let _stripe = self.stripe(&digest);
                    locked(&self.index).remove(&digest);
                    self.delete_files(&digest);
                }
                self.stats.lookup(&key.backend, false);
                None
            }
        }
    }

    /// Reads `[start, end)` (which `pieces`, units by offset with their sums, cover without a
    /// gap) with one read into one buffer, and checks every chunk it touches; the bytes are
    /// handed out as a slice of that buffer, not copied again. `Err(Some(unit))`: that unit is
    /// corrupt; `Err(None)`: the file could not be read.
    fn read_verified(
        &self,
        digest: &str,
        start: u64,
        end: u64,
        pieces: &[(u64, Box<[u32]>)],
    ) -> Result<Bytes, Option<u64>> {
        let file = File::open(self.path_of(digest, "data")).map_err(|_| None)?;
        let chunk = CHUNK as u64;
        let lo = start / chunk * chunk;
        // Where the covering pieces end, chunk-rounded (the last chunk of an object is short).
        let covered = pieces
            .last()
            .map_or(end, |(at, sums)| at + sums.len() as u64 * chunk);
        let hi = (end.div_ceil(chunk) * chunk).min(covered);
        let mut buf = vec![0u8; (hi - lo) as usize];
        let got = read_at_most(&file, &mut buf, lo).map_err(|_| None)?;
        buf.truncate(got);
        let mut piece = 0;
        for (i, bytes) in buf.chunks(CHUNK).enumerate() {
            let pos = lo + i as u64 * chunk;
            while pieces.get(piece + 1).is_some_and(|(next, _)| *next <= pos) {
                piece += 1;
            }
            let (at, sums) = &pieces[piece];
            let n = ((pos - at) / chunk) as usize;
            if sums
                .get(n)
                .is_none_or(|want| crc32fast::hash(bytes) != *want)
            {
                return Err(Some(*at));
            }
        }
        if (got as u64) < end - lo {
            // Shorter than its record says: the last piece is not all there.
            return Err(Some(pieces.last().map_or(lo, |(at, _)| *at)));
        }
        Ok(Bytes::from(buf).slice((start - lo) as usize..(end - lo) as usize))
    }

    /// Gives up one range of an object (a corrupt one): a punched hole and a record entry; a
    /// whole object being read by the kernel is unlinked instead, never punched.
    fn drop_range(&self, digest: &str, offset: u64) {
        let _stripe = self.stripe(digest);
        let (len, pinned, empty) = {
            let mut index = locked(&self.index);
            let pinned = index.objects.get(digest).is_some_and(|o| o.pins > 0);
            if pinned {
                index.remove(digest);
                (None, true, true)
            } else {
                let len = index.remove_unit(digest, offset);
                let empty = index.objects.get(digest).is_none_or(|o| o.units.is_empty());
                if empty {
                    index.remove(digest);
                }
                (len, false, empty)
            }
        };
        if pinned || empty {
            self.delete_files(digest);
        } else if let Some(len) = len {
            self.write_dropped(digest, &[(offset, len)]);
        }
    }

    /// Punches the ranges out of the data file and records them as dropped.
    fn write_dropped(&self, digest: &str, ranges: &[(u64, u32)]) {
        if let Ok(file) = fs::OpenOptions::new()
            .write(true)
            .open(self.path_of(digest, "data"))
        {
            for (offset, len) in ranges {
                let _ = punch(&file, *offset, u64::from(*len));
            }
        }
        if let Ok(mut rec) = fs::OpenOptions::new()
            .append(true)
            .open(self.path_of(digest, "rec"))
        {
            let mut bytes = Vec::new();
            for (offset, len) in ranges {
                bytes.extend_from_slice(
                    &Entry::Dropped {
                        offset: *offset,
                        len: *len,
                    }
                    .encode(),
                );
            }
            let _ = rec.write_all(&bytes);
        }
    }

    /// Stores a whole block of an object `length` bytes long (the last block is short), then
    /// evicts if needed.
    pub fn put(&self, key: &BlockKey, length: u64, data: &[u8]) -> Result<(), Error> {
        self.put_at(key, length, 0, data)
    }

    /// Stores `data` at `offset` inside block `key` (a random read's part of a block; `offset`
    /// a multiple of [`CHUNK`], `data` whole chunks unless it ends the object), then evicts
    /// if needed.
    pub fn put_at(
        &self,
        key: &BlockKey,
        length: u64,
        offset: usize,
        data: &[u8],
    ) -> Result<(), Error> {
        let start = key.index * self.settings.block_size + offset as u64;
        let end = start + data.len() as u64;
        if !offset.is_multiple_of(CHUNK)
            || data.is_empty()
            || offset + data.len() > self.settings.block_size as usize
            || end > length
            || (!data.len().is_multiple_of(CHUNK) && end != length)
        {
            return Err(Error::Settings(format!(
                "a cache write of {} bytes at {start} does not line up with {CHUNK}-byte chunks of an object of {length} bytes",
                data.len()
            )));
        }
        let digest = key.digest();
        let stripe = self.stripe(&digest);
        if !self.dir.join(MARKER).exists() {
            self.recreate()?;
        }
        let known = {
            let index = locked(&self.index);
            match index.objects.get(&digest) {
                Some(object) if object.covering(start, end).is_some() => return Ok(()),
                Some(object) => object.header.length == length,
                None => false,
            }
        };
        if !known {
            self.create_object(&digest, key, length)?;
        }
        let entry = Entry::present(start, data);
        let file = match fs::OpenOptions::new()
            .write(true)
            .open(self.path_of(&digest, "data"))
        {
            Ok(file) => file,
            Err(err) => {
                // The files went away under us: start the object again next time.
                locked(&self.index).remove(&digest);
                self.delete_files(&digest);
                return Err(io("opening a cached object")(err));
            }
        };
        let written = self.write_data(&digest, &file, data, start).and_then(|()| {
            fs::OpenOptions::new()
                .append(true)
                .open(self.path_of(&digest, "rec"))?
                .write_all(&entry.encode())
        });
        if let Err(err) = written {
            // A full disk: the range is not recorded, so never served; give back what of it
            // was written. A torn record entry ends the record at the next start, which
            // costs only this range.
            let _ = punch(&file, start, data.len() as u64);
            return Err(io("writing a block")(err));
        }
        locked(&self.index).apply(&digest, &entry);
        drop(stripe);
        self.evict();
        Ok(())
    }

    /// Writes `data` at `start` of an object's data file: the whole 4 KiB pages of it with
    /// O_DIRECT when the bytes lie on page boundaries in memory and on disk (so they are not
    /// copied into the page cache: a cold read then costs one copy less per byte), the rest
    /// buffered. A filesystem that refuses O_DIRECT (tmpfs) is written buffered from then on.
    fn write_data(
        &self,
        digest: &str,
        file: &File,
        data: &[u8],
        start: u64,
    ) -> std::io::Result<()> {
        const PAGE: usize = 4096;
        let direct_len = data.len() / PAGE * PAGE;
        let mut done = 0;
        if self.direct.load(Ordering::Relaxed)
            && direct_len > 0
            && start.is_multiple_of(PAGE as u64)
            && (data.as_ptr() as usize).is_multiple_of(PAGE)
        {
            use std::os::unix::fs::OpenOptionsExt;
            let opened = fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(self.path_of(digest, "data"));
            match opened.and_then(|direct| direct.write_all_at(&data[..direct_len], start)) {
                Ok(()) => done = direct_len,
                Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.direct.store(false, Ordering::Relaxed);
                    tracing::debug!(%err, "the cache's filesystem refuses O_DIRECT; writing through the page cache");
                }
                Err(err) => return Err(err),
            }
        }
        file.write_all_at(&data[done..], start + done as u64)
    }

    /// Starts an object's files (a record with only its header, an empty data file) and its
    /// index entry, replacing whatever was there.
    fn create_object(&self, digest: &str, key: &BlockKey, length: u64) -> Result<(), Error> {
        locked(&self.index).remove(digest);
        let header = Header {
            block_size: self.settings.block_size,
            length,
            backend: key.backend.clone(),
            key: key.key.clone(),
            etag: key.etag.clone(),
        };
        let rec = self.path_of(digest, "rec");
        if let Some(shard) = rec.parent() {
            fs::create_dir_all(shard).map_err(io("creating a cache shard"))?;
        }
        let made = (|| -> std::io::Result<()> {
            File::create(self.path_of(digest, "data"))?;
            let temp = rec.with_file_name(format!(
                ".tmp-{}-{}",
                std::process::id(),
                self.temp_counter.fetch_add(1, Ordering::Relaxed)
            ));
            fs::write(&temp, header.encode())?;
            fs::rename(&temp, &rec)
        })();
        if let Err(err) = made {
            self.delete_files(digest);
            return Err(io("creating a cached object")(err));
        }
        let mut index = locked(&self.index);
        let mut object = Object::new(header);
        object.generation = index.tick();
        index.objects.insert(digest.to_owned(), object);
        Ok(())
    }

    /// The whole cached object version, its checksums all checked once since the cache was
    /// opened, held open for the kernel to read directly (FUSE passthrough). `None` when any
    /// of it is missing or corrupt (the corrupt range is dropped).
    pub fn backing(&self, key: &BlockKey, length: u64) -> Option<Backing> {
        let digest = key.digest();
        let (verified, sums, generation) = {
            let mut index = locked(&self.index);
            let object = index.objects.get_mut(&digest)?;
            if object.header.length != length || length == 0 || !object.complete() {
                return None;
            }
            object.pins += 1;
            let sums: Vec<(u64, Box<[u32]>)> = if object.verified {
                Vec::new()
            } else {
                object
                    .units
                    .iter()
                    .map(|(at, unit)| (*at, unit.sums.clone()))
                    .collect()
            };
            (object.verified, sums, object.generation)
        };
        let file = match File::open(self.path_of(&digest, "data")) {
            Ok(file) => file,
            Err(_) => {
                if let Some(object) = locked(&self.index).objects.get_mut(&digest)
                    && object.generation == generation
                {
                    object.pins = object.pins.saturating_sub(1);
                }
                return None;
            }
        };
        let backing = Backing {
            file,
            digest,
            generation,
            index: self.index.clone(),
        };
        if !verified {
            if let Err(bad) = verify(&backing.file, &sums, length) {
                let digest = backing.digest.clone();
                drop(backing);
                self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(object = %digest, offset = bad, "a cached range failed its checksum; dropping it");
                self.drop_range(&digest, bad);
                return None;
            }
            if let Some(object) = locked(&self.index).objects.get_mut(&backing.digest)
                && object.generation == generation
            {
                object.verified = true;
            }
        }
        self.stats.lookup(&key.backend, true);
        Some(backing)
    }

    /// Evicts down to the low-water mark once above the high-water mark. Objects the kernel
    /// is reading directly are skipped.
    fn evict(&self) {
        let max = self.settings.max_size as f64;
        let victims: Vec<(String, u64)> = {
            let index = locked(&self.index);
            if (index.total as f64) <= max * self.settings.high_water {
                return;
            }
            let target = (max * self.settings.low_water) as u64;
            // Read-once (or never re-read) ranges first, then the rest; oldest first in each.
            let mut order: Vec<(bool, u64, &String, u64, u32)> = index
                .objects
                .iter()
                .filter(|(_, o)| o.pins == 0)
                .flat_map(|(digest, o)| {
                    o.units
                        .iter()
                        .map(move |(at, u)| (u.reads > 1, u.last_use, digest, *at, u.len))
                })
                .collect();
            order.sort_unstable();
            let mut total = index.total;
            let mut victims = Vec::new();
            for (_, _, digest, at, len) in order {
                if total <= target {
                    break;
                }
                total -= u64::from(len);
                victims.push((digest.clone(), at));
            }
            victims
        };
        let mut by_object: HashMap<String, Vec<u64>> = HashMap::new();
        for (digest, at) in victims {
            by_object.entry(digest).or_default().push(at);
        }
        let mut evicted = 0u64;
        for (digest, ranges) in by_object {
            let _stripe = self.stripe(&digest);
            let (gone, empty) = {
                let mut index = locked(&self.index);
                if index.objects.get(&digest).is_none_or(|o| o.pins > 0) {
                    continue;
                }
                let gone: Vec<(u64, u32)> = ranges
                    .into_iter()
                    .filter_map(|at| index.remove_unit(&digest, at).map(|len| (at, len)))
                    .collect();
                let empty = index
                    .objects
                    .get(&digest)
                    .is_none_or(|o| o.units.is_empty());
                if empty {
                    index.remove(&digest);
                }
                (gone, empty)
            };
            evicted += gone.len() as u64;
            if empty {
                self.delete_files(&digest);
            } else {
                self.write_dropped(&digest, &gone);
            }
        }
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
    }
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(got)
}

/// Checks every chunk of a whole object's data file against its units' sums; `Err(unit)`
/// names the first unit that fails.
fn verify(file: &File, units: &[(u64, Box<[u32]>)], length: u64) -> Result<(), u64> {
    let mut buf = vec![0u8; VERIFY_STEP];
    for (at, sums) in units {
        let unit_end = (at + sums.len() as u64 * CHUNK as u64).min(length);
        let mut pos = *at;
        while pos < unit_end {
            let want = ((unit_end - pos) as usize).min(VERIFY_STEP);
            let got = read_at_most(file, &mut buf[..want], pos).map_err(|_| *at)?;
            if got < want {
                return Err(*at);
            }
            for (i, bytes) in buf[..want].chunks(CHUNK).enumerate() {
                let n = ((pos - at) / CHUNK as u64) as usize + i;
                if sums.get(n).is_none_or(|s| crc32fast::hash(bytes) != *s) {
                    return Err(*at);
                }
            }
            pos += want as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
