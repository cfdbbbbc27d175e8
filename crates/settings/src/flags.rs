//! Flags both binaries share, mapped onto the config keys they override.

use std::net::SocketAddr;

use crate::Loader;

/// `--metrics-addr`, `--log-level`, `--log-format`: the same in every binary.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObservabilityFlags {
    /// Address of /metrics, /healthz and /readyz (metrics.addr); keep it on 127.0.0.1 unless
    /// the network is trusted, since the endpoint has no authentication.
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log level or directives such as `info,tns_csi=debug` (log.level); RUST_LOG wins.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log format (log.format) [default: auto = json unless stderr is a terminal].
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["auto", "json", "text"])]
    pub log_format: Option<String>,
}

impl ObservabilityFlags {
    /// Adds the flags that were given to `loader` as the top layer.
    pub fn apply(&self, mut loader: Loader) -> Loader {
        if let Some(addr) = self.metrics_addr {
            loader = loader.flag("metrics.addr", "--metrics-addr", addr.to_string());
        }
        if let Some(level) = &self.log_level {
            loader = loader.flag("log.level", "--log-level", level.as_str());
        }
        if let Some(format) = &self.log_format {
            loader = loader.flag("log.format", "--log-format", format.as_str());
        }
        loader
    }
}
