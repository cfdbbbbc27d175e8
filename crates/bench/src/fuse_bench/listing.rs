//! The `ls -l` case: directories of 10^4 to 10^6 empty objects, listed through warpdrive (its
//! local backend, and the S3 server on a daemon of its own) beside `ls -l` of the same
//! directory on local disk, cold (kernel caches dropped, a new daemon) and warm; with the
//! daemon's RSS before and while it holds the listing, and the time a fresh daemon takes to
//! hand out a directory's first entry (a directory stream need not wait for the listing's
//! last page).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::ensure;

use super::*;

/// `ls -l` through warpdrive within this factor of local disk, cold and warm.
const TARGET_VS_LOCAL: f64 = 3.0;
/// Time per entry at the largest size within this factor of the smallest's ("flat").
const TARGET_FLAT: f64 = 2.0;
/// Daemon RSS per listed entry while it holds the listing.
const TARGET_BYTES_PER_ENTRY: f64 = 200.0;

/// One directory size's figures (seconds; RSS in KiB).
#[derive(Debug, Clone, Default)]
pub(super) struct Listing {
    entries: usize,
    local_cold: f64,
    local_warm: f64,
    wd_cold: f64,
    wd_warm: f64,
    /// `ls -l` over S3, cold and warm (seconds).
    s3: (f64, f64),
    /// Seconds to the first entry: local disk, then a fresh daemon's local backend and S3.
    first_entry: (f64, f64, f64),
    rss_idle_kib: f64,
    rss_held_kib: f64,
    pub(super) peak_rss_mib: f64,
}

fn dir_name(entries: usize) -> String {
    format!("list-{entries}")
}

/// Creates `local/list-N` with N empty files for each size, once (a marker beside it says the
/// directory is whole).
pub(super) fn generate(local: &Path, sizes: &[usize]) -> anyhow::Result<()> {
    for &n in sizes {
        let marker = local.join(format!(".{}.done", dir_name(n)));
        if marker.exists() {
            continue;
        }
        let started = Instant::now();
        let dir = local.join(dir_name(n));
        std::fs::create_dir_all(&dir)?;
        for i in 0..n {
            let path = dir.join(format!("f{i:07}"));
            if !path.exists() {
                std::fs::File::create(&path)?;
            }
        }
        std::fs::write(&marker, b"")?;
        println!(
            "  made {} with {n} entries in {:.1} s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Seconds `ls -l` of `dir` takes, its output thrown away; it must list `entries` names.
fn ls_l(dir: &Path, entries: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("ls")
        .args(["-l", "--color=never"])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(out.status.success(), "ls -l {} failed", dir.display());
    // One line per entry and a "total" line.
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    ensure!(
        lines == entries + 1,
        "ls -l {} showed {} entries, not {entries}",
        dir.display(),
        lines.saturating_sub(1)
    );
    Ok(secs)
}

/// Seconds until the first entry of `dir` is read (Python's `os.scandir`, one `getdents`
/// of 32 KiB; `find` and `ls` read a whole directory before they show anything).
fn first_entry(dir: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(next(os.scandir(sys.argv[1])).name)",
        ])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success() && !out.stdout.is_empty(),
        "reading the first entry of {} failed",
        dir.display()
    );
    Ok(secs)
}

