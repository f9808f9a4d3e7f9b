//! The comparison behind `mcptap diff A B`: two sessions side by side, aligned exchange by exchange, with the noise
//! of two recordings (dates, ids, tokens, the proxy's port) suppressed and the first
//! meaningful divergence named in one sentence — the comparison of a working server with a
//! failing one that ../shared/CASE.md did by hand.
//!
//! Steps: each capture is analysed ([`Session::analyze`]) for the role of every exchange;
//! exchanges are keyed by route, method, normalised path, JSON-RPC method and role, and
//! aligned as a heaviest common subsequence (`align.rs`); aligned pairs are compared field
//! by field (`compare.rs`) after the noise rules (`noise.rs`); the result is a [`Comparison`],
//! which `mcptap diff` shows side by side or as JSON, and `mcptap report --diff` as a page.
//!
//! # `--json` schema (version 1)
//!
//! One object. Fields are always present; `null` where the text says so. New fields may be
//! added; existing ones keep their name, type and meaning while `version` is 1.
//!
//! ```text
//! {
//!   "format": "mcptap-diff",            constant
//!   "version": 1,                       this schema's version
//!   "a": Side, "b": Side,               the two captures
//!   "options": {"strict": bool, "timing": bool, "timing_threshold_ms": int,
//!               "ignore": [string]},    what was asked
//!   "summary": {
//!     "aligned": int,                   pairs with the same key (= unchanged + changed)
//!     "unchanged": int, "changed": int,
//!     "inserted": int,                  exchanges only in B
//!     "deleted": int,                   exchanges only in A
//!     "moved": int,                     in both, in another order
//!     "differences": int                fields that differ, over all entries
//!   },
//!   "first_divergence": null | {
//!     "entry": int,                     index into "entries"
//!     "kind": "changed" | "inserted" | "deleted" | "moved",
//!     "field": string | null,           the first differing field, when there is one
//!     "sentence": string                e.g. "resource_metadata (#2 GET /.well-known/…):
//!                                       body.resource is \"…\" in A, \"…/mcp\" in B"
//!   },
//!   "entries": [ {                      in alignment order; moved ones where B has them
//!     "kind": "unchanged" | "changed" | "inserted" | "deleted" | "moved",
//!     "label": string,                  the role, or the JSON-RPC method for MCP requests
//!     "a": Exchange | null,             null for "inserted"
//!     "b": Exchange | null,             null for "deleted"
//!     "differences": [ {
//!       "field": string,                "status", "header.www-authenticate",
//!                                       "request.header.user-agent", "query.scope",
//!                                       "form.grant_type", "request.body.params.name",
//!                                       "body.resource", "body.tools[0].name",
//!                                       "sse.count", "sse[0].data.result", "outcome",
//!                                       "version", "timing.ttfb_ms", …
//!       "pointer": string,              the same as a JSON pointer ("/body/resource")
//!       "a": string | null,             A's value as recorded (JSON text; strings quoted),
//!       "b": string | null              at most 300 characters; null: not in that side
//!     } ]
//!   } ]
//! }
//! Side     = {"capture": path, "session_id": string, "exchanges": int,
//!             "routes": ["listen → upstream"], "era": string, "warnings": [string]}
//!             (era: "modern" | "legacy" | "fallback" | "failed_negotiation" | "unknown";
//!             when the eras differ and the first divergence is an MCP exchange, its
//!             sentence starts by naming the two eras)
//! Exchange = {"ex": int, "method": string, "path": string, "status": int | null,
//!             "rpc": string | null, "role": string}
//! ```

mod align;
mod compare;
mod noise;

use std::collections::HashMap;

use serde::Serialize;

use crate::era::Era;
use crate::jsonrpc::Message;
use crate::session::{Role, Session};
pub use compare::Difference;
use mcptap_capture::reader::{Capture, Exchange};

use align::{Item, Op};
use compare::{Rules, Seg};
use noise::Noise;

/// The default `--timing-threshold`.
pub const TIMING_THRESHOLD_MS: u64 = 100;

