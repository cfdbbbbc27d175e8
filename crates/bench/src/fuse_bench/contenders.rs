//! The servers and mounts a run measures: moto, warpdrive-mount, rclone, and the S3 client.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

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

/// rclone from Debian's package, installed when missing and we are root.
pub(super) fn rclone() -> anyhow::Result<PathBuf> {
    if let Some(found) = find("rclone") {
        return Ok(found);
    }
    println!("installing rclone (apt-get install rclone) for the baseline…");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "rclone"])
        .stdout(Stdio::null())
        .status()
        .context("apt-get")?;
    ensure!(
        status.success(),
        "rclone is missing and apt-get could not install it; install rclone or pass --skip-rclone"
    );
    find("rclone").context("rclone still not on PATH after apt-get")
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

pub(super) async fn upload(
    store: &Arc<dyn ObjectStore>,
    local: &Path,
    data: &Data,
) -> anyhow::Result<()> {
    for key in data.large.iter().chain(std::iter::once(&data.random)) {
        let upload = store.put_multipart(&StorePath::from(key.as_str())).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 16 * MIB as usize);
        let mut file = std::fs::File::open(local.join(key))?;
        let mut buf = vec![0u8; 16 * MIB as usize];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
    }
    futures_util::stream::iter(data.small.iter())
        .map(|key| {
            let store = store.clone();
            let path = local.join(key);
            async move {
                let bytes = tokio::fs::read(&path).await?;
                store
                    .put(&StorePath::from(key.as_str()), bytes.into())
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
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
             cache: {{ path: {cache}, max_size: 64GiB, block_size: 4MiB, max_parallel_fetch: 16, readahead: {{ parallel_gets: 1 }} }}\n\
             control_socket: {sock}\n\
             backends:\n\
             \x20 - name: moto\n    type: s3\n    bucket: {BUCKET}\n    mount_path: /\n    endpoint: http://127.0.0.1:{port}\n    allow_http: true\n    request_timeout: 120s\n    auth: {{ method: static, access_key_id_env: BENCH_AKID, secret_access_key_env: BENCH_SAK }}\n\
             metrics: {{ addr: 127.0.0.1:0 }}\n\
             log: {{ level: warn }}\n",
            mnt = mnt.display(),
            cache = opts.dir.join("cache-warpdrive").display(),
            sock = opts.dir.join("control.sock").display(),
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
    Ok(Mounted { child, mnt })
}

pub(super) fn start_rclone(opts: &Options, port: u16) -> anyhow::Result<Mounted> {
    let rclone = rclone()?;
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
    Ok(Mounted { child, mnt })
}

/// moto accepts an unsigned CreateBucket; object_store has no bucket API.
pub(super) async fn create_bucket(port: u16) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await?;
    let mut reply = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut reply).await?;
    let status = BufReader::new(&reply[..])
        .lines()
        .next()
        .transpose()?
        .unwrap_or_default();
    ensure!(status.contains(" 200 "), "moto answered {status}");
    Ok(())
}
