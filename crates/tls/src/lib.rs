//! TLS for every connection we make or accept, on rustls with the aws-lc-rs provider.
//!
//! Clients verify by default against the system roots plus an optional CA bundle. Two
//! explicit alternatives exist for appliances with self-signed certificates: a SHA-256 pin of
//! the server's leaf certificate (trust exactly that certificate), and `insecure_skip_verify`
//! (trust anything), which logs a WARN every time a config is built and sets the gauge
//! `tls_insecure_skip_verify{component}` to 1 so dashboards show it. In both modes the
//! handshake signatures are still checked; only certificate trust changes.

mod client;
mod error;
mod metrics;
mod server;
mod verify;

pub use client::{ClientTlsSettings, client_config};
pub use error::Error;
pub use metrics::{TLS_INSECURE_SKIP_VERIFY, TlsMetrics};
pub use rustls;
pub use server::{ServerTlsSettings, server_config};
pub use verify::parse_pin;

/// The one crypto provider used everywhere, so no process-wide default has to be guessed.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
