//! Inodes stable for the life of the mount, what `stat` shows, and the rules that turn an
//! object key into a path component.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use object_store::path::Path as StorePath;

/// The root inode.
pub const ROOT: u64 = 1;

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A directory (synthetic, a key prefix, or a backend root).
    Dir,
    /// An object.
    File,
}

/// What `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number, stable for the life of the mount.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Object size (0 for directories).
    pub size: u64,
    /// Object last-modified time.
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What an inode stands for.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Synthetic(Vec<String>),
    Dir {
        backend: usize,
        key: String,
    },
    File {
        backend: usize,
        key: String,
        size: u64,
        mtime: SystemTime,
        etag: Option<String>,
        /// When the version was last confirmed; none: confirm it at the next use.
        checked: Option<Instant>,
    },
}

/// What makes two nodes the same inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum NodeKey {
    Synthetic(Vec<String>),
    Dir(usize, String),
    File(usize, String),
}

/// Every inode handed out, both ways.
#[derive(Default)]
pub(crate) struct Inodes {
    pub(crate) nodes: HashMap<u64, Node>,
    pub(crate) index: HashMap<NodeKey, u64>,
    pub(crate) next: u64,
}

impl Inodes {
    pub(crate) fn key_of(node: &Node) -> NodeKey {
        match node {
            Node::Synthetic(path) => NodeKey::Synthetic(path.clone()),
            Node::Dir { backend, key } => NodeKey::Dir(*backend, key.clone()),
            Node::File { backend, key, .. } => NodeKey::File(*backend, key.clone()),
        }
    }

    /// The inode of `node`, creating it; file metadata is refreshed.
    pub(crate) fn intern(&mut self, node: Node) -> u64 {
        let key = Self::key_of(&node);
        if let Some(&ino) = self.index.get(&key) {
            if matches!(node, Node::File { .. }) {
                self.nodes.insert(ino, node);
            }
            return ino;
        }
        self.next = self.next.max(ROOT + 1);
        let ino = self.next;
        self.next += 1;
        self.index.insert(key, ino);
        self.nodes.insert(ino, node);
        ino
    }
}

/// Whether a key segment can be a path component: not empty, `.` or `..`, no longer than
/// NAME_MAX, no `/` and no control character (a NUL among them).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != "."
        && name != ".."
        && !name.chars().any(char::is_control)
        && !name.contains('/')
}

/// The longest name Linux looks up (bytes); a longer one would be listed but never opened.
pub(crate) const NAME_MAX: usize = 255;

/// The path component a key segment shows as: object_store percent-encodes some characters in
/// its paths (the local store encodes non-ASCII file names, for one); names show them decoded.
pub(crate) fn display_name(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&segment[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A store path for a key exactly as listings spell it (no second encoding).
pub(crate) fn store_path(full: &str) -> StorePath {
    StorePath::parse(full).unwrap_or_else(|_| StorePath::from_iter(full.split('/')))
}

/// Joins two key parts with `/`, either may be empty.
pub(crate) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}
