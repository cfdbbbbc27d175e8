//! Warm jobs that belong to the daemon, not to a client: started over the API, run in the
//! background, and kept on disk (one JSON file per job in the cache's state directory, written
//! by rename so a crash leaves the old or the new state, never half of one). At start,
//! unfinished jobs resume; blocks already cached are skipped, so a resumed job fetches only
//! what is missing. A graceful stop lets in-flight fetches land before saving.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use warpdrive_fs::{Core, WarmOptions, WarmProgress};

use crate::api::{Job, JobProgress, JobState, WarmSpec};

/// Finished jobs kept (on disk and in listings); older ones are deleted.
pub const KEEP_FINISHED: usize = 100;
/// How often a running job's progress is written to disk.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Most objects fetched at once by one job.
pub const MAX_WORKERS: usize = 256;

/// Why a job request cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The request names no backend we have, or a prefix outside it, or no cache.
    #[error(transparent)]
    Target(#[from] warpdrive_fs::WarmError),
    /// `workers` is out of range.
    #[error("field `workers`: must be between 1 and {MAX_WORKERS}, not {0}")]
    Workers(usize),
    /// No job has that id.
    #[error("no warm job has id `{0}`")]
    Unknown(String),
    /// The state directory cannot be written.
    #[error("cannot save warm job state in {dir}: {source}")]
    Save {
        /// The state directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct Entry {
    job: Mutex<Job>,
    stop: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The daemon's warm jobs.
pub struct JobStore {
    dir: PathBuf,
    core: Arc<Core>,
    jobs: Mutex<HashMap<String, Arc<Entry>>>,
    counter: AtomicU64,
    /// Held from "is one running already?" to "it is registered", so two requests for the
    /// same warm at once make one job.
    starting: Mutex<()>,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore").field("dir", &self.dir).finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn save(dir: &Path, job: &Job) -> Result<(), JobError> {
    let err = |source| JobError::Save {
        dir: dir.display().to_string(),
        source,
    };
    let path = dir.join(format!("{}.json", job.id));
    let temp = dir.join(format!(".{}.json.tmp", job.id));
    let body = serde_json::to_vec_pretty(job).map_err(|e| err(e.into()))?;
    let mut file = std::fs::File::create(&temp).map_err(err)?;
    file.write_all(&body).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&temp, &path).map_err(err)
}

/// Whether `id` is one we could have made (`warm-<digits and dashes>`), so it is safe in a
/// file name.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("warm-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() < 64 && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    })
}

fn progress_of(base_fetched: u64, p: &WarmProgress) -> JobProgress {
    JobProgress {
        files_total: p.files_total,
        bytes_total: p.bytes_total,
        listed: p.listed,
        files_done: p.files_done,
        files_failed: p.files_failed,
        bytes_done: p.bytes_done,
        bytes_cached: p.bytes_cached,
        bytes_fetched: base_fetched + p.bytes_fetched,
    }
}

