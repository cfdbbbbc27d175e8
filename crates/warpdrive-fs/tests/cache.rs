//! Reads through the block cache on real FUSE mounts: bytes always equal the source — after a
//! restart, after the object changes at the backend, after a cache file is corrupted — the
//! cache stays under its limit, and concurrent readers of one block make one backend fetch.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{BLOCK, cache, core, mount, random, settle};
use warpdrive_fs::ROOT;

#[test]
fn bytes_stay_right_across_restart_overwrite_corruption_and_the_limit() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let first = random(3 << 20, 1);
    std::fs::write(src.join("obj.bin"), &first).unwrap();
    let cache_dir = dir.path().join("cache");
    // Each mount is a new process's view: a fresh core over the same cache directory.
    let mount_over_cache = |name: &str| {
        mount(
            dir.path(),
            name,
            core(&src, cache(&cache_dir, 64 << 20)),
            &runtime,
        )
    };

    // Cold: from the backend into the cache.
    let m = mount_over_cache("m1");
    assert_eq!(std::fs::read(m.mnt.join("local/obj.bin")).unwrap(), first);
    assert_eq!(
        m.core.stats().backend_bytes.load(Ordering::Relaxed),
        3 << 20,
        "every byte fetched once"
    );
    let cold_gets = m.core.stats().backend_gets.load(Ordering::Relaxed);
    assert!(
        (1..=12).contains(&cold_gets),
        "3 MiB in 256 KiB blocks: at most one GET per block, got {cold_gets}"
    );
    settle(&m.core);
    drop(m);

    // Restart: a new mount over the same cache serves everything from disk.
    let m = mount_over_cache("m2");
    assert_eq!(std::fs::read(m.mnt.join("local/obj.bin")).unwrap(), first);
    assert_eq!(
        m.core.stats().backend_gets.load(Ordering::Relaxed),
        0,
        "warm after restart"
    );
    assert!(m.core.cache().unwrap().stats().hits.load(Ordering::Relaxed) >= 12);

    // Overwritten at the backend: a new ETag, so the new bytes, never the old blocks.
    let second = random(3 << 20, 2);
    std::fs::write(src.join("obj.bin"), &second).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        std::fs::read(m.mnt.join("local/obj.bin")).unwrap(),
        second,
        "no stale bytes after the metadata TTL"
    );
    settle(&m.core);
    drop(m);

    // A corrupted cache file: caught by its checksum, fetched again, right bytes.
    let mut files = Vec::new();
    for shard in std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        files.extend(
            std::fs::read_dir(shard.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "data")),
        );
    }
    assert!(!files.is_empty());
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        let at = bytes.len() - 1000;
        bytes[at] ^= 0x5a;
        std::fs::write(file, bytes).unwrap();
    }
    let m = mount_over_cache("m3");
    assert_eq!(std::fs::read(m.mnt.join("local/obj.bin")).unwrap(), second);
    assert!(
        m.core
            .cache()
            .unwrap()
            .stats()
            .checksum_failures
            .load(Ordering::Relaxed)
            >= 1
    );
    settle(&m.core);
    drop(m);

    // The limit: reading far more than the cache holds never grows it past max_size.
    for i in 0..6 {
        std::fs::write(src.join(format!("more{i}.bin")), random(2 << 20, 10 + i)).unwrap();
    }
    let small = cache(&dir.path().join("small-cache"), 4 << 20);
    let m = mount(dir.path(), "m4", core(&src, small.clone()), &runtime);
    for i in 0..6 {
        let _ = std::fs::read(m.mnt.join(format!("local/more{i}.bin"))).unwrap();
        assert!(small.size() <= 4 << 20, "cache at {} bytes", small.size());
    }
    assert!(small.stats().evictions.load(Ordering::Relaxed) > 0);
}

#[test]
fn concurrent_readers_of_one_block_make_one_backend_fetch() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = random(BLOCK as usize, 3);
    std::fs::write(src.join("one.bin"), &data).unwrap();
    let core = core(&src, cache(&dir.path().join("cache"), 64 << 20));
    runtime.block_on(async {
        let local = core.lookup(ROOT, "local").await.unwrap();
        let file = core.lookup(local.ino, "one.bin").await.unwrap();
        let readers: Vec<_> = (0..16)
            .map(|i| {
                let core = core.clone();
                tokio::spawn(async move { core.read(file.ino, (i * 1000) as u64, 4096).await })
            })
            .collect();
        for (i, reader) in readers.into_iter().enumerate() {
            let bytes = reader.await.unwrap().unwrap();
            assert_eq!(&bytes[..], &data[i * 1000..i * 1000 + 4096]);
        }
    });
    assert_eq!(
        core.stats().backend_gets.load(Ordering::Relaxed),
        1,
        "single flight"
    );
}