/// Validated options of one comparison.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub strict: bool,
    /// The `--ignore` values, as given.
    pub ignore: Vec<String>,
    /// Timing differences above this many milliseconds are reported; `None`: timing is not
    /// compared.
    pub timing_threshold_ms: Option<u64>,
}

/// The comparison, as `--json` prints it (schema in the module documentation).
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub format: &'static str,
    pub version: u32,
    pub a: Side,
    pub b: Side,
    pub options: OptionsReport,
    pub summary: Summary,
    pub first_divergence: Option<Divergence>,
    /// Set when the captures were too long to align whole: the size of the windows (in
    /// exchanges) they were aligned in, each share of A against the same share of B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windowed: Option<usize>,
    pub entries: Vec<Entry>,
}

impl Comparison {
    /// Whether anything differs after noise suppression.
    pub fn has_differences(&self) -> bool {
        self.first_divergence.is_some()
    }
}

/// One capture.
#[derive(Debug, Serialize)]
pub struct Side {
    pub capture: String,
    pub session_id: String,
    pub exchanges: usize,
    /// `listen → upstream`, one per route.
    pub routes: Vec<String>,
    /// The protocol era (`modern`, `legacy`, `fallback`, `failed_negotiation`, `unknown`).
    pub era: Era,
    /// Problems met reading it.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OptionsReport {
    pub strict: bool,
    pub timing: bool,
    pub timing_threshold_ms: u64,
    pub ignore: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub aligned: usize,
    pub unchanged: usize,
    pub changed: usize,
    pub inserted: usize,
    pub deleted: usize,
    pub moved: usize,
    pub differences: usize,
}

/// The first thing that differs, in alignment order.
#[derive(Debug, Serialize)]
pub struct Divergence {
    pub entry: usize,
    pub kind: EntryKind,
    pub field: Option<String>,
    pub sentence: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Unchanged,
    Changed,
    Inserted,
    Deleted,
    Moved,
}

/// One line of the alignment.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub kind: EntryKind,
    pub label: String,
    pub a: Option<ExchangeRef>,
    pub b: Option<ExchangeRef>,
    pub differences: Vec<Difference>,
}

/// An exchange as the report names it.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeRef {
    pub ex: u64,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    /// The JSON-RPC method(s) of the request body (`a+b` for a batch).
    pub rpc: Option<String>,
    pub role: String,
}

/// What pairs two exchanges: equal keys may align.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    /// The index of the route (listener) it came in on.
    route: usize,
    method: String,
    /// The path with ids, UUIDs and numbers as `{id}`.
    path: String,
    /// The JSON-RPC method(s) of the request body, or "".
    rpc: String,
    role: String,
}

/// One exchange with what alignment needs.
struct Prepared<'c> {
    x: &'c Exchange,
    key: Key,
    reference: ExchangeRef,
    label: String,
}

fn prepare<'c>(capture: &'c Capture, session: &Session<'c>) -> Vec<Prepared<'c>> {
    let routes: HashMap<&str, usize> = capture
        .session
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| (r.listen.as_str(), i))
        .collect();
    session
        .steps
        .iter()
        .map(|step| {
            let x = step.x;
            let route = capture
                .connections
                .get(&x.conn)
                .and_then(|c| routes.get(c.open.listener.as_str()).copied())
                .unwrap_or(0);
            let methods: Vec<&str> = step.sent.iter().filter_map(Message::method).collect();
            let rpc = if !methods.is_empty() {
                Some(methods.join("+"))
            } else if step.sent.iter().any(Message::is_response) {
                Some("(response)".to_string())
            } else {
                None
            };
            let role = role_name(step.role);
            let label = match (step.role, &rpc) {
                (Role::Mcp | Role::LegacyMessages, Some(rpc)) => rpc.clone(),
                (Role::Mcp, None) if x.method() == "GET" => "get_stream".into(),
                (Role::Mcp, None) if x.method() == "DELETE" => "delete_session".into(),
                _ => role.clone(),
            };
            let key = Key {
                route,
                method: x.method().to_string(),
                path: noise::normalize_path(x.path()),
                rpc: rpc.clone().unwrap_or_default(),
                role: role.clone(),
            };
            Prepared {
                x,
                key,
                reference: ExchangeRef {
                    ex: x.ex,
                    method: x.method().to_string(),
                    path: x.path().to_string(),
                    status: x.status(),
                    rpc,
                    role,
                },
                label,
            }
        })
        .collect()
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

