//! TrueNAS errors, classified into the cases callers branch on (spec §2, rules in order).

use std::time::Duration;

use serde_json::Value;

/// The `error` member of a JSON-RPC reply, without the (large) Python trace.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// JSON-RPC code: -32602 validation, -32001 call error, -32601 unknown method, …
    pub code: i64,
    /// JSON-RPC message ("Invalid params", "Method call error", …).
    pub message: String,
    /// errno from `data.error` (22 for every -32602).
    pub errno: Option<i64>,
    /// `data.errname`, e.g. `ENOENT`, `EEXIST`, `ENOTAUTHENTICATED`.
    pub errname: Option<String>,
    /// `data.reason`, e.g. `[EBUSY] Failed to delete dataset: …`.
    pub reason: Option<String>,
    /// `data.extra` entries of a validation error.
    pub entries: Vec<ValidationEntry>,
}

/// One `[attribute, message, errno]` entry of a -32602 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationEntry {
    /// Dotted attribute such as `pool_dataset_create.name`, or `None`.
    pub attribute: Option<String>,
    /// The server's message.
    pub message: String,
    /// The real errno (2 = not found).
    pub errno: i64,
}

impl RpcError {
    /// Reads an `error` object; the `Err` names what is malformed.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let code = value
            .get("code")
            .and_then(Value::as_i64)
            .ok_or("error object without an integer `code`")?;
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let data = value.get("data");
        let field = |name: &str| data.and_then(|d| d.get(name));
        let entries = match field("extra") {
            Some(Value::Array(items)) if code == -32602 => items.iter().filter_map(entry).collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            code,
            message,
            errno: field("error").and_then(Value::as_i64),
            errname: field("errname").and_then(Value::as_str).map(str::to_owned),
            reason: field("reason").and_then(Value::as_str).map(str::to_owned),
            entries,
        })
    }

    pub(crate) fn text(&self) -> String {
        self.reason.clone().unwrap_or_else(|| self.message.clone())
    }
}

fn entry(item: &Value) -> Option<ValidationEntry> {
    let parts = item.as_array()?;
    Some(ValidationEntry {
        attribute: parts.first().and_then(Value::as_str).map(str::to_owned),
        message: parts
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        errno: parts.get(2).and_then(Value::as_i64).unwrap_or(22),
    })
}

