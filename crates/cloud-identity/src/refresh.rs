//! One task per backend keeps a credential fresh: it fetches at start, again ahead of expiry
//! (5 minutes, or half the lifetime of a short-lived token), and with backoff after a failure
//! while the old credential is still valid. Readers never fetch: they take the current
//! credential, or wait (bounded) for the task's next one, so 64 readers at an expiry cause one
//! refresh, not 64.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::CredentialProvider;
use tokio::sync::watch;

use crate::Error;
use crate::metrics::CredentialMetrics;

/// A credential as an identity endpoint issued it.
pub struct Issued<C> {
    /// The credential the store signs with.
    pub credential: C,
    /// When it stops working; `None` for credentials without expiry (Key Vault secrets),
    /// which are fetched again every [`RefreshSettings::every`].
    pub expires_at: Option<SystemTime>,
}

/// One identity flow.
#[async_trait]
pub trait Fetch: Send + Sync + 'static {
    /// What it yields: an object_store credential type.
    type Credential: Send + Sync + 'static;
    /// The config's method name, for logs and metrics.
    fn provider(&self) -> &'static str;
    /// Fetches a fresh credential.
    async fn fetch(&self) -> Result<Issued<Self::Credential>, Error>;
}

#[async_trait]
impl<C: Send + Sync + 'static> Fetch for Box<dyn Fetch<Credential = C>> {
    type Credential = C;
    fn provider(&self) -> &'static str {
        (**self).provider()
    }
    async fn fetch(&self) -> Result<Issued<C>, Error> {
        (**self).fetch().await
    }
}

/// When to refresh.
#[derive(Debug, Clone, Copy)]
pub struct RefreshSettings {
    /// How long ahead of expiry (capped at half the token's lifetime).
    pub ahead: Duration,
    /// Re-fetch period of credentials without expiry.
    pub every: Duration,
    /// How long a reader waits for a credential when none is valid.
    pub wait: Duration,
    /// First retry delay after a failed refresh (doubling, up to a minute).
    pub backoff: Duration,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            ahead: Duration::from_secs(300),
            every: Duration::from_secs(300),
            wait: Duration::from_secs(30),
            backoff: Duration::from_secs(1),
        }
    }
}

struct State<C> {
    current: Option<(Arc<C>, Option<SystemTime>)>,
    last_error: Option<String>,
}

/// The refreshing credential of one backend: object_store's `CredentialProvider`.
pub struct Refresher<C> {
    backend: String,
    provider: &'static str,
    state: watch::Receiver<State<C>>,
    wait: Duration,
    task: tokio::task::AbortHandle,
    /// Whether "no valid credential" was logged since the last good one: every failing read
    /// would otherwise log it again.
    reported: std::sync::atomic::AtomicBool,
}

impl<C> fmt::Debug for Refresher<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credential.
        f.debug_struct("Refresher")
            .field("backend", &self.backend)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl<C> Drop for Refresher<C> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn shown(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || "never".to_owned(),
        |at| {
            chrono::DateTime::<chrono::Utc>::from(at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        },
    )
}

impl<C: Send + Sync + 'static> Refresher<C> {
    /// Starts the refresh task of `backend` on the current tokio runtime.
    pub fn start<F: Fetch<Credential = C>>(
        backend: &str,
        fetch: F,
        settings: RefreshSettings,
        metrics: CredentialMetrics,
    ) -> Self {
        let (tx, rx) = watch::channel(State {
            current: None,
            last_error: None,
        });
        let provider = fetch.provider();
        let name = backend.to_owned();
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let started = SystemTime::now();
                let next = match fetch.fetch().await {
                    Ok(issued) => {
                        failures = 0;
                        metrics.refreshed(&name, provider, "ok");
                        metrics.expires(&name, provider, issued.expires_at.map_or(0, unix));
                        tracing::info!(backend = %name, provider, outcome = "ok", expires = %shown(issued.expires_at), "credential refreshed");
                        let next = match issued.expires_at {
                            Some(at) => {
                                let lifetime = at.duration_since(started).unwrap_or_default();
                                let ahead = settings.ahead.min(lifetime / 2);
                                lifetime.saturating_sub(ahead)
                            }
                            None => settings.every,
                        };
                        tx.send_replace(State {
                            current: Some((Arc::new(issued.credential), issued.expires_at)),
                            last_error: None,
                        });
                        next
                    }
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        metrics.refreshed(&name, provider, "error");
                        let backoff = settings
                            .backoff
                            .saturating_mul(1 << failures.min(6).saturating_sub(1))
                            .min(Duration::from_secs(60));
                        let valid_until = tx.borrow().current.as_ref().and_then(|(_, at)| *at);
                        tracing::warn!(backend = %name, provider, outcome = "error", error = %err, still_valid_until = %shown(valid_until), retry_in = ?backoff, "credential refresh failed");
                        tx.send_modify(|state| state.last_error = Some(err.to_string()));
                        backoff
                    }
                };
                tokio::time::sleep(next).await;
            }
        });
        Self {
            backend: backend.to_owned(),
            provider,
            state: rx,
            wait: settings.wait,
            task: task.abort_handle(),
            reported: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current credential, or the next one the task fetches (within the wait).
    pub async fn current(&self) -> Result<Arc<C>, Error> {
        let mut state = self.state.clone();
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            {
                let now = state.borrow_and_update();
                if let Some((credential, expires)) = &now.current
                    && expires.is_none_or(|at| at > SystemTime::now())
                {
                    self.reported
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    return Ok(credential.clone());
                }
            }
            if tokio::time::timeout_at(deadline, state.changed())
                .await
                .is_err()
            {
                let reason = state
                    .borrow()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("no refresh finished within {:?}", self.wait));
                if !self
                    .reported
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(backend = %self.backend, provider = self.provider, %reason, "no valid credential; reads of this backend fail");
                }
                return Err(Error::Unavailable {
                    backend: self.backend.clone(),
                    provider: self.provider,
                    reason,
                });
            }
        }
    }
}