fn side(capture: &Capture, name: &str, era: Era) -> Side {
    Side {
        era,
        capture: name.to_string(),
        session_id: capture.session.session_id.clone(),
        exchanges: capture.exchanges.len(),
        routes: capture
            .session
            .routes
            .iter()
            .map(|r| format!("{} → {}", r.listen, r.upstream))
            .collect(),
        warnings: capture.warnings.clone(),
    }
}

/// Compares two captures already read.
pub fn diff(a: &Capture, a_name: &str, b: &Capture, b_name: &str, options: &Options) -> Comparison {
    let (sa, sb) = (Session::analyze(a), Session::analyze(b));
    let (pa, pb) = (prepare(a, &sa), prepare(b, &sb));
    // Alignment looks past the noise even with --strict: that flag is about what is shown.
    let (loose_a, loose_b) = (Noise::of(a, &sa), Noise::of(b, &sb));
    let mut keys: HashMap<&Key, u32> = HashMap::new();
    let ia = items(&pa, &loose_a, &mut keys);
    let ib = items(&pb, &loose_b, &mut keys);
    let alignment = align::align(&ia, &ib);
    let ops = alignment.ops;

    let (na, nb) = if options.strict {
        (Noise::strict(), Noise::strict())
    } else {
        (loose_a, loose_b)
    };
    let ignore: Vec<Vec<Seg>> = options
        .ignore
        .iter()
        .flat_map(|s| compare::parse_ignore(s))
        .collect();
    let rules = Rules {
        strict: options.strict,
        ignore: &ignore,
        timing_us: options.timing_threshold_ms.map(|ms| ms * 1000),
    };
    let mut summary = Summary::default();
    let entries: Vec<Entry> = ops
        .iter()
        .map(|op| {
            let pair = |i: usize, j: usize| compare::compare(pa[i].x, pb[j].x, &na, &nb, &rules);
            let (kind, a, b, differences) = match *op {
                Op::Pair(i, j) => {
                    let d = pair(i, j);
                    let kind = if d.is_empty() {
                        EntryKind::Unchanged
                    } else {
                        EntryKind::Changed
                    };
                    (kind, Some(i), Some(j), d)
                }
                Op::Moved(i, j) => (EntryKind::Moved, Some(i), Some(j), pair(i, j)),
                Op::Delete(i) => (EntryKind::Deleted, Some(i), None, Vec::new()),
                Op::Insert(j) => (EntryKind::Inserted, None, Some(j), Vec::new()),
            };
            match kind {
                EntryKind::Unchanged => summary.unchanged += 1,
                EntryKind::Changed => summary.changed += 1,
                EntryKind::Inserted => summary.inserted += 1,
                EntryKind::Deleted => summary.deleted += 1,
                EntryKind::Moved => summary.moved += 1,
            }
            summary.differences += differences.len();
            let label = a
                .map(|i| pa[i].label.clone())
                .or_else(|| b.map(|j| pb[j].label.clone()))
                .unwrap_or_default();
            Entry {
                kind,
                label,
                a: a.map(|i| pa[i].reference.clone()),
                b: b.map(|j| pb[j].reference.clone()),
                differences,
            }
        })
        .collect();
    summary.aligned = summary.unchanged + summary.changed;
    let (era_a, era_b) = (sa.negotiation.era, sb.negotiation.era);
    let first_divergence = entries
        .iter()
        .position(|e| e.kind != EntryKind::Unchanged)
        .map(|i| {
            let mut d = divergence(i, &entries[i]);
            // The era is settled by the first MCP exchanges: when they are where the sessions
            // part, the era change is what the user needs to hear first.
            let mcp = |x: &Option<ExchangeRef>| x.as_ref().is_some_and(|x| x.role == "mcp");
            if era_a != era_b && (mcp(&entries[i].a) || mcp(&entries[i].b)) {
                d.sentence = format!(
                    "the protocol era differs: {} in A, {} in B; {}",
                    era_a.label(),
                    era_b.label(),
                    d.sentence
                );
            }
            d
        });
    Comparison {
        format: "mcptap-diff",
        version: 1,
        a: side(a, a_name, era_a),
        b: side(b, b_name, era_b),
        options: OptionsReport {
            strict: options.strict,
            timing: options.timing_threshold_ms.is_some(),
            timing_threshold_ms: options.timing_threshold_ms.unwrap_or(TIMING_THRESHOLD_MS),
            ignore: options.ignore.clone(),
        },
        summary,
        first_divergence,
        windowed: alignment.windowed.then_some(align::WINDOW),
        entries,
    }
}

