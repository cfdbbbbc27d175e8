//! The in-memory index, rebuilt from the record files at start: per object version, the
//! ranges present with their checksums and how they are being used.

use std::collections::{BTreeMap, HashMap};

use crate::record::{Entry, Header};

/// One range written in one piece (a block, or part of one for a random read).
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub(crate) len: u32,
    /// One CRC32 per 64 KiB chunk.
    pub(crate) sums: Box<[u32]>,
    /// Reads since it was written (0: only written).
    pub(crate) reads: u32,
    pub(crate) last_use: u64,
}

/// One cached object version: its data file's present ranges.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) header: Header,
    /// Non-overlapping ranges by offset.
    pub(crate) units: BTreeMap<u64, Unit>,
    /// Bytes of `units`.
    pub(crate) bytes: u64,
    /// Open backing files (FUSE passthrough) that read the data file without us: while any is
    /// open, nothing of it is evicted or punched out.
    pub(crate) pins: u32,
    /// Every checksum was checked against the data file since this process opened the cache.
    pub(crate) verified: bool,
    /// Entries in the record file, live or not (for compaction at start).
    pub(crate) entries: u64,
    /// Tells this object apart from a later one of the same digest (removed, then cached
    /// again), so a pin is only ever released on the object it was taken on.
    pub(crate) generation: u64,
}

impl Object {
    pub(crate) fn new(header: Header) -> Self {
        Self {
            header,
            units: BTreeMap::new(),
            bytes: 0,
            pins: 0,
            verified: false,
            entries: 0,
            generation: 0,
        }
    }

    /// Applies one record entry; returns the change in bytes present.
    pub(crate) fn apply(&mut self, entry: &Entry, clock: u64) -> i64 {
        self.entries += 1;
        match entry {
            Entry::Present { offset, len, sums } => {
                let gone = self.remove_overlapping(*offset, u64::from(*len));
                self.units.insert(
                    *offset,
                    Unit {
                        len: *len,
                        sums: sums.clone().into_boxed_slice(),
                        reads: 0,
                        last_use: clock,
                    },
                );
                self.bytes += u64::from(*len);
                i64::from(*len) - gone as i64
            }
            Entry::Dropped { offset, len } => {
                -(self.remove_overlapping(*offset, u64::from(*len)) as i64)
            }
        }
    }

    /// Removes every unit overlapping `[offset, offset + len)`; returns their bytes.
    pub(crate) fn remove_overlapping(&mut self, offset: u64, len: u64) -> u64 {
        let end = offset + len;
        let overlapping: Vec<u64> = self
            .units
            .range(..end)
            .rev()
            .take_while(|(start, unit)| *start + u64::from(unit.len) > offset)
            .map(|(start, _)| *start)
            .collect();
        let mut gone = 0;
        for start in overlapping {
            if let Some(unit) = self.units.remove(&start) {
                gone += u64::from(unit.len);
            }
        }
        self.bytes -= gone;
        gone
    }

    /// The units that together cover `[start, end)` without a gap, or `None`.
    pub(crate) fn covering(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let mut at = start;
        let mut out = Vec::new();
        let (&first, unit) = self.units.range(..=start).next_back()?;
        if first + u64::from(unit.len) <= start {
            return None;
        }
        out.push(first);
        at = at.max(first + u64::from(unit.len));
        while at < end {
            let unit = self.units.get(&at)?;
            out.push(at);
            at += u64::from(unit.len);
        }
        Some(out)
    }

    /// Whether every byte of the object is present.
    pub(crate) fn complete(&self) -> bool {
        self.header.length == 0 || self.covering(0, self.header.length).is_some()
    }
}

/// Every object in the cache, by digest.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) objects: HashMap<String, Object>,
    /// Bytes present, all objects together.
    pub(crate) total: u64,
    /// Units present.
    pub(crate) units: u64,
    pub(crate) clock: u64,
}

impl Index {
    pub(crate) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Applies an entry to `digest`'s object (which must be indexed), keeping the totals.
    pub(crate) fn apply(&mut self, digest: &str, entry: &Entry) {
        let clock = self.tick();
        if let Some(object) = self.objects.get_mut(digest) {
            let before = object.units.len() as i64;
            let delta = object.apply(entry, clock);
            self.units = (self.units as i64 + object.units.len() as i64 - before) as u64;
            self.total = (self.total as i64 + delta) as u64;
        }
    }

    /// Forgets an object; returns it.
    pub(crate) fn remove(&mut self, digest: &str) -> Option<Object> {
        let object = self.objects.remove(digest)?;
        self.total -= object.bytes;
        self.units -= object.units.len() as u64;
        Some(object)
    }

    /// Removes one unit of an object; returns its length.
    pub(crate) fn remove_unit(&mut self, digest: &str, offset: u64) -> Option<u32> {
        let object = self.objects.get_mut(digest)?;
        let unit = object.units.remove(&offset)?;
        object.bytes -= u64::from(unit.len);
        self.total -= u64::from(unit.len);
        self.units -= 1;
        Some(unit.len)
    }

    pub(crate) fn clear(&mut self) {
        *self = Index {
            clock: self.clock,
            ..Index::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Object {
        Object::new(Header {
            block_size: 4 * 65_536,
            length: 10 * 65_536 + 5,
            backend: "b".into(),
            key: "k".into(),
            etag: "e".into(),
        })
    }

    fn present(offset: u64, len: u32) -> Entry {
        Entry::Present {
            offset,
            len,
            sums: vec![0; (len as usize).div_ceil(65_536)],
        }
    }

    #[test]
    fn ranges_cover_replace_and_drop() {
        let mut o = object();
        o.apply(&present(65_536, 65_536), 1);
        o.apply(&present(131_072, 131_072), 2);
        assert_eq!(o.covering(70_000, 250_000), Some(vec![65_536, 131_072]));
        assert_eq!(o.covering(0, 10), None, "a gap before");
        assert_eq!(o.covering(70_000, 300_000), None, "a gap after");
        // A whole block over its parts replaces them.
        assert_eq!(o.apply(&present(0, 262_144), 3), 262_144 - 196_608);
        assert_eq!(o.units.len(), 1);
        assert!(!o.complete());
        o.apply(&present(262_144, 262_144), 4);
        o.apply(&present(524_288, 131_072 + 5), 5);
        assert!(o.complete());
        assert_eq!(o.bytes, o.header.length);
        o.apply(
            &Entry::Dropped {
                offset: 262_144,
                len: 262_144,
            },
            6,
        );
        assert!(!o.complete());
        assert_eq!(o.entries, 6);
    }
}
