//! The servers and mounts a run measures: the S3 server, warpdrive-mount, s3fs-fuse, rclone,
//! and the S3 client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

use super::*;

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub(super) fn mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*want))
}

pub(super) fn wait_mounted(mnt: &Path, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mounted(mnt) {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before mounting: {status}");
        }
        ensure!(Instant::now() < deadline, "{what} did not mount in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(super) fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
}

/// A peer from Debian's package `package`, installed when missing (we are root).
pub(super) fn installed(program: &str, package: &str, skip: &str) -> anyhow::Result<PathBuf> {
    if let Some(found) = find(program) {
        return Ok(found);
    }
    println!("installing {package} (apt-get install {package}) for the baseline…");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", package])
        .stdout(Stdio::null())
        .status()
        .context("apt-get")?;
    ensure!(
        status.success(),
        "{program} is missing and apt-get could not install it; install {package} or pass {skip}"
    );
    find(program).with_context(|| format!("{program} still not on PATH after apt-get"))
}

/// The S3 server (`bench s3-server`, this binary) serving `local` as the bucket.
pub(super) fn start_server(local: &Path, port: u16) -> anyhow::Result<Proc> {
    let me = std::env::current_exe().context("finding this binary")?;
    let child = Command::new(me)
        .arg("s3-server")
        .arg("--dir")
        .arg(local)
        .args(["--bucket", BUCKET, "--port", &port.to_string()])
        .env("BENCH_S3_SECRET", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the S3 server")?;
    let proc = Proc(child);
    wait_port(port, "the S3 server")?;
    Ok(proc)
}

pub(super) fn s3(port: u16) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(120)),
            )
            .build()?,
    ))
}

pub(super) fn start_warpdrive(opts: &Options, port: u16, name: &str) -> anyhow::Result<Mounted> {
    let mnt = opts.dir.join(format!("mnt-{name}"));
    std::fs::create_dir_all(&mnt)?;
    let config = opts.dir.join("warpdrive.yaml");
    std::fs::write(
        &config,
        format!(
            "mount_point: {mnt}\n\
             metadata: {{ attr_ttl: 10m, entry_ttl: 10m, list_cache_ttl: 10m }}\n\
             cache: {{ path: {cache}, max_size: 64GiB, block_size: 4MiB, max_parallel_fetch: 16 }}\n\
             control_socket: {sock}\n\
             backends:\n\
             \x20 - name: s3\n    type: s3\n    bucket: {BUCKET}\n    mount_path: /s3\n    endpoint: http://127.0.0.1:{port}\n    allow_http: true\n    request_timeout: 120s\n    auth: {{ method: static, access_key_id_env: BENCH_AKID, secret_access_key_env: BENCH_SAK }}\n\
             \x20 - name: disk\n    type: local\n    root: {local}\n    mount_path: /disk\n\
             metrics: {{ addr: 127.0.0.1:0 }}\n\
             log: {{ level: warn }}\n",
            mnt = mnt.display(),
            cache = opts.dir.join("cache-warpdrive").display(),
            sock = opts.dir.join("control.sock").display(),
            local = opts.dir.join("local").display(),
        ),
    )?;
    let mut child = Command::new(&opts.binary)
        .arg("--config")
        .arg(&config)
        .env("BENCH_AKID", "bench")
        .env("BENCH_SAK", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", opts.binary.display()))?;
    wait_mounted(&mnt, &mut child, "warpdrive-mount")?;
    Ok(Mounted {
        child,
        root: mnt.join("s3"),
        mnt,
    })
}

pub(super) fn start_rclone(opts: &Options, port: u16) -> anyhow::Result<Mounted> {
    let rclone = installed("rclone", "rclone", "--skip-rclone")?;
    let mnt = opts.dir.join("mnt-rclone");
    std::fs::create_dir_all(&mnt)?;
    let cache = opts.dir.join("cache-rclone");
    let _ = std::fs::remove_dir_all(&cache);
    let mut child = Command::new(rclone)
        .arg("mount")
        .arg(format!(":s3:{BUCKET}"))
        .arg(&mnt)
        .args(["--s3-provider", "Other", "--s3-region", "us-east-1"])
        .args(["--s3-endpoint", &format!("http://127.0.0.1:{port}")])
        .args([
            "--s3-access-key-id",
            "bench",
            "--s3-secret-access-key",
            "bench",
        ])
        .args(["--vfs-cache-mode", "full", "--vfs-cache-max-size", "64G"])
        .arg("--cache-dir")
        .arg(&cache)
        .args([
            "--read-only",
            "--dir-cache-time",
            "1h",
            "--log-level",
            "ERROR",
        ])
        // rclone refuses an http:// endpoint while a CA bundle is set.
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start rclone")?;
    wait_mounted(&mnt, &mut child, "rclone mount")?;
    Ok(Mounted {
        child,
        root: mnt.clone(),
        mnt,
    })
}

/// s3fs-fuse over the S3 server, read-only, with its disk cache in `cache-s3fs` (kept across
/// a restart when `fresh` is false).
pub(super) fn start_s3fs(opts: &Options, port: u16, fresh: bool) -> anyhow::Result<Mounted> {
    let s3fs = installed("s3fs", "s3fs", "--skip-s3fs")?;
    let mnt = opts.dir.join("mnt-s3fs");
    std::fs::create_dir_all(&mnt)?;
    let cache = opts.dir.join("cache-s3fs");
    if fresh {
        let _ = std::fs::remove_dir_all(&cache);
    }
    std::fs::create_dir_all(&cache)?;
    let passwd = opts.dir.join("s3fs.passwd");
    std::fs::write(&passwd, "bench:bench\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut child = Command::new(s3fs)
        .arg(BUCKET)
        .arg(&mnt)
        .arg("-f")
        .args(["-o", &format!("url=http://127.0.0.1:{port}")])
        .args(["-o", "use_path_request_style", "-o", "endpoint=us-east-1"])
        .args(["-o", "ro", "-o", "stat_cache_expire=3600"])
        .arg("-o")
        .arg(format!("use_cache={}", cache.display()))
        .arg("-o")
        .arg(format!("passwd_file={}", passwd.display()))
        // s3fs, like rclone, trips over a CA bundle meant for https endpoints.
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start s3fs")?;
    wait_mounted(&mnt, &mut child, "s3fs")?;
    Ok(Mounted {
        child,
        root: mnt.clone(),
        mnt,
    })
}
