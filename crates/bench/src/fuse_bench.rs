//! `cargo xtask bench fuse`: warpdrive-mount against the moto S3 server, beside the same reads
//! from local disk (the ceiling for warm reads), straight through object_store with no FUSE
//! (the ceiling for cold reads) and through `rclone mount --vfs-cache-mode full`.
//! Three workloads: 4 × 1 GiB files read sequentially (one reader each), 20,000 files of
//! 128 KiB read whole in shuffled order by 8 threads, and random 64 KiB reads in a 2 GiB file.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

const MIB: u64 = 1 << 20;
const BUCKET: &str = "bench";
const TARGET_WARM_VS_LOCAL: f64 = 0.6;
const TARGET_WARM_VS_RCLONE: f64 = 2.0;
const TARGET_COLD_VS_OBJECT_STORE: f64 = 0.8;
const TARGET_SMALL_VS_RCLONE: f64 = 1.5;
const TARGET_PEAK_RSS_MIB: f64 = 256.0;

/// What to generate and how to read it.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The warpdrive-mount binary.
    pub(crate) binary: PathBuf,
    /// Working directory (data, caches, mount points); reused data is kept between runs.
    pub(crate) dir: PathBuf,
    pub(crate) large_files: usize,
    pub(crate) large_size: u64,
    pub(crate) small_files: usize,
    pub(crate) small_size: u64,
    pub(crate) random_size: u64,
    pub(crate) random_reads: usize,
    /// Time limit of each random-read pass.
    pub(crate) random_cold_secs: u64,
    pub(crate) threads: usize,
    pub(crate) skip_rclone: bool,
}

/// One measurement: bytes moved in a time.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    bytes: u64,
    secs: f64,
}

impl Rate {
    fn mbps(self) -> f64 {
        if self.secs <= 0.0 {
            0.0
        } else {
            self.bytes as f64 / self.secs / 1e6
        }
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A FUSE mount served by a child process; unmounted (lazily) and killed on drop.
struct Mounted {
    child: Child,
    mnt: PathBuf,
}

impl Mounted {
    fn peak_rss_mib(&self) -> f64 {
        crate::csi_bench::peak_rss_mib(self.child.id()).unwrap_or(0.0)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        // SIGTERM first so warpdrive unmounts itself; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*want))
}

fn wait_mounted(mnt: &Path, child: &mut Child, what: &str) -> anyhow::Result<()> {
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

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
}

/// rclone from Debian's package, installed when missing and we are root.
fn rclone() -> anyhow::Result<PathBuf> {
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

fn generate(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut file = std::io::BufWriter::with_capacity(
        4 * MIB as usize,
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut chunk[..n]);
        std::io::Write::write_all(&mut file, &chunk[..n])?;
        left -= n as u64;
    }
    std::io::Write::flush(&mut file)?;
    Ok(())
}

#[derive(Debug, Clone)]
struct Data {
    large: Vec<String>,
    small: Vec<String>,
    random: String,
}

fn generate_all(opts: &Options, local: &Path) -> anyhow::Result<Data> {
    let large: Vec<String> = (0..opts.large_files)
        .map(|i| format!("seq/large{i}.bin"))
        .collect();
    let small: Vec<String> = (0..opts.small_files)
        .map(|i| format!("small/s{i:05}.bin"))
        .collect();
    let random = "rand/random.bin".to_owned();
    for (i, key) in large.iter().enumerate() {
        generate(&local.join(key), opts.large_size, 1000 + i as u64)?;
    }
    for (i, key) in small.iter().enumerate() {
        generate(&local.join(key), opts.small_size, 5000 + i as u64)?;
    }
    generate(&local.join(&random), opts.random_size, 99)?;
    Ok(Data {
        large,
        small,
        random,
    })
}

fn s3(port: u16) -> anyhow::Result<Arc<dyn ObjectStore>> {
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

async fn upload(store: &Arc<dyn ObjectStore>, local: &Path, data: &Data) -> anyhow::Result<()> {
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

/// Waits for reader threads and turns the bytes they read into a rate since `started`.
fn joined(
    handles: Vec<std::thread::JoinHandle<anyhow::Result<u64>>>,
    started: Instant,
) -> anyhow::Result<Rate> {
    let mut bytes = 0;
    for handle in handles {
        bytes += handle
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    }
    Ok(Rate {
        bytes,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Reads each file of `files` under `root` sequentially in 1 MiB reads, one thread per file.
fn read_sequential(root: &Path, files: &[String]) -> anyhow::Result<Rate> {
    let started = Instant::now();
    let handles: Vec<_> = files
        .iter()
        .map(|key| {
            let path = root.join(key);
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut file = std::fs::File::open(&path)
                    .with_context(|| format!("open {}", path.display()))?;
                let mut buf = vec![0u8; MIB as usize];
                let mut total = 0;
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        return Ok(total);
                    }
                    total += n as u64;
                }
            })
        })
        .collect();
    joined(handles, started)
}

/// Reads every file whole, in a shuffled order, with `threads` readers (a data loader).
fn read_small(root: &Path, files: &[String], threads: usize, seed: u64) -> anyhow::Result<Rate> {
    let mut order: Vec<PathBuf> = files.iter().map(|k| root.join(k)).collect();
    fastrand::Rng::with_seed(seed).shuffle(&mut order);
    let order = Arc::new(order);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (order, next) = (order.clone(), next.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut total = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = order.get(i) else {
                        return Ok(total);
                    };
                    total += std::fs::read(path)
                        .with_context(|| format!("read {}", path.display()))?
                        .len() as u64;
                }
            })
        })
        .collect();
    joined(handles, started)
}

