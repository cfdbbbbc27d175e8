//! An open file is one version of its object: overwritten at the backend while a handle reads
//! it, that handle gets the old bytes or ESTALE, never a mix; a new open sees the new version.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use common::{BLOCK, cache, core, mount, random, runtime};

#[test]
fn a_handle_never_returns_bytes_of_two_versions() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let len = 16 * BLOCK as usize;
    let first = random(len, 1);
    let second = random(len, 2);
    std::fs::write(src.join("v.bin"), &first).unwrap();
    let m = mount(
        dir.path(),
        "m",
        core(&src, cache(&dir.path().join("cache"), 64 << 20)),
        &runtime,
    );
    let path = m.mnt.join("local/v.bin");
    let file = std::fs::File::open(&path).unwrap();
    let mut head = vec![0u8; BLOCK as usize];
    file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, first[..BLOCK as usize]);

    // Overwritten in place with another mtime, so its ETag changes; then the metadata is
    // looked at again (attr_ttl is 200 ms in these tests).
    std::fs::write(src.join("v.bin"), &second).unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(src.join("v.bin"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let _ = std::fs::metadata(&path).unwrap();

    let mut tail = vec![0u8; BLOCK as usize];
    let at = 12 * BLOCK;
    match file.read_exact_at(&mut tail, at) {
        Ok(()) => assert_eq!(
            tail,
            first[at as usize..at as usize + BLOCK as usize],
            "the open handle returned bytes of the new version"
        ),
        Err(err) => assert_eq!(err.raw_os_error(), Some(116), "ESTALE, got {err}"),
    }
    // Uncached blocks of the old version cannot be had any more: this handle says so.
    let mut rest = vec![0u8; BLOCK as usize];
    let err = file
        .read_exact_at(&mut rest, 14 * BLOCK)
        .expect_err("the old version is gone at the backend");
    assert_eq!(err.raw_os_error(), Some(116), "ESTALE, got {err}");
    drop(file);

    // A new open sees the new version, whole.
    let mut now = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut now)
        .unwrap();
    assert!(now == second, "a new open did not see the new version");
}
