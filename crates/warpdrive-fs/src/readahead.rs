//! Deciding what to prefetch, kept apart from fetching so the rules can be tested alone: per
//! open file, sequential reads grow a window and random reads turn it off; speculative blocks
//! are tracked so their use and waste are counted exactly.

use std::collections::{HashMap, VecDeque};

use blockcache::BlockKey;

/// How eagerly to prefetch.
#[derive(Debug, Clone)]
pub struct ReadaheadSettings {
    /// Prefetch at all.
    pub enabled: bool,
    /// First window once reads look sequential.
    pub initial_window: u64,
    /// Largest window.
    pub max_window: u64,
    /// Speculative bytes in flight for the whole mount.
    pub budget: u64,
    /// Prefetch the first block of the next files when a directory is read in name order.
    pub directory_prefetch: bool,
    /// How many following files directory prefetch reaches.
    pub directory_files: usize,
    /// Ranged GETs in parallel for a large file read alone (1: always one streaming GET).
    pub parallel_gets: usize,
}

impl Default for ReadaheadSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_window: 8 << 20,
            max_window: 256 << 20,
            budget: 512 << 20,
            directory_prefetch: true,
            directory_files: 4,
            parallel_gets: 4,
        }
    }
}

/// How far from the previous read a read may start and still count as sequential: a few of
/// the kernel's 1 MiB requests.
pub const NEAR: u64 = 4 << 20;

/// One open file's access pattern.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pattern {
    reads: u64,
    /// Where the last sequential read ended.
    next: u64,
    /// Sequential reads in a row.
    run: u32,
    window: u64,
    /// Everything below this has been asked for.
    prefetched_to: u64,
}

impl Pattern {
    /// Whether the recent reads were sequential (readahead is on).
    pub(crate) fn sequential(&self) -> bool {
        self.run >= 2
    }

    /// Whether the reader is not (yet, or any longer) sequential: its misses fetch only the
    /// chunks they need, not whole blocks. A sequential run from mid-file pays this for its
    /// first two reads; a read from byte 0 is sequential at once.
    pub(crate) fn random(&self) -> bool {
        self.reads > 0 && !self.sequential()
    }

    /// How far ahead of the reader to fetch.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// Records a read of `[offset, end)` and returns the byte range to prefetch, if any.
    /// A read within [`NEAR`] (or a block, if larger) of where the previous one ended counts
    /// as sequential, since the kernel's own readahead requests arrive concurrently and
    /// slightly out of order; a read starting at byte 0 starts a run at once, since
    /// whole-file readers are the common case.
    pub(crate) fn on_read(
        &mut self,
        offset: u64,
        end: u64,
        settings: &ReadaheadSettings,
        block_size: u64,
        file_size: u64,
    ) -> Option<(u64, u64)> {
        let slack = block_size.max(NEAR);
        let near = self.reads > 0
            && offset <= self.next.saturating_add(slack)
            && offset.saturating_add(slack) >= self.next;
        self.reads += 1;
        if self.reads == 1 && offset == 0 {
            self.run = 2;
        } else if near {
            self.run = self.run.saturating_add(1);
        } else {
            // Random access: readahead off until two reads in a row are sequential again.
            self.run = 0;
            self.window = 0;
            self.prefetched_to = 0;
        }
        self.next = if near { self.next.max(end) } else { end };
        if !settings.enabled || self.run < 2 || settings.initial_window == 0 {
            return None;
        }
        if self.window == 0 {
            self.window = settings.initial_window.min(settings.max_window.max(1));
        }
        let block_size = block_size.max(1);
        let target = self
            .next
            .saturating_add(self.window)
            .div_ceil(block_size)
            .saturating_mul(block_size)
            .min(file_size);
        let from = self
            .prefetched_to
            .max(self.next.div_ceil(block_size) * block_size);
        // Top up only once at least half a window is missing, so requests go out in batches.
        if target <= from || target - from < (self.window / 2).max(block_size).min(target) {
            return None;
        }
        self.prefetched_to = target;
        self.window = self
            .window
            .saturating_mul(2)
            .min(settings.max_window.max(1));
        Some((from, target))
    }
}

/// Speculative blocks not yet read, bounded; counts what was used and what was wasted.
#[derive(Debug)]
pub(crate) struct Ledger {
    pending: HashMap<BlockKey, (u64, u64)>,
    order: VecDeque<BlockKey>,
    capacity: usize,
}

/// What a ledger change means for the counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Bytes of speculative blocks a reader used.
    pub(crate) used: u64,
    /// Bytes of speculative blocks nobody read.
    pub(crate) wasted: u64,
}

