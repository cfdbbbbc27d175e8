//! The newcomer's first command: both systems on embedded defaults, end to end.
//!
//! For now that is what exists: config validation with secrets redacted, and each daemon
//! serving /healthz, /readyz and /metrics until it is stopped with SIGTERM. The demo grows as
//! the TrueNAS simulator, the CSI services and the FUSE mount land.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{cargo, root};

const TNS_CSI_CONFIG: &str = "\
truenas:
  url: wss://truenas.example.com/api/current
  api_key_env: TRUENAS_API_KEY
metrics:
  addr: 127.0.0.1:0
";

/// A daemon started by the demo; stopped (or killed) when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the demo.
pub(crate) fn run() -> anyhow::Result<()> {
    println!("==> building tns-csi and warpdrive-mount");
    let built = cargo()
        .args([
            "build",
            "--quiet",
            "--package",
            "tns-csi",
            "--package",
            "warpdrive-mount",
        ])
        .status()?;
    if !built.success() {
        bail!("build failed");
    }
    let dir = root().join("target/demo");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("datasets"))?;
    std::fs::write(
        data.join("datasets/hello.txt"),
        "hello from the local backend\n",
    )?;
    let tns_config = dir.join("tns-csi.yaml");
    std::fs::write(&tns_config, TNS_CSI_CONFIG)?;
    let wd_config = dir.join("warpdrive.yaml");
    std::fs::write(
        &wd_config,
        format!(
            "mount_point: {}\ncache:\n  path: {}\nbackends:\n  - {{ name: scratch, type: local, mount_path: /local, root: {} }}\nmetrics:\n  addr: 127.0.0.1:0\n",
            dir.join("mnt").display(),
            dir.join("cache").display(),
            data.display()
        ),
    )?;
    let env = [("TRUENAS_API_KEY", "demo-key-never-printed")];

    for (bin, config) in [("tns-csi", &tns_config), ("warpdrive-mount", &wd_config)] {
        println!("\n==> {bin} check-config --config {}", config.display());
        let out = Command::new(binary(bin))
            .args(["check-config", "--config"])
            .arg(config)
            .envs(env)
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "{bin} check-config failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let mut daemons = Vec::new();
    for (name, config) in [("tns-csi", &tns_config), ("warpdrive-mount", &wd_config)] {
        let (daemon, addr) = start(name, config, &env)?;
        println!("\n==> {name} is serving on http://{addr}");
        for path in ["/healthz", "/readyz", "/metrics"] {
            let (status, body) = get(&addr, path)?;
            let shown: Vec<&str> = body
                .lines()
                .filter(|l| !l.starts_with('#'))
                .take(4)
                .collect();
            println!("    GET {path} -> {status}  {}", shown.join(" | "));
        }
        daemons.push(daemon);
    }
    for mut daemon in daemons {
        let pid = daemon.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = daemon.child.wait()?;
        println!("==> {} stopped on SIGTERM ({status})", daemon.name);
    }
    println!("\nDemo done. Next: `cargo xtask test` runs every test.");
    Ok(())
}

fn binary(name: &str) -> std::path::PathBuf {
    root().join("target/debug").join(name)
}

fn start(
    name: &'static str,
    config: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(Daemon, String)> {
    let mut child = Command::new(binary(name))
        .args(["--log-format", "json", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let daemon = Daemon { name, child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if !line.contains("serving /metrics") {
            continue;
        }
        if let Some(addr) = line
            .split("\"addr\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            return Ok((daemon, addr.to_owned()));
        }
    }
    bail!("{name} did not start serving within 20 s")
}

fn get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .lines()
        .next()
        .unwrap_or("")
        .split_once(' ')
        .map_or("", |(_, s)| s)
        .to_owned();
    Ok((status, body.to_owned()))
}
