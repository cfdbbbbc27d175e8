//! Directories and metadata: listings (cached, bounded, name-sorted), lookups and `stat`,
//! each backend listing one delimited LIST call within the backend's timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use object_store::GetOptions;
use object_store::path::Path as StorePath;

use crate::core::Core;
use crate::error::FsError;
use crate::inodes::{Attr, Node, display_name, join, store_path, valid_name};

/// A directory's entries: `(name, inode)`, sorted by name.
pub(crate) type Listing = Arc<Vec<(String, u64)>>;

impl Core {
    /// The entries of a directory: `(name, inode)`, from the listing cache when fresh.
    pub(crate) async fn list(&self, ino: u64) -> Result<Listing, FsError> {
        if let Some((at, listing)) = self
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            && at.elapsed() < self.settings.list_cache_ttl
        {
            return Ok(listing.clone());
        }
        let entries = match self.node(ino)? {
            Node::File { .. } => return Err(FsError::NotDir),
            Node::Synthetic(path) => {
                let dir = self.synthetic(&path).ok_or(FsError::NoEntry)?;
                let mut entries = Vec::new();
                for name in dir.dirs.keys() {
                    let mut child = path.clone();
                    child.push(name.clone());
                    entries.push((name.clone(), self.intern(Node::Synthetic(child))));
                }
                for (name, backend) in &dir.backends {
                    entries.push((
                        name.clone(),
                        self.intern(Node::Dir {
                            backend: *backend,
                            key: String::new(),
                        }),
                    ));
                }
                entries.sort();
                entries
            }
            Node::Dir { backend, key } => self.list_backend(backend, &key).await?,
        };
        let listing = Arc::new(entries);
        let mut cache = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(&ino);
        // Bounded in directories and in names: the oldest listings go first. A listing larger
        // than the whole bound is kept alone (dropping it would cost a LIST per lookup).
        let names_bound = self.settings.list_cache_names.max(1);
        let mut names: usize = cache.values().map(|(_, l)| l.len()).sum::<usize>() + listing.len();
        while !cache.is_empty()
            && (cache.len() >= self.settings.list_cache_entries.max(1) || names > names_bound)
        {
            let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k) else {
                break;
            };
            if let Some((_, gone)) = cache.remove(&oldest) {
                names -= gone.len();
            }
        }
        cache.insert(ino, (Instant::now(), listing.clone()));
        Ok(listing)
    }

    async fn list_backend(&self, backend: usize, key: &str) -> Result<Vec<(String, u64)>, FsError> {
        let b = &self.backends[backend];
        let full = join(&b.prefix, key);
        let prefix = if full.is_empty() {
            None
        } else {
            Some(store_path(&full))
        };
        let store = b.store.clone();
        let listed = self
            .backend_call(backend, "list", async move {
                store.list_with_delimiter(prefix.as_ref()).await
            })
            .await?;
        if let Some(skipped) = listed.extensions.get::<object_store::list::SkippedKeys>() {
            for key in &skipped.0 {
                tracing::warn!(backend = %b.name, key = %key.escape_debug(), "skipping a key that is no valid path (an empty, `.` or `..` segment, or a control character)");
                self.metrics.key_skipped(&b.name, "invalid_key");
            }
        }
        let strip = |location: &StorePath| -> Option<String> {
            let text = location.as_ref();
            let rest = if full.is_empty() {
                text
            } else {
                text.strip_prefix(full.as_str())?.strip_prefix('/')?
            };
            Some(rest.to_owned())
        };
        let mut names: HashMap<String, u64> = HashMap::new();
        for dir in &listed.common_prefixes {
            let Some(raw) = strip(dir) else { continue };
            let name = display_name(&raw);
            if !valid_name(&name) {
                tracing::warn!(backend = %b.name, key = %dir, "skipping a key prefix that is not a valid path component");
                self.metrics.key_skipped(&b.name, "invalid_name");
                continue;
            }
            let ino = self.intern(Node::Dir {
                backend,
                key: join(key, &raw),
            });
            names.insert(name, ino);
        }
        for object in &listed.objects {
            let Some(raw) = strip(&object.location) else {
                continue;
            };
            let name = display_name(&raw);
            if name.is_empty() {
                continue; // the directory marker of this directory itself
            }
            if !valid_name(&name) {
                tracing::warn!(backend = %b.name, key = %object.location, "skipping a key that is not a valid path component");
                self.metrics.key_skipped(&b.name, "invalid_name");
                continue;
            }
            if names.contains_key(&name) {
                tracing::warn!(backend = %b.name, key = %object.location, "a key is both a file and a prefix; showing the directory");
                self.metrics.key_skipped(&b.name, "file_and_prefix");
                continue;
            }
            let ino = self.intern(Node::File {
                backend,
                key: join(key, &raw),
                size: object.size,
                mtime: object.last_modified.into(),
                etag: object.e_tag.clone(),
                checked: Some(Instant::now()),
            });
            names.insert(name, ino);
        }
        let mut entries: Vec<(String, u64)> = names.into_iter().collect();
        entries.sort();
        Ok(entries)
    }

    /// Looks `name` up in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        if !valid_name(name) {
            return Err(if name == "." || name == ".." {
                FsError::InvalidName(name.to_owned())
            } else {
                FsError::NoEntry
            });
        }
        let listing = self.list(parent).await?;
        // Listings are sorted by name: a lookup is a binary search, so `ls -l` of a directory
        // of n entries costs n log n, not n² (a linear scan made 300,000 entries take minutes).
        let ino = listing
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map(|at| listing[at].1)
            .map_err(|_| FsError::NoEntry)?;
        self.getattr(ino).await
    }

    /// The attributes of `ino`, file metadata checked again after `attr_ttl`.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.node(ino)?;
        if let Node::File {
            backend,
            key,
            checked,
            ..
        } = &node
            && checked.is_none_or(|at| at.elapsed() >= self.settings.attr_ttl)
        {
            let fresh = self.head_file(*backend, key).await?;
            return Ok(self.attr_of(ino, &fresh));
        }
        Ok(self.attr_of(ino, &node))
    }

    /// The object's metadata from one HEAD, remembered for its inode.
    pub(crate) async fn head_file(&self, backend: usize, key: &str) -> Result<Node, FsError> {
        let b = &self.backends[backend];
        let path = store_path(&join(&b.prefix, key));
        let store = b.store.clone();
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        let meta = self
            .backend_call(backend, "head", async move {
                store.get_opts(&path, options).await.map(|r| r.meta)
            })
            .await?;
        let fresh = Node::File {
            backend,
            key: key.to_owned(),
            size: meta.size,
            mtime: meta.last_modified.into(),
            etag: meta.e_tag,
            checked: Some(Instant::now()),
        };
        self.intern(fresh.clone());
        Ok(fresh)
    }

    /// Opens a directory stream: the listing it pages through is fixed here, so entries
    /// neither repeat nor vanish between the kernel's readdir calls when the listing cache
    /// refreshes mid-stream.
    pub async fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let listing = self.list(ino).await?;
        let fh = self
            .next_handle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, listing);
        Ok(fh)
    }

    /// Ends a directory stream.
    pub fn releasedir(&self, fh: u64) {
        self.dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }

    /// At most `max` entries with their attributes and positions, from position `from` of the
    /// directory's listing (the stream `fh` pins, else the current one). Each call costs the
    /// page it returns, not the directory: `ls` of n entries is n, not n² / page.
    pub async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        from: usize,
        max: usize,
    ) -> Result<Vec<(usize, String, Attr)>, FsError> {
        let pinned = self
            .dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned();
        let listing = match pinned {
            Some(listing) => listing,
            None => self.list(ino).await?,
        };
        let page = listing.get(from..).unwrap_or_default();
        let page = &page[..page.len().min(max)];
        let inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(page
            .iter()
            .enumerate()
            .filter_map(|(at, (name, child))| {
                inodes
                    .nodes
                    .get(child)
                    .map(|node| (from + at, name.clone(), self.attr_of(*child, node)))
            })
            .collect())
    }

    /// The object may have changed under us: list again next time.
    pub(crate) fn forget_listings(&self) {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
