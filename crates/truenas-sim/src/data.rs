//! The real bytes behind the model: filesystems are directories under `<data>/mnt`, zvols are
//! sparse files under `<data>/zvol`, snapshots are frozen copies under `<data>/.snapshots`.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The data directory and its layout.
#[derive(Debug)]
pub(crate) struct DataDir {
    root: PathBuf,
    /// Bytes each dataset holds on disk, with when they were measured: a walk of a dataset's
    /// files is repeated at most once per [`USAGE_TTL`] (writes by nodes show up within it),
    /// or at once after a call that changed the dataset, so space accounting costs what the
    /// reply needs, not a walk of the whole pool per call.
    usage: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
    /// What every dataset is charged (own bytes plus unused reservation) and the sums below
    /// each one, kept up to date by deltas: a subtree's usage is one lookup, not a walk.
    ledger: std::sync::Mutex<Ledger>,
}

/// The space ledger: each dataset's charge and, per dataset, the sum of the charges of
/// everything below it. Rebuilt from scratch every [`LEDGER_REBUILD`] (so writes by nodes
/// show up in their parents), changed by deltas in between (so a create costs what it
/// touches).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    charged: std::collections::BTreeMap<String, u64>,
    below: std::collections::HashMap<String, u64>,
    rebuilt: Option<std::time::Instant>,
}

impl Ledger {
    /// Whether a full rebuild is due.
    pub(crate) fn due(&self) -> bool {
        self.rebuilt.is_none_or(|at| at.elapsed() >= LEDGER_REBUILD)
    }

    /// Starts over from `charges` (every dataset and its charge).
    pub(crate) fn rebuild(&mut self, charges: impl Iterator<Item = (String, u64)>) {
        self.charged.clear();
        self.below.clear();
        for (name, charge) in charges {
            self.set(&name, Some(charge));
        }
        self.rebuilt = Some(std::time::Instant::now());
    }

    /// Sets (or with `None` removes) a dataset's charge, moving every ancestor's sum.
    pub(crate) fn set(&mut self, name: &str, charge: Option<u64>) {
        let old = match charge {
            Some(new) => self.charged.insert(name.to_owned(), new),
            None => self.charged.remove(name),
        }
        .unwrap_or(0);
        let new = charge.unwrap_or(0);
        if old == new {
            return;
        }
        let mut at = name;
        while let Some((parent, _)) = at.rsplit_once('/') {
            let sum = self.below.entry(parent.to_owned()).or_default();
            *sum = (*sum + new).saturating_sub(old);
            at = parent;
        }
    }

    /// The charged names at `name` and below it (for a recursive delete).
    pub(crate) fn at_and_below(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}/");
        let mut names: Vec<String> = self
            .charged
            .range::<String, _>(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        if self.charged.contains_key(name) {
            names.push(name.to_owned());
        }
        names
    }

    /// The sum of the charges below `name`.
    pub(crate) fn below(&self, name: &str) -> u64 {
        self.below.get(name).copied().unwrap_or(0)
    }
}

/// How long a measured dataset size is trusted.
pub(crate) const USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the whole ledger is measured again: ZFS itself settles space per transaction
/// group, every 5 s; a dataset read directly is measured within [`USAGE_TTL`], and calls
/// that change a dataset move the ledger at once.
pub(crate) const LEDGER_REBUILD: std::time::Duration = std::time::Duration::from_secs(5);

impl DataDir {
    /// Uses (and creates) `root`.
    pub(crate) fn new(root: &Path) -> io::Result<Self> {
        for sub in ["mnt", "zvol", ".snapshots"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(Self {
            usage: std::sync::Mutex::default(),
            ledger: std::sync::Mutex::default(),
            root: root.to_owned(),
        })
    }

    /// The data directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where a filesystem dataset's files live (`/mnt/<name>` on a real NAS).
    pub(crate) fn dataset_dir(&self, name: &str) -> PathBuf {
        self.root.join("mnt").join(name)
    }

    /// The bytes dataset `name` holds, measured by `measure` unless a fresh measurement is
    /// remembered.
    pub(crate) fn measured(&self, name: &str, measure: impl FnOnce() -> u64) -> u64 {
        let now = std::time::Instant::now();
        if let Some((at, bytes)) = self
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            && now.duration_since(*at) < USAGE_TTL
        {
            return *bytes;
        }
        let bytes = measure();
        self.usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (now, bytes));
        bytes
    }

