//! The control plane, both ends. Daemon side: the local socket (0600 in a 0700 directory, so
//! only the daemon's user reaches it) and, when enabled, the authenticated TCP address, both
//! answering warpdrive-control's routes. Client side: `warpdrive-mount ctl …` and `warm`,
//! which print tables on a terminal (JSON with `--json`) and follow a warm job with a
//! progress bar; Ctrl-C detaches from a job, it never cancels it.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::{UnixListener, UnixStream};
use warpdrive_control::api::{self, Job, JobState, WarmSpec};
use warpdrive_control::client::{Client, ClientError};

use crate::cli::{CtlCommand, WarmArgs};
use crate::config::Config;

/// The socket file; removed when dropped.
pub(crate) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds `path` (0600, parent 0700), replacing a stale socket left by a crash but never one a
/// live daemon serves.
pub(crate) async fn bind(path: &Path) -> anyhow::Result<(SocketFile, UnixListener)> {
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
    Ok((SocketFile(path.to_owned()), listener))
}

/// How `ctl` reaches the daemon.
pub(crate) struct Reach {
    /// Prefer the local socket.
    pub(crate) socket: bool,
    /// Extra CA for HTTPS.
    pub(crate) ca_file: Option<PathBuf>,
}

fn client(config: &Config, reach: &Reach) -> anyhow::Result<(Client, String)> {
    let cp = &config.control_plane;
    if reach.socket || !cp.enabled {
        let path = &config.control_socket;
        return Ok((
            Client::socket(path)?,
            format!(
                "the control socket {} (config key `control_socket`)",
                path.display()
            ),
        ));
    }
    let token = config
        .control_token()
        .map_err(|p| anyhow::anyhow!("config key `{}`: {}", p.key, p.message))?;
    let token = warpdrive_control::auth::Token::new(token.value, &token.source.to_string())?;
    let (scheme, tls) = match &cp.tls {
        None => ("http", None),
        Some(server) => {
            let settings = tls::ClientTlsSettings {
                ca_file: reach
                    .ca_file
                    .clone()
                    .or_else(|| Some(server.cert_file.clone())),
                ..Default::default()
            };
            let config =
                tls::client_config(&settings, "control_plane", &tls::TlsMetrics::default())
                    .context("config key `control_plane.tls`")?;
            ("https", Some(config))
        }
    };
    if cp.addr.port() == 0 {
        bail!(
            "config key `control_plane.addr` has port 0 (any free port), so the port is only in the daemon's log; give it a fixed port, or use --socket"
        );
    }
    // A wildcard listen address is reached on loopback.
    let mut addr = cp.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let base = if scheme == "https" && addr.ip().is_loopback() {
        format!("https://localhost:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    Ok((
        Client::tcp(&base, token, tls)?,
        format!("{base} (config key `control_plane.addr`)"),
    ))
}

