//! Why a controller request failed, with TrueNAS's error kept as the source, and the one
//! mapping to the gRPC code the CO acts on: a user mistake is never Internal, TrueNAS being
//! away is Unavailable (retried), a full pool is ResourceExhausted.

use csi_api::NameBusy;
use tonic::{Code, Status};
use truenas::Error;

/// A failed controller operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// The request is wrong (a field, a parameter, a capability).
    #[error("{0}")]
    InvalidArgument(String),
    /// The volume or snapshot does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken by something else.
    #[error("{0}")]
    AlreadyExists(String),
    /// A size outside what can be served.
    #[error("{0}")]
    OutOfRange(String),
    /// The state on TrueNAS forbids it (not ours, no portal, in use).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A paging token this driver did not issue.
    #[error("{0}")]
    Aborted(String),
    /// The pool cannot hold the volume.
    #[error("{0}")]
    NoSpace(String),
    /// Another operation on the same name is running.
    #[error(transparent)]
    Busy(#[from] NameBusy),
    /// Try again: something changed under the request.
    #[error("{0}")]
    Unavailable(String),
    /// A state that should not happen.
    #[error("{0}")]
    Internal(String),
    /// A TrueNAS call failed while doing `what`.
    #[error("{what}: {source}")]
    TrueNas {
        /// What the controller was doing.
        what: String,
        /// TrueNAS's error.
        #[source]
        source: Error,
    },
}

impl ControllerError {
    /// A wrong request.
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
    /// A missing volume or snapshot.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
    /// A name taken by something else.
    pub(crate) fn already_exists(message: impl Into<String>) -> Self {
        Self::AlreadyExists(message.into())
    }
    /// A size that cannot be served.
    pub(crate) fn out_of_range(message: impl Into<String>) -> Self {
        Self::OutOfRange(message.into())
    }
    /// A state that forbids the request.
    pub(crate) fn failed_precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition(message.into())
    }
    /// A request to retry.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }
    /// A state that should not happen.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The gRPC code the CO sees.
    pub(crate) fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::NoSpace(_) => Code::ResourceExhausted,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Aborted(_) | Self::Busy(_) => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
            Self::TrueNas { source, .. } => match source {
                Error::NoSpace { .. } => Code::ResourceExhausted,
                Error::NotFound { .. } => Code::NotFound,
                Error::AlreadyExists { .. } => Code::AlreadyExists,
                Error::Validation { .. } => Code::InvalidArgument,
                Error::Busy { .. }
                | Error::TooManyCalls { .. }
                | Error::Transport { .. }
                | Error::Timeout { .. }
                | Error::NotAuthenticated { .. }
                | Error::Auth { .. } => Code::Unavailable,
                Error::NoSuchMethod { .. } => Code::FailedPrecondition,
                _ => Code::Internal,
            },
        }
    }

    /// The message the CO sees.
    #[cfg(test)]
    pub(crate) fn message(&self) -> String {
        self.to_string()
    }
}

impl From<ControllerError> for Status {
    fn from(err: ControllerError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

/// A `.map_err` helper: `client.call().await.map_err(tn("creating the dataset"))`.
pub(crate) fn tn(what: &'static str) -> impl Fn(Error) -> ControllerError {
    move |source| ControllerError::TrueNas {
        what: what.to_owned(),
        source,
    }
}

/// Wraps a TrueNAS error met while doing `what`.
pub(crate) fn from_truenas(what: &str, source: Error) -> ControllerError {
    ControllerError::TrueNas {
        what: what.to_owned(),
        source,
    }
}
