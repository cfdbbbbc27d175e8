//! The config schema of `warpdrive-mount` (every key is listed in docs/warpdrive.md) and its rules.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use credentials::{SecretSource, SecretString};
use serde::{Deserialize, Serialize};
use settings::{Invalid, Schema};
use telemetry::logging::LogSettings;
use telemetry::server::MetricsSettings;

/// The whole config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the tree appears.
    pub(crate) mount_point: PathBuf,
    /// Let other users see the mount; off so only the mounting user does.
    #[serde(default)]
    pub(crate) allow_other: bool,
    /// Writes fail with EROFS; the only mode for now.
    #[serde(default = "yes")]
    pub(crate) read_only: bool,
    /// Owner shown for every entry (default: the mounting user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<u32>,
    /// Group shown for every entry (default: the mounting user's group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gid: Option<u32>,
    /// Octal permission bits of files.
    #[serde(default = "default_file_mode")]
    pub(crate) file_mode: String,
    /// Octal permission bits of directories.
    #[serde(default = "default_dir_mode")]
    pub(crate) dir_mode: String,
    /// Kernel and listing caches.
    #[serde(default)]
    pub(crate) metadata: MetadataSettings,
    /// The block cache on local disk.
    #[serde(default)]
    pub(crate) cache: CacheSettings,
    /// The object stores shown in the tree.
    pub(crate) backends: Vec<BackendSettings>,
    /// Unix socket where the running daemon answers the control API for local tools
    /// (`warpdrive-mount ctl`, `warm`) without a token; created 0600 (only the daemon's user
    /// may use it) in a 0700 directory.
    #[serde(default = "default_control_socket")]
    pub(crate) control_socket: PathBuf,
    /// The authenticated REST control plane on a TCP address.
    #[serde(default)]
    pub(crate) control_plane: ControlPlaneSettings,
    /// /metrics, /healthz, /readyz.
    #[serde(default)]
    pub(crate) metrics: MetricsSettings,
    /// Logging.
    #[serde(default)]
    pub(crate) log: LogSettings,
}

fn yes() -> bool {
    true
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/warpdrive/control.sock")
}
fn default_file_mode() -> String {
    "0444".into()
}
fn default_dir_mode() -> String {
    "0555".into()
}

/// The `metadata:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetadataSettings {
    /// Kernel dentry cache lifetime.
    #[serde(with = "humantime_serde")]
    pub(crate) entry_ttl: Duration,
    /// Kernel attribute cache lifetime.
    #[serde(with = "humantime_serde")]
    pub(crate) attr_ttl: Duration,
    /// How long "no such file" is remembered.
    #[serde(with = "humantime_serde")]
    pub(crate) negative_ttl: Duration,
    /// Directory listings kept in memory.
    pub(crate) list_cache_entries: usize,
    /// Names in all kept listings together: a directory of 10^6 objects must not push every
    /// other listing out, nor a few such directories pin unbounded memory.
    pub(crate) list_cache_names: usize,
    /// How long a listing is reused.
    #[serde(with = "humantime_serde")]
    pub(crate) list_cache_ttl: Duration,
}

impl Default for MetadataSettings {
    fn default() -> Self {
        Self {
            entry_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            list_cache_entries: 1024,
            list_cache_names: 2_000_000,
            list_cache_ttl: Duration::from_secs(300),
        }
    }
}

/// The `control_plane:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ControlPlaneSettings {
    /// Serve the REST API on `addr` (the local socket is always served).
    pub(crate) enabled: bool,
    /// Where; loopback unless you mean it.
    pub(crate) addr: std::net::SocketAddr,
    /// File holding the bearer token every call must carry (required when enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<tls::ServerTlsSettings>,
    /// How the usage table groups and bounds what it counts.
    pub(crate) usage: UsageConfig,
}

impl Default for ControlPlaneSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8090)),
            token_file: None,
            tls: None,
            usage: UsageConfig::default(),
        }
    }
}

