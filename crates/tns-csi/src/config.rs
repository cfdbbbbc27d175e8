//! The config schema of `tns-csi` and its rules.

use std::collections::BTreeMap;
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
    /// How to reach TrueNAS (one system); only the controller needs it.
    #[serde(default)]
    pub(crate) truenas: Option<TrueNasSettings>,
    /// Several TrueNAS systems instead of `truenas`: each with a `name` (in volume ids and the
    /// StorageClass `system` parameter) and a topology segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) systems: Vec<TrueNasSettings>,
    /// With several systems: the one that volume ids without a system name (made while the
    /// driver had one system) belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) default_system: Option<String>,
    /// Which CSI services to serve, and where.
    #[serde(default)]
    pub(crate) csi: CsiSettings,
    /// The /metrics, /healthz and /readyz endpoint.
    #[serde(default = "default_metrics")]
    pub(crate) metrics: MetricsSettings,
    /// Logging.
    #[serde(default)]
    pub(crate) log: LogSettings,
    /// The orphan reconciler (controller mode): off by default, a dry run when on.
    #[serde(default)]
    pub(crate) orphans: OrphanConfig,
}

/// The `orphans:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrphanConfig {
    /// Run the reconciler loop in the controller (it needs RBAC to list persistentvolumes
    /// and volumesnapshotcontents).
    #[serde(default)]
    pub(crate) enabled: bool,
    /// Only report orphans (log lines, metrics); `false` deletes them after `grace_period`.
    #[serde(default = "yes")]
    pub(crate) dry_run: bool,
    /// Time between passes.
    #[serde(default = "default_orphan_interval", with = "humantime_serde")]
    pub(crate) interval: std::time::Duration,
    /// How long an object must have been seen orphaned (by this controller process) before
    /// it is deleted.
    #[serde(default = "default_grace_period", with = "humantime_serde")]
    pub(crate) grace_period: std::time::Duration,
}

fn yes() -> bool {
    true
}

fn default_orphan_interval() -> std::time::Duration {
    std::time::Duration::from_secs(600)
}

fn default_grace_period() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

impl Default for OrphanConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dry_run: true,
            interval: default_orphan_interval(),
            grace_period: default_grace_period(),
        }
    }
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
    /// Node mode: topology segments this node reports (which TrueNAS systems it reaches),
    /// e.g. `system.tns.csi.io/nas-a: "true"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) topology: BTreeMap<String, String>,
    /// Node mode, in a cluster: also report this node's labels whose key starts with one of
    /// these prefixes (read from its Node object at start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) topology_from_node_labels: Vec<String>,
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
            topology: BTreeMap::new(),
            topology_from_node_labels: Vec::new(),
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
                "controller mode needs the truenas section (url and API key) or `systems`; node mode does not",
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
        for key in self.topology.keys() {
            if let Err(why) = topology_key(key) {
                invalid.push(Invalid::new(format!("csi.topology.{key}"), why));
            }
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
    /// In `systems`: the system's name (lowercase letters, digits and `-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// In `systems`: the topology segment its volumes are accessible from; by default
    /// `system.tns.csi.io/<name>: "true"`, which nodes that reach it report.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) topology: BTreeMap<String, String>,
}

/// The topology key prefix of the default segment of a system.
pub(crate) const SYSTEM_TOPOLOGY_PREFIX: &str = "system.tns.csi.io/";

/// Whether `key` can be a topology key (a Kubernetes label key: optional DNS prefix and `/`,
/// then a name of at most 63 characters).
fn topology_key(key: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    if name_ok && prefix_ok && (key.contains('/') != prefix.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a label key (e.g. topology.kubernetes.io/zone)"
        ))
    }
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

    /// Reads the API key; errors name the key path (`at`: `truenas` or `systems.N`) and the
    /// variable or file.
    pub(crate) fn resolve_api_key(
        &self,
        at: &str,
    ) -> Result<(SecretSource, SecretString), Invalid> {
        let source = self
            .api_key_source()
            .map_err(|err| Invalid::new(format!("{at}.api_key"), err.to_string()))?;
        let source = source.ok_or_else(|| {
            Invalid::new(
                format!("{at}.api_key_file"),
                format!(
                    "the TrueNAS API key is required: set {at}.api_key_file, {at}.api_key_env \
                 or {at}.api_key: \"${{VAR}}\""
                ),
            )
        })?;
        let key = source.resolve().map_err(|err| {
            Invalid::new(
                format!("{at}.api_key"),
                format!("cannot read the API key: {err}"),
            )
        })?;
        Ok((source, key))
    }

    /// The system's topology segment: the configured one, or `system.tns.csi.io/<name>`.
    pub(crate) fn segment(&self) -> BTreeMap<String, String> {
        if !self.topology.is_empty() {
            return self.topology.clone();
        }
        let name = self.name.clone().unwrap_or_default();
        BTreeMap::from([(format!("{SYSTEM_TOPOLOGY_PREFIX}{name}"), "true".to_owned())])
    }
}

