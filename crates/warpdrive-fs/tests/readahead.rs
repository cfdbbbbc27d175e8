//! Readahead and metrics on real FUSE mounts: sequential reads prefetch ahead without fetching
//! any block twice, random reads prefetch nothing, files read in name order prefetch the next
//! ones, and every metric counts exactly what its name says.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{BLOCK, cache, core_with, metric, mount, random, runtime, settle};
use prometheus_client::registry::Registry;
use warpdrive_fs::ROOT;
use warpdrive_fs::readahead::ReadaheadSettings;

fn readahead(directory_prefetch: bool) -> ReadaheadSettings {
    ReadaheadSettings {
        enabled: true,
        initial_window: BLOCK * 4,
        max_window: BLOCK * 16,
        budget: 64 << 20,
        directory_prefetch,
        directory_files: 4,
        parallel_gets: 1,
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory with `src/<name>` holding `data`: the local backend's one object.
fn source_with(name: &str, data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(name), data).unwrap();
    (dir, src)
}

/// Reads a whole file in `chunk`-byte reads with `pause` after each, like a slow consumer.
fn read_slowly(path: &std::path::Path, chunk: usize, pause: Duration) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf).unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(pause);
    }
}

/// The local backend sent exactly `len` bytes: nothing was fetched twice.
fn assert_fetched_once(registry: &Registry, len: usize) {
    assert_eq!(
        metric(registry, "warpdrive_backend_bytes_total{backend=\"local\"}"),
        len as f64,
        "every byte fetched once"
    );
}

const ISSUED: &str = "warpdrive_readahead_issued_bytes_total";
const USED: &str = "warpdrive_readahead_used_bytes_total";
const WASTED: &str = "warpdrive_readahead_wasted_bytes_total";

#[test]
fn sequential_reads_prefetch_each_block_once_and_random_reads_prefetch_nothing() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = random(32 * BLOCK as usize, 1);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    // A 1 GiB sparse file: random reads land far apart, as in a real dataset.
    std::fs::File::create(src.join("rnd.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let mut registry = Registry::default();
    let core = core_with(
        &src,
        cache(&dir.path().join("cache"), 64 << 20),
        readahead(false),
        &mut registry,
    );
    let m = mount(dir.path(), "m", core.clone(), &runtime);

    assert_eq!(std::fs::read(m.mnt.join("local/big.bin")).unwrap(), big);
    wait_for("prefetches to settle", || {
        metric(&registry, USED) + metric(&registry, WASTED) >= metric(&registry, ISSUED)
    });
    let issued = metric(&registry, ISSUED);
    assert!(issued >= (16 * BLOCK) as f64, "issued {issued}");
    assert!(metric(&registry, USED) >= (16 * BLOCK) as f64);
    assert_eq!(
        core.stats().backend_bytes.load(Ordering::Relaxed),
        32 * BLOCK,
        "readahead and foreground reads fetch each block once"
    );
    let gets = core.stats().backend_gets.load(Ordering::Relaxed);
    assert!(
        gets < 16,
        "runs of blocks share a GET: {gets} GETs for 32 blocks"
    );
    assert_eq!(
        metric(
            &registry,
            "warpdrive_backend_bytes_total{backend=\"local\"}"
        ),
        (32 * BLOCK) as f64
    );

    // Random 64 KiB reads through a handle: readahead stays off.
    runtime.block_on(async {
        let local = core.lookup(ROOT, "local").await.unwrap();
        let file = core.lookup(local.ino, "rnd.bin").await.unwrap();
        let (fh, _) = core.open(file.ino).await.unwrap();
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..64 {
            let offset = rng.u64(0..(1 << 30) - 65536);
            core.read_handle(fh, file.ino, offset, 65536).await.unwrap();
        }
        core.release(fh);
    });
    assert_eq!(metric(&registry, ISSUED), issued, "random reads prefetched");
}

#[test]
fn files_read_in_name_order_prefetch_the_next_files() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("shards")).unwrap();
    let size = 200 * 1024;
    let files: Vec<Vec<u8>> = (0..10).map(|i| random(size, 100 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        std::fs::write(src.join(format!("shards/f{i}.bin")), data).unwrap();
    }
    let mut registry = Registry::default();
    let core = core_with(
        &src,
        cache(&dir.path().join("cache"), 64 << 20),
        readahead(true),
        &mut registry,
    );
    let read = |names: &[usize]| {
        runtime.block_on(async {
            let local = core.lookup(ROOT, "local").await.unwrap();
            let shards = core.lookup(local.ino, "shards").await.unwrap();
            for &i in names {
                let file = core.lookup(shards.ino, &format!("f{i}.bin")).await.unwrap();
                let (fh, _) = core.open(file.ino).await.unwrap();
                let got = core
                    .read_handle(fh, file.ino, 0, size as u32)
                    .await
                    .unwrap();
                assert_eq!(&got[..], &files[i][..], "f{i}");
                core.release(fh);
            }
        })
    };

    // Shuffled order: nothing to predict.
    read(&[7, 2, 9]);
    assert_eq!(metric(&registry, ISSUED), 0.0);

    // Name order: after f0, f1 the next four files are fetched ahead (f2 is cached already).
    read(&[0, 1]);
    assert_eq!(metric(&registry, ISSUED), (3 * size) as f64);
    wait_for("f3..f5 prefetched", || {
        core.cache().unwrap().blocks() == 3 + 2 + 3
    });
    // Going on in name order keeps four files ahead: f6 at f2, f8 at f4 (f7, f9 are cached).
    read(&[2, 3, 4, 5, 6]);
    assert_eq!(metric(&registry, ISSUED), (5 * size) as f64);
    assert_eq!(metric(&registry, USED), (4 * size) as f64, "f3..f6 used");
    // Every file was fetched exactly once, ahead or not (f8's prefetch may still be landing).
    wait_for("f8 prefetched", || {
        core.stats().backend_bytes.load(Ordering::Relaxed) >= 10 * size as u64
    });
    assert_eq!(core.stats().backend_gets.load(Ordering::Relaxed), 10);
    assert_eq!(
        core.stats().backend_bytes.load(Ordering::Relaxed),
        10 * size as u64
    );
}

