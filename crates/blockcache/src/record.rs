//! The on-disk format (version 3): one sparse data file per cached object version, holding
//! the object's bytes at their own offsets, and beside it one record file that says which
//! ranges of the data file are present and what their checksums are.
//!
//! A record file is a header, then entries appended in the order the ranges were written:
//!
//! ```text
//! header  magic "WDREC003" | block_size u64 | length u64 | owner_len u32 | owner | crc32 u32
//! entry   kind u8 (1 present, 2 dropped) | 0u8 ×3 | offset u64 | len u32 | sums n u32
//!         | n × crc32 u32 (one per 64 KiB chunk of the range) | crc32 u32 of the entry
//! ```
//!
//! All integers are little-endian; `owner` is backend, key and ETag joined by NUL. The record
//! is the only index there is: an entry is appended after its bytes are written, a torn entry
//! fails its own checksum and ends the record there, and bytes that never reached the disk
//! fail their range's checksums when read. So a crash costs at most what was being written.

use crate::CHUNK;

/// Names this format; a record file with any other magic is an older (or foreign) format.
pub(crate) const MAGIC: &[u8; 8] = b"WDREC003";
/// Bytes of the header before the owner: magic, block size, length, owner length.
const HEAD: usize = 8 + 8 + 8 + 4;
/// Entry kinds.
const PRESENT: u8 = 1;
const DROPPED: u8 = 2;
/// Bytes of an entry before its sums: kind, padding, offset, length, count.
const ENTRY_HEAD: usize = 1 + 3 + 8 + 4 + 4;

/// What a record file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) block_size: u64,
    /// The object's length, so whether it is whole can be told without the backend.
    pub(crate) length: u64,
    pub(crate) backend: String,
    pub(crate) key: String,
    pub(crate) etag: String,
}

/// One entry: a range written (with its checksums) or a range given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `sums` covers `[offset, offset + len)` chunk by chunk.
    Present {
        offset: u64,
        len: u32,
        sums: Vec<u32>,
    },
    /// Whatever overlapped `[offset, offset + len)` is gone (its hole was punched).
    Dropped { offset: u64, len: u32 },
}

impl Header {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let owner = [
            self.backend.as_bytes(),
            self.key.as_bytes(),
            self.etag.as_bytes(),
        ]
        .join(&0u8);
        let mut out = Vec::with_capacity(HEAD + owner.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        out.extend_from_slice(&owner);
        out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
        out
    }

    /// The header at the start of `bytes` and where the entries begin; `None` when it is not
    /// this format or is torn.
    pub(crate) fn decode(bytes: &[u8]) -> Option<(Self, usize)> {
        if bytes.len() < HEAD || &bytes[..8] != MAGIC {
            return None;
        }
        let block_size = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        let length = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
        let owner_len = u32::from_le_bytes(bytes[24..28].try_into().ok()?) as usize;
        let end = HEAD.checked_add(owner_len)?;
        let sum = bytes.get(end..end + 4)?;
        if crc32fast::hash(&bytes[..end]).to_le_bytes() != sum {
            return None;
        }
        let owner = std::str::from_utf8(&bytes[HEAD..end]).ok()?;
        let mut parts = owner.splitn(3, '\0');
        let (backend, key, etag) = (parts.next()?, parts.next()?, parts.next()?);
        Some((
            Self {
                block_size,
                length,
                backend: backend.to_owned(),
                key: key.to_owned(),
                etag: etag.to_owned(),
            },
            end + 4,
        ))
    }
}

impl Entry {
    /// A present range with the checksums of `data`'s chunks.
    pub(crate) fn present(offset: u64, data: &[u8]) -> Self {
        Entry::Present {
            offset,
            len: data.len() as u32,
            sums: data.chunks(CHUNK).map(crc32fast::hash).collect(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let (kind, offset, len, sums): (u8, u64, u32, &[u32]) = match self {
            Entry::Present { offset, len, sums } => (PRESENT, *offset, *len, sums),
            Entry::Dropped { offset, len } => (DROPPED, *offset, *len, &[]),
        };
        let mut out = Vec::with_capacity(ENTRY_HEAD + 4 * sums.len() + 4);
        out.push(kind);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(sums.len() as u32).to_le_bytes());
        for sum in sums {
            out.extend_from_slice(&sum.to_le_bytes());
        }
        out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
        out
    }

    /// The entries from `bytes` on, and how many bytes of them are whole: reading stops at
    /// the first torn or malformed entry (a write a crash cut short).
    pub(crate) fn decode_all(bytes: &[u8]) -> (Vec<Entry>, usize) {
        let mut entries = Vec::new();
        let mut at = 0;
        while let Some((entry, used)) = Self::decode(&bytes[at..]) {
            entries.push(entry);
            at += used;
        }
        (entries, at)
    }

    fn decode(bytes: &[u8]) -> Option<(Self, usize)> {
        let head = bytes.get(..ENTRY_HEAD)?;
        let kind = head[0];
        let offset = u64::from_le_bytes(head[4..12].try_into().ok()?);
        let len = u32::from_le_bytes(head[12..16].try_into().ok()?);
        let count = u32::from_le_bytes(head[16..20].try_into().ok()?) as usize;
        if count > (len as usize).div_ceil(CHUNK) || !offset.is_multiple_of(CHUNK as u64) {
            return None;
        }
        let end = ENTRY_HEAD + 4 * count;
        let sum = bytes.get(end..end + 4)?;
        if crc32fast::hash(&bytes[..end]).to_le_bytes() != sum {
            return None;
        }
        let entry = match kind {
            PRESENT if count == (len as usize).div_ceil(CHUNK) && len > 0 => Entry::Present {
                offset,
                len,
                sums: bytes[ENTRY_HEAD..end]
                    .chunks_exact(4)
                    .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                    .collect(),
            },
            DROPPED if count == 0 => Entry::Dropped { offset, len },
            _ => return None,
        };
        Some((entry, end + 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_entries_round_trip_and_a_torn_tail_ends_the_record() {
        let header = Header {
            block_size: 4 << 20,
            length: 12_345_678,
            backend: "s3".into(),
            key: "train/shard-0001.tar".into(),
            etag: "\"abc\"".into(),
        };
        let mut bytes = header.encode();
        let start = bytes.len();
        let data = vec![7u8; 200_000];
        let entries = [
            Entry::present(0, &data),
            Entry::Dropped {
                offset: 0,
                len: 200_000,
            },
            Entry::present(4 << 20, &data[..1000]),
        ];
        for entry in &entries {
            bytes.extend_from_slice(&entry.encode());
        }
        let (decoded, at) = Header::decode(&bytes).unwrap();
        assert_eq!((decoded, at), (header, start));
        let (got, used) = Entry::decode_all(&bytes[start..]);
        assert_eq!(got, entries);
        assert_eq!(used, bytes.len() - start);
        // A crash in the middle of the last entry: the first two stand.
        let cut = &bytes[start..bytes.len() - 3];
        let (got, used) = Entry::decode_all(cut);
        assert_eq!(got, entries[..2]);
        assert!(used < cut.len());
        // A flipped bit in a header is a torn header.
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(Header::decode(&bad).is_none());
    }
}
