//! The driver process against an in-process simulator, shared by the end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::node_client::NodeClient;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_api::csi::*;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_tns-csi");

/// The driver process and everything it may have left on the host, removed even on failure.
pub(crate) struct World {
    pub(crate) child: Child,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let root = self
            .dir
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.dir.path().to_owned());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|p| p.starts_with(&*root.to_string_lossy()))
            .collect();
        points.reverse();
        for point in points {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
        let out = Command::new("losetup")
            .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
            .output();
        for line in out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            let mut parts = line.split_whitespace();
            if let (Some(name), Some(file)) = (parts.next(), parts.next())
                && file.starts_with(&*root.to_string_lossy())
            {
                let _ = Command::new("losetup").arg("-d").arg(name).status();
            }
        }
    }
}

/// A channel to the driver's socket once it exists (the driver opens it when it serves).
pub(crate) async fn serving(socket: PathBuf) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the driver did not open its socket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    channel(socket).await
}

/// `GET path` from an HTTP server on `addr`: the status and the whole response.
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response)
}

pub(crate) async fn channel(socket: PathBuf) -> Channel {
    tonic::transport::Endpoint::try_from("http://[::]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

/// A port on 127.0.0.1 that was free a moment ago (for a server the test configures).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A 1 GiB single-writer filesystem CreateVolume with these StorageClass parameters.
pub(crate) fn volume_request(name: &str, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn mount_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub(crate) fn mounted(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
}

/// Starts the simulator and `tns-csi --mode all --host simulated`; returns clients.
pub(crate) async fn start_all() -> (
    World,
    truenas_sim::Simulator,
    ControllerClient<Channel>,
    NodeClient<Channel>,
) {
    let (world, sim, _, controller, node) = start_with(false, None).await;
    (world, sim, controller, node)
}

/// `start_all` with the simulator's state kept on disk (so it can be restarted as after a
/// NAS reboot) and the driver's log at TRACE written to `log`; also returns the simulator's
/// config with its address fixed.
pub(crate) async fn start_with(
    keep_state: bool,
    log: Option<&Path>,
) -> (
    World,
    truenas_sim::Simulator,
    truenas_sim::SimConfig,
    ControllerClient<Channel>,
    NodeClient<Channel>,
) {
    let uid = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        uid.lines().any(|l| l.starts_with("Uid:\t0")),
        "needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sim-data");
    let mut config = truenas_sim::SimConfig::new(&data);
    if keep_state {
        config.state_dir = Some(dir.path().join("sim-state"));
    }
    let sim = truenas_sim::Simulator::start(config.clone()).await.unwrap();
    config.listen = sim.addr();
    let key = dir.path().join("key");
    std::fs::write(&key, &config.api_key).unwrap();
    let socket = dir.path().join("csi.sock");
    let child = Command::new(BIN)
        .args([
            "--mode",
            "all",
            "--host",
            "simulated",
            "--node-id",
            "node-1",
            "--insecure-transport",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--truenas-url")
        .arg(sim.url())
        .arg("--api-key-file")
        .arg(&key)
        .arg("--sim-data-dir")
        .arg(&data)
        .arg("--state-dir")
        .arg(dir.path().join("node-state"))
        .arg("--kubelet-dir")
        .arg(dir.path())
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(if log.is_some() {
            &["--log-level", "trace", "--log-format", "json"][..]
        } else {
            &[][..]
        })
        .stdout(Stdio::null())
        .stderr(match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let world = World { child, dir };
    let channel = serving(socket).await;
    (
        world,
        sim,
        config,
        ControllerClient::new(channel.clone()),
        NodeClient::new(channel),
    )
}
