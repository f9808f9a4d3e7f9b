//! `message-valid`: what the server sends on the MCP endpoint, judged as a strict client
//! judges it: JSON, JSON-RPC 2.0, an answer to a request the client made, an
//! InitializeResult with its required fields; and a client asking for a feature the server
//! did not declare.

use std::collections::BTreeSet;

use serde_json::Value;

use super::transport::label;
use super::{finding, Check, Finding, Severity};
use crate::jsonrpc::{show_id, Message};
use crate::session::{Role, Session};

const MESSAGE_VALID: &str = "message-valid";
const SPEC_MESSAGE_VALID: &str = "JSON-RPC 2.0 §4-§5; RFC 8259 (JSON); MCP Lifecycle §Initialization (InitializeResult: protocolVersion, capabilities, serverInfo{name, version}); MCP Server §Capabilities";

pub fn checks() -> Vec<Check> {
    vec![Check {
        id: MESSAGE_VALID,
        spec: SPEC_MESSAGE_VALID,
        run: message_valid,
    }]
}

fn message_valid(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |ex: u64, severity: Severity, message: String, evidence: Vec<String>| {
        // One finding per exchange: the first fault a strict client stops at.
        if !out.iter().any(|f: &Finding| f.exchange == Some(ex)) {
            out.push(finding(
                MESSAGE_VALID,
                SPEC_MESSAGE_VALID,
                severity,
                Some(ex),
                message,
                evidence,
            ));
        }
    };
    let sent: BTreeSet<&str> = session
        .steps
        .iter()
        .flat_map(|s| s.sent.iter())
        .filter_map(|m| match m {
            Message::Request { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    for s in session
        .steps
        .iter()
        .filter(|s| matches!(s.role, Role::Mcp | Role::LegacySse | Role::LegacyMessages))
    {
        let x = s.x;
        let ok = x.status().is_some_and(|c| (200..300).contains(&c));
        // An answer that is not JSON at all (a NaN, a trailing comma, a cut body).
        if ok
            && x.response_media_type().as_deref() == Some("application/json")
            && !x.response_body.bytes.is_empty()
            && x.response_body.omitted.is_none()
            && !x.response_body.truncated
        {
            if let Err(e) = serde_json::from_slice::<Value>(&x.response_body.bytes) {
                push(
                    x.ex,
                    Severity::Error,
                    format!(
                        "{}: the answer is declared JSON but is not ({e}); a client cannot read \
                         it, so the request looks unanswered.",
                        label(x)
                    ),
                    vec![format!(
                        "response body: {}",
                        crate::session::snippet(&x.response_body.text())
                    )],
                );
                continue;
            }
        }
        // An error status's body is often not JSON-RPC's (an OAuth error from the gate).
        if !ok {
            continue;
        }
        for (_, m) in &s.received {
            match m {
                Message::Invalid { reason } => push(
                    x.ex,
                    Severity::Error,
                    format!(
                        "{} carried a message that is not valid JSON-RPC 2.0: {reason}. A strict \
                         client drops it, or the whole connection.",
                        label(x)
                    ),
                    Vec::new(),
                ),
                Message::Result { id, .. } | Message::Error { id: Some(id), .. }
                    if !sent.contains(id.as_str()) =>
                {
                    push(
                        x.ex,
                        Severity::Error,
                        format!(
                            "{} carried an answer with id {} that matches no request the client \
                             sent; a client cannot pair it and its real request waits forever.",
                            label(x),
                            show_id(id)
                        ),
                        vec![format!("answer id: {}", show_id(id))],
                    )
                }
                _ => {}
            }
        }
    }
    // The InitializeResult's required fields, and what the server declared.
    for call in session.calls.iter().filter(|c| c.method == "initialize") {
        let Some((ex, _, Message::Result { result, .. })) = &call.answer else {
            continue;
        };
        let mut missing = Vec::new();
        if !result.get("protocolVersion").is_some_and(Value::is_string) {
            missing.push("protocolVersion");
        }
        if !result.get("capabilities").is_some_and(Value::is_object) {
            missing.push("capabilities");
        }
        match result.get("serverInfo") {
            Some(Value::Object(info)) => {
                for field in ["name", "version"] {
                    if !info.get(field).is_some_and(Value::is_string) {
                        missing.push(if field == "name" {
                            "serverInfo.name"
                        } else {
                            "serverInfo.version"
                        });
                    }
                }
            }
            _ => missing.push("serverInfo"),
        }
        if !missing.is_empty() {
            push(
                *ex,
                Severity::Error,
                format!(
                    "The InitializeResult lacks {}: a client that validates it (the TypeScript \
                     SDK does) refuses the session.",
                    missing.join(", ")
                ),
                missing.iter().map(|m| format!("missing: {m}")).collect(),
            );
        }
        let declared = |feature: &str| {
            result
                .get("capabilities")
                .and_then(|c| c.get(feature))
                .is_some()
        };
        for (method, feature) in [
            ("tools/list", "tools"),
            ("tools/call", "tools"),
            ("resources/list", "resources"),
            ("prompts/list", "prompts"),
        ] {
            if declared(feature) || !result.get("capabilities").is_some_and(Value::is_object) {
                continue;
            }
            if let Some(asked) = session
                .calls
                .iter()
                .find(|c| c.method == method && c.ex > call.ex)
            {
                push(
                    asked.ex,
                    Severity::Warning,
                    format!(
                        "The client called {method}, but the server's initialize answer declared \
                         no \"{feature}\" capability: a server may refuse it, and a client should \
                         not ask."
                    ),
                    vec![format!("capabilities: {}", result["capabilities"])],
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn a_nan_a_missing_version_and_an_answer_to_nothing_are_named() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s"}}}"#,
        ))
        .add(
            Ex::post(2, SEC, &rq(2, "tools/call"))
                .json(r#"{"jsonrpc":"2.0","id":2,"result":{"value":NaN}}"#),
        )
        .add(
            Ex::post(3, 2 * SEC, &rq(3, "tools/list"))
                .json(r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}"#),
        )
        .add(
            Ex::post(4, 3 * SEC, &rq(4, "tools/list"))
                .json(r#"{"id":4,"result":{"tools":[]}}"#),
        );
        let found = cap.run(message_valid);
        let at = |ex: u64| {
            found
                .iter()
                .find(|f| f.exchange == Some(ex))
                .unwrap_or_else(|| panic!("nothing at #{ex}: {found:#?}"))
        };
        assert!(at(1).message.contains("serverInfo.version"), "{found:#?}");
        assert!(
            at(2).message.contains("declared JSON but is not"),
            "{found:#?}"
        );
        assert!(at(3).message.contains("id 7"), "{found:#?}");
        assert!(at(4).message.contains("jsonrpc"), "{found:#?}");
    }

    #[test]
    fn a_call_for_an_undeclared_feature_is_a_warning_and_a_good_session_is_quiet() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}"#,
        ))
        .add(Ex::post(2, SEC, &rq(2, "tools/list")).json(&ok(2)));
        one(
            &cap.run(message_valid),
            MESSAGE_VALID,
            Severity::Warning,
            Some(2),
        );
        let mut good = Cap::new();
        good.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")));
        quiet(&good.run(message_valid));
    }
}
