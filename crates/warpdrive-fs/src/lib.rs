//! warpdrive's filesystem: several object stores shown as one read-only POSIX tree
//! (../shared/specs/warpdrive.md). [`namespace`] arranges backends by mount path, [`Core`]
//! answers lookups, listings and reads through object_store with per-backend timeouts, and
//! [`fuse`] is the thin fuser adapter that serves kernel requests concurrently on tokio.

pub mod core;
pub mod fuse;
pub mod metrics;
pub mod namespace;
pub mod readahead;
mod recent;

pub use crate::core::{
    Attr, Backend, Core, CoreStats, FsSettings, Kind, ROOT, WarmError, WarmProgress,
};
