//! Inodes stable for the life of the mount, what `stat` shows, and the rules that turn an
//! object key into a path component.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::time::{Duration, Instant, SystemTime};

use hashbrown::HashTable;

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

/// A node as the table keeps it. A file is 56 bytes and one heap allocation (its key and
/// ETag together): a directory of 10^6 objects holds 10^6 of them.
enum Stored {
    Synthetic(Box<[String]>),
    Dir { backend: u32, key: Box<str> },
    File(StoredFile),
}

/// A file's metadata, packed.
struct StoredFile {
    /// The key, then the ETag (when there is one).
    text: Box<str>,
    key_len: u32,
    backend: u32,
    has_etag: bool,
    size: u64,
    /// Last-modified, as seconds and nanoseconds from the Unix epoch.
    mtime_secs: i64,
    mtime_nanos: u32,
    /// When the version was last confirmed: nanoseconds after the table's epoch plus one;
    /// 0: confirm it at the next use.
    checked: u64,
}

/// A node borrowed from the table, for scans that must not copy every key.
pub(crate) enum NodeRef<'a> {
    Synthetic,
    Dir { backend: usize, key: &'a str },
    File { backend: usize, key: &'a str },
}

/// What `stat` needs of a node, read without copying its key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    Dir,
    File { size: u64, mtime: SystemTime },
}

fn mtime_parts(mtime: SystemTime) -> (i64, u32) {
    match mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            match before.subsec_nanos() {
                0 => (-secs, 0),
                nanos => (-secs - 1, 1_000_000_000 - nanos),
            }
        }
    }
}

fn mtime_of(secs: i64, nanos: u32) -> SystemTime {
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    base + Duration::from_nanos(u64::from(nanos))
}

impl StoredFile {
    fn key(&self) -> &str {
        &self.text[..self.key_len as usize]
    }

    fn etag(&self) -> Option<&str> {
        self.has_etag.then(|| &self.text[self.key_len as usize..])
    }
}

impl Stored {
    fn key_ref(&self) -> KeyRef<'_> {
        match self {
            Stored::Synthetic(path) => KeyRef::Synthetic(path),
            Stored::Dir { backend, key } => KeyRef::Dir(*backend as usize, key),
            Stored::File(file) => KeyRef::File(file.backend as usize, file.key()),
        }
    }
}

