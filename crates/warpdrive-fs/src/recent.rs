//! Blocks just fetched that a reader is part-way through, kept in memory so its next requests
//! into the same block are answered without a trip to the cache disk (a read, a checksum and
//! a thread hop per request). Bounded in bytes; the oldest block goes first.

use std::collections::VecDeque;
use std::sync::Mutex;

use blockcache::BlockKey;
use bytes::Bytes;

/// A small FIFO of whole blocks, shared by every handle.
#[derive(Debug)]
pub(crate) struct RecentBlocks {
    max_bytes: usize,
    blocks: Mutex<VecDeque<(BlockKey, Bytes)>>,
}

impl RecentBlocks {
    /// Holds at most `max_bytes` of blocks (0 turns it off).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            blocks: Mutex::default(),
        }
    }

    /// The block's bytes if it is held.
    pub(crate) fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        blocks
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
    }

    /// Whether the block is held.
    pub(crate) fn contains(&self, key: &BlockKey) -> bool {
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        blocks.iter().any(|(k, _)| k == key)
    }

    /// Drops every held block (an eviction asked for fetches afresh).
    pub(crate) fn clear(&self) {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Keeps a block, dropping the oldest ones beyond the limit.
    pub(crate) fn put(&self, key: BlockKey, block: Bytes) {
        if block.len() > self.max_bytes {
            return;
        }
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        if blocks.iter().any(|(k, _)| *k == key) {
            return;
        }
        let mut held: usize = blocks.iter().map(|(_, b)| b.len()).sum();
        while held + block.len() > self.max_bytes {
            match blocks.pop_front() {
                Some((_, old)) => held -= old.len(),
                None => break,
            }
        }
        blocks.push_back((key, block));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u64) -> BlockKey {
        BlockKey {
            backend: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            index,
        }
    }

    #[test]
    fn keeps_the_newest_blocks_within_the_limit() {
        let recent = RecentBlocks::new(8);
        recent.put(key(0), Bytes::from_static(b"0000"));
        recent.put(key(1), Bytes::from_static(b"1111"));
        recent.put(key(2), Bytes::from_static(b"2222"));
        assert!(recent.get(&key(0)).is_none(), "oldest dropped");
        assert_eq!(recent.get(&key(1)).unwrap(), "1111");
        assert_eq!(recent.get(&key(2)).unwrap(), "2222");
        recent.put(key(3), Bytes::from_static(b"too large"));
        assert!(
            recent.get(&key(3)).is_none(),
            "larger than the limit: not held"
        );
        assert!(RecentBlocks::new(0).get(&key(1)).is_none());
    }
}
