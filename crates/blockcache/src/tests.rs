//! The cache's rules, each against real files in a temporary directory.

use super::*;

const BS: u64 = 256 * 1024;

fn settings(max: u64) -> Settings {
    Settings {
        max_size: max,
        block_size: BS,
        high_water: 0.9,
        low_water: 0.8,
    }
}

fn owned(backend: &str, name: &str, etag: &str, index: u64) -> BlockKey {
    BlockKey {
        backend: backend.into(),
        key: name.into(),
        etag: etag.into(),
        index,
    }
}

fn key(name: &str, index: u64) -> BlockKey {
    owned("b", name, "e1", index)
}

/// An object's bytes, the same for the same seed.
fn object(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

/// Block `index` of `data`.
fn block_of(data: &[u8], index: u64) -> &[u8] {
    let start = (index * BS) as usize;
    &data[start..(start + BS as usize).min(data.len())]
}

/// Stores every block of `data` as object `k`.
fn put_all(cache: &BlockCache, k: &BlockKey, data: &[u8]) {
    for index in 0..(data.len() as u64).div_ceil(BS) {
        let block = BlockKey { index, ..k.clone() };
        cache
            .put(&block, data.len() as u64, block_of(data, index))
            .unwrap();
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(dir).unwrap().flatten() {
        if is_shard(&shard.file_name()) {
            out.extend(
                fs::read_dir(shard.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    out.sort();
    out
}

/// Bytes the file takes on disk (holes take none).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn one_object_is_one_sparse_data_file_and_one_record_whatever_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let data = object(3, 10 * BS + 12_345);
    // Blocks arrive out of order and with gaps, as readers and readahead write them.
    for index in [4, 0, 10, 7] {
        cache
            .put(
                &key("big", index),
                data.len() as u64,
                block_of(&data, index),
            )
            .unwrap();
    }
    let files = files_in(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let digest = key("big", 0).digest();
    let data_file = cache.path_of(&digest, "data");
    assert_eq!(fs::metadata(&data_file).unwrap().len(), data.len() as u64);
    assert!(
        allocated(&data_file) < 5 * BS,
        "the gaps are holes, not zeros"
    );
    // The data file holds the object's bytes at their own offsets.
    let on_disk = fs::read(&data_file).unwrap();
    assert_eq!(block_of(&on_disk, 7), block_of(&data, 7));
    assert!(cache.contains(&key("big", 10)), "the short last block");
    assert!(!cache.contains(&key("big", 1)));
    assert!(!cache.contains(&key("big", 11)), "past the end");
    assert!(cache.backing(&key("big", 0), data.len() as u64).is_none());
    assert_eq!(cache.blocks(), 4);
    assert_eq!(cache.size(), 3 * BS + 12_345);
}

#[test]
fn ranges_round_trip_across_blocks_and_versions_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let data = object(7, 3 * BS + 200_000);
    put_all(&cache, &key("obj", 0), &data);
    for (index, offset, len) in [
        (0, 0, 10),
        (0, 65_530, 20),
        (1, 0, BS as usize),
        (3, 199_990, 10),
        (3, 0, 200_000),
    ] {
        let got = cache.get(&key("obj", index), offset, len).unwrap();
        let start = (index * BS) as usize + offset;
        assert_eq!(got, data[start..start + len], "{index}:{offset}+{len}");
    }
    // One request spanning a block boundary reads both.
    let got = cache.get(&key("obj", 0), BS as usize - 100, 300).unwrap();
    assert_eq!(got, data[BS as usize - 100..BS as usize + 200]);
    assert!(
        cache.get(&key("obj", 4), 0, 10).is_none(),
        "past the end is a miss"
    );
    let other_version = BlockKey {
        etag: "e2".into(),
        ..key("obj", 0)
    };
    assert!(
        cache.get(&other_version, 0, 10).is_none(),
        "a new ETag never reads old bytes"
    );
    assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 6);
    // A new version of a different length starts the object afresh.
    let other = BlockKey {
        etag: "e2".into(),
        ..key("obj", 0)
    };
    cache.put(&other, 1000, &data[..1000]).unwrap();
    assert_eq!(cache.get(&other, 0, 1000).unwrap(), data[..1000]);
    assert_eq!(cache.objects(), 2);
}

#[test]
fn parts_of_a_block_are_kept_and_a_whole_block_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let data = object(9, 2 * BS);
    let k = key("rand", 1);
    let part = &block_of(&data, 1)[CHUNK..3 * CHUNK];
    cache.put_at(&k, data.len() as u64, CHUNK, part).unwrap();
    assert_eq!(cache.get(&k, CHUNK + 5, 1000).unwrap(), part[5..1005]);
    assert!(
        cache.get(&k, 0, 10).is_none(),
        "the rest of the block is absent"
    );
    assert!(!cache.contains(&k), "a part is not the block");
    // Misaligned writes are refused, not stored wrongly.
    assert!(cache.put_at(&k, data.len() as u64, 100, part).is_err());
    assert!(
        cache
            .put_at(&k, data.len() as u64, 0, &part[..1000])
            .is_err()
    );
    cache
        .put(&k, data.len() as u64, block_of(&data, 1))
        .unwrap();
    assert!(cache.contains(&k));
    assert_eq!(cache.blocks(), 1, "the parts were folded into the block");
    drop(cache);
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    assert_eq!(cache.blocks(), 1);
    assert_eq!(cache.get(&k, 0, BS as usize).unwrap(), block_of(&data, 1));
}

#[test]
fn evicting_a_prefix_drops_every_version_under_it_and_nothing_else_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let data = object(1, 3 * BS);
    for (backend, name, etag) in [
        ("s3", "train/a.bin", "v1"),
        ("s3", "train/a.bin", "v2"),
        ("s3", "train/deep/b.bin", "v1"),
        ("s3", "training/c.bin", "v1"), // shares a string prefix, not a directory
        ("s3", "eval/d.bin", "v1"),
        ("gcs", "train/a.bin", "v1"),
    ] {
        put_all(&cache, &owned(backend, name, etag, 0), &data);
    }
    drop(cache);
    // The owners come back from the records.
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let before = cache.size();
    let evicted = cache.evict_prefix("s3", "/train/");
    assert_eq!(evicted.blocks, 9);
    assert_eq!(cache.size(), before - evicted.bytes);
    assert!(
        cache
            .get(&owned("s3", "train/a.bin", "v2", 0), 0, 10)
            .is_none()
    );
    assert!(
        cache
            .get(&owned("s3", "train/deep/b.bin", "v1", 2), 0, 10)
            .is_none()
    );
    assert!(
        cache
            .get(&owned("s3", "training/c.bin", "v1", 0), 0, 10)
            .is_some()
    );
    assert!(
        cache
            .get(&owned("gcs", "train/a.bin", "v1", 0), 0, 10)
            .is_some()
    );
    let usage = cache.usage_by_backend();
    let s3 = usage.iter().find(|u| u.backend == "s3").unwrap();
    assert_eq!(s3.blocks, 6);
    assert_eq!(s3.lookups, Lookups { hits: 1, misses: 2 });
    let gcs = usage.iter().find(|u| u.backend == "gcs").unwrap();
    assert_eq!((gcs.blocks, gcs.lookups.hits), (3, 1));
    assert_eq!(cache.evict_prefix("s3", "").blocks, 6);
    assert_eq!(cache.blocks(), 3);
    drop(cache);
    let again = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    assert_eq!(again.blocks(), 3, "evicted files are gone from disk");
    assert_eq!(files_in(dir.path()).len(), 2);
}

#[test]
fn the_state_directory_is_kept_and_the_one_file_per_block_format_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    cache.put(&key("a", 0), 1000, &object(1, 1000)).unwrap();
    let state = cache.state_dir().unwrap();
    fs::write(state.join("job-1.json"), b"{}").unwrap();
    drop(cache);
    // Blocks of format 2 (one file per block, named `<digest>-<index>`) and format 1.
    let mut old = Vec::new();
    for (name, bytes) in [
        (
            "abababababababababababababababab-0",
            &b"WDBLK002\x05\0\0\0\0\0\0\0"[..],
        ),
        (
            "abababababababababababababababab-1",
            &b"WDBLK001\x05\0\0\0\0\0\0\0"[..],
        ),
    ] {
        let path = dir.path().join("ab").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        old.push(path);
    }
    fs::write(
        dir.path().join(MARKER),
        b"warpdrive block cache, format 1\n",
    )
    .unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    assert_eq!(cache.blocks(), 1);
    assert!(state.join("job-1.json").exists(), "state is kept");
    assert!(
        old.iter().all(|p| !p.exists()),
        "old-format blocks are removed"
    );
    assert_eq!(fs::read(dir.path().join(MARKER)).unwrap(), MARKER_TEXT);
    assert_eq!(cache.get(&key("a", 0), 0, 1000).unwrap(), object(1, 1000));
}

#[test]
fn a_directory_deleted_under_a_running_cache_comes_back_whole() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cache");
    let cache = BlockCache::open(&dir, settings(1 << 30)).unwrap();
    cache.put(&key("a", 0), 1000, &object(1, 1000)).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    cache.put(&key("b", 0), 1000, &object(2, 1000)).unwrap();
    assert!(dir.join(MARKER).exists(), "marker re-created");
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(
        cache.get(&key("a", 0), 0, 10).is_none(),
        "gone objects are misses"
    );
    assert_eq!(cache.get(&key("b", 0), 0, 1000).unwrap(), object(2, 1000));
    drop(cache);
    // The next start knows it as its own.
    let again = BlockCache::open(&dir, settings(1 << 30)).unwrap();
    assert_eq!(again.get(&key("b", 0), 0, 1000).unwrap(), object(2, 1000));
}

