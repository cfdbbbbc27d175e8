//! `truenas-sim`: serves the TrueNAS simulator for the local demo and for manual testing.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use truenas_sim::{SimConfig, Simulator};

/// A TrueNAS SCALE 25.10 simulator speaking the real WebSocket JSON-RPC API.
///
/// Datasets are directories and zvols sparse files under --data-dir. It prints the URL it
/// serves once ready, then runs until SIGTERM or Ctrl-C.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File holding the one valid API key, `<id>-<64 alphanumerics>`. Generated (and written
    /// there) when the file does not exist yet.
    #[arg(long)]
    api_key_file: PathBuf,
    /// Directory for dataset data (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Directory where the state is kept across restarts; in memory only when left out.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Serve wss:// with a self-signed certificate (written to DATA_DIR/sim-ca.pem).
    #[arg(long)]
    tls: bool,
    /// A pool, NAME=SIZE (e.g. tank=100GiB); repeat for more. Default tank=100GiB.
    #[arg(long = "pool", value_parser = parse_pool)]
    pools: Vec<(String, u64)>,
    /// Owner of the API key (for auth.login_ex).
    #[arg(long, default_value = "root")]
    username: String,
}

fn parse_pool(text: &str) -> Result<(String, u64), String> {
    let (name, size) = text
        .split_once('=')
        .ok_or("expected NAME=SIZE, e.g. tank=100GiB")?;
    let size: bytesize::ByteSize = size
        .parse()
        .map_err(|err| format!("`{size}` is not a size like 100GiB: {err}"))?;
    Ok((name.to_owned(), size.as_u64()))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("truenas-sim: {err:#}\n").as_bytes(),
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::logging::init(&telemetry::logging::LogSettings::default()).ok();
    let api_key = match std::fs::read_to_string(&cli.api_key_file) {
        Ok(key) => key.trim().to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = truenas_sim::generate_api_key(1);
            write_private(&cli.api_key_file, &key)?;
            key
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", cli.api_key_file.display()));
        }
    };
    let mut config = SimConfig::new(&cli.data_dir);
    config.listen = cli.listen;
    config.tls = cli.tls;
    config.api_key = api_key;
    config.username = cli.username;
    config.state_dir = cli.state;
    if !cli.pools.is_empty() {
        config.pools = cli.pools;
    }
    let sim = Simulator::start(config).await?;
    if let Some(pem) = sim.ca_pem() {
        let path = cli.data_dir.join("sim-ca.pem");
        std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let line = format!("{}\n", sim.url());
    std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes())?;
    std::io::Write::flush(&mut std::io::stdout())?;
    telemetry::shutdown_signal().await;
    sim.stop().await;
    Ok(())
}

fn write_private(path: &std::path::Path, key: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, key.as_bytes())?;
    Ok(())
}