/// Everything a TrueNAS call can fail with; each case is one a caller handles differently.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist (a delete treats this as success).
    #[error("{method}: not found: {reason}")]
    NotFound {
        /// The method called.
        method: String,
        /// The server's reason.
        reason: String,
    },
    /// The object exists already (a create re-queries and adopts).
    #[error("{method}: already exists: {reason}")]
    AlreadyExists {
        /// The method called.
        method: String,
        /// The server's reason.
        reason: String,
    },
    /// The server rejected the arguments; each entry names the attribute.
    #[error("{method}: invalid arguments: {}", describe(.entries))]
    Validation {
        /// The method called.
        method: String,
        /// The server's per-attribute complaints.
        entries: Vec<ValidationEntry>,
    },
    /// The pool or quota has no room for it (ENOSPC, or TrueNAS's space warnings).
    #[error("{method}: not enough space: {reason}")]
    NoSpace {
        /// The method called.
        method: String,
        /// The server's reason.
        reason: String,
    },
    /// The object is in use (EBUSY); retry later.
    #[error("{method}: busy: {reason}")]
    Busy {
        /// The method called.
        method: String,
        /// The server's reason.
        reason: String,
    },
    /// The socket lost its session (ENOTAUTHENTICATED): log in again once, then retry.
    #[error("{method}: the session is not authenticated")]
    NotAuthenticated {
        /// The method called.
        method: String,
    },
    /// The API key was refused or lacks a role; retrying will not help.
    #[error("authentication failed: {reason}")]
    Auth {
        /// Why, without the key.
        reason: String,
    },
    /// More than 20 calls were in flight on the socket (-32000); retry after others finish.
    #[error("{method}: too many concurrent calls on one connection")]
    TooManyCalls {
        /// The method called.
        method: String,
    },
    /// The method is unknown to this TrueNAS version (-32601).
    #[error("{method}: method does not exist on this TrueNAS (25.10 or later is required)")]
    NoSuchMethod {
        /// The method called.
        method: String,
    },
    /// Any other error the server returned.
    #[error("{method}: {reason} (JSON-RPC {code}, {errname})")]
    Call {
        /// The method called.
        method: String,
        /// JSON-RPC code.
        code: i64,
        /// errno name, or `EUNKNOWN`.
        errname: String,
        /// The server's reason.
        reason: String,
    },
    /// The connection failed or dropped; the call's outcome is unknown.
    #[error("connection to TrueNAS failed: {reason}")]
    Transport {
        /// What failed.
        reason: String,
    },
    /// No reply within the call timeout; the call's outcome is unknown.
    #[error("{method}: no reply within {}s", after.as_secs_f64())]
    Timeout {
        /// The method called.
        method: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server broke the protocol (malformed frame, unexpected result shape).
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The client settings cannot work (bad URL, key in clear over ws://).
    #[error("TrueNAS client settings: {reason}")]
    Config {
        /// What to change.
        reason: String,
    },
}

/// errno names of the errnos TrueNAS reports (spec §2).
fn errname_of(errno: i64) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        2 => "ENOENT",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        22 => "EINVAL",
        28 => "ENOSPC",
        39 => "ENOTEMPTY",
        74 => "EBADMSG",
        95 => "EOPNOTSUPP",
        201 => "ENOMETHOD",
        202 => "ESERVICESTARTFAILURE",
        205 => "EDATASETISLOCKED",
        207 => "ENOTAUTHENTICATED",
        _ => return None,
    })
}

fn describe(entries: &[ValidationEntry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|e| match &e.attribute {
            Some(attribute) => format!("{attribute}: {}", e.message),
            None => e.message.clone(),
        })
        .collect();
    parts.join("; ")
}

impl Error {
    /// Classifies a server error for `method` with the spec's rules, in order.
    pub fn from_rpc(method: &str, rpc: RpcError) -> Self {
        let method = method.to_owned();
        let reason = rpc.text();
        let errname = rpc.errname.clone().unwrap_or_else(|| "EUNKNOWN".into());
        let lower = reason.to_lowercase();
        // Spec §2 rule 1. The wording test is kept for errors without per-attribute entries
        // (libzfs texts); an attribute-level validation entry with errno 22 ("Parent dataset
        // (x) does not exist", "Property does not exist and cannot be inherited") is a bad
        // argument, not a missing object, and stays a validation error.
        let attributed = rpc.code == -32602 && rpc.entries.iter().any(|e| e.attribute.is_some());
        let not_found = (rpc.code == -32602 && rpc.entries.iter().any(|e| e.errno == 2))
            || (rpc.code == -32001 && errname == "ENOENT")
            || (!attributed && (lower.contains("does not exist") || lower.contains("not found")))
            || reason.contains("MatchNotFound");
        match rpc.code {
            -32601 => return Self::NoSuchMethod { method },
            -32000 => return Self::TooManyCalls { method },
            _ => {}
        }
        let no_space = errname == "ENOSPC"
            || lower.contains("out of space")
            || lower.contains("no space left")
            || lower.contains("not recommended to use more than 80%");
        if no_space {
            Self::NoSpace { method, reason }
        } else if not_found {
            Self::NotFound { method, reason }
        } else if errname == "EEXIST" || lower.contains("already exists") {
            Self::AlreadyExists { method, reason }
        } else if errname == "EBUSY" {
            Self::Busy { method, reason }
        } else if errname == "ENOTAUTHENTICATED" || rpc.errno == Some(207) {
            Self::NotAuthenticated { method }
        } else if errname == "EACCES" {
            Self::Auth {
                reason: format!("{method}: {reason}; give the API key's user the needed role"),
            }
        } else if rpc.code == -32602 {
            let entries = if rpc.entries.is_empty() {
                vec![ValidationEntry {
                    attribute: None,
                    message: reason,
                    errno: 22,
                }]
            } else {
                rpc.entries
            };
            Self::Validation { method, entries }
        } else {
            Self::Call {
                method,
                code: rpc.code,
                errname,
                reason,
            }
        }
    }