#[test]
fn a_cache_directory_deleted_while_mounted_comes_back_whole_and_is_ours_at_the_next_start() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (a, b) = (random(2 << 20, 5), random(2 << 20, 6));
    std::fs::write(src.join("a.bin"), &a).unwrap();
    std::fs::write(src.join("b.bin"), &b).unwrap();
    let cache_dir = dir.path().join("cache");
    let m = mount(
        dir.path(),
        "m1",
        core(&src, cache(&cache_dir, 64 << 20)),
        &runtime,
    );
    assert_eq!(std::fs::read(m.mnt.join("local/a.bin")).unwrap(), a);
    settle(&m.core);
    std::fs::remove_dir_all(&cache_dir).unwrap();
    assert_eq!(std::fs::read(m.mnt.join("local/b.bin")).unwrap(), b);
    settle(&m.core);
    let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "re-created 0700");
    assert_eq!(
        std::fs::read(m.mnt.join("local/a.bin")).unwrap(),
        a,
        "blocks that went with the directory are fetched again"
    );
    settle(&m.core);
    drop(m);
    // The next start opens it as its own cache.
    let m = mount(
        dir.path(),
        "m2",
        core(&src, cache(&cache_dir, 64 << 20)),
        &runtime,
    );
    assert_eq!(std::fs::read(m.mnt.join("local/b.bin")).unwrap(), b);
    assert!(
        m.core.cache().unwrap().blocks() > 0,
        "the cache kept blocks"
    );
}

#[test]
fn lookups_in_a_large_directory_find_every_name_and_only_those() {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub dir")).unwrap();
    // Names whose byte order differs from any naive order: case, digits, spaces, UTF-8.
    let mut names: Vec<String> = (0..3000)
        .map(|i| match i % 5 {
            0 => format!("File-{i}"),
            1 => format!("file {i}.bin"),
            2 => format!("{i:05}"),
            3 => format!("\u{e9}t\u{e9}-{i}"),
            _ => format!("Z{i}"),
        })
        .collect();
    for name in &names {
        std::fs::write(src.join(name), b"x").unwrap();
    }
    names.push("sub dir".to_owned());
    let core = core(&src, cache(&dir.path().join("cache"), 64 << 20));
    runtime.block_on(async {
        let local = core.lookup(ROOT, "local").await.unwrap();
        for name in &names {
            let found = core.lookup(local.ino, name).await;
            assert!(found.is_ok(), "{name:?} not found");
        }
        for missing in ["file", "File-", "zz", "00000x", "sub", "sub dir/"] {
            assert!(
                core.lookup(local.ino, missing).await.is_err(),
                "{missing:?} found"
            );
        }
    });
}

#[test]
fn a_store_that_lists_no_etags_still_reads_through_the_cache() {
    use common::faulty::{Faults, Faulty};
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload, memory::InMemory, path::Path};
    use std::sync::Arc;

    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let data = random(2 * BLOCK as usize, 21);
    runtime
        .block_on(inner.put(&Path::from("a.bin"), PutPayload::from(data.clone())))
        .unwrap();
    let faults = Arc::new(Faults::default());
    faults.list_without_etags.store(true, Ordering::SeqCst);
    let store: Arc<dyn ObjectStore> = Arc::new(Faulty {
        inner,
        faults: faults.clone(),
    });
    let core = Arc::new(common::core_over(
        "memory",
        store,
        cache(&dir.path().join("cache"), 64 << 20),
        Duration::from_secs(10),
    ));
    runtime.block_on(async {
        let local = core.lookup(ROOT, "local").await.unwrap();
        let file = core.lookup(local.ino, "a.bin").await.unwrap();
        // One HEAD at open learns the version the listing left out.
        let (fh, etag) = core.open(file.ino).await.unwrap();
        assert!(etag.is_some(), "the open learned no version");
        let first = core
            .read_handle(fh, file.ino, 0, BLOCK as u32)
            .await
            .unwrap();
        assert_eq!(&first[..], &data[..BLOCK as usize]);
        settle(&core);
        let gets = faults.gets.load(Ordering::SeqCst);
        let again = core
            .read_handle(fh, file.ino, 0, BLOCK as u32)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(
            faults.gets.load(Ordering::SeqCst),
            gets,
            "the second read of the block was not served from the cache"
        );
        core.release(fh);
    });
}