/// Random 64 KiB preads by `threads` readers, each from its own seeded sequence: `reads` in
/// all, or per thread exactly `replay[t]` (to read again what an earlier pass read), stopping
/// early at `limit` (a cold random read is a ranged GET, and moto reads the whole object for
/// each). Returns the rate and how many reads each thread did.
fn read_random(
    path: &Path,
    size: u64,
    reads: usize,
    threads: usize,
    replay: Option<&[usize]>,
    limit: Duration,
) -> anyhow::Result<(Rate, Vec<usize>)> {
    let file =
        Arc::new(std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let file = file.clone();
            let count = replay.map_or(reads / threads, |r| r.get(t).copied().unwrap_or(0));
            std::thread::spawn(move || -> anyhow::Result<(u64, usize)> {
                let started = Instant::now();
                let mut rng = fastrand::Rng::with_seed(11 + t as u64);
                let mut buf = vec![0u8; 65536];
                let mut done = 0;
                while done < count && started.elapsed() <= limit {
                    let offset = rng.u64(0..(size - 65536) / 4096) * 4096;
                    file.read_exact_at(&mut buf, offset)?;
                    done += 1;
                }
                Ok((done as u64 * 65536, done))
            })
        })
        .collect();
    let mut bytes = 0;
    let mut counts = Vec::new();
    for handle in handles {
        let (b, n) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        bytes += b;
        counts.push(n);
    }
    let rate = Rate {
        bytes,
        secs: started.elapsed().as_secs_f64(),
    };
    Ok((rate, counts))
}

