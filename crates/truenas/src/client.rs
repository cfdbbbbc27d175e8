//! The client: a small pool of logged-in sockets, calls spread over them within TrueNAS's
//! per-socket limit, re-login and reconnect handled here so callers only see typed outcomes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use url::Url;

use crate::connection::{self, Outcome, Outgoing, Socket};
use crate::error::Error;
use crate::method::{Method, Resend};
use crate::metrics::ClientMetrics;
use crate::query::{Filter, Query};
use crate::wire::Request;

/// TrueNAS closes an authenticated socket on a frame over 64 KiB (spec §7.2).
const MAX_REQUEST: usize = 64 * 1024;
/// The server allows 20 calls in flight per socket; we stay below with a margin.
const SERVER_IN_FLIGHT_LIMIT: usize = 20;

/// Where the API key comes from; asked again at every login so a rotated key file is picked up.
#[derive(Clone)]
pub struct ApiKey(Arc<dyn Fn() -> Result<SecretString, String> + Send + Sync>);

impl ApiKey {
    /// A key that never changes.
    pub fn fixed(key: SecretString) -> Self {
        Self(Arc::new(move || Ok(key.clone())))
    }

    /// A key read anew at every login (e.g. from a mounted secret file).
    pub fn from_fn(
        read: impl Fn() -> Result<SecretString, String> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(read))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Everything the client needs; defaults suit a TrueNAS on the LAN.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// `wss://HOST/api/current` (or `ws://` for a loopback simulator, with the opt-in below).
    pub url: Url,
    /// The API key, `<id>-<64 chars>`.
    pub api_key: ApiKey,
    /// With a username the client logs in with `auth.login_ex` (needed from TrueNAS 26 on).
    pub username: Option<String>,
    /// Permits `ws://`, which sends the key in clear; TrueNAS revokes keys seen that way.
    pub allow_insecure_transport: bool,
    /// TLS client configuration for `wss://` (from the `tls` crate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Sockets kept open; calls spread over them.
    pub connections: usize,
    /// Calls in flight per socket (at most 20, TrueNAS's limit); more wait in a queue.
    pub max_in_flight: usize,
    /// How long one call may take, queueing and retries included.
    pub call_timeout: Duration,
    /// How long a job method may run before the wait gives up.
    pub job_timeout: Duration,
    /// WebSocket ping period, well inside the proxy's 60 s idle timeout.
    pub ping_interval: Duration,
    /// Limit for TCP + TLS + upgrade + login.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl ClientSettings {
    /// Defaults for everything but the address and key.
    pub fn new(url: Url, api_key: ApiKey) -> Self {
        Self {
            url,
            api_key,
            username: None,
            allow_insecure_transport: false,
            tls: None,
            connections: 2,
            max_in_flight: 16,
            call_timeout: Duration::from_secs(30),
            job_timeout: Duration::from_secs(300),
            ping_interval: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }

    fn check(&self) -> Result<(), Error> {
        let config = |reason: String| Error::Config { reason };
        match self.url.scheme() {
            "wss" => {
                if self.tls.is_none() {
                    return Err(config("a wss:// URL needs a TLS configuration".into()));
                }
            }
            "ws" if self.allow_insecure_transport => {
                let loopback = match self.url.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(name)) => name == "localhost",
                    None => false,
                };
                if !loopback {
                    tracing::warn!(url = %self.url, "sending the API key over plain ws:// to a non-loopback host; TrueNAS revokes keys it receives this way");
                }
            }
            "ws" => {
                return Err(config(format!(
                    "{} is plain ws://, which would send the API key in clear (TrueNAS revokes such keys); use wss:// or allow an insecure transport explicitly",
                    self.url
                )));
            }
            other => {
                return Err(config(format!(
                    "unsupported URL scheme `{other}` in {}; expected wss://HOST/api/current",
                    self.url
                )));
            }
        }
        if self.url.host_str().is_none() {
            return Err(config(format!("{} has no host", self.url)));
        }
        if self.connections == 0 {
            return Err(config("connections must be at least 1".into()));
        }
        if self.max_in_flight == 0 || self.max_in_flight > SERVER_IN_FLIGHT_LIMIT {
            return Err(config(format!(
                "max_in_flight must be 1 to {SERVER_IN_FLIGHT_LIMIT} (TrueNAS refuses more per socket)"
            )));
        }
        Ok(())
    }
}