#[test]
fn metrics_count_exactly_what_they_name() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = random(10 * BLOCK as usize + 1000, 5);
    std::fs::write(src.join("obj.bin"), &data).unwrap();
    let cache_dir = dir.path().join("cache");
    let off = ReadaheadSettings {
        enabled: false,
        ..readahead(false)
    };

    // Cold: every byte comes from the backend once.
    let mut registry = Registry::default();
    let core = core_with(
        &src,
        cache(&cache_dir, 64 << 20),
        off.clone(),
        &mut registry,
    );
    let m = mount(dir.path(), "m1", core.clone(), &runtime);
    assert_eq!(std::fs::read(m.mnt.join("local/obj.bin")).unwrap(), data);
    assert!(std::fs::metadata(m.mnt.join("local/missing")).is_err());
    let len = data.len() as f64;
    assert_eq!(
        metric(
            &registry,
            "warpdrive_backend_bytes_total{backend=\"local\"}"
        ),
        len
    );
    assert_eq!(
        metric(
            &registry,
            "warpdrive_fuse_operations_total{op=\"lookup\",result=\"ENOENT\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &registry,
            "warpdrive_fuse_operations_total{op=\"read\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &registry,
            "warpdrive_backend_request_duration_seconds_count{backend=\"local\"}"
        ) >= 11.0
    );
    settle(&core);
    let on_disk = core.cache().unwrap().size() as f64;
    assert_eq!(on_disk, len, "the cache counts the bytes it holds");
    assert_eq!(metric(&registry, "warpdrive_cache_size_bytes"), on_disk);
    drop(m);

    // Warm, after a restart: every byte from the cache, none from the backend.
    let mut registry = Registry::default();
    let core = core_with(&src, cache(&cache_dir, 64 << 20), off, &mut registry);
    let m = mount(dir.path(), "m2", core, &runtime);
    assert_eq!(std::fs::read(m.mnt.join("local/obj.bin")).unwrap(), data);
    assert_eq!(
        metric(
            &registry,
            "warpdrive_backend_bytes_total{backend=\"local\"}"
        ),
        0.0
    );
    assert_eq!(metric(&registry, "warpdrive_cache_bytes_served_total"), len);
    assert_eq!(metric(&registry, "warpdrive_cache_misses_total"), 0.0);
    assert_eq!(
        metric(&registry, "warpdrive_cache_checksum_failures_total"),
        0.0
    );
}

