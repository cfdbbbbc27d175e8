//! The control plane of the real binary on a real FUSE mount: the bearer token on every
//! endpoint, a detached warm job that survives its client and a daemon restart with every
//! block fetched once, evict then read fetching again, invalidate beating a long attr_ttl,
//! usage equal to the bytes read, and /readyz naming a stopped backend (moto) while the other
//! keeps serving. Needs root and /dev/fuse (CI has both) and moto (`.ci/run` installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
#[path = "../../warpdrive-fs/tests/common/emulators.rs"]
mod emulators;

use emulators::{Moto, python};

const BIN: &str = env!("CARGO_BIN_EXE_warpdrive-mount");
const TOKEN: &str = "3f9c2b7e6a1d48c0b5e2f7a9d3c6b1e8";
const MIB: u64 = 1 << 20;

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A started daemon: its guard, its addresses, and its log lines as they come.
struct Daemon {
    guard: common::Mounted,
    metrics: String,
    control: String,
    log: mpsc::Receiver<String>,
}

fn start(cfg: &Path, mnt: &Path) -> Daemon {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .envs([("AKID", "k"), ("SAK", "s")]) // moto's static keys
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let guard = common::Mounted {
        child,
        mnt: mnt.to_owned(),
    };
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut metrics, mut control) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.is_none() || control.is_none() {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("warpdrive-mount exited or stalled before serving");
        if let Some(addr) = common::metrics_addr(&line) {
            metrics = Some(addr);
        }
        if line.contains("control plane listening") {
            control = line
                .split("\"addr\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_owned);
        }
    }
    Daemon {
        guard,
        metrics: metrics.unwrap(),
        control: control.unwrap(),
        log,
    }
}

impl Daemon {
    /// SIGTERM, then every log line up to the exit.
    fn stop(mut self) -> Vec<String> {
        Command::new("kill")
            .args(["-TERM", &self.guard.child.id().to_string()])
            .status()
            .unwrap();
        assert!(self.guard.child.wait().unwrap().success());
        self.log.iter().collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.control)
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn get(d: &Daemon, path: &str) -> serde_json::Value {
    let response = http().get(d.url(path)).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().unwrap()
}

fn post(d: &Daemon, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = http()
        .post(d.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn metric(addr: &str, series: &str) -> u64 {
    common::scrape(addr)
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().unwrap() as u64)
        })
        .unwrap_or(0)
}

fn ctl(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("ctl")
        .args(args)
        .output()
        .unwrap()
}

fn config(dir: &Path, moto: &Moto) -> (PathBuf, PathBuf) {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = dir.join("warpdrive.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mount_point: {mnt}\n\
             cache: {{ path: {cache}, block_size: 1MiB, max_size: 256MiB }}\n\
             control_socket: {sock}\n\
             control_plane: {{ enabled: true, addr: 127.0.0.1:{port}, token_file: {token} }}\n\
             metadata: {{ attr_ttl: 1h, entry_ttl: 1h, negative_ttl: 1s, list_cache_ttl: 1h }}\n\
             backends:\n\
             \x20 - {{ name: scratch, type: local, mount_path: /local, root: {srv} }}\n\
             \x20 - name: s3\n    type: s3\n    bucket: train\n    mount_path: /s3\n    endpoint: {s3}\n    allow_http: true\n    request_timeout: 2s\n    retries: 0\n    auth: {{ method: static, access_key_id_env: AKID, secret_access_key_env: SAK }}\n\
             metrics: {{ addr: 127.0.0.1:0 }}\n\
             log: {{ format: json }}\n",
            mnt = mnt.display(),
            cache = dir.join("cache").display(),
            sock = dir.join("run/control.sock").display(),
            token = token.display(),
            srv = dir.join("srv").display(),
            s3 = moto.endpoint(),
            port = emulators::free_port(),
        ),
    )
    .unwrap();
    (cfg, mnt)
}

