//! Multi round-trip requests (MCP 2026-07-28 basic/patterns/mrtr): a `tools/call`,
//! `prompts/get` or `resources/read` answered with an `input_required` result, retried by the
//! client with `inputResponses` and the echoed `requestState` under a new id, until the server
//! completes it. Each such chain is one call in the user's eyes; its attempts are its rounds.

use serde::Serialize;
use serde_json::Value;

use super::jsonrpc::Message;
use super::session::{Call, Step};

/// The requests that may be answered `input_required`.
pub const ROUND_METHODS: &[&str] = &["tools/call", "prompts/get", "resources/read"];

/// One attempt of a multi round-trip request.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub ex: u64,
    /// The JSON-RPC id (as shown on the wire).
    pub id: String,
    /// The `requestState` this attempt carried, if any.
    pub request_state: Option<String>,
    /// The keys of the `inputResponses` it carried.
    pub input_responses: Vec<String>,
    /// How it was answered: `input_required`, `complete`, `error`, or `none`.
    pub answer: &'static str,
    /// For `input_required`: the keys and methods of its `inputRequests`, and its
    /// `requestState`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_requests: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked_state: Option<String>,
}

/// A call and its rounds, from the first attempt to the last one seen.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    pub method: String,
    /// The tool or prompt name, or the resource URI.
    pub name: Option<String>,
    pub attempts: Vec<Attempt>,
}

impl RoundTrip {
    /// The call completed (its last attempt got a final result).
    pub fn completed(&self) -> bool {
        self.attempts.last().is_some_and(|a| a.answer == "complete")
    }

    /// How many times the server answered `input_required`.
    pub fn rounds(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.answer == "input_required")
            .count()
    }

    /// The call in words: `tools/call confirm`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {n}", self.method),
            None => self.method.clone(),
        }
    }
}

/// The request message of `call`, from the step that carried it.
fn request<'s>(steps: &'s [Step<'_>], call: &Call) -> Option<&'s Value> {
    let i = steps.binary_search_by_key(&call.ex, |s| s.x.ex).ok()?;
    steps[i].sent.iter().find_map(|m| match m {
        Message::Request {
            id,
            params: Some(p),
            ..
        } if *id == call.id => Some(p),
        _ => None,
    })
}

/// The params' name (tools, prompts) or URI (resources).
fn name_of(params: Option<&Value>) -> Option<String> {
    let p = params?;
    p.get("name")
        .or_else(|| p.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn attempt(steps: &[Step<'_>], call: &Call) -> Attempt {
    let params = request(steps, call);
    let (answer, input_requests, asked_state) = match &call.answer {
        Some((_, _, Message::Result { result, .. }))
            if result.get("resultType").and_then(Value::as_str) == Some("input_required") =>
        {
            let requests = result
                .get("inputRequests")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let method = v.get("method").and_then(Value::as_str).unwrap_or("?");
                            (k.clone(), method.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let state = result
                .get("requestState")
                .and_then(Value::as_str)
                .map(str::to_string);
            ("input_required", requests, state)
        }
        Some((_, _, Message::Result { .. })) => ("complete", Vec::new(), None),
        Some(_) => ("error", Vec::new(), None),
        None => ("none", Vec::new(), None),
    };
    Attempt {
        ex: call.ex,
        id: super::jsonrpc::show_id(&call.id).to_string(),
        request_state: params
            .and_then(|p| p.get("requestState"))
            .and_then(Value::as_str)
            .map(str::to_string),
        input_responses: params
            .and_then(|p| p.get("inputResponses"))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        answer,
        input_requests,
        asked_state,
    }
}

/// Every call that was answered `input_required` at least once, with its later attempts: the
/// next request of the same method and name carries the round on.
pub fn round_trips(steps: &[Step<'_>], calls: &[Call]) -> Vec<RoundTrip> {
    let mut ordered: Vec<&Call> = calls
        .iter()
        .filter(|c| ROUND_METHODS.contains(&c.method.as_str()) || answered_input_required(c))
        .collect();
    ordered.sort_by_key(|c| (c.t, c.ex));
    let mut trips: Vec<RoundTrip> = Vec::new();
    // Trips still waiting for their retry, by (method, name).
    let mut open: Vec<usize> = Vec::new();
    for call in ordered {
        let name = name_of(request(steps, call));
        let this = attempt(steps, call);
        let waiting = open.iter().position(|&i| {
            trips[i].method == call.method
                && trips[i].name == name
                && trips[i]
                    .attempts
                    .last()
                    .is_some_and(|a| a.answer == "input_required")
        });
        match waiting {
            Some(w) => {
                let i = open[w];
                let ongoing = this.answer == "input_required";
                trips[i].attempts.push(this);
                if !ongoing {
                    open.remove(w);
                }
            }
            None if this.answer == "input_required" => {
                trips.push(RoundTrip {
                    method: call.method.clone(),
                    name,
                    attempts: vec![this],
                });
                open.push(trips.len() - 1);
            }
            None => {}
        }
    }
    trips
}

fn answered_input_required(call: &Call) -> bool {
    matches!(&call.answer, Some((_, _, Message::Result { result, .. }))
        if result.get("resultType").and_then(Value::as_str) == Some("input_required"))
}
