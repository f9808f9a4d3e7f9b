//! Filling a recorded request back in before it is re-sent: redacted secrets
//! (`<redacted fp=XXXXXXXX>`) from the values the replay obtained itself, from `--secrets`,
//! `--token` or made up (PKCE verifiers); recorded identifiers the target issues afresh
//! (`client_id`, `Mcp-Session-Id`) by the new ones; the recorded origin by the target's.
//! And the other half: learning those values from the target's responses, by reading them
//! at the place where the recorded response had the recorded value.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde_json::Value;

use super::origins::replace_origins;
use crate::capture::model::Headers;
use crate::capture::reader::{media_type, Exchange};
use crate::capture::redact::is_secret_key;
use crate::proxy::headers::HOP_BY_HOP_NAMES;

/// How every redacted value starts.
pub const PLACEHOLDER_PREFIX: &str = "<redacted fp=";

/// Recorded values shorter than this are only replaced where they are a whole value
/// (a header, a parameter, a JSON string); longer ones wherever they occur.
const MIN_SUBSTRING: usize = 8;

/// One `<redacted fp=XXXXXXXX>` in a text: its byte range and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub start: usize,
    pub end: usize,
    pub fp: String,
}

/// Every placeholder in `text`, in order.
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text
        .get(from..)
        .and_then(|rest| rest.find(PLACEHOLDER_PREFIX))
    {
        let start = from + i;
        let hex_start = start + PLACEHOLDER_PREFIX.len();
        let hex = text.get(hex_start..hex_start + 8);
        let closed = text
            .get(hex_start + 8..)
            .is_some_and(|r| r.starts_with('>'));
        match hex {
            Some(hex) if closed && is_fp(hex) => {
                found.push(Placeholder {
                    start,
                    end: hex_start + 9,
                    fp: hex.to_string(),
                });
                from = hex_start + 9;
            }
            _ => from = hex_start,
        }
    }
    found
}

/// Whether `s` is a fingerprint: 8 lowercase hex digits.
pub fn is_fp(s: &str) -> bool {
    s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The fingerprint, when the whole of `text` is one placeholder.
pub fn whole_placeholder(text: &str) -> Option<&str> {
    let fp = text.strip_prefix(PLACEHOLDER_PREFIX)?.strip_suffix('>')?;
    is_fp(fp).then_some(fp)
}

/// Names under which a response hands out a value the client sends back later.
fn is_live_key(name: &str) -> bool {
    name.eq_ignore_ascii_case("client_id") || is_secret_key(name)
}

/// Where a value sits in a request (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The credential of an `Authorization` (or `Proxy-Authorization`) header.
    Bearer(String),
    Header(String),
    Path,
    Query(String),
    Form(String),
    Json(Option<String>),
    Body,
}

impl Place {
    /// Whether `--token` fills a value at this place.
    pub fn takes_token(&self) -> bool {
        matches!(self, Place::Bearer(_))
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Bearer(h) => write!(f, "the {} header's credential", title_case(h)),
            Place::Header(h) => write!(f, "the {} header", title_case(h)),
            Place::Path => write!(f, "the path"),
            Place::Query(p) => write!(f, "the query parameter {p}"),
            Place::Form(p) => write!(f, "the form field {p}"),
            Place::Json(Some(k)) => write!(f, "the JSON field \"{k}\""),
            Place::Json(None) | Place::Body => write!(f, "the body"),
        }
    }
}

/// `mcp-session-id` → `Mcp-Session-Id`.
pub fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A redacted value that nothing fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub fp: String,
    pub place: Place,
}

/// Everything that goes into a re-sent request besides the recording.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// fp → the value this replay obtained (a code, a token…). Wins over everything else.
    pub live: HashMap<String, String>,
    /// fp → value, from `--secrets`.
    pub supplied: HashMap<String, String>,
    /// fp → value made up for this replay (a PKCE verifier).
    pub generated: HashMap<String, String>,
    /// `--token`: any redacted bearer credential nothing else fills.
    pub token: Option<String>,
    /// A recorded clear value → the value this replay got instead (`None`: the target gave
    /// none, so a header holding it is left out).
    pub literals: Vec<(String, Option<String>)>,
    /// The origins the recorded client used, and what replaces them (`None`: kept).
    pub origins: Vec<String>,
    pub origin_to: Option<String>,
}

