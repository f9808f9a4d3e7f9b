//! Compares two aligned exchanges field by field: the request (version, query, headers,
//! form or JSON body), then the status, the response headers, the body (JSON structurally,
//! arrays by position, numbers by value) or the SSE events (count, names, decoded JSON),
//! the outcome, and timings when asked. Values go through the noise rules first.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::noise::{self, Noise};
use mcptap_capture::model::{Headers, Sse};
use mcptap_capture::reader::{BodyData, Exchange};

/// Longest value shown in a difference (characters); longer values end with `…`.
const SHOWN: usize = 300;

/// One step of a field path: an object key or an array position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    /// Whether a segment of an `--ignore` path matches this one (`/tools/0` names index 0).
    fn matches(pattern: &Seg, actual: &Seg) -> bool {
        match (pattern, actual) {
            (Seg::Key(p), Seg::Key(a)) => p == a,
            (Seg::Index(p), Seg::Index(a)) => p == a,
            (Seg::Key(p), Seg::Index(a)) => p.parse::<usize>().ok() == Some(*a),
            (Seg::Index(_), Seg::Key(_)) => false,
        }
    }
}

/// `body.tools[0].name`.
pub(super) fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// `/body/tools/0/name` (RFC 6901).
pub(super) fn pointer(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        out.push('/');
        match seg {
            Seg::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// Parses an `--ignore` value: a JSON pointer (`/body/scopes_supported`), a field path as
/// shown (`body.scopes_supported`, `sse[0].data`), or a header name (`x-powered-by`, matching
/// both the request's and the response's). Returns the path prefixes it covers.
pub(super) fn parse_ignore(spec: &str) -> Vec<Vec<Seg>> {
    let spec = spec.trim();
    if let Some(rest) = spec.strip_prefix('/') {
        return vec![rest
            .split('/')
            .map(|s| Seg::Key(s.replace("~1", "/").replace("~0", "~")))
            .collect()];
    }
    const ROOTS: [&str; 11] = [
        "status", "header", "body", "sse", "request", "query", "form", "outcome", "timing",
        "version", "upgrade",
    ];
    let root = spec
        .split(['.', '['])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if ROOTS.contains(&root.as_str()) {
        let mut path = Vec::new();
        for part in spec.split('.') {
            let mut pieces = part.split('[');
            if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
                path.push(Seg::Key(key.to_string()));
            }
            for index in pieces {
                let index = index.trim_end_matches(']');
                match index.parse() {
                    Ok(i) => path.push(Seg::Index(i)),
                    Err(_) => path.push(Seg::Key(index.to_string())),
                }
            }
        }
        return vec![path];
    }
    let name = spec.to_ascii_lowercase();
    vec![
        vec![Seg::Key("header".into()), Seg::Key(name.clone())],
        vec![
            Seg::Key("request".into()),
            Seg::Key("header".into()),
            Seg::Key(name),
        ],
    ]
}

/// One field that differs between A and B.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The field as shown: `status`, `header.www-authenticate`, `body.resource`,
    /// `request.header.user-agent`, `query.scope`, `form.grant_type`, `sse[0].data.result`.
    pub field: String,
    /// The same field as a JSON pointer (`/body/resource`), as `--ignore` takes it.
    pub pointer: String,
    /// A's value as recorded (JSON text for JSON values and quoted strings for headers and
    /// parameters), at most 300 characters; `null` when A does not have the field.
    pub a: Option<String>,
    /// B's value, the same way.
    pub b: Option<String>,
    #[serde(skip)]
    pub(super) path: Vec<Seg>,
}

/// What a comparison looks at besides the two exchanges.
pub(super) struct Rules<'r> {
    pub strict: bool,
    pub ignore: &'r [Vec<Seg>],
    /// Report timing differences above this many µs (`--timing`).
    pub timing_us: Option<u64>,
}

