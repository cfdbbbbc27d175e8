//! FUSE passthrough (Linux 6.9+): an open of a file whose cached copy is whole and verified
//! hands the kernel the cache's data file, so reads go from the page cache or the cache disk
//! without entering the daemon.
//!
//! The kernel insists that all open files of one inode are read the same way at once: all
//! through the daemon (with the FUSE page cache) or all from one backing file; any other open
//! fails with EIO. So while one handle reads a file through passthrough, a new open of it
//! shares that backing file even if the object has changed since: it reads the version already
//! open (whole and consistent, never a mix), and the first open after they all close reads the
//! new one. Through the daemon the new open would have read the new version at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use blockcache::Backing;
use fuser::BackingId;

/// How one open file's reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Through the daemon, cached in the kernel's page cache.
    Daemon,
    /// By the kernel from the backing file.
    Passthrough,
}

/// How an inode's open files are read, with how many are open.
enum IoMode {
    Daemon {
        opens: u32,
    },
    Passthrough {
        opens: u32,
        etag: Option<String>,
        id: Arc<BackingId>,
        /// Keeps the cached object pinned (not evicted, not punched) while the kernel reads it.
        _backing: Backing,
    },
}

/// What an open was given.
pub(crate) enum Decision {
    Daemon,
    Passthrough(Arc<BackingId>),
}

/// The daemon's side of passthrough: whether the kernel took it, and every inode's mode.
#[derive(Default)]
pub(crate) struct Passthrough {
    /// Asked for in the settings.
    pub(crate) wanted: bool,
    /// The kernel accepted it at init and has not refused a backing file since.
    pub(crate) active: AtomicBool,
    modes: Mutex<HashMap<u64, IoMode>>,
    handles: Mutex<HashMap<u64, (u64, Served)>>,
}

impl Passthrough {
    pub(crate) fn new(wanted: bool) -> Self {
        Self {
            wanted,
            ..Self::default()
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether an open of `ino` now could start passthrough: no other open file of it sets
    /// the mode already. Saves verifying and pinning a cached copy that would go unused.
    pub(crate) fn takes_backing(&self, ino: u64) -> bool {
        self.active()
            && !self
                .modes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&ino)
    }

    /// Decides how handle `fh` of `ino` (version `etag`) is served; `register` turns a whole
    /// cached copy into a backing id (the kernel may refuse: then `None`, and passthrough is
    /// switched off).
    pub(crate) fn open(
        &self,
        ino: u64,
        fh: u64,
        etag: Option<String>,
        backing: Option<Backing>,
        register: impl FnOnce(&Backing) -> Option<BackingId>,
    ) -> Decision {
        let mut modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        let (decision, served) = match modes.get_mut(&ino) {
            Some(IoMode::Passthrough {
                opens,
                etag: held,
                id,
                ..
            }) => {
                if *held != etag {
                    tracing::debug!(
                        ino,
                        "an open of a changed file shares the version the kernel is already reading"
                    );
                }
                *opens += 1;
                (Decision::Passthrough(id.clone()), Served::Passthrough)
            }
            Some(IoMode::Daemon { opens }) => {
                *opens += 1;
                (Decision::Daemon, Served::Daemon)
            }
            None => match backing.and_then(|b| register(&b).map(|id| (b, id))) {
                Some((backing, id)) => {
                    let id = Arc::new(id);
                    modes.insert(
                        ino,
                        IoMode::Passthrough {
                            opens: 1,
                            etag,
                            id: id.clone(),
                            _backing: backing,
                        },
                    );
                    (Decision::Passthrough(id), Served::Passthrough)
                }
                None => {
                    modes.insert(ino, IoMode::Daemon { opens: 1 });
                    (Decision::Daemon, Served::Daemon)
                }
            },
        };
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, (ino, served));
        decision
    }

    /// Handle `fh` closed: its inode's mode ends with its last open (dropping the backing id
    /// and unpinning the cached object).
    pub(crate) fn release(&self, fh: u64) {
        let Some((ino, _)) = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)
        else {
            return;
        };
        let mut modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        let last = match modes.get_mut(&ino) {
            Some(IoMode::Daemon { opens } | IoMode::Passthrough { opens, .. }) => {
                *opens = opens.saturating_sub(1);
                *opens == 0
            }
            None => false,
        };
        if last {
            modes.remove(&ino);
        }
    }
}
