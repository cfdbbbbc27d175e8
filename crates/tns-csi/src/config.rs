//! The config schema of `tns-csi` and its rules.

use std::path::PathBuf;

use credentials::{SecretSource, SecretString};
use serde::{Deserialize, Serialize};
use settings::{Invalid, Schema};
use telemetry::logging::LogSettings;
use telemetry::server::MetricsSettings;
use tls::ClientTlsSettings;

/// Default metrics port: beside the CSI livenessprobe sidecar's 9808.
pub(crate) const DEFAULT_METRICS_PORT: u16 = 9809;

/// The whole config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// How to reach TrueNAS; only the controller needs it.
    #[serde(default)]
    pub(crate) truenas: Option<TrueNasSettings>,
    /// Which CSI services to serve, and where.
    #[serde(default)]
    pub(crate) csi: CsiSettings,
    /// The /metrics, /healthz and /readyz endpoint.
    #[serde(default = "default_metrics")]
    pub(crate) metrics: MetricsSettings,
    /// Logging.
    #[serde(default)]
    pub(crate) log: LogSettings,
}

fn default_metrics() -> MetricsSettings {
    MetricsSettings::loopback(DEFAULT_METRICS_PORT)
}

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Identity + Controller (the Deployment beside the provisioner sidecars).
    Controller,
    /// Identity + Node (the DaemonSet); needs no TrueNAS credentials.
    Node,
    /// Everything in one process (local runs and tests).
    #[default]
    All,
}

impl Mode {
    /// Whether the Controller service runs.
    pub(crate) fn controller(self) -> bool {
        matches!(self, Self::Controller | Self::All)
    }
    /// Whether the Node service runs.
    pub(crate) fn node(self) -> bool {
        matches!(self, Self::Node | Self::All)
    }
}

/// The `csi:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CsiSettings {
    /// `controller`, `node` or `all`.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// gRPC endpoint, `unix:///csi/csi.sock`; without it only /metrics is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
    /// This node's name (the Kubernetes node name), for node mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node_id: Option<String>,
    /// `real` (mount, nvme, iscsiadm) or `simulated` (bind mounts and loop devices of the
    /// simulator's files).
    #[serde(default)]
    pub(crate) host: Host,
    /// The simulator's data directory, for `host: simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sim_data_dir: Option<PathBuf>,
    /// Node-local record of what each staged volume attached.
    #[serde(default = "default_state_dir")]
    pub(crate) state_dir: PathBuf,
    /// Volumes the CO may place on this node (0: no limit).
    #[serde(default)]
    pub(crate) max_volumes: i64,
    /// The kubelet's directory: the node acts only on staging and target paths inside it.
    #[serde(default = "default_kubelet_dir")]
    pub(crate) kubelet_dir: PathBuf,
    /// Outside a cluster: the node ids ControllerPublishVolume may give access to. In a
    /// cluster (empty here) the CSINode objects that list tns.csi.io decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) known_nodes: Vec<String>,
}

fn default_kubelet_dir() -> PathBuf {
    PathBuf::from("/var/lib/kubelet")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/tns-csi/node")
}

/// Where the node gets its volumes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Host {
    /// Real NFS/SMB mounts, nvme-cli and iscsiadm.
    #[default]
    Real,
    /// Bind mounts and loop devices of a truenas-sim data directory (demo and tests).
    Simulated,
}

impl Default for CsiSettings {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            endpoint: None,
            node_id: None,
            host: Host::default(),
            sim_data_dir: None,
            state_dir: default_state_dir(),
            max_volumes: 0,
            kubelet_dir: default_kubelet_dir(),
            known_nodes: Vec::new(),
        }
    }
}

impl CsiSettings {
    /// The socket path of a `unix://` endpoint.
    pub(crate) fn socket_path(&self) -> Option<PathBuf> {
        let endpoint = self.endpoint.as_deref()?;
        endpoint.strip_prefix("unix://").map(PathBuf::from)
    }

