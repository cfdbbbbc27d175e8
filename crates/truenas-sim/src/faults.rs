//! Fault injection and counters, shared by every connection of one simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::rpc::{Failure, errno_of};

#[derive(Debug, Default)]
struct State {
    latency: Duration,
    drop_after: Option<u64>,
    drop_probability: f64,
    failures: BTreeMap<String, Failure>,
    refuse_logins: bool,
    insecure_peers: bool,
    zvol_lag: Duration,
    idle_timeout: Option<Duration>,
    rate_limit: Option<u32>,
    busy: BTreeSet<String>,
}

/// Knobs a test turns, and what the simulator counted.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    logins: AtomicU64,
    refused_too_many: AtomicU64,
    max_in_flight: AtomicUsize,
    by_method: Mutex<BTreeMap<String, u64>>,
}

impl Faults {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds `latency` before every call is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.with(|s| s.latency = latency);
    }

    /// Drops the socket that receives the `n`-th call from now, after running it, unanswered.
    pub fn drop_after_calls(&self, n: u64) {
        self.with(|s| s.drop_after = Some(n));
    }

    /// Drops the socket after a call with this probability (0 turns it off).
    pub fn drop_randomly(&self, probability: f64) {
        self.with(|s| s.drop_probability = probability);
    }

    /// Makes every call of `method` fail with a CallError `errname` (e.g. `EBUSY`) and `message`.
    pub fn fail_method(&self, method: &str, errname: &str, message: &str) {
        let errno = errno_of(errname).unwrap_or(14);
        self.with(|s| {
            s.failures
                .insert(method.to_owned(), Failure::call(errno, message))
        });
    }

    /// Makes every call of `method` fail with a validation error (-32602) on `attribute`.
    pub fn fail_method_validation(&self, method: &str, attribute: &str, message: &str) {
        self.with(|s| {
            s.failures
                .insert(method.to_owned(), Failure::invalid(attribute, message))
        });
    }

    /// Stops failing `method`.
    pub fn clear_failure(&self, method: &str) {
        self.with(|s| s.failures.remove(method));
    }

    /// Refuses every login (a wrong or revoked key).
    pub fn refuse_logins(&self, refuse: bool) {
        self.with(|s| s.refuse_logins = refuse);
    }

    /// Treats loopback peers as insecure, so a key sent over plain ws:// is revoked (spec §1.3).
    pub fn treat_peers_as_insecure(&self, insecure: bool) {
        self.with(|s| s.insecure_peers = insecure);
    }

    /// New zvols are not block devices for this long (spec §7.12).
    pub fn set_zvol_lag(&self, lag: Duration) {
        self.with(|s| s.zvol_lag = lag);
    }

    /// Closes sockets that sent nothing for this long, as TrueNAS's nginx does after ~60 s.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.with(|s| s.idle_timeout = timeout);
    }

    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.with(|s| s.idle_timeout)
    }

    /// Unauthenticated calls allowed per method and IP per minute (TrueNAS: 20).
    pub fn set_unauthenticated_rate_limit(&self, per_minute: u32) {
        self.with(|s| s.rate_limit = Some(per_minute));
    }

    pub(crate) fn rate_limit(&self) -> u32 {
        self.with(|s| s.rate_limit.unwrap_or(20))
    }

    /// Makes deleting this dataset fail with EBUSY.
    pub fn mark_busy(&self, dataset: &str, busy: bool) {
        self.with(|s| {
            if busy {
                s.busy.insert(dataset.to_owned());
            } else {
                s.busy.remove(dataset);
            }
        });
    }

    /// Calls received (all methods, all sockets).
    pub fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// Calls of one method received.
    pub fn calls_of(&self, method: &str) -> u64 {
        let map = self
            .counters
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(method).copied().unwrap_or(0)
    }

    /// Calls received so far, by method.
    pub fn calls_by_method(&self) -> std::collections::BTreeMap<String, u64> {
        self.counters
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Login attempts.
    pub fn logins(&self) -> u64 {
        self.counters.logins.load(Ordering::Relaxed)
    }

    /// Calls refused with -32000 (over 20 in flight).
    pub fn refused_too_many(&self) -> u64 {
        self.counters.refused_too_many.load(Ordering::Relaxed)
    }

    /// Most calls seen in flight on one socket.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn count_call(&self, method: &str) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let mut map = self
            .counters
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(method.to_owned()).or_default() += 1;
    }

    pub(crate) fn count_login(&self) {
        self.counters.logins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_refused(&self) {
        self.counters
            .refused_too_many
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn saw_in_flight(&self, n: usize) {
        self.counters.max_in_flight.fetch_max(n, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self) -> Duration {
        self.with(|s| s.latency)
    }

    pub(crate) fn injected(&self, method: &str) -> Option<Failure> {
        self.with(|s| s.failures.get(method).cloned())
    }

    pub(crate) fn logins_refused(&self) -> bool {
        self.with(|s| s.refuse_logins)
    }

    pub(crate) fn peers_insecure(&self) -> bool {
        self.with(|s| s.insecure_peers)
    }

    /// Whether the socket should drop after the call just run.
    pub(crate) fn should_drop(&self) -> bool {
        self.with(|s| {
            if let Some(n) = s.drop_after.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    s.drop_after = None;
                    return true;
                }
            }
            s.drop_probability > 0.0 && fastrand::f64() < s.drop_probability
        })
    }

    pub(crate) fn zvol_visible(&self, _name: &str, created: i64) -> bool {
        let lag = self.with(|s| s.zvol_lag);
        lag.is_zero() || crate::datasets::now() - created >= lag.as_secs().max(1) as i64
    }

    pub(crate) fn check_busy(&self, dataset: &str) -> Result<(), Failure> {
        if self.with(|s| s.busy.contains(dataset)) {
            Err(Failure::call(
                16,
                format!("Failed to delete dataset: cannot destroy '{dataset}': dataset is busy"),
            ))
        } else {
            Ok(())
        }
    }
}
