//! A TrueNAS SCALE 25.10 simulator written from the TrueNAS API as documented: the same
//! WebSocket JSON-RPC 2.0 protocol, limits and error shapes, over an in-memory model of pools,
//! datasets, snapshots, shares and block targets whose data lives in real directories and
//! sparse files. Tests start it in-process with [`Simulator::start`]; the `truenas-sim` binary
//! serves it for the local demo. It shares no types with the `truenas` client on purpose: both
//! follow the spec, so each checks the other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod ctx;
mod data;
mod datasets;
mod encryption;
mod faults;
mod iscsi;
mod methods;
mod model;
mod nvmet;
mod query;
mod replication;
mod rpc;
mod schema;
mod server;
mod sharing;
mod snapshots;

pub use faults::Faults;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Serve `wss://` with a self-signed certificate made at start.
    pub tls: bool,
    /// The one valid API key, `<id>-<64 alphanumerics>`.
    pub api_key: String,
    /// The key's owner (for `auth.login_ex`).
    pub username: String,
    /// Where dataset directories and zvol files live.
    pub data_dir: PathBuf,
    /// Where the model is saved after every change; `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
    /// Pools to create (name, bytes) if the state does not have them yet.
    pub pools: Vec<(String, u64)>,
}

impl SimConfig {
    /// Loopback, plain ws://, one 100 GiB pool `tank`, a generated key.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            api_key: generate_api_key(1),
            username: "root".into(),
            data_dir: data_dir.into(),
            state_dir: None,
            pools: vec![("tank".into(), 100 << 30)],
        }
    }
}

/// A key in TrueNAS's format, `<id>-<64 alphanumerics>`.
pub fn generate_api_key(id: u64) -> String {
    let secret: String = (0..64).map(|_| fastrand::alphanumeric()).collect();
    format!("{id}-{secret}")
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The API key is not `<id>-<64 alphanumerics>`.
    #[error("{0}")]
    ApiKey(&'static str),
    /// A pool name from the command line.
    #[error("pool name `{0}` is not valid")]
    PoolName(String),
    /// A file or socket could not be used.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot make the TLS certificate: {0}")]
    Tls(String),
}

/// An `io::Error` while doing `what`.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let what = what.into();
    move |source| SimError::Io { what, source }
}

fn parse_key(key: &str) -> Result<(u64, String), SimError> {
    let (id, secret) = key.trim().split_once('-').ok_or(SimError::ApiKey(
        "the API key must look like <id>-<64 alphanumerics>",
    ))?;
    let id: u64 = id
        .parse()
        .map_err(|_| SimError::ApiKey("the API key id (before the `-`) must be a number"))?;
    if secret.len() != 64 || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(SimError::ApiKey(
            "the API key secret (after the `-`) must be 64 letters and digits",
        ));
    }
    Ok((id, secret.to_owned()))
}

/// A running simulator; dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    faults: Faults,
    shared: Arc<server::Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Loads or creates the state, binds, and serves in the background.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let (key_id, key_secret) = parse_key(&config.api_key)?;
        let data = data::DataDir::new(&config.data_dir).map_err(io(format!(
            "cannot use data directory {}",
            config.data_dir.display()
        )))?;
        let state_file = match &config.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io(format!("cannot create {}", dir.display())))?;
                Some(dir.join("state.json"))
            }
            None => None,
        };
        let mut model = match &state_file {
            Some(path) => model::Model::load(path)
                .map_err(io(format!("cannot read the state in {}", path.display())))?
                .unwrap_or_default(),
            None => model::Model::default(),
        };
        seed(&mut model, &data, &config.pools)?;
        // As after a reboot: datasets whose key TrueNAS does not keep come back locked.
        encryption::lock_after_boot(&mut model, &data);
        if let Some(path) = &state_file {
            model
                .save(path)
                .map_err(io(format!("cannot save the state to {}", path.display())))?;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("cannot listen on {}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(io("cannot read the listening address"))?;
        let (acceptor, ca_pem) = if config.tls {
            let (acceptor, pem) = self_signed()?;
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let faults = Faults::default();
        let shared = Arc::new(server::Shared {
            model: Mutex::new(model),
            data,
            state_file,
            faults: faults.clone(),
            key_id,
            key_secret,
            username: config.username.clone(),
            tls: config.tls,
            version: "25.10.0".into(),
            rate: Mutex::default(),
            jobs: Mutex::default(),
            conns: Mutex::default(),
            job_done: tokio::sync::Notify::new(),
        });
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, acceptor, shared.clone(), receiver));
        Ok(Self {
            addr,
            tls: config.tls,
            ca_pem,
            faults,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// `ws://` or `wss://ADDR/api/current`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/api/current", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The self-signed certificate (PEM) when serving TLS, for clients to trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Fault knobs and counters.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The data directory (dataset directories under `mnt/`, zvol files under `zvol/`).
    pub fn data_dir(&self) -> &Path {
        self.shared.data.root()
    }

    /// Whether the server runs plain `ws://` (loopback counts as secure, as on TrueNAS).
    pub fn is_tls(&self) -> bool {
        self.shared.tls
    }

    /// Names of all datasets (for tests that check nothing was created twice or leaked).
    pub fn dataset_names(&self) -> Vec<String> {
        let model = self.shared.model.lock().unwrap_or_else(|e| e.into_inner());
        model.datasets.keys().cloned().collect()
    }

    /// Stops accepting and closes every socket.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Pools from the command line, their root datasets, a portal and a default initiator group.
fn seed(
    model: &mut model::Model,
    data: &data::DataDir,
    pools: &[(String, u64)],
) -> Result<(), SimError> {
    if model.basenqn.is_empty() {
        model.basenqn = format!("nqn.2011-06.com.truenas:uuid:{}", ctx::uuid4());
    }
    for (name, size) in pools {
        if name.is_empty() || name.contains('/') || name.contains('@') {
            return Err(SimError::PoolName(name.clone()));
        }
        let next_id = model.pools.values().map(|p| p.id).max().unwrap_or(0) + 1;
        let pool = model
            .pools
            .entry(name.clone())
            .or_insert_with(|| model::PoolRec {
                id: next_id,
                name: name.clone(),
                size: *size,
                guid: format!("{}", fastrand::u64(1_000_000_000_000_000_000..u64::MAX)),
            });
        pool.size = *size;
        if !model.datasets.contains_key(name) {
            let txg = model.next_txg();
            model.datasets.insert(
                name.clone(),
                model::DatasetRec {
                    name: name.clone(),
                    volume: false,
                    props: Default::default(),
                    user: Default::default(),
                    origin: String::new(),
                    creation: datasets::now(),
                    createtxg: txg,
                    encrypted: false,
                    encryption: None,
                    locked: false,
                },
            );
        }
        std::fs::create_dir_all(data.dataset_dir(name))
            .map_err(io(format!("cannot create the directory of pool {name}")))?;
    }
    if model.rows("iscsi.portal").is_empty() {
        model
            .table("iscsi.portal")
            .insert(json!({"tag": 1, "comment": "", "listen": [{"ip": "0.0.0.0", "port": 3260}]}));
    }
    if model.rows("iscsi.initiator").is_empty() {
        model
            .table("iscsi.initiator")
            .insert(json!({"initiators": [], "comment": ""}));
    }
    Ok(())
}

fn self_signed() -> Result<(tokio_rustls::TlsAcceptor, String), SimError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| SimError::Tls(e.to_string()))?;
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|err| SimError::Tls(format!("bad key: {err}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem))
}
