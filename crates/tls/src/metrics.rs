//! The one TLS metric: which components run with certificate verification switched off.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Gauge name: 1 for a component whose client skips certificate verification.
pub const TLS_INSECURE_SKIP_VERIFY: &str = "tls_insecure_skip_verify";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

/// Handles to the TLS metrics, registered once per process.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    insecure: Family<ComponentLabel, Gauge>,
}

impl TlsMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            TLS_INSECURE_SKIP_VERIFY,
            "1 when the component's TLS client skips certificate verification",
            metrics.insecure.clone(),
        );
        metrics
    }

    pub(crate) fn set_insecure(&self, component: &str, insecure: bool) {
        self.insecure
            .get_or_create(&ComponentLabel {
                component: component.to_owned(),
            })
            .set(i64::from(insecure));
    }
}