/// The differences between two aligned exchanges, in the order they happened: request,
/// status, response headers, response body or events, outcome, timings.
pub(super) fn compare(
    a: &Exchange,
    b: &Exchange,
    na: &Noise,
    nb: &Noise,
    rules: &Rules<'_>,
) -> Vec<Difference> {
    let mut c = Comparison {
        na,
        nb,
        strict: rules.strict,
        path: Vec::new(),
        out: Vec::new(),
    };
    c.request(a, b);
    c.response(a, b);
    if let Some(threshold) = rules.timing_us {
        c.at("timing", |c| c.timing(a, b, threshold));
    }
    let mut out = c.out;
    out.retain(|d| !rules.ignore.iter().any(|p| is_under(&d.path, p)));
    if !rules.strict {
        settle_lengths(&mut out);
    }
    out
}

/// Whether `path` is `prefix` or inside it.
fn is_under(path: &[Seg], prefix: &[Seg]) -> bool {
    prefix.len() <= path.len() && prefix.iter().zip(path).all(|(p, s)| Seg::matches(p, s))
}

/// A Content-Length follows its body: it is noise once the bodies compare equal, and goes
/// after the body's own differences when they do not.
fn settle_lengths(out: &mut Vec<Difference>) {
    let under = |d: &Difference, root: &[&str]| {
        let root: Vec<Seg> = root.iter().map(|k| Seg::Key(k.to_string())).collect();
        is_under(&d.path, &root)
    };
    let response_length = |d: &Difference| under(d, &["header", "content-length"]);
    let request_length = |d: &Difference| under(d, &["request", "header", "content-length"]);
    let response_body = out
        .iter()
        .any(|d| under(d, &["body"]) || under(d, &["sse"]));
    let request_body = out
        .iter()
        .any(|d| under(d, &["request", "body"]) || under(d, &["form"]));
    out.retain(|d| {
        let follows_equal_body =
            (response_length(d) && !response_body) || (request_length(d) && !request_body);
        !follows_equal_body
    });
    out.sort_by_key(|d| response_length(d) || request_length(d));
}