    /// The space ledger.
    pub(crate) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the measurement of `name` (a call changed it).
    pub(crate) fn forget(&self, name: &str) {
        self.usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The backing file of a zvol (`/dev/zvol/<name>` on a real NAS).
    pub(crate) fn zvol_file(&self, name: &str) -> PathBuf {
        self.root.join("zvol").join(name)
    }

    /// Where a snapshot's frozen copy lives.
    pub(crate) fn snapshot_path(&self, id: &str) -> PathBuf {
        self.root.join(".snapshots").join(id)
    }

    /// Maps a NAS path (`/mnt/...`) into the data directory.
    pub(crate) fn host_path(&self, nas_path: &str) -> Option<PathBuf> {
        let rest = nas_path.strip_prefix("/mnt/")?;
        if rest.split('/').any(|c| c == ".." || c == ".") {
            return None;
        }
        Some(self.root.join("mnt").join(rest))
    }
}

/// Creates a zvol's sparse backing file, or grows it.
pub(crate) fn size_zvol(path: &Path, volsize: u64) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.set_len(volsize)
}

/// Bytes allocated on disk under `path` (a file, or a directory minus the `skip` subtrees).
pub(crate) fn allocated(path: &Path, skip: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    let mut total = 0;
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            let child = entry.path();
            if !skip(&child) {
                total += allocated(&child, skip);
            }
        }
    }
    total
}

/// Copies `from` to `to` (replacing `to`), keeping holes in sparse files and leaving out the
/// `skip` subtrees (child datasets are not part of a snapshot).
pub(crate) fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<()> {
    remove(to)?;
    let meta = fs::symlink_metadata(from)?;
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    if meta.is_dir() {
        fs::create_dir_all(to)?;
        fs::set_permissions(to, meta.permissions())?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            let child = entry.path();
            if skip(&child) {
                continue;
            }
            copy_tree(&child, &to.join(entry.file_name()), skip)?;
        }
        Ok(())
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else {
        copy_sparse(from, to)?;
        fs::set_permissions(to, meta.permissions())
    }
}

/// Copies only the data regions of a file (SEEK_DATA/SEEK_HOLE), so a sparse zvol stays sparse.
fn copy_sparse(from: &Path, to: &Path) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = File::open(from)?;
    let len = src.metadata()?.len();
    let mut dst = File::create(to)?;
    dst.set_len(len)?;
    let mut offset = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while offset < len {
        let data = match rustix::fs::seek(&src, rustix::fs::SeekFrom::Data(offset)) {
            Ok(pos) => pos,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(err) => return Err(err.into()),
        };
        let hole = rustix::fs::seek(&src, rustix::fs::SeekFrom::Hole(data))?.min(len);
        src.seek(SeekFrom::Start(data))?;
        dst.seek(SeekFrom::Start(data))?;
        let mut left = hole - data;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            src.read_exact(&mut buf[..n])?;
            dst.write_all(&buf[..n])?;
            left -= n as u64;
        }
        offset = hole;
    }
    dst.sync_all()
}

/// Removes a file or tree if present.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("z");
        size_zvol(&src, 64 << 20).unwrap();
        let mut f = File::options().write(true).open(&src).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(b"hello zvol").unwrap();
        drop(f);
        let dst = dir.path().join("copy/z");
        copy_tree(&src, &dst, &|_| false).unwrap();
        let bytes = fs::read(&dst).unwrap();
        assert_eq!(bytes.len(), 64 << 20);
        assert_eq!(&bytes[10 << 20..(10 << 20) + 10], b"hello zvol");
        assert!(
            allocated(&dst, &|_| false) < 8 << 20,
            "the copy stayed sparse"
        );
    }
}
