//! `cargo xtask bench fuse`: warpdrive-mount against a fast S3 server of our own (`bench
//! s3-server`, on the `s3s` library, serving the generated files with 1 MiB reads), beside the
//! same reads from local disk (the ceiling for warm reads), straight through object_store with
//! no FUSE (the ceiling for cold reads), s3fs-fuse and `rclone mount --vfs-cache-mode full`.
//! Workloads: 4 × 1 GiB files read sequentially (one reader each), 20,000 files of 128 KiB
//! read whole in shuffled order by 8 threads, random 64 KiB reads in a 2 GiB file, and `ls -l`
//! of directories of 10^4 to 10^6 entries. Every contender's and the server's CPU time per GiB
//! is printed for the cold sequential pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::ensure;

mod contenders;
mod listing;
mod workloads;

use contenders::*;
use workloads::*;

const MIB: u64 = 1 << 20;
const BUCKET: &str = "bench";
const TARGET_COLD_VS_S3FS: f64 = 1.0;
const TARGET_COLD_VS_DIRECT_GET: f64 = 0.5;
const TARGET_RESTART_VS_S3FS: f64 = 1.5;
const TARGET_RESTART_VS_CACHE_FILE: f64 = 0.8;
const TARGET_SMALL_COLD_VS_S3FS: f64 = 2.0;
const TARGET_RANDOM_COLD_VS_S3FS: f64 = 1.0;
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
    pub(crate) skip_s3fs: bool,
    /// Directory sizes for the `ls -l` case (empty: skipped).
    pub(crate) listing: Vec<usize>,
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

