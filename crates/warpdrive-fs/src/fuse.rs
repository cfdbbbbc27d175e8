//! The fuser adapter: each kernel request is answered from a tokio task, so the FUSE dispatch
//! thread never waits on the network; 1 MiB requests and a large readahead are negotiated.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
    SessionACL,
};
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::error::{FsError, ToErrno, code_of, errno};
use crate::passthrough::{Decision, Passthrough};
use crate::{Attr, Core, Kind};

/// Kernel cache lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    /// Dentries.
    pub entry: Duration,
    /// Attributes.
    pub attr: Duration,
    /// Failed lookups.
    pub negative: Duration,
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// Let other users see the mount.
    pub allow_other: bool,
    /// Kernel cache lifetimes.
    pub ttls: Ttls,
    /// Threads reading /dev/fuse.
    pub threads: usize,
    /// Hand whole cached files to the kernel to read itself (FUSE passthrough, Linux 6.9+ and
    /// CAP_SYS_ADMIN); without either, every read goes through the daemon as before.
    pub passthrough: bool,
}

/// The FUSE filesystem.
pub struct WarpFs {
    core: Arc<Core>,
    runtime: Handle,
    ttls: Ttls,
    /// The ETag each file had when last opened: the kernel keeps its cached pages only while
    /// it is unchanged.
    opened: Arc<std::sync::Mutex<std::collections::HashMap<u64, Option<String>>>>,
    passthrough: Arc<Passthrough>,
}

const MAX_REQUEST: u32 = 1 << 20;

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: match attr.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: attr.perm,
        nlink: if attr.kind == Kind::Dir { 2 } else { 1 },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: MAX_REQUEST,
        flags: 0,
    }
}

impl WarpFs {
    /// Serves `core`, running request work on `runtime`.
    pub fn new(core: Arc<Core>, runtime: Handle, ttls: Ttls) -> Self {
        Self {
            core,
            runtime,
            ttls,
            opened: Arc::default(),
            passthrough: Arc::default(),
        }
    }
}

