//! Assembly: config → logging → metrics → serving, and the `check-config` subcommand.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use credentials::Redactor;
use prometheus_client::registry::Registry;
use settings::Loader;
use telemetry::readiness::Readiness;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// Runs the command and turns any error into a message on stderr and exit code 1.
pub(crate) fn main(cli: Cli) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Cache reads and writes run on blocking threads; a bounded pool bounds their buffers
        // (and the allocator arenas that come with many threads).
        .max_blocking_threads(64)
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "warpdrive-mount: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = load(&cli)?;
    match cli.command {
        Some(Command::CheckConfig) => check_config(&config),
        Some(Command::Warm(args)) => {
            let reach = crate::control::Reach {
                socket: false,
                ca_file: None,
            };
            crate::control::warm(&config, &reach, &args).await
        }
        Some(Command::Ctl {
            json,
            socket,
            ca_file,
            command,
        }) => {
            let reach = crate::control::Reach { socket, ca_file };
            crate::control::ctl(&config, &reach, json, command).await
        }
        None => serve(config).await,
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut loader = Loader::new();
    if let Some(path) = &cli.config {
        loader = loader.file(path);
    }
    if let Some(path) = &cli.mount_point {
        loader = loader.flag("mount_point", "--mount-point", path.display().to_string());
    }
    loader = cli.observability.apply(loader);
    loader.load().context("invalid configuration")
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let secrets = config.resolve_secrets().context("invalid configuration")?;
    let problems: Vec<String> = config
        .host_problems()
        .iter()
        .map(|p| format!("config key `{}`: {}", p.key, p.message))
        .collect();
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "));
    }
    let mut redactor = Redactor::default();
    for secret in &secrets {
        redactor.add(&secret.value);
    }
    let yaml = settings::render_redacted(config, &redactor)
        .context("cannot render the effective config")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# warpdrive-mount {} — effective configuration (secrets are never printed)",
        telemetry::version_string(env!("CARGO_PKG_VERSION"))
    )?;
    for secret in &secrets {
        writeln!(out, "# {}: read from {}", secret.key, secret.source)?;
    }
    write!(out, "{yaml}")?;
    out.flush()?;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::logging::init(&config.log)?;
    let secrets = config.resolve_secrets().context("invalid configuration")?;
    let mount_point = config.mount_point.clone();
    preflight(&mount_point)?;
    let mut registry = Registry::default();
    let credential_metrics = cloud_identity::metrics::CredentialMetrics::register(
        registry.sub_registry_with_prefix("warpdrive"),
    );
    let backends = crate::stores::build(&config, &secrets, &credential_metrics)?;
    let mounts: Vec<(String, usize)> = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.mount_path.clone(), i))
        .collect();
    let tree = warpdrive_fs::namespace::build(&mounts)
        .context("invalid configuration: backends.*.mount_path")?;
    let (uid, gid) = own_ids();
    let mode = |text: &str| u16::from_str_radix(text, 8).unwrap_or(0o444);
    let settings = warpdrive_fs::FsSettings {
        uid: config.uid.unwrap_or(uid),
        gid: config.gid.unwrap_or(gid),
        file_mode: mode(&config.file_mode),
        dir_mode: mode(&config.dir_mode),
        attr_ttl: config.metadata.attr_ttl,
        list_cache_entries: config.metadata.list_cache_entries,
        list_cache_names: config.metadata.list_cache_names,
        list_cache_ttl: config.metadata.list_cache_ttl,
    };
    let cache_settings = blockcache::Settings {
        max_size: config.cache.max_size.as_u64(),
        block_size: config.cache.block_size.as_u64(),
        high_water: config.cache.high_water,
        low_water: config.cache.low_water,
    };
    let cache_path = config.cache.path.clone();
    let cache = tokio::task::spawn_blocking(move || {
        blockcache::BlockCache::open(&cache_path, cache_settings)
    })
    .await
    .context("opening the block cache")?
    .with_context(|| format!("config key `cache.path` ({})", config.cache.path.display()))?;
    let cache = Arc::new(cache);
    telemetry::register_build_info(&mut registry, "warpdrive", env!("CARGO_PKG_VERSION"));
    let metrics = warpdrive_fs::metrics::FsMetrics::register(
        registry.sub_registry_with_prefix("warpdrive"),
        Some(cache.clone()),
    );
    let ra = &config.cache.readahead;
    let readahead = warpdrive_fs::readahead::ReadaheadSettings {
        enabled: ra.enabled,
        initial_window: ra.initial_window.as_u64(),
        max_window: ra.max_window.as_u64(),
        budget: ra.budget.as_u64(),
        directory_prefetch: ra.directory_prefetch,
        parallel_gets: ra.parallel_gets,
        ..Default::default()
    };
    let core = Arc::new(
        warpdrive_fs::Core::new(backends, tree, settings)
            .with_cache(cache, config.cache.max_parallel_fetch)
            .with_readahead(readahead)
            .with_metrics(metrics)
            .with_usage(warpdrive_fs::UsageSettings {
                max_entries: config.control_plane.usage.max_entries,
                prefix_depth: config.control_plane.usage.prefix_depth,
            }),
    );
    let ttls = warpdrive_fs::fuse::Ttls {
        entry: config.metadata.entry_ttl,
        attr: config.metadata.attr_ttl,
        negative: config.metadata.negative_ttl,
    };
    let fs = warpdrive_fs::fuse::WarpFs::new(core.clone(), tokio::runtime::Handle::current(), ttls);
    let mount_settings = warpdrive_fs::fuse::MountSettings {
        allow_other: config.allow_other,
        ttls,
        threads: 4,
        passthrough: config.cache.passthrough,
    };
    let state_dir = core
        .cache()
        .context("the block cache is required")?
        .state_dir()
        .context("config key `cache.path`")?;
    let jobs = warpdrive_control::jobs::JobStore::open(&state_dir, core.clone())
        .context("loading warm jobs")?;
    let probe_point = mount_point.clone();
    let control = Arc::new(warpdrive_control::server::Control {
        core: core.clone(),
        jobs: jobs.clone(),
        version: telemetry::version_string(env!("CARGO_PKG_VERSION")),
        mount_point: mount_point.clone(),
        started: std::time::Instant::now(),
        kernel: std::sync::OnceLock::new(),
        mounted: Box::new(move || mounted_at(&probe_point)),
    });
    let (socket_file, socket) = crate::control::bind(&config.control_socket).await?;
    let control_task = tokio::spawn(warpdrive_control::server::serve_unix(
        socket,
        warpdrive_control::server::routes(control.clone()),
    ));
    let control_plane = if config.control_plane.enabled {
        let token = secrets
            .iter()
            .find(|s| s.key == "control_plane.token_file")
            .context("control_plane.token_file is required when the control plane is enabled")?;
        let token =
            warpdrive_control::auth::Token::new(token.value.clone(), &token.source.to_string())?;
        let router = warpdrive_control::server::authenticated(control.clone(), token);
        Some(
            warpdrive_control::server::serve_tcp(
                config.control_plane.addr,
                config.control_plane.tls.as_ref(),
                router,
            )
            .await?,
        )
    } else {
        None
    };
    let session = warpdrive_fs::fuse::mount(fs, &mount_point, &mount_settings)
        .with_context(|| format!("cannot mount at {}", mount_point.display()))?;
    let notifier = session.notifier();
    let _ = control.kernel.set(Arc::new(move |inodes: &[u64]| {
        warpdrive_fs::fuse::forget_in_kernel(&notifier, inodes)
    }));
    tracing::info!(mount_point = %mount_point.display(), backends = config.backends.len(), credentials = secrets.len(), "mounted");

    let readiness = Readiness::default();
    let probe = mount_point.clone();
    readiness.register("mount", move || {
        let probe = probe.clone();
        async move {
            if mounted_at(&probe) {
                Ok(())
            } else {
                Err(format!("{} is not mounted", probe.display()))
            }
        }
    });
    // Each backend is probed (cached, bounded): one that is down shows as degraded and names
    // itself; the mount is unready only when no backend answers.
    for (index, backend) in core.backends().iter().enumerate() {
        let core = core.clone();
        readiness.register_degradable(format!("backend {}", backend.name), move || {
            let core = core.clone();
            async move { core.probe(index).await }
        });
    }
    let all = core.clone();
    readiness.register("backends", move || {
        let core = all.clone();
        async move {
            let health = core.health().await;
            if health.iter().any(|h| h.state == "ok") {
                Ok(())
            } else {
                Err("no backend answers".to_owned())
            }
        }
    });
    tracing::info!(version = %telemetry::version_string(env!("CARGO_PKG_VERSION")), "warpdrive-mount started");
    let served =
        telemetry::server::serve_until_shutdown(&config.metrics, Arc::new(registry), readiness)
            .await;
    // Warm jobs stop after their fetches in flight land; they resume at the next start.
    jobs.shutdown(std::time::Duration::from_secs(10)).await;
    drop(control_plane);
    // Let queued cache writes land (they are written behind reads), within reason.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while core.pending_stores() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    control_task.abort();
    let _ = control_task.await;
    drop(socket_file);
    // Unmount on the way out, whatever ended the serving.
    tokio::task::spawn_blocking(move || drop(session))
        .await
        .ok();
    let backend_bytes = core
        .stats()
        .backend_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(mount_point = %mount_point.display(), backend_bytes, "unmounted; warpdrive-mount stopped");
    served?;
    Ok(())
}