/// The `control_plane.usage:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UsageConfig {
    /// Rows kept (backend × prefix × uid); reads beyond are counted as dropped.
    pub(crate) max_entries: usize,
    /// Leading directories of a key that make its prefix.
    pub(crate) prefix_depth: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        let d = warpdrive_fs::UsageSettings::default();
        Self {
            max_entries: d.max_entries,
            prefix_depth: d.prefix_depth,
        }
    }
}

/// The `cache:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheSettings {
    /// Local directory for blocks; created 0700.
    pub(crate) path: PathBuf,
    /// Upper bound of the cache on disk.
    pub(crate) max_size: ByteSize,
    /// Unit of caching and of backend range reads.
    pub(crate) block_size: ByteSize,
    /// Start evicting at this fraction of `max_size`.
    pub(crate) high_water: f64,
    /// Evict down to this fraction.
    pub(crate) low_water: f64,
    /// Backend GETs in flight, all backends together.
    pub(crate) max_parallel_fetch: usize,
    /// Sequential-read prefetching.
    pub(crate) readahead: ReadaheadSettings,
    /// Let the kernel read whole cached files itself (FUSE passthrough; Linux 6.9+, needs
    /// CAP_SYS_ADMIN); falls back to reads through the daemon when it cannot.
    pub(crate) passthrough: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/cache/warpdrive"),
            max_size: ByteSize::gib(50),
            block_size: ByteSize::mib(4),
            high_water: 0.90,
            low_water: 0.80,
            max_parallel_fetch: 16,
            readahead: ReadaheadSettings::default(),
            passthrough: true,
        }
    }
}

/// The `cache.readahead:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ReadaheadSettings {
    /// Prefetch at all.
    pub(crate) enabled: bool,
    /// First window once reads look sequential.
    pub(crate) initial_window: ByteSize,
    /// Largest window.
    pub(crate) max_window: ByteSize,
    /// Speculative bytes in flight for the whole mount.
    pub(crate) budget: ByteSize,
    /// Prefetch the first blocks of the next files in name order.
    pub(crate) directory_prefetch: bool,
    /// Ranged GETs in parallel for a large file read alone (1: one streaming GET always).
    pub(crate) parallel_gets: usize,
}

impl Default for ReadaheadSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_window: ByteSize::mib(8),
            max_window: ByteSize::mib(256),
            budget: ByteSize::mib(512),
            directory_prefetch: true,
            parallel_gets: 4,
        }
    }
}

/// Kinds of object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BackendType {
    S3,
    Azure,
    Gcs,
    Local,
}

impl BackendType {
    /// The name used in config files.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Azure => "azure",
            Self::Gcs => "gcs",
            Self::Local => "local",
        }
    }
}

/// One entry of `backends:`; which fields apply depends on `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendSettings {
    /// Unique; used in metrics labels and the CLI.
    pub(crate) name: String,
    /// `s3`, `azure`, `gcs` or `local`.
    #[serde(rename = "type")]
    pub(crate) kind: BackendType,
    /// Where it appears under the mount point; the longest prefix wins.
    pub(crate) mount_path: String,
    /// s3/gcs: bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bucket: Option<String>,
    /// azure: storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) account: Option<String>,
    /// azure: container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container: Option<String>,
    /// local: directory served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) root: Option<PathBuf>,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prefix: Option<String>,
    /// s3: region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) region: Option<String>,
    /// Custom endpoint (emulators, S3-compatible stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
    /// Must be true for an http:// endpoint.
    #[serde(default)]
    pub(crate) allow_http: bool,
    /// A PEM bundle trusted besides the system roots, for the store and its identity
    /// endpoints (a private CA, an emulator's self-signed certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Timeout of one backend request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub(crate) request_timeout: Duration,
    /// Retries of a failed request.
    #[serde(default = "default_retries")]
    pub(crate) retries: u32,
    /// Credentials, by reference.
    #[serde(default)]
    pub(crate) auth: AuthSettings,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retries() -> u32 {
    5
}

/// Credential methods from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMethod {
    #[default]
    None,
    Static,
    ManagedIdentity,
    ServicePrincipal,
    WorkloadIdentity,
    OidcFederation,
    GcpWif,
    KeyVault,
}

