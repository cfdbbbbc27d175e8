//! A local backend that never leaves its root: object_store's local store follows symlinks, so
//! a link to `/etc/passwd` or `..` would read outside `root` (and the backend's `prefix`).
//! Every read resolves its real path first and is refused (PermissionDenied, EACCES to the
//! reader) when that is outside; listings leave such entries out. The mount is read-only, so
//! writes are not offered at all.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::paged::{PagedList, page_keys};

/// A [`LocalFileSystem`] confined to the real path of `allowed` (its root with the prefix).
#[derive(Debug)]
pub struct Confined {
    inner: Arc<LocalFileSystem>,
    /// The store's root as configured.
    root: PathBuf,
    allowed: PathBuf,
}

impl fmt::Display for Confined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Confined({})", self.allowed.display())
    }
}

impl Confined {
    /// `inner` serves `root`; reads must resolve inside `root/prefix`.
    pub fn new(inner: LocalFileSystem, root: &FsPath, prefix: &str) -> std::io::Result<Self> {
        let allowed = root
            .join(prefix)
            .canonicalize()
            .or_else(|_| root.canonicalize())?;
        Ok(Self {
            inner: Arc::new(inner),
            root: root.to_owned(),
            allowed,
        })
    }

    /// Whether `location` resolves (following every link) inside the allowed directory. A path
    /// that does not exist is left to the inner store (it answers NotFound).
    fn inside(inner: &LocalFileSystem, allowed: &FsPath, location: &Path) -> bool {
        let Ok(path) = inner.path_to_filesystem(location) else {
            return false;
        };
        match path.canonicalize() {
            Ok(real) => real.starts_with(allowed),
            Err(_) => !path.exists() && std::fs::symlink_metadata(&path).is_err(),
        }
    }

    /// A directory's entries one by one, each resolved on its own: what cannot be followed or
    /// leads outside is left out.
    async fn list_entries(&self, prefix: Path) -> Result<ListResult> {
        let dir = if prefix.as_ref().is_empty() {
            self.root.clone()
        } else {
            self.inner.path_to_filesystem(&prefix)?
        };
        let (inner, allowed) = (self.inner.clone(), self.allowed.clone());
        let names = tokio::task::spawn_blocking(move || {
            let mut dirs = Vec::new();
            let mut files = Vec::new();
            let mut skipped = Vec::new();
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Some(location) = key_of(&prefix, &entry, &mut skipped) else {
                    continue;
                };
                if !Self::inside(&inner, &allowed, &location) {
                    continue;
                }
                match std::fs::metadata(entry.path()) {
                    Ok(meta) if meta.is_dir() => dirs.push(location),
                    Ok(meta) if meta.is_file() => files.push(location),
                    _ => {}
                }
            }
            (dirs, files, skipped)
        })
        .await
        .map_err(|err| object_store::Error::Generic {
            store: "local",
            source: Box::new(err),
        })?;
        let (common_prefixes, files, skipped) = names;
        let mut objects = Vec::with_capacity(files.len());
        for location in files {
            if let Ok(meta) = self.inner.head(&location).await {
                objects.push(meta);
            }
        }
        let mut extensions = Default::default();
        object_store::list::SkippedKeys(skipped).merge_into(&mut extensions);
        Ok(ListResult {
            common_prefixes,
            objects,
            extensions,
        })
    }

    /// One directory's entries as pages ([`page_keys`]: small first, then up to
    /// [`crate::paged::PAGE_KEYS`]), read on a blocking thread that
    /// stays at most two pages ahead of the reader. Only symbolic links are resolved (an
    /// entry that is no link lies where its directory lies); ETags are the local store's own,
    /// so the versions a listing reports are the ones a read checks.
    fn read_pages(
        inner: &LocalFileSystem,
        root: &FsPath,
        allowed: &FsPath,
        prefix: Path,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ListResult>>> {
        let dir = if prefix.as_ref().is_empty() {
            root.to_owned()
        } else {
            inner.path_to_filesystem(&prefix)?
        };
        let (send, receive) = tokio::sync::mpsc::channel(2);
        let allowed = allowed.to_owned();
        tokio::task::spawn_blocking(move || {
            // The directory itself must resolve inside (it may be reached through a link).
            let entries = match dir.canonicalize() {
                Ok(real) if real.starts_with(&allowed) => std::fs::read_dir(&dir),
                Ok(_) => return,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
                Err(err) => Err(err),
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
                Err(err) => {
                    let _ = send.blocking_send(Err(object_store::Error::Generic {
                        store: "local",
                        source: Box::new(err),
                    }));
                    return;
                }
            };
            let mut page = ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
                extensions: Default::default(),
            };
            let mut skipped = Vec::new();
            let mut sent = 0u32;
            for entry in entries.flatten() {
                let Some(location) = key_of(&prefix, &entry, &mut skipped) else {
                    continue;
                };
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let meta = if kind.is_symlink() {
                    match entry.path().canonicalize() {
                        Ok(real) if real.starts_with(&allowed) => std::fs::metadata(real),
                        _ => continue,
                    }
                } else {
                    entry.metadata()
                };
                let Ok(meta) = meta else { continue };
                if meta.is_dir() {
                    page.common_prefixes.push(location);
                } else if meta.is_file() && location.filename().is_some_and(local_file_name) {
                    page.objects.push(local_meta(location, &meta));
                } else {
                    continue;
                }
                if page.objects.len() + page.common_prefixes.len() >= page_keys(sent) {
                    sent = sent.saturating_add(1);
                    let full = std::mem::replace(
                        &mut page,
                        ListResult {
                            common_prefixes: Vec::new(),
                            objects: Vec::new(),
                            extensions: Default::default(),
                        },
                    );
                    if send.blocking_send(Ok(full)).is_err() {
                        return; // the reader gave up
                    }
                }
            }
            object_store::list::SkippedKeys(skipped).merge_into(&mut page.extensions);
            let _ = send.blocking_send(Ok(page));
        });
        Ok(receive)
    }

    fn refuse(location: &Path) -> object_store::Error {
        object_store::Error::PermissionDenied {
            path: location.to_string(),
            source: "it resolves outside the backend's root (a symbolic link)".into(),
        }
    }

    fn read_only(operation: &str) -> object_store::Error {
        object_store::Error::NotImplemented {
            operation: operation.to_owned(),
            implementer: "warpdrive's confined local store (the mount is read-only)".to_owned(),
        }
    }
}

