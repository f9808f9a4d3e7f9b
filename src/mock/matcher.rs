//! Which recorded exchange answers an incoming request.
//!
//! JSON-RPC aware: a request matches a recorded one with the same JSON-RPC method and the
//! same params (ids ignored, `_meta` ignored: it carries per-call progress tokens), then the
//! same HTTP method, path, query and form fields — except parameters a client draws at
//! random per flow (`state`, `nonce`, PKCE), and values that were redacted. Origins are
//! compared after swapping the mock's own for the recorded one, so the metadata the mock
//! served (naming the mock) leads to requests that match the recording.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::capture::reader::{Capture, Exchange};
use crate::mcp::jsonrpc;
use crate::replay::fill::{placeholders, url_params, whole_placeholder, PLACEHOLDER_PREFIX};
use crate::replay::origins::replace_origins;

/// What a redacted value is served as: URL-, header- and cookie-safe, and mapped back to
/// the recorded placeholder when a client sends it again.
pub const STAND_IN_PREFIX: &str = "mcptap-redacted-";

/// Origins in normalised text.
const ORIGIN: &str = "{origin}";

/// Parameters a client makes up afresh in every flow.
const VOLATILE: &[&str] = &["state", "nonce", "code_challenge", "code_verifier"];

/// One JSON-RPC message of a request body, as matching sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Rpc {
    /// A request or notification: its method and normalised params.
    Call { method: String, params: Value },
    /// A response the client sends (to a server's request): matched by being one.
    Answer,
    /// Not JSON-RPC.
    Other,
}

/// The parts of a request that matching compares (recorded or incoming).
#[derive(Debug, Clone)]
pub struct Shape {
    pub method: String,
    pub path: String,
    /// Decoded, normalised query parameters.
    pub query: Vec<(String, String)>,
    /// Decoded, normalised form fields, for a form body.
    pub form: Option<Vec<(String, String)>>,
    /// The JSON-RPC messages of a JSON body.
    pub rpc: Option<Vec<Rpc>>,
    /// JSON-RPC request ids, in order (rewritten in the response).
    pub ids: Vec<Value>,
    /// `params._meta.progressToken` of each request, in order.
    pub progress_tokens: Vec<Value>,
    /// Decoded query and form parameters as sent (for echoing `state` back).
    pub raw_params: Vec<(String, String)>,
    /// `POST /mcp tools/call`.
    pub label: String,
}

/// The recorded exchanges that can answer, and which of them have.
pub struct Book {
    pub capture: Arc<Capture>,
    /// Indexes into `capture.exchanges` of the exchanges that have a response.
    pub entries: Vec<usize>,
    shapes: Vec<Shape>,
    used: Mutex<Vec<bool>>,
    /// The origins the recorded client used.
    pub origins: Vec<String>,
}

/// What answers a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// This entry (index into `Book::entries`); `again` when `--reuse` repeats it.
    Served {
        entry: usize,
        again: bool,
    },
    Unmatched(Unmatched),
}

/// Why nothing answers, for the 404.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    /// The closest recorded exchange, and what differed.
    pub closest: Option<(u64, String, Vec<String>)>,
}

impl Book {
    pub fn new(capture: Arc<Capture>, origins: Vec<String>) -> Book {
        let entries: Vec<usize> = capture
            .exchanges
            .iter()
            .enumerate()
            .filter(|(_, x)| x.response.is_some())
            .map(|(i, _)| i)
            .collect();
        let shapes = entries
            .iter()
            .map(|&i| recorded_shape(&capture.exchanges[i], &origins))
            .collect();
        Book {
            used: Mutex::new(vec![false; entries.len()]),
            entries,
            shapes,
            capture,
            origins,
        }
    }

    pub fn exchange(&self, entry: usize) -> &Exchange {
        &self.capture.exchanges[self.entries[entry]]
    }

