//! The command line: global flags that override config keys, and the subcommands.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// One read-mostly POSIX tree (FUSE) over S3, Azure Blob, GCS and local stores, with a block
/// cache on local NVMe.
///
/// Without a subcommand, validates the config, reads every credential it names and serves
/// /metrics, /healthz and /readyz until SIGTERM. Settings come from the config file, then
/// WARPDRIVE_* environment variables (WARPDRIVE_CACHE__MAX_SIZE sets cache.max_size), then
/// these flags.
#[derive(Debug, Parser)]
#[command(name = "warpdrive-mount", max_term_width = 100)]
pub(crate) struct Cli {
    /// YAML config file (see deploy/examples/warpdrive.yaml).
    #[arg(
        short,
        long,
        global = true,
        env = "WARPDRIVE_CONFIG",
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,

    /// Where the tree appears (mount_point).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) mount_point: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) observability: settings::ObservabilityFlags,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate the config, read every credential it names, and print the effective config
    /// with secrets redacted. Exits non-zero naming the first bad key.
    CheckConfig,
    /// Fill the running mount's block cache with every object under a prefix of one backend,
    /// ahead of a job (the same as `ctl warm`). Reaches the running daemon through its
    /// control_socket (or control_plane.addr when enabled), so the mount must be running.
    /// The daemon runs it as a job that survives this command and a daemon restart; this
    /// command follows its progress (files, bytes, throughput, ETA). Ctrl-C detaches and leaves the job running (`ctl cancel ID` stops
    /// it). Blocks already cached are skipped, so a rerun resumes. Exits non-zero if any
    /// object could not be cached.
    Warm(WarmArgs),
    /// Talk to the running daemon's control plane: status, backends, jobs, warm, cancel,
    /// evict, invalidate, usage. Uses control_plane.addr with the token from
    /// control_plane.token_file when the control plane is enabled, else the local
    /// control_socket. Tables on a terminal, `--json` for scripts.
    Ctl {
        /// Print the daemon's JSON answer instead of a table.
        #[arg(long, global = true)]
        json: bool,
        /// Use the local control socket even when the TCP control plane is enabled.
        #[arg(long, global = true)]
        socket: bool,
        /// CA bundle (PEM) to trust for an HTTPS control plane, besides the system roots
        /// (default: control_plane.tls.cert_file, for a self-signed certificate).
        #[arg(long, global = true, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

/// What to warm, and how.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WarmArgs {
    /// The backend's `name` in the config.
    #[arg(long)]
    pub(crate) backend: String,
    /// Key prefix inside the backend (a directory path relative to its configured
    /// `prefix`); empty: all.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
    /// Objects fetched at once, 1-256 (backend GETs stay within cache.max_parallel_fetch).
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// Most backend bytes per second the job may fetch (e.g. 200MiB), to leave bandwidth
    /// to running jobs; default: no limit.
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_rate: Option<bytesize::ByteSize>,
    /// Start the job and return at once, printing its id.
    #[arg(long)]
    pub(crate) detach: bool,
}

/// The `ctl` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CtlCommand {
    /// Version, uptime, mount and cache totals.
    Status,
    /// Each backend's health (a cached probe) and the last error real traffic met.
    Backends,
    /// Cache totals and each backend's blocks, bytes, hits and misses.
    Cache,
    /// Warm jobs, newest first; with an id, that job's progress.
    Jobs {
        /// A job id (`warm-…`).
        id: Option<String>,
    },
    /// Start a warm job (see `warpdrive-mount warm --help`).
    Warm(WarmArgs),
    /// Follow a running job's progress until it ends (Ctrl-C detaches again).
    Attach {
        /// The job id.
        id: String,
    },
    /// Cancel a running job; the blocks it cached stay.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Drop cached blocks of a backend under a prefix (every version); the next read fetches.
    Evict {
        /// The backend's `name` in the config.
        #[arg(long)]
        backend: String,
        /// A directory path inside the backend; empty: all of it.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Forget listings and ETags under a prefix, so the next open sees changed objects at
    /// once instead of after attr_ttl.
    Invalidate {
        /// The backend's `name` in the config.
        #[arg(long)]
        backend: String,
        /// A directory path inside the backend; empty: all of it.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Bytes and files read per backend, prefix and uid since the daemon started.
    Usage,
}

/// Parses the process arguments, with the git commit in `--version`.
pub(crate) fn parse() -> Cli {
    let command = Cli::command().version(telemetry::version_string(env!("CARGO_PKG_VERSION")));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