/// The key of directory entry `entry` of `prefix`, spelled as the local store's own listing
/// spells it (the raw name, not percent-encoded): its reads find the file by that spelling,
/// and warm, which lists through the store, keys blocks the way reads do. A name no key can
/// hold (not UTF-8, a control character) goes to `skipped` instead.
fn key_of(prefix: &Path, entry: &std::fs::DirEntry, skipped: &mut Vec<String>) -> Option<Path> {
    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
        skipped.push(format!("{prefix}/{}", entry.file_name().to_string_lossy()));
        return None;
    };
    let full = if prefix.as_ref().is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    // A control character (C1 ones too) is no path on any backend; Path::parse refuses the
    // ASCII ones (and `.`/`..`, which read_dir never gives).
    let location = Path::parse(&full)
        .ok()
        .filter(|_| !full.chars().any(char::is_control));
    if location.is_none() {
        skipped.push(full);
    }
    location
}

/// Whether the local store shows a file of this name: it hides `name#digits`, its own
/// uploads in progress (`is_valid_file_path` in object_store's local store).
fn local_file_name(name: &str) -> bool {
    match name.split_once('#') {
        Some((_, suffix)) if !suffix.is_empty() => !suffix.bytes().all(|b| b.is_ascii_digit()),
        _ => true,
    }
}

/// A file's metadata as object_store's local store reports it: the same ETag
/// (`"inode-mtime_micros-size"`, hex) its reads check versions against.
fn local_meta(location: Path, meta: &std::fs::Metadata) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let micros = modified
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    ObjectMeta {
        location,
        last_modified: modified.into(),
        size: meta.len(),
        e_tag: Some(format!("\"{:x}-{micros:x}-{:x}\"", meta.ino(), meta.len())),
        version: None,
    }
}

impl PagedList for Confined {
    fn list_pages(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ListResult>> {
        let prefix = prefix.cloned().unwrap_or_default();
        match Self::read_pages(&self.inner, &self.root, &self.allowed, prefix) {
            Ok(receive) => stream::unfold(receive, |mut receive| async move {
                receive.recv().await.map(|page| (page, receive))
            })
            .boxed(),
            Err(err) => stream::once(async move { Err(err) }).boxed(),
        }
    }
}

#[async_trait]
impl ObjectStore for Confined {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(Self::read_only("put"))
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(Self::read_only("put_multipart"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !Self::inside(&self.inner, &self.allowed, location) {
            return Err(Self::refuse(location));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations.map(|_| Err(Self::read_only("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (inner, allowed) = (self.inner.clone(), self.allowed.clone());
        self.inner
            .list(prefix)
            .filter(move |item| {
                let keep = match item {
                    Ok(meta) => Self::inside(&inner, &allowed, &meta.location),
                    Err(_) => true,
                };
                std::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let (inner, allowed) = (&self.inner, &self.allowed);
        match self.inner.list_with_delimiter(prefix).await {
            Ok(mut listed) => {
                listed
                    .common_prefixes
                    .retain(|dir| Self::inside(inner, allowed, dir));
                listed
                    .objects
                    .retain(|object| Self::inside(inner, allowed, &object.location));
                Ok(listed)
            }
            // The local store gives up on a whole directory for one entry it cannot follow (a
            // link loop such as `up -> ..`, a dangling link): list it entry by entry instead.
            Err(err) => {
                tracing::warn!(prefix = ?prefix.map(Path::as_ref), %err, "listing entry by entry: one entry cannot be followed");
                self.list_entries(prefix.cloned().unwrap_or_default()).await
            }
        }
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(Self::read_only("copy"))
    }
}
