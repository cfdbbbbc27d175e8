//! Node errors and their gRPC codes.

use std::time::Duration;

use tonic::Status;

/// Everything a node operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A request field is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// A host command exited non-zero.
    #[error("`{command}` failed (exit {status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: i32,
        /// Its standard error.
        stderr: String,
    },
    /// A host command did not finish in time.
    #[error("`{command}` did not finish within {after:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        after: Duration,
    },
    /// A host command could not be started.
    #[error("cannot run `{program}`: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// Something else is mounted where the volume should be.
    #[error("{0}")]
    Conflict(String),
    /// The volume is not staged or published here.
    #[error("{0}")]
    NotFound(String),
    /// File-system level failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl NodeError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Self {
        let message = err.to_string();
        match err {
            NodeError::Invalid(_) => Status::invalid_argument(message),
            NodeError::Conflict(_) => Status::already_exists(message),
            NodeError::NotFound(_) => Status::not_found(message),
            NodeError::Timeout { .. } => Status::deadline_exceeded(message),
            _ => Status::internal(message),
        }
    }
}
