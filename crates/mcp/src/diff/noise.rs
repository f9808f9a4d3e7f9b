//! What `mcptap diff` treats as noise: values that differ between two recordings of the same
//! behaviour — dates, request ids, session ids, OAuth one-time values, issued client
//! credentials, redaction fingerprints, UUIDs, timestamps, the proxy's own port — and that
//! are replaced by placeholders before two values are compared. `--strict` turns it all off.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::session::{Role, Session};
use mcptap_capture::reader::{Capture, Exchange};

/// Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, not the exchange.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields whose value changes with every response or request: caches' clocks, tracing and
/// request ids of CDNs, load balancers and frameworks, and the client's own address.
const VOLATILE_HEADERS: [&str; 40] = [
    "date",
    "age",
    "etag",
    "last-modified",
    "expires",
    "x-request-id",
    "request-id",
    "x-correlation-id",
    "correlation-id",
    "x-trace-id",
    "x-span-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "sentry-trace",
    "cf-ray",
    "cdn-loop",
    "x-cloud-trace-context",
    "x-served-by",
    "x-cache-hits",
    "x-timer",
    "x-runtime",
    "x-response-time",
    "server-timing",
    "fly-request-id",
    "x-vercel-id",
    "x-github-request-id",
    "x-envoy-upstream-service-time",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-remaining",
    "ratelimit-reset",
    "nel",
    "report-to",
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "cf-connecting-ip",
    "true-client-ip",
];

/// Prefixes of tracing header families (`x-b3-traceid`, `x-amzn-trace-id`, `x-datadog-…`).
const VOLATILE_HEADER_PREFIXES: [&str; 4] = ["x-b3-", "x-amz-", "x-amzn-", "x-datadog-"];

/// Fields that must be there, but whose value is an id for this session only.
const ID_HEADERS: [&str; 2] = ["mcp-session-id", "last-event-id"];

/// Keys whose string value is a one-time secret or nonce (OAuth 2.1 §4.1, RFC 7636, OIDC):
/// codes, state, nonce, PKCE, tokens, and legacy transport session ids.
const ONE_TIME_KEYS: [&str; 14] = [
    "code",
    "state",
    "nonce",
    "code_challenge",
    "code_verifier",
    "client_secret",
    "access_token",
    "refresh_token",
    "id_token",
    "registration_access_token",
    "device_code",
    "jti",
    "session_id",
    "sessionid",
];

/// Keys whose number is a point in time (JWT `iat`/`exp`/`nbf`, RFC 7591 `*_issued_at`).
const TIME_KEYS: [&str; 4] = ["iat", "exp", "nbf", "auth_time"];

/// Whether a header is left out of the comparison unless `--strict`.
pub(super) fn is_ignored_header(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
        || VOLATILE_HEADERS.contains(&name)
        || VOLATILE_HEADER_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The value of a header as compared: ids become placeholders, the rest goes through
/// [`Noise::text`].
pub(super) fn header_value<'v>(noise: &Noise, name: &str, value: &'v str) -> Cow<'v, str> {
    if !noise.strict && ID_HEADERS.contains(&name) {
        return Cow::Borrowed("<id>");
    }
    noise.text(value)
}

/// The placeholder for a keyed value that is noise (`"state": "xyz"`, `"iat": 1795736658`), if
/// it is.
pub(super) fn keyed(key: &str, value: &Value) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    match value {
        Value::String(s) if ONE_TIME_KEYS.contains(&lower.as_str()) && !s.is_empty() => {
            Some("<one-time value>")
        }
        Value::Number(n) if is_time_key(key) && n.as_f64().is_some_and(is_epochish) => {
            Some("<epoch>")
        }
        Value::String(s)
            if is_time_key(key)
                && s.len() >= 9
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<f64>().is_ok_and(is_epochish) =>
        {
            Some("<epoch>")
        }
        _ => None,
    }
}

