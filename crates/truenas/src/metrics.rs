//! Client metrics: what was called, how it ended, how long it took, and whether we are connected.

use std::time::Duration;

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

/// Label pairs: the system's own (none with one system) and then the series' own.
type Labels = Vec<(String, String)>;

/// Handles to the client metrics; cloning shares them. One set of families serves every
/// TrueNAS system a process talks to, each system's series told apart by a `system` label.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    calls: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    connected: Family<Labels, Gauge>,
    reconnects: Family<Labels, Counter>,
    /// With one system: the same two without labels (no `{}` in the exposition).
    connected_one: Gauge,
    reconnects_one: Counter,
    system: Labels,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 0.5 ms … ~65 s: loopback pings up to slow dataset deletes.
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            connected: Family::default(),
            reconnects: Family::default(),
            connected_one: Gauge::default(),
            reconnects_one: Counter::default(),
            system: Labels::new(),
        }
    }
}

impl ClientMetrics {
    /// Registers the metrics of one TrueNAS system in `registry` (the binary picks the
    /// prefix).
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_with(registry, false)
    }

    /// Registers the metric families of several systems; take each system's handles with
    /// [`ClientMetrics::for_system`].
    pub fn register_several(registry: &mut Registry) -> Self {
        Self::register_with(registry, true)
    }

    fn register_with(registry: &mut Registry, several: bool) -> Self {
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
        let (connected, reconnects) = (
            "Logged-in WebSocket connections to TrueNAS",
            "TrueNAS connections that dropped and were reopened",
        );
        if several {
            registry.register(TRUENAS_CONNECTED, connected, metrics.connected.clone());
            registry.register(TRUENAS_RECONNECTS, reconnects, metrics.reconnects.clone());
        } else {
            registry.register(TRUENAS_CONNECTED, connected, metrics.connected_one.clone());
            registry.register(
                TRUENAS_RECONNECTS,
                reconnects,
                metrics.reconnects_one.clone(),
            );
        }
        metrics
    }

    /// The same families for one of several systems: every series gets `system="<name>"`.
    pub fn for_system(&self, name: &str) -> Self {
        let metrics = Self {
            system: vec![("system".to_owned(), name.to_owned())],
            ..self.clone()
        };
        // Series that must read 0 before anything happens.
        drop(metrics.connected.get_or_create(&metrics.system));
        drop(metrics.reconnects.get_or_create(&metrics.system));
        metrics
    }

    fn labels(&self, more: &[(&str, &str)]) -> Labels {
        let mut labels = self.system.clone();
        labels.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        labels
    }

    pub(crate) fn call(&self, method: &str, outcome: &'static str, took: Duration) {
        self.calls
            .get_or_create(&self.labels(&[("method", method), ("outcome", outcome)]))
            .inc();
        self.duration
            .get_or_create(&self.labels(&[("method", method)]))
            .observe(took.as_secs_f64());
    }

    pub(crate) fn connected(&self, up: bool) {
        let step = if up { 1 } else { -1 };
        if self.system.is_empty() {
            self.connected_one.inc_by(step);
        } else {
            self.connected.get_or_create(&self.system).inc_by(step);
        }
    }

    pub(crate) fn reconnected(&self) {
        if self.system.is_empty() {
            self.reconnects_one.inc();
        } else {
            self.reconnects.get_or_create(&self.system).inc();
        }
    }
}
