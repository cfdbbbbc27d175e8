//! TrueNAS errors as gRPC codes the CO acts on correctly: a user mistake is never Internal,
//! TrueNAS being away is Unavailable (retried), a full pool is ResourceExhausted.

use tonic::Status;
use truenas::Error;

/// Maps a TrueNAS error met while doing `what`.
pub(crate) fn from_truenas(what: &str, err: Error) -> Status {
    let message = format!("{what}: {err}");
    let lower = message.to_lowercase();
    if lower.contains("out of space")
        || lower.contains("not recommended to use more than 80%")
        || lower.contains("no space left")
    {
        return Status::resource_exhausted(message);
    }
    match err {
        Error::NotFound { .. } => Status::not_found(message),
        Error::AlreadyExists { .. } => Status::already_exists(message),
        Error::Validation { .. } => Status::invalid_argument(message),
        Error::Busy { .. }
        | Error::TooManyCalls { .. }
        | Error::Transport { .. }
        | Error::Timeout { .. } => Status::unavailable(message),
        Error::NotAuthenticated { .. } | Error::Auth { .. } => Status::unavailable(message),
        Error::NoSuchMethod { .. } => Status::failed_precondition(message),
        _ => Status::internal(message),
    }
}

/// A `.map_err` helper: `client.call().await.map_err(tn("creating the dataset"))`.
pub(crate) fn tn(what: &'static str) -> impl Fn(Error) -> Status {
    move |err| from_truenas(what, err)
}
