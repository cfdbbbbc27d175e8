//! Blocks: the read path through the block cache. One fetch per block however many readers
//! miss it (claims published through `watch` channels), runs of missing blocks in one ranged
//! GET cut into blocks as the body arrives, and cache writes behind the readers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blockcache::{BlockCache, BlockKey};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::{GetOptions, GetRange};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::core::{Backend, Core};
use crate::error::FsError;
use crate::inodes::{Node, join, store_path};
use crate::recent::RecentBlocks;

/// A block being fetched: resolves to its bytes or the error that stopped it.
pub(crate) type Flight = watch::Receiver<Option<Result<Bytes, FsError>>>;

/// A claim on a block: the fetcher publishes the block's bytes through it.
pub(crate) type Claim = (BlockKey, watch::Sender<Option<Result<Bytes, FsError>>>);

/// Waits for a block someone else is fetching; `None` when that fetch was abandoned.
pub(crate) async fn wait_for(mut flight: Flight) -> Option<Result<Bytes, FsError>> {
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
pub(crate) struct Object {
    pub(crate) backend: usize,
    pub(crate) key: String,
    pub(crate) etag: String,
    pub(crate) length: u64,
}

impl Object {
    pub(crate) fn block(&self, backends: &[Backend], index: u64) -> BlockKey {
        BlockKey {
            backend: backends[self.backend].name.clone(),
            key: self.key.clone(),
            etag: self.etag.clone(),
            index,
        }
    }

    /// The GET range for `[start, end)`: none for the whole object, since some servers (moto
    /// among them) do more work for a range than for a plain GET.
    pub(crate) fn range(&self, start: u64, end: u64) -> Option<GetRange> {
        (start > 0 || end < self.length).then_some(GetRange::Bounded(start..end))
    }

    /// How many bytes block `index` holds (the last block of an object is short).
    pub(crate) fn block_len(&self, index: u64, block_size: u64) -> u64 {
        self.block_end(index, block_size) - index * block_size
    }

    /// Where block `index` ends (the last block of an object is short).
    pub(crate) fn block_end(&self, index: u64, block_size: u64) -> u64 {
        ((index + 1) * block_size).min(self.length)
    }
}

/// The block cache and what guards the backends behind it.
pub(crate) struct Cached {
    pub(crate) cache: Arc<BlockCache>,
    /// Backend fetches in flight, all backends together.
    pub(crate) fetches: Semaphore,
    /// One fetch per block however many readers miss it at once.
    pub(crate) inflight: Arc<Mutex<HashMap<BlockKey, Flight>>>,
    /// Room in the write-behind queue ([`MAX_PENDING_STORES`]); every queued write holds a
    /// permit until its block is on disk.
    pub(crate) store_slots: Arc<Semaphore>,
    /// Blocks just fetched that readers are part-way through (and readahead blocks the cache
    /// disk refused).
    pub(crate) recent: Arc<RecentBlocks>,
    /// When a refused cache write was last logged (seconds since the Unix epoch).
    pub(crate) write_error_logged: Arc<AtomicU64>,
}

impl Cached {
    /// Whether the block is on disk or held in memory: either way nobody needs to fetch it.
    pub(crate) fn holds(&self, key: &BlockKey) -> bool {
        self.cache.contains(key) || self.recent.contains(key)
    }
}

/// Memory for blocks a reader is part-way through (8 blocks of the default size).
pub(crate) const RECENT_BLOCK_BYTES: usize = 32 << 20;

/// Whether a fetch waits for its blocks to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// Warm: the point is the cache.
    Wait,
    /// Foreground reads: write behind, skipped when the disk falls behind.
    Behind,
    /// Readahead: write behind, waiting for the disk when it falls behind.
    Ahead,
}

/// Cache writes that may wait for the disk before new blocks go uncached (64 MiB of 4 MiB blocks).
pub(crate) const MAX_PENDING_STORES: usize = 16;

/// An object body being read: cut into blocks of the sizes asked for, each wait for bytes
/// within the backend's timeout.
pub(crate) struct Body {
    backend: String,
    key: String,
    timeout: Duration,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    /// What the last chunk held beyond the last block (a slice of it, not a copy).
    rest: Bytes,
}

