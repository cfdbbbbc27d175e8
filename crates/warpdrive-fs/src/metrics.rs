//! warpdrive's metrics (the binary registers them under `warpdrive_`): FUSE operations,
//! backend requests, and the block cache's counters read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use blockcache::BlockCache;

use crate::error::errno_name;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counter name: FUSE operations by op and result (`ok` or the errno name).
pub const FUSE_OPERATIONS: &str = "fuse_operations";
/// Histogram name: FUSE operation latency by op.
pub const FUSE_OPERATION_DURATION: &str = "fuse_operation_duration_seconds";
/// Counter name: requests to backends by backend and result.
pub const BACKEND_REQUESTS: &str = "backend_requests";
/// Counter name: bytes received from each backend.
pub const BACKEND_BYTES: &str = "backend_bytes";
/// Histogram name: backend request latency by backend.
pub const BACKEND_REQUEST_DURATION: &str = "backend_request_duration_seconds";
/// Counter name: bytes prefetched speculatively (readahead and directory prefetch).
pub const READAHEAD_ISSUED_BYTES: &str = "readahead_issued_bytes";
/// Counter name: prefetched bytes a reader then asked for.
pub const READAHEAD_USED_BYTES: &str = "readahead_used_bytes";
/// Counter name: prefetched bytes nobody read before their handle closed or the ledger dropped them.
pub const READAHEAD_WASTED_BYTES: &str = "readahead_wasted_bytes";
/// Counter name: prefetches not issued because the speculative budget was spent.
pub const READAHEAD_SKIPPED: &str = "readahead_skipped";
/// Counter name: fetched blocks not written to the cache because the disk fell behind.
pub const CACHE_WRITES_SKIPPED: &str = "cache_writes_skipped";
/// Counter name: blocks the cache disk refused to store (full, I/O error).
pub const CACHE_WRITE_ERRORS: &str = "cache_write_errors";
/// Counter name: bytes served from blocks just fetched and still in memory (a sequential
/// reader's later requests into the block it is in).
pub const MEMORY_BYTES_SERVED: &str = "memory_bytes_served";
/// Counter name: reads answered from the block cache.
pub const CACHE_HITS: &str = "cache_hits";
/// Counter name: block reads the cache could not answer.
pub const CACHE_MISSES: &str = "cache_misses";
/// Counter name: bytes served from the block cache.
pub const CACHE_BYTES_SERVED: &str = "cache_bytes_served";
/// Counter name: blocks evicted.
pub const CACHE_EVICTIONS: &str = "cache_evictions";
/// Counter name: blocks dropped for a bad checksum.
pub const CACHE_CHECKSUM_FAILURES: &str = "cache_checksum_failures";
/// Gauge name: bytes of block files on disk.
pub const CACHE_SIZE_BYTES: &str = "cache_size_bytes";
/// Gauge name: bytes of block files on disk as a fraction of `cache.max_size`.
pub const CACHE_UTILIZATION: &str = "cache_utilization_ratio";
/// Gauge name: 1 when the kernel reads whole cached files directly (FUSE passthrough), 0 when
/// every read goes through the daemon.
pub const PASSTHROUGH_ACTIVE: &str = "fuse_passthrough_active";
/// Counter name: opens by how their reads are served (`passthrough`, `daemon`).
pub const OPENS: &str = "fuse_opens";
/// Counter name: failed backend requests by backend and kind (`timeout`, `denied`, ...).
pub const BACKEND_ERRORS: &str = "backend_errors";
/// Counter name: keys a listing left out, by backend and reason.
pub const KEYS_SKIPPED: &str = "keys_skipped";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    backend: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    backend: String,
    reason: &'static str,
}

