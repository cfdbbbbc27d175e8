//! Real FUSE mounts of the namespace over a local backend (and a throttled in-memory one
//! standing in for a dead backend). Needs root and /dev/fuse, as CI has.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use warpdrive_fs::fuse::{MountSettings, Ttls, WarpFs};
use warpdrive_fs::{Backend, Core, FsSettings, namespace};

struct Mounted {
    _session: fuser::BackgroundSession,
    mnt: PathBuf,
    src: PathBuf,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn mount_with(extra: Vec<(String, Arc<dyn ObjectStore>, Duration)>) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    // Sources: plain files, deep paths, spaces and unicode, a big file, a big directory.
    write(&src, "hello.txt", b"hello warpdrive\n");
    write(&src, "a/b/c/deep.txt", b"deep");
    write(&src, "names/with space.txt", b"space");
    write(&src, "names/ünïcødé-日本.txt", b"unicode");
    let mut big = vec![0u8; 5 << 20];
    fastrand::fill(&mut big);
    write(&src, "big.bin", &big);
    for i in 0..10_000 {
        write(&src, &format!("many/f{i:05}"), format!("{i}").as_bytes());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&src).unwrap());
    let mut backends = vec![
        Backend {
            name: "local".into(),
            store: local.clone(),
            prefix: String::new(),
            timeout: Duration::from_secs(10),
            pages: None,
        },
        Backend {
            name: "nested".into(),
            store: local,
            prefix: "a/b".into(),
            timeout: Duration::from_secs(10),
            pages: None,
        },
    ];
    let mut mounts = vec![("/local".to_owned(), 0), ("/deep/er/path".to_owned(), 1)];
    for (name, store, timeout) in extra {
        mounts.push((format!("/{name}"), backends.len()));
        backends.push(Backend {
            name,
            store,
            prefix: String::new(),
            timeout,
            pages: None,
        });
    }
    let tree = namespace::build(&mounts).unwrap();
    let settings = FsSettings {
        uid: 0,
        gid: 0,
        file_mode: 0o444,
        dir_mode: 0o555,
        attr_ttl: Duration::from_secs(60),
        list_cache_entries: 1024,
        list_cache_names: 1_000_000,
        list_cache_ttl: Duration::from_secs(300),
    };
    let core = Arc::new(Core::new(backends, tree, settings));
    let ttls = Ttls {
        entry: Duration::from_secs(1),
        attr: Duration::from_secs(1),
        negative: Duration::from_secs(1),
    };
    let fs = WarpFs::new(core, runtime.handle().clone(), ttls);
    let session = warpdrive_fs::fuse::mount(
        fs,
        &mnt,
        &MountSettings {
            allow_other: false,
            ttls,
            threads: 4,
            passthrough: false,
        },
    )
    .expect("mount (needs root and /dev/fuse)");
    Mounted {
        _session: session,
        mnt,
        src,
        _dir: dir,
        _runtime: runtime,
    }
}

