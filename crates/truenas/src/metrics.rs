//! Client metrics: what was called, how it ended, how long it took, and whether we are connected.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counter name: calls by method and outcome (`ok` or the error kind).
pub const TRUENAS_CALLS: &str = "truenas_calls";
/// Histogram name: call latency in seconds by method, retries included.
pub const TRUENAS_CALL_DURATION: &str = "truenas_call_duration_seconds";
/// Gauge name: logged-in sockets to TrueNAS right now.
pub const TRUENAS_CONNECTED: &str = "truenas_connected";
/// Counter name: sockets that dropped and were reopened.
pub const TRUENAS_RECONNECTS: &str = "truenas_reconnects";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// Handles to the client metrics; cloning shares them.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    calls: Family<CallLabels, Counter>,
    duration: Family<MethodLabel, Histogram>,
    connected: Gauge,
    reconnects: Counter,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 0.5 ms … ~65 s: loopback pings up to slow dataset deletes.
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            connected: Gauge::default(),
            reconnects: Counter::default(),
        }
    }
}

impl ClientMetrics {
    /// Registers the metrics in `registry` (the binary picks the prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            TRUENAS_CALLS,
            "TrueNAS API calls by method and outcome",
            metrics.calls.clone(),
        );
        registry.register(
            TRUENAS_CALL_DURATION,
            "TrueNAS API call latency by method, retries included",
            metrics.duration.clone(),
        );
        registry.register(
            TRUENAS_CONNECTED,
            "Logged-in WebSocket connections to TrueNAS",
            metrics.connected.clone(),
        );
        registry.register(
            TRUENAS_RECONNECTS,
            "TrueNAS connections that dropped and were reopened",
            metrics.reconnects.clone(),
        );
        metrics
    }

    pub(crate) fn call(&self, method: &str, outcome: &'static str, took: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn connected(&self, up: bool) {
        if up {
            self.connected.inc();
        } else {
            self.connected.dec();
        }
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.inc();
    }
}
