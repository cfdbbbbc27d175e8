//! The real `tns-csi` binary: check-config, unknown keys, the metrics endpoint, and the rule
//! that a secret fed in through any source never shows up in anything the process emits.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::http_get;

const BIN: &str = env!("CARGO_BIN_EXE_tns-csi");
const SECRET: &str = "tnsKEY-9f8e7d6c5b4a-DO-NOT-LEAK";

fn tns_csi(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().env("RUST_LOG", "trace");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("tns-csi runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every way the config can name the API key, as (config YAML, extra env).
fn secret_sources(dir: &Path) -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let url = "wss://127.0.0.1:1/api/current";
    vec![
        (
            format!("truenas:\n  url: {url}\n  api_key_env: TRUENAS_API_KEY\n"),
            vec![("TRUENAS_API_KEY", SECRET)],
        ),
        (
            format!(
                "truenas:\n  url: {url}\n  api_key_file: {}\n",
                key_file.display()
            ),
            vec![],
        ),
        (
            format!("truenas:\n  url: {url}\n  api_key: \"${{TRUENAS_API_KEY}}\"\n"),
            vec![("TRUENAS_API_KEY", SECRET)],
        ),
    ]
}

#[test]
fn check_config_prints_redacted_config_for_every_source() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, env) in secret_sources(dir.path()) {
        let config = write(dir.path(), "config.yaml", &yaml);
        let out = tns_csi(&["check-config", "--config", &config], &env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{yaml}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stdout.contains("url: wss://127.0.0.1:1/api/current"),
            "{stdout}"
        );
        assert!(stdout.contains("# truenas API key: read from "), "{stdout}");
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "secret leaked:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn unknown_key_exits_nonzero_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.yaml",
        "truenas:\n  url: wss://nas/api/current\n  api_key_env: K\n  api_kye_file: /x\n",
    );
    let out = tns_csi(&["check-config", "--config", &config], &[("K", SECRET)]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config key `truenas.api_kye_file`"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown key"), "{stderr}");
}

#[test]
fn mistakes_with_secrets_never_echo_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // a literal secret pasted where a reference belongs
        format!("truenas:\n  url: wss://nas/api/current\n  api_key: {SECRET}\n"),
        // a secret referenced into a field of the wrong type
        "truenas:\n  url: wss://nas/api/current\n  api_key_env: K\nmetrics:\n  addr: ${K}\n"
            .to_owned(),
        // a secret referenced into an enum field
        "log:\n  format: ${K}\n".to_owned(),
        // a secret referenced into the URL
        "truenas:\n  url: ${K}\n  api_key_env: K\n".to_owned(),
    ];
    for yaml in cases {
        let config = write(dir.path(), "c.yaml", &yaml);
        let out = tns_csi(&["check-config", "--config", &config], &[("K", SECRET)]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{yaml} was accepted:\n{all}");
        assert!(all.contains("config key `"), "error names no key:\n{all}");
        assert!(!all.contains(SECRET), "secret leaked for {yaml}:\n{all}");
    }
}

#[test]
fn version_names_the_commit() {
    let out = tns_csi(&["--version"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("tns-csi ") && stdout.contains("(commit "),
        "{stdout}"
    );
}

/// A running `tns-csi`, killed when dropped so a failing test leaves no process behind.
struct Running {
    child: Child,
    stderr_tail: std::sync::mpsc::Receiver<String>,
    startup_log: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(config: &str, env: &[(&str, &str)]) -> (Self, String) {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--config",
            config,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env_clear()
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            stderr_tail: rx,
            startup_log: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = String::new();
        while Instant::now() < deadline {
            let Ok(line) = running.stderr_tail.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("serving /metrics") {
                let addr = line
                    .split("\"addr\":\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap()
                    .to_owned();
                running.startup_log = seen;
                return (running, addr);
            }
        }
        panic!("tns-csi did not start serving within 20 s; its log:\n{seen}");
    }

    /// Sends SIGTERM, waits for a clean exit, and returns everything it logged.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "tns-csi ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "exit status {status}");
        let mut logs = std::mem::take(&mut self.startup_log);
        while let Ok(line) = self.stderr_tail.recv_timeout(Duration::from_millis(500)) {
            logs.push_str(&line);
            logs.push('\n');
        }
        logs
    }
}

#[test]
fn serves_metrics_and_never_leaks_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, env) in secret_sources(dir.path()) {
        let yaml = format!("{yaml}  tls:\n    insecure_skip_verify: true\n");
        let config = write(dir.path(), "config.yaml", &yaml);
        let (running, addr) = Running::start(&config, &env);
        let (status, metrics) = http_get(&addr, "/metrics");
        assert_eq!(status, 200, "{metrics}");
        assert!(metrics.contains("tns_csi_build_info{"), "{metrics}");
        assert!(
            metrics.contains("tls_insecure_skip_verify{component=\"truenas\"} 1"),
            "{metrics}"
        );
        assert_eq!(http_get(&addr, "/healthz").0, 200);
        // Nothing listens at the configured TrueNAS address: alive, but not ready.
        let (status, body) = http_get(&addr, "/readyz");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("failed truenas:"), "{body}");
        let logs = running.stop();
        assert!(
            logs.contains("\"level\":\"WARN\"") && logs.contains("verification is OFF"),
            "{logs}"
        );
        assert!(
            logs.contains("TRACE") || logs.contains("DEBUG"),
            "not logging at trace:\n{logs}"
        );
        assert!(!metrics.contains(SECRET), "secret in /metrics");
        assert!(!logs.contains(SECRET), "secret in logs:\n{logs}");
    }
}