    fn validate(&self, has_truenas: bool, invalid: &mut Vec<Invalid>) {
        let dir = &self.kubelet_dir;
        let normal: PathBuf = dir.components().collect();
        let dotted = dir.components().any(|c| {
            matches!(
                c,
                std::path::Component::CurDir | std::path::Component::ParentDir
            )
        });
        if !dir.is_absolute()
            || dotted
            || normal.as_os_str() != dir.as_os_str()
            || dir.parent().is_none()
        {
            invalid.push(Invalid::new(
                "csi.kubelet_dir",
                "expected an absolute, normalised directory other than / (e.g. /var/lib/kubelet)",
            ));
        }
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        match endpoint.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => {}
            _ => invalid.push(Invalid::new(
                "csi.endpoint",
                "expected unix:///absolute/path.sock (e.g. unix:///csi/csi.sock)",
            )),
        }
        if self.mode.controller() && !has_truenas {
            invalid.push(Invalid::new(
                "truenas",
                "controller mode needs the truenas section (url and API key); node mode does not",
            ));
        }
        if self.host == Host::Simulated && self.sim_data_dir.is_none() {
            invalid.push(Invalid::new(
                "csi.sim_data_dir",
                "host: simulated needs the simulator's data directory (--sim-data-dir DIR)",
            ));
        }
        if let Some(id) = self.node_id.as_deref().filter(|id| !id.is_empty())
            && let Err(err) = csi_api::node_identity(id)
        {
            invalid.push(Invalid::new("csi.node_id", err.to_string()));
        }
        for (i, id) in self.known_nodes.iter().enumerate() {
            if let Err(err) = csi_api::node_identity(id) {
                invalid.push(Invalid::new(
                    format!("csi.known_nodes.{i}"),
                    err.to_string(),
                ));
            }
        }
        if self.mode.node() && self.node_id.as_deref().is_none_or(str::is_empty) {
            invalid.push(Invalid::new(
                "csi.node_id",
                "node mode needs the node's name: --node-id NAME (e.g. from spec.nodeName)",
            ));
        }
    }
}

/// The `truenas:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrueNasSettings {
    /// `wss://HOST/api/current`.
    pub(crate) url: String,
    /// Name of the environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_key_env: Option<String>,
    /// File holding the API key (a mounted Kubernetes Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// A `${VAR}` reference to the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_key: Option<String>,
    /// Permit `ws://` with an API key (the simulator); TrueNAS revokes keys sent in clear.
    #[serde(default)]
    pub(crate) allow_insecure_transport: bool,
    /// Certificate trust for `wss://`.
    #[serde(default)]
    pub(crate) tls: ClientTlsSettings,
}

impl TrueNasSettings {
    /// Where the API key lives, if the config names a place.
    pub(crate) fn api_key_source(&self) -> Result<Option<SecretSource>, credentials::Error> {
        credentials::choose_source(
            "api_key",
            self.api_key_env.as_deref(),
            self.api_key_file.as_deref(),
            self.api_key.as_deref(),
        )
    }

    /// Reads the API key; errors name the key path and the variable or file.
    pub(crate) fn resolve_api_key(&self) -> Result<(SecretSource, SecretString), Invalid> {
        let source = self
            .api_key_source()
            .map_err(|err| Invalid::new("truenas.api_key", err.to_string()))?;
        let source = source.ok_or_else(|| {
            Invalid::new(
                "truenas.api_key_file",
                "the TrueNAS API key is required: set truenas.api_key_file, truenas.api_key_env \
                 or truenas.api_key: \"${VAR}\"",
            )
        })?;
        let key = source.resolve().map_err(|err| {
            Invalid::new("truenas.api_key", format!("cannot read the API key: {err}"))
        })?;
        Ok((source, key))
    }
}

impl Schema for Config {
    const ENV_PREFIX: &'static str = "TNS_CSI_";
    const SECRET_REFERENCE_KEYS: &'static [&'static str] = &["truenas.api_key"];

    fn validate(&self) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if let Err(err) = self.log.validate() {
            invalid.push(Invalid::new("log.level", err.to_string()));
        }
        if let Some(truenas) = &self.truenas {
            truenas.validate(&mut invalid);
        }
        self.csi.validate(self.truenas.is_some(), &mut invalid);
        invalid
    }
}