#[test]
fn a_foreign_or_system_directory_is_refused_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("theirs.txt"), b"x").unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(check_dir(dir.path()), Err(Error::NotOurs(_))));
    let err = BlockCache::open(dir.path(), settings(1 << 30)).unwrap_err();
    assert!(matches!(err, Error::NotOurs(_)), "{err}");
    let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "its permissions were changed");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "files added");
    for system in ["/etc", "/", "/usr"] {
        assert!(matches!(
            check_dir(Path::new(system)),
            Err(Error::NotOurs(_))
        ));
    }
    let fresh = dir.path().join("new");
    check_dir(&fresh).unwrap();
    assert!(!fresh.exists(), "a check changes nothing");
}

#[test]
fn the_lock_names_the_holder_and_a_process_may_reopen_its_own_cache() {
    // Another process is refused (the binary's tests start a second daemon); the same
    // process reopening its cache, as in-process restarts in tests do, is not.
    let dir = tempfile::tempdir().unwrap();
    let first = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let pid: u32 = fs::read_to_string(dir.path().join(LOCK))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, std::process::id());
    let again = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    drop((first, again));
}

#[test]
fn corruption_is_detected_and_only_the_corrupt_range_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let data = object(1, 3 * BS);
    put_all(&cache, &key("obj", 0), &data);
    let path = cache.path_of(&key("obj", 0).digest(), "data");
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xff ^ data[(BS + 140_000) as usize]], BS + 140_000)
        .unwrap();
    assert!(
        cache.get(&key("obj", 1), 0, 10).is_some(),
        "the first chunk of the block is intact and still served"
    );
    assert!(
        cache.get(&key("obj", 1), 140_000, 100).is_none(),
        "the damaged chunk is caught"
    );
    assert_eq!(cache.stats().checksum_failures.load(Ordering::Relaxed), 1);
    assert_eq!(cache.blocks(), 2, "only that block is dropped");
    assert!(cache.get(&key("obj", 2), 0, 10).is_some());
    // The drop is recorded: a restart does not bring the bad block back.
    drop(cache);
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    assert!(!cache.contains(&key("obj", 1)));
    assert_eq!(cache.blocks(), 2);
}