#[test]
fn ready_while_truenas_answers_and_client_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = truenas_sim::SimConfig::new(dir.path().join("data"));
    let key = write(dir.path(), "key", &config.api_key);
    let sim = runtime
        .block_on(truenas_sim::Simulator::start(config))
        .unwrap();
    let yaml = format!(
        "truenas:\n  url: {}\n  api_key_file: {key}\n  allow_insecure_transport: true\n",
        sim.url()
    );
    let config = write(dir.path(), "config.yaml", &yaml);
    let (running, addr) = Running::start(&config, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(&addr, "/readyz");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ready needs one logged-in socket; the pool's second may still be logging in.
    let metrics = loop {
        let (_, metrics) = http_get(&addr, "/metrics");
        if metrics.contains("tns_csi_truenas_connected 2") || Instant::now() >= deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(metrics.contains("tns_csi_truenas_connected 2"), "{metrics}");
    assert!(
        metrics.contains("tns_csi_truenas_calls_total{method=\"system.version\",outcome=\"ok\"}"),
        "{metrics}"
    );
    // TrueNAS goes away: not ready, with the reason.
    runtime.block_on(sim.stop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(&addr, "/readyz");
        if status == 503 {
            assert!(body.contains("failed truenas:"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still ready without TrueNAS");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = running.stop();
    assert!(
        !logs.contains(&std::fs::read_to_string(&key).unwrap()[2..]),
        "key in logs"
    );
}

#[test]
fn serves_csi_on_a_unix_socket_against_the_simulator() {
    use csi_api::csi::controller_client::ControllerClient;
    use csi_api::csi::identity_client::IdentityClient;
    use csi_api::csi::volume_capability::access_mode::Mode;
    use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
    use csi_api::csi::*;

    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = truenas_sim::SimConfig::new(dir.path().join("data"));
    let key = write(dir.path(), "key", &config.api_key);
    let sim = runtime
        .block_on(truenas_sim::Simulator::start(config))
        .unwrap();
    let socket = dir.path().join("csi/csi.sock");
    let yaml = format!(
        "truenas:\n  url: {}\n  api_key_file: {key}\n  allow_insecure_transport: true\ncsi:\n  mode: controller\n  endpoint: unix://{}\n",
        sim.url(),
        socket.display()
    );
    let config = write(dir.path(), "config.yaml", &yaml);
    let (running, _addr) = Running::start(&config, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "no socket at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    runtime.block_on(async {
        let path = socket.clone();
        let channel = tonic::transport::Endpoint::try_from("http://[::]:1")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        let mut identity = IdentityClient::new(channel.clone());
        let info = identity
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.name, "tns.csi.io");
        let mut ready = false;
        for _ in 0..50 {
            ready = identity
                .probe(ProbeRequest {})
                .await
                .unwrap()
                .into_inner()
                .ready
                == Some(true);
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "probe never became ready");
        let mut controller = ControllerClient::new(channel);
        let request = CreateVolumeRequest {
            name: "pvc-bin".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume::default())),
                access_mode: Some(AccessMode {
                    mode: Mode::MultiNodeMultiWriter as i32,
                }),
            }],
            parameters: [("protocol", "nfs"), ("pool", "tank")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        };
        let volume = controller
            .create_volume(request)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(volume.volume_id, "nfs:tank/csi/pvc-bin");
        assert_eq!(
            volume.volume_context["server"], "127.0.0.1",
            "the API URL's host by default"
        );
        controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.volume_id,
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let logs = running.stop();
    assert!(!socket.exists(), "socket removed on shutdown");
    assert!(logs.contains("serving CSI"), "{logs}");
    assert!(
        !logs.contains(&std::fs::read_to_string(&key).unwrap()[2..]),
        "key in logs"
    );
    // Every line a CSI call logs, its TrueNAS calls included, names the method and volume.
    let traced: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(r#""volume":"nfs:tank/csi/pvc-bin""#))
        .collect();
    assert!(
        traced
            .iter()
            .any(|l| l.contains("DeleteVolume") && l.contains("TrueNAS call")),
        "no DeleteVolume TrueNAS call line carries the volume:\n{logs}"
    );
}

#[test]
fn csi_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = tns_csi(
        &[
            "check-config",
            "--mode",
            "node",
            "--endpoint",
            "unix:///tmp/x.sock",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("config key `csi.node_id`"),
        "{}",
        text(&out.stderr)
    );
    let out = tns_csi(
        &[
            "check-config",
            "--mode",
            "node",
            "--node-id",
            "n1",
            "--endpoint",
            "tcp://0.0.0.0:1",
        ],
        &[],
    );
    assert!(
        text(&out.stderr).contains("config key `csi.endpoint`"),
        "{}",
        text(&out.stderr)
    );
    let out = tns_csi(
        &[
            "check-config",
            "--mode",
            "controller",
            "--endpoint",
            "unix:///tmp/x.sock",
        ],
        &[],
    );
    assert!(
        text(&out.stderr).contains("controller mode needs the truenas section"),
        "{}",
        text(&out.stderr)
    );
    let out = tns_csi(
        &[
            "check-config",
            "--mode",
            "node",
            "--node-id",
            "n1",
            "--endpoint",
            "unix:///tmp/x.sock",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "node mode needs no TrueNAS credentials: {}",
        text(&out.stderr)
    );
    let _ = dir;
}

/// An HPACK integer with an `prefix`-bit prefix and `flags` in the first byte's high bits.
fn hpack_int(out: &mut Vec<u8>, flags: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn a_grpc_client_that_sends_the_socket_path_as_authority_is_answered() {
    // Python grpcio and grpc-java send the unix socket's path as :authority; the request is
    // written by hand here, since no Rust client can send an authority that is no URI.
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let yaml = format!(
        "csi:\n  mode: node\n  node_id: node-1\n  host: simulated\n  sim_data_dir: {}\n  state_dir: {}\n  endpoint: unix://{}\n",
        dir.path().join("sim").display(),
        dir.path().join("state").display(),
        socket.display()
    );
    let config = write(dir.path(), "config.yaml", &yaml);
    let (running, _addr) = Running::start(&config, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/csi.v1.Identity/GetPluginInfo"),
        (":authority", &*socket.to_string_lossy()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        headers.push(0x00); // literal, not indexed, new name
        hpack_int(&mut headers, 0, 7, name.len());
        headers.extend_from_slice(name.as_bytes());
        hpack_int(&mut headers, 0, 7, value.len());
        headers.extend_from_slice(value.as_bytes());
    }
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    wire.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    wire.extend(frame(0x1, 0x4, 1, &headers)); // HEADERS, END_HEADERS
    wire.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA: an empty message, END_STREAM
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&wire).unwrap();
    // Read frames until stream 1 answers: HEADERS means served, RST_STREAM means refused.
    let mut answer = None;
    let mut header = [0u8; 9];
    while answer.is_none() && stream.read_exact(&mut header).is_ok() {
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let (kind, id) = (
            header[3],
            u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff,
        );
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        if id == 1 && (kind == 0x1 || kind == 0x3) {
            answer = Some(kind);
        }
    }
    drop(stream);
    let logs = running.stop();
    assert_eq!(
        answer,
        Some(0x1),
        "expected response HEADERS, got {answer:?}\n{logs}"
    );
}

#[test]
fn the_several_systems_example_checks_and_hides_both_keys() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/tns-csi-systems.yaml"
    );
    let other = "second-secret-9317";
    let out = tns_csi(
        &["check-config", "--config", example],
        &[("NAS_A_API_KEY", SECRET), ("NAS_B_API_KEY", other)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("name: nas-b"), "{stdout}");
    assert_eq!(
        stdout.matches("# truenas API key: read from").count(),
        2,
        "{stdout}"
    );
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(other),
        "{stdout}"
    );
    // A missing key names the system's key path.
    let out = tns_csi(
        &["check-config", "--config", example],
        &[("NAS_A_API_KEY", SECRET)],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("systems.1.api_key"),
        "{}",
        text(&out.stderr)
    );
}