#[test]
fn one_namespace_with_files_dirs_and_synthetic_parents() {
    let m = mount_with(Vec::new());
    let mut top: Vec<String> = std::fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["deep", "local"]);
    assert_eq!(
        std::fs::read(m.mnt.join("local/hello.txt")).unwrap(),
        b"hello warpdrive\n"
    );
    assert_eq!(
        std::fs::read(m.mnt.join("local/a/b/c/deep.txt")).unwrap(),
        b"deep"
    );
    assert_eq!(
        std::fs::read(m.mnt.join("deep/er/path/c/deep.txt")).unwrap(),
        b"deep",
        "a nested mount path with a key prefix"
    );
    assert_eq!(
        std::fs::read(m.mnt.join("local/names/with space.txt")).unwrap(),
        b"space"
    );
    assert_eq!(
        std::fs::read(m.mnt.join("local/names/ünïcødé-日本.txt")).unwrap(),
        b"unicode"
    );
    let meta = std::fs::metadata(m.mnt.join("local/big.bin")).unwrap();
    assert_eq!(meta.len(), 5 << 20);
    assert_eq!(meta.mode() & 0o777, 0o444);
    let src_mtime = std::fs::metadata(m.src.join("big.bin")).unwrap().mtime();
    assert_eq!(meta.mtime(), src_mtime, "mtime from the object");
    let ino = meta.ino();
    assert_eq!(
        std::fs::metadata(m.mnt.join("local/big.bin"))
            .unwrap()
            .ino(),
        ino,
        "stable inode"
    );
    assert!(std::fs::metadata(m.mnt.join("deep")).unwrap().is_dir());
    // Read-only: writes fail with EROFS.
    let err = std::fs::write(m.mnt.join("local/new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "{err}");
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(m.mnt.join("local/hello.txt"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "{err}");
    // Missing: ENOENT. `..` never leaves the mount.
    assert_eq!(
        std::fs::read(m.mnt.join("local/nope"))
            .unwrap_err()
            .raw_os_error(),
        Some(2)
    );
    assert_eq!(
        std::fs::read(m.mnt.join("deep/er/path/../path/c/deep.txt")).unwrap(),
        b"deep"
    );
    let escaped = m
        .mnt
        .join("deep/er/path/../../../..")
        .canonicalize()
        .unwrap();
    assert!(
        !escaped.starts_with(m.mnt.join("deep/er/path")),
        "the kernel resolves `..` by path, not by key"
    );
    assert!(
        std::fs::read(m.mnt.join("deep/er/path/hello.txt")).is_err(),
        "the nested backend sees only its prefix"
    );
}

#[test]
fn ten_thousand_entries_list_and_every_byte_matches_at_random_offsets() {
    let m = mount_with(Vec::new());
    let started = Instant::now();
    let names = std::fs::read_dir(m.mnt.join("local/many")).unwrap().count();
    assert_eq!(names, 10_000);
    let listed = started.elapsed();
    assert!(listed < Duration::from_secs(30), "listing took {listed:?}");
    assert_eq!(
        std::fs::read_to_string(m.mnt.join("local/many/f09999")).unwrap(),
        "9999"
    );

    // Property: any (offset, len) read equals the same bytes of the source.
    let source = std::fs::read(m.src.join("big.bin")).unwrap();
    let mut file = std::fs::File::open(m.mnt.join("local/big.bin")).unwrap();
    for _ in 0..300 {
        let offset = fastrand::usize(0..source.len() + 100);
        let len = fastrand::usize(0..(3 << 20));
        let mut buf = vec![0u8; len];
        file.seek(SeekFrom::Start(offset as u64)).unwrap();
        let mut got = 0;
        while got < len {
            let n = file.read(&mut buf[got..]).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let expect = &source[offset.min(source.len())..(offset + len).min(source.len())];
        assert_eq!(&buf[..got], expect, "offset {offset} len {len}");
    }
}

#[test]
fn sixteen_threads_read_concurrently() {
    let m = mount_with(Vec::new());
    let source = Arc::new(std::fs::read(m.src.join("big.bin")).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let path = m.mnt.join("local/big.bin");
            let many = m.mnt.join("local/many");
            let source = source.clone();
            std::thread::spawn(move || {
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(bytes.len(), source.len());
                assert!(bytes == *source, "thread {t} read different bytes");
                for i in (t..10_000).step_by(400) {
                    assert_eq!(
                        std::fs::read_to_string(many.join(format!("f{i:05}"))).unwrap(),
                        i.to_string()
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_dead_backend_gives_eio_within_its_timeout_and_the_others_keep_working() {
    let memory = InMemory::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(memory.put(&"x.txt".into(), PutPayload::from_static(b"slow")))
        .unwrap();
    let stuck = ThrottleConfig {
        wait_list_per_call: Duration::from_secs(30),
        wait_list_with_delimiter_per_call: Duration::from_secs(30),
        wait_get_per_call: Duration::from_secs(30),
        ..Default::default()
    };
    let dead: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(memory, stuck));
    let m = mount_with(vec![("dead".into(), dead, Duration::from_millis(500))]);
    let started = Instant::now();
    let err = std::fs::read_dir(m.mnt.join("dead"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(m.mnt.join("local/hello.txt")).unwrap(),
        b"hello warpdrive\n",
        "other backends unaffected"
    );
}
