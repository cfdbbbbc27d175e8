//! Assembly: config → logging → metrics → serving, and the `check-config` subcommand.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use credentials::{Redactor, SecretSource};
use prometheus_client::registry::Registry;
use settings::Loader;
use telemetry::readiness::Readiness;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// Runs the command and turns any error into a message on stderr and exit code 1.
pub(crate) fn main(cli: Cli) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "tns-csi: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = load(&cli)?;
    match cli.command {
        Some(Command::CheckConfig) => check_config(&config),
        Some(Command::Orphans { output }) => crate::orphans::report(config, output).await,
        None => serve(config).await,
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut loader = Loader::new();
    if let Some(path) = &cli.config {
        loader = loader.file(path);
    }
    if let Some(url) = &cli.truenas_url {
        loader = loader.flag("truenas.url", "--truenas-url", url.as_str());
    }
    if let Some(path) = &cli.api_key_file {
        loader = loader.flag(
            "truenas.api_key_file",
            "--api-key-file",
            path.display().to_string(),
        );
    }
    if cli.insecure_transport {
        loader = loader.flag(
            "truenas.allow_insecure_transport",
            "--insecure-transport",
            true,
        );
    }
    if let Some(mode) = cli.mode {
        let mode = match mode {
            crate::config::Mode::Controller => "controller",
            crate::config::Mode::Node => "node",
            crate::config::Mode::All => "all",
        };
        loader = loader.flag("csi.mode", "--mode", mode);
    }
    if let Some(endpoint) = &cli.endpoint {
        loader = loader.flag("csi.endpoint", "--endpoint", endpoint.as_str());
    }
    if let Some(node_id) = &cli.node_id {
        loader = loader.flag("csi.node_id", "--node-id", node_id.as_str());
    }
    if let Some(host) = cli.host {
        let host = match host {
            crate::config::Host::Real => "real",
            crate::config::Host::Simulated => "simulated",
        };
        loader = loader.flag("csi.host", "--host", host);
    }
    if let Some(dir) = &cli.sim_data_dir {
        loader = loader.flag(
            "csi.sim_data_dir",
            "--sim-data-dir",
            dir.display().to_string(),
        );
    }
    if let Some(dir) = &cli.state_dir {
        loader = loader.flag("csi.state_dir", "--state-dir", dir.display().to_string());
    }
    if let Some(dir) = &cli.kubelet_dir {
        loader = loader.flag(
            "csi.kubelet_dir",
            "--kubelet-dir",
            dir.display().to_string(),
        );
    }
    loader = cli.observability.apply(loader);
    loader.load().context("invalid configuration")
}

/// Reads every secret the config names, failing with the key path of the first that fails;
/// returns where each came from and a redactor that knows their values.
fn resolve_secrets(config: &Config) -> anyhow::Result<(Vec<SecretSource>, Redactor)> {
    let mut sources = Vec::new();
    let mut redactor = Redactor::default();
    for (at, truenas) in config.systems() {
        let (source, key) = truenas
            .resolve_api_key(&at)
            .context("invalid configuration")?;
        redactor.add(&key);
        sources.push(source);
    }
    Ok((sources, redactor))
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let (sources, redactor) = resolve_secrets(config)?;
    let yaml = settings::render_redacted(config, &redactor)
        .context("cannot render the effective config")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# tns-csi {} — effective configuration (secrets are never printed)",
        telemetry::version_string(env!("CARGO_PKG_VERSION"))
    )?;
    for source in &sources {
        writeln!(out, "# truenas API key: read from {source}")?;
    }
    write!(out, "{yaml}")?;
    out.flush()?;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::logging::init(&config.log)?;
    // Fail at start, naming the key, if a secret cannot be read.
    resolve_secrets(&config)?;
    let mut registry = Registry::default();
    telemetry::register_build_info(&mut registry, "tns_csi", env!("CARGO_PKG_VERSION"));
    let tls_metrics = tls::TlsMetrics::register(&mut registry);
    let readiness = Readiness::default();
    // Kept alive for the life of the process: their sockets stay logged in and ready.
    let systems = if config.csi.mode.controller() {
        connect_systems(&config, &tls_metrics, &mut registry, &readiness, false)?
    } else {
        None
    };
    let csi_metrics = csi_api::CsiMetrics::register(registry.sub_registry_with_prefix("tns_csi"));
    let locks = csi_api::NameLocks::default();
    let reconciler = match &systems {
        Some(systems) if config.orphans.enabled => {
            let metrics = csi_controller::OrphanMetrics::register(
                registry.sub_registry_with_prefix("tns_csi"),
            );
            let reconciler =
                crate::orphans::reconciler(&config, systems.clone(), locks.clone(), metrics)
                    .await?;
            Some(tokio::spawn(reconciler.run(config.orphans.interval)))
        }
        _ => None,
    };
    tracing::info!(version = %telemetry::version_string(env!("CARGO_PKG_VERSION")), mode = ?config.csi.mode, "tns-csi started");
    let grpc = match config.csi.socket_path() {
        Some(path) => Some(tokio::spawn(crate::grpc::serve(
            path,
            config.csi.clone(),
            systems.clone(),
            csi_metrics,
            locks,
        ))),
        None => {
            tracing::warn!("no --endpoint: the CSI services are not served (metrics only)");
            None
        }
    };
    let metrics =
        telemetry::server::serve_until_shutdown(&config.metrics, Arc::new(registry), readiness);
    match grpc {
        Some(grpc) => {
            let (metrics, grpc) = tokio::join!(metrics, grpc);
            metrics?;
            grpc.context("the gRPC server task failed")??;
        }
        None => metrics.await?,
    }
    if let Some(reconciler) = reconciler {
        reconciler.abort();
    }
    tracing::info!("tns-csi stopped");
    Ok(())
}

