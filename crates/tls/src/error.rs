//! TLS set-up errors; each names the file or config field to fix.

use std::path::PathBuf;

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate, CA or key file could not be read or parsed.
    #[error("{what} `{}`: {reason}", path.display())]
    File {
        /// Which file this is ("CA bundle", "certificate", "private key").
        what: &'static str,
        /// Path from config.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate pin is not a SHA-256 digest.
    #[error("`pin_sha256`: {reason}")]
    BadPin {
        /// What is wrong with it.
        reason: String,
    },
    /// No trust anchor at all: neither system roots nor a CA bundle.
    #[error("no trusted CA certificates: the system store is empty and no `ca_file` is set")]
    NoRoots,
    /// rustls refused the combination (protocol versions, key and certificate mismatch).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}