impl Values {
    fn secret(&self, fp: &str, bearer: bool) -> Option<&str> {
        self.live
            .get(fp)
            .or_else(|| self.supplied.get(fp))
            .or_else(|| self.generated.get(fp))
            .map(String::as_str)
            .or(if bearer { self.token.as_deref() } else { None })
    }

    /// Takes in what a response taught.
    pub fn learn(&mut self, learned: Learned) {
        for (fp, value) in learned.secrets {
            self.live.insert(fp, value);
        }
        for (from, to) in learned.literals {
            let known = self.literals.iter().any(|(f, _)| *f == from);
            // "The target gave none" only counts until it gave one: a later response that
            // merely omits a session id (an error) does not end the session.
            if to.is_none() && known {
                continue;
            }
            self.literals.retain(|(f, _)| *f != from);
            self.literals.push((from, to));
        }
    }
}

/// A request ready to send: origin-form target, headers (no Host, no hop-by-hop fields, no
/// Content-Length), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Fields never re-sent besides the hop-by-hop ones (which describe the recorded
/// connection, not the request): recomputed (Host, Content-Length) or answered by the
/// recording already (Expect).
const NOT_RESENT: &[&str] = &["host", "content-length", "expect"];

/// Rebuilds a recorded request with `values`. `overrides` (lowercase name, value) replace
/// every recorded header of that name (`--header`); `scoped` are whole-value rewrites for
/// this request only (a PKCE challenge). Fails at the first redacted value nothing fills.
pub fn build(
    x: &Exchange,
    values: &Values,
    overrides: &[(String, String)],
    scoped: &[(String, String)],
) -> Result<Built, Missing> {
    let mut literals: Vec<(String, Option<String>)> = values.literals.clone();
    literals.extend(scoped.iter().map(|(f, t)| (f.clone(), Some(t.clone()))));
    let filler = Filler { values, literals };

    let pq = x.path_and_query();
    let (path, query) = match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    };
    let mut path_and_query = filler.text(path, false, false).map_err(|(fp, _)| Missing {
        fp,
        place: Place::Path,
    })?;
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(&filler.pairs(q, Place::Query)?);
    }

    let named: Vec<String> = x
        .request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut headers = Vec::new();
    let mut overridden = Vec::new();
    for (name, value) in &x.request.headers {
        let lower = name.to_ascii_lowercase();
        // A compressed body is in the capture decoded, and is re-sent as it is recorded.
        let decoded = lower == "content-encoding" && x.request_body.decoded_from.is_some();
        if HOP_BY_HOP_NAMES.contains(&lower.as_str())
            || NOT_RESENT.contains(&lower.as_str())
            || named.contains(&lower)
            || decoded
        {
            continue;
        }
        if let Some((_, v)) = overrides.iter().find(|(n, _)| *n == lower) {
            if !overridden.contains(&lower) {
                headers.push((lower.clone(), v.clone()));
                overridden.push(lower);
            }
            continue;
        }
        if filler.dropped(value) {
            continue;
        }
        let bearer = lower == "authorization";
        let filled = filler
            .text(value, false, bearer)
            .map_err(|(fp, _)| Missing {
                fp,
                place: if bearer {
                    Place::Bearer(lower.clone())
                } else {
                    Place::Header(lower.clone())
                },
            })?;
        headers.push((lower, filled));
    }

    let bytes = &x.request_body.bytes;
    let body = match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() => {
            let is_form =
                x.request_media_type().as_deref() == Some("application/x-www-form-urlencoded");
            if is_form {
                filler.pairs(text, Place::Form)?.into_bytes()
            } else {
                filler
                    .text(text, true, false)
                    .map_err(|(fp, key)| Missing {
                        fp,
                        place: Place::Json(key),
                    })?
                    .into_bytes()
            }
        }
        _ => bytes.clone(),
    };
    Ok(Built {
        path_and_query,
        headers,
        body,
    })
}

struct Filler<'a> {
    values: &'a Values,
    literals: Vec<(String, Option<String>)>,
}

