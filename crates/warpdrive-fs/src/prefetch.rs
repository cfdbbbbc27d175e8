//! Running readahead: what a read through a handle asks for (decided by the rules in
//! [`crate::readahead`]), the sequential stream (one ranged GET read only while within the
//! reader's window), parallel segments for a file read alone, and directory prefetch. All of
//! it claims and fetches blocks through `blocks`, so nothing is fetched twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use blockcache::BlockKey;
use bytes::Bytes;
use tokio::sync::watch;

use crate::blocks::{Cached, Claim, Object, Store};
use crate::core::{Core, kib};
use crate::error::{FsError, ToErrno};
use crate::inodes::{KeyRef, Node};
use crate::readahead::{Ledger, Pattern};

/// One open file.
#[derive(Debug)]
pub(crate) struct Handle {
    pattern: Pattern,
    /// The sequential stream feeding this handle, if one runs.
    stream: Option<Stream>,
    /// Parallel mode: the next block a segment GET starts at.
    segments_from: Option<u64>,
    /// The version of the file this handle opened: every read is of it, never of a newer one.
    pub(crate) version: Option<Node>,
    /// Whether a read through it was counted in the usage table (a file counts once per open).
    pub(crate) accounted: bool,
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
pub(crate) const LEDGER_BLOCKS: usize = 16384;

impl Core {
    /// A reader asked for `key`: if it was prefetched, that prefetch was used.
    pub(crate) fn note_read(&self, key: &BlockKey) {
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
    pub async fn open(self: &Arc<Self>, ino: u64) -> Result<(u64, Option<String>), FsError> {
        let mut etag = self.etag(ino).await?;
        // Some S3-compatible stores list objects without an ETag: learn the version with one
        // HEAD, so the handle is pinned to it and reads go through the cache and readahead
        // instead of around them.
        if etag.is_none()
            && let Node::File { backend, key, .. } = self.node(ino)?
            && let Node::File { etag: fresh, .. } = self.head_file(backend, &key).await?
        {
            etag = fresh;
        }
        let version = Some(self.node(ino)?).filter(|n| matches!(n, Node::File { .. }));
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
                    version,
                    accounted: false,
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
    ) -> Result<Bytes, FsError> {
        // The handle's own version; a handle the kernel never opened (none) reads the current.
        let pinned = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .and_then(|h| h.version.clone());
        let node = match pinned {
            Some(node) => node,
            None => self.node(ino)?,
        };
        let mut random = false;
        if !self.readahead.enabled
            && let Some(cached) = &self.cached
            && let Node::File { size: length, .. } = &node
        {
            // No readahead, but the access pattern still decides how much a miss fetches.
            let end = (offset + u64::from(size)).min(*length);
            let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = handles.get_mut(&fh) {
                h.pattern.on_read(
                    offset,
                    end,
                    &self.readahead,
                    cached.cache.block_size(),
                    *length,
                );
                random = h.pattern.random();
            }
        }
        if self.readahead.enabled
            && let Some(cached) = &self.cached
            && let Node::File {
                backend,
                key,
                size: length,
                etag: Some(etag),
                ..
            } = node.clone()
        {
            let end = (offset + u64::from(size)).min(length);
            let block_size = cached.cache.block_size();
            let ahead = {
                let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
                let alone = handles.len() == 1;
                match handles.get_mut(&fh) {
                    Some(h) => {
                        let ahead = self.plan_ahead(
                            h, alone, cached, &backend, &key, &etag, offset, end, length,
                        );
                        random = h.pattern.random();
                        ahead
                    }
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
        self.read_version(node, offset, size, random).await
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
    pub(crate) fn prefetched_or_held(&self, cached: &Cached, key: &BlockKey) -> bool {
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
        let mut claimed: std::collections::VecDeque<(Claim, tokio::sync::OwnedSemaphorePermit)> =
            initial.into_iter().collect();
        let mut extending = true;
        let mut body = None;
        let started = Instant::now();
        let mut failed: Option<FsError> = None;
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
                let range = object.range(key.index * block_size, object.length);
                match self
                    .open_body(object.backend, &object.key, Some(&object.etag), range)
                    .await
                {
                    Ok(opened) => body = Some(opened),
                    Err(err) => failed = Some(err),
                }
            }
            let want = object.block_len(key.index, block_size) as usize;
            let got = match body.as_mut() {
                Some(body) => body.next_block(want).await,
                None => Err(failed.clone().unwrap_or(FsError::Abandoned)),
            };
            let block = match got {
                Ok(block) => block,
                Err(err) => {
                    sender.send_replace(Some(Err(err.clone())));
                    self.unclaim(cached, &[(key, sender)]);
                    failed = Some(err);
                    break;
                }
            };
            self.count_bytes(object.backend, block.len() as u64);
            // Readers get the bytes now; the claim stays until the block is on disk (so no one
            // fetches it again meanwhile), and the budget is held until then too.
            sender.send_replace(Some(Ok(block.clone())));
            self.store(
                cached,
                (key, sender),
                object.length,
                block,
                Store::Ahead,
                Some(budget),
            )
            .await;
        }

        let code = failed.as_ref().map_or(0, ToErrno::errno);
        tracing::debug!(key = %object.key, from = first, to = next, extending, code, "readahead stream ended");
        // Claims never fetched end unresolved: their readers fetch for themselves.
        let rest: Vec<Claim> = claimed.into_iter().map(|(claim, _)| claim).collect();
        self.unclaim(cached, &rest);
        if body.is_some() || code != 0 {
            if code != 0 {
                self.forget_listings();
            }
            self.finished_request(object.backend, failed.as_ref(), started.elapsed());
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
        let (parent, raw) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let Some(dir) = self
            .inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(&KeyRef::Dir(backend, parent))
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
        // The listing is sorted by name: find the file by its name, not by a scan (a
        // directory of 10^6 files opened in order would otherwise cost n² in all).
        let name = crate::inodes::display_name(raw);
        let Some(position) = listing
            .find(&name)
            .filter(|&at| listing.get(at).is_some_and(|(_, found)| found == ino))
        else {
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
        let end = listing
            .len()
            .min(position + 1 + self.readahead.directory_files);
        for next in (position + 1..end).filter_map(|at| listing.get(at).map(|(_, ino)| ino)) {
            if let Ok(Node::File {
                backend,
                key,
                size,
                etag: Some(etag),
                ..
            }) = self.node(next)
                && size > 0
            {
                self.prefetch(0, backend, &key, &etag, size, 0, block_size.min(size));
            }
        }
    }
}
