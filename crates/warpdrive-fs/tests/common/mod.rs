//! Helpers shared by the cache and readahead tests: a local backend, a cache, a real mount.

#![allow(dead_code)]

pub(crate) mod emulators;
pub(crate) mod faulty;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blockcache::{BlockCache, Settings};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use prometheus_client::registry::Registry;
use warpdrive_fs::confined::Confined;
use warpdrive_fs::fuse::{MountSettings, Ttls, WarpFs};
use warpdrive_fs::metrics::FsMetrics;
use warpdrive_fs::readahead::ReadaheadSettings;
use warpdrive_fs::{Backend, Core, FsSettings, namespace};

pub(crate) const BLOCK: u64 = 256 * 1024;

pub(crate) fn cache(dir: &Path, max: u64) -> Arc<BlockCache> {
    Arc::new(
        BlockCache::open(
            dir,
            Settings {
                max_size: max,
                block_size: BLOCK,
                high_water: 0.9,
                low_water: 0.8,
            },
        )
        .unwrap(),
    )
}

/// A core over `src` as warpdrive-mount serves a local backend: confined to its root and
/// listed page by page.
fn bare_core(src: &Path, cache: Arc<BlockCache>) -> Core {
    paged_core(src, fs_settings()).with_cache(cache, 8)
}

/// A core with no cache over `src` as warpdrive-mount serves a local backend (confined,
/// listed page by page), mounted at `/local`.
pub(crate) fn paged_core(src: &Path, settings: FsSettings) -> Core {
    let confined =
        Arc::new(Confined::new(LocalFileSystem::new_with_prefix(src).unwrap(), src, "").unwrap());
    let backends = vec![Backend {
        name: "local".into(),
        store: confined.clone(),
        prefix: String::new(),
        timeout: Duration::from_secs(10),
        pages: Some(confined),
    }];
    let tree = namespace::build(&[("/local".to_owned(), 0)]).unwrap();
    Core::new(backends, tree, settings)
}

/// What the helpers' cores show and cache: short TTLs, so tests see changes quickly.
pub(crate) fn fs_settings() -> FsSettings {
    FsSettings {
        uid: 0,
        gid: 0,
        file_mode: 0o444,
        dir_mode: 0o555,
        attr_ttl: Duration::from_millis(200),
        list_cache_entries: 64,
        list_cache_names: 1_000_000,
        list_cache_ttl: Duration::from_millis(200),
    }
}

/// A core with no cache over one store mounted at `/local`, with `settings`.
pub(crate) fn uncached_core(
    name: &str,
    store: Arc<dyn ObjectStore>,
    timeout: Duration,
    settings: FsSettings,
) -> Core {
    let backends = vec![Backend {
        name: name.into(),
        store,
        prefix: String::new(),
        timeout,
        pages: None,
    }];
    let tree = namespace::build(&[("/local".to_owned(), 0)]).unwrap();
    Core::new(backends, tree, settings)
}

/// A core over any store (the fault-injecting one among them), with `timeout` per call. The
/// backend is called `name` in metrics and mounted at `/local`.
pub(crate) fn core_over(
    name: &str,
    store: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    timeout: Duration,
) -> Core {
    uncached_core(name, store, timeout, fs_settings()).with_cache(cache, 8)
}

/// A core without readahead or registered metrics.
pub(crate) fn core(src: &Path, cache: Arc<BlockCache>) -> Arc<Core> {
    Arc::new(bare_core(src, cache))
}

/// A core with readahead and its metrics registered under `warpdrive_` in `registry`.
pub(crate) fn core_with(
    src: &Path,
    cache: Arc<BlockCache>,
    readahead: ReadaheadSettings,
    registry: &mut Registry,
) -> Arc<Core> {
    let metrics = FsMetrics::register(
        registry.sub_registry_with_prefix("warpdrive"),
        Some(cache.clone()),
    );
    Arc::new(
        bare_core(src, cache)
            .with_readahead(readahead)
            .with_metrics(metrics),
    )
}

/// The value of one metric line (`name` with its labels, as printed), 0 when absent.
pub(crate) fn metric(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

pub(crate) struct Mount {
    session: Option<fuser::BackgroundSession>,
    pub(crate) mnt: PathBuf,
    pub(crate) core: Arc<Core>,
}

impl Drop for Mount {
    /// Unmounts, also when a failing assertion unwinds: the session's own unmount can meet a
    /// busy mount (the kernel still finishing a request), so a lazy unmount follows if the
    /// mount is still there.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let shown = self.mnt.display().to_string();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(shown.as_str()))
        {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .status();
        }
    }
}

pub(crate) fn mount(
    dir: &Path,
    name: &str,
    core: Arc<Core>,
    runtime: &tokio::runtime::Runtime,
) -> Mount {
    mount_passthrough(dir, name, core, runtime, false)
}

/// [`mount`], handing whole cached files to the kernel when `passthrough`.
pub(crate) fn mount_passthrough(
    dir: &Path,
    name: &str,
    core: Arc<Core>,
    runtime: &tokio::runtime::Runtime,
    passthrough: bool,
) -> Mount {
    let mnt = dir.join(name);
    std::fs::create_dir_all(&mnt).unwrap();
    let ttls = Ttls {
        entry: Duration::from_millis(100),
        attr: Duration::from_millis(100),
        negative: Duration::from_millis(100),
    };
    let fs = WarpFs::new(core.clone(), runtime.handle().clone(), ttls);
    let session = warpdrive_fs::fuse::mount(
        fs,
        &mnt,
        &MountSettings {
            allow_other: false,
            ttls,
            threads: 4,
            passthrough,
        },
    )
    .expect("mount (root, /dev/fuse)");
    Mount {
        session: Some(session),
        mnt,
        core,
    }
}

pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until every cache write the core queued is on disk (they are written behind).
pub(crate) fn settle(core: &Core) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while core.pending_stores() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "cache writes did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