impl Filler<'_> {
    /// Whether a header whose value is exactly `value` is left out (the target issued no
    /// replacement for it).
    fn dropped(&self, value: &str) -> bool {
        self.literals
            .iter()
            .any(|(from, to)| to.is_none() && from == value.trim())
    }

    /// Fills one text: recorded values, origins, then placeholders. `json`: the text is JSON
    /// (values are escaped, and a failure names the key). Fails with the fp nothing fills.
    fn text(
        &self,
        text: &str,
        json: bool,
        bearer: bool,
    ) -> Result<String, (String, Option<String>)> {
        let mut s = text.to_string();
        for (from, to) in &self.literals {
            if let Some(to) = to {
                s = replace_literal(&s, from, to, json);
            }
        }
        if let Some(to) = &self.values.origin_to {
            s = replace_origins(&s, &self.values.origins, to);
        }
        let found = placeholders(&s);
        if found.is_empty() {
            return Ok(s);
        }
        let mut out = String::with_capacity(s.len());
        let mut done = 0;
        for p in found {
            let Some(value) = self.values.secret(&p.fp, bearer) else {
                let key = if json {
                    json_key_before(&s, p.start)
                } else {
                    None
                };
                return Err((p.fp, key));
            };
            out.push_str(&s[done..p.start]);
            if json {
                out.push_str(&json_escape(value));
            } else {
                out.push_str(value);
            }
            done = p.end;
        }
        out.push_str(&s[done..]);
        Ok(out)
    }

    /// Fills `a=1&b=2` (a query or a form body) parameter by parameter, on decoded values;
    /// a parameter that does not change keeps its recorded bytes.
    fn pairs(&self, raw: &str, place: fn(String) -> Place) -> Result<String, Missing> {
        let mut pieces = Vec::new();
        for piece in raw.split('&') {
            let Some((k_raw, _)) = piece.split_once('=') else {
                pieces.push(piece.to_string());
                continue;
            };
            let Some((name, value)) = form_urlencoded::parse(piece.as_bytes()).next() else {
                pieces.push(piece.to_string());
                continue;
            };
            let filled = self.text(&value, false, false).map_err(|(fp, _)| Missing {
                fp,
                place: place(name.to_string()),
            })?;
            if filled == value {
                pieces.push(piece.to_string());
            } else {
                let encoded: String = form_urlencoded::byte_serialize(filled.as_bytes()).collect();
                pieces.push(format!("{k_raw}={encoded}"));
            }
        }
        Ok(pieces.join("&"))
    }
}

/// Replaces a recorded value: where it is a whole value, and (when long enough to be
/// unmistakable) wherever it occurs.
fn replace_literal(s: &str, from: &str, to: &str, json: bool) -> String {
    if from.is_empty() || from == to {
        return s.to_string();
    }
    if json {
        let (f, t) = (json_escape(from), json_escape(to));
        if from.len() >= MIN_SUBSTRING {
            s.replace(&f, &t)
        } else {
            s.replace(&format!("\"{f}\""), &format!("\"{t}\""))
        }
    } else if s == from {
        to.to_string()
    } else if from.len() >= MIN_SUBSTRING {
        s.replace(from, to)
    } else {
        s.to_string()
    }
}

/// The inside of a JSON string literal for `s`.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// The key of the JSON member whose string value starts just before `at` (`"key": "…`).
fn json_key_before(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?.strip_suffix('"')?.trim_end();
    let before = before.strip_suffix(':')?.trim_end();
    let before = before.strip_suffix('"')?;
    let open = before.rfind('"')?;
    Some(before[open + 1..].to_string())
}

/// What a response taught: secrets by fingerprint, and recorded clear values replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    pub secrets: Vec<(String, String)>,
    pub literals: Vec<(String, Option<String>)>,
}

impl Learned {
    fn value(&mut self, name: &str, recorded: &str, replayed: Option<&str>) {
        match (whole_placeholder(recorded), replayed) {
            (Some(fp), Some(v)) => self.secrets.push((fp.to_string(), v.to_string())),
            (None, Some(v)) if is_live_key(name) && !recorded.is_empty() && recorded != v => self
                .literals
                .push((recorded.to_string(), Some(v.to_string()))),
            _ => {}
        }
    }
}

