//! Error shapes exactly as TrueNAS sends them (spec §2): the JSON-RPC code, the TrueNAS error
//! object in `data`, and the `reason` text built the way middlewared builds it.

use serde_json::{Value, json};

/// One `[attribute, message, errno]` entry of a validation error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Dotted attribute, or `None`.
    pub(crate) attribute: Option<String>,
    /// Message.
    pub(crate) message: String,
    /// errno (22 for schema errors, 2 for not found).
    pub(crate) errno: i64,
}

impl Entry {
    /// An EINVAL entry on `attribute`.
    pub(crate) fn invalid(attribute: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            attribute: Some(attribute.into()),
            message: message.into(),
            errno: 22,
        }
    }
}

/// A failed call, ready to be put on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// -32602 with entries.
    Validation(Vec<Entry>),
    /// -32001 CallError with errno.
    Call {
        /// errno.
        errno: i64,
        /// Message without the `[ERRNAME]` prefix.
        message: String,
        /// Exception class shown in the trace.
        class: &'static str,
    },
    /// -32001 with a bare reason (e.g. `MatchNotFound()`).
    Bare {
        /// errno in `data.error`.
        errno: i64,
        /// The reason as is.
        reason: String,
        /// Exception class.
        class: &'static str,
    },
    /// Any code with no `data` (-32600, -32601, -32700, -32000).
    Plain {
        /// JSON-RPC code.
        code: i64,
        /// Message.
        message: String,
    },
}

/// errno → name (spec §2).
pub(crate) fn errname(errno: i64) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        22 => "EINVAL",
        39 => "ENOTEMPTY",
        74 => "EBADMSG",
        95 => "EOPNOTSUPP",
        125 => "ECANCELED",
        201 => "ENOMETHOD",
        207 => "ENOTAUTHENTICATED",
        _ => "EUNKNOWN",
    }
}

/// errname → errno, for fault injection by name.
pub(crate) fn errno_of(name: &str) -> Option<i64> {
    [1, 2, 13, 14, 16, 17, 18, 22, 39, 74, 95, 125, 201, 207]
        .into_iter()
        .find(|&n| errname(n) == name)
}

impl Failure {
    /// A CallError (`-32001`, `[ERRNAME] message`).
    pub(crate) fn call(errno: i64, message: impl Into<String>) -> Self {
        Self::Call {
            errno,
            message: message.into(),
            class: "CallError",
        }
    }

    /// One validation entry.
    pub(crate) fn invalid(attribute: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![Entry::invalid(attribute, message)])
    }

    /// InstanceNotFound: -32602 with errno 2 in `extra`.
    pub(crate) fn instance_not_found(message: impl Into<String>) -> Self {
        Self::Validation(vec![Entry {
            attribute: None,
            message: message.into(),
            errno: 2,
        }])
    }

    /// `get: true` with no match.
    pub(crate) fn match_not_found() -> Self {
        Self::Bare {
            errno: 22,
            reason: "MatchNotFound()".into(),
            class: "MatchNotFound",
        }
    }

    /// Not logged in.
    pub(crate) fn not_authenticated() -> Self {
        Self::call(207, "Not authenticated")
    }

    /// The `error` member of the reply.
    pub(crate) fn to_json(&self) -> Value {
        let trace = |class: &str, repr: String| json!({"class": class, "frames": [], "formatted": format!("Traceback (most recent call last):\n{repr}\n"), "repr": repr});
        match self {
            Self::Validation(entries) => {
                let reason: String = entries
                    .iter()
                    .map(|e| {
                        let errname = if e.errno == 2 {
                            "ENOENT"
                        } else {
                            errname(e.errno)
                        };
                        let attribute = e.attribute.as_deref().unwrap_or("None");
                        format!("[{errname}] {attribute}: {}\n", e.message)
                    })
                    .collect();
                let extra: Vec<Value> = entries
                    .iter()
                    .map(|e| json!([e.attribute, e.message, e.errno]))
                    .collect();
                let class = if entries.iter().any(|e| e.errno == 2) {
                    "InstanceNotFound"
                } else {
                    "ValidationErrors"
                };
                json!({"code": -32602, "message": "Invalid params", "data": {
                    "error": 22, "errname": "EINVAL", "reason": reason,
                    "trace": trace(class, format!("{class}()")), "extra": extra}})
            }
            Self::Call {
                errno,
                message,
                class,
            } => {
                let name = errname(*errno);
                json!({"code": -32001, "message": "Method call error", "data": {
                    "error": errno, "errname": name, "reason": format!("[{name}] {message}"),
                    "trace": trace(class, format!("{class}({message:?}, {errno})")), "extra": null}})
            }
            Self::Bare {
                errno,
                reason,
                class,
            } => json!({"code": -32001, "message": "Method call error", "data": {
                "error": errno, "errname": errname(*errno), "reason": reason,
                "trace": trace(class, reason.clone()), "extra": null}}),
            Self::Plain { code, message } => json!({"code": code, "message": message}),
        }
    }
}

/// Every handler returns this.
pub(crate) type Outcome = Result<Value, Failure>;
