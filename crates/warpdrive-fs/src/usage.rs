//! Who read what: bytes and files read through the mount per backend, key prefix and uid,
//! the question a platform team asks of a shared cache. The table is bounded; reads that
//! would need a new row once it is full are counted as dropped, never stored.

use std::collections::HashMap;
use std::sync::Mutex;

/// How usage is grouped and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSettings {
    /// Rows kept at most; further (backend, prefix, uid) groups are counted as dropped.
    pub max_entries: usize,
    /// Leading directory segments of a key that name its prefix (`train/shard-3/x` at 1 is
    /// `train`; a file at the backend's top level has the empty prefix).
    pub prefix_depth: usize,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            prefix_depth: 1,
        }
    }
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRow {
    /// Backend name.
    pub backend: String,
    /// Key prefix (the first `prefix_depth` directories of the key).
    pub prefix: String,
    /// The reading process's uid, as FUSE reports it.
    pub uid: u32,
    /// Bytes returned to readers (from cache or backend).
    pub bytes: u64,
    /// Opened files that were read at least once.
    pub files: u64,
}

/// The table and what did not fit in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageReport {
    /// Rows, largest `bytes` first.
    pub rows: Vec<UsageRow>,
    /// Rows kept at most.
    pub max_entries: usize,
    /// Reads not counted in any row because the table was full.
    pub dropped_reads: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

#[derive(Debug, Default)]
struct Table {
    rows: HashMap<(usize, String, u32), (u64, u64)>,
    dropped_reads: u64,
    dropped_bytes: u64,
}

/// The bounded usage table.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    settings: UsageSettings,
    table: Mutex<Table>,
}

/// The first `depth` directory segments of `key` (its file name never counts).
pub(crate) fn prefix_of(key: &str, depth: usize) -> &str {
    let dir = key.rsplit_once('/').map_or("", |(dir, _)| dir);
    if depth == 0 || dir.is_empty() {
        return "";
    }
    match dir.match_indices('/').nth(depth - 1) {
        Some((at, _)) => &dir[..at],
        None => dir,
    }
}

impl Usage {
    pub(crate) fn new(settings: UsageSettings) -> Self {
        Self {
            settings,
            table: Mutex::default(),
        }
    }

    /// `bytes` were read from `key` of `backend` by `uid`; `first` when this is the first read
    /// through the handle (the file counts once per open).
    pub(crate) fn record(&self, backend: usize, key: &str, uid: u32, bytes: u64, first: bool) {
        let prefix = prefix_of(key, self.settings.prefix_depth);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let files = u64::from(first);
        // Look up by borrowed parts first: a hit allocates nothing.
        let full = table.rows.len() >= self.settings.max_entries;
        match table.rows.get_mut(&(backend, prefix.to_owned(), uid)) {
            Some(row) => {
                row.0 += bytes;
                row.1 += files;
            }
            None if full => {
                table.dropped_reads += 1;
                table.dropped_bytes += bytes;
            }
            None => {
                table
                    .rows
                    .insert((backend, prefix.to_owned(), uid), (bytes, files));
            }
        }
    }

    /// The table, with backend indexes named.
    pub(crate) fn report(&self, names: &[&str]) -> UsageReport {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<UsageRow> = table
            .rows
            .iter()
            .map(|((backend, prefix, uid), (bytes, files))| UsageRow {
                backend: names.get(*backend).copied().unwrap_or("?").to_owned(),
                prefix: prefix.clone(),
                uid: *uid,
                bytes: *bytes,
                files: *files,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| (&a.backend, &a.prefix, a.uid).cmp(&(&b.backend, &b.prefix, b.uid)))
        });
        UsageReport {
            rows,
            max_entries: self.settings.max_entries,
            dropped_reads: table.dropped_reads,
            dropped_bytes: table.dropped_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_take_leading_directories_only() {
        assert_eq!(prefix_of("train/shard-3/x.bin", 1), "train");
        assert_eq!(prefix_of("train/shard-3/x.bin", 2), "train/shard-3");
        assert_eq!(prefix_of("train/shard-3/x.bin", 5), "train/shard-3");
        assert_eq!(prefix_of("x.bin", 1), "");
        assert_eq!(prefix_of("train/x.bin", 0), "");
    }

    #[test]
    fn the_table_is_bounded_and_counts_what_it_dropped() {
        let usage = Usage::new(UsageSettings {
            max_entries: 2,
            prefix_depth: 1,
        });
        usage.record(0, "a/1", 1000, 10, true);
        usage.record(0, "a/2", 1000, 5, true);
        usage.record(0, "a/2", 1000, 5, false);
        usage.record(1, "b/1", 1000, 7, true);
        usage.record(0, "c/1", 1000, 3, true); // a third group: dropped
        usage.record(0, "a/3", 1001, 4, true); // another uid: dropped
        let report = usage.report(&["s3", "gcs"]);
        assert_eq!(report.rows.len(), 2);
        assert_eq!(
            report.rows[0],
            UsageRow {
                backend: "s3".into(),
                prefix: "a".into(),
                uid: 1000,
                bytes: 20,
                files: 2
            }
        );
        assert_eq!((report.dropped_reads, report.dropped_bytes), (2, 7));
    }
}