#[test]
fn restart_rebuilds_sizes_cuts_torn_records_and_clears_interrupted_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = object(4, 50 * BS);
    let rec;
    {
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        put_all(&cache, &key("obj", 0), &data);
        cache.put(&key("small", 0), 10, &data[..10]).unwrap();
        let digest = key("obj", 0).digest();
        rec = cache.path_of(&digest, "rec");
        fs::write(rec.with_file_name(".tmp-999-1"), b"partial").unwrap();
        // A data file whose record never got written.
        fs::write(
            cache.path_of("cd00000000000000000000000000000000", "data"),
            b"x",
        )
        .ok();
    }
    // A crash in the middle of appending an entry, and a record torn in its header.
    let mut bytes = fs::read(&rec).unwrap();
    bytes.extend_from_slice(&Entry::present(50 * BS, &data[..100]).encode()[..20]);
    fs::write(&rec, &bytes).unwrap();
    let small = files_in(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "rec") && *p != rec)
        .unwrap();
    fs::write(&small, b"WDREC003\x01").unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    assert_eq!(cache.blocks(), 50);
    assert_eq!(cache.size(), 50 * BS);
    assert_eq!(
        cache.get(&key("obj", 42), 5, 5).unwrap(),
        block_of(&data, 42)[5..10]
    );
    assert!(cache.get(&key("small", 0), 0, 10).is_none());
    assert_eq!(
        files_in(dir.path()).len(),
        2,
        "torn and stray files are gone"
    );
    assert!(
        fs::read(&rec).unwrap().len() < bytes.len(),
        "the torn tail is cut off"
    );
    // A directory that is not ours is refused, not wiped.
    let foreign = tempfile::tempdir().unwrap();
    fs::write(foreign.path().join("precious.txt"), b"x").unwrap();
    assert!(matches!(
        BlockCache::open(foreign.path(), settings(1 << 30)),
        Err(Error::NotOurs(_))
    ));
    assert!(foreign.path().join("precious.txt").exists());
}