/// Starts a client per TrueNAS system (each connects in the background) with its readiness
/// check: with one system it decides readiness; with several each one that is down shows as
/// `degraded truenas/NAME` and the others keep serving. A `one_shot` command opens one socket
/// per system (each socket is a login, and TrueNAS allows 20 logins a minute per client).
pub(crate) fn connect_systems(
    config: &Config,
    tls_metrics: &tls::TlsMetrics,
    registry: &mut Registry,
    readiness: &Readiness,
    one_shot: bool,
) -> anyhow::Result<Option<Arc<csi_controller::Systems>>> {
    if let Some(truenas) = &config.truenas {
        let metrics =
            truenas::ClientMetrics::register(registry.sub_registry_with_prefix("tns_csi"));
        let client = connect_truenas(truenas, "truenas", tls_metrics, metrics, one_shot)?;
        let probe = client.clone();
        readiness.register("truenas", move || answers(probe.clone()));
        let server = data_host(&truenas.url);
        return Ok(Some(Arc::new(csi_controller::Systems::single(
            client, server,
        ))));
    }
    if config.systems.is_empty() {
        return Ok(None);
    }
    let mut systems = Vec::new();
    // One set of metric families, a `system` label per system.
    let families =
        truenas::ClientMetrics::register_several(registry.sub_registry_with_prefix("tns_csi"));
    for (at, truenas) in config.systems() {
        let name = truenas.name.clone().unwrap_or_default();
        let metrics = families.for_system(&name);
        let client = connect_truenas(truenas, &at, tls_metrics, metrics, one_shot)?;
        let probe = client.clone();
        readiness.register_degradable(format!("truenas/{name}"), move || answers(probe.clone()));
        systems.push(csi_controller::System {
            name,
            client,
            default_server: data_host(&truenas.url),
            topology: truenas.segment(),
        });
    }
    let default = config
        .default_system
        .clone()
        .unwrap_or_else(|| systems[0].name.clone());
    let systems = csi_controller::Systems::several(systems, &default)
        .map_err(|why| anyhow::anyhow!("invalid configuration: systems: {why}"))?;
    Ok(Some(Arc::new(systems)))
}

/// The host of an API URL: where nodes reach the data ports unless a StorageClass says.
fn data_host(api_url: &str) -> String {
    url::Url::parse(api_url)
        .ok()
        .and_then(|url| {
            url.host_str()
                .map(|h| h.trim_matches(['[', ']']).to_owned())
        })
        .unwrap_or_default()
}

/// Whether a TrueNAS system is connected and answers an authenticated call in time.
pub(crate) async fn answers(client: truenas::Client) -> Result<(), String> {
    if let Some(problem) = client.connection_problem() {
        return Err(problem);
    }
    client
        .call_within(
            truenas::Method::read("system.version"),
            vec![],
            Duration::from_secs(3),
        )
        .await
        .map(drop)
        .map_err(|err| err.to_string())
}

/// Starts one TrueNAS client (it connects in the background); `at` is its config key path.
fn connect_truenas(
    truenas: &crate::config::TrueNasSettings,
    at: &str,
    tls_metrics: &tls::TlsMetrics,
    metrics: truenas::ClientMetrics,
    one_shot: bool,
) -> anyhow::Result<truenas::Client> {
    let tls = tls::client_config(&truenas.tls, "truenas", tls_metrics)
        .with_context(|| format!("invalid configuration: {at}.tls"))?;
    let (source, _) = truenas
        .resolve_api_key(at)
        .context("invalid configuration")?;
    let url = url::Url::parse(&truenas.url)
        .with_context(|| format!("invalid configuration: {at}.url `{}`", truenas.url))?;
    // The key is read again at every login, so a rotated Secret file is picked up.
    let api_key = truenas::ApiKey::from_fn(move || source.resolve().map_err(|err| err.to_string()));
    let mut settings = truenas::ClientSettings::new(url, api_key);
    settings.allow_insecure_transport = truenas.allow_insecure_transport;
    settings.tls = Some(tls);
    if one_shot {
        settings.connections = 1;
    }
    truenas::Client::new(settings, metrics).with_context(|| format!("invalid configuration: {at}"))
}