/// What makes two nodes the same inode, borrowed: what is hashed and compared.
#[derive(PartialEq, Eq)]
pub(crate) enum KeyRef<'a> {
    Synthetic(&'a [String]),
    Dir(usize, &'a str),
    File(usize, &'a str),
}

/// Every inode handed out, both ways. Inodes are numbered densely from [`ROOT`] and never
/// reused, so the table is a vector; the way back (key → inode) is a hash table of indexes
/// into it, hashed by the key the node already holds, so no key is kept twice. Its hasher is
/// keyed at random: crafted keys cannot make every lookup a scan.
pub(crate) struct Inodes {
    nodes: Vec<Stored>,
    by_key: HashTable<u32>,
    hasher: RandomState,
    epoch: Instant,
}

impl Inodes {
    /// A table holding only `root`, as inode [`ROOT`].
    pub(crate) fn new(root: Node) -> Self {
        let mut inodes = Self {
            nodes: Vec::new(),
            by_key: HashTable::new(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        };
        inodes.push(root);
        inodes
    }

    /// The identity of `node`, borrowed (no copy of its key).
    fn key_ref(node: &Node) -> KeyRef<'_> {
        match node {
            Node::Synthetic(path) => KeyRef::Synthetic(path),
            Node::Dir { backend, key } => KeyRef::Dir(*backend, key),
            Node::File { backend, key, .. } => KeyRef::File(*backend, key),
        }
    }

    fn hash(hasher: &RandomState, key: &KeyRef<'_>) -> u64 {
        let mut state = hasher.build_hasher();
        match key {
            KeyRef::Synthetic(path) => {
                0u8.hash(&mut state);
                path.hash(&mut state);
            }
            KeyRef::Dir(backend, key) => {
                1u8.hash(&mut state);
                backend.hash(&mut state);
                key.hash(&mut state);
            }
            KeyRef::File(backend, key) => {
                2u8.hash(&mut state);
                backend.hash(&mut state);
                key.hash(&mut state);
            }
        }
        state.finish()
    }

    fn index_of(&self, key: &KeyRef<'_>) -> Option<usize> {
        let hash = Self::hash(&self.hasher, key);
        self.by_key
            .find(hash, |&at| self.nodes[at as usize].key_ref() == *key)
            .map(|&at| at as usize)
    }

    fn ino(index: usize) -> u64 {
        index as u64 + ROOT
    }

    fn index(ino: u64) -> Option<usize> {
        usize::try_from(ino.checked_sub(ROOT)?).ok()
    }

    /// The inode `key` was given, if any.
    pub(crate) fn lookup(&self, key: &KeyRef<'_>) -> Option<u64> {
        self.index_of(key).map(Self::ino)
    }

    fn store(&self, node: Node) -> Stored {
        match node {
            Node::Synthetic(path) => Stored::Synthetic(path.into_boxed_slice()),
            Node::Dir { backend, key } => Stored::Dir {
                backend: u32::try_from(backend).unwrap_or(u32::MAX),
                key: key.into_boxed_str(),
            },
            Node::File {
                backend,
                key,
                size,
                mtime,
                etag,
                checked,
            } => {
                let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
                let has_etag = etag.is_some();
                let text = match etag {
                    Some(etag) => {
                        let mut text = String::with_capacity(key.len() + etag.len());
                        text.push_str(&key);
                        text.push_str(&etag);
                        text
                    }
                    None => key,
                };
                let (mtime_secs, mtime_nanos) = mtime_parts(mtime);
                let checked = checked.map_or(0, |at| {
                    u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
                        .unwrap_or(u64::MAX - 1)
                        + 1
                });
                Stored::File(StoredFile {
                    text: text.into_boxed_str(),
                    key_len,
                    backend: u32::try_from(backend).unwrap_or(u32::MAX),
                    has_etag,
                    size,
                    mtime_secs,
                    mtime_nanos,
                    checked,
                })
            }
        }
    }

    fn view(&self, stored: &Stored) -> Node {
        match stored {
            Stored::Synthetic(path) => Node::Synthetic(path.to_vec()),
            Stored::Dir { backend, key } => Node::Dir {
                backend: *backend as usize,
                key: key.to_string(),
            },
            Stored::File(file) => Node::File {
                backend: file.backend as usize,
                key: file.key().to_owned(),
                size: file.size,
                mtime: mtime_of(file.mtime_secs, file.mtime_nanos),
                etag: file.etag().map(str::to_owned),
                checked: (file.checked > 0)
                    .then(|| self.epoch + Duration::from_nanos(file.checked - 1)),
            },
        }
    }

    /// The node of `ino`, copied out.
    pub(crate) fn get(&self, ino: u64) -> Option<Node> {
        Self::index(ino)
            .and_then(|at| self.nodes.get(at))
            .map(|stored| self.view(stored))
    }

    /// What `stat` needs of `ino`, without copying its key.
    pub(crate) fn shape(&self, ino: u64) -> Option<Shape> {
        match Self::index(ino).and_then(|at| self.nodes.get(at))? {
            Stored::File(file) => Some(Shape::File {
                size: file.size,
                mtime: mtime_of(file.mtime_secs, file.mtime_nanos),
            }),
            _ => Some(Shape::Dir),
        }
    }

    /// Every node, borrowed, with its inode.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, NodeRef<'_>)> {
        self.nodes.iter().enumerate().map(|(at, stored)| {
            let node = match stored {
                Stored::Synthetic(_) => NodeRef::Synthetic,
                Stored::Dir { backend, key } => NodeRef::Dir {
                    backend: *backend as usize,
                    key,
                },
                Stored::File(file) => NodeRef::File {
                    backend: file.backend as usize,
                    key: file.key(),
                },
            };
            (Self::ino(at), node)
        })
    }

    /// Makes file `ino` confirm its version at the next use.
    pub(crate) fn uncheck(&mut self, ino: u64) {
        if let Some(Stored::File(file)) = Self::index(ino).and_then(|at| self.nodes.get_mut(at)) {
            file.checked = 0;
        }
    }

    /// Appends `node` as the next inode.
    fn push(&mut self, node: Node) -> u64 {
        let at = self.nodes.len();
        self.nodes.push(self.store(node));
        // Past 2^32 nodes an inode is still handed out, only not found again by its key (a
        // re-listed key would get a new number); no mount holds that many.
        if let Ok(index) = u32::try_from(at) {
            let (nodes, hasher) = (&self.nodes, &self.hasher);
            let hash = Self::hash(hasher, &nodes[at].key_ref());
            self.by_key.insert_unique(hash, index, |&other| {
                Self::hash(hasher, &nodes[other as usize].key_ref())
            });
        }
        Self::ino(at)
    }

    /// The inode of `node`, creating it; file metadata is refreshed.
    pub(crate) fn intern(&mut self, node: Node) -> u64 {
        if let Some(at) = self.index_of(&Self::key_ref(&node)) {
            if matches!(node, Node::File { .. }) {
                self.nodes[at] = self.store(node);
            }
            return Self::ino(at);
        }
        self.push(node)
    }

    /// Inodes handed out.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
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

    fn file(key: &str, size: u64, etag: Option<&str>) -> Node {
        Node::File {
            backend: 1,
            key: key.into(),
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            etag: etag.map(str::to_owned),
            checked: None,
        }
    }

    #[test]
    fn nodes_come_back_as_they_went_in_and_keys_find_their_inode() {
        let mut inodes = Inodes::new(Node::Synthetic(Vec::new()));
        let dir = Node::Dir {
            backend: 0,
            key: "a".into(),
        };
        let ino_dir = inodes.intern(dir.clone());
        assert_eq!(ino_dir, ROOT + 1);
        let ino_file = inodes.intern(file("a", 5, Some("\"e1\"")));
        assert_ne!(
            ino_file, ino_dir,
            "a file and a directory of one key are two inodes"
        );
        assert_eq!(inodes.intern(dir), ino_dir);
        assert_eq!(
            inodes.intern(file("a", 6, None)),
            ino_file,
            "refreshed, same inode"
        );
        let Some(Node::File {
            size,
            etag,
            mtime,
            key,
            ..
        }) = inodes.get(ino_file)
        else {
            panic!("a file");
        };
        assert_eq!((size, etag, key.as_str()), (6, None, "a"));
        assert_eq!(
            mtime,
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)
        );
        inodes.intern(file("a", 7, Some("\"e2\"")));
        assert!(
            matches!(inodes.get(ino_file), Some(Node::File { etag: Some(e), .. }) if e == "\"e2\"")
        );
        assert_eq!(inodes.lookup(&KeyRef::File(1, "a")), Some(ino_file));
        assert_eq!(inodes.lookup(&KeyRef::File(0, "a")), None);
        assert!(inodes.get(0).is_none() && inodes.get(99).is_none());
        assert_eq!(inodes.len(), 3);
    }

    #[test]
    fn times_before_the_epoch_and_checks_survive_packing() {
        let mut inodes = Inodes::new(Node::Synthetic(Vec::new()));
        let before = SystemTime::UNIX_EPOCH - Duration::from_nanos(1_500_000_001);
        let now = Instant::now();
        let ino = inodes.intern(Node::File {
            backend: 0,
            key: "old".into(),
            size: 0,
            mtime: before,
            etag: None,
            checked: Some(now),
        });
        let Some(Node::File { mtime, checked, .. }) = inodes.get(ino) else {
            panic!("a file");
        };
        assert_eq!(mtime, before);
        assert_eq!(checked, Some(now));
        inodes.uncheck(ino);
        assert!(matches!(
            inodes.get(ino),
            Some(Node::File { checked: None, .. })
        ));
    }

    #[test]
    fn many_keys_each_find_their_own_inode() {
        let mut inodes = Inodes::new(Node::Synthetic(Vec::new()));
        let inos: Vec<u64> = (0..5000)
            .map(|i| inodes.intern(file(&format!("dir/f{i}"), i, Some("\"x\""))))
            .collect();
        for (i, ino) in inos.iter().enumerate() {
            assert_eq!(
                inodes.lookup(&KeyRef::File(1, &format!("dir/f{i}"))),
                Some(*ino)
            );
        }
        assert_eq!(
            std::mem::size_of::<Stored>(),
            56,
            "a listed file costs 56 bytes in the table"
        );
    }
}