    pub fn shape(&self, entry: usize) -> &Shape {
        &self.shapes[entry]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Picks the recorded exchange for an incoming request: the first unserved exact match
    /// in recorded order, or (with `reuse`) the last exact match again.
    pub fn pick(&self, incoming: &Shape, reuse: bool) -> Pick {
        let exact: Vec<usize> = (0..self.shapes.len())
            .filter(|&e| {
                let s = &self.shapes[e];
                s.method == incoming.method
                    && s.path == incoming.path
                    && differences(s, incoming).is_empty()
            })
            .collect();
        {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(&e) = exact.iter().find(|&&e| !used[e]) {
                used[e] = true;
                return Pick::Served {
                    entry: e,
                    again: false,
                };
            }
        }
        if let (true, Some(&e)) = (reuse, exact.last()) {
            return Pick::Served {
                entry: e,
                again: true,
            };
        }
        if let Some(&e) = exact.last() {
            let n = exact.len();
            return Pick::Unmatched(Unmatched {
                closest: Some((
                    self.exchange(e).ex,
                    self.shapes[e].label.clone(),
                    vec![format!(
                        "the {n} recorded response{} to this request {} served already (--reuse serves the last one again)",
                        if n == 1 { "" } else { "s" },
                        if n == 1 { "was" } else { "were" }
                    )],
                )),
            });
        }
        let closest = (0..self.shapes.len())
            .map(|e| {
                let s = &self.shapes[e];
                let diffs = all_differences(s, incoming);
                (distance(s, incoming, &diffs), e, diffs)
            })
            .min_by_key(|(d, e, _)| (*d, *e));
        Pick::Unmatched(Unmatched {
            closest: closest
                .map(|(_, e, diffs)| (self.exchange(e).ex, self.shapes[e].label.clone(), diffs)),
        })
    }
}

/// How far apart two requests are, for naming the closest one.
fn distance(a: &Shape, b: &Shape, diffs: &[String]) -> usize {
    let rpc_method = |s: &Shape| -> Vec<String> {
        s.rpc
            .iter()
            .flatten()
            .filter_map(|r| match r {
                Rpc::Call { method, .. } => Some(method.clone()),
                _ => None,
            })
            .collect()
    };
    usize::from(a.method != b.method) * 1000
        + usize::from(a.path != b.path) * 500
        + usize::from(rpc_method(a) != rpc_method(b)) * 100
        + diffs.len()
}

/// Every difference, method and path included (for the 404).
fn all_differences(recorded: &Shape, incoming: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    if recorded.method != incoming.method {
        out.push(format!(
            "method: recorded {}, got {}",
            recorded.method, incoming.method
        ));
    }
    if recorded.path != incoming.path {
        out.push(format!(
            "path: recorded {}, got {}",
            recorded.path, incoming.path
        ));
    }
    out.extend(differences(recorded, incoming));
    out
}

/// What differs besides method and path, in words; empty when the request matches.
pub fn differences(recorded: &Shape, incoming: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    match (&recorded.rpc, &incoming.rpc) {
        (Some(r), Some(i)) if r.len() != i.len() => out.push(format!(
            "JSON-RPC batch: recorded {} messages, got {}",
            r.len(),
            i.len()
        )),
        (Some(r), Some(i)) => {
            for (r, i) in r.iter().zip(i) {
                match (r, i) {
                    (
                        Rpc::Call {
                            method: rm,
                            params: rp,
                        },
                        Rpc::Call {
                            method: im,
                            params: ip,
                        },
                    ) => {
                        if rm != im {
                            out.push(format!("JSON-RPC method: recorded {rm}, got {im}"));
                        } else {
                            json_differences("params", rp, ip, &mut out);
                        }
                    }
                    (Rpc::Answer, Rpc::Answer) | (Rpc::Other, Rpc::Other) => {}
                    (r, i) => out.push(format!(
                        "JSON-RPC message: recorded {}, got {}",
                        rpc_kind(r),
                        rpc_kind(i)
                    )),
                }
            }
        }
        (Some(_), None) => out.push("body: recorded a JSON-RPC message, got none".into()),
        (None, Some(_)) => out.push("body: got a JSON-RPC message, recorded none".into()),
        (None, None) => {}
    }
    pair_differences(
        "query parameter",
        &recorded.query,
        &incoming.query,
        &mut out,
    );
    match (&recorded.form, &incoming.form) {
        (Some(r), Some(i)) => pair_differences("form field", r, i, &mut out),
        (Some(_), None) => out.push("body: recorded a form, got none".into()),
        (None, Some(_)) => out.push("body: got a form, recorded none".into()),
        (None, None) => {}
    }
    out
}

fn rpc_kind(r: &Rpc) -> String {
    match r {
        Rpc::Call { method, .. } => method.clone(),
        Rpc::Answer => "a response".into(),
        Rpc::Other => "not JSON-RPC".into(),
    }
}

/// Parameters compared by name: volatile ones and redacted recorded values match anything.
fn pair_differences(
    kind: &str,
    recorded: &[(String, String)],
    incoming: &[(String, String)],
    out: &mut Vec<String>,
) {
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in recorded.iter().chain(incoming) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let values = |list: &[(String, String)], name: &str| -> Vec<String> {
        list.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    for name in names {
        let (r, i) = (values(recorded, name), values(incoming, name));
        if r.is_empty() {
            out.push(format!(
                "{kind} {name}: not recorded, got {:?}",
                i.join(",")
            ));
        } else if i.is_empty() {
            out.push(format!(
                "{kind} {name}: recorded {:?}, missing",
                r.join(",")
            ));
        } else if VOLATILE.contains(&name) || r.iter().all(|v| whole_placeholder(v).is_some()) {
            continue;
        } else if r != i {
            out.push(format!(
                "{kind} {name}: recorded {:?}, got {:?}",
                r.join(","),
                i.join(",")
            ));
        }
    }
}

/// The first few places where two JSON values differ (`params.arguments.n: recorded 3, got 5`).
fn json_differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    const MAX: usize = 3;
    if out.len() >= MAX || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => json_differences(&p, v, w, out),
                    (Some(v), None) => out.push(format!("{p}: recorded {}, missing", short(v))),
                    (None, Some(w)) => out.push(format!("{p}: not recorded, got {}", short(w))),
                    (None, None) => {}
                }
                if out.len() >= MAX {
                    return;
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                json_differences(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ => out.push(format!("{path}: recorded {}, got {}", short(a), short(b))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// Origins become `{origin}`, stand-ins become the placeholders they stand for.
pub fn normalise(text: &str, origins: &[String], own_origin: Option<&str>) -> String {
    let mut s = text.to_string();
    if let Some(own) = own_origin {
        s = replace_origins(&s, &[own.to_string()], ORIGIN);
    }
    s = replace_origins(&s, origins, ORIGIN);
    if s.contains(STAND_IN_PREFIX) {
        s = from_stand_ins(&s);
    }
    s
}

/// `<redacted fp=X>` → `mcptap-redacted-X`.
pub fn to_stand_ins(text: &str) -> String {
    let found = placeholders(text);
    if found.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for p in found {
        out.push_str(&text[done..p.start]);
        out.push_str(STAND_IN_PREFIX);
        out.push_str(&p.fp);
        done = p.end;
    }
    out.push_str(&text[done..]);
    out
}

/// `mcptap-redacted-X` → `<redacted fp=X>`.
fn from_stand_ins(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(STAND_IN_PREFIX) {
        let after = &rest[i + STAND_IN_PREFIX.len()..];
        out.push_str(&rest[..i]);
        match after.get(..8).filter(|fp| crate::replay::fill::is_fp(fp)) {
            Some(fp) => {
                out.push_str(PLACEHOLDER_PREFIX);
                out.push_str(fp);
                out.push('>');
                rest = &after[8..];
            }
            None => {
                out.push_str(STAND_IN_PREFIX);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The shape of a recorded request.
fn recorded_shape(x: &Exchange, origins: &[String]) -> Shape {
    shape(
        x.method(),
        x.path_and_query(),
        x.request_media_type().as_deref(),
        &x.request_body.bytes,
        origins,
        None,
    )
}

/// The shape of any request. `own_origin`: the mock's origin as the client addressed it.
pub fn shape(
    method: &str,
    path_and_query: &str,
    media_type: Option<&str>,
    body: &[u8],
    origins: &[String],
    own_origin: Option<&str>,
) -> Shape {
    let norm = |s: &str| normalise(s, origins, own_origin);
    let path = path_and_query
        .split(['?', '#'])
        .next()
        .unwrap_or(path_and_query)
        .to_string();
    let raw_query = url_params(path_and_query);
    let query = raw_query
        .iter()
        .map(|(k, v)| (k.clone(), norm(v)))
        .collect();
    let mut raw_params = raw_query;
    let is_form = media_type == Some("application/x-www-form-urlencoded");
    let form = is_form.then(|| {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        raw_params.extend(pairs.iter().cloned());
        pairs.into_iter().map(|(k, v)| (k, norm(&v))).collect()
    });
    let mut ids = Vec::new();
    let mut progress_tokens = Vec::new();
    let mut rpc: Option<Vec<Rpc>> = None;
    if !is_form && !body.is_empty() {
        let text = norm(&String::from_utf8_lossy(body));
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let messages = jsonrpc::decode(&value);
            let is_rpc = messages
                .iter()
                .all(|m| !matches!(m, jsonrpc::Message::Invalid { .. }));
            if is_rpc {
                let items: Vec<&Value> = match &value {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                rpc = Some(
                    items
                        .iter()
                        .map(|item| rpc_of(item, &mut ids, &mut progress_tokens))
                        .collect(),
                );
            }
        }
    }
    let methods: Vec<String> = rpc
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter_map(|r: &Rpc| match r {
            Rpc::Call { method, .. } => Some(method.clone()),
            _ => None,
        })
        .collect();
    let label = if methods.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path} {}", methods.join(","))
    };
    Shape {
        method: method.to_ascii_uppercase(),
        path,
        query,
        form,
        rpc,
        ids,
        progress_tokens,
        raw_params,
        label,
    }
}

fn rpc_of(item: &Value, ids: &mut Vec<Value>, tokens: &mut Vec<Value>) -> Rpc {
    let Some(obj) = item.as_object() else {
        return Rpc::Other;
    };
    match obj.get("method").and_then(Value::as_str) {
        Some(method) => {
            if let Some(id) = obj.get("id") {
                ids.push(id.clone());
            }
            let mut params = obj.get("params").cloned().unwrap_or(Value::Null);
            if let Some(p) = params.as_object_mut() {
                if let Some(token) = p.get("_meta").and_then(|m| m.get("progressToken")).cloned() {
                    tokens.push(token);
                }
                p.remove("_meta");
            }
            if params == Value::Object(Map::new()) {
                // `{}` and no params at all mean the same.
                params = Value::Null;
            }
            Rpc::Call {
                method: method.to_string(),
                params,
            }
        }
        None => Rpc::Answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(body: &str) -> Shape {
        shape(
            "POST",
            "/mcp",
            Some("application/json"),
            body.as_bytes(),
            &[],
            None,
        )
    }

    #[test]
    fn ids_and_meta_are_ignored_params_are_not() {
        let a = rpc(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"n","_meta":{"progressToken":"a"}}}"#,
        );
        let b = rpc(
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"_meta":{"progressToken":7},"name":"n"}}"#,
        );
        assert!(differences(&a, &b).is_empty());
        assert_eq!(b.ids, vec![Value::from("x")]);
        assert_eq!(b.progress_tokens, vec![Value::from(7)]);
        let c = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"m"}}"#);
        assert_eq!(
            differences(&a, &c),
            vec![r#"params.name: recorded "n", got "m""#.to_string()]
        );
        let d = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#);
        let e = rpc(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert!(differences(&d, &e).is_empty());
    }

    #[test]
    fn volatile_and_redacted_parameters_match_anything() {
        let origins = vec!["http://127.0.0.1:1".to_string()];
        let recorded = shape(
            "GET",
            "/authorize?state=a&code_challenge=b&client_id=c&resource=http%3A%2F%2F127.0.0.1%3A1%2Fmcp&code=<redacted fp=11111111>",
            None,
            b"",
            &origins,
            None,
        );
        let incoming = shape(
            "GET",
            "/authorize?state=z&code_challenge=y&client_id=c&resource=http%3A%2F%2F127.0.0.1%3A2%2Fmcp&code=mcptap-redacted-22222222",
            None,
            b"",
            &origins,
            Some("http://127.0.0.1:2"),
        );
        assert!(
            differences(&recorded, &incoming).is_empty(),
            "{:?}",
            differences(&recorded, &incoming)
        );
        let other = shape(
            "GET",
            "/authorize?state=z&client_id=d",
            None,
            b"",
            &origins,
            None,
        );
        let diffs = differences(&recorded, &other);
        assert!(diffs.contains(&r#"query parameter client_id: recorded "c", got "d""#.to_string()));
        assert!(diffs
            .iter()
            .any(|d| d.starts_with("query parameter resource: recorded")));
    }

    proptest::proptest! {
        /// Whatever a request or a capture holds, shaping and comparing never panic.
        #[test]
        fn any_request_is_shaped_without_panicking(
            target in "\\PC{0,40}",
            body in "(\\PC|mcptap-redacted-[0-9a-f]{0,9}|[{}\\[\\]\":,]|http://h:1)*",
            form in proptest::bool::ANY,
        ) {
            let media = if form { "application/x-www-form-urlencoded" } else { "application/json" };
            let origins = vec!["http://h:1".to_string()];
            let a = shape("POST", &target, Some(media), body.as_bytes(), &origins, Some("http://h"));
            let b = shape("GET", &body, None, target.as_bytes(), &origins, None);
            let _ = all_differences(&a, &b);
            let _ = to_stand_ins(&body);
            let _ = normalise(&body, &origins, Some(&target));
        }
    }

    #[test]
    fn stand_ins_round_trip() {
        let text = "code=<redacted fp=0123abcd>&x=1";
        let served = to_stand_ins(text);
        assert_eq!(served, "code=mcptap-redacted-0123abcd&x=1");
        assert_eq!(normalise(&served, &[], None), text);
    }
}