/// `iat`, `exp`, `expires_at`, `client_id_issued_at`, `createdAt`…
fn is_time_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    TIME_KEYS.contains(&lower.as_str())
        || lower.ends_with("_at")
        || (key.ends_with("At") && key.len() > 2)
        || lower.ends_with("_issued_at")
}

/// Seconds or milliseconds since 1970, between 2001 and 2286: a point in time, not a count.
fn is_epochish(n: f64) -> bool {
    (1e9..1e10).contains(&n) || (1e12..1e13).contains(&n)
}

/// A path segment that is an id (a number, a UUID, a long hex or random token), for the
/// alignment key: `/files/8c1f…` and `/files/77a0…` are the same endpoint.
pub(super) fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id_segment(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
    out
}

fn is_id_segment(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let bytes = s.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() || (bytes.len() == 36 && is_uuid_at(bytes, 0)) {
        return true;
    }
    if bytes.len() >= 8 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    bytes.len() >= 16
        && digits > 0
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Per-capture facts the placeholders need: the proxy's own addresses, the upstream's, the
/// client credentials registration issued, the MCP session ids the server handed out.
pub(super) struct Noise {
    strict: bool,
    /// Exact values and their placeholders, longest first.
    literals: Vec<Literal>,
}

/// An exact value that is noise wherever it appears.
#[derive(Debug, Clone)]
struct Literal {
    text: String,
    placeholder: &'static str,
    bounds: Bounds,
}

/// Where a literal counts as a whole.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bounds {
    /// Anywhere (a session id, an issued client id).
    Anywhere,
    /// Not followed by a digit: `127.0.0.1:8080` is not in `127.0.0.1:80801`.
    Port,
    /// A host name: neither preceded by a name character or a dot, nor followed by a name
    /// character, so `mcp.example.com` is not in `api.mcp.example.com`.
    Host,
}

impl Literal {
    fn new(text: impl Into<String>, placeholder: &'static str, bounds: Bounds) -> Literal {
        Literal {
            text: text.into(),
            placeholder,
            bounds,
        }
    }
}

impl Noise {
    /// Nothing is noise (`--strict`).
    pub(super) fn strict() -> Noise {
        Noise {
            strict: true,
            literals: Vec::new(),
        }
    }

    /// The noise rules with no capture facts (for tests).
    #[cfg(test)]
    pub(super) fn of_nothing() -> Noise {
        Noise {
            strict: false,
            literals: Vec::new(),
        }
    }

