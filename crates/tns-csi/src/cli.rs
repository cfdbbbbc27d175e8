//! The command line: global flags that override config keys, and the subcommands.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Kubernetes CSI driver for TrueNAS SCALE 25.10+ (NFS, NVMe-oF, iSCSI, SMB).
///
/// Without a subcommand, runs the driver: the CSI services on --endpoint (a unix socket) and
/// /metrics, /healthz and /readyz on the metrics address, until SIGTERM. Settings come from the config file, then TNS_CSI_*
/// environment variables (TNS_CSI_TRUENAS__URL sets truenas.url), then these flags.
#[derive(Debug, Parser)]
#[command(name = "tns-csi", max_term_width = 100)]
pub(crate) struct Cli {
    /// YAML config file (see deploy/examples/tns-csi.yaml).
    #[arg(
        short,
        long,
        global = true,
        env = "TNS_CSI_CONFIG",
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,

    /// TrueNAS API endpoint, e.g. wss://nas.example.com/api/current (truenas.url).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) truenas_url: Option<String>,

    /// File holding the TrueNAS API key, e.g. a mounted Secret (truenas.api_key_file).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) api_key_file: Option<PathBuf>,

    /// Allow a plain ws:// URL with an API key; only for the local simulator
    /// (truenas.allow_insecure_transport).
    #[arg(long, global = true)]
    pub(crate) insecure_transport: bool,

    /// Which CSI services to serve: controller, node or all (csi.mode).
    #[arg(long, global = true, value_enum)]
    pub(crate) mode: Option<crate::config::Mode>,

    /// gRPC endpoint for the CSI sidecars, e.g. unix:///csi/csi.sock (csi.endpoint).
    #[arg(long, global = true, env = "CSI_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,

    /// This node's name, for node mode (csi.node_id).
    #[arg(long, global = true, env = "NODE_ID", value_name = "NAME")]
    pub(crate) node_id: Option<String>,

    /// real (mount, nvme, iscsiadm) or simulated (bind mounts and loop devices of a
    /// truenas-sim data directory) (csi.host).
    #[arg(long, global = true, value_enum)]
    pub(crate) host: Option<crate::config::Host>,

    /// The simulator's data directory, for --host simulated (csi.sim_data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) sim_data_dir: Option<PathBuf>,

    /// Node-local state: what each staged volume attached (csi.state_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// The kubelet's directory; the node acts only on staging and target paths inside it
    /// (csi.kubelet_dir, default /var/lib/kubelet).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) kubelet_dir: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) observability: settings::ObservabilityFlags,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate the config, read every secret it names, and print the effective config with
    /// secrets redacted. Exits non-zero naming the first bad key.
    CheckConfig,
    /// Report what the driver made on TrueNAS that the cluster no longer names (datasets,
    /// zvols, snapshots, deferred destroys, shares, NVMe-oF and iSCSI objects). Reads the
    /// cluster through the in-cluster service account or KUBECONFIG; never deletes (the
    /// controller's `orphans:` loop does, after its grace period).
    Orphans {
        /// `table` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "table")]
        output: OrphanOutput,
    },
}

/// How `tns-csi orphans` prints its report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum OrphanOutput {
    /// Aligned columns: system, kind, object, id, reason.
    Table,
    /// One JSON document: `{"orphans": [...], "errors": [...]}`.
    Json,
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