impl Filesystem for WarpFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // 1 MiB requests need max_pages 256, derived from max_readahead/max_write.
        let _ = config.set_max_readahead(MAX_REQUEST);
        let _ = config.set_max_background(64);
        // `ls -l` of a large directory: entries come with their attributes (answered from the
        // listing), so the kernel needs no lookup per name; AUTO lets it fall back to plain
        // readdir for a reader that never stats.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if config.add_capabilities(plus).is_err() {
            tracing::debug!(
                "the kernel has no readdirplus; directory entries are looked up one by one"
            );
        }
        if self.passthrough.wanted {
            // Depth 1: the cache's files may not be on a stacked filesystem (overlayfs), and
            // this mount may still be the lower layer of one.
            let taken = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.active.store(taken, Ordering::Relaxed);
            if taken {
                tracing::info!(
                    "FUSE passthrough on: whole cached files are read by the kernel from the cache disk"
                );
            } else {
                tracing::warn!(
                    "FUSE passthrough off: this kernel lacks it (Linux 6.9 or newer has it); every read goes through the daemon"
                );
            }
        } else {
            tracing::info!(
                "FUSE passthrough off by configuration; every read goes through the daemon"
            );
        }
        self.core.metrics().passthrough(self.passthrough.active());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let core = self.core.clone();
        let ttls = self.ttls;
        let name = name.to_string_lossy().into_owned();
        let started = Instant::now();
        let span = tracing::info_span!("fuse", op = "lookup", parent = parent.0, name = %name);
        self.runtime.spawn(
            async move {
                let result = core.lookup(parent.0, &name).await;
                done(&core, "lookup", &result, started);
                match result {
                    Ok(attr) => reply.entry_with_ttls(
                        &ttls.attr,
                        &ttls.entry,
                        &file_attr(&attr),
                        Generation(0),
                    ),
                    Err(err) if err.errno() == errno::ENOENT => {
                        // A negative entry (ino 0) lets the kernel cache the miss.
                        let mut none = file_attr(&Attr {
                            ino: 0,
                            kind: Kind::File,
                            size: 0,
                            mtime: std::time::SystemTime::UNIX_EPOCH,
                            perm: 0,
                            uid: 0,
                            gid: 0,
                        });
                        none.ino = INodeNo(0);
                        reply.entry_with_ttls(&ttls.negative, &ttls.negative, &none, Generation(0));
                    }
                    Err(err) => reply.error(Errno::from_i32(err.errno())),
                }
            }
            .instrument(span),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let core = self.core.clone();
        let ttl = self.ttls.attr;
        let started = Instant::now();
        let span = tracing::info_span!("fuse", op = "getattr", ino = ino.0);
        self.runtime.spawn(
            async move {
                let result = core.getattr(ino.0).await;
                done(&core, "getattr", &result, started);
                match result {
                    Ok(attr) => reply.attr(&ttl, &file_attr(&attr)),
                    Err(err) => reply.error(Errno::from_i32(err.errno())),
                }
            }
            .instrument(span),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc_o_accmode() != 0 {
            reply.error(Errno::EROFS);
            return;
        }
        match self.core.is_dir(ino.0) {
            Ok(true) => return reply.error(Errno::EISDIR),
            Ok(false) => {}
            Err(err) => return reply.error(Errno::from_i32(err.errno())),
        }
        let core = self.core.clone();
        let opened = self.opened.clone();
        let passthrough = self.passthrough.clone();
        let uid = req.uid();
        let started = Instant::now();
        let span = tracing::info_span!("fuse", op = "open", ino = ino.0);
        self.runtime.spawn(
            async move {
                let result = core.open(ino.0).await;
                done(&core, "open", &result, started);
                let (fh, etag) = match result {
                    Ok(opened) => opened,
                    Err(err) => return reply.error(Errno::from_i32(err.errno())),
                };
                let backing = if passthrough.takes_backing(ino.0) {
                    core.backing(fh).await
                } else {
                    None
                };
                let decision = passthrough.open(ino.0, fh, etag.clone(), backing, |backing| {
                    match reply.open_backing(backing.file()) {
                        Ok(id) => Some(id),
                        Err(err) => {
                            // Not CAP_SYS_ADMIN, or the cache on a stacked filesystem: say so
                            // once and stop trying.
                            if passthrough.active.swap(false, Ordering::Relaxed) {
                                tracing::warn!(%err, "FUSE passthrough off: the kernel refused a cache file as a backing file (it needs CAP_SYS_ADMIN and a cache directory that is not on overlayfs); every read goes through the daemon");
                                core.metrics().passthrough(false);
                            }
                            None
                        }
                    }
                });
                match decision {
                    Decision::Passthrough(id) => {
                        core.metrics().opened("passthrough");
                        core.account_whole(fh, uid);
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                    }
                    Decision::Daemon => {
                        core.metrics().opened("daemon");
                        let previous = opened
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(ino.0, etag.clone());
                        // Same version as last time: keep the kernel's pages; otherwise drop them.
                        let flags = if etag.is_some() && previous == Some(etag) {
                            FopenFlags::FOPEN_KEEP_CACHE
                        } else {
                            FopenFlags::empty()
                        };
                        reply.opened(FileHandle(fh), flags);
                    }
                }
            }
            .instrument(span),
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        let started = Instant::now();
        let uid = req.uid();
        let span = tracing::info_span!("fuse", op = "read", ino = ino.0, fh = fh.0, offset, size);
        self.runtime.spawn(
            async move {
                let result = core.read_handle(fh.0, ino.0, offset, size).await;
                done(&core, "read", &result, started);
                match result {
                    Ok(bytes) => {
                        core.account(fh.0, uid, bytes.len() as u64);
                        reply.data(&bytes)
                    }
                    Err(err) => reply.error(Errno::from_i32(err.errno())),
                }
            }
            .instrument(span),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(fh.0);
        self.core.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.is_dir(ino.0) {
            Ok(true) => {}
            Ok(false) => return reply.error(Errno::ENOTDIR),
            Err(err) => return reply.error(Errno::from_i32(err.errno())),
        }
        let core = self.core.clone();
        let started = Instant::now();
        let span = tracing::info_span!("fuse", op = "opendir", ino = ino.0);
        self.runtime.spawn(
            async move {
                let result = core.opendir(ino.0).await;
                done(&core, "opendir", &result, started);
                match result {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(err) => reply.error(Errno::from_i32(err.errno())),
                }
            }
            .instrument(span),
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let core = self.core.clone();
        let started = Instant::now();
        let span = tracing::info_span!("fuse", op = "readdir", ino = ino.0);
        self.runtime.spawn(
            async move {
                let result = fill(&core, ino.0, fh.0, offset, |cookie, name, attr| {
                    let kind = if attr.kind == Kind::Dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    reply.add(INodeNo(attr.ino), cookie, kind, name)
                })
                .await;
                done(&core, "readdir", &result, started);
                match result {
                    Ok(()) => reply.ok(),
                    Err(err) => reply.error(Errno::from_i32(err.errno())),
                }
            }
            .instrument(span),
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let core = self.core.clone();
        let ttls = self.ttls;
        let started = Instant::now();
        let span = tracing::info_span!("fuse", op = "readdirplus", ino = ino.0);
        self.runtime.spawn(
            async move {
                let result = fill(&core, ino.0, fh.0, offset, |cookie, name, attr| {
                    reply.add(
                        INodeNo(attr.ino),
                        cookie,
                        name,
                        &ttls.entry,
                        &file_attr(attr),
                        Generation(0),
                    )
                })
                .await;
                done(&core, "readdirplus", &result, started);
                match result {
                    Ok(()) => reply.ok(),
                    Err(err) => reply.error(Errno::from_i32(err.errno())),
                }
            }
            .instrument(span),
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            0,
            0,
            0,
            0,
            0,
            MAX_REQUEST,
            crate::inodes::NAME_MAX as u32,
            MAX_REQUEST,
        );
    }
}

/// Entries fetched per step while filling a readdir reply: a reply holds a few dozen to a few
/// hundred, so a step wastes little and a directory of any size costs what fits.
const READDIR_STEP: usize = 128;

/// Fills one readdir reply from kernel offset `offset` (`.` and `..` are offsets 0 and 1, the
/// listing's entry `p` is `p + 2`; each cookie is the offset of the entry after it) until `add`
/// says the reply is full.
async fn fill(
    core: &Core,
    ino: u64,
    fh: u64,
    offset: u64,
    mut add: impl FnMut(u64, &str, &Attr) -> bool,
) -> Result<(), FsError> {
    let mut at = offset;
    if at < 2 {
        let own = core.getattr(ino).await?;
        for (cookie, name) in [(1, "."), (2, "..")].into_iter().skip(at as usize) {
            if add(cookie, name, &own) {
                return Ok(());
            }
            at = cookie;
        }
    }
    loop {
        let from = (at - 2) as usize;
        let page = core.readdir(ino, fh, from, READDIR_STEP).await?;
        let Some(last) = page.last().map(|(p, _, _)| *p) else {
            return Ok(());
        };
        for (position, name, attr) in &page {
            if add(*position as u64 + 3, name, attr) {
                return Ok(());
            }
        }
        at = last as u64 + 3;
    }
}

/// Counts one finished operation.
fn done<T>(core: &Core, op: &'static str, result: &Result<T, FsError>, started: Instant) {
    if let Err(err) = result {
        tracing::debug!(op, error = %err, "request failed");
    }
    core.metrics().op(op, code_of(result), started.elapsed());
}

/// O_WRONLY | O_RDWR: any write access.
fn libc_o_accmode() -> i32 {
    0o3
}

/// Tells the kernel to drop what it cached of `inodes` (attributes, pages, a directory's
/// entries), after an invalidation; inodes it never saw are skipped.
pub fn forget_in_kernel(notifier: &fuser::Notifier, inodes: &[u64]) {
    for ino in inodes {
        if let Err(err) = notifier.inval_inode(INodeNo(*ino), 0, 0)
            && err.raw_os_error() != Some(errno::ENOENT)
        {
            tracing::debug!(ino, %err, "the kernel did not take an invalidation");
        }
    }
}

/// Mounts `fs` at `mount_point` and serves it on background threads until the returned session
/// is dropped (which unmounts).
pub fn mount(
    mut fs: WarpFs,
    mount_point: &Path,
    settings: &MountSettings,
) -> std::io::Result<fuser::BackgroundSession> {
    fs.passthrough = Arc::new(Passthrough::new(settings.passthrough));
    let mut options = vec![
        MountOption::FSName("warpdrive".into()),
        MountOption::Subtype("warpdrive".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    if settings.allow_other {
        options.push(MountOption::CUSTOM("allow_other".into()));
    }
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if settings.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(settings.threads.max(1));
    fuser::spawn_mount(fs, mount_point, &config)
}