    /// The noise of one capture.
    pub(super) fn of(capture: &Capture, session: &Session<'_>) -> Noise {
        let mut literals = Vec::new();
        for route in &capture.session.routes {
            if let Ok(addr) = route.listen.parse::<SocketAddr>() {
                let port = addr.port();
                let mut hosts = vec![
                    "127.0.0.1".to_string(),
                    "localhost".to_string(),
                    "[::1]".to_string(),
                ];
                if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
                    hosts.push(match addr {
                        SocketAddr::V4(v4) => v4.ip().to_string(),
                        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                    });
                }
                for host in hosts {
                    for colon in [":", "%3A", "%3a"] {
                        literals.push(Literal::new(
                            format!("{host}{colon}{port}"),
                            "<proxy>",
                            Bounds::Port,
                        ));
                    }
                }
            }
            // An upstream with an explicit port is a local or private server: its port is as
            // arbitrary as the proxy's. A replay's target is where its client knocked, as the
            // proxy was for the recorded client: the same placeholder makes a replay compare
            // equal to its original.
            let placeholder = if route.listen == mcptap_capture::model::LISTEN_REPLAY {
                "<proxy>"
            } else {
                "<upstream>"
            };
            if let Ok(uri) = route.upstream.parse::<http::Uri>() {
                if let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) {
                    for colon in [":", "%3A", "%3a"] {
                        literals.push(Literal::new(
                            format!("{host}{colon}{port}"),
                            placeholder,
                            Bounds::Port,
                        ));
                    }
                }
            }
        }
        // The names clients used to reach the proxy (a public domain in front of it) are the
        // proxy too: two deployments on two domains compare equal where they name themselves.
        for x in &capture.exchanges {
            if let Some(host) = x.request_header("host") {
                let host = host.trim().to_ascii_lowercase();
                let name = host
                    .rsplit_once(':')
                    .map_or(host.as_str(), |(name, _)| name);
                // Addresses are covered by the route's port; a bare one is too common to replace.
                let is_address = name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
                if name.contains('.') && !is_address && !literals.iter().any(|l| l.text == host) {
                    literals.push(Literal::new(host, "<proxy>", Bounds::Host));
                }
            }
        }
        for step in session.steps_with(Role::Registration) {
            let Some(doc) = step.x.response_body.json() else {
                continue;
            };
            for (key, placeholder) in [
                ("client_id", "<issued client_id>"),
                ("client_secret", "<issued client_secret>"),
                ("registration_access_token", "<issued token>"),
            ] {
                if let Some(value) = doc.get(key).and_then(Value::as_str) {
                    if value.len() >= 6 {
                        literals.push(Literal::new(value, placeholder, Bounds::Anywhere));
                    }
                }
            }
        }
        for x in &capture.exchanges {
            for value in x.response_headers("mcp-session-id") {
                if value.len() >= 6 && !literals.iter().any(|l| l.text == value) {
                    literals.push(Literal::new(value, "<session>", Bounds::Anywhere));
                }
            }
        }
        literals.sort_by(|a, b| {
            b.text
                .len()
                .cmp(&a.text.len())
                .then_with(|| a.text.cmp(&b.text))
        });
        literals.dedup_by(|a, b| a.text == b.text);
        Noise {
            strict: false,
            literals,
        }
    }

    /// A hash of what the client asked, noise removed: the query and the body (JSON by
    /// structure, without JSON-RPC ids). Equal prints are the same request, for alignment.
    pub(super) fn request_print(&self, x: &Exchange) -> u64 {
        let mut h = DefaultHasher::new();
        let param = |k: &str, v: &str, h: &mut DefaultHasher| {
            k.hash(h);
            match keyed(k, &Value::String(v.to_string())) {
                Some(placeholder) => placeholder.hash(h),
                None => self.text(v).hash(h),
            }
        };
        for (k, v) in x.query() {
            param(&k, &v, &mut h);
        }
        let body = &x.request_body.bytes;
        if x.request_media_type().as_deref() == Some("application/x-www-form-urlencoded") {
            for (k, v) in form_urlencoded::parse(body) {
                param(&k, &v, &mut h);
            }
        } else if let Ok(json) = serde_json::from_slice::<Value>(body) {
            self.hash_json(None, &json, true, &mut h);
        } else {
            self.text(&String::from_utf8_lossy(body)).hash(&mut h);
        }
        h.finish()
    }

    fn hash_json(&self, key: Option<&str>, v: &Value, rpc: bool, h: &mut DefaultHasher) {
        match v {
            Value::Object(o) => {
                let skip_id = rpc && o.contains_key("jsonrpc");
                let mut keys: Vec<&String> =
                    o.keys().filter(|k| !(skip_id && *k == "id")).collect();
                keys.sort_unstable();
                b'{'.hash(h);
                for k in keys {
                    k.hash(h);
                    self.hash_json(Some(k), &o[k.as_str()], false, h);
                }
            }
            Value::Array(items) => {
                b'['.hash(h);
                items.len().hash(h);
                for item in items {
                    self.hash_json(key, item, rpc, h);
                }
            }
            leaf => match (key.and_then(|k| keyed(k, leaf)), leaf) {
                (Some(placeholder), _) => placeholder.hash(h),
                (None, Value::String(s)) => self.text(s).hash(h),
                // Numbers by value: 1.0 is 1.
                (None, Value::Number(n)) => n.as_f64().map(f64::to_bits).hash(h),
                (None, other) => other.to_string().hash(h),
            },
        }
    }

    /// A string as compared: every noisy part replaced by its placeholder.
    pub(super) fn text<'v>(&self, value: &'v str) -> Cow<'v, str> {
        if self.strict {
            return Cow::Borrowed(value);
        }
        let mut out = Cow::Borrowed(value);
        for literal in &self.literals {
            if out.contains(literal.text.as_str()) {
                out = Cow::Owned(literal.replace(&out));
            }
        }
        let steps: [fn(&str) -> Option<String>; 5] = [
            fingerprints,
            one_time_parameters,
            uuids,
            rfc3339_timestamps,
            http_dates,
        ];
        for step in steps {
            if let Some(changed) = step(&out) {
                out = Cow::Owned(changed);
            }
        }
        out
    }
}