/// Adds where we tried to a connection failure, with what to do about it.
fn reached<T>(result: Result<T, ClientError>, at: &str) -> anyhow::Result<T> {
    result.map_err(|err| match err {
        ClientError::Connect { .. } => anyhow::anyhow!(
            "cannot reach a running warpdrive-mount at {at}: start the mount first (the control plane is part of the running daemon)"
        ),
        other => other.into(),
    })
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

/// Prints `rows` under `header` as aligned columns.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row.clone()))?;
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn job_rows(jobs: &[Job]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(|j| {
            let p = &j.progress;
            let pct = if p.bytes_total > 0 {
                format!("{:.0}%", 100.0 * p.bytes_done as f64 / p.bytes_total as f64)
            } else {
                "-".into()
            };
            vec![
                j.id.clone(),
                format!("{:?}", j.state).to_lowercase(),
                j.spec.backend.clone(),
                if j.spec.prefix.is_empty() {
                    "/".into()
                } else {
                    j.spec.prefix.clone()
                },
                format!("{}/{}", p.files_done, p.files_total),
                pct,
                human(p.bytes_fetched as f64),
            ]
        })
        .collect()
}

const JOB_HEADER: [&str; 7] = [
    "ID", "STATE", "BACKEND", "PREFIX", "FILES", "DONE", "FETCHED",
];

/// `warpdrive-mount ctl …`.
pub(crate) async fn ctl(
    config: &Config,
    reach: &Reach,
    json: bool,
    command: CtlCommand,
) -> anyhow::Result<()> {
    let (client, at) = client(config, reach)?;
    let mut out = std::io::stdout().lock();
    match command {
        CtlCommand::Status => {
            let s: api::Status = reached(client.get("/v1/status").await, &at)?;
            if json {
                return print_json(&s);
            }
            writeln!(out, "version      {}", s.version)?;
            writeln!(out, "uptime       {} s", s.uptime_seconds)?;
            writeln!(
                out,
                "mount        {} ({})",
                s.mount_point,
                if s.mounted { "mounted" } else { "NOT MOUNTED" }
            )?;
            writeln!(out, "backends     {}", s.backends)?;
            if let Some(c) = &s.cache {
                writeln!(
                    out,
                    "cache        {} of {} ({:.1}%), {} blocks, {} hits, {} misses",
                    human(c.bytes as f64),
                    human(c.max_bytes as f64),
                    100.0 * c.utilization,
                    c.blocks,
                    c.hits,
                    c.misses
                )?;
            }
            writeln!(out, "jobs running {}", s.jobs_running)?;
        }
        CtlCommand::Backends => {
            let b: api::Backends = reached(client.get("/v1/backends").await, &at)?;
            if json {
                return print_json(&b);
            }
            let rows: Vec<Vec<String>> = b
                .backends
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        h.state.clone(),
                        h.probe_error
                            .clone()
                            .or_else(|| h.last_error.clone())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table(&mut out, &["BACKEND", "STATE", "LAST ERROR"], &rows)?;
        }
        CtlCommand::Cache => {
            let c: api::CacheStats = reached(client.get("/v1/cache").await, &at)?;
            if json {
                return print_json(&c);
            }
            let rows: Vec<Vec<String>> = c
                .backends
                .iter()
                .map(|b| {
                    vec![
                        b.backend.clone(),
                        b.blocks.to_string(),
                        human(b.bytes as f64),
                        b.hits.to_string(),
                        b.misses.to_string(),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["BACKEND", "BLOCKS", "BYTES", "HITS", "MISSES"],
                &rows,
            )?;
            writeln!(
                out,
                "total {} of {} ({:.1}%)",
                human(c.totals.bytes as f64),
                human(c.totals.max_bytes as f64),
                100.0 * c.totals.utilization
            )?;
        }
        CtlCommand::Jobs { id: Some(id) } => {
            let job: Job = reached(client.get(&format!("/v1/jobs/{id}")).await, &at)?;
            if json {
                return print_json(&job);
            }
            table(&mut out, &JOB_HEADER, &job_rows(std::slice::from_ref(&job)))?;
            if let Some(err) = &job.error {
                writeln!(out, "error: {err}")?;
            }
        }
        CtlCommand::Jobs { id: None } => {
            let jobs: api::Jobs = reached(client.get("/v1/jobs").await, &at)?;
            if json {
                return print_json(&jobs);
            }
            table(&mut out, &JOB_HEADER, &job_rows(&jobs.jobs))?;
        }
        CtlCommand::Warm(args) => {
            drop(out);
            return warm_with(&client, &at, &args, json).await;
        }
        CtlCommand::Attach { id } => {
            drop(out);
            let job: Job = reached(client.get(&format!("/v1/jobs/{id}")).await, &at)?;
            return follow(&client, job, json).await;
        }
        CtlCommand::Cancel { id } => {
            let job: Job = reached(client.delete(&format!("/v1/jobs/{id}")).await, &at)?;
            if json {
                return print_json(&job);
            }
            writeln!(
                out,
                "job {} is {}",
                job.id,
                format!("{:?}", job.state).to_lowercase()
            )?;
        }
        CtlCommand::Evict { backend, prefix } => {
            let e: api::Evicted = reached(
                client
                    .post("/v1/evict", &api::Target { backend, prefix })
                    .await,
                &at,
            )?;
            if json {
                return print_json(&e);
            }
            writeln!(
                out,
                "evicted {} blocks, {}",
                e.blocks,
                human(e.bytes as f64)
            )?;
        }
        CtlCommand::Invalidate { backend, prefix } => {
            let i: api::Invalidated = reached(
                client
                    .post("/v1/invalidate", &api::Target { backend, prefix })
                    .await,
                &at,
            )?;
            if json {
                return print_json(&i);
            }
            writeln!(
                out,
                "invalidated {} files and {} directories; their next open asks the backend",
                i.files, i.dirs
            )?;
        }
        CtlCommand::Usage => {
            let u: api::UsageReport = reached(client.get("/v1/usage").await, &at)?;
            if json {
                return print_json(&u);
            }
            let rows: Vec<Vec<String>> = u
                .rows
                .iter()
                .map(|r| {
                    vec![
                        r.backend.clone(),
                        if r.prefix.is_empty() {
                            "/".into()
                        } else {
                            r.prefix.clone()
                        },
                        r.uid.to_string(),
                        human(r.bytes as f64),
                        r.files.to_string(),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["BACKEND", "PREFIX", "UID", "READ", "FILES"],
                &rows,
            )?;
            if u.dropped_reads > 0 {
                writeln!(
                    out,
                    "{} reads ({}) not counted: the table is full at {} rows (control_plane.usage.max_entries)",
                    u.dropped_reads,
                    human(u.dropped_bytes as f64),
                    u.max_entries
                )?;
            }
        }
    }
    Ok(())
}

/// `warpdrive-mount warm`: `ctl warm` over the socket or the control plane.
pub(crate) async fn warm(config: &Config, reach: &Reach, args: &WarmArgs) -> anyhow::Result<()> {
    let (client, at) = client(config, reach)?;
    warm_with(&client, &at, args, false).await
}

async fn warm_with(client: &Client, at: &str, args: &WarmArgs, json: bool) -> anyhow::Result<()> {
    let spec = WarmSpec {
        backend: args.backend.clone(),
        prefix: args.prefix.clone(),
        workers: args.workers,
        max_bytes_per_second: args.max_rate.map(|r| r.as_u64()),
    };
    let job: Job = reached(client.post("/v1/jobs", &spec).await, at)?;
    if args.detach {
        if json {
            return print_json(&job);
        }
        writeln!(
            std::io::stdout(),
            "{}: warm job started; follow it with `warpdrive-mount ctl attach {}`",
            job.id,
            job.id
        )?;
        return Ok(());
    }
    follow(client, job, json).await
}

/// Shows a job's progress until it ends (a bar on a terminal, a line every few seconds
/// otherwise), then a summary on stdout; Ctrl-C leaves it running.
async fn follow(client: &Client, mut job: Job, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let base_fetched = job.progress.bytes_fetched;
    let bar = if std::io::stderr().is_terminal() && !json {
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
    let path = format!("/v1/jobs/{}", job.id);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    while job.state == JobState::Running {
        tokio::select! {
            _ = &mut interrupt => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                writeln!(
                    std::io::stderr(),
                    "detached: job {} keeps running in the daemon; `warpdrive-mount ctl attach {}` follows it, `ctl cancel {}` stops it",
                    job.id, job.id, job.id
                )?;
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        job = client.get(&path).await.map_err(|err| {
            anyhow::anyhow!(
                "{err}; the job keeps running if the daemon does (`warpdrive-mount ctl jobs`)"
            )
        })?;
        let p = &job.progress;
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
            None if !json && last_line.elapsed() >= Duration::from_secs(5) => {
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
                writeln!(
                    std::io::stderr(),
                    "warm {}: {files}, {} of {}, {}/s, ETA {eta}",
                    job.id,
                    human(p.bytes_done as f64),
                    human(p.bytes_total as f64),
                    human(rate)
                )?;
            }
            None => {}
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if json {
        print_json(&job)?;
    } else {
        let p = &job.progress;
        let secs = started.elapsed().as_secs_f64();
        let fetched = p.bytes_fetched - base_fetched.min(p.bytes_fetched);
        writeln!(
            std::io::stdout(),
            "warmed {} files, {} ({} fetched, {} already cached) in {secs:.1} s, {}/s; {} failed",
            p.files_done,
            human(p.bytes_done as f64),
            human(fetched as f64),
            human(p.bytes_cached as f64),
            human(fetched as f64 / secs.max(0.001)),
            p.files_failed
        )?;
    }
    match job.state {
        JobState::Succeeded => Ok(()),
        JobState::Cancelled => bail!("job {} was cancelled", job.id),
        _ => bail!(
            "{}",
            job.error
                .unwrap_or_else(|| format!("job {} did not finish", job.id))
        ),
    }
}
