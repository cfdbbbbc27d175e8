//! The read path over a misbehaving store, on real FUSE mounts: a store that stalls fails the
//! read within the backend's timeout; failed, cut-short and changed-under-us reads give EIO or
//! ESTALE, never wrong or short data; once the store behaves, the same files read right.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::faulty::{Faults, Faulty};
use common::{BLOCK, cache, core_over, mount, random, runtime};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

const TIMEOUT: Duration = Duration::from_millis(500);

struct Setup {
    _dir: tempfile::TempDir,
    faults: Arc<Faults>,
    mount: common::Mount,
    data: Vec<u8>,
    _runtime: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = random(8 * BLOCK as usize, 3);
    for name in ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"] {
        std::fs::write(src.join(name), &data).unwrap();
    }
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn ObjectStore> = Arc::new(Faulty {
        inner: Arc::new(LocalFileSystem::new_with_prefix(&src).unwrap()),
        faults: faults.clone(),
    });
    let core = Arc::new(core_over(
        store,
        cache(&dir.path().join("cache"), 64 << 20),
        TIMEOUT,
    ));
    let mount = mount(dir.path(), "m", core, &runtime);
    Setup {
        _dir: dir,
        faults,
        mount,
        data,
        _runtime: runtime,
    }
}

fn read_at(s: &Setup, name: &str, offset: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(s.mount.mnt.join("local").join(name))?;
    let mut buf = vec![0u8; BLOCK as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn expect(s: &Setup, got: std::io::Result<Vec<u8>>, offset: u64) {
    let bytes = got.unwrap();
    assert!(
        bytes == s.data[offset as usize..offset as usize + BLOCK as usize],
        "wrong bytes at {offset}"
    );
}

#[test]
fn a_stalled_store_fails_the_read_within_its_timeout_and_others_recover() {
    let s = setup();
    // Look the file up first, so the stall hits the read itself.
    let file = std::fs::File::open(s.mount.mnt.join("local/a.bin")).unwrap();
    s.faults.stall.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let mut buf = vec![0u8; BLOCK as usize];
    let err = file.read_exact_at(&mut buf, 2 * BLOCK).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(5), "EIO, got {err}");
    assert!(
        took < TIMEOUT * 4,
        "a read of a stalled store hung for {took:?} with a {TIMEOUT:?} timeout"
    );
    s.faults.stall.store(false, Ordering::SeqCst);
    expect(&s, read_at(&s, "a.bin", 2 * BLOCK), 2 * BLOCK);
}

#[test]
fn failed_gets_are_eio_and_the_next_read_is_right() {
    let s = setup();
    let file = std::fs::File::open(s.mount.mnt.join("local/b.bin")).unwrap();
    // Every GET fails (the kernel retries a failed readahead with a read of its own).
    s.faults.fail_gets.store(1000, Ordering::SeqCst);
    let mut buf = vec![0u8; BLOCK as usize];
    let err = file.read_exact_at(&mut buf, 3 * BLOCK).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO, got {err}");
    s.faults.fail_gets.store(0, Ordering::SeqCst);
    file.read_exact_at(&mut buf, 3 * BLOCK).unwrap();
    assert!(buf == s.data[3 * BLOCK as usize..4 * BLOCK as usize]);
}

#[test]
fn a_body_cut_short_is_eio_never_short_or_wrong_data() {
    let s = setup();
    let file = std::fs::File::open(s.mount.mnt.join("local/c.bin")).unwrap();
    s.faults.truncate_at.store(BLOCK / 3, Ordering::SeqCst);
    let mut buf = vec![0u8; BLOCK as usize];
    let err = file.read_exact_at(&mut buf, 4 * BLOCK).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO, got {err}");
    s.faults.truncate_at.store(0, Ordering::SeqCst);
    file.read_exact_at(&mut buf, 4 * BLOCK).unwrap();
    assert!(
        buf == s.data[4 * BLOCK as usize..5 * BLOCK as usize],
        "a cut block was cached"
    );
}

#[test]
fn an_object_changed_under_a_handle_is_estale() {
    let s = setup();
    let file = std::fs::File::open(s.mount.mnt.join("local/d.bin")).unwrap();
    s.faults.changed.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; BLOCK as usize];
    let err = file.read_exact_at(&mut buf, 5 * BLOCK).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(116), "ESTALE, got {err}");
}

#[test]
fn latency_slows_reads_but_never_changes_them() {
    let s = setup();
    s.faults.latency_ms.store(50, Ordering::SeqCst);
    for offset in [0, 3 * BLOCK, 7 * BLOCK] {
        expect(&s, read_at(&s, "e.bin", offset), offset);
    }
    assert!(s.faults.gets.load(Ordering::SeqCst) >= 1);
}