/// Handles to the metrics; cloning shares them.
#[derive(Clone, Debug)]
pub struct FsMetrics {
    ops: Family<OpLabels, Counter>,
    op_duration: Family<OpLabel, Histogram>,
    requests: Family<BackendLabels, Counter>,
    bytes: Family<BackendLabel, Counter>,
    request_duration: Family<BackendLabel, Histogram>,
    readahead_issued: Counter,
    readahead_used: Counter,
    readahead_wasted: Counter,
    readahead_skipped: Counter,
    cache_writes_skipped: Counter,
    memory_bytes_served: Counter,
    cache_write_errors: Counter,
    keys_skipped: Family<SkipLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    passthrough_active: Gauge,
    opens: Family<ServedLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServedLabel {
    served: &'static str,
}

impl Default for FsMetrics {
    fn default() -> Self {
        Self {
            ops: Family::default(),
            op_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
            }),
            requests: Family::default(),
            bytes: Family::default(),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
            }),
            readahead_issued: Counter::default(),
            readahead_used: Counter::default(),
            readahead_wasted: Counter::default(),
            readahead_skipped: Counter::default(),
            cache_writes_skipped: Counter::default(),
            memory_bytes_served: Counter::default(),
            cache_write_errors: Counter::default(),
            keys_skipped: Family::default(),
            errors: Family::default(),
            passthrough_active: Gauge::default(),
            opens: Family::default(),
        }
    }
}

impl FsMetrics {
    /// Registers the metrics (and the cache's, read at scrape time) in `registry`.
    pub fn register(registry: &mut Registry, cache: Option<Arc<BlockCache>>) -> Self {
        let metrics = Self::default();
        registry.register(
            FUSE_OPERATIONS,
            "FUSE operations by op and result",
            metrics.ops.clone(),
        );
        registry.register(
            FUSE_OPERATION_DURATION,
            "FUSE operation latency by op",
            metrics.op_duration.clone(),
        );
        registry.register(
            BACKEND_REQUESTS,
            "Requests to backends by result",
            metrics.requests.clone(),
        );
        registry.register(
            BACKEND_BYTES,
            "Bytes received from each backend",
            metrics.bytes.clone(),
        );
        registry.register(
            BACKEND_REQUEST_DURATION,
            "Backend request latency",
            metrics.request_duration.clone(),
        );
        registry.register(
            READAHEAD_ISSUED_BYTES,
            "Bytes prefetched speculatively",
            metrics.readahead_issued.clone(),
        );
        registry.register(
            READAHEAD_USED_BYTES,
            "Prefetched bytes a reader then asked for",
            metrics.readahead_used.clone(),
        );
        registry.register(
            READAHEAD_WASTED_BYTES,
            "Prefetched bytes nobody read",
            metrics.readahead_wasted.clone(),
        );
        registry.register(
            READAHEAD_SKIPPED,
            "Prefetches not issued because the budget was spent",
            metrics.readahead_skipped.clone(),
        );
        registry.register(
            CACHE_WRITES_SKIPPED,
            "Fetched blocks not cached because the cache disk fell behind",
            metrics.cache_writes_skipped.clone(),
        );
        registry.register(
            KEYS_SKIPPED,
            "Keys a listing left out (not a valid path component, or both a file and a prefix)",
            metrics.keys_skipped.clone(),
        );
        registry.register(
            CACHE_WRITE_ERRORS,
            "Blocks the cache disk refused to store (full, I/O error)",
            metrics.cache_write_errors.clone(),
        );
        registry.register(
            BACKEND_ERRORS,
            "Failed backend requests by kind",
            metrics.errors.clone(),
        );
        registry.register(
            MEMORY_BYTES_SERVED,
            "Bytes served from just-fetched blocks held in memory",
            metrics.memory_bytes_served.clone(),
        );
        registry.register(
            PASSTHROUGH_ACTIVE,
            "1 when the kernel reads whole cached files itself (FUSE passthrough), else 0",
            metrics.passthrough_active.clone(),
        );
        registry.register(
            OPENS,
            "File opens by how their reads are served (passthrough: by the kernel from the cache file; daemon)",
            metrics.opens.clone(),
        );
        if let Some(cache) = cache {
            registry.register_collector(Box::new(CacheCollector(cache)));
        }
        metrics
    }

