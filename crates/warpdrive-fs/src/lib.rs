//! warpdrive's filesystem: several object stores shown as one read-only POSIX tree.
//! [`namespace`] arranges backends by mount path; [`Core`] holds the shared state that the
//! subsystems work on: `listing` (lookups, listings, `stat` over `inodes` stable for the
//! mount's life), `blocks` (the read path through the block cache, one fetch per block),
//! `prefetch` (handles and readahead, by the rules in [`readahead`]), `warm`, `invalidate`
//! (forget what is known under a prefix), [`health`] (backend probes and last errors) and
//! [`usage`] (who read what, bounded). Every
//! failure is an [`FsError`] that keeps its cause and maps to an errno in [`error`]; [`fuse`]
//! is the thin fuser adapter that serves kernel requests concurrently on tokio.

mod blocks;
pub mod confined;
pub mod core;
pub mod error;
pub mod fuse;
pub mod health;
mod inodes;
pub mod invalidate;
mod listing;
pub mod metrics;
pub mod namespace;
pub mod paged;
mod passthrough;
mod prefetch;
pub mod readahead;
mod recent;
pub mod usage;
mod warm;

pub use crate::core::{Backend, Core, CoreStats, FsSettings};
pub use crate::error::{FsError, ToErrno};
pub use crate::health::BackendHealth;
pub use crate::inodes::{Attr, Kind, ROOT};
pub use crate::usage::{UsageReport, UsageRow, UsageSettings};
pub use crate::warm::{WarmError, WarmOptions, WarmProgress};