#[test]
fn later_requests_into_a_fetched_block_are_served_from_memory() {
    let runtime = runtime();
    let data = random((8 << 20) + 1000, 6);
    let (dir, src) = source_with("obj.bin", &data);
    // 4 MiB blocks: the kernel asks for at most 1 MiB at a time, so each block is several
    // requests, and only the first of them may touch the backend or the disk.
    let cache = std::sync::Arc::new(
        blockcache::BlockCache::open(
            &dir.path().join("cache"),
            blockcache::Settings {
                max_size: 64 << 20,
                block_size: 4 << 20,
                high_water: 0.9,
                low_water: 0.8,
            },
        )
        .unwrap(),
    );
    let off = ReadaheadSettings {
        enabled: false,
        ..readahead(false)
    };
    let mut registry = Registry::default();
    let core = core_with(&src, cache, off, &mut registry);
    let m = mount(dir.path(), "m1", core.clone(), &runtime);
    assert_eq!(std::fs::read(m.mnt.join("local/obj.bin")).unwrap(), data);
    let from_memory = metric(&registry, "warpdrive_memory_bytes_served_total");
    assert!(
        from_memory >= (4 << 20) as f64,
        "later requests into the three blocks come from memory, got {from_memory}"
    );
    assert_fetched_once(&registry, data.len());
    settle(&core);
}

/// A core whose readers may use 4 parallel ranged GETs, caching under `dir`.
fn parallel_core(
    dir: &std::path::Path,
    src: &std::path::Path,
    registry: &mut Registry,
) -> std::sync::Arc<warpdrive_fs::Core> {
    let settings = ReadaheadSettings {
        parallel_gets: 4,
        ..readahead(false)
    };
    core_with(
        src,
        cache(&dir.join("cache"), 256 << 20),
        settings,
        registry,
    )
}

#[test]
fn a_large_file_read_alone_is_fetched_with_parallel_ranged_gets() {
    let runtime = runtime();
    let data = random(96 * BLOCK as usize + 1000, 7);
    let (dir, src) = source_with("big.bin", &data);
    let mut registry = Registry::default();
    let core = parallel_core(dir.path(), &src, &mut registry);
    let m = mount(dir.path(), "m1", core.clone(), &runtime);
    // Read in 1 MiB steps with pauses, so segments go out as the reader advances.
    let got = read_slowly(
        &m.mnt.join("local/big.bin"),
        1 << 20,
        Duration::from_millis(5),
    );
    assert!(got == data, "bytes differ from the source");
    settle(&core);
    let gets = core.stats().backend_gets.load(Ordering::Relaxed);
    let bytes = core.stats().backend_bytes.load(Ordering::Relaxed);
    assert_eq!(bytes, data.len() as u64, "every byte fetched exactly once");
    // Past the first 4 MiB window the 24 MiB file is cut into 1 MiB segments (4 per window).
    assert!(
        gets >= 8,
        "segments of a quarter window each, so many GETs, got {gets}"
    );
    assert!(
        metric(&registry, USED) > (8 * BLOCK) as f64,
        "segments were read"
    );
}

#[test]
fn concurrent_sequential_readers_keep_one_stream_each() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let files: Vec<Vec<u8>> = (0..3)
        .map(|i| random(64 * BLOCK as usize, 20 + i))
        .collect();
    for (i, data) in files.iter().enumerate() {
        std::fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    let mut registry = Registry::default();
    let core = parallel_core(dir.path(), &src, &mut registry);
    let m = mount(dir.path(), "m1", core.clone(), &runtime);
    // All three open before any reads, so none of them is ever alone while it reads.
    let mut handles: Vec<std::fs::File> = (0..3)
        .map(|i| std::fs::File::open(m.mnt.join(format!("local/f{i}"))).unwrap())
        .collect();
    let mut got = vec![Vec::new(); 3];
    let mut buf = vec![0u8; 1 << 20];
    let mut open = 3;
    while open > 0 {
        open = 0;
        for (i, file) in handles.iter_mut().enumerate() {
            let n = std::io::Read::read(file, &mut buf).unwrap();
            got[i].extend_from_slice(&buf[..n]);
            if n > 0 {
                open += 1;
            }
        }
    }
    for (i, data) in files.iter().enumerate() {
        assert!(&got[i] == data, "f{i} differs from the source");
    }
    drop(handles);
    settle(&core);
    assert_eq!(
        core.stats().backend_bytes.load(Ordering::Relaxed),
        3 * 64 * BLOCK,
        "every byte fetched exactly once"
    );
    let gets = core.stats().backend_gets.load(Ordering::Relaxed);
    assert!(
        gets <= 6,
        "one stream per file (a restart at most), got {gets}"
    );
}

