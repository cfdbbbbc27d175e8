//! FUSE passthrough on a real mount (root, Linux 6.9+): a whole cached file is read by the
//! kernel from the cache's data file, not through the daemon, and the handle-pinned-to-version
//! rule still holds when the object changes under an open file.

mod common;

use std::io::{Read, Seek, SeekFrom};

use common::{BLOCK, cache, core_with, metric, mount_passthrough, random, runtime, settle};
use prometheus_client::registry::Registry;
use warpdrive_fs::readahead::ReadaheadSettings;

fn reads(registry: &Registry) -> f64 {
    metric(
        registry,
        "warpdrive_fuse_operations_total{op=\"read\",result=\"ok\"}",
    )
}

#[test]
fn a_whole_cached_file_is_read_by_the_kernel_and_versions_stay_apart() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let first = random(6 * BLOCK as usize + 4321, 1);
    std::fs::write(src.join("obj.bin"), &first).unwrap();
    let mut registry = Registry::default();
    let off = ReadaheadSettings {
        enabled: false,
        ..ReadaheadSettings::default()
    };
    let core = core_with(
        &src,
        cache(&dir.path().join("cache"), 1 << 30),
        off,
        &mut registry,
    );
    let m = mount_passthrough(dir.path(), "m", core.clone(), &runtime, true);
    assert_eq!(
        metric(&registry, "warpdrive_fuse_passthrough_active"),
        1.0,
        "this kernel (6.9+) takes passthrough"
    );
    let path = m.mnt.join("local/obj.bin");
    // Cold: through the daemon, which fills the cache.
    assert_eq!(std::fs::read(&path).unwrap(), first);
    settle(&core);
    assert_eq!(
        metric(&registry, "warpdrive_fuse_opens_total{served=\"daemon\"}"),
        1.0
    );
    let before = reads(&registry);
    // Whole in the cache: the next open is handed to the kernel; no read reaches us.
    let mut held = std::fs::File::open(&path).unwrap();
    let mut got = Vec::new();
    held.read_to_end(&mut got).unwrap();
    assert!(got == first, "bytes differ through passthrough");
    assert_eq!(
        metric(
            &registry,
            "warpdrive_fuse_opens_total{served=\"passthrough\"}"
        ),
        1.0
    );
    assert_eq!(reads(&registry), before, "reads went through the daemon");
    // A second open of the same version shares the backing file.
    assert_eq!(std::fs::read(&path).unwrap(), first);
    assert_eq!(
        metric(
            &registry,
            "warpdrive_fuse_opens_total{served=\"passthrough\"}"
        ),
        2.0
    );
    // The object changes at the backend while the kernel reads the old copy. The kernel
    // allows one backing file per inode at a time: an open meanwhile shares the version
    // being read, whole (never a mix of the two).
    let second = random(3 * BLOCK as usize, 2);
    std::fs::write(src.join("obj.bin"), &second).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300)); // attr and listing TTLs
    let meanwhile = std::fs::read(&path).unwrap();
    assert!(
        meanwhile == first,
        "an open beside a passthrough one reads its version"
    );
    held.seek(SeekFrom::Start(BLOCK)).unwrap();
    let mut old = vec![0u8; 1000];
    held.read_exact(&mut old).unwrap();
    assert_eq!(old, first[BLOCK as usize..BLOCK as usize + 1000]);
    drop(held);
    // Once the kernel's release of it reaches us (it is sent asynchronously), the next open
    // reads the new version (through the daemon: it is not cached yet), and the one after
    // that from its own whole cached copy. Every read meanwhile is one version, whole.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = std::fs::read(&path).unwrap();
        if got == second {
            break;
        }
        assert!(got == first, "a read mixed two versions");
        assert!(
            std::time::Instant::now() < deadline,
            "the new version never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    settle(&core);
    let fresh = std::fs::read(&path).unwrap();
    assert!(fresh == second, "the new version through passthrough");
    assert_eq!(
        metric(&registry, "warpdrive_fuse_opens_total{served=\"daemon\"}"),
        2.0,
        "the cold read of each version"
    );
    drop(m);
}
