//! warpdrive's control plane: [`server`] answers the REST API of [`api`] on the local socket
//! and, authenticated by [`auth`], on a TCP address; [`jobs`] keeps warm jobs running in the
//! daemon and on disk across restarts; [`client`] is what `warpdrive-mount ctl` speaks.

pub mod api;
pub mod auth;
pub mod client;
pub mod jobs;
pub mod server;

#[cfg(test)]
mod test_support {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use warpdrive_fs::{Backend, Core, FsSettings, namespace};

    /// A core over `store` (one backend, `mem`) with a block cache in `dir/cache`.
    pub(crate) fn memory_core(dir: &Path, store: Arc<dyn object_store::ObjectStore>) -> Arc<Core> {
        let backends = vec![Backend {
            name: "mem".into(),
            store,
            prefix: String::new(),
            timeout: Duration::from_secs(5),
            pages: None,
        }];
        let tree = namespace::build(&[("/mem".to_owned(), 0)]).unwrap();
        let settings = FsSettings {
            uid: 0,
            gid: 0,
            file_mode: 0o444,
            dir_mode: 0o555,
            attr_ttl: Duration::from_secs(60),
            list_cache_entries: 16,
            list_cache_names: 100_000,
            list_cache_ttl: Duration::from_secs(60),
        };
        let cache = blockcache::BlockCache::open(
            &dir.join("cache"),
            blockcache::Settings {
                max_size: 1 << 30,
                block_size: 1 << 20,
                high_water: 0.9,
                low_water: 0.8,
            },
        )
        .unwrap();
        Arc::new(Core::new(backends, tree, settings).with_cache(Arc::new(cache), 4))
    }
}
