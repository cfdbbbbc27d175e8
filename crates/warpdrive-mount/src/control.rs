//! The local control socket: `warpdrive-mount warm` asks the running daemon to fill its cache,
//! so only one process ever writes the cache (a second process opening it was a mistake of the
//! original design). One JSON request line in, JSON progress lines out; closing the connection
//! cancels the work. The socket is 0600 in a 0700 directory: only the daemon's user reaches it.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use warpdrive_fs::{Core, WarmProgress};

/// A request on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Warm {
        backend: String,
        #[serde(default)]
        prefix: String,
        #[serde(default = "default_workers")]
        workers: usize,
    },
}

fn default_workers() -> usize {
    8
}

/// Progress as it travels on the socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    files_total: u64,
    bytes_total: u64,
    listed: bool,
    files_done: u64,
    files_failed: u64,
    bytes_done: u64,
    bytes_cached: u64,
    bytes_fetched: u64,
}

impl From<&WarmProgress> for Progress {
    fn from(p: &WarmProgress) -> Self {
        Self {
            files_total: p.files_total,
            bytes_total: p.bytes_total,
            listed: p.listed,
            files_done: p.files_done,
            files_failed: p.files_failed,
            bytes_done: p.bytes_done,
            bytes_cached: p.bytes_cached,
            bytes_fetched: p.bytes_fetched,
        }
    }
}

/// A line the daemon sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Progress(Progress),
    Done(Progress),
    Error(String),
}

/// The listening socket; removed when dropped.
pub(crate) struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (0600, parent 0700), replacing a stale socket left by a crash but never one a
/// live daemon serves.
pub(crate) async fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "config key `control_socket`: cannot create {}",
                dir.display()
            )
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "config key `control_socket`: another warpdrive-mount already serves {}; give each mount its own socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "config key `control_socket`: cannot listen on {}",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(ControlSocket {
        path: path.to_owned(),
        listener,
    })
}

/// Answers requests until the task is dropped.
pub(crate) async fn serve(socket: ControlSocket, core: Arc<Core>) {
    loop {
        match socket.listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, core.clone()));
            }
            Err(err) => {
                tracing::warn!(%err, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> bool {
    let Ok(mut line) = serde_json::to_vec(reply) else {
        return false;
    };
    line.push(b'\n');
    write.write_all(&line).await.is_ok()
}

async fn handle(stream: UnixStream, core: Arc<Core>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let line = match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        _ => return,
    };
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(err) => {
            send(&mut write, &Reply::Error(format!("bad request: {err}"))).await;
            return;
        }
    };
    let Request::Warm {
        backend,
        prefix,
        workers,
    } = request;
    tracing::info!(%backend, %prefix, workers, "cache warm started");
    let (progress, _watch) = tokio::sync::watch::channel(WarmProgress::default());
    let work = core.warm(&backend, &prefix, workers.clamp(1, 256), &progress);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            result = &mut work => {
                let reply = match result {
                    Ok(done) => {
                        tracing::info!(%backend, %prefix, files = done.files_done, failed = done.files_failed, fetched = done.bytes_fetched, "cache warm finished");
                        Reply::Done(Progress::from(&done))
                    }
                    Err(err) => Reply::Error(err.to_string()),
                };
                send(&mut write, &reply).await;
                return;
            }
            _ = tick.tick() => {
                let snapshot = Progress::from(&*progress.borrow());
                if !send(&mut write, &Reply::Progress(snapshot)).await {
                    break;
                }
            }
            line = lines.next_line() => {
                if !matches!(line, Ok(Some(_))) {
                    break;
                }
            }
        }
    }
    tracing::info!(%backend, %prefix, "cache warm cancelled: the client went away (run it again to resume)");
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `warpdrive-mount warm`: asks the daemon at `socket` to warm, shows progress on stderr (a
/// bar on a terminal, a line every few seconds otherwise) and a summary on stdout.
pub(crate) async fn warm(
    socket: &Path,
    backend: &str,
    prefix: &str,
    workers: usize,
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach a running warpdrive-mount at {} (config key `control_socket`); start the mount first: warm fills the running daemon's cache",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let request = Request::Warm {
        backend: backend.to_owned(),
        prefix: prefix.to_owned(),
        workers,
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let started = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )?
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let mut last_line = Instant::now();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply: Reply = serde_json::from_str(&line)
            .with_context(|| format!("unexpected reply from the daemon: {line}"))?;
        match reply {
            Reply::Progress(p) => {
                let files = format!(
                    "files {}/{}{}",
                    p.files_done,
                    p.files_total,
                    if p.listed { "" } else { "+ (listing)" }
                );
                match &bar {
                    Some(bar) => {
                        bar.set_length(p.bytes_total);
                        bar.set_position(p.bytes_done);
                        bar.set_message(files);
                    }
                    None if last_line.elapsed() >= Duration::from_secs(5) => {
                        last_line = Instant::now();
                        let secs = started.elapsed().as_secs_f64();
                        let rate = p.bytes_done as f64 / secs.max(0.001);
                        let eta = if rate > 0.0 && p.listed {
                            format!(
                                "{:.0} s",
                                (p.bytes_total - p.bytes_done.min(p.bytes_total)) as f64 / rate
                            )
                        } else {
                            "?".into()
                        };
                        let _ = writeln!(
                            std::io::stderr(),
                            "warm: {files}, {} of {}, {}/s, ETA {eta}",
                            human(p.bytes_done as f64),
                            human(p.bytes_total as f64),
                            human(rate)
                        );
                    }
                    None => {}
                }
            }
            Reply::Done(p) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                let secs = started.elapsed().as_secs_f64();
                writeln!(
                    std::io::stdout(),
                    "warmed {} files, {} ({} fetched, {} already cached) in {secs:.1} s, {}/s; {} failed",
                    p.files_done,
                    human(p.bytes_done as f64),
                    human(p.bytes_fetched as f64),
                    human(p.bytes_cached as f64),
                    human(p.bytes_fetched as f64 / secs.max(0.001)),
                    p.files_failed
                )?;
                if p.files_failed > 0 {
                    bail!(
                        "{} files could not be cached (see the daemon's log); run warm again to retry them",
                        p.files_failed
                    );
                }
                return Ok(());
            }
            Reply::Error(message) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                bail!("{message}");
            }
        }
    }
    bail!(
        "the daemon closed the connection before the warm finished (did it stop?); run warm again to resume"
    )
}
