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
    /// ahead of a job. Goes through the daemon's control socket (config key
    /// `control_socket`), so the mount must be running. Blocks already cached are skipped,
    /// so running it again after an interruption resumes; Ctrl-C stops it. Shows files,
    /// bytes, throughput and ETA; exits non-zero if any object could not be cached.
    Warm {
        /// The backend's `name` in the config.
        #[arg(long)]
        backend: String,
        /// Key prefix inside the backend (relative to its configured `prefix`); empty: all.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Objects fetched at once (backend GETs stay within cache.max_parallel_fetch).
        #[arg(long, default_value_t = 8)]
        workers: usize,
    },
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
