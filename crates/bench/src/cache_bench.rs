//! `cargo xtask bench cache`: how long a restart takes to rebuild the block cache's index
//! (the daemon is not ready before), with 100,000 cached objects on disk (one small block each:
//! the worst case of the one-file-per-object format, two files per block), with the kernel's dentry and
//! inode caches warm and (as root) dropped, beside a plain directory walk of the same files.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use blockcache::{BlockCache, BlockKey, Settings};

const TARGET_SECONDS: f64 = 5.0;

fn walk(dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for shard in std::fs::read_dir(dir)?.flatten() {
        if shard.file_type()?.is_dir() {
            for file in std::fs::read_dir(shard.path())?.flatten() {
                let _ = file.metadata()?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Empties the kernel's clean page, dentry and inode caches (root only); false otherwise.
pub(crate) fn drop_caches() -> bool {
    // SAFETY of data: sync first; this only empties clean caches.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Fills a cache with `blocks` objects of one small block each, then times reopening it.
pub(crate) fn run(blocks: u64) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let settings = Settings {
        max_size: 1 << 40,
        block_size: 64 * 1024,
        high_water: 0.9,
        low_water: 0.8,
    };
    let started = Instant::now();
    {
        let cache = BlockCache::open(dir.path(), settings.clone()).context("open")?;
        let data = vec![7u8; 4096];
        for i in 0..blocks {
            let key = BlockKey {
                backend: "bench".into(),
                key: format!("dataset/sample-{i:06}.jpg"),
                etag: "\"etag\"".into(),
                index: 0,
            };
            cache.put(&key, data.len() as u64, &data).context("put")?;
        }
    }
    println!(
        "wrote {blocks} objects of one 4 KiB block (the index cost does not depend on block size) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut ok = true;
    let mut rows = Vec::new();
    for cold in [false, true] {
        if cold && !drop_caches() {
            println!("(not root: cannot drop the kernel caches; the cold rows are skipped)");
            continue;
        }
        let started = Instant::now();
        let walked = walk(dir.path())?;
        let walk_secs = started.elapsed().as_secs_f64();
        if cold {
            drop_caches();
        }
        let started = Instant::now();
        let cache = BlockCache::open(dir.path(), settings.clone()).context("reopen")?;
        let open_secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            cache.blocks() as u64 == blocks && walked as u64 == 2 * blocks,
            "the rebuilt index has {} blocks, the walk {walked} files, expected {blocks} and twice that",
            cache.blocks()
        );
        ok &= open_secs <= TARGET_SECONDS;
        rows.push((
            if cold {
                "cold (caches dropped)"
            } else {
                "warm"
            },
            open_secs,
            walk_secs,
        ));
    }
    println!("| kernel caches | BlockCache::open s | plain walk + stat s | ratio |");
    println!("|---|---|---|---|");
    for (what, open, walk) in rows {
        println!(
            "| {what} | {open:.2} | {walk:.2} | {:.2} |",
            open / walk.max(1e-9)
        );
    }
    println!(
        "target: ready in <= {TARGET_SECONDS} s with {blocks} blocks: {}",
        if ok { "met" } else { "MISSED" }
    );
    Ok(ok)
}
