//! The TrueNAS SCALE 25.10 API as our client sees it (../shared/specs/truenas-api.md).
//!
//! Work in progress for issue 3. What is here is the part with no I/O: the JSON-RPC 2.0
//! envelope ([`wire`]), the classification of TrueNAS errors into cases a caller can branch on
//! ([`Error`]), and typed query filters and options ([`query`]) so no call site builds filter
//! JSON by hand. The WebSocket connection, login, reconnect and the typed API per namespace
//! build on these.

mod error;
pub mod query;
pub mod wire;

pub use error::{Error, RpcError, ValidationEntry};
