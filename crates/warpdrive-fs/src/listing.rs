//! Directories and metadata: listings (cached, bounded, name-sorted), lookups and `stat`,
//! each backend listing one delimited LIST call within the backend's timeout.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::ListResult;

use object_store::GetOptions;
use object_store::path::Path as StorePath;

use crate::core::Core;
use crate::error::FsError;
use crate::inodes::{Attr, Node, display_name, join, store_path, valid_name};

/// A directory's entries, packed for directories of 10^6: every name in one string, 16 bytes
/// per entry in the order the backend gave them, and 4 more for the order by name; shared by
/// the cache and open directory streams.
pub(crate) type Listing = Arc<Entries>;

/// The packed entries of one directory.
#[derive(Default)]
pub(crate) struct Entries {
    names: Names,
    /// In the order they came (a directory's first stream reads them so).
    entries: Chunks,
    /// Positions in `entries` sorted by name, one per name; filled by [`Entries::finish`].
    sorted: Vec<u32>,
}

/// One entry: its inode, where its name lies in [`Entries::names`], and whether it is a
/// directory (which wins over a file of the same name).
#[derive(Clone, Copy)]
struct Entry {
    ino: u64,
    start: u32,
    len: u16,
    dir: bool,
}

/// Entries per chunk (64 KiB).
const ENTRY_CHUNK: usize = 4096;
/// Bytes of names per chunk.
const NAME_CHUNK: usize = 64 * 1024;

/// Entries in fixed chunks: a listing that grows a page at a time never copies itself (a
/// doubling vector of 10^6 entries leaves each outgrown buffer behind in malloc's heap).
#[derive(Default)]
struct Chunks {
    chunks: Vec<Vec<Entry>>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, entry: Entry) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < ENTRY_CHUNK => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(ENTRY_CHUNK);
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn get(&self, at: usize) -> Option<&Entry> {
        self.chunks.get(at / ENTRY_CHUNK)?.get(at % ENTRY_CHUNK)
    }

    /// Gives back the unused end of the last chunk.
    fn trim(&mut self) {
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.shrink_to_fit();
        }
    }
}

/// Names in chunks of [`NAME_CHUNK`] bytes, no name split across two; a name's start is
/// `chunk × NAME_CHUNK + offset`.
#[derive(Default)]
struct Names {
    chunks: Vec<String>,
}

impl Names {
    /// Stores `name`, returning where it starts; none past 4 GiB of chunks.
    fn push(&mut self, name: &str) -> Option<u32> {
        if name.len() > NAME_CHUNK {
            return None;
        }
        if self
            .chunks
            .last()
            .is_none_or(|chunk| chunk.len() + name.len() > NAME_CHUNK)
        {
            self.chunks.push(String::with_capacity(NAME_CHUNK));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let start = index.checked_mul(NAME_CHUNK)?.checked_add(chunk.len())?;
        let start = u32::try_from(start).ok()?;
        chunk.push_str(name);
        Some(start)
    }

    fn get(&self, start: u32, len: u16) -> &str {
        let (chunk, offset) = (start as usize / NAME_CHUNK, start as usize % NAME_CHUNK);
        &self.chunks[chunk][offset..offset + len as usize]
    }

    /// Gives back the unused end of the last chunk.
    fn trim(&mut self) {
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.shrink_to_fit();
        }
    }
}

impl Entries {
    /// Entries in the directory, one per name.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Entries taken so far, in the order they came.
    fn arrived(&self) -> usize {
        self.entries.len
    }

    fn name_of(&self, entry: &Entry) -> &str {
        self.names.get(entry.start, entry.len)
    }

    /// The entry at position `at` in the order the entries came.
    fn entry(&self, at: u32) -> &Entry {
        self.entries
            .get(at as usize)
            .expect("sorted positions point into the entries")
    }