    /// A short label for metrics and logs: `not_found`, `validation`, `transport`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Validation { .. } => "validation",
            Self::Busy { .. } => "busy",
            Self::NoSpace { .. } => "no_space",
            Self::NotAuthenticated { .. } | Self::Auth { .. } => "auth",
            Self::TooManyCalls { .. } => "too_many_calls",
            Self::NoSuchMethod { .. } => "no_such_method",
            Self::Call { .. } => "error",
            Self::Transport { .. } => "transport",
            Self::Timeout { .. } => "timeout",
            Self::Protocol { .. } => "protocol",
            Self::Config { .. } => "config",
        }
    }

    /// The error of a FAILED job from `core.get_jobs`, classified like a direct error.
    pub fn from_job(method: &str, job: &Value) -> Self {
        let reason = job
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the job failed without a message")
            .to_owned();
        let info = job.get("exc_info").cloned().unwrap_or(Value::Null);
        let extra = info.get("extra").cloned().unwrap_or(Value::Null);
        let validation = info.get("type").and_then(Value::as_str) == Some("VALIDATION");
        let errno = info.get("errno").and_then(Value::as_i64);
        let data = serde_json::json!({
            "error": if validation { Some(22) } else { errno },
            "errname": if validation { Some("EINVAL") } else { errno.and_then(errname_of) },
            "reason": reason,
            "extra": if validation { extra } else { Value::Null },
        });
        let error = serde_json::json!({
            "code": if validation { -32602 } else { -32001 },
            "message": if validation { "Invalid params" } else { "Method call error" },
            "data": data,
        });
        match RpcError::from_value(&error) {
            Ok(rpc) => Self::from_rpc(method, rpc),
            Err(reason) => Self::Protocol { reason },
        }
    }

    /// Whether trying the same call again may succeed (read-only calls are retried).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Busy { .. }
                | Self::TooManyCalls { .. }
                | Self::Transport { .. }
                | Self::Timeout { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn classify(error: Value) -> Error {
        Error::from_rpc("m", RpcError::from_value(&error).unwrap())
    }

    // The examples of spec §2, verbatim apart from the trace.
    #[test]
    fn spec_examples_classify() {
        let not_authenticated = json!({"code":-32001,"message":"Method call error","data":{"error":207,"errname":"ENOTAUTHENTICATED","reason":"[ENOTAUTHENTICATED] Not authenticated","trace":null,"extra":null}});
        assert!(matches!(
            classify(not_authenticated),
            Error::NotAuthenticated { .. }
        ));

        let instance_missing = json!({"code":-32602,"message":"Invalid params","data":{"error":22,"errname":"EINVAL","reason":"[ENOENT] None: PoolDataset tank/k8s/pvc-x does not exist","trace":null,"extra":[[null,"PoolDataset tank/k8s/pvc-x does not exist",2]]}});
        assert!(matches!(classify(instance_missing), Error::NotFound { .. }));

        let exists = json!({"code":-32602,"message":"Invalid params","data":{"error":22,"errname":"EINVAL","reason":"[EINVAL] pool_dataset_create.name: Path /mnt/tank/k8s/pvc-1 already exists\n","trace":null,"extra":[["pool_dataset_create.name","Path /mnt/tank/k8s/pvc-1 already exists",22]]}});
        assert!(matches!(classify(exists), Error::AlreadyExists { .. }));

        let union = json!({"code":-32602,"message":"Invalid params","data":{"error":22,"errname":"EINVAL","reason":"…","trace":null,"extra":[["data.PoolDatasetCreateFilesystem.type","Input should be 'FILESYSTEM'",22],["data.PoolDatasetCreateVolume.volsize","Field required",22]]}});
        let err = classify(union);
        assert_eq!(
            err.to_string(),
            "m: invalid arguments: data.PoolDatasetCreateFilesystem.type: Input should be 'FILESYSTEM'; data.PoolDatasetCreateVolume.volsize: Field required"
        );

        let busy = json!({"code":-32001,"message":"Method call error","data":{"error":16,"errname":"EBUSY","reason":"[EBUSY] Failed to delete dataset: cannot destroy 'tank/k8s/pvc-1': dataset is busy","trace":null,"extra":null}});
        let busy = classify(busy);
        assert!(matches!(busy, Error::Busy { .. }) && busy.is_retryable());

        let snap_exists = json!({"code":-32001,"message":"Method call error","data":{"error":17,"errname":"EEXIST","reason":"[EEXIST] Failed to snapshot tank/k8s/pvc-1@snap-1: dataset already exists","trace":null,"extra":null}});
        assert!(matches!(classify(snap_exists), Error::AlreadyExists { .. }));

        // An attribute-level complaint that mentions "does not exist" is still a bad argument.
        let parent = json!({"code":-32602,"message":"Invalid params","data":{"error":22,"errname":"EINVAL","reason":"[EINVAL] pool_dataset_create.name: Parent dataset (tank/a) does not exist.\n","trace":null,"extra":[["pool_dataset_create.name","Parent dataset (tank/a) does not exist.",22]]}});
        assert!(matches!(classify(parent), Error::Validation { .. }));

        let no_match = json!({"code":-32001,"message":"Method call error","data":{"error":22,"errname":"EINVAL","reason":"MatchNotFound()","trace":null,"extra":null}});
        assert!(matches!(classify(no_match), Error::NotFound { .. }));
    }

    #[test]
    fn space_errors_are_their_own_kind() {
        let full = classify(
            json!({"code":-32001,"message":"Method call error","data":{"error":28,"errname":"ENOSPC","reason":"[ENOSPC] cannot create 'tank/v': out of space","extra":null}}),
        );
        assert!(matches!(full, Error::NoSpace { .. }) && !full.is_retryable());
        let quota = classify(
            json!({"code":-32602,"message":"Invalid params","data":{"error":22,"errname":"EINVAL","reason":"[EINVAL] pool_dataset_create.volsize: It is not recommended to use more than 80% of your available space for VOLUME","extra":[["pool_dataset_create.volsize","It is not recommended to use more than 80% of your available space for VOLUME",22]]}}),
        );
        assert_eq!(quota.kind(), "no_space");
    }

    #[test]
    fn protocol_level_codes() {
        assert!(matches!(
            classify(json!({"code":-32601,"message":"Method does not exist"})),
            Error::NoSuchMethod { .. }
        ));
        let too_many = classify(
            json!({"code":-32000,"message":"Maximum number of concurrent calls (20) has exceeded"}),
        );
        assert!(matches!(too_many, Error::TooManyCalls { .. }) && too_many.is_retryable());
        let denied = classify(
            json!({"code":-32001,"message":"Method call error","data":{"error":13,"errname":"EACCES","reason":"[EACCES] Not authorized","extra":null}}),
        );
        assert!(matches!(denied, Error::Auth { .. }) && !denied.is_retryable());
        let other = classify(
            json!({"code":-32001,"message":"Method call error","data":{"error":14,"errname":"EFAULT","reason":"[EFAULT] boom","extra":null}}),
        );
        assert_eq!(
            other.to_string(),
            "m: [EFAULT] boom (JSON-RPC -32001, EFAULT)"
        );
    }
}