impl TrueNasSettings {
    fn validate(&self, invalid: &mut Vec<Invalid>) {
        match url::Url::parse(&self.url) {
            Err(err) => invalid.push(Invalid::new("truenas.url", format!("not a URL ({err}); expected wss://HOST/api/current"))),
            Ok(url) if !matches!(url.scheme(), "wss" | "ws") => invalid.push(Invalid::new(
                "truenas.url",
                format!("scheme `{}` is not supported; expected wss://HOST/api/current (the TrueNAS WebSocket API)", url.scheme()),
            )),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                invalid.push(Invalid::new("truenas.url", "has no host; expected wss://HOST/api/current"))
            }
            Ok(url) if url.scheme() == "ws" && !self.allow_insecure_transport => invalid.push(Invalid::new(
                "truenas.url",
                "plain ws:// would send the API key in clear text, and TrueNAS revokes keys seen that \
                 way; use wss://, or set truenas.allow_insecure_transport: true (--insecure-transport) \
                 for a local simulator",
            )),
            Ok(_) => {}
        }
        match self.api_key_source() {
            Err(err) => invalid.push(Invalid::new("truenas.api_key", err.to_string())),
            Ok(None) => invalid.push(Invalid::new(
                "truenas.api_key_file",
                "the TrueNAS API key is required: set truenas.api_key_file (a mounted Secret), \
                 truenas.api_key_env (a variable name) or truenas.api_key: \"${VAR}\"",
            )),
            Ok(Some(_)) => {}
        }
        if let Err(err) = self.tls.validate() {
            invalid.push(Invalid::new("truenas.tls", err.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, settings::Error> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        settings::Loader::new()
            .file(file.path())
            .env_vars(env.iter().copied())
            .load()
    }

    #[test]
    fn defaults_are_safe() {
        let config = load("", &[]).unwrap();
        assert!(config.truenas.is_none());
        assert_eq!(config.metrics.addr.to_string(), "127.0.0.1:9809");
    }

    #[test]
    fn plain_ws_with_key_is_refused_unless_allowed() {
        let yaml = "truenas: { url: 'ws://127.0.0.1:1/api/current', api_key_env: K }\n";
        let err = load(yaml, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("config key `truenas.url`: plain ws://"),
            "{err}"
        );
        let allowed = "truenas: { url: 'ws://127.0.0.1:1/api/current', api_key_env: K, allow_insecure_transport: true }\n";
        assert!(load(allowed, &[]).is_ok());
    }

    #[test]
    fn url_and_key_are_checked() {
        let err = load("truenas: { url: 'https://nas', api_key_env: K }\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scheme `https` is not supported; expected wss://HOST/api/current"),
            "{err}"
        );
        let err = load("truenas: { url: 'wss://nas/api/current' }\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key `truenas.api_key_file`: the TrueNAS API key is required"),
            "{err}"
        );
        let both = "truenas: { url: 'wss://nas/api/current', api_key_env: K, api_key_file: /k }\n";
        let err = load(both, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`api_key_env` and `api_key_file` are all set"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_reach_nested_keys() {
        let config = load(
            "truenas: { url: 'wss://a/api/current', api_key_env: K }\n",
            &[
                ("TNS_CSI_TRUENAS__URL", "wss://b/api/current"),
                ("TNS_CSI_METRICS__ADDR", "127.0.0.1:1234"),
            ],
        )
        .unwrap();
        assert_eq!(config.truenas.unwrap().url, "wss://b/api/current");
        assert_eq!(config.metrics.addr.port(), 1234);
    }

    #[test]
    fn debug_of_config_and_key_shows_no_secret() {
        const SECRET: &str = "dbg-secret-4242";
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, SECRET).unwrap();
        let yaml = format!(
            "truenas: {{ url: 'wss://nas/api/current', api_key_file: {} }}\n",
            key_file.display()
        );
        let config = load(&yaml, &[]).unwrap();
        let (_, key) = config.truenas.as_ref().unwrap().resolve_api_key().unwrap();
        for shown in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{key:?}"),
        ] {
            assert!(!shown.contains(SECRET), "{shown}");
        }
        assert_eq!(credentials::ExposeSecret::expose_secret(&key), SECRET);
    }
}