/// The alignment items of one side, with keys interned across both sides.
fn items<'p>(
    side: &'p [Prepared<'_>],
    noise: &Noise,
    keys: &mut HashMap<&'p Key, u32>,
) -> Vec<Item> {
    side.iter()
        .map(|p| {
            let next = keys.len() as u32;
            Item {
                key: *keys.entry(&p.key).or_insert(next),
                request: noise.request_print(p.x),
                status: p.x.status(),
                authorized: p.x.request_header("authorization").is_some(),
            }
        })
        .collect()
}

/// Where an entry is: `#3 GET /path`, or `A #3, B #4 GET /path` when the ids differ.
/// Where an entry stands: `#2 GET /path`, or both sides' numbers when they differ.
pub fn whereabouts(entry: &Entry) -> String {
    match (&entry.a, &entry.b) {
        (Some(a), Some(b)) if a.ex == b.ex => format!("#{} {} {}", a.ex, a.method, a.path),
        (Some(a), Some(b)) => format!("A #{}, B #{} {} {}", a.ex, b.ex, a.method, a.path),
        (Some(x), None) | (None, Some(x)) => format!("#{} {} {}", x.ex, x.method, x.path),
        (None, None) => String::new(),
    }
}

/// A value in a sentence: cut at 80 characters; `absent` when the side lacks it.
fn in_sentence(value: Option<&str>) -> String {
    match value {
        None => "absent".into(),
        Some(v) if v.chars().count() > 80 => {
            let cut: String = v.chars().take(79).collect();
            format!("{cut}…")
        }
        Some(v) => v.to_string(),
    }
}