/// Blocks start on this boundary in memory, so the cache can write them with O_DIRECT (no
/// copy into the page cache).
const BLOCK_ALIGN: usize = 4096;

impl Body {
    /// The next chunk of the body, within the timeout; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, FsError> {
        match tokio::time::timeout(self.timeout, self.stream.next()).await {
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(err))) => Err(FsError::store(&self.backend, err)),
            Ok(None) => Ok(None),
            Err(_) => {
                tracing::warn!(backend = %self.backend, key = %self.key, "backend body stalled");
                Err(FsError::Timeout {
                    backend: self.backend.clone(),
                    timeout: self.timeout,
                })
            }
        }
    }

    /// The next `want` bytes (one block), in one buffer aligned to [`BLOCK_ALIGN`]; a body
    /// that ends or stalls first is an error.
    pub(crate) async fn next_block(&mut self, want: usize) -> Result<Bytes, FsError> {
        let mut out: Vec<u8> = Vec::with_capacity(want + BLOCK_ALIGN);
        let pad = out.as_ptr().align_offset(BLOCK_ALIGN).min(BLOCK_ALIGN);
        out.resize(pad, 0);
        let mut chunk = std::mem::take(&mut self.rest);
        loop {
            let need = want - (out.len() - pad);
            if chunk.len() >= need {
                out.extend_from_slice(&chunk[..need]);
                self.rest = chunk.slice(need..);
                return Ok(Bytes::from(out).slice(pad..));
            }
            out.extend_from_slice(&chunk);
            chunk = match self.chunk().await? {
                Some(chunk) => chunk,
                None => {
                    tracing::warn!(backend = %self.backend, key = %self.key, "backend body ended early");
                    return Err(FsError::ShortBody {
                        backend: self.backend.clone(),
                        key: self.key.clone(),
                    });
                }
            };
        }
    }

    /// Everything left in the body.
    async fn rest(mut self) -> Result<Bytes, FsError> {
        let mut out = BytesMut::from(&self.rest[..]);
        while let Some(chunk) = self.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

impl Core {
    /// One ranged GET of `[start, end)` with no cache, pinned to `etag`.
    async fn get_range(
        &self,
        backend: usize,
        key: &str,
        etag: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Bytes, FsError> {
        let started = Instant::now();
        let range = Some(GetRange::Bounded(start..end));
        let result = match self.open_body(backend, key, etag, range).await {
            Ok(body) => body.rest().await,
            Err(err) => Err(err),
        };
        self.finished_request(backend, result.as_ref().err(), started.elapsed());
        match &result {
            Ok(bytes) => self.count_bytes(backend, bytes.len() as u64),
            Err(_) => self.forget_listings(),
        }
        result
    }

    /// The whole cached copy of the version handle `fh` opened, verified and pinned, for the
    /// kernel to read itself (FUSE passthrough); `None` when any of it is not cached.
    pub(crate) async fn backing(&self, fh: u64) -> Option<blockcache::Backing> {
        let cached = self.cached.as_ref()?;
        let version = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)?
            .version
            .clone()?;
        let Node::File {
            backend,
            key,
            size,
            etag: Some(etag),
            ..
        } = version
        else {
            return None;
        };
        let probe = BlockKey {
            backend: self.backends[backend].name.clone(),
            key,
            etag,
            index: 0,
        };
        let cache = cached.cache.clone();
        // The first hand-out since start reads the whole file to check it.
        tokio::task::spawn_blocking(move || cache.backing(&probe, size))
            .await
            .ok()
            .flatten()
    }

    /// Reads `size` bytes at `offset`: through the block cache when there is one (blocks keyed
    /// by the ETag seen at lookup; the missing blocks of one request come in one ranged GET,
    /// and a block someone is already fetching is waited for, not fetched again), else with
    /// one ranged GET.
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let node = self.node(ino)?;
        self.read_node(node, offset, size).await
    }

    /// [`Core::read`] of one version of a file (an open handle's, or the current one).
    pub(crate) async fn read_node(
        &self,
        node: Node,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, FsError> {
        self.read_version(node, offset, size, false).await
    }

    /// [`Core::read_node`]; a `random` reader's misses fetch only the 64 KiB chunks they
    /// touch (cached as parts of their block), so bytes fetched stay within about twice the
    /// bytes read instead of a whole block per read.
    pub(crate) async fn read_version(
        &self,
        node: Node,
        offset: u64,
        size: u32,
        random: bool,
    ) -> Result<Bytes, FsError> {
        let Node::File {
            backend,
            key,
            size: length,
            etag,
            ..
        } = node
        else {
            return Err(FsError::IsDir);
        };
        if offset >= length || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + u64::from(size)).min(length);
        let (Some(cached), Some(etag)) = (&self.cached, etag.clone()) else {
            return self
                .get_range(backend, &key, etag.as_deref(), offset, end)
                .await;
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
                    pieces.push(bytes);
                    index += 1;
                    continue;
                }
            }
            if random && !flying {
                pieces.push(
                    self.fetch_part(cached, &object, block_key, from, to)
                        .await?,
                );
                index += 1;
                continue;
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

    /// `[from, to)` of one block for a random reader: one ranged GET of the chunks it
    /// touches, cached behind as a part of the block (skipped when the disk falls behind).
    async fn fetch_part(
        &self,
        cached: &Cached,
        object: &Object,
        block: BlockKey,
        from: usize,
        to: usize,
    ) -> Result<Bytes, FsError> {
        let chunk = blockcache::CHUNK;
        let block_start = block.index * cached.cache.block_size();
        let lo = from / chunk * chunk;
        let hi = (to.div_ceil(chunk) * chunk)
            .min(object.block_len(block.index, cached.cache.block_size()) as usize);
        let start = block_start + lo as u64;
        let end = block_start + hi as u64;
        let bytes = self
            .get_range(object.backend, &object.key, Some(&object.etag), start, end)
            .await?;
        if bytes.len() != hi - lo {
            return Err(FsError::ShortBody {
                backend: self.backends[object.backend].name.clone(),
                key: object.key.clone(),
            });
        }
        let out = bytes.slice(from - lo..to - lo);
        if let Ok(slot) = cached.store_slots.clone().try_acquire_owned() {
            let cache = cached.cache.clone();
            let length = object.length;
            tokio::task::spawn_blocking(move || {
                let _ = cache.put_at(&block, length, lo, &bytes);
                drop(slot);
            });
        } else {
            self.metrics.cache_write_skipped();
        }
        Ok(out)
    }

    /// Block `index`, fetched once however many readers want it: joins a fetch in flight, or
    /// fetches it with the following missing blocks up to `last` in one ranged GET.
    pub(crate) async fn fetch_block(
        &self,
        cached: &Cached,
        object: &Object,
        index: u64,
        last: u64,
    ) -> Result<Bytes, FsError> {
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
                }
                None => None,
            };
            if let Some(bytes) = stored {
                claimed[0].1.send_replace(Some(Ok(bytes.clone())));
                // The other claims end unresolved: their waiters look again.
                self.unclaim(cached, &claimed);
                return Ok(bytes);
            }
            let permit = cached
                .fetches
                .acquire()
                .await
                .map_err(|_| FsError::Abandoned)?;
            self.fetch_run(cached, object, claimed, Store::Behind).await;
            drop(permit);
            match wait_for(mine).await {
                Some(result) => return result,
                None => return Err(FsError::Abandoned),
            }
        }
    }

    /// Writes a fetched block to the cache and then releases its claim. `Wait` writes before
    /// returning. `Behind` writes on a blocking thread while the caller goes on, unless
    /// [`MAX_PENDING_STORES`] writes are already queued: then the block (which its reader
    /// already has) is not cached, counted, so a cache disk slower than the network never
    /// slows a cold read. `Ahead` (speculative blocks nobody has read yet) waits for a queue
    /// slot instead, so a slow disk slows readahead rather than throwing fetched bytes away.
    pub(crate) async fn store(
        &self,
        cached: &Cached,
        claim: Claim,
        length: u64,
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
            if let Err(err) = cache.put(&key, length, &block) {
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

    /// Marks blocks `first..=last` of `object` as being fetched by the caller, stopping at the
    /// first one that is cached or already in flight.
    pub(crate) fn claim(
        &self,
        cached: &Cached,
        object: &Object,
        first: u64,
        last: u64,
    ) -> Vec<Claim> {
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

    pub(crate) fn unclaim(&self, cached: &Cached, claims: &[Claim]) {
        let mut inflight = cached.inflight.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in claims {
            inflight.remove(key);
        }
    }

    /// Fetches the claimed consecutive blocks with one ranged GET, storing and publishing each
    /// block as soon as its bytes are in, so a reader of the first block never waits for the
    /// last. Every claim is resolved (bytes or the error) and released when this returns.
    /// Returns the bytes fetched.
    pub(crate) async fn fetch_run(
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
        let started = Instant::now();
        let opened = self
            .open_body(
                object.backend,
                &object.key,
                Some(&object.etag),
                object.range(start, end),
            )
            .await;
        let mut pending = claims.into_iter();
        let outcome: Result<(), FsError> = async {
            let mut body = opened?;
            for (key, sender) in pending.by_ref() {
                let want = object.block_len(key.index, block_size) as usize;
                let block = match body.next_block(want).await {
                    Ok(block) => block,
                    Err(err) => {
                        sender.send_replace(Some(Err(err.clone())));
                        self.unclaim(cached, &[(key, sender)]);
                        return Err(err);
                    }
                };
                self.count_bytes(object.backend, block.len() as u64);
                fetched += block.len() as u64;
                // Readers get the bytes at once; the claim stays until the block is on disk.
                sender.send_replace(Some(Ok(block.clone())));
                self.store(cached, (key, sender), object.length, block, when, None)
                    .await;
            }
            Ok(())
        }
        .await;
        // Whatever was not fetched fails with the same error, so its readers do not hang.
        let rest: Vec<Claim> = pending.collect();
        for (_, sender) in &rest {
            let err = outcome.clone().err().unwrap_or(FsError::Abandoned);
            sender.send_replace(Some(Err(err)));
        }
        self.unclaim(cached, &rest);
        if outcome.is_err() {
            self.forget_listings();
        }
        self.finished_request(object.backend, outcome.as_ref().err(), started.elapsed());
        fetched
    }

    /// The one place a GET of object bytes is sent: conditional on `etag` when known, within
    /// the backend's timeout, and counted. The body is then read block by block.
    pub(crate) async fn open_body(
        &self,
        backend: usize,
        key: &str,
        etag: Option<&str>,
        range: Option<GetRange>,
    ) -> Result<Body, FsError> {
        let b = &self.backends[backend];
        let path = store_path(&join(&b.prefix, key));
        let options = GetOptions {
            range,
            if_match: etag.map(str::to_owned),
            ..Default::default()
        };
        self.stats.backend_gets.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("backend_get", backend = %b.name, key);
        match tokio::time::timeout(b.timeout, b.store.get_opts(&path, options))
            .instrument(span)
            .await
        {
            Ok(Ok(got)) => Ok(Body {
                backend: b.name.clone(),
                key: key.to_owned(),
                timeout: b.timeout,
                stream: got.into_stream(),
                rest: Bytes::new(),
            }),
            // A handle pinned to a version whose object is gone is as stale as one whose
            // object changed: read(2) has no ENOENT.
            Ok(Err(err @ object_store::Error::NotFound { .. })) if etag.is_some() => {
                tracing::info!(backend = %b.name, key, "an object was deleted under an open file");
                Err(FsError::Changed {
                    backend: b.name.clone(),
                    source: std::sync::Arc::new(err),
                })
            }
            Ok(Err(err)) => Err(FsError::store(&b.name, err)),
            Err(_) => {
                tracing::warn!(backend = %b.name, key, timeout = ?b.timeout, "backend GET timed out");
                Err(FsError::Timeout {
                    backend: b.name.clone(),
                    timeout: b.timeout,
                })
            }
        }
    }
}
