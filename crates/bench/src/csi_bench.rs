//! CreateVolume/DeleteVolume throughput of the controller binary against the simulator with
//! injected TrueNAS latency, beside a serial baseline from the same run, and the controller's
//! peak resident memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_api::csi::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, ListVolumesRequest, VolumeCapability,
};
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use truenas_sim::{SimConfig, Simulator};

const TARGET_VOLUMES_PER_SEC: f64 = 150.0;
const TARGET_PEAK_RSS_MIB: f64 = 16.0;
/// Most TrueNAS calls one CreateVolume may make, per protocol.
/// With thousands of volumes on the pool, creates and deletes keep this share of the
/// empty-pool rate.
const TARGET_SCALE_RATIO: f64 = 0.8;
/// ListVolumes of every existing volume, page by page.
const TARGET_LIST_ALL_SECS: f64 = 5.0;
/// ListVolumes page size of the scale row (what external-provisioner-like callers use).
const LIST_PAGE: i32 = 500;
const TARGET_CALLS_PER_CREATE: [(&str, f64); 2] = [("nfs", 6.0), ("nvmeof", 9.0)];

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kib / 1024.0)
}

async fn connect(socket: PathBuf) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::try_from("http://[::]:1")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?)
}

fn request(name: &str, protocol: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }],
        parameters: HashMap::from([
            ("protocol".to_owned(), protocol.to_owned()),
            ("pool".to_owned(), "tank".to_owned()),
        ]),
        ..Default::default()
    }
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// TrueNAS calls per request in this phase.
    calls: f64,
}

fn summarize(mut latencies: Vec<Duration>, took: Duration, calls: u64) -> Run {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Run {
        per_sec: latencies.len() as f64 / took.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        calls: calls as f64 / latencies.len() as f64,
    }
}

/// Creates (or deletes) volumes `<prefix>-<protocol>-<i>` for `i` in `0..count`,
/// `concurrency` at a time; the latency of each call.
async fn phase(
    channel: &Channel,
    protocol: &str,
    prefix: &str,
    count: usize,
    concurrency: usize,
    delete: bool,
) -> anyhow::Result<Vec<Duration>> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..count {
        let gate = gate.clone();
        let mut client = ControllerClient::new(channel.clone());
        let name = format!("{prefix}-{protocol}-{i}");
        let protocol = protocol.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let call = Instant::now();
            if delete {
                let volume_id = format!("{protocol}:tank/csi/{name}");
                client
                    .delete_volume(DeleteVolumeRequest {
                        volume_id,
                        ..Default::default()
                    })
                    .await?;
            } else {
                client.create_volume(request(&name, &protocol)).await?;
            }
            Ok::<_, anyhow::Error>(call.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok(latencies)
}

/// Creates `count` volumes `concurrency` at a time, then deletes them the same way.
async fn run(
    channel: &Channel,
    sim: &Simulator,
    protocol: &str,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Run, Run)> {
    let mut phases = Vec::new();
    for delete in [false, true] {
        let calls_before = sim.faults().calls();
        let started = Instant::now();
        let latencies = phase(channel, protocol, prefix, count, concurrency, delete).await?;
        phases.push(summarize(
            latencies,
            started.elapsed(),
            sim.faults().calls() - calls_before,
        ));
    }
    let delete = phases.pop().context("delete phase")?;
    let create = phases.pop().context("create phase")?;
    Ok((create, delete))
}

fn row(label: &str, run: &Run, baseline: Option<&Run>) {
    let ratio = baseline.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1}x", run.per_sec / b.per_sec),
    );
    println!(
        "| {label:<32} | {:>9.1} | {:>8.1} | {:>8.1} | {ratio:>10} |",
        run.per_sec,
        run.p50.as_secs_f64() * 1000.0,
        run.p99.as_secs_f64() * 1000.0
    );
}