/// A backend's `auth:` section: names of variables and files, never values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSettings {
    /// How to authenticate.
    #[serde(default)]
    pub(crate) method: AuthMethod,
    /// s3 static: variable holding the access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access_key_id_env: Option<String>,
    /// s3 static: file holding the access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access_key_id_file: Option<PathBuf>,
    /// s3 static: variable holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret_access_key_env: Option<String>,
    /// s3 static: file holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret_access_key_file: Option<PathBuf>,
    /// azure static: variable holding the account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) account_key_env: Option<String>,
    /// azure static: file holding the account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) account_key_file: Option<PathBuf>,
    /// gcs static: service-account JSON key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service_account_file: Option<PathBuf>,
    /// Entra app (client) id: managed identity (user-assigned), service principal, workload
    /// identity, and the Entra token an `oidc_federation`/`gcp_wif`/`key_vault` flow starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_id: Option<String>,
    /// Variable holding the client id (what Azure's webhook injects: AZURE_CLIENT_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_id_env: Option<String>,
    /// Entra tenant id (service principal, workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenant_id: Option<String>,
    /// Variable holding the tenant id (AZURE_TENANT_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenant_id_env: Option<String>,
    /// service_principal: variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_secret_env: Option<String>,
    /// service_principal: file holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_secret_file: Option<PathBuf>,
    /// The projected service-account token (JWT) file a federation presents; re-read on every
    /// refresh. Without it, `oidc_federation` and `gcp_wif` present an Entra managed-identity
    /// token for `token_resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_file: Option<PathBuf>,
    /// The Entra resource of that token (default `api://AzureADTokenExchange`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_resource: Option<String>,
    /// oidc_federation: the role to assume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) role_arn: Option<String>,
    /// Variable holding the role ARN (AWS_ROLE_ARN, as IRSA injects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) role_arn_env: Option<String>,
    /// oidc_federation: the STS session name (default `warpdrive-<backend>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session_name: Option<String>,
    /// gcp_wif: the workload identity pool provider
    /// (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) audience: Option<String>,
    /// gcp_wif: the service account to impersonate (e-mail); without it the federated token
    /// itself is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service_account: Option<String>,
    /// key_vault: the vault (`https://NAME.vault.azure.net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) vault_url: Option<String>,
    /// key_vault: the secret's name (azure: the account key; s3: JSON with
    /// `access_key_id` and `secret_access_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret_name: Option<String>,
    /// key_vault: how often the secret is read again (a rotation is picked up within it).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) refresh_interval: Option<Duration>,
    /// Endpoint overrides, for sovereign clouds and tests: Azure IMDS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) imds_endpoint: Option<String>,
    /// Entra authority host (`https://login.microsoftonline.us` for US Government).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) authority_host: Option<String>,
    /// AWS STS, or Google STS (`…/v1/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sts_endpoint: Option<String>,
    /// Google IAM Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iam_endpoint: Option<String>,
}

/// Secrets a backend's auth names, each with the config key it came from.
pub(crate) struct ResolvedSecret {
    pub(crate) key: String,
    pub(crate) source: SecretSource,
    pub(crate) value: SecretString,
}

impl Config {
    /// What this host says about the config: the mount point and the cache directory, checked
    /// by `check-config` with the rules start applies (a stale FUSE mount from a crash counts
    /// as a mount point: start clears it).
    pub(crate) fn host_problems(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        if self.mount_point.is_absolute() {
            match std::fs::metadata(&self.mount_point) {
                Ok(meta) if meta.is_dir() => {}
                Err(err) if err.raw_os_error() == Some(107) => {}
                _ => problems.push(Invalid::new(
                    "mount_point",
                    format!(
                        "{} does not exist or is not a directory; create it first",
                        self.mount_point.display()
                    ),
                )),
            }
        }
        if self.cache.path.is_absolute()
            && let Err(err) = blockcache::check_dir(&self.cache.path)
        {
            problems.push(Invalid::new("cache.path", err.to_string()));
        }
        problems
    }
}

