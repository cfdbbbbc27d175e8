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

/// Every inode handed out, both ways. The way back (key → inode) is keyed by a hash of the
/// key, not by a second copy of it: a directory of 10^6 objects would otherwise hold every key
/// twice. Keys whose hash another key already has go to an ordinary map, so crafted
/// collisions cost only memory, never a wrong inode.
#[derive(Default)]
pub(crate) struct Inodes {
    pub(crate) nodes: HashMap<u64, Node>,
    by_hash: HashMap<u64, u64>,
    collided: HashMap<NodeKey, u64>,
    pub(crate) next: u64,
}

/// The fixed-key hash the reverse index is keyed by.
fn hash_of(key: &NodeKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Whether `node` is the node `key` names, without copying its key.
fn is(node: &Node, key: &NodeKey) -> bool {
    match (node, key) {
        (Node::Synthetic(a), NodeKey::Synthetic(b)) => a == b,
        (Node::Dir { backend, key: a }, NodeKey::Dir(b_backend, b))
        | (
            Node::File {
                backend, key: a, ..
            },
            NodeKey::File(b_backend, b),
        ) => backend == b_backend && a == b,
        _ => false,
    }
}

impl Inodes {
    pub(crate) fn key_of(node: &Node) -> NodeKey {
        match node {
            Node::Synthetic(path) => NodeKey::Synthetic(path.clone()),
            Node::Dir { backend, key } => NodeKey::Dir(*backend, key.clone()),
            Node::File { backend, key, .. } => NodeKey::File(*backend, key.clone()),
        }
    }

    /// The inode `key` was given, if any.
    fn find(&self, key: &NodeKey, hash: u64) -> Option<u64> {
        if let Some(&ino) = self.by_hash.get(&hash)
            && self.nodes.get(&ino).is_some_and(|node| is(node, key))
        {
            return Some(ino);
        }
        self.collided.get(key).copied()
    }

    /// The inode `key` was given, if any.
    pub(crate) fn lookup(&self, key: &NodeKey) -> Option<u64> {
        self.find(key, hash_of(key))
    }

    /// Records `node` as inode `ino`.
    pub(crate) fn insert(&mut self, ino: u64, node: Node) {
        let key = Self::key_of(&node);
        let hash = hash_of(&key);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ino);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(key, ino);
            }
        }
        self.nodes.insert(ino, node);
    }

    /// The inode of `node`, creating it; file metadata is refreshed.
    pub(crate) fn intern(&mut self, node: Node) -> u64 {
        let key = Self::key_of(&node);
        if let Some(ino) = self.find(&key, hash_of(&key)) {
            if matches!(node, Node::File { .. }) {
                self.nodes.insert(ino, node);
            }
            return ino;
        }
        self.next = self.next.max(ROOT + 1);
        let ino = self.next;
        self.next += 1;
        self.insert(ino, node);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_taken_by_another_key_still_gets_its_own_inode() {
        let mut inodes = Inodes::default();
        let a = Node::Dir {
            backend: 0,
            key: "a".into(),
        };
        let b = Node::Dir {
            backend: 0,
            key: "b".into(),
        };
        let ino_a = inodes.intern(a.clone());
        // Force b's hash onto a's slot, as a crafted collision would.
        let hash_b = hash_of(&Inodes::key_of(&b));
        inodes.by_hash.insert(hash_b, ino_a);
        let ino_b = inodes.intern(b.clone());
        assert_ne!(ino_a, ino_b);
        assert_eq!(
            inodes.intern(b),
            ino_b,
            "found again through the collision map"
        );
        assert_eq!(inodes.intern(a), ino_a);
        let file = |size| Node::File {
            backend: 1,
            key: "a".into(),
            size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            checked: None,
        };
        let ino_f = inodes.intern(file(1));
        assert_ne!(
            ino_f, ino_a,
            "a file and a directory of one key are two inodes"
        );
        assert_eq!(inodes.intern(file(2)), ino_f);
        assert!(
            matches!(inodes.nodes[&ino_f], Node::File { size: 2, .. }),
            "refreshed"
        );
    }
}
