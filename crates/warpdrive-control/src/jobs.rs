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