#[test]
fn the_control_plane_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let warm_files: Vec<Vec<u8>> = (0..24).map(|i| random(MIB as usize, i)).collect();
    for (i, data) in warm_files.iter().enumerate() {
        write(&srv, &format!("w/f{i:02}.bin"), data);
    }
    write(&srv, "v/x.txt", b"old");
    let moto = Moto::start();
    python(&format!(
        "{}s3.create_bucket(Bucket='train')\ns3.put_object(Bucket='train', Key='k/one.txt', Body=b'from s3')\n",
        moto.boto3()
    ));
    let (cfg, mnt) = config(dir.path(), &moto);
    let d = start(&cfg, &mnt);

    // ---- The token, on every endpoint.
    let endpoints: [(&str, &str, Option<serde_json::Value>); 10] = [
        ("GET", "/v1/status", None),
        ("GET", "/v1/backends", None),
        ("GET", "/v1/cache", None),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/usage", None),
        ("GET", "/v1/openapi.json", None),
        ("GET", "/v1/jobs/warm-nope", None),
        ("DELETE", "/v1/jobs/warm-nope", None),
        (
            "POST",
            "/v1/evict",
            Some(serde_json::json!({"backend": "scratch", "prefix": "none"})),
        ),
        (
            "POST",
            "/v1/invalidate",
            Some(serde_json::json!({"backend": "scratch", "prefix": "none"})),
        ),
    ];
    let wrong = "wrong-token-0123456789abcdef";
    for (method, path, body) in &endpoints {
        let send = |token: Option<&str>| {
            let mut request = http().request(method.parse().unwrap(), d.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().unwrap();
            (response.status().as_u16(), response.text().unwrap())
        };
        let (status, text) = send(None);
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        assert!(text.contains("missing `Authorization: Bearer"), "{text}");
        let (status, text) = send(Some(wrong));
        assert_eq!(status, 401, "{method} {path} with a wrong token: {text}");
        assert!(
            text.contains("not accepted") && !text.contains(wrong),
            "{text}"
        );
        let (status, text) = send(Some(TOKEN));
        let expected = if path.ends_with("warm-nope") {
            404
        } else {
            200
        };
        assert_eq!(status, expected, "{method} {path} with the token: {text}");
    }
    // The OpenAPI document describes what is served.
    let openapi = get(&d, "/v1/openapi.json");
    for (_, path, _) in &endpoints {
        let path = path.replace("warm-nope", "{id}");
        assert!(openapi["paths"].get(&path).is_some(), "{path} undocumented");
    }

    // ---- A detached warm job: started by a client that exits at once.
    let out = ctl(
        &cfg,
        &[
            "warm",
            "--backend",
            "scratch",
            "--prefix",
            "w",
            "--workers",
            "2",
            "--max-rate",
            "6MiB",
            "--detach",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    // Progress advances with no client connected.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = get(&d, &format!("/v1/jobs/{id}"));
        let done = job["progress"]["bytes_done"].as_u64().unwrap();
        seen.push(done);
        if done >= 6 * MIB {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.windows(2).any(|w| w[1] > w[0]) || seen[0] > 0,
        "{seen:?}"
    );
    let job = get(&d, &format!("/v1/jobs/{id}"));
    assert_eq!(
        job["state"], "running",
        "the restart must come mid-job: {job}"
    );
    // A second request for the same warm returns the running job, it does not start another.
    let (status, again) = post(
        &d,
        "/v1/jobs",
        serde_json::json!({"backend": "scratch", "prefix": "w/"}),
    );
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));

    // ---- The daemon restarts mid-job.
    let log = d.stop();
    let first_run = log
        .iter()
        .find(|l| l.contains("warpdrive-mount stopped"))
        .and_then(|l| l.split("\"backend_bytes\":").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the stop line counts backend bytes");
    assert!(
        first_run > 0 && first_run < 24 * MIB,
        "fetched {first_run} before the restart"
    );
    let d = start(&cfg, &mnt);
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = get(&d, &format!("/v1/jobs/{id}"));
        if job["state"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["resumed"], 1, "{job}");
    assert_eq!(job["progress"]["bytes_done"], 24 * MIB, "{job}");
    assert_eq!(job["progress"]["bytes_fetched"], 24 * MIB, "{job}");
    let second_run = metric(
        &d.metrics,
        "warpdrive_backend_bytes_total{backend=\"scratch\"}",
    );
    assert_eq!(
        first_run + second_run,
        24 * MIB,
        "every block fetched exactly once over both runs"
    );
    // Reads of the warmed files come from the cache.
    for (i, data) in warm_files.iter().enumerate().take(4) {
        assert_eq!(
            &std::fs::read(mnt.join(format!("local/w/f{i:02}.bin"))).unwrap(),
            data
        );
    }
    assert_eq!(
        metric(
            &d.metrics,
            "warpdrive_backend_bytes_total{backend=\"scratch\"}"
        ),
        second_run
    );

    // ---- Usage equals the bytes read: 4 whole files above, and 1.5 MiB of two more here.
    use std::io::Read;
    let mut part = vec![0u8; 3 * (MIB as usize) / 4];
    for i in [10, 11] {
        let mut file = std::fs::File::open(mnt.join(format!("local/w/f{i:02}.bin"))).unwrap();
        file.read_exact(&mut part).unwrap();
    }
    let usage = get(&d, "/v1/usage");
    let rows = usage["rows"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["backend"] == "scratch" && r["prefix"] == "w")
        .unwrap_or_else(|| panic!("{usage}"));
    // The kernel reads ahead in whole pages of the request; it asked for at least what we read.
    let expected = 4 * MIB + 2 * (3 * MIB / 4);
    let read = row["bytes"].as_u64().unwrap();
    assert!(
        read >= expected && read <= 6 * MIB,
        "usage {read} for {expected} bytes read: {usage}"
    );
    assert_eq!(row["files"], 6, "{usage}");
    assert_eq!(row["uid"], own_uid(), "{usage}");
    assert_eq!(usage["dropped_reads"], 0);

    // ---- Evict, then read: a fetch.
    let (status, evicted) = post(
        &d,
        "/v1/evict",
        serde_json::json!({"backend": "scratch", "prefix": "w"}),
    );
    assert_eq!(status, 200, "{evicted}");
    assert_eq!(evicted["blocks"], 24, "{evicted}");
    let cache = get(&d, "/v1/cache");
    assert_eq!(cache["backends"][0]["blocks"], 0, "{cache}");
    let before = metric(
        &d.metrics,
        "warpdrive_backend_bytes_total{backend=\"scratch\"}",
    );
    assert_eq!(
        std::fs::read(mnt.join("local/w/f00.bin")).unwrap(),
        warm_files[0]
    );
    assert_eq!(
        metric(
            &d.metrics,
            "warpdrive_backend_bytes_total{backend=\"scratch\"}"
        ),
        before + MIB,
        "the evicted file was fetched again"
    );

    // ---- Invalidate beats attr_ttl and list_cache_ttl (1 h here).
    assert_eq!(std::fs::read(mnt.join("local/v/x.txt")).unwrap(), b"old");
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime, so a new ETag
    write(&srv, "v/x.txt", b"new and longer");
    assert_eq!(
        std::fs::read(mnt.join("local/v/x.txt")).unwrap(),
        b"old",
        "within attr_ttl the old version is still trusted"
    );
    write(&srv, "v/y.txt", b"a new file");
    let out = ctl(
        &cfg,
        &["invalidate", "--backend", "scratch", "--prefix", "v"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("invalidated 1 files"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(mnt.join("local/v/x.txt")).unwrap(),
        b"new and longer"
    );
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("local/v"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["x.txt", "y.txt"]);

    // ---- One backend stops: /readyz names it, the other keeps serving.
    assert_eq!(std::fs::read(mnt.join("s3/k/one.txt")).unwrap(), b"from s3");
    let ready = http()
        .get(format!("http://{}/readyz", d.metrics))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body = ready.text().unwrap();
    assert!(
        body.contains("ok backend s3") && body.contains("ok backend scratch"),
        "{body}"
    );
    drop(moto);
    std::thread::sleep(Duration::from_millis(5200)); // the cached probe expires
    let ready = http()
        .get(format!("http://{}/readyz", d.metrics))
        .send()
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "one backend down is degraded, not unready"
    );
    let body = ready.text().unwrap();
    assert!(body.contains("degraded backend s3:"), "{body}");
    assert!(body.contains("ok backend scratch"), "{body}");
    assert_eq!(
        std::fs::read(mnt.join("local/w/f01.bin")).unwrap(),
        warm_files[1]
    );
    // Real traffic to the stopped backend fails, and is counted by kind and remembered.
    let (status, _) = post(&d, "/v1/invalidate", serde_json::json!({"backend": "s3"}));
    assert_eq!(status, 200);
    let listed = std::fs::read_dir(mnt.join("s3/k")).and_then(|d| d.collect::<Result<Vec<_>, _>>());
    assert!(listed.is_err(), "{listed:?}");
    let backends = get(&d, "/v1/backends");
    assert_eq!(backends["backends"][1]["state"], "degraded", "{backends}");
    assert_eq!(backends["backends"][0]["state"], "ok", "{backends}");
    assert!(
        backends["backends"][1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("backend `s3`")),
        "{backends}"
    );
    assert!(
        common::scrape(&d.metrics)
            .lines()
            .any(|l| l.starts_with("warpdrive_backend_errors_total{backend=\"s3\"")),
        "no backend error counted"
    );

    // ---- ctl prints tables, and JSON when asked.
    let out = ctl(&cfg, &["backends"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("BACKEND") && text.contains("degraded"),
        "{text}"
    );
    let out = ctl(&cfg, &["--json", "usage"]);
    let usage: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!usage["rows"].as_array().unwrap().is_empty());
    let out = ctl(&cfg, &["jobs"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "{out:?}"
    );
    // The local socket answers without a token (it is 0600, the daemon's user only).
    let out = ctl(&cfg, &["--socket", "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mounted"),
        "{out:?}"
    );
    // Metrics: cache utilisation and backend errors by kind.
    let metrics = common::scrape(&d.metrics);
    assert!(
        metrics.contains("warpdrive_cache_utilization_ratio "),
        "{metrics}"
    );
    drop(d);
}

fn own_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_control_plane_refuses_to_run_without_a_token_and_serves_https_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = common::write_config(
        dir.path(),
        &format!(
            "  - {{ name: scratch, type: local, mount_path: /local, root: {} }}\n",
            dir.path().display()
        ),
    );
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{base}control_plane: {{ enabled: true }}\n")).unwrap();
    let check = || {
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap()
    };
    let out = check();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control_plane.token_file")
            && err.contains("never runs without a bearer token"),
        "{err}"
    );
    // A short token is refused, naming its length only.
    let token = dir.path().join("token");
    std::fs::write(&token, "short").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{base}control_plane: {{ enabled: true, token_file: {} }}\n",
            token.display()
        ),
    )
    .unwrap();
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has 5 characters"),
        "{err}"
    );
    assert!(!err.contains("short"), "{err}");

    // HTTPS with a certificate: ctl trusts it through control_plane.tls.cert_file.
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = emulators::free_port();
    std::fs::write(
        &cfg,
        format!(
            "{base}log: {{ format: json }}\ncontrol_plane: {{ enabled: true, addr: 127.0.0.1:{port}, token_file: {}, tls: {{ cert_file: {}, key_file: {} }} }}\n",
            token.display(),
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let d = start(&cfg, &dir.path().join("mnt"));
    let out = ctl(&cfg, &["status"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version"),
        "{out:?}"
    );
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = http()
        .get(format!("http://127.0.0.1:{port}/v1/status"))
        .bearer_auth(TOKEN)
        .send();
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    drop(d);
}