    /// One FUSE operation finished.
    pub fn op(&self, op: &'static str, errno: i32, took: Duration) {
        self.ops
            .get_or_create(&OpLabels {
                op,
                result: errno_name(errno),
            })
            .inc();
        self.op_duration
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }

    /// One backend request (list, head or ranged GET) finished.
    pub fn request(&self, backend: &str, errno: i32, took: Duration) {
        let result = errno_name(errno);
        self.requests
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
                result,
            })
            .inc();
        self.request_duration
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A backend request failed with an error of `kind`.
    pub fn backend_error(&self, backend: &str, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                backend: backend.to_owned(),
                kind,
            })
            .inc();
    }

    /// Object bytes received from a backend.
    pub fn backend_bytes(&self, backend: &str, bytes: u64) {
        self.bytes
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Speculative bytes issued, and what became of earlier ones.
    pub(crate) fn readahead(&self, issued: u64, outcome: &crate::readahead::Outcome) {
        self.readahead_issued.inc_by(issued);
        self.readahead_used.inc_by(outcome.used);
        self.readahead_wasted.inc_by(outcome.wasted);
    }

    /// Whether the kernel took FUSE passthrough at mount.
    pub(crate) fn passthrough(&self, active: bool) {
        self.passthrough_active.set(i64::from(active));
    }

    /// A file was opened, its reads served by the kernel (`passthrough`) or by us (`daemon`).
    pub(crate) fn opened(&self, served: &'static str) {
        self.opens.get_or_create(&ServedLabel { served }).inc();
    }

    /// The cache disk refused a block; returns how many it has refused so far.
    pub(crate) fn cache_write_error(&self) -> u64 {
        self.cache_write_errors.inc() + 1
    }

    /// A block was served but not cached: too many writes were queued.
    /// A listing of `backend` left a key out, for `reason` (`invalid_name`, `file_and_prefix`).
    pub(crate) fn key_skipped(&self, backend: &str, reason: &'static str) {
        self.keys_skipped
            .get_or_create(&SkipLabels {
                backend: backend.to_owned(),
                reason,
            })
            .inc();
    }

    pub(crate) fn cache_write_skipped(&self) {
        self.cache_writes_skipped.inc();
    }

    /// A read was answered from a block still in memory.
    pub(crate) fn memory_served(&self, bytes: u64) {
        self.memory_bytes_served.inc_by(bytes);
    }

    /// A prefetch was dropped for lack of budget.
    pub(crate) fn readahead_skipped(&self) {
        self.readahead_skipped.inc();
    }
}

/// Reads the block cache's own counters at scrape time, so they count exactly what the cache did.
#[derive(Debug)]
struct CacheCollector(Arc<BlockCache>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.0.stats();
        for (name, help, value) in [
            (
                CACHE_HITS,
                "Reads answered from the block cache",
                stats.hits.load(Relaxed),
            ),
            (
                CACHE_MISSES,
                "Block reads the cache could not answer",
                stats.misses.load(Relaxed),
            ),
            (
                CACHE_BYTES_SERVED,
                "Bytes served from the block cache",
                stats.bytes_served.load(Relaxed),
            ),
            (
                CACHE_EVICTIONS,
                "Blocks evicted from the cache",
                stats.evictions.load(Relaxed),
            ),
            (
                CACHE_CHECKSUM_FAILURES,
                "Cache blocks dropped for a bad checksum",
                stats.checksum_failures.load(Relaxed),
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let metric = encoder.encode_descriptor(
            CACHE_SIZE_BYTES,
            "Bytes of block files on disk",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.size() as i64).encode(metric)?;
        let metric = encoder.encode_descriptor(
            CACHE_UTILIZATION,
            "Bytes of block files on disk as a fraction of cache.max_size",
            None,
            MetricType::Gauge,
        )?;
        let max = self.0.max_size().max(1) as f64;
        ConstGauge::new(self.0.size() as f64 / max).encode(metric)?;
        Ok(())
    }
}