fn millis(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn form_params(body: &BodyData) -> Vec<(String, String)> {
    form_urlencoded::parse(&body.bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The events compared: those that carry data, or every block with `--strict` (keep-alive
/// comments arrive on a timer, so their number is noise).
fn events(sse: &[(u64, Sse)], strict: bool) -> Vec<&Sse> {
    sse.iter()
        .map(|(_, e)| e)
        .filter(|e| strict || e.data.is_some())
        .collect()
}

fn body_summary(body: &BodyData) -> String {
    if body.bytes.is_empty() {
        return "(empty)".into();
    }
    match std::str::from_utf8(&body.bytes) {
        Ok(text) => quote(text),
        Err(_) => format!("({} bytes of binary)", body.bytes.len()),
    }
}

/// A string as shown: JSON-quoted, cut at [`SHOWN`] characters.
fn quote(s: &str) -> String {
    shorten(serde_json::to_string(s).unwrap_or_default())
}

fn shorten(s: String) -> String {
    if s.chars().count() <= SHOWN {
        return s;
    }
    let mut cut: String = s.chars().take(SHOWN - 1).collect();
    cut.push('…');
    cut
}

fn render(v: &Value) -> String {
    shorten(serde_json::to_string(v).unwrap_or_default())
}

/// Groups `[name, value]` pairs by name, keeping first-appearance order.
fn grouped<'h>(
    pairs: impl Iterator<Item = (String, &'h str)>,
) -> (Vec<String>, HashMap<String, Vec<&'h str>>) {
    let mut order = Vec::new();
    let mut map: HashMap<String, Vec<&str>> = HashMap::new();
    for (name, value) in pairs {
        let entry = map.entry(name.clone()).or_default();
        if entry.is_empty() {
            order.push(name);
        }
        entry.push(value);
    }
    (order, map)
}

/// A scalar as compared.
#[derive(PartialEq)]
enum Leaf<'v> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(Cow<'v, str>),
    Noise(&'static str),
    /// An object or array met a value of another type: always different.
    Mismatch,
}

struct Comparison<'n> {
    na: &'n Noise,
    nb: &'n Noise,
    strict: bool,
    path: Vec<Seg>,
    out: Vec<Difference>,
}

impl Comparison<'_> {
    fn at(&mut self, key: &str, f: impl FnOnce(&mut Self)) {
        self.path.push(Seg::Key(key.to_string()));
        f(self);
        self.path.pop();
    }

    fn at_index(&mut self, i: usize, f: impl FnOnce(&mut Self)) {
        self.path.push(Seg::Index(i));
        f(self);
        self.path.pop();
    }

    /// Version, query, headers, and the form or body of the requests.
    fn request(&mut self, a: &Exchange, b: &Exchange) {
        self.at("version", |c| {
            c.scalar(Some(&a.request.version), Some(&b.request.version))
        });
        if self.strict {
            self.at("path", |c| c.scalar(Some(a.path()), Some(b.path())));
        }
        self.at("query", |c| c.params(&a.query(), &b.query()));
        self.at("request", |c| {
            c.at("header", |c| {
                c.headers(&a.request.headers, &b.request.headers)
            })
        });
        let form = |x: &Exchange| {
            x.request_media_type().as_deref() == Some("application/x-www-form-urlencoded")
        };
        if form(a) && form(b) {
            self.at("form", |c| {
                c.params(&form_params(&a.request_body), &form_params(&b.request_body))
            });
        } else {
            self.at("request", |c| {
                c.at("body", |c| c.body(&a.request_body, &b.request_body))
            });
        }
    }

    /// Status, headers, body or events, outcome and upgrade of the responses.
    fn response(&mut self, a: &Exchange, b: &Exchange) {
        let status = |x: &Exchange| x.status().map(|s| s.to_string());
        self.at("status", |c| {
            c.scalar(status(a).as_deref(), status(b).as_deref())
        });
        let no_headers = Headers::new();
        let (ha, hb) = (
            a.response.as_ref().map_or(&no_headers, |r| &r.headers),
            b.response.as_ref().map_or(&no_headers, |r| &r.headers),
        );
        self.at("header", |c| c.headers(ha, hb));
        let stream = |x: &Exchange| x.response_media_type().as_deref() == Some("text/event-stream");
        match (stream(a), stream(b)) {
            (true, true) => self.at("sse", |c| c.events(&a.sse, &b.sse)),
            (false, false) => self.at("body", |c| c.body(&a.response_body, &b.response_body)),
            _ => {
                let strict = self.strict;
                let shown = |x: &Exchange| {
                    if stream(x) {
                        let n = events(&x.sse, strict).len();
                        format!("(an event stream of {n} events)")
                    } else {
                        body_summary(&x.response_body)
                    }
                };
                let (sa, sb) = (shown(a), shown(b));
                self.at("body", |c| c.push(Some(sa), Some(sb)));
            }
        }
        let outcome = |x: &Exchange| {
            x.outcome().and_then(|o| {
                serde_json::to_value(o)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
            })
        };
        let (oa, ob) = (outcome(a), outcome(b));
        // Clients close an event stream once they have what they wait for, sometimes before
        // the server's end reaches the proxy: on two streams whose events compare equal (they
        // are compared above), `client_aborted` and `complete` are the same ending.
        let ended =
            |o: &Option<String>| matches!(o.as_deref(), Some("complete" | "client_aborted"));
        let same_ending = !self.strict && stream(a) && stream(b) && ended(&oa) && ended(&ob);
        if !same_ending {
            self.at("outcome", |c| c.scalar(oa.as_deref(), ob.as_deref()));
        }
        if a.upgrade.is_some() || b.upgrade.is_some() {
            let protocol = |x: &Exchange| x.upgrade.as_ref().map(|u| u.protocol.clone());
            self.at("upgrade", |c| {
                c.scalar(protocol(a).as_deref(), protocol(b).as_deref())
            });
        }
    }

    /// Time to first byte and total time, when they differ by more than `threshold` µs.
    fn timing(&mut self, a: &Exchange, b: &Exchange, threshold: u64) {
        let timings = |x: &Exchange| x.end.as_ref().map(|(_, e)| e.timings.clone());
        let (Some(ta), Some(tb)) = (timings(a), timings(b)) else {
            return;
        };
        for (name, va, vb) in [
            ("ttfb_ms", ta.ttfb_us, tb.ttfb_us),
            ("total_ms", Some(ta.total_us), Some(tb.total_us)),
        ] {
            if let (Some(va), Some(vb)) = (va, vb) {
                if va.abs_diff(vb) > threshold {
                    self.at(name, |c| c.push(Some(millis(va)), Some(millis(vb))));
                }
            }
        }
    }

    fn push(&mut self, a: Option<String>, b: Option<String>) {
        self.out.push(Difference {
            field: display(&self.path),
            pointer: pointer(&self.path),
            a,
            b,
            path: self.path.clone(),
        });
    }

    /// A value compared as is (status, version, outcome).
    fn scalar(&mut self, a: Option<&str>, b: Option<&str>) {
        if a != b {
            self.push(a.map(str::to_string), b.map(str::to_string));
        }
    }

    fn headers(&mut self, a: &Headers, b: &Headers) {
        let strict = self.strict;
        let keep =
            |(n, _): &(&str, &str)| strict || !noise::is_ignored_header(&n.to_ascii_lowercase());
        fn lower<'a>((n, v): (&str, &'a str)) -> (String, &'a str) {
            (n.to_ascii_lowercase(), v)
        }
        let (order_a, map_a) = grouped(a.iter().filter(keep).map(lower));
        let (order_b, map_b) = grouped(b.iter().filter(keep).map(lower));
        let (na, nb) = (self.na, self.nb);
        self.pairs(&order_a, &map_a, &order_b, &map_b, |name, va, vb| {
            va == vb || noise::header_value(na, name, va) == noise::header_value(nb, name, vb)
        });
    }

    fn params(&mut self, a: &[(String, String)], b: &[(String, String)]) {
        let (order_a, map_a) = grouped(a.iter().map(|(k, v)| (k.clone(), v.as_str())));
        let (order_b, map_b) = grouped(b.iter().map(|(k, v)| (k.clone(), v.as_str())));
        let (na, nb, strict) = (self.na, self.nb, self.strict);
        self.pairs(&order_a, &map_a, &order_b, &map_b, |name, va, vb| {
            if strict || va == vb {
                return va == vb;
            }
            let keyed = |v: &str| noise::keyed(name, &Value::String(v.to_string()));
            match (keyed(va), keyed(vb)) {
                (Some(x), Some(y)) => x == y,
                (None, None) => na.text(va) == nb.text(vb),
                _ => false,
            }
        });
    }

    /// Compares named, possibly repeated values; `name[i]` when a name repeats.
    fn pairs(
        &mut self,
        order_a: &[String],
        map_a: &HashMap<String, Vec<&str>>,
        order_b: &[String],
        map_b: &HashMap<String, Vec<&str>>,
        equal: impl Fn(&str, &str, &str) -> bool,
    ) {
        let names = order_a
            .iter()
            .chain(order_b.iter().filter(|n| !map_a.contains_key(*n)));
        for name in names {
            let va = map_a.get(name).map(Vec::as_slice).unwrap_or_default();
            let vb = map_b.get(name).map(Vec::as_slice).unwrap_or_default();
            let n = va.len().max(vb.len());
            self.at(name, |c| {
                for i in 0..n {
                    let (x, y) = (va.get(i).copied(), vb.get(i).copied());
                    let same = match (x, y) {
                        (Some(x), Some(y)) => equal(name, x, y),
                        _ => false,
                    };
                    if same {
                        continue;
                    }
                    let (x, y) = (x.map(quote), y.map(quote));
                    if n > 1 {
                        c.at_index(i, |c| c.push(x, y));
                    } else {
                        c.push(x, y);
                    }
                }
            });
        }
    }

    /// A message body: JSON structurally when both sides parse, text otherwise.
    fn body(&mut self, a: &BodyData, b: &BodyData) {
        if a.bytes == b.bytes {
            return;
        }
        let parse = |x: &BodyData| -> Option<Value> {
            if x.bytes.is_empty() {
                None
            } else {
                serde_json::from_slice(&x.bytes).ok()
            }
        };
        match (parse(a), parse(b)) {
            (Some(ja), Some(jb)) => self.json(None, &ja, &jb, true),
            _ => {
                let text = |x: &BodyData| String::from_utf8_lossy(&x.bytes).into_owned();
                let (ta, tb) = (text(a), text(b));
                if self.na.text(&ta) != self.nb.text(&tb) {
                    let shown = |x: &BodyData| (!x.bytes.is_empty()).then(|| body_summary(x));
                    self.push(shown(a), shown(b));
                }
            }
        }
    }

    /// Event-stream blocks by position.
    fn events(&mut self, a: &[(u64, Sse)], b: &[(u64, Sse)]) {
        let (ea, eb) = (events(a, self.strict), events(b, self.strict));
        if ea.len() != eb.len() {
            self.at("count", |c| {
                c.push(Some(ea.len().to_string()), Some(eb.len().to_string()))
            });
        }
        for i in 0..ea.len().max(eb.len()) {
            self.at_index(i, |c| match (ea.get(i), eb.get(i)) {
                (Some(x), Some(y)) => c.event(x, y),
                (x, y) => c.push(x.map(|e| event_summary(e)), y.map(|e| event_summary(e))),
            });
        }
    }

    fn event(&mut self, a: &Sse, b: &Sse) {
        let strict = self.strict;
        // An event without a name is a "message" event (WHATWG HTML §9.2.6).
        let name = |e: &Sse| {
            e.event
                .clone()
                .or_else(|| (!strict).then(|| "message".to_string()))
        };
        self.at("event", |c| {
            c.scalar(name(a).as_deref(), name(b).as_deref())
        });
        // Event ids are for resumption: their values are the server's, their presence matters.
        let id = |e: &Sse| {
            if strict {
                e.id.clone()
            } else {
                e.id.as_ref().map(|_| "(an id)".to_string())
            }
        };
        self.at("id", |c| c.scalar(id(a).as_deref(), id(b).as_deref()));
        let retry = |e: &Sse| e.retry.map(|r| r.to_string());
        self.at("retry", |c| {
            c.scalar(retry(a).as_deref(), retry(b).as_deref())
        });
        if strict {
            let comments = |e: &Sse| (!e.comments.is_empty()).then(|| e.comments.join("\n"));
            self.at("comments", |c| {
                c.scalar(comments(a).as_deref(), comments(b).as_deref())
            });
        }
        let json = |e: &Sse| {
            e.data
                .as_deref()
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
        };
        self.at("data", |c| match (json(a), json(b)) {
            (Some(ja), Some(jb)) => c.json(None, &ja, &jb, true),
            _ => {
                let (da, db) = (a.data.as_deref(), b.data.as_deref());
                let same = match (da, db) {
                    (Some(x), Some(y)) => c.na.text(x) == c.nb.text(y),
                    (x, y) => x == y,
                };
                if !same {
                    c.push(da.map(quote), db.map(quote));
                }
            }
        });
    }

    /// JSON structurally. `rpc`: this value may be a JSON-RPC message (or a batch of them),
    /// whose `id` is the client's counter, not behaviour.
    fn json(&mut self, key: Option<&str>, a: &Value, b: &Value, rpc: bool) {
        if a == b {
            return;
        }
        match (a, b) {
            (Value::Object(oa), Value::Object(ob)) => {
                let skip_id =
                    rpc && !self.strict && oa.contains_key("jsonrpc") && ob.contains_key("jsonrpc");
                for (k, va) in oa {
                    if skip_id && k == "id" {
                        continue;
                    }
                    self.at(k, |c| match ob.get(k) {
                        Some(vb) => c.json(Some(k), va, vb, false),
                        None => c.push(Some(render(va)), None),
                    });
                }
                for (k, vb) in ob {
                    if (skip_id && k == "id") || oa.contains_key(k) {
                        continue;
                    }
                    self.at(k, |c| c.push(None, Some(render(vb))));
                }
            }
            (Value::Array(xa), Value::Array(xb)) => {
                for i in 0..xa.len().max(xb.len()) {
                    self.at_index(i, |c| match (xa.get(i), xb.get(i)) {
                        (Some(va), Some(vb)) => c.json(key, va, vb, rpc),
                        (va, vb) => c.push(va.map(render), vb.map(render)),
                    });
                }
            }
            _ => {
                if self.leaf(key, a, self.na) != self.leaf(key, b, self.nb) {
                    self.push(Some(render(a)), Some(render(b)));
                }
            }
        }
    }

    fn leaf<'v>(&self, key: Option<&str>, v: &'v Value, noise: &Noise) -> Leaf<'v> {
        if !self.strict {
            if let Some(placeholder) = key.and_then(|k| noise::keyed(k, v)) {
                return Leaf::Noise(placeholder);
            }
        }
        match v {
            Value::Null => Leaf::Null,
            Value::Bool(b) => Leaf::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Leaf::Int(i.into())
                } else if let Some(u) = n.as_u64() {
                    Leaf::Int(u.into())
                } else {
                    match n.as_f64() {
                        // Numbers compare by value: 1.0 is 1.
                        Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => Leaf::Int(f as i128),
                        Some(f) => Leaf::Float(f),
                        None => Leaf::Mismatch,
                    }
                }
            }
            Value::String(s) => Leaf::Text(noise.text(s)),
            Value::Array(_) | Value::Object(_) => Leaf::Mismatch,
        }
    }
}