impl Schema for Config {
    const ENV_PREFIX: &'static str = "WARPDRIVE_";

    fn validate(&self) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if let Err(err) = self.log.validate() {
            invalid.push(Invalid::new("log.level", err.to_string()));
        }
        if !self.mount_point.is_absolute() {
            invalid.push(Invalid::new("mount_point", "must be an absolute path"));
        }
        if !self.control_socket.is_absolute() {
            invalid.push(Invalid::new("control_socket", "must be an absolute path"));
        }
        let cp = &self.control_plane;
        match &cp.token_file {
            None if cp.enabled => invalid.push(Invalid::new(
                "control_plane.token_file",
                "required when control_plane.enabled is true: the control plane never runs without a bearer token",
            )),
            Some(path) if !path.is_absolute() => invalid.push(Invalid::new(
                "control_plane.token_file",
                "must be an absolute path",
            )),
            _ => {}
        }
        if cp.usage.max_entries == 0 || cp.usage.max_entries > 1_000_000 {
            invalid.push(Invalid::new(
                "control_plane.usage.max_entries",
                "must be between 1 and 1000000",
            ));
        }
        if cp.usage.prefix_depth > 32 {
            invalid.push(Invalid::new(
                "control_plane.usage.prefix_depth",
                "must be at most 32",
            ));
        }
        if !self.read_only {
            invalid.push(Invalid::new(
                "read_only",
                "only read-only mounts are supported; set it to true",
            ));
        }
        for (key, mode) in [("file_mode", &self.file_mode), ("dir_mode", &self.dir_mode)] {
            if u32::from_str_radix(mode, 8).map_or(true, |bits| bits > 0o7777) {
                invalid.push(Invalid::new(
                    key,
                    format!("`{mode}` is not an octal mode such as \"0444\""),
                ));
            }
        }
        self.cache.validate(&mut invalid);
        if self.backends.is_empty() {
            invalid.push(Invalid::new("backends", "at least one backend is required"));
        }
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        let segments = |path: &str| -> Vec<String> {
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for (i, backend) in self.backends.iter().enumerate() {
            let mine = segments(&backend.mount_path);
            if let Some(outer) = self.backends.iter().find(|other| {
                let theirs = segments(&other.mount_path);
                theirs.len() < mine.len() && mine.starts_with(&theirs)
            }) {
                invalid.push(Invalid::new(
                    format!("backends.{i}.mount_path"),
                    format!(
                        "`{}` is inside backend `{}`'s mount path `{}`; backends cannot nest",
                        backend.mount_path, outer.name, outer.mount_path
                    ),
                ));
            }
        }
        for (i, backend) in self.backends.iter().enumerate() {
            let at = format!("backends.{i}");
            if !names.insert(backend.name.as_str()) {
                invalid.push(Invalid::new(
                    format!("{at}.name"),
                    format!("`{}` is used by two backends", backend.name),
                ));
            }
            if !paths.insert(normalise_mount_path(&backend.mount_path)) {
                invalid.push(Invalid::new(
                    format!("{at}.mount_path"),
                    format!("`{}` is used by two backends", backend.mount_path),
                ));
            }
            backend.validate(&at, &mut invalid);
        }
        invalid
    }
}

fn normalise_mount_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