pub(super) struct Proc(Child);

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
    /// Where the bucket's files appear under the mount.
    root: PathBuf,
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
    server_pid: u32,
) -> anyhow::Result<Runs> {
    let (root, opts, data) = (mount.root.clone(), opts.clone(), data.clone());
    let pid = mount.child.id();
    tokio::task::spawn_blocking(move || {
        run_fuse(
            &root,
            &opts,
            &data,
            who,
            &[(daemon, pid), ("s3 server", server_pid)],
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
        let gib = runs.seq_cold.bytes as f64 / (1u64 << 30) as f64;
        let used: Vec<String> = daemons
            .iter()
            .zip(before)
            .map(|((name, pid), b)| {
                let cpu = cpu_secs(*pid) - b;
                format!(
                    "{name} {cpu:.1} CPU-s = {:.2} CPU-s/GiB",
                    cpu / gib.max(1e-9)
                )
            })
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

/// IOPS of a random-read rate (64 KiB reads).
fn iops(rate: Rate) -> f64 {
    if rate.secs <= 0.0 {
        0.0
    } else {
        rate.bytes as f64 / 65536.0 / rate.secs
    }
}

/// Reads the cache's data files of the large objects straight from the cache disk (the kernel
/// caches dropped first): what a restart with passthrough can at best reach.
fn read_cache_files(cache: &Path, size: u64) -> anyhow::Result<Rate> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(cache)?.flatten() {
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(shard.path())?.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "data")
                && file.metadata().is_ok_and(|m| m.len() == size)
            {
                files.push(path.to_string_lossy().into_owned());
            }
        }
    }
    ensure!(
        !files.is_empty(),
        "no whole cached file of {size} bytes in {}",
        cache.display()
    );
    crate::cache_bench::drop_caches();
    read_sequential(Path::new("/"), &files)
}

/// Runs the whole benchmark; `Ok(false)` when a target was missed.
pub(crate) async fn run(mut opts: Options) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&opts.dir)?;
    opts.dir = opts.dir.canonicalize()?; // mount points and cache paths must be absolute
    ensure!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: this benchmark mounts FUSE filesystems (run as root)"
    );
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
    // Old caches go first; then the disk must hold the data and one cache beside it.
    for cache in ["cache-warpdrive", "cache-rclone", "cache-s3fs"] {
        let _ = std::fs::remove_dir_all(opts.dir.join(cache));
    }
    let total = opts.large_files as u64 * opts.large_size
        + opts.small_files as u64 * opts.small_size
        + opts.random_size;
    let kept = if local.exists() { total } else { 0 };
    if let Ok(fs) = rustix::fs::statvfs(&opts.dir) {
        let free = fs.f_bavail * fs.f_frsize;
        ensure!(
            free + kept >= 2 * total + total / 10,
            "{} has {:.1} GiB free; this run needs about {:.1} GiB (the data and one cache at \
             a time): free some space or pass smaller sizes (see --help)",
            opts.dir.display(),
            free as f64 / (1u64 << 30) as f64,
            (2 * total - kept) as f64 / (1u64 << 30) as f64
        );
    }
    let data = {
        let (opts, local) = (opts.clone(), local.clone());
        tokio::task::spawn_blocking(move || generate_all(&opts, &local)).await??
    };
    {
        let (sizes, local) = (opts.listing.clone(), local.clone());
        tokio::task::spawn_blocking(move || listing::generate(&local, &sizes)).await??;
    }

    let port = free_port()?;
    let server = start_server(&local, port)?;
    let server_pid = server.0.id();
    let store = s3(port)?;
    println!(
        "S3 server (bench s3-server) on 127.0.0.1:{port}, serving {}",
        local.display()
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
    let (server_before, own_before) = (cpu_secs(server_pid), cpu_secs(std::process::id()));
    let direct = object_store_sequential(&store, &data.large[..1]).await?;
    let gib = direct.bytes as f64 / (1u64 << 30) as f64;
    println!(
        "  direct GET, one stream (object_store, no FUSE) {:>9.1} MB/s  (server {:.2} CPU-s/GiB, reader {:.2} CPU-s/GiB)",
        direct.mbps(),
        (cpu_secs(server_pid) - server_before) / gib.max(1e-9),
        (cpu_secs(std::process::id()) - own_before) / gib.max(1e-9),
    );
    evict_from_page_cache(&local, &data.large);
    let os_seq = object_store_sequential(&store, &data.large).await?;
    println!(
        "  direct GET, {} streams at once            {:>9.1} MB/s",
        data.large.len(),
        os_seq.mbps()
    );
    let os_small = object_store_small(&store, &data.small, opts.threads).await?;
    println!(
        "  direct GET, small files ({} in flight)     {:>9.1} MB/s",
        opts.threads,
        os_small.mbps()
    );

    // Each contender starts from the same state: clean kernel caches dropped (as root).
    let evict_all = |local: &Path| {
        for files in [&data.large, &data.small, &vec![data.random.clone()]] {
            evict_from_page_cache(local, files);
        }
        crate::cache_bench::drop_caches()
    };
    let dropped = evict_all(&local);
    println!(
        "warpdrive-mount (readahead and passthrough at their defaults){}:",
        if dropped {
            ", kernel caches dropped first"
        } else {
            ""
        }
    );
    let _ = std::fs::remove_dir_all(opts.dir.join("cache-warpdrive"));
    let (wd, rss_first) = {
        let mount = start_warpdrive(&opts, port, "warpdrive")?;
        let runs = measure(&mount, &opts, &data, "warpdrive", "warpdrive", server_pid).await?;
        (runs, mount.peak_rss_mib())
    };
    // A new process over the same cache: reads from the cache disk, not the page cache.
    evict_all(&local);
    let (restart_seq, restart_small, rss_second) = {
        let mount = start_warpdrive(&opts, port, "warpdrive")?;
        let (root, o, large, small) = (
            mount.root.clone(),
            opts.clone(),
            data.large.clone(),
            data.small.clone(),
        );
        let (seq, small) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Rate, Rate)> {
            crate::cache_bench::drop_caches();
            Ok((
                read_sequential(&root, &large)?,
                read_small(&root, &small, o.threads, 3)?,
            ))
        })
        .await??;
        println!(
            "  warpdrive  after restart: sequential {:.1} MB/s, small files {:.1} MB/s (cache disk only)",
            seq.mbps(),
            small.mbps()
        );
        (seq, small, mount.peak_rss_mib())
    };
    let cache_file = {
        let (cache, size) = (opts.dir.join("cache-warpdrive"), opts.large_size);
        tokio::task::spawn_blocking(move || read_cache_files(&cache, size)).await??
    };
    println!(
        "  the cache's own files read straight from disk: {:.1} MB/s",
        cache_file.mbps()
    );
    let mut rss = rss_first.max(rss_second);
    let rss_reads = rss;
    // Its cache is not needed any more: free the disk for the next contender's.
    let _ = std::fs::remove_dir_all(opts.dir.join("cache-warpdrive"));

    let s3fs = if opts.skip_s3fs {
        None
    } else {
        let dropped = evict_all(&local);
        println!(
            "s3fs-fuse (use_cache on the same disk){}:",
            if dropped {
                ", kernel caches dropped first"
            } else {
                ""
            }
        );
        let runs = {
            let mount = start_s3fs(&opts, port, true)?;
            measure(&mount, &opts, &data, "s3fs", "s3fs", server_pid).await?
        };
        evict_all(&local);
        let restart = {
            let mount = start_s3fs(&opts, port, false)?;
            let (root, large) = (mount.root.clone(), data.large.clone());
            let seq = tokio::task::spawn_blocking(move || {
                crate::cache_bench::drop_caches();
                read_sequential(&root, &large)
            })
            .await??;
            println!(
                "  s3fs       after restart: sequential {:.1} MB/s",
                seq.mbps()
            );
            seq
        };
        let _ = std::fs::remove_dir_all(opts.dir.join("cache-s3fs"));
        Some((runs, restart))
    };

    let rc = if opts.skip_rclone {
        None
    } else {
        let dropped = evict_all(&local);
        println!(
            "rclone mount --vfs-cache-mode full{}:",
            if dropped {
                ", kernel caches dropped first"
            } else {
                ""
            }
        );
        let mount = start_rclone(&opts, port)?;
        let runs = measure(&mount, &opts, &data, "rclone", "rclone", server_pid).await?;
        drop(mount);
        let _ = std::fs::remove_dir_all(opts.dir.join("cache-rclone"));
        Some(runs)
    };

    let listings = if opts.listing.is_empty() {
        Vec::new()
    } else {
        println!("ls -l of large directories (a new warpdrive-mount per size):");
        listing::run(&opts, port).await?
    };
    for row in &listings {
        rss = rss.max(row.peak_rss_mib);
    }
    drop(server);

    // The table.
    println!();
    println!(
        "| case | local disk | direct GET | warpdrive | s3fs | rclone | warpdrive / ceiling | warpdrive / s3fs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let s3v = |f: fn(&Runs) -> Rate| s3fs.as_ref().map(|(r, _)| f(r)).unwrap_or_default();
    let rcv = |f: fn(&Runs) -> Rate| rc.as_ref().map(f).unwrap_or_default();
    let row = |case: &str,
               local: Option<Rate>,
               os: Option<Rate>,
               w: Rate,
               s: Rate,
               r: Rate,
               ceiling: Option<Rate>| {
        let cell = |x: Option<Rate>| x.map_or("-".to_owned(), mbps);
        let peer = |x: Rate| if x.secs > 0.0 { mbps(x) } else { "-".into() };
        println!(
            "| {case} | {} | {} | {} | {} | {} | {} | {} |",
            cell(local),
            cell(os),
            mbps(w),
            peer(s),
            peer(r),
            ceiling.map_or("-".to_owned(), |c| format!("{:.2}", ratio(w, c))),
            if s.secs > 0.0 {
                format!("{:.2}", ratio(w, s))
            } else {
                "-".into()
            },
        );
    };
    row(
        "sequential 4 × 1 GiB, cold (MB/s)",
        None,
        Some(os_seq),
        wd.seq_cold,
        s3v(|r| r.seq_cold),
        rcv(|r| r.seq_cold),
        Some(direct),
    );
    row(
        "sequential, warm (same mount)",
        Some(local_runs.seq_warm),
        None,
        wd.seq_warm,
        s3v(|r| r.seq_warm),
        rcv(|r| r.seq_warm),
        Some(local_runs.seq_warm),
    );
    row(
        "sequential, after a restart",
        Some(cache_file),
        None,
        restart_seq,
        s3fs.as_ref().map(|(_, r)| *r).unwrap_or_default(),
        Rate::default(),
        Some(cache_file),
    );
    row(
        "small files, cold",
        None,
        Some(os_small),
        wd.small_cold,
        s3v(|r| r.small_cold),
        rcv(|r| r.small_cold),
        Some(os_small),
    );
    row(
        "small files, warm (same mount)",
        Some(local_runs.small_warm),
        None,
        wd.small_warm,
        s3v(|r| r.small_warm),
        rcv(|r| r.small_warm),
        Some(local_runs.small_warm),
    );
    row(
        "small files, after a restart",
        Some(local_runs.small_cold),
        None,
        restart_small,
        Rate::default(),
        Rate::default(),
        Some(local_runs.small_cold),
    );
    row(
        "random 64 KiB, cold",
        None,
        None,
        wd.random_cold,
        s3v(|r| r.random_cold),
        rcv(|r| r.random_cold),
        None,
    );
    row(
        "random 64 KiB, warm",
        Some(local_runs.random_warm),
        None,
        wd.random_warm,
        s3v(|r| r.random_warm),
        rcv(|r| r.random_warm),
        Some(local_runs.random_warm),
    );
    println!(
        "(the after-a-restart ceiling is the cache's own files read from disk; random cold: warpdrive {:.0} IOPS{})",
        iops(wd.random_cold),
        s3fs.as_ref()
            .map(|(r, _)| format!(", s3fs {:.0} IOPS", iops(r.random_cold)))
            .unwrap_or_default()
    );
    listing::table(&listings);
    println!();
    println!(
        "warpdrive-mount peak RSS (VmHWM, largest of all its runs): {rss:.1} MiB (target <= {TARGET_PEAK_RSS_MIB} MiB); {rss_reads:.1} MiB in the read cases, the rest in the ls -l case"
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
        "cold sequential / direct GET (one stream)",
        ratio(wd.seq_cold, direct),
        TARGET_COLD_VS_DIRECT_GET,
    );
    check(
        "sequential after a restart / the cache's files from disk",
        ratio(restart_seq, cache_file),
        TARGET_RESTART_VS_CACHE_FILE,
    );
    if let Some((s, s_restart)) = &s3fs {
        check(
            "cold sequential / s3fs",
            ratio(wd.seq_cold, s.seq_cold),
            TARGET_COLD_VS_S3FS,
        );
        check(
            "sequential after a restart / s3fs",
            ratio(restart_seq, *s_restart),
            TARGET_RESTART_VS_S3FS,
        );
        check(
            "small files cold / s3fs",
            ratio(wd.small_cold, s.small_cold),
            TARGET_SMALL_COLD_VS_S3FS,
        );
        check(
            "random 64 KiB cold IOPS / s3fs",
            iops(wd.random_cold) / iops(s.random_cold).max(1e-9),
            TARGET_RANDOM_COLD_VS_S3FS,
        );
    }
    ok &= listing::check(&listings);
    let rss_ok = rss > 0.0 && rss <= TARGET_PEAK_RSS_MIB;
    ok &= rss_ok;
    println!(
        "target peak RSS: {rss:.1} MiB (<= {TARGET_PEAK_RSS_MIB}) {}",
        if rss_ok { "met" } else { "MISSED" }
    );
    Ok(ok)
}
