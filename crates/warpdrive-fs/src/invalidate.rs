//! Invalidate: forget what the mount knows under a prefix (listings and ETags), so the next
//! lookup lists again and the next open asks the backend for the object's version at once,
//! instead of trusting it until `attr_ttl`. The kernel's own caches are the FUSE layer's to
//! drop: the inodes touched are handed back for that.

use crate::core::Core;
use crate::inodes::NodeRef;
use crate::warm::WarmError;

/// What an invalidation touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalidated {
    /// Files whose version is checked again at their next use.
    pub files: u64,
    /// Directories whose listing is dropped.
    pub dirs: u64,
    /// Their inodes, for the kernel's caches.
    pub inodes: Vec<u64>,
}

/// Whether `key` lies under the directory prefix `prefix` (empty: everything).
fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Core {
    /// The backend named `backend` and `prefix` made a clean relative key prefix, refused
    /// when it tries to leave the backend: the check every prefix request goes through.
    pub fn target(&self, backend: &str, prefix: &str) -> Result<(usize, String), WarmError> {
        let Some(index) = self.backends.iter().position(|b| b.name == backend) else {
            return Err(WarmError::UnknownBackend {
                name: backend.to_owned(),
                known: self
                    .backends
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|s| s == ".." || s == "." || (s.is_empty() && !prefix.is_empty()))
            || prefix.contains('\0')
        {
            return Err(WarmError::BadPrefix(prefix.to_owned()));
        }
        Ok((index, prefix.to_owned()))
    }

    /// Forgets listings and ETags of backend `backend` under `prefix` (empty: all of it).
    pub fn invalidate(&self, backend: &str, prefix: &str) -> Result<Invalidated, WarmError> {
        let (index, prefix) = self.target(backend, prefix)?;
        let parent = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut done = Invalidated::default();
        let mut dirs = Vec::new();
        {
            let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            let mut files = Vec::new();
            for (ino, node) in inodes.iter() {
                match node {
                    NodeRef::File { backend, key } if backend == index && under(key, &prefix) => {
                        files.push(ino);
                    }
                    // The directories under the prefix, and the one holding it (where entries
                    // may have appeared or changed size).
                    NodeRef::Dir { backend, key }
                        if backend == index && (under(key, &prefix) || key == parent) =>
                    {
                        dirs.push(ino);
                        done.inodes.push(ino);
                    }
                    _ => {}
                }
            }
            for ino in files {
                inodes.uncheck(ino);
                done.files += 1;
                done.inodes.push(ino);
            }
        }
        let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        for ino in &dirs {
            listings.remove(ino);
        }
        done.dirs = dirs.len() as u64;
        tracing::info!(%backend, prefix = %prefix, files = done.files, dirs = done.dirs, "invalidated");
        Ok(done)
    }

    /// Drops cached blocks of backend `backend` under `prefix`; the next read fetches again.
    /// Returns the inodes of the files known under it, whose pages the kernel should drop too.
    pub fn evict(
        &self,
        backend: &str,
        prefix: &str,
    ) -> Result<(blockcache::Evicted, Vec<u64>), WarmError> {
        let Some(cached) = &self.cached else {
            return Err(WarmError::NoCache);
        };
        let (index, prefix) = self.target(backend, prefix)?;
        let b = &self.backends[index];
        let evicted = cached.cache.evict_prefix(&b.name, &prefix);
        // Blocks just fetched and still held in memory would answer reads as well.
        cached.recent.clear();
        let files = self
            .inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, node)| {
                matches!(node, NodeRef::File { backend, key } if *backend == index && under(key, &prefix))
            })
            .map(|(ino, _)| ino)
            .collect();
        tracing::info!(%backend, prefix = %prefix, blocks = evicted.blocks, bytes = evicted.bytes, "evicted");
        Ok((evicted, files))
    }
}