fn divergence(index: usize, entry: &Entry) -> Divergence {
    let head = format!("{} ({})", entry.label, whereabouts(entry));
    let first = entry.differences.first();
    let what = |d: &Difference| {
        format!(
            "{} is {} in A, {} in B",
            d.field,
            in_sentence(d.a.as_deref()),
            in_sentence(d.b.as_deref())
        )
    };
    let sentence = match (entry.kind, first) {
        (EntryKind::Inserted, _) => format!("{head} is only in B"),
        (EntryKind::Deleted, _) => format!("{head} is only in A"),
        (EntryKind::Moved, None) => format!("{head} comes in a different order"),
        (EntryKind::Moved, Some(d)) => {
            format!("{head} comes in a different order, and {}", what(d))
        }
        (_, Some(d)) => format!("{head}: {}", what(d)),
        (_, None) => head,
    };
    Divergence {
        entry: index,
        kind: entry.kind,
        field: first.map(|d| d.field.clone()),
        sentence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// One exchange of an arbitrary capture.
    #[derive(Debug, Clone)]
    struct Made {
        method: &'static str,
        target: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        status: Option<u16>,
        events: Vec<String>,
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::from),
            Just(Value::from(
                "http://127.0.0.1:1/mcp?state=x&code=<redacted fp=0011aabb>"
            )),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,6}|id|jsonrpc|iat|state", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn made() -> impl Strategy<Value = Made> {
        (
            prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("OPTIONS")],
            "/[a-z0-9/._-]{0,12}(\\?[a-z_=&%]{0,16})?|/mcp|/token|/\\.well-known/oauth-protected-resource",
            proptest::collection::vec(
                (
                    "content-type|mcp-session-id|authorization|date|[a-z-]{1,8}",
                    "\\PC{0,24}|application/json|text/event-stream|application/x-www-form-urlencoded",
                ),
                0..4,
            ),
            prop_oneof![
                Just(None),
                "\\PC{0,40}".prop_map(Some),
                json_value().prop_map(|v| Some(v.to_string())),
                json_value().prop_map(|p| Some(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": p}).to_string()
                )),
            ],
            proptest::option::of(100u16..600),
            proptest::collection::vec(
                prop_oneof!["\\PC{0,20}", json_value().prop_map(|v| v.to_string())],
                0..3,
            ),
        )
            .prop_map(|(method, target, headers, body, status, events)| Made {
                method,
                target,
                headers,
                body,
                status,
                events,
            })
    }

    fn capture(exchanges: &[Made], port: u16) -> Capture {
        let mut lines = vec![
            json!({"t": 0, "ts": "2026-01-01T00:00:00.000000Z", "kind": "session", "v": 1,
            "tool": "mcptap", "tool_version": "0.1.0", "session_id": "abcd1234",
            "routes": [{"listen": format!("127.0.0.1:{port}"), "upstream": "http://127.0.0.1:2/"}],
            "options": {"max_body": 10, "on_full": "wait", "preserve_host": false, "upstream_insecure": false,
                        "upstream_timeout_s": null, "grace_s": 5.0},
            "redaction": "fingerprint"}),
        ];
        for (i, m) in exchanges.iter().enumerate() {
            let ex = i + 1;
            let ev = |kind: &str, mut v: Value| {
                v["t"] = json!(ex * 10);
                v["ts"] = json!("2026-01-01T00:00:00.000010Z");
                v["kind"] = json!(kind);
                v["ex"] = json!(ex);
                v
            };
            lines.push(ev(
                "request",
                json!({"conn": 1, "method": m.method, "target": m.target,
                "version": "HTTP/1.1", "headers": m.headers, "upstream": "http://127.0.0.1:2/"}),
            ));
            if let Some(body) = &m.body {
                lines.push(ev("body", json!({"dir": "request", "seq": 0, "text": body, "len": body.len(), "frames": []})));
            }
            if let Some(status) = m.status {
                lines.push(ev("response", json!({"status": status, "version": "HTTP/1.1", "headers": m.headers, "producer": "upstream"})));
                if let Some(body) = &m.body {
                    lines.push(ev("body", json!({"dir": "response", "seq": 0, "text": body, "len": body.len(), "frames": []})));
                }
                for (seq, data) in m.events.iter().enumerate() {
                    lines.push(ev(
                        "sse",
                        json!({"dir": "response", "seq": seq, "data": data, "dispatched": true}),
                    ));
                }
            }
        }
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        Capture::from_reader(text.as_bytes(), "made.jsonl").expect("a capture")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any two captures compare and render without a panic, and every exchange of each
        /// side appears in exactly one entry.
        #[test]
        fn any_two_captures_compare_without_panicking(
            a in proptest::collection::vec(made(), 0..8),
            b in proptest::collection::vec(made(), 0..8),
            strict in any::<bool>(),
        ) {
            let (ca, cb) = (capture(&a, 1000), capture(&b, 2000));
            let options = Options {
                strict,
                ignore: vec!["/body/x".into(), "date".into(), "sse[0].data".into()],
                timing_threshold_ms: Some(0),
            };
            let report = diff(&ca, "a", &cb, "b", &options);
            let _ = serde_json::to_string(&report).unwrap();
            let on_a = report.entries.iter().filter(|e| e.a.is_some()).count();
            let on_b = report.entries.iter().filter(|e| e.b.is_some()).count();
            prop_assert_eq!(on_a, a.len());
            prop_assert_eq!(on_b, b.len());
        }

        /// A capture compared with itself has no differences, noise rules or not.
        #[test]
        fn a_capture_equals_itself(a in proptest::collection::vec(made(), 0..8), strict in any::<bool>()) {
            let ca = capture(&a, 1000);
            let options = Options { strict, ..Options::default() };
            let report = diff(&ca, "a", &ca, "a", &options);
            prop_assert!(report.first_divergence.is_none(), "{:?}", report.first_divergence);
        }
    }
}