impl CacheSettings {
    fn validate(&self, invalid: &mut Vec<Invalid>) {
        if !self.path.is_absolute() {
            invalid.push(Invalid::new("cache.path", "must be an absolute path"));
        }
        if !(0.0 < self.low_water && self.low_water < self.high_water && self.high_water <= 1.0) {
            invalid.push(Invalid::new(
                "cache.low_water",
                format!(
                    "need 0 < low_water < high_water <= 1 (got {} and {})",
                    self.low_water, self.high_water
                ),
            ));
        }
        let block = self.block_size.as_u64();
        if !(64 * 1024..=64 * 1024 * 1024).contains(&block) || !block.is_power_of_two() {
            invalid.push(Invalid::new(
                "cache.block_size",
                "must be a power of two between 64KiB and 64MiB",
            ));
        }
        if self.max_size.as_u64() < block.saturating_mul(16) {
            invalid.push(Invalid::new(
                "cache.max_size",
                "must hold at least 16 blocks",
            ));
        }
        if self.max_parallel_fetch == 0 {
            invalid.push(Invalid::new(
                "cache.max_parallel_fetch",
                "must be at least 1",
            ));
        }
        let ra = &self.readahead;
        if ra.initial_window > ra.max_window {
            invalid.push(Invalid::new(
                "cache.readahead.initial_window",
                "must not exceed max_window",
            ));
        }
        if ra.parallel_gets == 0 || ra.parallel_gets > self.max_parallel_fetch {
            invalid.push(Invalid::new(
                "cache.readahead.parallel_gets",
                "must be between 1 and cache.max_parallel_fetch",
            ));
        }
    }
}