fn event_summary(e: &Sse) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &e.event {
        parts.push(format!("event: {name}"));
    }
    if let Some(data) = &e.data {
        parts.push(format!("data: {data}"));
    }
    if parts.is_empty() && !e.comments.is_empty() {
        parts.push(format!(": {}", e.comments.join(" ")));
    }
    shorten(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_diff(
        a: Value,
        b: Value,
        strict: bool,
    ) -> Vec<(String, Option<String>, Option<String>)> {
        let plain = Noise::strict();
        let loose = Noise::of_nothing();
        let noise = if strict { &plain } else { &loose };
        let mut c = Comparison {
            na: noise,
            nb: noise,
            strict,
            path: vec![Seg::Key("body".into())],
            out: Vec::new(),
        };
        c.json(None, &a, &b, true);
        c.out.into_iter().map(|d| (d.field, d.a, d.b)).collect()
    }

    #[test]
    fn json_compares_structurally_with_paths() {
        let d = json_diff(
            json!({"resource": "http://h", "scopes": ["a", "b"], "n": 1}),
            json!({"resource": "http://h/mcp", "scopes": ["a"], "n": 1.0, "extra": true}),
            false,
        );
        assert_eq!(
            d,
            vec![
                (
                    "body.resource".into(),
                    Some("\"http://h\"".into()),
                    Some("\"http://h/mcp\"".into())
                ),
                ("body.scopes[1]".into(), Some("\"b\"".into()), None),
                ("body.extra".into(), None, Some("true".into())),
            ]
        );
    }

    #[test]
    fn json_rpc_ids_are_noise_unless_strict() {
        let a = json!([{"jsonrpc": "2.0", "id": 1, "result": {}}]);
        let b = json!([{"jsonrpc": "2.0", "id": 7, "result": {}}]);
        assert!(json_diff(a.clone(), b.clone(), false).is_empty());
        assert_eq!(json_diff(a, b, true)[0].0, "body[0].id");
    }

    #[test]
    fn ignore_paths_parse_in_every_form() {
        assert_eq!(
            parse_ignore("/body/scopes_supported"),
            vec![vec![
                Seg::Key("body".into()),
                Seg::Key("scopes_supported".into())
            ]]
        );
        assert_eq!(
            parse_ignore("sse[0].data"),
            vec![vec![
                Seg::Key("sse".into()),
                Seg::Index(0),
                Seg::Key("data".into())
            ]]
        );
        assert_eq!(parse_ignore("X-Powered-By").len(), 2);
        assert!(Seg::matches(&Seg::Key("0".into()), &Seg::Index(0)));
    }
}