    /// The name and inode at position `at` in name order.
    pub(crate) fn get(&self, at: usize) -> Option<(&str, u64)> {
        let entry = self.entry(*self.sorted.get(at)?);
        Some((self.name_of(entry), entry.ino))
    }

    /// The name and inode at position `at` in the order the entries came.
    fn get_arrived(&self, at: usize) -> Option<(&str, u64)> {
        self.entries.get(at).map(|e| (self.name_of(e), e.ino))
    }

    /// The position of `name`, by a binary search: `ls -l` of n entries costs n log n.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.sorted
            .binary_search_by(|&at| self.name_of(self.entry(at)).cmp(name))
            .ok()
    }

    /// Adds an entry in any order; [`Entries::finish`] sorts.
    pub(crate) fn push(&mut self, name: &str, dir: bool, ino: u64) -> Result<(), FsError> {
        let too_large = || FsError::TooLarge("a directory whose names take more than 4 GiB".into());
        let (Ok(len), Ok(_)) = (u16::try_from(name.len()), u32::try_from(self.entries.len)) else {
            return Err(too_large());
        };
        let start = self.names.push(name).ok_or_else(too_large)?;
        self.entries.push(Entry {
            ino,
            start,
            len,
            dir,
        });
        Ok(())
    }

    /// Orders by name and keeps one entry per name: a directory over a file of the same name
    /// (a key that is both an object and a prefix), else the older inode. `dropped` hears
    /// the name of each file left out. The entries stay where they are (a stream reading
    /// them in the order they came goes on undisturbed); only the 4-byte order is new.
    pub(crate) fn finish(mut self, mut dropped: impl FnMut(&str)) -> Self {
        self.names.trim();
        self.entries.trim();
        let entry = |at: &u32| self.entry(*at);
        let name = |at: &u32| self.name_of(entry(at));
        // `push` refused more than u32::MAX entries.
        let mut sorted: Vec<u32> = (0..self.entries.len as u32).collect();
        sorted.sort_unstable_by(|a, b| {
            name(a)
                .cmp(name(b))
                .then(entry(b).dir.cmp(&entry(a).dir))
                .then(entry(a).ino.cmp(&entry(b).ino))
        });
        sorted.dedup_by(|later, kept| {
            let same = name(later) == name(kept);
            if same && !entry(later).dir {
                dropped(name(later));
            }
            same
        });
        sorted.shrink_to_fit();
        self.sorted = sorted;
        self
    }

    /// Every `(name, inode)` in name order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        (0..self.len()).filter_map(|at| self.get(at))
    }
}

/// A backend listing being taken page by page: the entries so far in the order they came,
/// shared by the directory streams opened meanwhile and by lookups (which finish it).
pub(crate) struct Growing {
    backend: usize,
    /// The directory's key inside the backend.
    key: String,
    /// The same with the backend's prefix: what listed locations start with.
    full: String,
    /// The pages not yet taken; none once the last one is in or one failed.
    pages: tokio::sync::Mutex<Option<BoxStream<'static, object_store::Result<ListResult>>>>,
    taken: Mutex<Entries>,
    /// The sorted listing once the last page is in, or why a page failed.
    outcome: Mutex<Option<Result<Listing, FsError>>>,
    /// When the listing was asked for.
    started: Instant,
}

impl Growing {
    /// The entries taken so far; empty once the listing is finished (they moved into it).
    /// Lock it before looking at the outcome: the two change together.
    fn taken(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outcome(&self) -> Option<Result<Listing, FsError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn listing(&self) -> Option<Listing> {
        self.outcome().and_then(Result::ok)
    }
}

/// What an open directory pages through: a whole listing, or one still coming in (read in
/// the order its entries came, which stays the stream's order to its end).
#[derive(Clone)]
pub(crate) enum DirStream {
    Whole(Listing),
    Growing(Arc<Growing>),
}

/// The part of `location` below the listed directory `full` (empty: the backend's root).
fn strip<'a>(full: &str, location: &'a StorePath) -> Option<&'a str> {
    let text = location.as_ref();
    if full.is_empty() {
        Some(text)
    } else {
        text.strip_prefix(full)?.strip_prefix('/')
    }
}