impl BackendSettings {
    fn validate(&self, at: &str, invalid: &mut Vec<Invalid>) {
        let mut need = |field: &str, present: bool, why: &str| {
            if !present {
                invalid.push(Invalid::new(
                    format!("{at}.{field}"),
                    format!("required for type {why}"),
                ));
            }
        };
        match self.kind {
            BackendType::S3 => need("bucket", self.bucket.is_some(), "s3"),
            BackendType::Gcs => need("bucket", self.bucket.is_some(), "gcs"),
            BackendType::Azure => {
                need("account", self.account.is_some(), "azure");
                need("container", self.container.is_some(), "azure");
            }
            BackendType::Local => need("root", self.root.is_some(), "local"),
        }
        let unused: &[(&str, bool)] = match self.kind {
            BackendType::S3 | BackendType::Gcs => &[
                ("account", self.account.is_some()),
                ("container", self.container.is_some()),
                ("root", self.root.is_some()),
            ],
            BackendType::Azure => &[
                ("bucket", self.bucket.is_some()),
                ("root", self.root.is_some()),
            ],
            BackendType::Local => &[
                ("bucket", self.bucket.is_some()),
                ("account", self.account.is_some()),
                ("container", self.container.is_some()),
                ("endpoint", self.endpoint.is_some()),
            ],
        };
        for (field, set) in unused {
            if *set {
                invalid.push(Invalid::new(
                    format!("{at}.{field}"),
                    format!("not used by type {:?}; remove it", self.kind).to_lowercase(),
                ));
            }
        }
        if !self.mount_path.starts_with('/')
            || self.mount_path.split('/').any(|s| s == "." || s == "..")
        {
            invalid.push(Invalid::new(
                format!("{at}.mount_path"),
                format!(
                    "`{}` must be absolute, without `.` or `..`",
                    self.mount_path
                ),
            ));
        }
        if let Some(prefix) = &self.prefix
            && (prefix.starts_with('/')
                || prefix
                    .trim_end_matches('/')
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == ".."))
            && !prefix.is_empty()
        {
            invalid.push(Invalid::new(
                format!("{at}.prefix"),
                format!(
                    "`{prefix}` must be a key prefix such as `datasets/` (no leading `/`, no empty, `.` or `..` segments)"
                ),
            ));
        }
        if self.request_timeout.is_zero() {
            invalid.push(Invalid::new(
                format!("{at}.request_timeout"),
                "must be more than 0s (it bounds every call to the store)",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            match url::Url::parse(endpoint) {
                Err(err) => invalid.push(Invalid::new(format!("{at}.endpoint"), format!("not a URL ({err})"))),
                Ok(url) if url.scheme() == "http" && !self.allow_http => invalid.push(Invalid::new(
                    format!("{at}.endpoint"),
                    "http:// sends credentials and data in clear; use https://, or set allow_http: true for an emulator",
                )),
                Ok(url) if !matches!(url.scheme(), "http" | "https") => invalid.push(Invalid::new(format!("{at}.endpoint"), "must be an http(s):// URL")),
                Ok(_) => {}
            }
        }
        if let Err(item) = self.auth_sources(at) {
            invalid.push(item);
        }
    }

    /// The secrets this backend's auth names, as `(config key, source)`.
    fn auth_sources(&self, at: &str) -> Result<Vec<(String, SecretSource)>, Invalid> {
        let auth = &self.auth;
        let key = |field: &str| format!("{at}.auth.{field}");
        let mut sources = Vec::new();
        let mut take = |field: &str,
                        env: Option<&str>,
                        file: Option<&std::path::Path>,
                        required: bool|
         -> Result<(), Invalid> {
            let source = credentials::choose_source(field, env, file, None)
                .map_err(|err| Invalid::new(key(field), err.to_string()))?;
            match source {
                Some(source) => sources.push((key(field), source)),
                None if required => {
                    return Err(Invalid::new(
                        key(&format!("{field}_env")),
                        "required for method static; give `_env` or `_file`",
                    ));
                }
                None => {}
            }
            Ok(())
        };
        match (auth.method, self.kind) {
            (AuthMethod::None, _) => {}
            (AuthMethod::Static, BackendType::S3) => {
                take(
                    "access_key_id",
                    auth.access_key_id_env.as_deref(),
                    auth.access_key_id_file.as_deref(),
                    true,
                )?;
                take(
                    "secret_access_key",
                    auth.secret_access_key_env.as_deref(),
                    auth.secret_access_key_file.as_deref(),
                    true,
                )?;
            }
            (AuthMethod::Static, BackendType::Azure) => {
                take(
                    "account_key",
                    auth.account_key_env.as_deref(),
                    auth.account_key_file.as_deref(),
                    true,
                )?;
            }
            (AuthMethod::Static, BackendType::Gcs) => {
                take(
                    "service_account",
                    None,
                    auth.service_account_file.as_deref(),
                    true,
                )?;
            }
            (AuthMethod::Static, BackendType::Local) => {
                return Err(Invalid::new(
                    key("method"),
                    "type local takes no credentials; use method none",
                ));
            }
            (AuthMethod::ServicePrincipal, BackendType::Azure) => {
                take(
                    "client_secret",
                    auth.client_secret_env.as_deref(),
                    auth.client_secret_file.as_deref(),
                    true,
                )?;
                crate::identity::check(self, at)?;
            }
            (method, kind) if crate::identity::serves(method, kind) => {
                crate::identity::check(self, at)?;
            }
            (other, kind) => {
                return Err(Invalid::new(
                    key("method"),
                    format!(
                        "`{}` cannot authenticate a {} backend; {}",
                        other.name(),
                        kind.name(),
                        crate::identity::methods_for(kind)
                    ),
                ));
            }
        }
        Ok(sources)
    }
}

impl AuthMethod {
    /// The name used in config files.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Static => "static",
            Self::ManagedIdentity => "managed_identity",
            Self::ServicePrincipal => "service_principal",
            Self::WorkloadIdentity => "workload_identity",
            Self::OidcFederation => "oidc_federation",
            Self::GcpWif => "gcp_wif",
            Self::KeyVault => "key_vault",
        }
    }
}

impl Config {
    /// Reads every secret the backends name; errors carry the config key and the source.
    pub(crate) fn resolve_secrets(&self) -> Result<Vec<ResolvedSecret>, Invalid> {
        let mut out = Vec::new();
        for (i, backend) in self.backends.iter().enumerate() {
            for (key, source) in backend.auth_sources(&format!("backends.{i}"))? {
                let value = source
                    .resolve()
                    .map_err(|err| Invalid::new(key.clone(), err.to_string()))?;
                out.push(ResolvedSecret { key, source, value });
            }
        }
        if self.control_plane.enabled {
            out.push(self.control_token()?);
        }
        Ok(out)
    }

