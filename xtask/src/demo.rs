//! The newcomer's first command: both systems on embedded defaults, end to end.
//!
//! For now that is what exists: the TrueNAS simulator, config validation with secrets
//! redacted, tns-csi logged in to the simulator (ready, with its TrueNAS metrics), and both
//! daemons serving /healthz, /readyz and /metrics until they are stopped with SIGTERM. The demo
//! grows as the CSI services and the FUSE mount land.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{cargo, root};

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
    if is_root() {
        crate::setup::ensure_demo()?;
    }
    println!("==> building truenas-sim, tns-csi and warpdrive-mount");
    let built = cargo()
        .args([
            "build",
            "--quiet",
            "--package",
            "truenas-sim",
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
    std::fs::create_dir_all(dir.join("mnt"))?;
    std::fs::write(
        data.join("datasets/hello.txt"),
        "hello from the local backend\n",
    )?;
    for shard in 0..3 {
        let path = data.join(format!("datasets/train/shard-{shard:04}.tar"));
        std::fs::create_dir_all(path.parent().unwrap_or(&data))?;
        std::fs::write(path, vec![b'x'; 64 * 1024 * (shard + 1)])?;
    }
    let (sim, sim_url, key_file) = start_simulator(&dir)?;
    println!(
        "\n==> truenas-sim is serving {sim_url} (pool tank, 100 GiB; data in target/demo/sim)"
    );
    let root = is_root();
    let socket = dir.join("csi.sock");
    let tns_config = dir.join("tns-csi.yaml");
    std::fs::write(
        &tns_config,
        format!(
            "truenas:\n  url: {sim_url}\n  api_key_file: {}\n  # the simulator listens on loopback without TLS\n  allow_insecure_transport: true\ncsi:\n  mode: {}\n  endpoint: unix://{}\n  node_id: demo-node\n  known_nodes: [demo-node]\n  host: simulated\n  sim_data_dir: {}\n  state_dir: {}\n  kubelet_dir: {}\nmetrics:\n  addr: 127.0.0.1:0\n",
            key_file.display(),
            if root { "all" } else { "controller" },
            socket.display(),
            dir.join("sim/data").display(),
            dir.join("node-state").display(),
            dir.display(),
        ),
    )?;
    let wd_config = dir.join("warpdrive.yaml");
    std::fs::write(
        &wd_config,
        format!(
            "mount_point: {}\ncache:\n  path: {}\ncontrol_socket: {}\nbackends:\n  - {{ name: scratch, type: local, mount_path: /local, root: {} }}\nmetrics:\n  addr: 127.0.0.1:0\n",
            dir.join("mnt").display(),
            dir.join("cache").display(),
            dir.join("control.sock").display(),
            data.display()
        ),
    )?;
    let env: [(&str, &str); 0] = [];

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
        wait_ready(&addr)?;
        for path in ["/healthz", "/readyz", "/metrics"] {
            let (status, body) = get(&addr, path)?;
            let shown: Vec<&str> = body
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| {
                    path != "/metrics" || l.contains("build_info") || l.contains("truenas_c")
                })
                .take(4)
                .collect();
            println!("    GET {path} -> {status}  {}", shown.join(" | "));
        }
        if name == "warpdrive-mount" {
            show_mount(&dir.join("mnt"));
        }
        if name == "tns-csi" {
            println!(
                "\n==> a volume's whole life through CSI on {}",
                socket.display()
            );
            if !root {
                println!(
                    "    (not root: the node steps mount filesystems and are skipped; run as root to see them)"
                );
            }
            tokio::runtime::Runtime::new()?.block_on(crate::walkthrough::run(
                &socket,
                &dir.join("work"),
                root,
            ))?;
        }
        daemons.push(daemon);
    }
    for mut daemon in daemons {
        let pid = daemon.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = daemon.child.wait()?;
        println!("==> {} stopped on SIGTERM ({status})", daemon.name);
    }
    drop(sim);
    println!("==> truenas-sim stopped");
    println!("\nDemo done. Next: `cargo xtask test` runs every test.");
    Ok(())
}

/// Lists and reads the generated dataset through the warpdrive mount.
fn show_mount(mnt: &Path) {
    println!(
        "\n==> the local backend through the FUSE mount at {}",
        mnt.display()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mnt.join("local").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stack = vec![mnt.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.into_iter().rev() {
            let path = entry.path();
            let shown = path
                .strip_prefix(mnt)
                .unwrap_or(&path)
                .display()
                .to_string();
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => {
                    println!("    {shown}/");
                    stack.push(path);
                }
                Ok(meta) => println!("    {shown}  ({} bytes)", meta.len()),
                Err(err) => println!("    {shown}  ({err})"),
            }
        }
    }
    match std::fs::read_to_string(mnt.join("local/datasets/hello.txt")) {
        Ok(text) => println!("    cat local/datasets/hello.txt → {:?}", text.trim()),
        Err(err) => println!("    cannot read through the mount: {err}"),
    }
}

/// Whether we run as root (the node steps mount filesystems and attach loop devices).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Starts `truenas-sim` on a free loopback port; returns it, the URL it printed and the key file.
fn start_simulator(dir: &Path) -> anyhow::Result<(Daemon, String, std::path::PathBuf)> {
    let sim_dir = dir.join("sim");
    std::fs::create_dir_all(&sim_dir)?;
    let key_file = sim_dir.join("api-key");
    let mut child = Command::new(binary("truenas-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pool",
            "tank=100GiB",
            "--api-key-file",
        ])
        .arg(&key_file)
        .arg("--data-dir")
        .arg(sim_dir.join("data"))
        .arg("--state")
        .arg(sim_dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start truenas-sim")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let daemon = Daemon {
        name: "truenas-sim",
        child,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().to_owned();
    if !url.starts_with("ws") {
        bail!("truenas-sim did not print its URL (got `{url}`)");
    }
    Ok((daemon, url, key_file))
}

/// Waits up to 10 s for /readyz to answer 200 (tns-csi logs in to TrueNAS in the background).
fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(addr, "/readyz")?;
        if status.starts_with("200") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not ready after 10 s: {status} {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