impl Config {
    /// Every TrueNAS system with the key path it was configured at (`truenas` or
    /// `systems.N`).
    pub(crate) fn systems(&self) -> Vec<(String, &TrueNasSettings)> {
        match &self.truenas {
            Some(one) => vec![("truenas".to_owned(), one)],
            None => self
                .systems
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("systems.{i}"), s))
                .collect(),
        }
    }
}

impl Schema for Config {
    const ENV_PREFIX: &'static str = "TNS_CSI_";
    const SECRET_REFERENCE_KEYS: &'static [&'static str] =
        &["truenas.api_key", "systems.*.api_key"];

    fn validate(&self) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if let Err(err) = self.log.validate() {
            invalid.push(Invalid::new("log.level", err.to_string()));
        }
        if let Some(truenas) = &self.truenas {
            truenas.validate("truenas", &mut invalid);
            if truenas.name.is_some() || !truenas.topology.is_empty() {
                invalid.push(Invalid::new(
                    "truenas.name",
                    "name and topology belong to entries of `systems` (several TrueNAS systems); the single `truenas` section has neither",
                ));
            }
            if !self.systems.is_empty() {
                invalid.push(Invalid::new(
                    "systems",
                    "set either `truenas` (one system) or `systems` (several), not both",
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, system) in self.systems.iter().enumerate() {
            let at = format!("systems.{i}");
            system.validate(&at, &mut invalid);
            match system.name.as_deref() {
                None => invalid.push(Invalid::new(
                    format!("{at}.name"),
                    "required: the system's name in volume ids and the StorageClass `system` parameter (e.g. nas-a)",
                )),
                Some(name) if !csi_api::valid_system_name(name) => invalid.push(Invalid::new(
                    format!("{at}.name"),
                    format!("`{name}` must be 1-63 lowercase letters, digits and -, and not nfs, smb, nvmeof or iscsi"),
                )),
                Some(name) if !names.insert(name) => invalid.push(Invalid::new(
                    format!("{at}.name"),
                    format!("`{name}` names two systems"),
                )),
                Some(_) => {}
            }
            for key in system.topology.keys() {
                if let Err(why) = topology_key(key) {
                    invalid.push(Invalid::new(format!("{at}.topology.{key}"), why));
                }
            }
        }
        match (&self.default_system, self.systems.len()) {
            (Some(name), _) if !names.contains(name.as_str()) => invalid.push(Invalid::new(
                "default_system",
                format!("`{name}` is not the name of one of `systems`"),
            )),
            (None, 2..) => invalid.push(Invalid::new(
                "default_system",
                "required with several systems: the system that volume ids without a system name belong to (the one the driver used before it had several)",
            )),
            _ => {}
        }
        self.csi.validate(
            self.truenas.is_some() || !self.systems.is_empty(),
            &mut invalid,
        );
        if self.orphans.interval < std::time::Duration::from_secs(1) {
            invalid.push(Invalid::new(
                "orphans.interval",
                "must be at least 1s (each pass lists every object on every system)",
            ));
        }
        if self.orphans.enabled && !self.csi.mode.controller() {
            invalid.push(Invalid::new(
                "orphans.enabled",
                "the reconciler runs in the controller (csi.mode controller or all), not in node mode",
            ));
        }
        invalid
    }
}

impl TrueNasSettings {
    fn validate(&self, at: &str, invalid: &mut Vec<Invalid>) {
        let url_key = format!("{at}.url");
        match url::Url::parse(&self.url) {
            Err(err) => invalid.push(Invalid::new(url_key, format!("not a URL ({err}); expected wss://HOST/api/current"))),
            Ok(url) if !matches!(url.scheme(), "wss" | "ws") => invalid.push(Invalid::new(
                url_key,
                format!("scheme `{}` is not supported; expected wss://HOST/api/current (the TrueNAS WebSocket API)", url.scheme()),
            )),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                invalid.push(Invalid::new(url_key, "has no host; expected wss://HOST/api/current"))
            }
            Ok(url) if url.scheme() == "ws" && !self.allow_insecure_transport => invalid.push(Invalid::new(
                url_key,
                "plain ws:// would send the API key in clear text, and TrueNAS revokes keys seen that \
                 way; use wss://, or set truenas.allow_insecure_transport: true (--insecure-transport) \
                 for a local simulator",
            )),
            Ok(_) => {}
        }
        match self.api_key_source() {
            Err(err) => invalid.push(Invalid::new(format!("{at}.api_key"), err.to_string())),
            Ok(None) => invalid.push(Invalid::new(
                format!("{at}.api_key_file"),
                format!(
                    "the TrueNAS API key is required: set {at}.api_key_file (a mounted Secret), \
                 {at}.api_key_env (a variable name) or {at}.api_key: \"${{VAR}}\""
                ),
            )),
            Ok(Some(_)) => {}
        }
        if let Err(err) = self.tls.validate() {
            invalid.push(Invalid::new(format!("{at}.tls"), err.to_string()));
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
    fn several_systems_are_named_with_a_default_and_checked_by_key() {
        let two = "systems:\n  - { name: nas-a, url: 'wss://a/api/current', api_key_env: KA }\n  - { name: nas-b, url: 'wss://b/api/current', api_key_env: KB, topology: { topology.kubernetes.io/zone: z2 } }\n";
        let err = load(two, &[]).unwrap_err().to_string();
        assert!(
            err.contains("config key `default_system`: required with several systems"),
            "{err}"
        );
        let config = load(&format!("{two}default_system: nas-b\n"), &[]).unwrap();
        let segments: Vec<_> = config
            .systems
            .iter()
            .map(TrueNasSettings::segment)
            .collect();
        assert_eq!(
            segments[0],
            BTreeMap::from([("system.tns.csi.io/nas-a".to_owned(), "true".to_owned())])
        );
        assert_eq!(
            segments[1],
            BTreeMap::from([("topology.kubernetes.io/zone".to_owned(), "z2".to_owned())])
        );
        for (yaml, wanted) in [
            (
                "systems: [{ url: 'wss://a/api/current', api_key_env: K }]\n",
                "config key `systems.0.name`: required",
            ),
            (
                "systems: [{ name: nfs, url: 'wss://a/api/current', api_key_env: K }]\n",
                "config key `systems.0.name`: `nfs` must be",
            ),
            (
                "systems: [{ name: a, url: 'wss://a/api/current', api_key_env: K }, { name: a, url: 'wss://b/api/current', api_key_env: K }]\ndefault_system: a\n",
                "config key `systems.1.name`: `a` names two systems",
            ),
            (
                "systems: [{ name: a, url: 'ws://a/api/current', api_key_env: K }]\n",
                "config key `systems.0.url`: plain ws://",
            ),
            (
                "systems: [{ name: a, url: 'wss://a/api/current' }]\n",
                "config key `systems.0.api_key_file`: the TrueNAS API key is required: set systems.0.api_key_file",
            ),
            (
                "systems: [{ name: a, url: 'wss://a/api/current', api_key_env: K, topology: { 'bad key!': x } }]\n",
                "config key `systems.0.topology.bad key!`",
            ),
            (
                "systems: [{ name: a, url: 'wss://a/api/current', api_key_env: K }]\ndefault_system: b\n",
                "config key `default_system`: `b` is not the name",
            ),
            (
                "truenas: { url: 'wss://a/api/current', api_key_env: K }\nsystems: [{ name: a, url: 'wss://a/api/current', api_key_env: K }]\n",
                "config key `systems`: set either `truenas`",
            ),
            (
                "truenas: { name: a, url: 'wss://a/api/current', api_key_env: K }\n",
                "config key `truenas.name`",
            ),
        ] {
            let err = load(yaml, &[]).unwrap_err().to_string();
            assert!(err.contains(wanted), "{yaml}: {err}");
        }
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
        let (_, key) = config
            .truenas
            .as_ref()
            .unwrap()
            .resolve_api_key("truenas")
            .unwrap();
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