/// Runs the benchmark; `Ok(false)` when a target is missed.
pub(crate) async fn run_bench(
    binary: &Path,
    volumes: usize,
    latency_ms: u64,
    existing: usize,
) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let mut config = SimConfig::new(dir.path().join("data"));
    config.pools = vec![("tank".into(), 10 << 40)];
    let key = config.api_key.clone();
    let sim = Simulator::start(config).await?;
    sim.faults().set_latency(Duration::from_millis(latency_ms));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &key)?;
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let socket = dir.path().join("csi.sock");
    let child = Command::new(binary)
        .args([
            "--mode",
            "controller",
            "--insecure-transport",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .arg("--truenas-url")
        .arg(sim.url())
        .arg("--api-key-file")
        .arg(&key_file)
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let controller = Controller(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("the controller did not open its socket");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = connect(socket).await?;
    println!(
        "tns-csi controller (release) vs truenas-sim, {latency_ms} ms injected per TrueNAS call, {volumes} volumes per protocol, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| {:<32} | {:>9} | {:>8} | {:>8} | {:>10} |",
        "case", "volumes/s", "p50 ms", "p99 ms", "vs serial"
    );
    println!(
        "|{:-<34}|{:->11}|{:->10}|{:->10}|{:->12}|",
        "", "", "", "", ""
    );
    let mut met = true;
    let mut calls_met = true;
    let mut empty_nfs = None;
    for (protocol, max_calls) in TARGET_CALLS_PER_CREATE {
        let (serial_create, serial_delete) = run(&channel, &sim, protocol, "serial", 10, 1).await?;
        let (create, delete) = run(&channel, &sim, protocol, "bench", volumes, 16).await?;
        row(
            &format!("{protocol} create, 1 at a time"),
            &serial_create,
            None,
        );
        row(
            &format!("{protocol} create, 16 at a time"),
            &create,
            Some(&serial_create),
        );
        row(
            &format!("{protocol} delete, 1 at a time"),
            &serial_delete,
            None,
        );
        row(
            &format!("{protocol} delete, 16 at a time"),
            &delete,
            Some(&serial_delete),
        );
        println!(
            "| {:<32} | {:>9.1} | {:>8} | {:>8} | {:>10} |",
            format!("{protocol}: calls per create (max {max_calls})"),
            serial_create.calls,
            "",
            "",
            ""
        );
        println!(
            "| {:<32} | {:>9.1} | {:>8} | {:>8} | {:>10} |",
            format!("{protocol}: calls per delete"),
            serial_delete.calls,
            "",
            "",
            ""
        );
        met &= create.per_sec >= TARGET_VOLUMES_PER_SEC;
        calls_met &= serial_create.calls <= max_calls;
        if protocol == "nfs" {
            empty_nfs = Some((create, delete));
        }
    }
    let rss = peak_rss_mib(controller.0.id())?;
    let scale_met = match empty_nfs {
        Some((empty_create, empty_delete)) if existing > 0 => {
            scale(
                &channel,
                &sim,
                existing,
                volumes,
                &empty_create,
                &empty_delete,
            )
            .await?
        }
        _ => true,
    };
    let leftovers = sim
        .dataset_names()
        .into_iter()
        .filter(|n| n.matches('/').count() > 1)
        .count();
    println!();
    println!("controller peak RSS (VmHWM): {rss:.1} MiB (target <= {TARGET_PEAK_RSS_MIB} MiB)");
    println!(
        "target: >= {TARGET_VOLUMES_PER_SEC} volumes/s created per protocol at 16 in flight: {}",
        if met { "met" } else { "NOT met" }
    );
    println!(
        "target: at most {} TrueNAS calls per create: {}",
        TARGET_CALLS_PER_CREATE
            .iter()
            .map(|(p, n)| format!("{n} for {p}"))
            .collect::<Vec<_>>()
            .join(", "),
        if calls_met { "met" } else { "NOT met" }
    );
    println!("volumes left on the simulator after the deletes: {leftovers} (must be 0)");
    Ok(met && calls_met && scale_met && rss <= TARGET_PEAK_RSS_MIB && leftovers == 0)
}

/// The scale rows: `existing` NFS volumes on the pool, then creates and deletes beside the
/// empty pool's, and ListVolumes of them all in pages of [`LIST_PAGE`]. Removes the filler
/// afterwards. `Ok(false)` when a target is missed.
async fn scale(
    channel: &Channel,
    sim: &Simulator,
    existing: usize,
    volumes: usize,
    empty_create: &Run,
    empty_delete: &Run,
) -> anyhow::Result<bool> {
    println!();
    let started = Instant::now();
    phase(channel, "nfs", "fill", existing, 32, false).await?;
    println!(
        "filled the pool with {existing} NFS volumes in {:.1} s ({:.0}/s at 32 in flight)",
        started.elapsed().as_secs_f64(),
        existing as f64 / started.elapsed().as_secs_f64()
    );
    println!(
        "| {:<32} | {:>9} | {:>8} | {:>8} | {:>10} |",
        format!("with {existing} existing volumes"),
        "volumes/s",
        "p50 ms",
        "p99 ms",
        "vs empty"
    );
    println!(
        "|{:-<34}|{:->11}|{:->10}|{:->10}|{:->12}|",
        "", "", "", "", ""
    );
    let (create, delete) = run(channel, sim, "nfs", "scale", volumes, 16).await?;
    row("nfs create, 16 at a time", &create, Some(empty_create));
    row("nfs delete, 16 at a time", &delete, Some(empty_delete));
    let listing = Instant::now();
    let (mut token, mut seen, mut pages) = (String::new(), 0usize, 0usize);
    loop {
        let page = ControllerClient::new(channel.clone())
            .list_volumes(ListVolumesRequest {
                max_entries: LIST_PAGE,
                starting_token: token,
            })
            .await?
            .into_inner();
        seen += page.entries.len();
        pages += 1;
        token = page.next_token;
        if token.is_empty() {
            break;
        }
    }
    let list_secs = listing.elapsed().as_secs_f64();
    println!(
        "ListVolumes of all {seen} in {pages} pages of {LIST_PAGE}: {list_secs:.2} s ({:.0} ms a page)",
        list_secs * 1000.0 / pages as f64
    );
    let create_ratio = create.per_sec / empty_create.per_sec;
    let delete_ratio = delete.per_sec / empty_delete.per_sec;
    let met = create_ratio >= TARGET_SCALE_RATIO
        && delete_ratio >= TARGET_SCALE_RATIO
        && list_secs <= TARGET_LIST_ALL_SECS
        && seen == existing;
    println!(
        "target: with {existing} volumes, create and delete >= {TARGET_SCALE_RATIO}x the empty pool's rate ({create_ratio:.2}x, {delete_ratio:.2}x) and all listed within {TARGET_LIST_ALL_SECS} s: {}",
        if met { "met" } else { "NOT met" }
    );
    let started = Instant::now();
    phase(channel, "nfs", "fill", existing, 32, true).await?;
    println!(
        "removed the filler in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(met)
}