impl Ledger {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            pending: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// A speculative fetch of `bytes` for `key`, issued on behalf of `handle` (0: none).
    /// Returns the waste of entries pushed out to stay bounded.
    pub(crate) fn issue(&mut self, key: BlockKey, bytes: u64, handle: u64) -> Outcome {
        let mut outcome = Outcome::default();
        if self.pending.insert(key.clone(), (bytes, handle)).is_none() {
            self.order.push_back(key);
        }
        if self.order.len() > 2 * self.capacity {
            // Drop the names of blocks already read, so the queue stays bounded too.
            let pending = &self.pending;
            self.order.retain(|k| pending.contains_key(k));
        }
        while self.pending.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((bytes, _)) = self.pending.remove(&oldest) {
                outcome.wasted += bytes;
            }
        }
        outcome
    }

    /// Whether `key` was issued and not yet read (so it is not issued twice).
    pub(crate) fn contains(&self, key: &BlockKey) -> bool {
        self.pending.contains_key(key)
    }

    /// A reader asked for `key`.
    pub(crate) fn read(&mut self, key: &BlockKey) -> Outcome {
        let used = self.pending.remove(key).map_or(0, |(bytes, _)| bytes);
        Outcome { used, wasted: 0 }
    }

    /// `handle` was closed: what it prefetched and never read is wasted.
    pub(crate) fn release(&mut self, handle: u64) -> Outcome {
        let mut wasted = 0;
        self.pending.retain(|_, (bytes, owner)| {
            let keep = *owner != handle;
            if !keep {
                wasted += *bytes;
            }
            keep
        });
        let pending = &self.pending;
        self.order.retain(|k| pending.contains_key(k));
        Outcome { used: 0, wasted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn settings() -> ReadaheadSettings {
        ReadaheadSettings {
            initial_window: 8 * MIB,
            max_window: 32 * MIB,
            ..Default::default()
        }
    }

    #[test]
    fn sequential_reads_grow_the_window_up_to_the_maximum() {
        let s = settings();
        let mut p = Pattern::default();
        let mut issued = Vec::new();
        for i in 0..200 {
            if let Some(range) = p.on_read(i * MIB, (i + 1) * MIB, &s, 4 * MIB, 1 << 40) {
                issued.push(range);
            }
        }
        assert_eq!(
            issued[0],
            (4 * MIB, 12 * MIB),
            "first window after the first read"
        );
        let widths: Vec<u64> = issued.iter().map(|(a, b)| b - a).collect();
        assert!(widths.iter().all(|w| *w <= 32 * MIB), "{widths:?}");
        // Ranges are contiguous: nothing is asked twice, nothing skipped.
        for pair in issued.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
        }
        // The window keeps ahead of the reader.
        assert!(issued.last().unwrap().1 >= 200 * MIB);
    }

    #[test]
    fn random_reads_turn_readahead_off() {
        let s = settings();
        let mut p = Pattern::default();
        let offsets = [
            700 * MIB,
            13 * MIB,
            1500 * MIB,
            90 * MIB,
            400 * MIB,
            1800 * MIB,
        ];
        for off in offsets {
            assert_eq!(p.on_read(off, off + 65536, &s, 4 * MIB, 2048 * MIB), None);
        }
        // One read near the last one is chance; two in a row turn readahead back on.
        assert_eq!(
            p.on_read(1801 * MIB, 1802 * MIB, &s, 4 * MIB, 2048 * MIB),
            None
        );
        assert!(
            p.on_read(1802 * MIB, 1803 * MIB, &s, 4 * MIB, 2048 * MIB)
                .is_some()
        );
    }

    #[test]
    fn small_files_and_the_end_of_file_stop_prefetch() {
        let s = settings();
        let mut p = Pattern::default();
        assert_eq!(p.on_read(0, 131072, &s, 4 * MIB, 131072), None);
        let mut p = Pattern::default();
        let got = p.on_read(0, MIB, &s, 4 * MIB, 10 * MIB);
        assert_eq!(got, Some((4 * MIB, 10 * MIB)));
        assert_eq!(p.on_read(MIB, 2 * MIB, &s, 4 * MIB, 10 * MIB), None);
    }

    #[test]
    fn disabled_never_prefetches() {
        let s = ReadaheadSettings {
            enabled: false,
            ..settings()
        };
        let mut p = Pattern::default();
        for i in 0..10 {
            assert_eq!(p.on_read(i * MIB, (i + 1) * MIB, &s, MIB, 1 << 30), None);
        }
    }

    fn key(i: u64) -> BlockKey {
        BlockKey {
            backend: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            index: i,
        }
    }

    #[test]
    fn ledger_counts_used_and_wasted_bytes() {
        let mut l = Ledger::new(3);
        assert_eq!(l.issue(key(1), 10, 7), Outcome::default());
        l.issue(key(2), 10, 7);
        l.issue(key(3), 10, 0);
        assert_eq!(
            l.read(&key(2)),
            Outcome {
                used: 10,
                wasted: 0
            }
        );
        assert_eq!(l.read(&key(2)), Outcome::default(), "used once");
        l.issue(key(4), 10, 0);
        assert_eq!(l.issue(key(5), 10, 0).wasted, 10, "oldest pushed out");
        assert_eq!(l.release(7).wasted, 0, "key 1 already pushed out");
        assert_eq!(l.release(0).wasted, 30);
    }
}
