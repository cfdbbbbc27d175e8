//! CSI call metrics, shared by the controller and node services.

use std::time::Instant;

use tracing::Instrument;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counter name: CSI calls by method and gRPC code.
pub const CSI_OPERATIONS: &str = "operations";
/// Histogram name: CSI call latency by method.
pub const CSI_OPERATION_DURATION: &str = "operation_duration_seconds";
/// Gauge name: volumes the controller manages, by protocol.
pub const CSI_VOLUMES: &str = "volumes";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

/// Handles to the CSI metrics; cloning shares them.
#[derive(Clone, Debug)]
pub struct CsiMetrics {
    calls: Family<CallLabels, Counter>,
    duration: Family<MethodLabel, Histogram>,
    volumes: Family<ProtocolLabel, Gauge>,
}

impl Default for CsiMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            volumes: Family::default(),
        }
    }
}

impl CsiMetrics {
    /// Registers in `registry` (the binary adds the `tns_csi_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            CSI_OPERATIONS,
            "CSI calls by method and gRPC code",
            metrics.calls.clone(),
        );
        registry.register(
            CSI_OPERATION_DURATION,
            "CSI call latency by method",
            metrics.duration.clone(),
        );
        registry.register(
            CSI_VOLUMES,
            "Volumes the controller manages on TrueNAS, by protocol (counted every minute)",
            metrics.volumes.clone(),
        );
        metrics
    }

    /// Sets how many volumes of each protocol exist (every protocol is set, zero included).
    pub fn set_volumes(&self, counts: &[(crate::Protocol, u64)]) {
        for protocol in [
            crate::Protocol::Nfs,
            crate::Protocol::Smb,
            crate::Protocol::Nvmeof,
            crate::Protocol::Iscsi,
        ] {
            let n = counts
                .iter()
                .filter(|(p, _)| *p == protocol)
                .map(|(_, n)| *n)
                .sum::<u64>();
            self.volumes
                .get_or_create(&ProtocolLabel {
                    protocol: protocol.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Records one finished call.
    pub fn record(&self, method: &'static str, code: tonic::Code, started: Instant) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                grpc_code: code_name(code),
            })
            .inc();
        self.duration
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Runs `work` as CSI call `method`, recording its outcome and logging failures.
    pub async fn observe<T>(
        &self,
        method: &'static str,
        work: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        self.observe_volume(method, "", work).await
    }

    /// [`CsiMetrics::observe`] for a call about one volume (or snapshot): everything it logs
    /// carries the method and `volume`, so one grep of a JSON log follows one volume.
    pub async fn observe_volume<T>(
        &self,
        method: &'static str,
        volume: &str,
        work: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let span = tracing::info_span!("csi", method, volume = tracing::field::Empty);
        if !volume.is_empty() {
            span.record("volume", volume);
        }
        self.run(method, work).instrument(span).await
    }

    async fn run<T>(
        &self,
        method: &'static str,
        work: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let started = Instant::now();
        let result = work.await;
        let code = result
            .as_ref()
            .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        self.record(method, code, started);
        match &result {
            Ok(_) => tracing::debug!(method, took = ?started.elapsed(), "CSI call"),
            Err(status) => tracing::info!(
                method,
                code = code_name(code),
                message = status.message(),
                "CSI call failed"
            ),
        }
        result.map(tonic::Response::new)
    }
}

/// The gRPC code as Kubernetes tooling spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
