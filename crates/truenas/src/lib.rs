//! The TrueNAS SCALE 25.10 API as our client sees it (the subset is described in docs/tns-csi.md).
//!
//! [`Client`] keeps a small pool of logged-in WebSocket connections and multiplexes JSON-RPC
//! calls over them within TrueNAS's per-socket limit; it logs in again, reconnects with
//! backoff and retries read-only calls on its own. [`api`] is the typed surface the CSI
//! driver uses, so no call site builds method names or filter JSON by hand. Errors are
//! classified into cases a caller can branch on ([`Error`]).

pub mod api;
mod client;
mod connection;
mod error;
mod method;
pub mod metrics;
pub mod query;
pub mod wire;

pub use client::{ApiKey, Client, ClientSettings};
pub use error::{Error, RpcError, ValidationEntry};
pub use method::{Method, Resend};
pub use metrics::ClientMetrics;