#[test]
fn a_scan_does_not_flush_the_hot_set_the_limit_holds_and_evicted_space_is_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(20 * BS)).unwrap();
    let hot = object(1, 5 * BS);
    put_all(&cache, &key("hot", 0), &hot);
    for i in 0..5 {
        for _ in 0..3 {
            cache.get(&key("hot", i), 0, 10).unwrap();
        }
    }
    let scan = object(2, 100 * BS);
    for i in 0..100 {
        cache
            .put(&key("scan", i), scan.len() as u64, block_of(&scan, i))
            .unwrap();
        assert!(cache.size() <= 20 * BS, "never past the limit");
    }
    for i in 0..5 {
        assert!(
            cache.get(&key("hot", i), 0, 10).is_some(),
            "hot block {i} survived the scan"
        );
    }
    assert!(cache.stats().evictions.load(Ordering::Relaxed) > 0);
    let scan_file = cache.path_of(&key("scan", 0).digest(), "data");
    assert!(
        allocated(&scan_file) <= 20 * BS,
        "evicted blocks are punched out: {} bytes allocated",
        allocated(&scan_file)
    );
}

#[test]
fn a_whole_object_is_handed_out_verified_and_is_not_evicted_while_held() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(12 * BS)).unwrap();
    let data = object(5, 4 * BS + 77);
    put_all(&cache, &key("whole", 0), &data);
    assert!(
        cache
            .backing(&key("whole", 0), data.len() as u64 + 1)
            .is_none(),
        "another length is another object"
    );
    let backing = cache.backing(&key("whole", 0), data.len() as u64).unwrap();
    let mut read = vec![0u8; data.len()];
    backing.file().read_exact_at(&mut read, 0).unwrap();
    assert_eq!(read, data);
    // Filling the cache evicts around the held object, never into it.
    let filler = object(6, 40 * BS);
    for i in 0..40 {
        cache
            .put(&key("filler", i), filler.len() as u64, block_of(&filler, i))
            .unwrap();
    }
    assert!(cache.contains(&key("whole", 4)));
    backing.file().read_exact_at(&mut read, 0).unwrap();
    assert_eq!(read, data, "no hole was punched under the kernel");
    drop(backing);
    // Corruption found by the check at hand-out: refused and dropped.
    let more = object(7, 2 * BS);
    let dir2 = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir2.path(), settings(1 << 30)).unwrap();
    put_all(&cache, &key("bad", 0), &more);
    let path = cache.path_of(&key("bad", 0).digest(), "data");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(b"!", BS + 5)
        .unwrap();
    assert!(cache.backing(&key("bad", 0), more.len() as u64).is_none());
    assert_eq!(cache.stats().checksum_failures.load(Ordering::Relaxed), 1);
    assert!(!cache.contains(&key("bad", 1)));
    assert!(cache.contains(&key("bad", 0)));
}

/// `data` copied to a buffer that starts on a 4 KiB page, as warpdrive's blocks do.
fn page_aligned(data: &[u8]) -> (Vec<u8>, usize) {
    let mut buf: Vec<u8> = Vec::with_capacity(data.len() + 4096);
    let pad = buf.as_ptr().align_offset(4096);
    buf.resize(pad, 0);
    buf.extend_from_slice(data);
    (buf, pad)
}