#[async_trait]
impl<C: fmt::Debug + Send + Sync + 'static> CredentialProvider for Refresher<C> {
    type Credential = C;

    async fn get_credential(&self) -> object_store::Result<Arc<C>> {
        self.current()
            .await
            .map_err(|err| object_store::Error::Unauthenticated {
                path: String::new(),
                source: Box::new(err),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counting {
        fetches: Arc<AtomicU32>,
        failing: Arc<AtomicBool>,
        lifetime: Duration,
        delay: Duration,
    }

    #[async_trait]
    impl Fetch for Counting {
        type Credential = String;
        fn provider(&self) -> &'static str {
            "test"
        }
        async fn fetch(&self) -> Result<Issued<String>, Error> {
            tokio::time::sleep(self.delay).await;
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::Config("identity endpoint down".into()));
            }
            Ok(Issued {
                credential: format!("token-{n}"),
                expires_at: Some(SystemTime::now() + self.lifetime),
            })
        }
    }

    fn settings() -> RefreshSettings {
        RefreshSettings {
            ahead: Duration::from_secs(300),
            every: Duration::from_secs(300),
            wait: Duration::from_secs(5),
            backoff: Duration::from_millis(50),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixty_four_readers_wait_for_one_refresh() {
        let fetches = Arc::new(AtomicU32::new(0));
        let refresher = Arc::new(Refresher::start(
            "b",
            Counting {
                fetches: fetches.clone(),
                lifetime: Duration::from_secs(3600),
                delay: Duration::from_millis(200),
                ..Default::default()
            },
            settings(),
            CredentialMetrics::default(),
        ));
        let readers: Vec<_> = (0..64)
            .map(|_| {
                let r = refresher.clone();
                tokio::spawn(async move { r.current().await.unwrap() })
            })
            .collect();
        for reader in readers {
            assert_eq!(*reader.await.unwrap(), "token-1");
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one refresh for 64 readers"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_ahead_of_expiry_and_keeps_a_valid_token_through_failures() {
        let fetches = Arc::new(AtomicU32::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let metrics = CredentialMetrics::default();
        let refresher = Refresher::start(
            "b",
            Counting {
                fetches: fetches.clone(),
                failing: failing.clone(),
                lifetime: Duration::from_secs(2),
                delay: Duration::ZERO,
            },
            settings(),
            metrics.clone(),
        );
        assert_eq!(*refresher.current().await.unwrap(), "token-1");
        // Half the 2 s lifetime ahead: the second token arrives before the first expires.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(*refresher.current().await.unwrap(), "token-2");
        // The endpoint fails: retries with backoff, the valid token keeps serving.
        failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let during = fetches.load(Ordering::SeqCst);
        assert!(during >= 4, "retried after failing ({during} fetches)");
        // Recovers: the next retry succeeds.
        failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let token = refresher.current().await.unwrap();
        assert!(
            token.starts_with("token-") && *token != "token-2",
            "{token}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_token_fails_fast_naming_backend_provider_and_cause() {
        let failing = Arc::new(AtomicBool::new(true));
        let refresher = Refresher::start(
            "training",
            Counting {
                failing,
                lifetime: Duration::from_secs(1),
                ..Default::default()
            },
            RefreshSettings {
                wait: Duration::from_millis(300),
                ..settings()
            },
            CredentialMetrics::default(),
        );
        let started = std::time::Instant::now();
        let err = refresher.current().await.unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            err.contains("training")
                && err.contains("test")
                && err.contains("identity endpoint down"),
            "{err}"
        );
    }
}