#[derive(Clone)]
enum SlotState {
    /// Not logged in. `unreachable` says the last attempt to connect failed (refused, TLS,
    /// DNS) rather than a live socket dropping, so callers need not wait out their deadline.
    Connecting {
        last_error: Option<String>,
        unreachable: bool,
    },
    Up {
        calls: mpsc::Sender<Outgoing>,
    },
    AuthFailed(Error),
    Closed,
}

/// One socket position in the pool, reopened by its supervisor task whenever it drops.
struct Slot {
    permits: Arc<Semaphore>,
    state: watch::Sender<SlotState>,
    /// Bumped at every login, so concurrent callers that all saw ENOTAUTHENTICATED log in once.
    session: AtomicU64,
    relogin: tokio::sync::Mutex<()>,
}

struct Inner {
    settings: Arc<ClientSettings>,
    slots: Vec<Arc<Slot>>,
    ids: Arc<AtomicU64>,
    next_slot: AtomicUsize,
    metrics: ClientMetrics,
    shutdown: watch::Sender<bool>,
    /// The NVMe-oF base NQN, read once (see [`Client::nvmet_base_nqn`]).
    base_nqn: tokio::sync::OnceCell<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A TrueNAS API client; cheap to clone, all clones share the sockets.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.settings.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the settings and starts connecting in the background (see [`Client::ready`]).
    pub fn new(settings: ClientSettings, metrics: ClientMetrics) -> Result<Self, Error> {
        settings.check()?;
        let settings = Arc::new(settings);
        let (shutdown, _) = watch::channel(false);
        let ids = Arc::new(AtomicU64::new(1));
        let slots: Vec<Arc<Slot>> = (0..settings.connections)
            .map(|_| {
                Arc::new(Slot {
                    permits: Arc::new(Semaphore::new(settings.max_in_flight)),
                    state: watch::channel(SlotState::Connecting {
                        last_error: None,
                        unreachable: false,
                    })
                    .0,
                    session: AtomicU64::new(0),
                    relogin: tokio::sync::Mutex::new(()),
                })
            })
            .collect();
        for (index, slot) in slots.iter().enumerate() {
            tokio::spawn(supervise(
                index,
                slot.clone(),
                settings.clone(),
                ids.clone(),
                metrics.clone(),
                shutdown.subscribe(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                slots,
                ids,
                next_slot: AtomicUsize::new(0),
                metrics,
                shutdown,
                base_nqn: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The system's NVMe-oF base NQN, read once per client: subsystem NQNs are built on it
    /// and it changes only when an administrator edits it (new subsystems keep the old base
    /// until the controller restarts, which is still a valid NQN).
    pub async fn nvmet_base_nqn(&self) -> Result<String, Error> {
        self.inner
            .base_nqn
            .get_or_try_init(|| async { self.nvmet().global().await.map(|g| g.basenqn) })
            .await
            .cloned()
    }

    /// Waits until one socket is logged in; fails at once on a refused key.
    pub async fn ready(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.inner.settings.connect_timeout;
        let slot = &self.inner.slots[0];
        wait_up(slot, deadline, &self.inner.settings.url)
            .await
            .map(|_| ())
    }

    /// Whether at least one socket is logged in now (for readiness probes).
    pub fn is_connected(&self) -> bool {
        self.inner
            .slots
            .iter()
            .any(|slot| matches!(*slot.state.borrow(), SlotState::Up { .. }))
    }

    /// Why no socket is logged in, or `None` when one is (for readiness probes: no waiting).
    pub fn connection_problem(&self) -> Option<String> {
        if self.is_connected() {
            return None;
        }
        let url = &self.inner.settings.url;
        let state = self.inner.slots[0].state.borrow().clone();
        Some(match state {
            SlotState::AuthFailed(err) => err.to_string(),
            SlotState::Connecting {
                last_error: Some(err),
                ..
            } => format!("not connected to {url}: {err}"),
            SlotState::Connecting {
                last_error: None, ..
            } => format!("connecting to {url}"),
            SlotState::Closed => "the client is shutting down".into(),
            SlotState::Up { .. } => return None,
        })
    }

    /// Calls `method` with positional `params` within the call timeout.
    ///
    /// Read-only methods are retried transparently across reconnects. Any other call whose
    /// socket dropped after it was sent fails with a retryable [`Error::Transport`]: its outcome
    /// is unknown, so the caller re-queries before trying again.
    pub async fn call(&self, method: Method, params: Vec<Value>) -> Result<Value, Error> {
        self.call_within(method, params, self.inner.settings.call_timeout)
            .await
    }

    /// [`Client::call`] with its own time limit.
    pub async fn call_within(
        &self,
        method: Method,
        params: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let result = self
            .call_until(method, &params, started + timeout, timeout)
            .await;
        let method = method.name();
        self.inner
            .metrics
            .call(method, outcome_label(&result), started.elapsed());
        match &result {
            Ok(_) => tracing::debug!(method, took = ?started.elapsed(), "TrueNAS call"),
            Err(err) => tracing::debug!(method, %err, "TrueNAS call failed"),
        }
        result
    }

    /// Calls a job method and waits for the job to end, returning its result or its error.
    pub async fn call_job(&self, method: Method, params: Vec<Value>) -> Result<Value, Error> {
        let timeout = self.inner.settings.job_timeout;
        let deadline = Instant::now() + timeout;
        let job = self.call(method, params).await?;
        let method = method.name();
        let Some(job_id) = job.as_u64() else {
            return Err(Error::Protocol {
                reason: format!("{method} returned {job} where a job id was expected"),
            });
        };
        let mut delay = Duration::from_millis(50);
        loop {
            let query = Query::all().filter(Filter::eq("id", job_id));
            let jobs = self
                .call(Method::read("core.get_jobs"), query.params())
                .await?;
            let job = jobs
                .as_array()
                .and_then(|jobs| jobs.first())
                .ok_or_else(|| Error::Protocol {
                    reason: format!("job {job_id} of {method} vanished from core.get_jobs"),
                })?;
            match job.get("state").and_then(Value::as_str) {
                Some("SUCCESS") => return Ok(job.get("result").cloned().unwrap_or(Value::Null)),
                Some("FAILED") => return Err(Error::from_job(method, job)),
                Some("ABORTED") => {
                    return Err(Error::Call {
                        method: method.to_owned(),
                        code: -32001,
                        errname: "ECANCELED".into(),
                        reason: format!("job {job_id} was aborted"),
                    });
                }
                _ => {}
            }
            if Instant::now() + delay > deadline {
                return Err(Error::Timeout {
                    method: method.to_owned(),
                    after: timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    fn pick_slot(&self) -> &Arc<Slot> {
        let slots = &self.inner.slots;
        let start = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
        // Prefer a logged-in socket with the most free permits; fall back to round robin.
        (0..slots.len())
            .map(|i| &slots[(start + i) % slots.len()])
            .filter(|slot| matches!(*slot.state.borrow(), SlotState::Up { .. }))
            .max_by_key(|slot| slot.permits.available_permits())
            .unwrap_or(&slots[start % slots.len()])
    }

    async fn call_until(
        &self,
        method: Method,
        params: &[Value],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let read_only = method.resend() == Resend::Safe;
        let method = method.name();
        let timed_out = || Error::Timeout {
            method: method.to_owned(),
            after: timeout,
        };
        let frame_id = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        let frame = Request::new(frame_id, method, params.to_vec()).to_frame();
        if frame.len() > MAX_REQUEST {
            return Err(Error::Protocol {
                reason: format!(
                    "{method} request is {} bytes, over TrueNAS's 64 KiB message limit; split it into several calls",
                    frame.len()
                ),
            });
        }
        let mut relogged = false;
        let mut pause = Duration::from_millis(20);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let id = if attempt == 1 {
                frame_id
            } else {
                self.inner.ids.fetch_add(1, Ordering::Relaxed)
            };
            let frame = if attempt == 1 {
                frame.clone()
            } else {
                Request::new(id, method, params.to_vec()).to_frame()
            };
            let slot = self.pick_slot().clone();
            let calls = wait_up(&slot, deadline, &self.inner.settings.url).await?;
            let permit = tokio::time::timeout_at(deadline, slot.permits.clone().acquire_owned())
                .await
                .map_err(|_| timed_out())?
                .map_err(|_| Error::Transport {
                    reason: "the client is shutting down".into(),
                })?;
            let session = slot.session.load(Ordering::Acquire);
            let (reply, answer) = oneshot::channel();
            let outgoing = Outgoing {
                id: id.to_string(),
                frame,
                reply,
                permit: Some(permit),
            };
            let outcome = if calls.send(outgoing).await.is_err() {
                Outcome::Dropped {
                    sent: false,
                    reason: "the connection closed".into(),
                }
            } else {
                match tokio::time::timeout_at(deadline, answer).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Outcome::Dropped {
                        sent: true,
                        reason: "the connection task ended".into(),
                    },
                }
            };
            match outcome {
                Outcome::Done(Ok(value)) => return Ok(value),
                Outcome::Done(Err(rpc)) => match Error::from_rpc(method, rpc) {
                    Error::NotAuthenticated { .. } if !relogged => {
                        relogged = true;
                        self.relogin(&slot, session, deadline).await?;
                    }
                    Error::TooManyCalls { .. } => {}
                    err => return Err(err),
                },
                Outcome::Dropped { sent: false, .. } => {}
                Outcome::Dropped { sent: true, reason } if !read_only => {
                    return Err(Error::Transport {
                        reason: format!(
                            "{reason} while {method} was in flight; it may or may not have been applied, so re-query before retrying"
                        ),
                    });
                }
                Outcome::Dropped { sent: true, .. } => {}
            }
            if Instant::now() + pause > deadline {
                return Err(timed_out());
            }
            tokio::time::sleep(jitter(pause)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Logs in again on a live socket after ENOTAUTHENTICATED, once for all callers that saw it.
    async fn relogin(
        &self,
        slot: &Slot,
        seen_session: u64,
        deadline: Instant,
    ) -> Result<(), Error> {
        let _one_at_a_time = slot.relogin.lock().await;
        if slot.session.load(Ordering::Acquire) != seen_session {
            return Ok(()); // someone else logged in meanwhile
        }
        tracing::info!("TrueNAS session lost on a live connection; logging in again");
        let calls = wait_up(slot, deadline, &self.inner.settings.url).await?;
        let (method, params) = login_call(&self.inner.settings)?;
        let id = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let frame = Request::new(id, method, params).to_frame();
        calls
            .send(Outgoing {
                id: id.to_string(),
                frame,
                reply,
                permit: None,
            })
            .await
            .map_err(|_| Error::Transport {
                reason: "the connection closed during login".into(),
            })?;
        let outcome = tokio::time::timeout_at(deadline, answer)
            .await
            .map_err(|_| Error::Timeout {
                method: method.to_owned(),
                after: self.inner.settings.call_timeout,
            })?
            .map_err(|_| Error::Transport {
                reason: "the connection closed during login".into(),
            })?;
        match outcome {
            Outcome::Done(Ok(value)) => check_login(&value)?,
            Outcome::Done(Err(rpc)) => return Err(Error::from_rpc(method, rpc)),
            Outcome::Dropped { reason, .. } => return Err(Error::Transport { reason }),
        }
        slot.session.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// Waits until `slot` is logged in, or fails with why it is not.
/// How long a call waits for a TrueNAS that refused the last connection attempt.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(2);

async fn wait_up(
    slot: &Slot,
    deadline: Instant,
    url: &Url,
) -> Result<mpsc::Sender<Outgoing>, Error> {
    let mut state = slot.state.subscribe();
    let mut give_up_at: Option<Instant> = None;
    loop {
        let current = state.borrow_and_update().clone();
        match current {
            SlotState::Up { calls } => return Ok(calls),
            SlotState::AuthFailed(err) => return Err(err),
            SlotState::Closed => {
                return Err(Error::Transport {
                    reason: "the client is shutting down".into(),
                });
            }
            SlotState::Connecting {
                last_error,
                unreachable,
            } => {
                // TrueNAS refused or could not be reached: give the next attempt a moment,
                // then say why at once instead of holding the caller until its deadline.
                if unreachable && give_up_at.is_none() {
                    give_up_at = Some(Instant::now() + UNREACHABLE_GRACE);
                }
                let until = give_up_at.map_or(deadline, |at| at.min(deadline));
                match tokio::time::timeout_at(until, state.changed()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        return Err(Error::Transport {
                            reason: match last_error {
                                Some(err) => format!("not connected to {url}: {err}"),
                                None => format!("not connected to {url} yet"),
                            },
                        });
                    }
                }
            }
        }
    }
}

/// The login call and its params (the key is exposed only into this frame).
fn login_call(settings: &ClientSettings) -> Result<(&'static str, Vec<Value>), Error> {
    let key = (settings.api_key.0)().map_err(|reason| Error::Auth {
        reason: format!("cannot read the API key: {reason}"),
    })?;
    Ok(match &settings.username {
        Some(username) => (
            "auth.login_ex",
            vec![json!({
                "mechanism": "API_KEY_PLAIN",
                "username": username,
                "api_key": key.expose_secret(),
                "login_options": {"user_info": false},
            })],
        ),
        None => (
            "auth.login_with_api_key",
            vec![Value::String(key.expose_secret().to_owned())],
        ),
    })
}

fn check_login(value: &Value) -> Result<(), Error> {
    let refused = |why: &str| {
        Err(Error::Auth {
            reason: format!("TrueNAS refused the API key: {why}"),
        })
    };
    match value {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) => refused(
            "it is wrong, expired or revoked (TrueNAS also revokes a key sent over plain ws:// from another host)",
        ),
        Value::Object(reply) => match reply.get("response_type").and_then(Value::as_str) {
            Some("SUCCESS") => Ok(()),
            Some("EXPIRED") => refused(
                "it has expired or been revoked (TrueNAS also revokes a key sent over plain ws:// from another host)",
            ),
            Some("AUTH_ERR") => {
                refused("the key is wrong or does not belong to the configured username")
            }
            Some(other) => refused(&format!("login answered {other}")),
            None => Err(Error::Protocol {
                reason: "auth.login_ex reply has no response_type".into(),
            }),
        },
        other => Err(Error::Protocol {
            reason: format!("login returned {other} instead of a boolean"),
        }),
    }
}

/// Opens the socket and logs in; the error says which step failed.
async fn connect_and_login(settings: &ClientSettings, ids: &AtomicU64) -> Result<Socket, Error> {
    let mut socket = connection::open(
        &settings.url,
        settings.tls.as_ref(),
        settings.connect_timeout,
    )
    .await?;
    let (method, params) = login_call(settings)?;
    let id = ids.fetch_add(1, Ordering::Relaxed);
    match connection::call_direct(&mut socket, id, method, params, settings.connect_timeout).await?
    {
        Ok(value) => check_login(&value)?,
        Err(rpc) => return Err(Error::from_rpc(method, rpc)),
    }
    Ok(socket)
}

/// Keeps one slot connected: connect, log in, serve, and after a drop try again with backoff.
async fn supervise(
    index: usize,
    slot: Arc<Slot>,
    settings: Arc<ClientSettings>,
    ids: Arc<AtomicU64>,
    metrics: ClientMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = settings.backoff_initial;
    let mut served_before = false;
    while !*shutdown.borrow() {
        let attempt = tokio::select! {
            attempt = connect_and_login(&settings, &ids) => attempt,
            _ = shutdown.changed() => break,
        };
        let mut wait = backoff;
        match attempt {
            Ok(socket) => {
                slot.session.fetch_add(1, Ordering::AcqRel);
                let (calls, queue) = mpsc::channel(settings.max_in_flight * 4);
                slot.state.send_replace(SlotState::Up { calls });
                metrics.connected(true);
                if served_before {
                    metrics.reconnected();
                    tracing::info!(connection = index, "reconnected to TrueNAS");
                } else {
                    tracing::debug!(connection = index, url = %settings.url, "connected to TrueNAS");
                }
                served_before = true;
                let started = Instant::now();
                let reason =
                    connection::run(socket, queue, settings.ping_interval, shutdown.clone()).await;
                metrics.connected(false);
                if *shutdown.borrow() {
                    break;
                }
                tracing::warn!(connection = index, %reason, "lost the connection to TrueNAS; reconnecting");
                slot.state.send_replace(SlotState::Connecting {
                    last_error: Some(reason),
                    unreachable: false,
                });
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = settings.backoff_initial;
                }
                wait = backoff;
            }
            Err(err @ Error::Auth { .. }) => {
                // A refused key will not fix itself quickly; do not hammer the login rate limit.
                tracing::error!(connection = index, %err, "TrueNAS login failed");
                slot.state.send_replace(SlotState::AuthFailed(err));
                wait = backoff.max(Duration::from_secs(30));
            }
            Err(err) => {
                if matches!(err, Error::Busy { .. }) {
                    // TrueNAS rate-limits logins per IP (20 a minute): hammering only extends it.
                    wait = backoff.max(Duration::from_secs(5));
                }
                tracing::warn!(connection = index, %err, "cannot connect to TrueNAS");
                let keep_auth_failure = matches!(*slot.state.borrow(), SlotState::AuthFailed(_));
                if !keep_auth_failure {
                    slot.state.send_replace(SlotState::Connecting {
                        last_error: Some(err.to_string()),
                        unreachable: true,
                    });
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter(wait)) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
    slot.state.send_replace(SlotState::Closed);
}

/// A delay between half and all of `base`, so reconnecting clients do not move in lockstep.
fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

fn outcome_label(result: &Result<Value, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> ClientSettings {
        ClientSettings::new(
            Url::parse(url).unwrap(),
            ApiKey::fixed(SecretString::from("1-abc")),
        )
    }

    #[test]
    fn plain_ws_is_refused_unless_allowed() {
        let err = settings("ws://nas.example/api/current")
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("plain ws://"), "{err}");
        let mut allowed = settings("ws://127.0.0.1:1/api/current");
        allowed.allow_insecure_transport = true;
        allowed.check().unwrap();
        let err = settings("wss://nas.example/api/current")
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("TLS configuration"), "{err}");
        let err = settings("https://nas.example/api/current")
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("unsupported URL scheme"), "{err}");
    }

    #[test]
    fn in_flight_limit_is_checked() {
        let mut s = settings("ws://127.0.0.1:1/api/current");
        s.allow_insecure_transport = true;
        s.max_in_flight = 21;
        assert!(s.check().unwrap_err().to_string().contains("1 to 20"));
    }

    #[test]
    fn login_answers() {
        assert!(check_login(&Value::Bool(true)).is_ok());
        assert!(matches!(
            check_login(&Value::Bool(false)),
            Err(Error::Auth { .. })
        ));
        assert!(check_login(&json!({"response_type": "SUCCESS"})).is_ok());
        let expired = check_login(&json!({"response_type": "EXPIRED"})).unwrap_err();
        assert!(expired.to_string().contains("expired"));
        assert!(matches!(
            check_login(&json!(3)),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let key = ApiKey::fixed(SecretString::from("1-supersecret"));
        assert_eq!(format!("{key:?}"), "ApiKey([REDACTED])");
    }
}
