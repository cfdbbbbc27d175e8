//! Pools and their raw capacity (spec §4.1). For free space a volume can use, prefer the
//! root dataset's `available` (raw `free` counts parity).

use serde::Deserialize;

use crate::query::{Filter, Query};
use crate::{Client, Error};

/// One pool entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Pool {
    /// Database id.
    pub id: i64,
    /// Pool name (also its root dataset).
    pub name: String,
    /// `ONLINE`, `DEGRADED`, …
    pub status: String,
    /// Whether ZFS reports it healthy.
    #[serde(default)]
    pub healthy: bool,
    /// Raw size, bytes.
    #[serde(default)]
    pub size: u64,
    /// Raw bytes allocated.
    #[serde(default)]
    pub allocated: u64,
    /// Raw bytes free (parity included).
    #[serde(default)]
    pub free: u64,
}

/// `pool.query`.
#[derive(Debug, Clone, Copy)]
pub struct Pools<'a>(pub(super) &'a Client);

impl Pools<'_> {
    /// All pools.
    pub async fn list(&self) -> Result<Vec<Pool>, Error> {
        super::query(self.0, "pool.query", &Query::all()).await
    }

    /// One pool by name; `None` if absent.
    pub async fn get(&self, name: &str) -> Result<Option<Pool>, Error> {
        super::find(self.0, "pool.query", Filter::eq("name", name)).await
    }
}
