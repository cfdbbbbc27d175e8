//! Why a filesystem request failed, with its cause kept, and the one place that turns a cause
//! into the errno a POSIX reader sees and the name a metric label shows.

use std::sync::Arc;
use std::time::Duration;

/// errno values the FUSE layer returns.
pub mod errno {
    /// No such entry.
    pub const ENOENT: i32 = 2;
    /// I/O error (backend down, timeout).
    pub const EIO: i32 = 5;
    /// Permission denied by the backend.
    pub const EACCES: i32 = 13;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid name.
    pub const EINVAL: i32 = 22;
    /// Read-only filesystem.
    pub const EROFS: i32 = 30;
    /// Out of memory (a directory too large to hold).
    pub const ENOMEM: i32 = 12;
    /// The object changed under an open handle (Linux's value).
    pub const ESTALE: i32 = 116;
}

/// The errno name a metric's `result` label shows (`ok` for success).
pub fn errno_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        errno::ENOENT => "ENOENT",
        errno::EIO => "EIO",
        errno::EACCES => "EACCES",
        errno::ENOTDIR => "ENOTDIR",
        errno::EISDIR => "EISDIR",
        errno::EINVAL => "EINVAL",
        errno::EROFS => "EROFS",
        errno::ESTALE => "ESTALE",
        errno::ENOMEM => "ENOMEM",
        _ => "other",
    }
}

/// Errors that a kernel request can end with: each knows its errno, so the mapping is written
/// once (mountpoint-s3's `ToErrno` is the model).
pub trait ToErrno {
    /// The errno the kernel gets.
    fn errno(&self) -> i32;
}

/// Why a filesystem operation failed. Cheap to clone, because one failed fetch is handed to
/// every reader waiting for the same block.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The inode or name is unknown.
    #[error("no such file or directory")]
    NoEntry,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsDir,
    /// `.` or `..` looked up by name.
    #[error("`{0}` cannot be looked up by name")]
    InvalidName(String),
    /// The backend says the object is gone.
    #[error("backend `{backend}`: object not found: {source}")]
    ObjectMissing {
        /// Backend name.
        backend: String,
        /// What the store said.
        #[source]
        source: Arc<object_store::Error>,
    },
    /// The object is no longer the version a handle opened (a conditional GET failed, or the
    /// object is gone): that handle's reads fail rather than mix bytes of two versions.
    #[error("backend `{backend}`: the object changed since it was opened: {source}")]
    Changed {
        /// Backend name.
        backend: String,
        /// What the store said.
        #[source]
        source: Arc<object_store::Error>,
    },
    /// The backend refused our credentials or the key.
    #[error("backend `{backend}` refused access: {source}")]
    Denied {
        /// Backend name.
        backend: String,
        /// What the store said.
        #[source]
        source: Arc<object_store::Error>,
    },
    /// Any other failure of a backend call.
    #[error("backend `{backend}` call failed: {source}")]
    Backend {
        /// Backend name.
        backend: String,
        /// What the store said.
        #[source]
        source: Arc<object_store::Error>,
    },
    /// The backend did not answer within its `request_timeout`.
    #[error("backend `{backend}` did not answer within {timeout:?}")]
    Timeout {
        /// Backend name.
        backend: String,
        /// The limit that ran out.
        timeout: Duration,
    },
    /// An object's body ended before the bytes its headers promised.
    #[error("backend `{backend}`: the body of `{key}` ended early")]
    ShortBody {
        /// Backend name.
        backend: String,
        /// Object key.
        key: String,
    },
    /// The fetch this request waited for went away without an answer (its task ended).
    #[error("the fetch of this block was abandoned")]
    Abandoned,
    /// Something is larger than the daemon can hold (what, in the message).
    #[error("too large: {0}")]
    TooLarge(String),
}

impl FsError {
    /// Classifies a store error met on `backend`, logging what an operator must see.
    pub(crate) fn store(backend: &str, err: object_store::Error) -> Self {
        let backend = backend.to_owned();
        match err {
            object_store::Error::NotFound { .. } => Self::ObjectMissing {
                backend,
                source: Arc::new(err),
            },
            object_store::Error::Precondition { .. } => {
                tracing::info!(%backend, %err, "an object changed under an open file");
                Self::Changed {
                    backend,
                    source: Arc::new(err),
                }
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                tracing::warn!(%backend, %err, "backend refused access");
                Self::Denied {
                    backend,
                    source: Arc::new(err),
                }
            }
            _ => {
                tracing::warn!(%backend, %err, "backend call failed");
                Self::Backend {
                    backend,
                    source: Arc::new(err),
                }
            }
        }
    }
}

impl FsError {
    /// A short, stable name of the failure for metric labels and health reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoEntry | Self::ObjectMissing { .. } => "not_found",
            Self::NotDir | Self::IsDir | Self::InvalidName(_) => "request",
            Self::Denied { .. } => "denied",
            Self::Changed { .. } => "changed",
            Self::Timeout { .. } => "timeout",
            Self::ShortBody { .. } => "short_body",
            Self::Abandoned => "abandoned",
            Self::TooLarge(_) => "too_large",
            Self::Backend { source, .. } => match source.as_ref() {
                object_store::Error::NotModified { .. } => "changed",
                _ => "backend",
            },
        }
    }
}

impl ToErrno for FsError {
    fn errno(&self) -> i32 {
        match self {
            Self::NoEntry | Self::ObjectMissing { .. } => errno::ENOENT,
            Self::NotDir => errno::ENOTDIR,
            Self::IsDir => errno::EISDIR,
            Self::InvalidName(_) => errno::EINVAL,
            Self::Denied { .. } => errno::EACCES,
            Self::Changed { .. } => errno::ESTALE,
            Self::TooLarge(_) => errno::ENOMEM,
            Self::Backend { .. }
            | Self::Timeout { .. }
            | Self::ShortBody { .. }
            | Self::Abandoned => errno::EIO,
        }
    }
}

/// The errno of a result (0 for success), for metrics.
pub(crate) fn code_of<T>(result: &Result<T, FsError>) -> i32 {
    result.as_ref().err().map_or(0, ToErrno::errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_cause_and_map_once() {
        let missing = FsError::store(
            "s3",
            object_store::Error::NotFound {
                path: "a".into(),
                source: "gone".into(),
            },
        );
        assert_eq!(missing.errno(), errno::ENOENT);
        assert!(std::error::Error::source(&missing).is_some());
        let other = FsError::store(
            "s3",
            object_store::Error::Generic {
                store: "S3",
                source: "boom".into(),
            },
        );
        assert_eq!(errno_name(other.errno()), "EIO");
        assert_eq!(errno_name(FsError::NotDir.errno()), "ENOTDIR");
        assert_eq!(errno_name(0), "ok");
    }
}