/// A fresh daemon's time to the first entry of `name` under each of `backends`.
fn first_entries(opts: &Options, port: u16, name: &str) -> anyhow::Result<(f64, f64, f64)> {
    crate::cache_bench::drop_caches();
    let disk = first_entry(&opts.dir.join("local").join(name))?;
    crate::cache_bench::drop_caches();
    let mount = start_warpdrive(opts, port, "listing")?;
    std::thread::sleep(Duration::from_millis(500));
    let local = first_entry(&mount.mnt.join("disk").join(name))?;
    let s3 = first_entry(&mount.mnt.join("s3").join(name))?;
    Ok((disk, local, s3))
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Every size: local disk, then a new warpdrive-mount.
pub(super) async fn run(opts: &Options, port: u16) -> anyhow::Result<Vec<Listing>> {
    let mut rows = Vec::new();
    for &n in &opts.listing {
        let (opts, name) = (opts.clone(), dir_name(n));
        let row = tokio::task::spawn_blocking(move || -> anyhow::Result<Listing> {
            let local = opts.dir.join("local").join(&name);
            crate::cache_bench::drop_caches();
            let local_cold = ls_l(&local, n)?;
            let local_warm = ls_l(&local, n)?;
            crate::cache_bench::drop_caches();
            let mount = start_warpdrive(&opts, port, "listing")?;
            std::thread::sleep(Duration::from_millis(500));
            let pid = mount.child.id();
            let rss_idle_kib = rss_kib(pid);
            let wd_cold = ls_l(&mount.mnt.join("disk").join(&name), n)?;
            let rss_held_kib = rss_kib(pid);
            let wd_warm = ls_l(&mount.mnt.join("disk").join(&name), n)?;
            let local_peak = mount.peak_rss_mib();
            drop(mount);
            // S3 on a daemon of its own: one daemon holding both listings of 10^6 would
            // measure two directories' memory, not one.
            crate::cache_bench::drop_caches();
            let mount = start_warpdrive(&opts, port, "listing")?;
            std::thread::sleep(Duration::from_millis(500));
            let dir = mount.mnt.join("s3").join(&name);
            let s3 = (ls_l(&dir, n)?, ls_l(&dir, n)?);
            let peak_rss_mib = local_peak.max(mount.peak_rss_mib());
            drop(mount);
            let first_entry = first_entries(&opts, port, &name)?;
            let row = Listing {
                entries: n,
                local_cold,
                local_warm,
                wd_cold,
                wd_warm,
                s3,
                first_entry,
                rss_idle_kib,
                rss_held_kib,
                peak_rss_mib,
            };
            println!(
                "  {n:>9} entries: local {local_cold:.2} / {local_warm:.2} s, warpdrive {wd_cold:.2} / {wd_warm:.2} s (cold / warm), over S3 {:.2} / {:.2} s, first entry {:.3} s (S3 {:.3} s, local disk {:.3} s), RSS {:.0} → {:.0} MiB",
                row.s3.0,
                row.s3.1,
                row.first_entry.1,
                row.first_entry.2,
                row.first_entry.0,
                rss_idle_kib / 1024.0,
                rss_held_kib / 1024.0,
            );
            Ok(row)
        })
        .await??;
        rows.push(row);
    }
    Ok(rows)
}

fn per_entry_us(secs: f64, entries: usize) -> f64 {
    secs / entries.max(1) as f64 * 1e6
}

fn bytes_per_entry(row: &Listing) -> f64 {
    (row.rss_held_kib - row.rss_idle_kib).max(0.0) * 1024.0 / row.entries.max(1) as f64
}

/// The rows as a table.
pub(super) fn table(rows: &[Listing]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| ls -l of | local cold s | local warm s | warpdrive cold s | warpdrive warm s | cold / local | warm / local | µs per entry (cold) | over S3 cold / warm s | first entry s (warpdrive local / S3 / disk) | RSS per entry, bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} entries | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} / {:.2} | {:.3} / {:.3} / {:.3} | {:.0} |",
            row.entries,
            row.local_cold,
            row.local_warm,
            row.wd_cold,
            row.wd_warm,
            row.wd_cold / row.local_cold.max(1e-9),
            row.wd_warm / row.local_warm.max(1e-9),
            per_entry_us(row.wd_cold, row.entries),
            row.s3.0,
            row.s3.1,
            row.first_entry.1,
            row.first_entry.2,
            row.first_entry.0,
            bytes_per_entry(row),
        );
    }
}

/// The listing targets, at the largest size; `false` on a miss.
pub(super) fn check(rows: &[Listing]) -> bool {
    let (Some(small), Some(large)) = (
        rows.iter().min_by_key(|r| r.entries),
        rows.iter().max_by_key(|r| r.entries),
    ) else {
        return true;
    };
    let mut ok = true;
    let mut target = |what: String, value: f64, limit: f64| {
        let pass = value <= limit;
        ok &= pass;
        println!(
            "target {what}: {value:.2} (<= {limit}) {}",
            if pass { "met" } else { "MISSED" }
        );
    };
    target(
        format!("ls -l of {} cold / local disk", large.entries),
        large.wd_cold / large.local_cold.max(1e-9),
        TARGET_VS_LOCAL,
    );
    target(
        format!("ls -l of {} warm / local disk", large.entries),
        large.wd_warm / large.local_warm.max(1e-9),
        TARGET_VS_LOCAL,
    );
    if large.entries > small.entries {
        target(
            format!(
                "time per entry, {} / {} entries (flat)",
                large.entries, small.entries
            ),
            per_entry_us(large.wd_cold, large.entries)
                / per_entry_us(small.wd_cold, small.entries).max(1e-9),
            TARGET_FLAT,
        );
    }
    target(
        format!(
            "daemon RSS per entry holding {} entries, bytes",
            large.entries
        ),
        bytes_per_entry(large),
        TARGET_BYTES_PER_ENTRY,
    );
    ok
}