#[test]
fn page_aligned_blocks_are_written_around_the_page_cache_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    // The last block is 5,000 bytes: one page direct, the tail through the page cache.
    let data = object(8, 2 * BS + 5000);
    for index in 0..3 {
        let (buf, pad) = page_aligned(block_of(&data, index));
        cache
            .put(&key("direct", index), data.len() as u64, &buf[pad..])
            .unwrap();
    }
    assert!(cache.direct.load(Ordering::Relaxed), "ext4 takes O_DIRECT");
    for index in 0..3 {
        assert_eq!(
            cache.get(&key("direct", index), 0, BS as usize).unwrap(),
            block_of(&data, index)
        );
    }
    drop(cache);
    let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
    let backing = cache.backing(&key("direct", 0), data.len() as u64).unwrap();
    let mut read = vec![0u8; data.len()];
    backing.file().read_exact_at(&mut read, 0).unwrap();
    assert!(read == data, "the whole file, checked after a restart");
}

#[test]
fn a_pin_is_released_only_on_the_object_it_was_taken_on() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(dir.path(), settings(12 * BS)).unwrap();
    let data = object(5, 4 * BS);
    put_all(&cache, &key("whole", 0), &data);
    let first = cache.backing(&key("whole", 0), data.len() as u64).unwrap();
    // Invalidated while the kernel reads it, then cached again and handed out again.
    assert_eq!(cache.evict_prefix("b", "").blocks, 4);
    put_all(&cache, &key("whole", 0), &data);
    let second = cache.backing(&key("whole", 0), data.len() as u64).unwrap();
    drop(first);
    let filler = object(6, 40 * BS);
    for i in 0..40 {
        cache
            .put(&key("filler", i), filler.len() as u64, block_of(&filler, i))
            .unwrap();
    }
    let mut read = vec![0u8; data.len()];
    second.file().read_exact_at(&mut read, 0).unwrap();
    assert_eq!(read, data, "the second hand-out stayed pinned");
    assert!(cache.contains(&key("whole", 3)));
}

/// The format, byte for byte. If this fails the on-disk format changed: bump the magic in
/// `record.rs` (old files are then removed at open) and write new golden files with
/// `WARPDRIVE_BLESS=1 cargo test -p blockcache golden`.
#[test]
fn golden_format_3() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/format3");
    let dir = tempfile::tempdir().unwrap();
    let data = object(42, BS + 70_000);
    let k = owned(
        "s3",
        "train/日本/shard 0001.tar",
        "\"9b2cf535f27731c974343645a3985328\"",
        0,
    );
    {
        let cache = BlockCache::open(dir.path(), settings(1 << 30)).unwrap();
        cache
            .put(
                &BlockKey {
                    index: 1,
                    ..k.clone()
                },
                data.len() as u64,
                block_of(&data, 1),
            )
            .unwrap();
        cache
            .put_at(&k, data.len() as u64, CHUNK, &data[CHUNK..2 * CHUNK])
            .unwrap();
    }
    let digest = k.digest();
    let rec = fs::read(dir.path().join(&digest[..2]).join(format!("{digest}.rec"))).unwrap();
    let golden_rec = golden.join("object.rec");
    if std::env::var_os("WARPDRIVE_BLESS").is_some() {
        fs::create_dir_all(&golden).unwrap();
        fs::write(&golden_rec, &rec).unwrap();
    }
    assert_eq!(
        digest, "c0288667f4c5bd00643887e3e552b6a2",
        "the file name of an object changed"
    );
    assert_eq!(
        rec,
        fs::read(&golden_rec).unwrap(),
        "the record format changed"
    );
    // A cache written by format 3 is read by this code: the golden record with its data.
    let copy = tempfile::tempdir().unwrap();
    let shard = copy.path().join(&digest[..2]);
    fs::create_dir_all(&shard).unwrap();
    fs::write(copy.path().join(MARKER), MARKER_TEXT).unwrap();
    fs::copy(&golden_rec, shard.join(format!("{digest}.rec"))).unwrap();
    let sparse = File::create(shard.join(format!("{digest}.data"))).unwrap();
    sparse.write_all_at(&data[CHUNK..], CHUNK as u64).unwrap();
    let cache = BlockCache::open(copy.path(), settings(1 << 30)).unwrap();
    assert_eq!(cache.blocks(), 2);
    assert_eq!(cache.get(&k, CHUNK, 100).unwrap(), data[CHUNK..CHUNK + 100]);
    assert!(cache.contains(&BlockKey {
        index: 1,
        ..k.clone()
    }));
    assert!(cache.get(&k, 0, 100).is_none());
}