    /// The control plane's bearer token, read from `control_plane.token_file` and checked.
    pub(crate) fn control_token(&self) -> Result<ResolvedSecret, Invalid> {
        let key = "control_plane.token_file".to_owned();
        let Some(path) = &self.control_plane.token_file else {
            return Err(Invalid::new(key, "is not set"));
        };
        let source = SecretSource::File(path.clone());
        let value = source
            .resolve()
            .map_err(|err| Invalid::new(key.clone(), err.to_string()))?;
        warpdrive_control::auth::Token::new(value.clone(), &path.display().to_string())
            .map_err(|err| Invalid::new(key.clone(), err.to_string()))?;
        Ok(ResolvedSecret { key, source, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "mount_point: /data\nbackends:\n  - { name: local, type: local, mount_path: /local, root: /srv }\n";

    fn load(yaml: &str) -> Result<Config, settings::Error> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        settings::Loader::new()
            .file(file.path())
            .env_vars([])
            .load()
    }

    #[test]
    fn spec_defaults_apply() {
        let config = load(MINIMAL).unwrap();
        assert!(!config.allow_other && config.read_only);
        assert_eq!(config.cache.block_size, ByteSize::mib(4));
        assert_eq!(config.metadata.list_cache_ttl, Duration::from_secs(300));
        assert_eq!(config.metrics.addr.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn sizes_and_durations_parse() {
        let yaml = format!(
            "{MINIMAL}cache: {{ max_size: 2GB, block_size: 1MiB }}\nmetadata: {{ entry_ttl: 500ms }}\n"
        );
        let config = load(&yaml).unwrap();
        assert_eq!(config.cache.max_size.as_u64(), 2_000_000_000);
        assert_eq!(config.cache.block_size.as_u64(), 1 << 20);
        assert_eq!(config.metadata.entry_ttl, Duration::from_millis(500));
        let err = load(&format!("{MINIMAL}metadata: {{ entry_ttl: soon }}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key `metadata.entry_ttl`"), "{err}");
    }

    #[test]
    fn readahead_limits_name_the_field() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.cache.readahead.parallel_gets, 4);
        let yaml = format!(
            "{MINIMAL}cache: {{ max_parallel_fetch: 8, readahead: {{ parallel_gets: 9, initial_window: 1GiB }} }}\n"
        );
        let err = load(&yaml).unwrap_err().to_string();
        for expected in [
            "config key `cache.readahead.parallel_gets`: must be between 1 and cache.max_parallel_fetch",
            "config key `cache.readahead.initial_window`: must not exceed max_window",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn backend_rules_name_the_field() {
        let yaml = "mount_point: /data\nbackends:\n  - { name: a, type: s3, mount_path: /a, endpoint: 'http://127.0.0.1:9000' }\n  - { name: a, type: local, mount_path: /a/, root: /x, bucket: b }\n";
        let err = load(yaml).unwrap_err().to_string();
        for expected in [
            "config key `backends.0.bucket`: required for type s3",
            "config key `backends.0.endpoint`: http:// sends credentials",
            "config key `backends.1.name`: `a` is used by two backends",
            "config key `backends.1.mount_path`: `/a/` is used by two backends",
            "config key `backends.1.bucket`: not used by type local",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn prefixes_nesting_and_zero_timeouts_are_refused() {
        let yaml = "mount_point: /data\nbackends:\n  - { name: a, type: local, mount_path: /a, root: /x, prefix: ../up }\n  - { name: b, type: local, mount_path: /a/b, root: /x, prefix: /abs }\n  - { name: c, type: local, mount_path: /c, root: /x, prefix: 'd//e', request_timeout: 0s }\n  - { name: d, type: local, mount_path: /d, root: /x, prefix: datasets/ }\n";
        let err = load(yaml).unwrap_err().to_string();
        for expected in [
            "config key `backends.0.prefix`: `../up` must be a key prefix",
            "config key `backends.1.prefix`: `/abs` must be a key prefix",
            "config key `backends.2.prefix`: `d//e` must be a key prefix",
            "config key `backends.1.mount_path`: `/a/b` is inside backend `a`'s mount path `/a`",
            "config key `backends.2.request_timeout`: must be more than 0s",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        assert!(
            !err.contains("backends.3"),
            "a plain prefix is fine:\n{err}"
        );
    }

    #[test]
    fn auth_methods_are_checked() {
        let yaml = "mount_point: /data\nbackends:\n  - { name: a, type: s3, bucket: b, mount_path: /a, auth: { method: static, access_key_id_env: K } }\n";
        let err = load(yaml).unwrap_err().to_string();
        assert!(
            err.contains("`backends.0.auth.secret_access_key_env`: required for method static"),
            "{err}"
        );
        // The spec's own example: managed identity with a client id from a variable.
        let yaml = "mount_point: /data\nbackends:\n  - { name: a, type: azure, account: x, container: c, mount_path: /a, auth: { method: managed_identity, client_id: 00000000-0000-0000-0000-000000000001 } }\n";
        load(yaml).expect("managed identity is accepted");
        let cases = [
            (
                "type: azure, account: x, container: c",
                "{ method: gcp_wif }",
                "`backends.0.auth.method`: `gcp_wif` cannot authenticate a azure backend; azure takes",
            ),
            (
                "type: azure, account: x, container: c",
                "{ method: service_principal, client_id: c, client_secret_env: S }",
                "`backends.0.auth.tenant_id`: required for method service_principal",
            ),
            (
                "type: azure, account: x, container: c",
                "{ method: workload_identity, tenant_id: t, client_id: c }",
                "`backends.0.auth.token_file`: required for method workload_identity",
            ),
            (
                "type: azure, account: x, container: c",
                "{ method: workload_identity, tenant_id: t, client_id: c, token_file: /nonexistent/token }",
                "`backends.0.auth.token_file`: cannot read /nonexistent/token",
            ),
            (
                "type: azure, account: x, container: c",
                "{ method: service_principal, tenant_id: 'a/b', client_id: c, client_secret_file: /etc/hostname }",
                "`backends.0.auth.tenant_id`",
            ),
            (
                "type: s3, bucket: b",
                "{ method: oidc_federation }",
                "`backends.0.auth.role_arn`: required for method oidc_federation",
            ),
            (
                "type: s3, bucket: b",
                "{ method: oidc_federation, role_arn: nope, token_file: /etc/hostname }",
                "`backends.0.auth.role_arn`: `nope` is no role ARN",
            ),
            (
                "type: s3, bucket: b",
                "{ method: oidc_federation, role_arn: 'arn:aws:iam::1:role/r', token_file: /etc/hostname, sts_endpoint: 'http://127.0.0.1:9' }",
                "`backends.0.auth.sts_endpoint`: `http://127.0.0.1:9` is plain http",
            ),
            (
                "type: gcs, bucket: b",
                "{ method: gcp_wif, token_file: /etc/hostname }",
                "`backends.0.auth.audience`: required for method gcp_wif",
            ),
            (
                "type: gcs, bucket: b",
                "{ method: gcp_wif, token_file: /etc/hostname, audience: x }",
                "`backends.0.auth.audience`: `x` is no workload identity provider",
            ),
            (
                "type: s3, bucket: b",
                "{ method: key_vault, secret_name: s }",
                "`backends.0.auth.vault_url`: required for method key_vault",
            ),
            (
                "type: s3, bucket: b",
                "{ method: key_vault, vault_url: 'https://v.vault.azure.net', secret_name: 'a b' }",
                "`backends.0.auth.secret_name`",
            ),
            (
                "type: local, root: /tmp",
                "{ method: managed_identity }",
                "local takes none",
            ),
        ];
        for (kind, auth, want) in cases {
            let yaml = format!(
                "mount_point: /data\nbackends:\n  - {{ name: a, {kind}, mount_path: /a, auth: {auth} }}\n"
            );
            let err = load(&yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{auth}: {err}");
        }
    }

    #[test]
    fn unknown_backend_key_names_index() {
        let err = load("mount_point: /data\nbackends:\n  - { name: a, type: local, mount_path: /a, root: /x, buckit: b }\n").unwrap_err().to_string();
        assert!(err.starts_with("config key `backends.0.buckit`"), "{err}");
    }
}