/// The user and group of this process.
fn own_ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Uid:"), field("Gid:"))
}

fn mounted_at(path: &std::path::Path) -> bool {
    let path = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path) && l.contains(" - fuse"))
}

/// Clear errors before mounting; a stale mount left by a crash (its daemon gone, so the
/// kernel answers ENOTCONN) is cleared, a live one (another daemon serving it) is refused.
fn preflight(mount_point: &std::path::Path) -> anyhow::Result<()> {
    if !std::path::Path::new("/dev/fuse").exists() {
        anyhow::bail!(
            "/dev/fuse is missing: load the fuse module (modprobe fuse), or give the container the device (--device /dev/fuse)"
        );
    }
    let root = own_ids().0 == 0;
    let fusermount = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join("fusermount3").exists()))
        .unwrap_or(false);
    if !root && !fusermount {
        anyhow::bail!(
            "fusermount3 is missing: install fuse3 (apt-get install fuse3), or run as root"
        );
    }
    if mounted_at(mount_point) {
        // Listing it must reach the daemon (a stat may be answered from the kernel's cache).
        match std::fs::read_dir(mount_point) {
            Ok(_) => anyhow::bail!(
                "mount_point {} is already mounted and answering: another warpdrive-mount serves it; stop that one first (or use another mount_point)",
                mount_point.display()
            ),
            Err(err) if err.raw_os_error() == Some(ENOTCONN) => {
                tracing::warn!(mount_point = %mount_point.display(), "clearing a stale FUSE mount left by an earlier run");
                let status = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(mount_point)
                    .status();
                if !status.is_ok_and(|s| s.success()) {
                    let _ = std::process::Command::new("fusermount3")
                        .args(["-u", "-z"])
                        .arg(mount_point)
                        .status();
                }
            }
            Err(err) => anyhow::bail!(
                "mount_point {} has a FUSE mount that cannot be looked at ({err}); unmount it first",
                mount_point.display()
            ),
        }
    }
    if !mount_point.is_dir() {
        anyhow::bail!(
            "mount_point {} does not exist or is not a directory; create it first",
            mount_point.display()
        );
    }
    Ok(())
}

/// What the kernel answers for a FUSE mount whose daemon is gone.
const ENOTCONN: i32 = 107;