impl Core {
    /// A fresh kept listing of `ino`, if any.
    fn kept(&self, ino: u64) -> Option<Listing> {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .filter(|(at, _)| at.elapsed() < self.settings.list_cache_ttl)
            .map(|(_, listing)| listing.clone())
    }

    /// The entries of a directory: `(name, inode)`, from the listing cache when fresh.
    pub(crate) async fn list(&self, ino: u64) -> Result<Listing, FsError> {
        if let Some(listing) = self.kept(ino) {
            return Ok(listing);
        }
        match self.node(ino)? {
            Node::File { .. } => Err(FsError::NotDir),
            Node::Synthetic(path) => {
                let dir = self.synthetic(&path).ok_or(FsError::NoEntry)?;
                let mut entries = Entries::default();
                for name in dir.dirs.keys() {
                    let mut child = path.clone();
                    child.push(name.clone());
                    entries.push(name, true, self.intern(Node::Synthetic(child)))?;
                }
                for (name, backend) in &dir.backends {
                    let ino = self.intern(Node::Dir {
                        backend: *backend,
                        key: String::new(),
                    });
                    entries.push(name, true, ino)?;
                }
                let listing = Arc::new(entries.finish(|_| {}));
                self.keep(ino, Instant::now(), listing.clone());
                Ok(listing)
            }
            Node::Dir { backend, key } => {
                // One listing per directory at a time: a lookup during a directory stream
                // finishes the stream's listing rather than taking a second one.
                let growing = self.growing(ino, backend, key);
                self.advance(ino, &growing, usize::MAX).await?;
                growing.listing().ok_or(FsError::Abandoned)
            }
        }
    }

    /// Keeps `listing` of `ino`, within the bounds in directories and in names: the oldest
    /// listings go first. A listing larger than the whole bound is kept alone (dropping it
    /// would cost a LIST per lookup).
    fn keep(&self, ino: u64, taken_at: Instant, listing: Listing) {
        let mut cache = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(&ino);
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
        cache.insert(ino, (taken_at, listing));
    }

    /// The listing of backend directory `ino` being taken, started if none is.
    fn growing(&self, ino: u64, backend: usize, key: String) -> Arc<Growing> {
        let mut growing = self.growing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(taking) = growing.get(&ino) {
            return taking.clone();
        }
        let b = &self.backends[backend];
        let full = join(&b.prefix, &key);
        let prefix = if full.is_empty() {
            None
        } else {
            Some(store_path(&full))
        };
        let pages = match &b.pages {
            Some(paged) => paged.list_pages(prefix.as_ref()),
            None => {
                let store = b.store.clone();
                futures_util::stream::once(async move {
                    store.list_with_delimiter(prefix.as_ref()).await
                })
                .boxed()
            }
        };
        let taking = Arc::new(Growing {
            backend,
            key,
            full,
            pages: tokio::sync::Mutex::new(Some(pages)),
            taken: Mutex::default(),
            outcome: Mutex::default(),
            started: Instant::now(),
        });
        growing.insert(ino, taking.clone());
        taking
    }

