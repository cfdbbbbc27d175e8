//! `warpdrive_credential_refreshes_total{backend,provider,outcome}` and the current expiry per
//! backend as a gauge: an operator sees a refresh failing long before the token runs out.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a refresh.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    backend: String,
    provider: String,
    outcome: String,
}

/// Labels of an expiry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    backend: String,
    provider: String,
}

/// The credential metrics, cheap to clone (families share their series).
#[derive(Clone, Debug, Default)]
pub struct CredentialMetrics {
    refreshes: Family<Outcome, Counter>,
    expiry: Family<Source, Gauge>,
}

/// Names, for docs/METRICS.md and the tidy test that checks it.
pub const REFRESHES: &str = "credential_refreshes";
/// Unix time at which the current credential of a backend expires (0: it does not).
pub const EXPIRY: &str = "credential_expiry_timestamp_seconds";

impl CredentialMetrics {
    /// Registers both families in `registry` (the binary adds the `warpdrive_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            REFRESHES,
            "Credential refreshes by backend, provider and outcome (ok, error)",
            metrics.refreshes.clone(),
        );
        registry.register(
            EXPIRY,
            "Unix time the current credential of a backend expires (0: no expiry)",
            metrics.expiry.clone(),
        );
        metrics
    }

    pub(crate) fn refreshed(&self, backend: &str, provider: &str, outcome: &str) {
        self.refreshes
            .get_or_create(&Outcome {
                backend: backend.to_owned(),
                provider: provider.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn expires(&self, backend: &str, provider: &str, unix: i64) {
        self.expiry
            .get_or_create(&Source {
                backend: backend.to_owned(),
                provider: provider.to_owned(),
            })
            .set(unix);
    }
}