/// Drops `files` from the page cache, so the data sets of one contender do not crowd out the
/// next one's on a machine whose RAM holds only a few copies of them.
fn evict_from_page_cache(root: &Path, files: &[String]) {
    for key in files {
        if let Ok(file) = std::fs::File::open(root.join(key)) {
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

/// The best object_store does with no FUSE: one whole-object GET per file, all files at once.
/// (4 MiB ranged GETs are no ceiling on moto: it reads the whole object for every range, so
/// they run at a fraction of this.)
async fn object_store_sequential(
    store: &Arc<dyn ObjectStore>,
    files: &[String],
) -> anyhow::Result<Rate> {
    let started = Instant::now();
    let streams = futures_util::future::try_join_all(files.iter().map(|key| {
        let store = store.clone();
        async move {
            let mut stream = store
                .get(&StorePath::from(key.as_str()))
                .await?
                .into_stream();
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                total += chunk?.len() as u64;
            }
            anyhow::Ok(total)
        }
    }))
    .await?;
    Ok(Rate {
        bytes: streams.iter().sum(),
        secs: started.elapsed().as_secs_f64(),
    })
}

async fn object_store_small(
    store: &Arc<dyn ObjectStore>,
    files: &[String],
    threads: usize,
) -> anyhow::Result<Rate> {
    let mut order = files.to_vec();
    fastrand::Rng::with_seed(7).shuffle(&mut order);
    let started = Instant::now();
    let sizes: Vec<u64> = futures_util::stream::iter(order)
        .map(|key| {
            let store = store.clone();
            async move {
                let got = store.get(&StorePath::from(key.as_str())).await?;
                anyhow::Ok(got.bytes().await?.len() as u64)
            }
        })
        .buffer_unordered(threads)
        .try_collect()
        .await?;
    Ok(Rate {
        bytes: sizes.iter().sum(),
        secs: started.elapsed().as_secs_f64(),
    })
}

fn start_warpdrive(opts: &Options, port: u16, name: &str) -> anyhow::Result<Mounted> {
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

fn start_rclone(opts: &Options, port: u16) -> anyhow::Result<Mounted> {
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

/// What one FUSE contender did in every case.
#[derive(Debug, Default, Clone, Copy)]
struct Runs {
    seq_cold: Rate,
    seq_warm: Rate,
    small_cold: Rate,
    small_warm: Rate,
    random_cold: Rate,
    random_warm: Rate,
}

/// The median of five passes (warm passes from the page cache take a tenth of a second, so
/// one alone is noisy).
fn median5(mut pass: impl FnMut() -> anyhow::Result<Rate>) -> anyhow::Result<Rate> {
    let mut rates = [pass()?, pass()?, pass()?, pass()?, pass()?];
    rates.sort_by(|a, b| a.mbps().total_cmp(&b.mbps()));
    Ok(rates[2])
}

/// Every case on one tree: each cold pass first, then the same reads again (warm).
/// Every case through one mounted contender, on a blocking thread.
async fn measure(
    mount: &Mounted,
    opts: &Options,
    data: &Data,
    who: &'static str,
    daemon: &'static str,
    moto_pid: u32,
) -> anyhow::Result<Runs> {
    let (root, opts, data) = (mount.mnt.clone(), opts.clone(), data.clone());
    let pid = mount.child.id();
    tokio::task::spawn_blocking(move || {
        run_fuse(
            &root,
            &opts,
            &data,
            who,
            &[(daemon, pid), ("moto", moto_pid)],
        )
    })
    .await?
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Every case on one tree; `daemons` (name, pid) get their CPU time for the cold sequential
/// pass printed, which shows where a 2-core machine's time goes.
fn run_fuse(
    root: &Path,
    opts: &Options,
    data: &Data,
    who: &str,
    daemons: &[(&str, u32)],
) -> anyhow::Result<Runs> {
    let mut runs = Runs::default();
    let step = |what: &str, rate: Rate| {
        println!(
            "  {who:<10} {what:<22} {:>9} MB/s  ({:.1} s)",
            mbps(rate),
            rate.secs
        );
        rate
    };
    let before: Vec<f64> = daemons.iter().map(|(_, pid)| cpu_secs(*pid)).collect();
    runs.seq_cold = step("sequential cold", read_sequential(root, &data.large)?);
    if !daemons.is_empty() {
        let used: Vec<String> = daemons
            .iter()
            .zip(before)
            .map(|((name, pid), b)| format!("{name} {:.1} CPU-s", cpu_secs(*pid) - b))
            .collect();
        println!(
            "  {who:<10} (during that pass: {} over {:.1} s on {} cores)",
            used.join(", "),
            runs.seq_cold.secs,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    runs.seq_warm = step(
        "sequential warm",
        median5(|| read_sequential(root, &data.large))?,
    );
    runs.small_cold = step(
        "small files cold",
        read_small(root, &data.small, opts.threads, 1)?,
    );
    runs.small_warm = step(
        "small files warm",
        median5(|| read_small(root, &data.small, opts.threads, 2))?,
    );
    let random = root.join(&data.random);
    let limit = Duration::from_secs(opts.random_cold_secs);
    let (rate, counts) = read_random(
        &random,
        opts.random_size,
        opts.random_reads,
        opts.threads,
        None,
        limit,
    )?;
    runs.random_cold = step("random 64 KiB cold", rate);
    // Exactly the reads the cold pass did, again: what it cached.
    let (rate, _) = read_random(
        &random,
        opts.random_size,
        opts.random_reads,
        opts.threads,
        Some(&counts),
        Duration::from_secs(3600),
    )?;
    runs.random_warm = step("random 64 KiB warm", rate);
    Ok(runs)
}

/// MB/s with two decimals for the slow cases, one otherwise.
fn mbps(rate: Rate) -> String {
    let v = rate.mbps();
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn ratio(a: Rate, b: Rate) -> f64 {
    if b.mbps() == 0.0 {
        0.0
    } else {
        a.mbps() / b.mbps()
    }
}

/// Runs the whole benchmark; `Ok(false)` when a target was missed.
pub(crate) async fn run(mut opts: Options) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&opts.dir)?;
    opts.dir = opts.dir.canonicalize()?; // mount points and cache paths must be absolute
    ensure!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: this benchmark mounts FUSE filesystems (run as root)"
    );
    let moto = find("moto_server").context(
        "moto_server is missing: `pip install 'moto[server]'` (cargo xtask test installs it)",
    )?;
    std::fs::create_dir_all(&opts.dir)?;
    let local = opts.dir.join("local");
    println!(
        "generating data in {} ({} × {} MiB, {} × {} KiB, {} MiB)…",
        local.display(),
        opts.large_files,
        opts.large_size / MIB,
        opts.small_files,
        opts.small_size / 1024,
        opts.random_size / MIB
    );
    // Old caches go first; then the disk must hold moto's copy and one cache beside the data.
    for cache in ["cache-warpdrive", "cache-rclone"] {
        let _ = std::fs::remove_dir_all(opts.dir.join(cache));
    }
    let total = opts.large_files as u64 * opts.large_size
        + opts.small_files as u64 * opts.small_size
        + opts.random_size;
    let kept = if local.exists() { total } else { 0 };
    if let Ok(fs) = rustix::fs::statvfs(&opts.dir) {
        let free = fs.f_bavail * fs.f_frsize;
        ensure!(
            free + kept >= 3 * total + total / 10,
            "{} has {:.1} GiB free; this run needs about {:.1} GiB (the data, moto's copy of it \
             and one cache at a time): free some space or pass smaller sizes (see --help)",
            opts.dir.display(),
            free as f64 / (1u64 << 30) as f64,
            (3 * total - kept) as f64 / (1u64 << 30) as f64
        );
    }
    let data = {
        let (opts, local) = (opts.clone(), local.clone());
        tokio::task::spawn_blocking(move || generate_all(&opts, &local)).await??
    };

    let port = free_port()?;
    let moto_dir = opts.dir.join("moto");
    std::fs::create_dir_all(&moto_dir)?;
    let moto = Proc(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&moto_dir)
            .env("TMPDIR", &moto_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start moto_server")?,
    );
    wait_port(port, "moto_server")?;
    let moto_pid = moto.0.id();
    let store = s3(port)?;
    create_bucket(port).await.context("create the bucket")?;
    let started = Instant::now();
    upload(&store, &local, &data).await?;
    println!(
        "uploaded to moto on 127.0.0.1:{port} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The local cold pass reads from the device, the warm passes from the page cache.
    for files in [&data.large, &data.small, &vec![data.random.clone()]] {
        evict_from_page_cache(&local, files);
    }
    println!("baselines:");
    let local_runs = {
        let (opts, local) = (opts.clone(), local.clone());
        let data2 = data.clone();
        tokio::task::spawn_blocking(move || run_fuse(&local, &opts, &data2, "local disk", &[]))
            .await??
    };
    for files in [&data.large, &data.small, &vec![data.random.clone()]] {
        evict_from_page_cache(&local, files);
    }
    crate::cache_bench::drop_caches();
    let (moto_before, own_before) = (cpu_secs(moto_pid), cpu_secs(std::process::id()));
    let os_seq = object_store_sequential(&store, &data.large).await?;
    println!(
        "  object_store sequential, one GET per file {:>9.1} MB/s  (moto {:.1} CPU-s, reader {:.1} CPU-s over {:.1} s)",
        os_seq.mbps(),
        cpu_secs(moto_pid) - moto_before,
        cpu_secs(std::process::id()) - own_before,
        os_seq.secs
    );
    let os_small = object_store_small(&store, &data.small, opts.threads).await?;
    println!(
        "  object_store small files ({} GETs in flight) {:>9.1} MB/s",
        opts.threads,
        os_small.mbps()
    );

    // Each contender starts from the same state: clean kernel caches dropped (as root).
    let dropped = crate::cache_bench::drop_caches();
    println!(
        "warpdrive-mount:{} with readahead.parallel_gets: 1, since moto reads the whole object \
         for every ranged GET (readahead otherwise at its defaults)",
        if dropped {
            " (kernel caches dropped first)"
        } else {
            ""
        }
    );
    let _ = std::fs::remove_dir_all(opts.dir.join("cache-warpdrive"));
    let (wd, rss_first) = {
        let mount = start_warpdrive(&opts, port, "warpdrive")?;
        let runs = measure(
            &mount,
            &opts,
            &data,
            "warpdrive",
            "warpdrive-mount",
            moto_pid,
        )
        .await?;
        (runs, mount.peak_rss_mib())
    };
    // A new process over the same cache: warm reads from the block cache, not the page cache.
    let (restart_seq, restart_small, rss_second) = {
        let mount = start_warpdrive(&opts, port, "warpdrive")?;
        let (root, o, large, small) = (
            mount.mnt.clone(),
            opts.clone(),
            data.large.clone(),
            data.small.clone(),
        );
        let (seq, small) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Rate, Rate)> {
            Ok((
                read_sequential(&root, &large)?,
                read_small(&root, &small, o.threads, 3)?,
            ))
        })
        .await??;
        println!(
            "  warpdrive  after restart: sequential {:.1} MB/s, small files {:.1} MB/s (block cache only)",
            seq.mbps(),
            small.mbps()
        );
        (seq, small, mount.peak_rss_mib())
    };
    let rss = rss_first.max(rss_second);
    // Its blocks are not needed any more: free the disk for rclone's cache.
    let _ = std::fs::remove_dir_all(opts.dir.join("cache-warpdrive"));

    let rc = if opts.skip_rclone {
        None
    } else {
        let dropped = crate::cache_bench::drop_caches();
        println!(
            "rclone mount --vfs-cache-mode full:{}",
            if dropped {
                " (kernel caches dropped first)"
            } else {
                ""
            }
        );
        let mount = start_rclone(&opts, port)?;
        let runs = measure(&mount, &opts, &data, "rclone", "rclone", moto_pid).await?;
        drop(mount);
        let _ = std::fs::remove_dir_all(opts.dir.join("cache-rclone"));
        Some(runs)
    };

    // The table.
    println!();
    println!(
        "| case | local MB/s (cold: device, warm: page cache) | object_store MB/s | warpdrive MB/s | rclone MB/s | warpdrive / ceiling | warpdrive / rclone |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rcv = |f: fn(&Runs) -> Rate| rc.as_ref().map(f).unwrap_or_default();
    let row = |case: &str,
               local: Option<Rate>,
               os: Option<Rate>,
               w: Rate,
               r: Rate,
               ceiling: Option<Rate>| {
        let cell = |x: Option<Rate>| x.map_or("-".to_owned(), mbps);
        println!(
            "| {case} | {} | {} | {} | {} | {} | {} |",
            cell(local),
            cell(os),
            mbps(w),
            if r.secs > 0.0 { mbps(r) } else { "-".into() },
            ceiling.map_or("-".to_owned(), |c| format!("{:.2}", ratio(w, c))),
            if r.secs > 0.0 {
                format!("{:.2}", ratio(w, r))
            } else {
                "-".into()
            },
        );
    };
    row(
        "sequential 4 × 1 GiB, cold",
        None,
        Some(os_seq),
        wd.seq_cold,
        rcv(|r| r.seq_cold),
        Some(os_seq),
    );
    row(
        "sequential, warm (same mount)",
        Some(local_runs.seq_warm),
        None,
        wd.seq_warm,
        rcv(|r| r.seq_warm),
        Some(local_runs.seq_warm),
    );
    row(
        "sequential, warm after restart",
        Some(local_runs.seq_cold),
        None,
        restart_seq,
        Rate::default(),
        Some(local_runs.seq_cold),
    );
    row(
        "small files, cold",
        None,
        Some(os_small),
        wd.small_cold,
        rcv(|r| r.small_cold),
        Some(os_small),
    );
    row(
        "small files, warm (same mount)",
        Some(local_runs.small_warm),
        None,
        wd.small_warm,
        rcv(|r| r.small_warm),
        Some(local_runs.small_warm),
    );
    row(
        "small files, warm after restart",
        Some(local_runs.small_cold),
        None,
        restart_small,
        Rate::default(),
        Some(local_runs.small_cold),
    );
    row(
        "random 64 KiB, cold",
        None,
        None,
        wd.random_cold,
        rcv(|r| r.random_cold),
        None,
    );
    row(
        "random 64 KiB, warm",
        Some(local_runs.random_warm),
        None,
        wd.random_warm,
        rcv(|r| r.random_warm),
        Some(local_runs.random_warm),
    );
    println!();
    println!(
        "warpdrive-mount peak RSS (VmHWM, largest of both runs): {rss:.1} MiB (target <= {TARGET_PEAK_RSS_MIB} MiB)"
    );

    let mut ok = true;
    let mut check = |what: &str, value: f64, target: f64| {
        let pass = value >= target;
        ok &= pass;
        println!(
            "target {what}: {value:.2} (>= {target}) {}",
            if pass { "met" } else { "MISSED" }
        );
    };
    check(
        "warm sequential / local (page cache)",
        ratio(wd.seq_warm, local_runs.seq_warm),
        TARGET_WARM_VS_LOCAL,
    );
    check(
        "cold sequential / object_store",
        ratio(wd.seq_cold, os_seq),
        TARGET_COLD_VS_OBJECT_STORE,
    );
    if let Some(r) = &rc {
        check(
            "warm sequential / rclone",
            ratio(wd.seq_warm, r.seq_warm),
            TARGET_WARM_VS_RCLONE,
        );
        check(
            "small files cold / rclone",
            ratio(wd.small_cold, r.small_cold),
            TARGET_SMALL_VS_RCLONE,
        );
        check(
            "small files warm / rclone",
            ratio(wd.small_warm, r.small_warm),
            TARGET_SMALL_VS_RCLONE,
        );
    }
    let rss_ok = rss > 0.0 && rss <= TARGET_PEAK_RSS_MIB;
    ok &= rss_ok;
    println!(
        "target peak RSS: {rss:.1} MiB (<= {TARGET_PEAK_RSS_MIB}) {}",
        if rss_ok { "met" } else { "MISSED" }
    );
    Ok(ok)
}

/// moto accepts an unsigned CreateBucket; object_store has no bucket API.
async fn create_bucket(port: u16) -> anyhow::Result<()> {
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
