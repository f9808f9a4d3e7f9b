//! JSON-RPC 2.0 messages as MCP carries them (JSON-RPC 2.0 §4–§6; MCP "Base Protocol"):
//! requests, notifications, results, errors and batches, from bodies and SSE data.

use serde_json::Value;

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: String,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    Result {
        id: String,
        result: Value,
    },
    Error {
        id: Option<String>,
        code: i64,
        message: String,
        /// The error's `data`, when it has one (e.g. the versions a server supports).
        data: Option<Value>,
    },
    /// JSON that is not a valid JSON-RPC message; the reason says why.
    Invalid {
        reason: String,
    },
}

impl Message {
    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            _ => None,
        }
    }

    /// The id, for requests, results and errors that have one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Message::Request { id, .. } | Message::Result { id, .. } => Some(id),
            Message::Error { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// Requests and notifications travel to the handler; results and errors answer them.
    pub fn is_response(&self) -> bool {
        matches!(self, Message::Result { .. } | Message::Error { .. })
    }

    pub fn is_request(&self) -> bool {
        matches!(self, Message::Request { .. })
    }

    pub fn is_notification(&self) -> bool {
        matches!(self, Message::Notification { .. })
    }
}

/// An id as a comparable key: `1` and `"1"` stay distinct (`n:1` vs `s:1`).
fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => Some(format!("n:{n}")),
        _ => None,
    }
}

/// Shows an id key the way it appeared on the wire.
pub fn show_id(key: &str) -> &str {
    key.get(2..).unwrap_or(key)
}

/// Decodes one JSON value: a message or a batch of them.
pub fn decode(value: &Value) -> Vec<Message> {
    match value {
        Value::Array(items) => items.iter().map(decode_one).collect(),
        other => vec![decode_one(other)],
    }
}

/// Decodes a body or SSE `data`; `None` when it is not JSON at all.
pub fn decode_bytes(bytes: &[u8]) -> Option<Vec<Message>> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    Some(decode(&value))
}

fn decode_one(value: &Value) -> Message {
    let Some(obj) = value.as_object() else {
        return Message::Invalid {
            reason: "not a JSON object".into(),
        };
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Message::Invalid {
            reason: "no \"jsonrpc\": \"2.0\" member".into(),
        };
    }
    let id = obj.get("id");
    if let Some(method) = obj.get("method") {
        let Some(method) = method.as_str() else {
            return Message::Invalid {
                reason: "\"method\" is not a string".into(),
            };
        };
        let params = obj.get("params").cloned();
        return match id {
            None => Message::Notification {
                method: method.to_string(),
                params,
            },
            Some(id) => match id_key(id) {
                Some(id) => Message::Request {
                    id,
                    method: method.to_string(),
                    params,
                },
                None => Message::Invalid {
                    reason: "a request id must be a string or a number (MCP forbids null)".into(),
                },
            },
        };
    }
    if let Some(error) = obj.get("error") {
        return Message::Error {
            id: id.and_then(id_key),
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            data: error.get("data").cloned(),
        };
    }
    if let Some(result) = obj.get("result") {
        return match id.and_then(id_key) {
            Some(id) => Message::Result {
                id,
                result: result.clone(),
            },
            None => Message::Invalid {
                reason: "a result without a usable id".into(),
            },
        };
    }
    Message::Invalid {
        reason: "neither method, result nor error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_every_kind_and_batches() {
        let batch = json!([
            {"jsonrpc":"2.0","id":1,"method":"initialize","params":{}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":"a","result":{"ok":true}},
            {"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"nope"}},
            {"id":3,"method":"x"},
            {"jsonrpc":"2.0","id":null,"method":"x"},
            7
        ]);
        let m = decode(&batch);
        assert_eq!(m[0].method(), Some("initialize"));
        assert_eq!(m[0].id(), Some("n:1"));
        assert!(m[1].is_notification());
        assert_eq!(m[2].id(), Some("s:a"));
        assert!(matches!(m[3], Message::Error { code: -32601, .. }));
        assert!(matches!(m[4], Message::Invalid { .. }));
        assert!(matches!(m[5], Message::Invalid { .. }));
        assert!(matches!(m[6], Message::Invalid { .. }));
        assert_eq!(show_id("n:1"), "1");
    }

    #[test]
    fn non_json_is_none() {
        assert!(decode_bytes(b"<html>").is_none());
    }

    proptest::proptest! {
        /// Arbitrary JSON never makes the decoder panic.
        #[test]
        fn arbitrary_json_never_panics(s in ".{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = decode(&v);
            }
            let _ = decode_bytes(s.as_bytes());
        }
    }
}
