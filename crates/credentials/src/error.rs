//! The one error type of the crate: it names a variable or a file, never a value.

use std::path::PathBuf;

/// Why a secret or a `${VAR}` reference could not be resolved; never carries the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named environment variable is not set.
    #[error("environment variable `{var}` is not set")]
    EnvMissing {
        /// Name of the variable.
        var: String,
    },
    /// The named environment variable holds bytes that are not UTF-8.
    #[error("environment variable `{var}` is not valid UTF-8")]
    EnvNotUnicode {
        /// Name of the variable.
        var: String,
    },
    /// The source exists but holds nothing, which is always a deployment mistake.
    #[error("{what} is empty")]
    Empty {
        /// The source, as "environment variable `X`" or "file `/p`".
        what: String,
    },
    /// The secret file could not be read.
    #[error("cannot read secret file `{}`", path.display())]
    FileRead {
        /// Path of the file.
        path: PathBuf,
        /// The I/O error (never contains file contents).
        #[source]
        source: std::io::Error,
    },
    /// The secret file holds bytes that are not UTF-8.
    #[error("secret file `{}` is not valid UTF-8", path.display())]
    FileNotUtf8 {
        /// Path of the file.
        path: PathBuf,
    },
    /// A `${VAR}` reference is malformed; the text quoted is config, never a secret value.
    #[error("bad `${{VAR}}` reference: {reason}")]
    BadReference {
        /// What is wrong and how to write it instead.
        reason: String,
    },
    /// A secret field was given in more than one way, or a literal value was given.
    #[error("{reason}")]
    AmbiguousSource {
        /// Which fields clash and which one to keep.
        reason: String,
    },
}
