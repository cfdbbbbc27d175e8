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
    tracing::info!(
        backends = config.backends.len(),
        credentials = secrets.len(),
        "configuration loaded"
    );
    let mut registry = Registry::default();
    telemetry::register_build_info(&mut registry, "warpdrive", env!("CARGO_PKG_VERSION"));
    tracing::info!(version = %telemetry::version_string(env!("CARGO_PKG_VERSION")), "warpdrive-mount started");
    telemetry::server::serve_until_shutdown(
        &config.metrics,
        Arc::new(registry),
        Readiness::default(),
    )
    .await?;
    tracing::info!("warpdrive-mount stopped");
    Ok(())
}
