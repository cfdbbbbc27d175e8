//! The real emulators the read-path tests run against: moto (S3, from PyPI) and Azurite (Azure
//! Blob, from npm), each on 127.0.0.1 and a port the test picks, killed when dropped.
//! `cargo xtask test` (and so `.ci/run`) installs both. Shared with warpdrive-mount's tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account key (public, documented by Microsoft).
pub(crate) const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The key of [`AZURITE_ACCOUNT`].
pub(crate) const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A child process that dies with its owner.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (30 s at most).
pub(crate) fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An installed tool: target/tools first (where setup puts Azurite), then PATH.
pub(crate) fn find_tool(name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let local = repo.join("target/tools/node_modules/.bin").join(name);
    if local.exists() {
        return local;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed; run `cargo xtask test` (it installs the emulators)")
        })
}

/// Runs a Python fixture script; fails the test with its stderr.
pub(crate) fn python(script: &str) {
    if let Err(stderr) = try_python(script) {
        panic!("python fixture failed:\n{stderr}");
    }
}

/// Runs a Python fixture script that may fail (a key the server refuses); its stderr if so.
pub(crate) fn try_python(script: &str) -> Result<(), String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A moto S3 server.
pub(crate) struct Moto {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
}

impl Moto {
    /// Starts moto and waits until it listens.
    pub(crate) fn start() -> Self {
        Self::start_with_env(&[])
    }

    fn start_with_env(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let proc = Proc(
            Command::new(find_tool("moto_server"))
                .envs(env.iter().copied())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts"),
        );
        wait_port(port, "moto");
        Self { proc, port }
    }

    /// The endpoint URL.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A Python prelude that binds `s3` to a boto3 client of this server.
    pub(crate) fn boto3(&self) -> String {
        format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='k', aws_secret_access_key='s', region_name='us-east-1')\n",
            self.endpoint()
        )
    }

    /// Creates a bucket.
    pub(crate) fn create_bucket(&self, bucket: &str) {
        python(&format!(
            "{}s3.create_bucket(Bucket='{bucket}')\n",
            self.boto3()
        ));
    }
}

/// An Azurite blob server, in memory.
pub(crate) struct Azurite {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
}

impl Azurite {
    /// Starts Azurite in `dir` (it writes a debug log there) and waits until it listens.
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts Azurite over HTTPS with `cert`/`key` (PEM files) checking OAuth bearer tokens
    /// (audience, issuer, expiry; not the signature) besides shared keys.
    pub(crate) fn start_oauth(dir: &Path, cert: &Path, key: &Path) -> Self {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_with(dir, &["--oauth", "basic", "--cert", &cert, "--key", &key])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let proc = Proc(
            Command::new(find_tool("azurite-blob"))
                .args(extra)
                .args([
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--silent",
                ])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("azurite-blob starts"),
        );
        wait_port(port, "azurite");
        Self { proc, port }
    }

    /// The blob endpoint URL of the development account.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// A Python prelude that binds `svc` to a BlobServiceClient of this server.
    pub(crate) fn sdk(&self) -> String {
        format!(
            "from azure.storage.blob import BlobServiceClient\n\
             svc = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};')\n",
            self.endpoint()
        )
    }

    /// Creates a container.
    pub(crate) fn create_container(&self, container: &str) {
        python(&format!(
            "{}svc.create_container('{container}')\n",
            self.sdk()
        ));
    }
}
