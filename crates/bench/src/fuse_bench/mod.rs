//! `cargo xtask bench fuse`: warpdrive-mount against the moto S3 server, beside the same reads
//! from local disk (the ceiling for warm reads), straight through object_store with no FUSE
//! (the ceiling for cold reads) and through `rclone mount --vfs-cache-mode full`.
//! Three workloads: 4 × 1 GiB files read sequentially (one reader each), 20,000 files of
//! 128 KiB read whole in shuffled order by 8 threads, and random 64 KiB reads in a 2 GiB file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

mod contenders;
mod workloads;

use contenders::*;
use workloads::*;

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