/// A 1 MiB tmpfs mounted over `dir` for the test's life (unmounted even if it fails).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs (the tests run as root)");
        Self(dir.to_owned())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_cache_disk_still_serves_every_byte_fetched_once() {
    let runtime = runtime();
    let data = random(32 * BLOCK as usize, 8);
    let (dir, src) = source_with("obj.bin", &data);
    let disk = TinyDisk::mount(&dir.path().join("cache"));
    let mut registry = Registry::default();
    // The cache believes it may hold 64 MiB; the disk under it holds 1 MiB.
    let core = core_with(
        &src,
        cache(&disk.0, 64 << 20),
        readahead(false),
        &mut registry,
    );
    let m = mount(dir.path(), "m1", core.clone(), &runtime);
    // A slow reader, so the stream runs a window ahead of it.
    let got = read_slowly(
        &m.mnt.join("local/obj.bin"),
        BLOCK as usize,
        Duration::from_millis(10),
    );
    assert!(got == data, "bytes differ from the source");
    settle(&core);
    assert!(
        metric(&registry, "warpdrive_cache_write_errors_total") >= 20.0,
        "most of the 32 blocks were refused"
    );
    // Readahead blocks the disk refused stayed in memory for their reader.
    assert_fetched_once(&registry, data.len());
    drop(m);
    drop(disk);
}

#[test]
fn random_reads_fetch_the_chunks_they_touch_not_whole_blocks() {
    let runtime = runtime();
    // Blocks of 1 MiB: a whole-block fetch per random 64 KiB read would be 16× the bytes read.
    let data = random(32 << 20, 21);
    let (dir, src) = source_with("rnd.bin", &data);
    let big_blocks = std::sync::Arc::new(
        blockcache::BlockCache::open(
            &dir.path().join("cache"),
            blockcache::Settings {
                max_size: 1 << 30,
                block_size: 1 << 20,
                high_water: 0.9,
                low_water: 0.8,
            },
        )
        .unwrap(),
    );
    let mut registry = Registry::default();
    let core = core_with(&src, big_blocks, readahead(false), &mut registry);
    // Each read lands at least 4 MiB (NEAR) from the one before, at a new place in its block.
    let offsets: Vec<u64> = (0..200u64)
        .map(|i| (i * (9 << 20) + i * 12_288) % ((32 << 20) - 65536))
        .collect();
    let read = runtime.block_on(async {
        let local = core.lookup(ROOT, "local").await.unwrap();
        let file = core.lookup(local.ino, "rnd.bin").await.unwrap();
        let (fh, _) = core.open(file.ino).await.unwrap();
        let mut read = 0u64;
        for &offset in &offsets {
            let got = core.read_handle(fh, file.ino, offset, 65536).await.unwrap();
            assert!(
                got[..] == data[offset as usize..offset as usize + 65536],
                "bytes at {offset}"
            );
            read += got.len() as u64;
        }
        core.release(fh);
        read
    });
    settle(&core);
    let fetched = core.stats().backend_bytes.load(Ordering::Relaxed);
    // The first read (no pattern yet) may fetch its whole block; every later one at most the
    // two chunks a 64 KiB read can straddle.
    assert!(
        fetched <= 2 * read + (1 << 20),
        "{fetched} bytes fetched for {read} read"
    );
    // Read again: every byte from the cache's parts of blocks.
    let again = runtime.block_on(async {
        let local = core.lookup(ROOT, "local").await.unwrap();
        let file = core.lookup(local.ino, "rnd.bin").await.unwrap();
        let (fh, _) = core.open(file.ino).await.unwrap();
        for &offset in &offsets {
            let got = core.read_handle(fh, file.ino, offset, 65536).await.unwrap();
            assert!(got[..] == data[offset as usize..offset as usize + 65536]);
        }
        core.release(fh);
        core.stats().backend_bytes.load(Ordering::Relaxed)
    });
    assert_eq!(
        again, fetched,
        "a second pass fetched bytes the cache holds"
    );
}