/// Learns from response headers: `Mcp-Session-Id`, parameters of `Location` (an
/// authorization code) and cookie values, compared with the recorded response's.
pub fn learn_headers(recorded: &Headers, replayed: &Headers, out: &mut Learned) {
    if let Some(r) = recorded.get("mcp-session-id").filter(|r| !r.is_empty()) {
        match replayed.get("mcp-session-id") {
            Some(n) if n != r => out.literals.push((r.to_string(), Some(n.to_string()))),
            None => out.literals.push((r.to_string(), None)),
            _ => {}
        }
    }
    for name in ["location", "content-location"] {
        if let (Some(r), Some(n)) = (recorded.get(name), replayed.get(name)) {
            learn_url(r, n, out);
        }
    }
    let cookies = |headers: &Headers| -> Vec<(String, String)> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| {
                let pair = v.split(';').next()?;
                let (name, value) = pair.split_once('=')?;
                Some((name.trim().to_string(), value.trim().to_string()))
            })
            .collect()
    };
    let new = cookies(replayed);
    for (name, value) in cookies(recorded) {
        if let Some(fp) = whole_placeholder(&value) {
            if let Some((_, v)) = new.iter().find(|(n, _)| *n == name) {
                out.secrets.push((fp.to_string(), v.clone()));
            }
        }
    }
}

/// Learns from the query and fragment parameters of two URLs.
pub fn learn_url(recorded: &str, replayed: &str, out: &mut Learned) {
    let new = url_params(replayed);
    for (name, value) in url_params(recorded) {
        let v = new
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str());
        out.value(&name, &value, v);
    }
}

