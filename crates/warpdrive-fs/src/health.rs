//! Backend health: the last error each backend gave (from real traffic) and a cheap probe
//! (the first page of one listing), cached for a few seconds and single-flight, so `/readyz`
//! and the control plane can name a failing backend without hammering it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;

use crate::core::Core;
use crate::error::FsError;
use crate::inodes::store_path;

/// How long a probe's answer is reused.
pub const PROBE_CACHE: Duration = Duration::from_secs(5);
/// The longest a probe waits for its backend (within the backend's own timeout).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the mount knows of one backend's health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendHealth {
    /// Backend name.
    pub name: String,
    /// `ok`, `degraded` (the last probe failed), or `unknown` (never probed).
    pub state: String,
    /// Why the last probe failed.
    pub probe_error: Option<String>,
    /// The last error real traffic met, and when (seconds since the epoch).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<u64>,
    /// Errors by kind since start.
    pub errors: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
pub(crate) struct HealthState {
    last_error: Option<(SystemTime, String)>,
    errors: Vec<(&'static str, u64)>,
    probe: Option<(Instant, Result<(), String>)>,
}

/// Per backend: what traffic saw, and the probe's single-flight lock.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) state: Mutex<HealthState>,
    pub(crate) probing: tokio::sync::Mutex<()>,
}

fn since_epoch(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Health {
    /// Real traffic failed with `err`.
    pub(crate) fn failed(&self, err: &FsError) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_error = Some((SystemTime::now(), err.to_string()));
        let kind = err.kind();
        match state.errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => state.errors.push((kind, 1)),
        }
    }
}

impl Core {
    /// Whether backend `index` answers: the first page of a listing under its prefix, at most
    /// [`PROBE_TIMEOUT`], the answer reused for [`PROBE_CACHE`].
    pub async fn probe(&self, index: usize) -> Result<(), String> {
        let health = &self.health[index];
        let fresh = |health: &Health| {
            let state = health.state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .probe
                .as_ref()
                .filter(|(at, _)| at.elapsed() < PROBE_CACHE)
                .map(|(_, outcome)| outcome.clone())
        };
        if let Some(outcome) = fresh(health) {
            return outcome;
        }
        let _one = health.probing.lock().await;
        if let Some(outcome) = fresh(health) {
            return outcome;
        }
        let b = &self.backends[index];
        let prefix = (!b.prefix.is_empty()).then(|| store_path(&b.prefix));
        let store = b.store.clone();
        let timeout = b.timeout.min(PROBE_TIMEOUT);
        let outcome = match tokio::time::timeout(timeout, async move {
            let mut listing = store.list(prefix.as_ref());
            listing.next().await.transpose().map(|_| ())
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(FsError::store(&b.name, err).to_string()),
            Err(_) => Err(format!(
                "backend `{}` did not answer a listing within {timeout:?}",
                b.name
            )),
        };
        health.state.lock().unwrap_or_else(|e| e.into_inner()).probe =
            Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Every backend's health, probing those whose answer is stale.
    pub async fn health(&self) -> Vec<BackendHealth> {
        let probes =
            futures_util::future::join_all((0..self.backends.len()).map(|i| self.probe(i))).await;
        self.backends
            .iter()
            .zip(&self.health)
            .zip(probes)
            .map(|((b, health), probe)| {
                let state = health.state.lock().unwrap_or_else(|e| e.into_inner());
                BackendHealth {
                    name: b.name.clone(),
                    state: if probe.is_ok() { "ok" } else { "degraded" }.to_owned(),
                    probe_error: probe.err(),
                    last_error: state.last_error.as_ref().map(|(_, e)| e.clone()),
                    last_error_at: state.last_error.as_ref().map(|(at, _)| since_epoch(*at)),
                    errors: state
                        .errors
                        .iter()
                        .map(|(k, n)| ((*k).to_owned(), *n))
                        .collect(),
                }
            })
            .collect()
    }
}
