//! Why a credential could not be had: which endpoint, and what it said (never what we sent).

/// A failed identity call or an unusable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint could not be reached or did not answer in time.
    #[error("{endpoint}: {source}")]
    Transport {
        /// Which endpoint (URL without query).
        endpoint: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered with an error status; `detail` is its error code and message.
    #[error("{endpoint} answered HTTP {status}: {detail}")]
    Refused {
        /// Which endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The error code and description the endpoint gave (its documented error body).
        detail: String,
    },
    /// A successful answer without what the protocol promises.
    #[error("{endpoint}: unexpected answer: {detail}")]
    Malformed {
        /// Which endpoint.
        endpoint: String,
        /// What was missing or wrong.
        detail: String,
    },
    /// A secret or token file named in the config could not be read.
    #[error(transparent)]
    Secret(#[from] credentials::Error),
    /// The subject token file (a projected service-account token) could not be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No valid credential within the wait: the last refresh failed and the old one expired.
    #[error("backend `{backend}`: no valid {provider} credential ({reason})")]
    Unavailable {
        /// Backend name.
        backend: String,
        /// Credential method.
        provider: &'static str,
        /// The last refresh error, or that none finished in time.
        reason: String,
    },
    /// A setting cannot work (a plain-http endpoint without `allow_http`, a bad URL).
    #[error("{0}")]
    Config(String),
}