/// The decoded query and fragment parameters of a URL (or of a bare query).
pub fn url_params(url: &str) -> Vec<(String, String)> {
    let (main, fragment) = url.split_once('#').unwrap_or((url, ""));
    let query = main.split_once('?').map(|(_, q)| q).unwrap_or("");
    [query, fragment]
        .iter()
        .flat_map(|part| form_urlencoded::parse(part.as_bytes()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Learns from two bodies: forms field by field, JSON member by member.
pub fn learn_body(
    recorded: &[u8],
    recorded_type: Option<&str>,
    replayed: &[u8],
    out: &mut Learned,
) {
    let is_form = recorded_type
        .map(media_type)
        .is_some_and(|m| m == "application/x-www-form-urlencoded");
    if is_form {
        let new: Vec<(String, String)> = form_urlencoded::parse(replayed)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (name, value) in form_urlencoded::parse(recorded) {
            let v = new
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str());
            out.value(&name, &value, v);
        }
        return;
    }
    if let (Ok(r), Ok(n)) = (
        serde_json::from_slice::<Value>(recorded),
        serde_json::from_slice::<Value>(replayed),
    ) {
        learn_json(&r, &n, None, out);
    }
}

/// Walks two JSON values side by side; a recorded string that was redacted (or, under a key
/// such as `client_id`, that differs) is learned from the same place in the replayed one.
pub fn learn_json(recorded: &Value, replayed: &Value, key: Option<&str>, out: &mut Learned) {
    match (recorded, replayed) {
        (Value::Object(r), Value::Object(n)) => {
            for (k, v) in r {
                if let Some(w) = n.get(k) {
                    learn_json(v, w, Some(k), out);
                }
            }
        }
        (Value::Array(r), Value::Array(n)) => {
            for (v, w) in r.iter().zip(n) {
                learn_json(v, w, key, out);
            }
        }
        (Value::String(r), Value::String(n)) => out.value(key.unwrap_or(""), r, Some(n)),
        _ => {}
    }
}

/// Every fingerprint in a recorded request (target, headers, body).
pub fn request_fps(x: &Exchange) -> Vec<String> {
    let mut fps: Vec<String> = placeholders(&x.request.target)
        .into_iter()
        .map(|p| p.fp)
        .collect();
    for (_, v) in &x.request.headers {
        fps.extend(placeholders(v).into_iter().map(|p| p.fp));
    }
    fps.extend(
        placeholders(&x.request_body.text())
            .into_iter()
            .map(|p| p.fp),
    );
    fps.dedup();
    fps
}

/// Every fingerprint in a recorded response (headers, body, event data).
pub fn response_fps(x: &Exchange) -> Vec<String> {
    let mut fps = Vec::new();
    for (_, v) in x.response.iter().flat_map(|r| r.headers.iter()) {
        fps.extend(placeholders(v).into_iter().map(|p| p.fp));
    }
    fps.extend(
        placeholders(&x.response_body.text())
            .into_iter()
            .map(|p| p.fp),
    );
    for (_, e) in &x.sse {
        if let Some(d) = &e.data {
            fps.extend(placeholders(d).into_iter().map(|p| p.fp));
        }
    }
    fps.sort();
    fps.dedup();
    fps
}

/// Recorded clear values a response hands out that a client sends back: the
/// `Mcp-Session-Id`, and strings under keys such as `client_id` in JSON bodies, event data
/// and redirect parameters.
pub fn response_literals(x: &Exchange) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(id) = x.response_header("mcp-session-id") {
        out.push(id.to_string());
    }
    for name in ["location", "content-location"] {
        if let Some(url) = x.response_header(name) {
            for (k, v) in url_params(url) {
                if is_live_key(&k) && whole_placeholder(&v).is_none() && !v.is_empty() {
                    out.push(v);
                }
            }
        }
    }
    let mut bodies: Vec<Value> = x.response_body.json().into_iter().collect();
    bodies.extend(
        x.sse
            .iter()
            .filter_map(|(_, e)| e.data.as_deref())
            .filter_map(|d| serde_json::from_str(d).ok()),
    );
    for body in &bodies {
        json_live_strings(body, None, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn json_live_strings(v: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| json_live_strings(v, Some(k), out)),
        Value::Array(a) => a.iter().for_each(|v| json_live_strings(v, key, out)),
        Value::String(s)
            if key.is_some_and(is_live_key) && whole_placeholder(s).is_none() && !s.is_empty() =>
        {
            out.push(s.clone())
        }
        _ => {}
    }
}

/// Whether a recorded request carries a recorded clear value (for ordering the replay).
pub fn request_uses(x: &Exchange, literal: &str) -> bool {
    let exact = |s: &str| s == literal || (literal.len() >= MIN_SUBSTRING && s.contains(literal));
    x.request.headers.iter().any(|(_, v)| exact(v.trim()))
        || url_params(&x.request.target).iter().any(|(_, v)| exact(v))
        || (literal.len() >= MIN_SUBSTRING && x.request_body.text().contains(literal))
        || form_urlencoded::parse(&x.request_body.bytes).any(|(_, v)| exact(&v))
        || x.request_body
            .text()
            .contains(&format!("\"{}\"", json_escape(literal)))
}

/// A fresh PKCE pair (RFC 7636 §4.1, §4.2): a 43-character verifier and its challenge by
/// `method` (`S256`, or `plain` where the verifier is the challenge).
pub fn pkce_pair(method: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // A replay's verifier only has to be fresh, not secret from the target.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let digest = ring::digest::digest(&ring::digest::SHA256, &nanos.to_le_bytes());
        bytes.copy_from_slice(&digest.as_ref()[..32]);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(bytes);
    let challenge = if method.eq_ignore_ascii_case("plain") {
        verifier.clone()
    } else {
        b64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ))
    };
    (verifier, challenge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::reader::Capture;

    const SESSION: &str = r#"{"t":0,"ts":"2026-01-01T00:00:00.000000Z","kind":"session","v":1,"tool":"mcptap","tool_version":"0.1.0","session_id":"abcd1234","routes":[{"listen":"127.0.0.1:1","upstream":"http://127.0.0.1:2/"}],"options":{"max_body":100000,"on_full":"wait","preserve_host":false,"upstream_insecure":false,"upstream_timeout_s":null,"grace_s":5.0},"redaction":"fingerprint"}"#;

    fn exchange(target: &str, headers: &str, body: &str) -> Exchange {
        let request = serde_json::json!({"t":5,"ts":"2026-01-01T00:00:00.000005Z","kind":"request","ex":1,"conn":1,
            "method":"POST","target":target,"version":"HTTP/1.1",
            "headers": serde_json::from_str::<Value>(headers).unwrap(),"upstream":""});
        let mut text = format!("{SESSION}\n{request}\n");
        if !body.is_empty() {
            let b = serde_json::json!({"t":6,"ts":"2026-01-01T00:00:00.000006Z","kind":"body","ex":1,"dir":"request","seq":0,"text":body,"len":body.len(),"frames":[[6,body.len()]]});
            text.push_str(&format!("{b}\n"));
        }
        let cap = Capture::from_reader(text.as_bytes(), "t").unwrap();
        cap.exchanges[0].clone()
    }

    #[test]
    fn placeholders_are_found_and_checked() {
        let text = "a <redacted fp=0123abcd> b <redacted fp=XYZ> <redacted fp=deadbeef>";
        let fps: Vec<_> = placeholders(text).into_iter().map(|p| p.fp).collect();
        assert_eq!(fps, vec!["0123abcd", "deadbeef"]);
        assert_eq!(
            whole_placeholder("<redacted fp=0123abcd>"),
            Some("0123abcd")
        );
        assert_eq!(whole_placeholder("x<redacted fp=0123abcd>"), None);
        assert!(placeholders("<redacted fp=0123abc").is_empty());
    }

    #[test]
    fn each_place_gets_its_encoding() {
        let x = exchange(
            "/cb?code=<redacted fp=11111111>&x=1",
            r#"[["authorization","Bearer <redacted fp=22222222>"],["content-type","application/x-www-form-urlencoded"],["host","old"],["connection","close"]]"#,
            "code_verifier=<redacted fp=33333333>&grant_type=authorization_code",
        );
        let mut values = Values::default();
        values.live.insert("11111111".into(), "a b&c".into());
        values.supplied.insert("33333333".into(), "v/+=".into());
        values.token = Some("tok".into());
        let built = build(&x, &values, &[], &[]).unwrap();
        assert_eq!(built.path_and_query, "/cb?code=a+b%26c&x=1");
        assert_eq!(
            built.headers,
            vec![
                ("authorization".to_string(), "Bearer tok".to_string()),
                (
                    "content-type".to_string(),
                    "application/x-www-form-urlencoded".to_string()
                )
            ]
        );
        assert_eq!(
            String::from_utf8(built.body).unwrap(),
            "code_verifier=v%2F%2B%3D&grant_type=authorization_code"
        );
    }

    #[test]
    fn a_missing_value_names_its_place() {
        let x = exchange(
            "/mcp",
            r#"[["content-type","application/json"]]"#,
            r#"{"params":{"access_token": "<redacted fp=44444444>"}}"#,
        );
        let err = build(&x, &Values::default(), &[], &[]).unwrap_err();
        assert_eq!(err.fp, "44444444");
        assert_eq!(err.place, Place::Json(Some("access_token".into())));
        assert_eq!(err.place.to_string(), "the JSON field \"access_token\"");
        // --token fills bearer credentials only.
        let values = Values {
            token: Some("t".into()),
            ..Values::default()
        };
        assert!(build(&x, &values, &[], &[]).is_err());
    }

    #[test]
    fn recorded_identifiers_and_origins_are_swapped() {
        let x = exchange(
            "/authorize?client_id=abc&resource=http%3A%2F%2F127.0.0.1%3A1%2Fmcp",
            r#"[["mcp-session-id","session-0123456789"],["content-type","application/json"]]"#,
            r#"{"client_id":"abc","uri":"http://127.0.0.1:1/x"}"#,
        );
        let values = Values {
            literals: vec![
                ("abc".into(), Some("xyz".into())),
                ("session-0123456789".into(), Some("new-session".into())),
            ],
            origins: vec!["http://127.0.0.1:1".into()],
            origin_to: Some("http://10.0.0.1:9".into()),
            ..Values::default()
        };
        let built = build(&x, &values, &[], &[]).unwrap();
        assert_eq!(
            built.path_and_query,
            "/authorize?client_id=xyz&resource=http%3A%2F%2F10.0.0.1%3A9%2Fmcp"
        );
        assert_eq!(built.headers[0].1, "new-session");
        assert_eq!(
            String::from_utf8(built.body).unwrap(),
            r#"{"client_id":"xyz","uri":"http://10.0.0.1:9/x"}"#
        );
        // A session id the target did not issue again is left out…
        let mut values = Values::default();
        values.learn(Learned {
            secrets: vec![],
            literals: vec![("session-0123456789".into(), None)],
        });
        let built = build(&x, &values, &[], &[]).unwrap();
        assert!(built.headers.iter().all(|(n, _)| n != "mcp-session-id"));
        // …but once it issued one, a response without one does not undo it.
        values.learn(Learned {
            secrets: vec![],
            literals: vec![("session-0123456789".into(), Some("s2".into()))],
        });
        values.learn(Learned {
            secrets: vec![],
            literals: vec![("session-0123456789".into(), None)],
        });
        let built = build(&x, &values, &[], &[]).unwrap();
        assert_eq!(built.headers[0].1, "s2");
    }

    #[test]
    fn overrides_replace_every_value_of_a_header() {
        let x = exchange(
            "/mcp",
            r#"[["authorization","Bearer <redacted fp=22222222>"],["x-a","1"]]"#,
            "",
        );
        let built = build(
            &x,
            &Values::default(),
            &[("authorization".into(), "Bearer mine".into())],
            &[],
        )
        .unwrap();
        assert_eq!(
            built.headers[0],
            ("authorization".into(), "Bearer mine".into())
        );
    }

    #[test]
    fn values_are_learned_where_the_recording_had_them() {
        let mut out = Learned::default();
        learn_url(
            "http://127.0.0.1:1/cb?code=<redacted fp=11111111>&state=s",
            "http://127.0.0.1:1/cb?code=NEW&state=s",
            &mut out,
        );
        let recorded: Value = serde_json::json!({"access_token":"<redacted fp=22222222>","client_id":"old","n":[{"refresh_token":"<redacted fp=33333333>"}]});
        let replayed: Value =
            serde_json::json!({"access_token":"A","client_id":"new","n":[{"refresh_token":"R"}]});
        learn_json(&recorded, &replayed, None, &mut out);
        let rec_h = Headers::from_iter([("mcp-session-id", "s1")]);
        let new_h = Headers::from_iter([("mcp-session-id", "s2")]);
        learn_headers(&rec_h, &new_h, &mut out);
        assert_eq!(
            out.secrets,
            vec![
                ("11111111".to_string(), "NEW".to_string()),
                ("22222222".to_string(), "A".to_string()),
                ("33333333".to_string(), "R".to_string())
            ]
        );
        assert_eq!(
            out.literals,
            vec![
                ("old".to_string(), Some("new".to_string())),
                ("s1".to_string(), Some("s2".to_string()))
            ]
        );
    }

    proptest::proptest! {
        /// Whatever a capture holds, filling and learning never panic.
        #[test]
        fn any_text_is_filled_and_learned_without_panicking(
            target in "\\PC{0,40}",
            header in "\\PC{0,40}",
            body in "(\\PC|<redacted fp=[0-9a-f]{0,9}>?|\"[a-z_]{0,6}\" ?: ?\"|[&=?#%+])*",
            json in proptest::bool::ANY,
        ) {
            let x = exchange(
                &target,
                &serde_json::json!([["authorization", header.clone()], ["content-type", if json { "application/json" } else { "application/x-www-form-urlencoded" }]]).to_string(),
                &body,
            );
            let values = Values {
                literals: vec![(header.clone(), Some(body.clone()))],
                origins: vec![target.clone()],
                origin_to: Some(body.clone()),
                token: Some("t".into()),
                ..Values::default()
            };
            let _ = build(&x, &values, &[], &[("a".into(), body.clone())]);
            let _ = placeholders(&body);
            let _ = json_key_before(&body, body.len());
            let mut out = Learned::default();
            learn_url(&target, &body, &mut out);
            learn_body(body.as_bytes(), Some("application/x-www-form-urlencoded"), target.as_bytes(), &mut out);
            let _ = request_fps(&x);
            let _ = request_uses(&x, &header);
        }
    }

    #[test]
    fn pkce_pairs_follow_rfc7636() {
        let (v, c) = pkce_pair("S256");
        assert_eq!(v.len(), 43);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(
            c,
            b64.encode(ring::digest::digest(&ring::digest::SHA256, v.as_bytes()))
        );
        let (v, c) = pkce_pair("plain");
        assert_eq!(v, c);
    }
}