    /// Takes pages of `growing` (each within the backend's timeout) until it holds `want`
    /// entries or the last page is in; then its sorted listing is kept for lookups. A
    /// directory of 10^6 keys is never held whole as the store's metadata, and a directory
    /// stream returns its first entries once the first page is in.
    async fn advance(&self, ino: u64, growing: &Growing, want: usize) -> Result<(), FsError> {
        loop {
            if let Some(outcome) = growing.outcome() {
                return outcome.map(|_| ());
            }
            if growing.taken().arrived() >= want {
                return Ok(());
            }
            let mut pages = growing.pages.lock().await;
            // Another reader may have taken the pages wanted while this one waited.
            let Some(stream) = pages.as_mut() else {
                continue;
            };
            if growing.taken().arrived() >= want {
                return Ok(());
            }
            let next = self
                .backend_call(growing.backend, "list", async {
                    stream.next().await.transpose()
                })
                .await;
            let outcome = match next {
                Ok(Some(page)) => {
                    self.stats.list_pages.fetch_add(1, Ordering::Relaxed);
                    match self.take_page(growing, page) {
                        Ok(()) => continue,
                        Err(err) => Err(err),
                    }
                }
                Ok(None) => {
                    let b = &self.backends[growing.backend];
                    // The entries move into the listing (no copy of 10^6 entries), under the
                    // lock streams read them by, and the outcome is set before it is let go.
                    let mut taken = growing.taken();
                    let sorted = std::mem::take(&mut *taken).finish(|name| {
                        tracing::warn!(backend = %b.name, key = %join(&growing.key, name), "a key is both a file and a prefix; showing the directory");
                        self.metrics.key_skipped(&b.name, "file_and_prefix");
                    });
                    let listing = Arc::new(sorted);
                    *growing.outcome.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Ok(listing.clone()));
                    drop(taken);
                    // Its age counts from its start: a stream read slowly does not make an
                    // old listing look fresh.
                    self.keep(ino, growing.started, listing.clone());
                    Ok(listing)
                }
                Err(err) => Err(err),
            };
            *pages = None;
            if let Err(err) = &outcome {
                *growing.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(Err(err.clone()));
            }
            self.growing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ino);
            return outcome.map(|_| ());
        }
    }

    /// Adds one page of a backend listing to the entries `growing` has taken, interning every
    /// entry it shows (streams wait on that lock for the page, no longer).
    fn take_page(&self, growing: &Growing, page: object_store::ListResult) -> Result<(), FsError> {
        let (backend, key) = (growing.backend, growing.key.as_str());
        let b = &self.backends[backend];
        let mut entries = growing.taken();
        if let Some(skipped) = page.extensions.get::<object_store::list::SkippedKeys>() {
            for key in &skipped.0 {
                tracing::warn!(backend = %b.name, key = %key.escape_debug(), "skipping a key that is no valid path (an empty, `.` or `..` segment, or a control character)");
                self.metrics.key_skipped(&b.name, "invalid_key");
            }
        }
        for dir in page.common_prefixes {
            let Some(raw) = strip(&growing.full, &dir) else {
                continue;
            };
            let name = display_name(raw);
            if !valid_name(&name) {
                tracing::warn!(backend = %b.name, key = %dir, "skipping a key prefix that is not a valid path component");
                self.metrics.key_skipped(&b.name, "invalid_name");
                continue;
            }
            let ino = self.intern(Node::Dir {
                backend,
                key: join(key, raw),
            });
            entries.push(&name, true, ino)?;
        }
        let now = Instant::now();
        for object in page.objects {
            let Some(raw) = strip(&growing.full, &object.location) else {
                continue;
            };
            let name = display_name(raw);
            if name.is_empty() {
                continue; // the directory marker of this directory itself
            }
            if !valid_name(&name) {
                tracing::warn!(backend = %b.name, key = %object.location, "skipping a key that is not a valid path component");
                self.metrics.key_skipped(&b.name, "invalid_name");
                continue;
            }
            let ino = self.intern(Node::File {
                backend,
                key: join(key, raw),
                size: object.size,
                mtime: object.last_modified.into(),
                etag: object.e_tag,
                checked: Some(now),
            });
            entries.push(&name, false, ino)?;
        }
        Ok(())
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
            .find(name)
            .and_then(|at| listing.get(at))
            .map(|(_, ino)| ino)
            .ok_or(FsError::NoEntry)?;
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
    /// refreshes mid-stream. A backend directory not listed yet is not waited for: the
    /// stream reads its entries as the pages come in.
    pub async fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let stream = match (self.kept(ino), self.node(ino)?) {
            (Some(listing), _) => DirStream::Whole(listing),
            (None, Node::Dir { backend, key }) => {
                DirStream::Growing(self.growing(ino, backend, key))
            }
            (None, _) => DirStream::Whole(self.list(ino).await?),
        };
        let fh = self
            .next_handle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, stream);
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
        let want = from.saturating_add(max);
        // Entries at positions `from..want` of `listing`, by name or in the order they came.
        let page = |listing: &Entries, arrived: bool| {
            let end = if arrived {
                listing.arrived()
            } else {
                listing.len()
            }
            .min(want);
            let inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            (from..end)
                .filter_map(|at| {
                    let (name, child) = if arrived {
                        listing.get_arrived(at)?
                    } else {
                        listing.get(at)?
                    };
                    inodes
                        .shape(child)
                        .map(|shape| (at, name.to_owned(), self.attr_of_shape(child, shape)))
                })
                .collect()
        };
        match pinned {
            Some(DirStream::Growing(growing)) => {
                self.advance(ino, &growing, want).await?;
                let taken = growing.taken();
                match growing.listing() {
                    Some(listing) => {
                        drop(taken);
                        Ok(page(&listing, true))
                    }
                    None => Ok(page(&taken, true)),
                }
            }
            Some(DirStream::Whole(listing)) => Ok(page(&listing, false)),
            None => Ok(page(&*self.list(ino).await?, false)),
        }
    }

    /// The object may have changed under us: list again next time.
    pub(crate) fn forget_listings(&self) {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_name_and_a_directory_wins_over_a_file_of_its_name() {
        let mut entries = Entries::default();
        for (name, dir, ino) in [
            ("b", false, 10),
            ("a", false, 11),
            ("é", false, 12),
            ("a", true, 13),
            ("c", false, 14),
            ("c", false, 9),
        ] {
            entries.push(name, dir, ino).unwrap();
        }
        let mut dropped = Vec::new();
        let entries = entries.finish(|name| dropped.push(name.to_owned()));
        let listed: Vec<(&str, u64)> = entries.iter().collect();
        assert_eq!(listed, [("a", 13), ("b", 10), ("c", 9), ("é", 12)]);
        assert_eq!(
            dropped,
            ["a", "c"],
            "the file `a` and the newer `c` are left out"
        );
        assert_eq!(entries.find("b"), Some(1));
        assert_eq!(entries.find("é"), Some(3));
        assert_eq!(entries.find("d"), None);
        assert_eq!(entries.get(4), None);
        assert_eq!(std::mem::size_of::<Entry>(), 16, "16 bytes per entry");
    }

    #[test]
    fn names_and_entries_across_many_chunks_come_back_whole() {
        let mut entries = Entries::default();
        // Names of 1 to 255 bytes: 20,000 of them fill about 40 name chunks (none split) and
        // 5 entry chunks.
        let names: Vec<String> = (0..20_000usize)
            .map(|i| format!("{i:05}{}", "x".repeat(i % 251)))
            .collect();
        for (i, name) in names.iter().enumerate().rev() {
            entries.push(name, false, i as u64 + 2).unwrap();
        }
        assert_eq!(entries.arrived(), names.len());
        assert_eq!(
            entries.get_arrived(0),
            Some((names[19_999].as_str(), 20_001))
        );
        let entries = entries.finish(|_| panic!("no duplicates"));
        assert!(entries.names.chunks.len() > 30);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(entries.find(name), Some(i));
            assert_eq!(entries.get(i), Some((name.as_str(), i as u64 + 2)));
        }
        assert!(
            Entries::default()
                .push(&"y".repeat(70_000), false, 1)
                .is_err(),
            "a name longer than a chunk is refused, not split"
        );
    }
}
