//! The JSON-RPC 2.0 envelope exactly as TrueNAS speaks it: positional params, ids matched
//! out of order, notifications without ids (spec §1.2).

use serde::Serialize;
use serde_json::Value;

use crate::error::RpcError;

/// One call on the wire. `params` is always an array: TrueNAS arguments are positional.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request<'a> {
    jsonrpc: &'static str,
    /// Unique per socket; we use increasing decimal strings, as the spec suggests.
    pub id: String,
    /// `namespace.verb`, e.g. `pool.dataset.query`.
    pub method: &'a str,
    /// Positional arguments in the model's field order.
    pub params: Vec<Value>,
}

impl<'a> Request<'a> {
    /// A call of `method` with positional `params`.
    pub fn new(id: u64, method: &'a str, params: Vec<Value>) -> Self {
        Self {
            jsonrpc: "2.0",
            id: id.to_string(),
            method,
            params,
        }
    }

    /// The text frame to send.
    pub fn to_frame(&self) -> String {
        serde_json::to_string(self).expect("a request of JSON values always serializes")
    }
}

/// What one text frame from the server turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to the call with this id.
    Reply {
        /// The id we sent (a string for our calls).
        id: String,
        /// The `result`, or the `error` object.
        outcome: Result<Value, RpcError>,
    },
    /// An error the server could not tie to a call (`id: null`): unparseable frame, batch.
    Orphan(RpcError),
    /// A server notification (`collection_update`, `notify_unsubscribed`).
    Notification {
        /// The notification method.
        method: String,
        /// Its params object.
        params: Value,
    },
}

/// Why a frame from the server is not valid JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame from TrueNAS: {reason}")]
pub struct FrameError {
    /// What is wrong with it.
    pub reason: String,
}

/// Parses one text frame from the server.
pub fn parse_frame(text: &str) -> Result<Incoming, FrameError> {
    let bad = |reason: &str| FrameError {
        reason: reason.to_owned(),
    };
    let value: Value = serde_json::from_str(text).map_err(|err| FrameError {
        reason: format!("not JSON ({err})"),
    })?;
    let object = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad("`jsonrpc` is not \"2.0\""));
    }
    let id = match object.get("id") {
        None => {
            let method = object
                .get("method")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no id and no method"))?;
            let params = object.get("params").cloned().unwrap_or(Value::Null);
            return Ok(Incoming::Notification {
                method: method.to_owned(),
                params,
            });
        }
        Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        Some(_) => return Err(bad("`id` is neither a string, a number nor null")),
    };
    let outcome = match (object.get("result"), object.get("error")) {
        (Some(result), None) => Ok(result.clone()),
        (None, Some(error)) => {
            Err(RpcError::from_value(error).map_err(|reason| FrameError { reason })?)
        }
        _ => return Err(bad("a reply needs exactly one of `result` and `error`")),
    };
    match (id, outcome) {
        (Some(id), outcome) => Ok(Incoming::Reply { id, outcome }),
        (None, Err(error)) => Ok(Incoming::Orphan(error)),
        (None, Ok(_)) => Err(bad("a result with `id: null`")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_frame_is_positional_jsonrpc() {
        let request = Request::new(
            42,
            "pool.dataset.query",
            vec![json!([["id", "=", "tank/k8s"]]), json!({"get": true})],
        );
        assert_eq!(
            request.to_frame(),
            r#"{"jsonrpc":"2.0","id":"42","method":"pool.dataset.query","params":[[["id","=","tank/k8s"]],{"get":true}]}"#
        );
    }

    #[test]
    fn replies_match_by_id_whatever_its_type() {
        let reply = parse_frame(r#"{"jsonrpc":"2.0","result":"pong","id":"7"}"#).unwrap();
        assert_eq!(
            reply,
            Incoming::Reply {
                id: "7".into(),
                outcome: Ok(json!("pong"))
            }
        );
        let numeric = parse_frame(r#"{"jsonrpc":"2.0","result":true,"id":8}"#).unwrap();
        assert_eq!(
            numeric,
            Incoming::Reply {
                id: "8".into(),
                outcome: Ok(json!(true))
            }
        );
        let null_result = parse_frame(r#"{"jsonrpc":"2.0","result":null,"id":"9"}"#).unwrap();
        assert_eq!(
            null_result,
            Incoming::Reply {
                id: "9".into(),
                outcome: Ok(Value::Null)
            }
        );
    }

    #[test]
    fn errors_notifications_and_orphans() {
        let frame = r#"{"jsonrpc":"2.0","id":"3","error":{"code":-32601,"message":"Method does not exist"}}"#;
        let Incoming::Reply {
            outcome: Err(error),
            ..
        } = parse_frame(frame).unwrap()
        else {
            panic!("not an error reply")
        };
        assert_eq!(error.code, -32601);
        let orphan = parse_frame(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Batch messages are not supported at this time"}}"#).unwrap();
        assert!(matches!(
            orphan,
            Incoming::Orphan(RpcError { code: -32700, .. })
        ));
        let note = parse_frame(r#"{"jsonrpc":"2.0","method":"collection_update","params":{"msg":"removed","collection":"pool.dataset.query","id":"tank/a"}}"#).unwrap();
        assert!(
            matches!(note, Incoming::Notification { ref method, .. } if method == "collection_update")
        );
    }

    #[test]
    fn malformed_frames_are_refused_with_a_reason() {
        for (frame, reason) in [
            ("nope", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"id":"1","result":1}"#, "`jsonrpc`"),
            (r#"{"jsonrpc":"2.0","id":"1"}"#, "exactly one of"),
            (
                r#"{"jsonrpc":"2.0","id":"1","result":1,"error":{}}"#,
                "exactly one of",
            ),
            (r#"{"jsonrpc":"2.0","id":[1],"result":1}"#, "`id`"),
            (
                r#"{"jsonrpc":"2.0","id":"1","error":{"message":"x"}}"#,
                "code",
            ),
        ] {
            let err = parse_frame(frame).unwrap_err();
            assert!(err.reason.contains(reason), "{frame}: {err}");
        }
    }
}
