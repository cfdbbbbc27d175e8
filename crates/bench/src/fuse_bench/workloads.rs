//! The data a run generates and the workloads that read it, through a mount or straight
//! through object_store.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::*;

pub(super) fn generate(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
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
pub(super) struct Data {
    pub(super) large: Vec<String>,
    pub(super) small: Vec<String>,
    pub(super) random: String,
}

pub(super) fn generate_all(opts: &Options, local: &Path) -> anyhow::Result<Data> {
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

/// Waits for reader threads and turns the bytes they read into a rate since `started`.
pub(super) fn joined(
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
pub(super) fn read_sequential(root: &Path, files: &[String]) -> anyhow::Result<Rate> {
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
pub(super) fn read_small(
    root: &Path,
    files: &[String],
    threads: usize,
    seed: u64,
) -> anyhow::Result<Rate> {
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
pub(super) fn read_random(
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
pub(super) fn evict_from_page_cache(root: &Path, files: &[String]) {
    for key in files {
        if let Ok(file) = std::fs::File::open(root.join(key)) {
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

/// The best object_store does with no FUSE: one whole-object GET per file, all files at once.
/// (4 MiB ranged GETs are no ceiling on moto: it reads the whole object for every range, so
/// they run at a fraction of this.)
pub(super) async fn object_store_sequential(
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

pub(super) async fn object_store_small(
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