impl Literal {
    /// `s` with every whole occurrence replaced by the placeholder.
    fn replace(&self, s: &str) -> String {
        let name_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        let mut before: Option<u8> = None;
        while let Some(i) = rest.find(self.text.as_str()) {
            let after = &rest[i + self.text.len()..];
            let prev = if i > 0 {
                Some(rest.as_bytes()[i - 1])
            } else {
                before
            };
            let next = after.as_bytes().first().copied();
            let whole = match self.bounds {
                Bounds::Anywhere => true,
                Bounds::Port => !next.is_some_and(|c| c.is_ascii_digit()),
                Bounds::Host => {
                    !prev.is_some_and(|c| name_char(c) || c == b'.') && !next.is_some_and(name_char)
                }
            };
            out.push_str(&rest[..i]);
            out.push_str(if whole { self.placeholder } else { &self.text });
            before = self.text.as_bytes().last().copied();
            rest = after;
        }
        out.push_str(rest);
        out
    }
}

/// `<redacted fp=1a2b3c4d>` → `<redacted>`: fingerprints are keyed per capture, so the same
/// secret never has the same fp in two captures.
fn fingerprints(s: &str) -> Option<String> {
    const OPEN: &str = "<redacted fp=";
    if !s.contains(OPEN) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        match after.find('>') {
            Some(j) if j <= 64 => {
                out.push_str("<redacted>");
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// `?code=…&state=…` in URLs (a `Location`, a `resource_metadata`, an endpoint event):
/// the values of one-time parameters become placeholders.
fn one_time_parameters(s: &str) -> Option<String> {
    if !s.contains('=') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > 0
            && (bytes[start - 1].is_ascii_alphanumeric() || matches!(bytes[start - 1], b'_' | b'-'))
        {
            start -= 1;
        }
        let at_boundary = start == 0 || matches!(bytes[start - 1], b'?' | b'&' | b'#' | b';');
        let name = s[start..i].to_ascii_lowercase();
        let mut end = i + 1;
        while end < bytes.len()
            && !matches!(
                bytes[end],
                b'&' | b'#' | b'"' | b'\'' | b' ' | b'\t' | b'\r' | b'\n' | b',' | b';'
            )
        {
            end += 1;
        }
        if at_boundary && end > i + 1 && ONE_TIME_KEYS.contains(&name.as_str()) {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..=i]);
            o.push_str("<one-time value>");
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.map(|mut o| {
        o.push_str(&s[copied..]);
        o
    })
}

/// 8-4-4-4-12 hex digits at `i`.
fn is_uuid_at(b: &[u8], i: usize) -> bool {
    if b.len() < i + 36 {
        return false;
    }
    (0..36).all(|k| match k {
        8 | 13 | 18 | 23 => b[i + k] == b'-',
        _ => b[i + k].is_ascii_hexdigit(),
    })
}

fn uuids(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 36 || !s.contains('-') {
        return None;
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + 36 <= b.len() {
        let boundary_before = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let boundary_after = b.get(i + 36).is_none_or(|c| !c.is_ascii_alphanumeric());
        if boundary_before && boundary_after && is_uuid_at(b, i) {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..i]);
            o.push_str("<uuid>");
            i += 36;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.map(|mut o| {
        o.push_str(&s[copied..]);
        o
    })
}

/// The length of an RFC 3339 date-time at `i` (`2026-11-26T22:51:33.879147Z`, offset
/// optional, seconds optional), or 0.
fn rfc3339_len(b: &[u8], i: usize) -> usize {
    let digits =
        |from: usize, n: usize| (from..from + n).all(|k| b.get(k).is_some_and(u8::is_ascii_digit));
    let is = |k: usize, c: &[u8]| b.get(k).is_some_and(|x| c.contains(x));
    if !(digits(i, 4) && is(i + 4, b"-") && digits(i + 5, 2) && is(i + 7, b"-") && digits(i + 8, 2))
    {
        return 0;
    }
    if !(is(i + 10, b"Tt ") && digits(i + 11, 2) && is(i + 13, b":") && digits(i + 14, 2)) {
        return 0;
    }
    let mut end = i + 16;
    if is(end, b":") && digits(end + 1, 2) {
        end += 3;
        if is(end, b".,") && digits(end + 1, 1) {
            end += 1;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
        }
    }
    if is(end, b"Zz") {
        end += 1;
    } else if is(end, b"+-") && digits(end + 1, 2) {
        if is(end + 3, b":") && digits(end + 4, 2) {
            end += 6;
        } else if digits(end + 3, 2) {
            end += 5;
        }
    }
    end - i
}

fn rfc3339_timestamps(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 16 {
        return None;
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + 16 <= b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_digit();
        let n = if boundary && b[i].is_ascii_digit() {
            rfc3339_len(b, i)
        } else {
            0
        };
        if n > 0 {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..i]);
            o.push_str("<timestamp>");
            i += n;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.map(|mut o| {
        o.push_str(&s[copied..]);
        o
    })
}

/// IMF-fixdate (RFC 9110 §5.6.7), `Thu, 26 Nov 2026 23:44:18 GMT`, as in cookie `Expires`.
fn http_dates(s: &str) -> Option<String> {
    const LEN: usize = 29;
    if !s.contains(" GMT") {
        return None;
    }
    let b = s.as_bytes();
    let fits = |i: usize| {
        let p = |k: usize| b[i + k];
        let d = |k: usize| p(k).is_ascii_digit();
        let a = |k: usize| p(k).is_ascii_alphabetic();
        a(0) && a(1)
            && a(2)
            && p(3) == b','
            && p(4) == b' '
            && d(5)
            && d(6)
            && p(7) == b' '
            && a(8)
            && a(9)
            && a(10)
            && p(11) == b' '
            && (12..16).all(d)
            && p(16) == b' '
            && d(17)
            && d(18)
            && p(19) == b':'
            && d(20)
            && d(21)
            && p(22) == b':'
            && d(23)
            && d(24)
            && &b[i + 25..i + 29] == b" GMT"
    };
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + LEN <= b.len() {
        if fits(i) {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..i]);
            o.push_str("<date>");
            i += LEN;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.map(|mut o| {
        o.push_str(&s[copied..]);
        o
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_with(literals: &[(&str, &'static str, Bounds)]) -> Noise {
        Noise {
            strict: false,
            literals: literals
                .iter()
                .map(|(l, p, b)| Literal::new(*l, p, *b))
                .collect(),
        }
    }

    #[test]
    fn the_proxy_port_is_replaced_only_as_a_whole_port() {
        let n = noise_with(&[("127.0.0.1:8080", "<proxy>", Bounds::Port)]);
        assert_eq!(n.text("http://127.0.0.1:8080/mcp"), "http://<proxy>/mcp");
        assert_eq!(
            n.text("http://127.0.0.1:80801/mcp"),
            "http://127.0.0.1:80801/mcp"
        );
        assert_eq!(n.text("http://127.0.0.1:8080"), "http://<proxy>");
    }

    #[test]
    fn the_public_host_is_replaced_only_as_a_whole_name() {
        let n = noise_with(&[("mcp.example.com", "<proxy>", Bounds::Host)]);
        assert_eq!(n.text("https://mcp.example.com/mcp"), "https://<proxy>/mcp");
        assert_eq!(
            n.text("https://auth.mcp.example.com https://mcp.example.community"),
            "https://auth.mcp.example.com https://mcp.example.community"
        );
    }

    #[test]
    fn fingerprints_uuids_timestamps_and_dates_become_placeholders() {
        let n = Noise::of_nothing();
        assert_eq!(n.text("Bearer <redacted fp=1a2b3c4d>"), "Bearer <redacted>");
        assert_eq!(
            n.text("id 123e4567-e89b-12d3-a456-426614174000."),
            "id <uuid>."
        );
        assert_eq!(
            n.text("at 2026-11-26T22:51:33.879147Z and 2026-11-26 22:51+01:00"),
            "at <timestamp> and <timestamp>"
        );
        assert_eq!(n.text("on 2026-11-26 only"), "on 2026-11-26 only");
        assert_eq!(
            n.text("a=1; Expires=Thu, 26 Nov 2026 23:44:18 GMT; Path=/"),
            "a=1; Expires=<date>; Path=/"
        );
    }

    #[test]
    fn one_time_parameters_in_urls_are_masked() {
        let n = Noise::strict();
        assert_eq!(
            n.text("?state=abc"),
            "?state=abc",
            "strict keeps everything"
        );
        let n = noise_with(&[]);
        assert_eq!(
            n.text("http://c/cb?code=<redacted fp=00112233>&state=XS0B&x=1"),
            "http://c/cb?code=<one-time value>&state=<one-time value>&x=1"
        );
        assert_eq!(n.text("the state=ok"), "the state=ok");
    }

    #[test]
    fn keyed_values_that_are_noise() {
        assert_eq!(keyed("state", &"x".into()), Some("<one-time value>"));
        assert_eq!(
            keyed("code", &(-32600).into()),
            None,
            "a JSON-RPC error code"
        );
        assert_eq!(
            keyed("client_id_issued_at", &1795736658.into()),
            Some("<epoch>")
        );
        assert_eq!(keyed("expires_in", &3600.into()), None);
        assert_eq!(keyed("iat", &12.into()), None);
    }

    #[test]
    fn ids_in_paths_are_normalised() {
        assert_eq!(normalize_path("/files/42/x"), "/files/{id}/x");
        assert_eq!(
            normalize_path("/s/123e4567-e89b-12d3-a456-426614174000"),
            "/s/{id}"
        );
        assert_eq!(normalize_path("/mcp"), "/mcp");
        assert_eq!(
            normalize_path("/messages/a1B2c3D4e5F6g7H8"),
            "/messages/{id}"
        );
        assert_eq!(
            normalize_path("/.well-known/oauth-protected-resource/mcp"),
            "/.well-known/oauth-protected-resource/mcp"
        );
    }

    proptest::proptest! {
        /// No string makes the normaliser panic (multi-byte text cut anywhere included).
        #[test]
        fn any_text_normalises_without_panicking(s in "\\PC{0,120}") {
            let n = noise_with(&[
                ("127.0.0.1:1", "<proxy>", Bounds::Port),
                ("abcdef", "<session>", Bounds::Anywhere),
                ("a.b", "<proxy>", Bounds::Host),
            ]);
            let _ = n.text(&s);
            let _ = normalize_path(&s);
            let _ = keyed(&s, &Value::String(s.clone()));
        }
    }
}
