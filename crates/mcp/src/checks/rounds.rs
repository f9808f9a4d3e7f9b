//! Multi round-trip request checks (MCP 2026-07-28 basic/patterns/mrtr): what the server may
//! ask in an `input_required` result, and whether the client answered it and came back.

use serde_json::Value;

use super::{finding, Check, Finding, Severity};
use crate::jsonrpc::Message;
use crate::rounds::{Attempt, RoundTrip, ROUND_METHODS};
use crate::session::Session;

const INPUT_REQUIRED: &str = "input-required";
const SPEC: &str =
    "MCP 2026-07-28 Multi Round-Trip Requests §Server Requirements, §Client Requirements";

/// More `input_required` answers than this for one call: the round does not end.
const ROUND_LIMIT: usize = 5;

pub fn checks() -> Vec<Check> {
    vec![Check {
        id: INPUT_REQUIRED,
        spec: SPEC,
        run: input_required,
    }]
}

/// The client capability an input request needs.
fn capability(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// The client capabilities a request declared in its `_meta`.
fn declared(session: &Session<'_>, ex: u64) -> Option<Value> {
    let step = session.step(ex)?;
    step.sent.iter().find_map(|m| match m {
        Message::Request {
            params: Some(p), ..
        } => p
            .pointer("/_meta/io.modelcontextprotocol~1clientCapabilities")
            .cloned(),
        _ => None,
    })
}

/// What an `input_required` answer asked: `ok=elicitation/create, …`.
fn asked(a: &Attempt) -> String {
    if a.input_requests.is_empty() {
        return "no input requests, only a requestState".into();
    }
    a.input_requests
        .iter()
        .map(|(k, m)| format!("{k}={m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn input_required(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for trip in &session.round_trips {
        server_side(session, trip, &mut out);
        client_side(trip, &mut out);
    }
    out
}

/// What the server may put in an `input_required` result.
fn server_side(session: &Session<'_>, trip: &RoundTrip, out: &mut Vec<Finding>) {
    let label = trip.label();
    for a in trip
        .attempts
        .iter()
        .filter(|a| a.answer == "input_required")
    {
        let mut problems = Vec::new();
        if !ROUND_METHODS.contains(&trip.method.as_str()) {
            problems.push(format!(
                "{} may not be answered input_required (only tools/call, prompts/get and resources/read may)",
                trip.method
            ));
        }
        if a.input_requests.is_empty() && a.asked_state.is_none() {
            problems.push("it carries neither inputRequests nor requestState".to_string());
        }
        let caps = declared(session, a.ex);
        for (key, method) in &a.input_requests {
            match capability(method) {
                None => problems.push(format!(
                    "inputRequests.{key} is {method}, which is none of elicitation/create, sampling/createMessage, roots/list"
                )),
                Some(cap) if caps.as_ref().is_some_and(|c| c.get(cap).is_none()) => {
                    problems.push(format!(
                        "inputRequests.{key} asks {method}, but the client did not declare the {cap} capability"
                    ))
                }
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            out.push(finding(
                INPUT_REQUIRED,
                SPEC,
                Severity::Error,
                Some(a.ex),
                format!(
                    "The input_required answer to {label} (#{}) breaks the rules of multi round-trip requests: {}. A client cannot complete the call.",
                    a.ex,
                    problems.join("; ")
                ),
                vec![format!("inputRequests: {}", asked(a))],
            ));
        }
    }
}

/// Whether the client came back with the input, as asked, and whether the rounds end.
fn client_side(trip: &RoundTrip, out: &mut Vec<Finding>) {
    let label = trip.label();
    for pair in trip.attempts.windows(2) {
        let (asked, retry) = (&pair[0], &pair[1]);
        let mut problems = Vec::new();
        if asked.asked_state != retry.request_state {
            problems.push(match (&asked.asked_state, &retry.request_state) {
                (Some(_), None) => "it did not echo the requestState".to_string(),
                (None, Some(_)) => "it sent a requestState the server never gave".to_string(),
                _ => "its requestState is not the one the server gave".to_string(),
            });
        }
        if asked.id == retry.id {
            problems.push(format!("it reused the JSON-RPC id {}", retry.id));
        }
        let missing: Vec<&str> = asked
            .input_requests
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !retry.input_responses.iter().any(|r| r == k))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "it answered no inputResponses.{}",
                missing.join(", inputResponses.")
            ));
        }
        if !problems.is_empty() {
            out.push(finding(
                INPUT_REQUIRED,
                SPEC,
                Severity::Error,
                Some(retry.ex),
                format!(
                    "The client's retry of {label} (#{}, after input_required at #{}) is not what the server asked for: {}.",
                    retry.ex,
                    asked.ex,
                    problems.join("; ")
                ),
                vec![format!(
                    "requestState asked {} / sent {}",
                    asked.asked_state.as_deref().unwrap_or("(none)"),
                    retry.request_state.as_deref().unwrap_or("(none)")
                )],
            ));
        }
    }
    let last = trip.attempts.last().expect("a trip has an attempt");
    if trip.rounds() > ROUND_LIMIT {
        out.push(finding(
            INPUT_REQUIRED,
            SPEC,
            Severity::Warning,
            Some(last.ex),
            format!(
                "{label} was answered input_required {} times (from #{} to #{}) and never completed: the rounds loop. The server asks again when the input does not satisfy it; check what it asks for and what the client sends.",
                trip.rounds(),
                trip.attempts[0].ex,
                last.ex
            ),
            vec![format!("{} attempts", trip.attempts.len())],
        ));
    } else if last.answer == "input_required" {
        out.push(finding(
            INPUT_REQUIRED,
            SPEC,
            Severity::Warning,
            Some(last.ex),
            format!(
                "{label} was answered input_required at #{} ({}), and the client never came back with the input: the call did not complete. A client must gather the input (asking its user) and retry the request with inputResponses and the requestState.",
                last.ex,
                asked(last)
            ),
            vec![format!("#{} answered input_required", last.ex)],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use mcptap_capture::reader::Capture;
    use serde_json::json;

    const MS: u64 = 1_000;

    /// A 2026-07-28 tools/call of `confirm`, declaring elicitation, with extra params.
    fn call(ex: u64, id: u64, extra: Value) -> Ex {
        let mut params = json!({"name": "confirm", "arguments": {"action": "deploy"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}});
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        Ex::post(ex, ex * 10 * MS, &body.to_string())
            .h("mcp-protocol-version", "2026-07-28")
            .h("mcp-method", "tools/call")
            .h("mcp-name", "confirm")
    }

    fn input_required(id: u64, method: &str) -> String {
        json!({"jsonrpc": "2.0", "id": id, "result": {"resultType": "input_required",
            "inputRequests": {"ok": {"method": method, "params": {"mode": "form",
                "message": "Deploy?", "requestedSchema": {"type": "object"}}}},
            "requestState": "s1"}})
        .to_string()
    }

    fn done(id: u64) -> String {
        json!({"jsonrpc": "2.0", "id": id, "result": {"resultType": "complete",
            "content": [{"type": "text", "text": "confirmed"}]}})
        .to_string()
    }

    fn retry(ex: u64, id: u64) -> Ex {
        call(
            ex,
            id,
            json!({"requestState": "s1", "inputResponses": {"ok": {"action": "accept",
                "content": {"confirm": true}}}}),
        )
    }

    #[test]
    fn a_round_answered_and_completed_is_fine_and_reads_as_one_call() {
        let mut cap = Cap::new();
        cap.add(call(1, 1, json!({})).json(&input_required(1, "elicitation/create")))
            .add(retry(2, 2).json(&done(2)));
        quiet(&cap.run(super::input_required));
        let text = cap.lines.join("\n") + "\n";
        let capture = Capture::from_reader(text.as_bytes(), "t.jsonl").unwrap();
        let session = Session::analyze(&capture);
        assert_eq!(session.round_trips.len(), 1);
        let trip = &session.round_trips[0];
        assert_eq!(trip.label(), "tools/call confirm");
        assert!(trip.completed());
        assert_eq!(trip.rounds(), 1);
    }

    #[test]
    fn a_round_the_client_never_answers_is_a_warning_at_the_input_required() {
        let mut cap = Cap::new();
        cap.add(call(1, 1, json!({})).json(&input_required(1, "elicitation/create")));
        let f = one(
            &cap.run(super::input_required),
            INPUT_REQUIRED,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("never came back"), "{}", f.message);
    }

    #[test]
    fn a_retry_that_drops_the_state_or_reuses_the_id_is_an_error() {
        let mut cap = Cap::new();
        cap.add(call(1, 1, json!({})).json(&input_required(1, "elicitation/create")))
            .add(call(2, 1, json!({"inputResponses": {"ok": {}}})).json(&done(1)));
        let f = one(
            &cap.run(super::input_required),
            INPUT_REQUIRED,
            Severity::Error,
            Some(2),
        );
        assert!(
            f.message.contains("did not echo the requestState"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("reused the JSON-RPC id 1"),
            "{}",
            f.message
        );
    }

    #[test]
    fn asking_what_the_client_did_not_declare_is_an_error() {
        let mut cap = Cap::new();
        cap.add(call(1, 1, json!({})).json(&input_required(1, "sampling/createMessage")))
            .add(retry(2, 2).json(&done(2)));
        let f = one(
            &cap.run(super::input_required),
            INPUT_REQUIRED,
            Severity::Error,
            Some(1),
        );
        assert!(
            f.message
                .contains("did not declare the sampling capability"),
            "{}",
            f.message
        );
    }

    #[test]
    fn rounds_that_never_end_are_a_loop() {
        let mut cap = Cap::new();
        cap.add(call(1, 1, json!({})).json(&input_required(1, "elicitation/create")));
        for n in 2..=7 {
            cap.add(retry(n, n).json(&input_required(n, "elicitation/create")));
        }
        let f = one(
            &cap.run(super::input_required),
            INPUT_REQUIRED,
            Severity::Warning,
            Some(7),
        );
        assert!(f.message.contains("7 times"), "{}", f.message);
    }
}
