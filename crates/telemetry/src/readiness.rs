//! Named readiness checks behind `/readyz`: each says why the process cannot serve yet.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Whether a failing check makes the process unready, or only shows it degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Failing means unready (503).
    Required,
    /// Failing is reported as `degraded NAME: reason` while the process stays ready: one of
    /// several backends, say, whose loss the others do not share.
    Degradable,
}

/// The set of checks `/readyz` runs; cheap to clone, shared with the code that registers.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<(String, Severity, CheckFn)>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("checks", &self.names())
            .finish()
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The name it was registered under (`truenas`, `mount`, `backend:training`).
    pub name: String,
    /// `Err` carries a reason safe to show to anyone who can reach the endpoint.
    pub outcome: Result<(), String>,
    /// Whether a failure makes the process unready.
    pub severity: Severity,
}

impl Readiness {
    /// Adds a check; `check` is called on every `/readyz` request.
    pub fn register<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(name.into(), Severity::Required, check);
    }

    /// Adds a check whose failure shows the process degraded, not unready.
    pub fn register_degradable<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(name.into(), Severity::Degradable, check);
    }

    fn add<F, Fut>(&self, name: String, severity: Severity, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: CheckFn = Arc::new(move || Box::pin(check()));
        self.lock().push((name, severity, check));
    }

    /// Names of the registered checks, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(name, _, _)| name.clone())
            .collect()
    }

    /// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`].
    pub async fn evaluate(&self) -> Vec<CheckResult> {
        let checks: Vec<(String, Severity, CheckFn)> = self.lock().clone();
        let handles: Vec<_> = checks
            .into_iter()
            .map(|(name, severity, check)| {
                let fut = check();
                let handle = tokio::spawn(async move {
                    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs())),
                    }
                });
                (name, severity, handle)
            })
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        for (name, severity, handle) in handles {
            let outcome = handle
                .await
                .unwrap_or_else(|err| Err(format!("check panicked: {err}")));
            results.push(CheckResult {
                name,
                outcome,
                severity,
            });
        }
        results
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Severity, CheckFn)>> {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
