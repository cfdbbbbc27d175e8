//! Warm: fill the block cache with everything under a prefix before a job reads it, through
//! the same claims as readers and readahead, skipping blocks already cached (a rerun resumes).

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::blocks::{Object, Store};
use crate::core::Core;
use crate::error::FsError;
use crate::inodes::{join, store_path};

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
    /// Whether it ended because it was told to stop (the rest is left for a later run).
    pub stopped: bool,
}

/// How a warm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmOptions {
    /// Objects fetched at once.
    pub workers: usize,
    /// Backend bytes per second this warm may fetch at most (none: as fast as the fetch
    /// slots allow), so a warm beside a running job leaves it bandwidth.
    pub max_bytes_per_second: Option<u64>,
}

impl Default for WarmOptions {
    fn default() -> Self {
        Self {
            workers: 8,
            max_bytes_per_second: None,
        }
    }
}

/// Spaces fetches so the warm's rate stays under its limit: each fetch books its bytes and
/// waits until the booked total is due.
struct Pace {
    limit: Option<u64>,
    started: tokio::time::Instant,
    booked: std::sync::atomic::AtomicU64,
}

impl Pace {
    /// Waits until `bytes` more are due, or until `stop` is set (checked every 100 ms).
    async fn book(&self, bytes: u64, stop: &AtomicBool) {
        let Some(limit) = self.limit.filter(|l| *l > 0) else {
            return;
        };
        let before = self.booked.fetch_add(bytes, Ordering::Relaxed);
        let due = self.started + std::time::Duration::from_secs_f64(before as f64 / limit as f64);
        while !stop.load(Ordering::Relaxed) {
            let now = tokio::time::Instant::now();
            if now >= due {
                break;
            }
            tokio::time::sleep((due - now).min(std::time::Duration::from_millis(100))).await;
        }
    }
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
    #[error("prefix `{0}` is not a key prefix (it has an empty, `.` or `..` segment, or a NUL)")]
    BadPrefix(String),
    /// Listing failed.
    #[error("listing the backend failed: {0}")]
    Backend(#[source] FsError),
}

impl Core {
    /// Fills the cache with every object under `prefix` of backend `backend` (names as in the
    /// config), by `options`, skipping blocks already cached, so running it again after an
    /// interruption goes on where it stopped. `progress` sees every step. Setting `stop` ends
    /// it after the fetches in flight have landed in the cache, so nothing fetched is lost.
    pub async fn warm(
        &self,
        backend: &str,
        prefix: &str,
        options: WarmOptions,
        progress: &watch::Sender<WarmProgress>,
        stop: &AtomicBool,
    ) -> Result<WarmProgress, WarmError> {
        let stopping = || stop.load(Ordering::Relaxed);
        let pace = Pace {
            limit: options.max_bytes_per_second,
            started: tokio::time::Instant::now(),
            booked: Default::default(),
        };
        let pace = &pace;
        let Some(cached) = &self.cached else {
            return Err(WarmError::NoCache);
        };
        let (index, prefix) = self.target(backend, prefix)?;
        let b = &self.backends[index];
        let full = join(&b.prefix, &prefix);
        let list_prefix = (!full.is_empty()).then(|| store_path(&full));
        // List first (full keys, so nested prefixes keep their parents), so the totals and
        // the ETA are known before fetching starts.
        let mut objects = Vec::new();
        let mut listing = b.store.list(list_prefix.as_ref());
        while let Some(item) = tokio::time::timeout(b.timeout, listing.next())
            .await
            .map_err(|_| {
                WarmError::Backend(FsError::Timeout {
                    backend: b.name.clone(),
                    timeout: b.timeout,
                })
            })?
        {
            if stopping() {
                progress.send_modify(|p| p.stopped = true);
                return Ok(progress.borrow().clone());
            }
            let meta = item.map_err(|e| WarmError::Backend(FsError::store(&b.name, e)))?;
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
            .for_each_concurrent(options.workers.max(1), |(key, size, etag)| async move {
                if stopping() {
                    return;
                }
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
                    if stopping() {
                        return; // this object is not done; a later run finishes it
                    }
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
                    // Paced before anything is claimed, so a stop while waiting leaves no
                    // claim behind.
                    let stretch = (i..=last).map(|j| object.block_len(j, block_size)).sum();
                    pace.book(stretch, stop).await;
                    if stopping() {
                        return;
                    }
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
        let stopped = stopping();
        progress.send_modify(|p| {
            p.finished = !stopped;
            p.stopped = stopped;
        });
        Ok(progress.borrow().clone())
    }
}