impl JobStore {
    /// Loads the jobs kept in `dir` and resumes the unfinished ones.
    pub fn open(dir: &Path, core: Arc<Core>) -> Result<Arc<Self>, JobError> {
        let store = Arc::new(Self {
            dir: dir.to_owned(),
            core,
            jobs: Mutex::default(),
            counter: AtomicU64::new(0),
            starting: Mutex::default(),
        });
        let entries = std::fs::read_dir(dir).map_err(|source| JobError::Save {
            dir: dir.display().to_string(),
            source,
        })?;
        let mut resume = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                let _ = std::fs::remove_file(&path); // a save a crash interrupted
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let job: Job = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(job) => job,
                Err(err) => {
                    tracing::warn!(file = %path.display(), %err, "skipping an unreadable warm job file");
                    continue;
                }
            };
            // The id names the file it is saved to: only ids we make, matching their file.
            if !valid_id(&job.id) || name != format!("{}.json", job.id) {
                tracing::warn!(file = %path.display(), "skipping a warm job file whose id is not its own");
                continue;
            }
            let running = job.state == JobState::Running;
            let id = job.id.clone();
            store.insert(job);
            if running {
                resume.push(id);
            }
        }
        for id in resume {
            if let Some(entry) = store.entry(&id) {
                {
                    let mut job = entry.job.lock().unwrap_or_else(|e| e.into_inner());
                    job.resumed += 1;
                    tracing::info!(job = %id, backend = %job.spec.backend, prefix = %job.spec.prefix, "resuming a warm job left unfinished by the last run");
                }
                store.clone().spawn(entry);
            }
        }
        Ok(store)
    }

    fn insert(&self, job: Job) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            job: Mutex::new(job.clone()),
            stop: Arc::default(),
            task: Mutex::default(),
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id, entry.clone());
        entry
    }

    fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Starts a job, or returns the one already running for the same backend and prefix
    /// (`false`: nothing new was started), so a retried request never doubles the work.
    pub fn start(self: &Arc<Self>, spec: WarmSpec) -> Result<(Job, bool), JobError> {
        if spec.workers == 0 || spec.workers > MAX_WORKERS {
            return Err(JobError::Workers(spec.workers));
        }
        if self.core.cache().is_none() {
            return Err(warpdrive_fs::WarmError::NoCache.into());
        }
        let (_, prefix) = self.core.target(&spec.backend, &spec.prefix)?;
        let spec = WarmSpec { prefix, ..spec };
        let _one = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = self.list().into_iter().find(|j| {
            j.state == JobState::Running
                && j.spec.backend == spec.backend
                && j.spec.prefix == spec.prefix
        }) {
            return Ok((existing, false));
        }
        let created = now();
        let id = format!(
            "warm-{created}-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let job = Job {
            id,
            spec,
            state: JobState::Running,
            progress: JobProgress::default(),
            error: None,
            created_at: created,
            updated_at: created,
            resumed: 0,
        };
        save(&self.dir, &job)?;
        tracing::info!(job = %job.id, backend = %job.spec.backend, prefix = %job.spec.prefix, workers = job.spec.workers, "warm job started");
        let entry = self.insert(job.clone());
        self.clone().spawn(entry);
        self.prune();
        Ok((job, true))
    }

    fn spawn(self: Arc<Self>, entry: Arc<Entry>) {
        let store = self.clone();
        let task_entry = entry.clone();
        let task = tokio::spawn(async move { store.run(task_entry).await });
        *entry.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    async fn run(&self, entry: Arc<Entry>) {
        let (spec, base_fetched) = {
            let job = entry.job.lock().unwrap_or_else(|e| e.into_inner());
            (job.spec.clone(), job.progress.bytes_fetched)
        };
        let options = WarmOptions {
            workers: spec.workers.clamp(1, MAX_WORKERS),
            max_bytes_per_second: spec.max_bytes_per_second,
        };
        let (progress, watch) = watch::channel(WarmProgress::default());
        let work = self
            .core
            .warm(&spec.backend, &spec.prefix, options, &progress, &entry.stop);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(SAVE_EVERY);
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tick.tick() => {
                    let snapshot = progress_of(base_fetched, &watch.borrow());
                    self.update(&entry, |job| job.progress = snapshot);
                }
            }
        };
        let cancelled = {
            let job = entry.job.lock().unwrap_or_else(|e| e.into_inner());
            job.state == JobState::Cancelled
        };
        match result {
            Ok(done) => {
                let snapshot = progress_of(base_fetched, &done);
                self.update(&entry, |job| {
                    job.progress = snapshot;
                    if cancelled || done.stopped {
                        return; // cancelled, or the daemon is stopping: left as it is
                    }
                    if done.files_failed > 0 {
                        job.state = JobState::Failed;
                        job.error = Some(format!(
                            "{} of {} objects could not be cached (see the daemon's log); start the job again to retry them",
                            done.files_failed, done.files_total
                        ));
                    } else {
                        job.state = JobState::Succeeded;
                    }
                });
                let job = entry.job.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tracing::info!(job = %job.id, state = ?job.state, files = done.files_done, failed = done.files_failed, fetched = job.progress.bytes_fetched, "warm job ended");
            }
            Err(err) => {
                tracing::warn!(job = %spec.backend, %err, "warm job failed");
                self.update(&entry, |job| {
                    job.state = JobState::Failed;
                    job.error = Some(err.to_string());
                });
            }
        }
    }

    /// Applies `change` to a job and saves it.
    fn update(&self, entry: &Entry, change: impl FnOnce(&mut Job)) {
        let job = {
            let mut job = entry.job.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut job);
            job.updated_at = now();
            job.clone()
        };
        if let Err(err) = save(&self.dir, &job) {
            tracing::warn!(job = %job.id, %err, "cannot save warm job state");
        }
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<Job> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Job> = jobs
            .values()
            .map(|e| e.job.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        list.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        list
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<Job, JobError> {
        self.entry(id)
            .map(|e| e.job.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .ok_or_else(|| JobError::Unknown(id.to_owned()))
    }

    /// Cancels a running job (its in-flight fetches land first); a finished one is left as it is.
    pub fn cancel(&self, id: &str) -> Result<Job, JobError> {
        let entry = self
            .entry(id)
            .ok_or_else(|| JobError::Unknown(id.to_owned()))?;
        let running =
            entry.job.lock().unwrap_or_else(|e| e.into_inner()).state == JobState::Running;
        if running {
            self.update(&entry, |job| job.state = JobState::Cancelled);
            entry.stop.store(true, Ordering::Relaxed);
            tracing::info!(job = %id, "warm job cancelled");
        }
        self.get(id)
    }

    /// Jobs still running.
    pub fn running(&self) -> usize {
        self.list()
            .iter()
            .filter(|j| j.state == JobState::Running)
            .count()
    }

    /// Stops every running job for a daemon stop: their fetches in flight land, their state
    /// stays `running` on disk, and the next start resumes them. Waits at most `within`.
    pub async fn shutdown(&self, within: Duration) {
        let entries: Vec<Arc<Entry>> = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut tasks = Vec::new();
        for entry in &entries {
            entry.stop.store(true, Ordering::Relaxed);
            if let Some(task) = entry.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                tasks.push(task);
            }
        }
        let all = futures_join(tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("warm jobs did not stop in time; they resume at the next start");
        }
    }

    /// Deletes the oldest finished jobs beyond [`KEEP_FINISHED`].
    fn prune(&self) {
        let finished: Vec<Job> = self
            .list()
            .into_iter()
            .filter(|j| j.state.finished())
            .collect();
        for job in finished.iter().skip(KEEP_FINISHED) {
            self.jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&job.id);
            let _ = std::fs::remove_file(self.dir.join(format!("{}.json", job.id)));
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn core(dir: &Path) -> Arc<Core> {
        core_over(dir, Arc::new(object_store::memory::InMemory::new()))
    }

    fn core_over(dir: &Path, store: Arc<dyn object_store::ObjectStore>) -> Arc<Core> {
        crate::test_support::memory_core(dir, store)
    }

    #[tokio::test]
    async fn a_job_file_whose_id_would_leave_the_state_directory_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let state = core.cache().unwrap().state_dir().unwrap();
        let hostile = Job {
            id: "../../escape".into(),
            spec: WarmSpec {
                backend: "mem".into(),
                prefix: String::new(),
                workers: 1,
                max_bytes_per_second: None,
            },
            state: JobState::Running,
            progress: JobProgress::default(),
            error: None,
            created_at: 0,
            updated_at: 0,
            resumed: 0,
        };
        std::fs::write(
            state.join("warm-1.json"),
            serde_json::to_vec(&hostile).unwrap(),
        )
        .unwrap();
        let store = JobStore::open(&state, core).unwrap();
        assert!(store.list().is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!dir.path().join("escape.json").exists());
        assert!(!state.join("../../escape.json").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_for_the_same_warm_make_one_job() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(object_store::memory::InMemory::new());
        // Two objects at 1 byte/s: the first is fetched at once, the second waits, so the
        // job stays running while the requests race.
        for name in ["p/a", "p/b"] {
            memory
                .put(&name.into(), vec![7u8; 1000].into())
                .await
                .unwrap();
        }
        let core = core_over(dir.path(), memory);
        let state = core.cache().unwrap().state_dir().unwrap();
        let store = JobStore::open(&state, core).unwrap();
        let spec = WarmSpec {
            backend: "mem".into(),
            prefix: "p".into(),
            workers: 1,
            max_bytes_per_second: Some(1),
        };
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (store, spec, barrier) = (store.clone(), spec.clone(), barrier.clone());
                tokio::task::spawn_blocking(move || {
                    barrier.wait();
                    store.start(spec).map(|(job, new)| (job.id, new))
                })
            })
            .collect();
        let mut made = 0;
        let mut ids = std::collections::HashSet::new();
        for handle in handles {
            let (id, new) = handle.await.unwrap().unwrap();
            made += usize::from(new);
            ids.insert(id);
        }
        assert_eq!((made, ids.len()), (1, 1), "one job, returned to all 16");
        // The first object is fetched at once; the second waits for its turn at 1 byte/s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.list()[0].progress.files_done < 1 {
            assert!(std::time::Instant::now() < deadline, "{:?}", store.list());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            store.list()[0].state,
            JobState::Running,
            "{:?}",
            store.list()
        );
        // A stop does not wait out the pacing.
        let started = std::time::Instant::now();
        store.shutdown(Duration::from_secs(20)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
