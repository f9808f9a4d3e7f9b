//! Redaction of secrets (OAuth tokens, codes, passwords, credentials, cookies) before they reach a capture.
//! Each secret becomes `<redacted fp=XXXXXXXX>`: equal secrets stay linkable within one capture, and the
//! fingerprint is keyed with a per-session random key so that nobody holding the capture can guess a secret back.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::swar;

/// Query/form parameter names and JSON object keys whose values are secrets, as written in
/// the specs. A name matches in any case and any style (`access_token`, `accessToken`,
/// `Access-Token`): see [`is_secret_key`], which also takes any name holding `token`,
/// `secret`, `password` or `key`, less the known-safe ones of [`SAFE_NAMES`].
pub const SECRET_KEYS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "code_verifier",
    "client_secret",
    "client_assertion",
    "password",
    "registration_access_token",
    "subject_token",
    "actor_token",
    "device_code",
    "api_key",
    "token",
    "secret",
];

/// Names that hold `token`, `secret`, `password` or `key` but no secret, in the folded form of
/// [`fold`]: analysis reads them (token types, endpoints, JWKS key sets, MCP progress tokens).
const SAFE_NAMES: &[&str] = &[
    "tokentype",
    "tokentypehint",
    "tokenendpoint",
    "tokenendpointauthmethod",
    "tokenendpointauthsigningalg",
    "keys",
    "keyops",
    "keyid",
    "keytype",
    "publickey",
    "jwkskey",
    "idempotencykey",
    "progresstoken",
    "nexttoken",
    "pagetoken",
    "nextpagetoken",
    "tokencount",
    "tokens",
    "maxtokens",
    "inputtokens",
    "outputtokens",
    "totaltokens",
];

/// Words that make a name secret wherever they stand in it (folded).
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "privatekey",
];

/// A name lowercased, with `_`, `-`, `.` and spaces left out: `Access-Token`, `access_token`
/// and `accessToken` all fold to `accesstoken`. At most 64 bytes are kept (longer names are
/// folded from their first 64). Also returns which letters `a`–`z` the name holds, as bits.
fn fold(name: &[u8], out: &mut [u8; 64]) -> (usize, u32) {
    let mut n = 0;
    let mut letters = 0u32;
    for &b in name {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        if n == out.len() {
            break;
        }
        let lower = b.to_ascii_lowercase();
        if lower.is_ascii_lowercase() {
            letters |= 1 << (lower - b'a');
        }
        out[n] = lower;
        n += 1;
    }
    (n, letters)
}

/// The letters of a word, as [`fold`] counts them.
const fn letters(word: &[u8]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < word.len() {
        bits |= 1 << (word[i] - b'a');
        i += 1;
    }
    bits
}

/// Every secret name holds one of these words: a name lacking the letters of all of them (as
/// most JSON keys do: `jsonrpc`, `method`, `params`, `content`) is ruled out at once.
const NEEDED: [u32; 6] = [
    letters(b"token"),
    letters(b"secret"),
    letters(b"passw"),
    letters(b"key"),
    letters(b"code"),
    letters(b"assertion"),
];

/// [`SECRET_KEYS`] as [`fold`] folds them.
const FOLDED_SECRET_KEYS: &[&[u8]] = &[
    b"accesstoken",
    b"refreshtoken",
    b"idtoken",
    b"code",
    b"codeverifier",
    b"clientsecret",
    b"clientassertion",
    b"password",
    b"registrationaccesstoken",
    b"subjecttoken",
    b"actortoken",
    b"devicecode",
    b"apikey",
    b"token",
    b"secret",
];

/// Whether a parameter, JSON key or header name names a secret.
pub fn is_secret_key(name: &str) -> bool {
    is_secret_name(name.as_bytes())
}

fn is_secret_name(name: &[u8]) -> bool {
    let mut buf = [0u8; 64];
    let (n, held) = fold(name, &mut buf);
    if !NEEDED.iter().any(|need| held & need == *need) {
        return false;
    }
    let folded = &buf[..n];
    if SAFE_NAMES.iter().any(|safe| safe.as_bytes() == folded) {
        return false;
    }
    // Metadata that names endpoints, methods and what is supported is not a secret.
    if [
        &b"endpoint"[..],
        b"supported",
        b"type",
        b"types",
        b"uri",
        b"url",
        b"hint",
        b"method",
        b"methods",
        b"expiresin",
        b"expiry",
        b"lifetime",
        b"length",
    ]
    .iter()
    .any(|end| folded.ends_with(end))
    {
        return false;
    }
    FOLDED_SECRET_KEYS.contains(&folded)
        || SECRET_WORDS
            .iter()
            .any(|word| contains(folded, word.as_bytes()))
        || folded.ends_with(b"key")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Header names whose whole value is a credential, besides any name [`is_secret_name`] takes:
/// DPoP proofs (RFC 9449) and the API-key headers of the common gateways.
const SECRET_HEADERS: &[&str] = &["dpop", "x-goog-api-key", "ocp-apim-subscription-key"];

/// Headers that look secret by name but are not, and that analysis reads.
const SAFE_HEADERS: &[&str] = &[
    "sec-websocket-key",
    "idempotency-key",
    "x-idempotency-key",
    "www-authenticate",
];

/// How many times JSON escaped inside a JSON string (a tool result quoting a token response) is looked into;
/// the cap keeps the scan linear.
const MAX_EMBED_DEPTH: u8 = 3;

/// A raw key longer than this cannot decode to any secret key even if fully `\uXXXX`-escaped, so it is not decoded.
const MAX_RAW_KEY: usize = 6 * 32;

/// Replaces secrets by keyed fingerprints; one per capture session.
#[derive(Clone)]
pub struct Redactor {
    key: [u8; 32],
    enabled: bool,
    /// The secrets redacted so far this session, scrubbed wherever they appear again.
    known: Arc<Mutex<Known>>,
}

/// Secrets seen, most recent last (at most [`MAX_KNOWN`]), and the matcher that finds any of
/// them in any of their spellings, made again when a secret is added.
#[derive(Default)]
struct Known {
    secrets: std::collections::VecDeque<String>,
    matcher: Option<(aho_corasick::AhoCorasick, Vec<usize>)>,
}

impl Known {
    /// The matcher over every spelling of every known secret, and for each pattern the index
    /// of its secret.
    fn matcher(&mut self) -> Option<&(aho_corasick::AhoCorasick, Vec<usize>)> {
        if self.matcher.is_none() && !self.secrets.is_empty() {
            let mut patterns: Vec<String> = Vec::new();
            let mut owners: Vec<usize> = Vec::new();
            for (i, secret) in self.secrets.iter().enumerate() {
                for form in spellings(secret) {
                    if form.len() >= MIN_KNOWN && !patterns.contains(&form) {
                        patterns.push(form);
                        owners.push(i);
                    }
                }
            }
            let matcher = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()?;
            self.matcher = Some((matcher, owners));
        }
        self.matcher.as_ref()
    }
}

/// The ways a secret may be written where no rule reads it: as it is, percent-encoded,
/// JSON-escaped, and inside base64 (standard or URL-safe, at each of the three alignments, the
/// characters that depend on the secret's bytes alone).
fn spellings(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut forms = vec![
        secret.to_owned(),
        form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        serde_json::to_string(secret)
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned(),
    ];
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for lead in 0..3usize {
            let mut bytes = vec![0u8; lead];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&bytes);
            // Characters of groups shared with unknown neighbours depend on them: drop the
            // first group when it holds lead bytes and the last when it is not whole.
            let start = if lead == 0 { 0 } else { 4 };
            let whole = bytes.len() / 3 * 4;
            if whole > start {
                forms.push(encoded[start..whole].to_owned());
            }
        }
    }
    forms
}

/// How many secrets are remembered for scrubbing: a long session's oldest are let go.
const MAX_KNOWN: usize = 256;
/// Shorter values are not scrubbed wherever they appear: they would match ordinary text.
const MIN_KNOWN: usize = 8;

/// Never prints the key: a capture's fingerprints must not be reversible by whoever sees a log line.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor with a fresh random key; `enabled == false` makes every method return its input unchanged.
    ///
    /// # Panics
    /// If `enabled` and the OS cannot supply randomness: a guessable key would let short secrets be
    /// brute-forced from their fingerprints, so this refuses rather than capture weakly.
    pub fn new(enabled: bool) -> Self {
        let mut key = [0u8; 32];
        if let Err(err) = getrandom::fill(&mut key) {
            assert!(
                !enabled,
                "mcptap: cannot draw a random redaction key: {err}"
            );
        }
        Self {
            key,
            enabled,
            known: Arc::default(),
        }
    }

    /// A redactor with a fixed key (tests, and reading back a capture never needs the key).
    pub fn with_key(key: [u8; 32]) -> Self {
        Self {
            key,
            enabled: true,
            known: Arc::default(),
        }
    }

    /// Whether secrets are redacted at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// 8 lowercase hex chars of the keyed hash of `secret`.
    pub fn fingerprint(&self, secret: &str) -> String {
        self.fingerprint_bytes(secret.as_bytes())
    }

    /// `<redacted fp=XXXXXXXX>`; when disabled, `secret` itself, as it would be recorded.
    /// The secret is remembered, for [`Redactor::scrub`].
    pub fn placeholder(&self, secret: &str) -> String {
        if !self.enabled {
            return secret.to_owned();
        }
        self.remember(secret);
        format!("<redacted fp={}>", self.fingerprint(secret))
    }

    fn remember(&self, secret: &str) {
        if secret.len() < MIN_KNOWN || secret.starts_with("<redacted fp=") {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.secrets.iter().any(|s| s == secret) {
            return;
        }
        if known.secrets.len() == MAX_KNOWN {
            known.secrets.pop_front();
        }
        known.secrets.push_back(secret.to_owned());
        known.matcher = None;
    }

    /// Text with every secret redacted earlier in the session replaced wherever it appears
    /// (as written, percent-encoded, JSON-escaped, or inside base64): a token that slips past
    /// the rules for names and syntax — in an SSE `id:`, a line split in two, a header of its
    /// own, an encoded payload — is still caught. `None` when the text holds none.
    pub fn scrub(&self, text: &str) -> Option<String> {
        if !self.enabled || text.len() < MIN_KNOWN {
            return None;
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<(usize, usize, usize)> = {
            let (matcher, owners) = known.matcher()?;
            let hits = matcher
                .find_iter(text)
                .map(|m| (m.start(), m.end(), owners[m.pattern().as_usize()]))
                .collect::<Vec<_>>();
            if hits.is_empty() {
                return None;
            }
            hits
        };
        let secrets: Vec<String> = hits
            .iter()
            .map(|&(_, _, owner)| known.secrets[owner].clone())
            .collect();
        drop(known);
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for ((start, end, _), secret) in hits.into_iter().zip(secrets) {
            out.push_str(&text[done..start]);
            out.push_str(&format!("<redacted fp={}>", self.fingerprint(&secret)));
            done = end;
        }
        out.push_str(&text[done..]);
        Some(out)
    }

    /// `text` scrubbed of known secrets ([`Redactor::scrub`]), without a copy when it holds none.
    pub fn scrubbed(&self, text: String) -> String {
        self.scrub(&text).unwrap_or(text)
    }

    /// The keyed fingerprint of raw bytes: a body recorded as its length and hash only.
    pub fn fingerprint_bytes(&self, bytes: &[u8]) -> String {
        let hash = blake3::keyed_hash(&self.key, bytes);
        hash.as_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A header value as it may be recorded. `name` is matched case-insensitively.
    /// authorization, proxy-authorization: keep the scheme word and one space, redact the credential
    ///   ("Bearer abc" -> "Bearer <redacted fp=..>"; a value with no space is redacted whole);
    /// cookie: each `name=value` pair keeps its name, value redacted ("a=1; b=2" -> "a=<redacted fp=..>; b=<redacted fp=..>");
    /// set-cookie: the first `name=value` pair's value redacted, attributes after ';' kept;
    /// location, content-location, referer, link: secrets in the query string of the URL(s) redacted (see `target`);
    /// x-api-key, api-key, x-auth-token, x-access-token: redacted whole;
    /// every other header unchanged.
    pub fn header_value(&self, name: &str, value: &str) -> String {
        self.header_value_redacted(name, value)
            .unwrap_or_else(|| value.to_owned())
    }

    /// [`Redactor::header_value`], or `None` when the value is recorded as it is: most headers
    /// are, and the writer then keeps the value it has instead of copying it.
    pub(crate) fn header_value_redacted(&self, name: &str, value: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let name = name.trim();
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        if is("authorization") || is("proxy-authorization") {
            Some(self.credentials(value))
        } else if is("cookie") {
            Some(
                value
                    .split(';')
                    .map(|pair| self.cookie_pair(pair))
                    .collect::<Vec<_>>()
                    .join(";"),
            )
        } else if is("set-cookie") {
            Some(match value.split_once(';') {
                Some((pair, attributes)) => format!("{};{attributes}", self.cookie_pair(pair)),
                None => self.cookie_pair(value),
            })
        } else if is("location") || is("content-location") || is("referer") {
            Some(self.target(value))
        } else if is("link") {
            Some(self.link(value))
        } else if SAFE_HEADERS.iter().any(|h| is(h)) {
            None
        } else if SECRET_HEADERS.iter().any(|h| is(h)) || is_secret_name(name.as_bytes()) {
            // API keys, tokens and proofs sent as their own header are as secret as a bearer token.
            Some(self.placeholder(value.trim()))
        } else {
            None
        }
    }

    /// A request target, URL or bare query string: values of secret query parameters redacted,
    /// the rest (path, other params, fragment, separators, encoding) unchanged.
    /// Parameters in a fragment (`#access_token=..`, OAuth's fragment response mode) are redacted too.
    pub fn target(&self, target: &str) -> String {
        if !self.enabled {
            return target.to_owned();
        }
        match target.split_once('#') {
            Some((main, fragment)) => {
                format!("{}#{}", self.url_part(main), self.url_part(fragment))
            }
            None => self.url_part(target),
        }
    }

    /// [`Redactor::target`], or `None` when the target is recorded as it is (a path or URL with
    /// neither query nor fragment, as most are).
    pub(crate) fn target_redacted(&self, target: &str) -> Option<String> {
        let plain =
            !target.contains(['?', '#', ';']) && (target.starts_with('/') || has_scheme(target));
        if !self.enabled || plain {
            return None;
        }
        Some(self.target(target))
    }

    /// An application/x-www-form-urlencoded body: values of secret keys redacted, rest byte-exact.
    pub fn form(&self, body: &str) -> String {
        if !self.enabled {
            return body.to_owned();
        }
        self.pairs(body)
    }

    /// JSON text, or a fragment of it, or text with JSON embedded: every string value of a secret
    /// key (`"access_token": "..."`, any depth, whitespace around ':' allowed, escapes inside strings
    /// handled, keys compared after unescaping) is replaced by the quoted placeholder
    /// (`"access_token":"<redacted fp=..>"`). Non-string values (numbers, objects, null) are left alone
    /// (JSON-RPC error `"code": -32600` must stay). Must not panic or misbehave on non-JSON, truncated
    /// JSON, or a string that never closes; a secret key whose value string is cut off at the end of
    /// the text is redacted up to the end. JSON escaped inside a string (`"text": "{\"code\":\"x\"}"`)
    /// is redacted as well.
    pub fn json_text(&self, text: &str) -> String {
        self.json_redacted(text).unwrap_or_else(|| text.to_owned())
    }

    /// `json_text`, or `None` when the text holds no secret (and stays as it is).
    fn json_redacted(&self, text: &str) -> Option<String> {
        if !self.enabled || !may_hold_secret(text.as_bytes()) {
            return None;
        }
        let mut hits = Vec::new();
        scan_json(text, 0, &mut hits);
        if hits.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for hit in hits {
            // Hits come sorted and disjoint; the guard only keeps a broken invariant from panicking.
            match (text.get(done..hit.start), hit.end >= hit.start) {
                (Some(kept), true) => {
                    out.push_str(kept);
                    if hit.quote {
                        out.push('"');
                        out.push_str(&self.placeholder(&hit.secret));
                        out.push('"');
                    } else {
                        out.push_str(&self.placeholder(&hit.secret));
                    }
                    done = hit.end;
                }
                _ => continue,
            }
        }
        out.push_str(text.get(done..).unwrap_or_default());
        Some(out)
    }

    /// A body by its content type: `application/x-www-form-urlencoded` (parameters ignored, case-insensitive)
    /// goes to `form`; everything else to `json_text`.
    pub fn body(&self, content_type: Option<&str>, text: &str) -> String {
        self.body_owned(
            content_type.is_some_and(super::headers::is_form),
            text.to_owned(),
        )
    }

    /// A body by its syntax, whatever its content type says (`curl -d` labels JSON a form;
    /// forms arrive with no type at all): JSON is scanned as JSON, a form as a form, a
    /// multipart body part by part; anything else as text that may hold JSON. Text with no
    /// secret in it comes back as it is, without a copy.
    pub fn body_owned(&self, form: bool, text: String) -> String {
        if !self.enabled {
            return text;
        }
        let start = text.trim_start();
        if start.starts_with(['{', '[', '"']) {
            return self.json_redacted(&text).unwrap_or(text);
        }
        if let Some(redacted) = self.multipart(&text) {
            return self.json_redacted(&redacted).unwrap_or(redacted);
        }
        if form || looks_like_form(start) {
            let redacted = self.pairs(&text);
            return self.json_redacted(&redacted).unwrap_or(redacted);
        }
        self.json_redacted(&text).unwrap_or(text)
    }

    /// A `multipart/form-data` body with the values of secret fields redacted, if it is one.
    fn multipart(&self, text: &str) -> Option<String> {
        let boundary_line = text.trim_start().lines().next()?.trim_end();
        if !boundary_line.starts_with("--") || boundary_line.len() < 3 {
            return None;
        }
        if !text.to_ascii_lowercase().contains("content-disposition:") {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut parts = text.split(boundary_line);
        out.push_str(parts.next().unwrap_or(""));
        for part in parts {
            out.push_str(boundary_line);
            let Some(head_end) = part
                .find("\r\n\r\n")
                .map(|i| i + 4)
                .or_else(|| part.find("\n\n").map(|i| i + 2))
            else {
                out.push_str(part);
                continue;
            };
            let head = &part[..head_end];
            let name = head
                .to_ascii_lowercase()
                .find("name=\"")
                .map(|i| &head[i + 6..])
                .and_then(|rest| rest.split('"').next());
            let value = &part[head_end..];
            let value_end =
                value.len() - (value.len() - value.trim_end_matches(['\r', '\n']).len());
            match name {
                Some(name) if is_secret_key(name) && value_end > 0 => {
                    out.push_str(head);
                    out.push_str(&self.placeholder(&value[..value_end]));
                    out.push_str(&value[value_end..]);
                }
                _ => out.push_str(part),
            }
        }
        Some(out)
    }

    /// `Scheme credential` -> `Scheme <placeholder>`; the credential is fingerprinted trimmed, so that it
    /// matches the token as issued.
    fn credentials(&self, value: &str) -> String {
        let value_trimmed = value.trim_start_matches(is_ows);
        match value_trimmed.split_once(is_ows) {
            Some((scheme, credential)) => {
                let credential = credential.trim_matches(is_ows);
                if credential.is_empty() {
                    // Nothing after the scheme: nothing to hide.
                    value.to_owned()
                } else {
                    format!("{scheme} {}", self.placeholder(credential))
                }
            }
            None if value_trimmed.is_empty() => value.to_owned(),
            None => self.placeholder(value_trimmed),
        }
    }

    /// `name=value` with the value redacted; a pair without '=' is all value (as browsers read it).
    fn cookie_pair(&self, pair: &str) -> String {
        match pair.split_once('=') {
            Some((name, value)) => format!("{name}={}", self.cookie_value(value)),
            None => self.cookie_value(pair),
        }
    }

    /// Redacts a cookie value, keeping surrounding whitespace and DQUOTEs so the recorded header keeps its shape.
    fn cookie_value(&self, value: &str) -> String {
        let start = value.len() - value.trim_start_matches(is_ows).len();
        let end = value.trim_end_matches(is_ows).len().max(start);
        let (head, inner, tail) = (&value[..start], &value[start..end], &value[end..]);
        let (open, secret, close) = match inner
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(unquoted) => ("\"", unquoted, "\""),
            None => ("", inner, ""),
        };
        if secret.is_empty() {
            return value.to_owned();
        }
        format!("{head}{open}{}{close}{tail}", self.placeholder(secret))
    }

    /// A `Link` header: each `<URI-reference>` goes through `target`; parameters stay as they are.
    fn link(&self, value: &str) -> String {
        if !value.contains('<') {
            return self.target(value);
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let (before, after) = rest.split_at(open + 1);
            out.push_str(before);
            match after.find('>') {
                Some(close) => {
                    out.push_str(&self.target(&after[..close]));
                    rest = &after[close..];
                }
                None => {
                    out.push_str(&self.target(after));
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The part of a URL before or after '#': its query (after '?'), or all of it when it is a bare query.
    fn url_part(&self, part: &str) -> String {
        if let Some((before, query)) = part.split_once('?') {
            format!("{}?{}", self.path_params(before), self.pairs(query))
        } else if part.starts_with('/') || has_scheme(part) {
            self.path_params(part)
        } else {
            self.pairs(part)
        }
    }

    /// A path's matrix parameters (`/p;access_token=…`, RFC 3986 §3.3): each segment's
    /// `;k=v` redacted as a query's pairs are.
    fn path_params(&self, path: &str) -> String {
        if !path.contains(';') {
            return path.to_owned();
        }
        path.split('/')
            .map(|segment| match segment.split_once(';') {
                Some((name, params)) => format!("{name};{}", self.pairs(params)),
                None => segment.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// `k=v&k=v` with the values of secret keys redacted; separators and every other byte kept.
    fn pairs(&self, query: &str) -> String {
        let mut out = String::with_capacity(query.len());
        let mut rest = query;
        // `&`, and `;` as older forms and some servers separate pairs.
        while !rest.is_empty() || out.is_empty() {
            let (pair, separator, after) = match rest.find(['&', ';']) {
                Some(at) => (&rest[..at], &rest[at..at + 1], &rest[at + 1..]),
                None => (rest, "", ""),
            };
            self.pair(pair, &mut out);
            out.push_str(separator);
            rest = after;
            if separator.is_empty() {
                break;
            }
        }
        out
    }

    /// One `k=v`, its value redacted when `k` names a secret.
    fn pair(&self, pair: &str, out: &mut String) {
        {
            match (
                pair.split_once('='),
                form_urlencoded::parse(pair.as_bytes()).next(),
            ) {
                (Some((raw_key, raw_value)), Some((key, value)))
                    if !raw_value.is_empty() && is_secret_key(&key) =>
                {
                    out.push_str(raw_key);
                    out.push('=');
                    out.push_str(&self.placeholder(&value));
                }
                _ => out.push_str(pair),
            }
        }
    }
}

/// A secret value found by the JSON scanner: byte range of its raw contents and its decoded text.
struct Hit {
    start: usize,
    end: usize,
    secret: String,
    /// The raw value is not a string: the placeholder goes in quotes.
    quote: bool,
}

/// Finds the string values of secret keys in `text`.
///
/// Every unescaped '"' is taken as the start of a candidate string, which ends at the next one. Trying
/// both readings of each quote (opening or closing) costs nothing in valid JSON, where text between
/// strings is punctuation and never a key, and resynchronises after an unbalanced quote in prose or a
/// fragment that starts inside a string. A candidate followed by `:` and a string is a key/value pair.
fn scan_json(text: &str, depth: u8, hits: &mut Vec<Hit>) {
    let bytes = text.as_bytes();
    let Some(mut open) = next_quote(bytes, 0) else {
        scan_embedded(text, 0, bytes.len(), depth, hits);
        return;
    };
    scan_embedded(text, 0, open, depth, hits);
    loop {
        let Some(close) = next_quote(bytes, open + 1) else {
            scan_embedded(text, open + 1, bytes.len(), depth, hits);
            return;
        };
        let raw_key = &text[open + 1..close];
        // A secret key with a number, object or array for its value (`"password": 12345678`):
        // the whole value goes, as a string. Not `code`, whose numbers are error codes
        // (JSON-RPC's -32600), and never true, false or null, which hold nothing.
        if let Some(start) = other_value_after(bytes, close) {
            if raw_key.len() <= MAX_RAW_KEY
                && !raw_key.eq_ignore_ascii_case("code")
                && is_secret_raw_key(raw_key)
            {
                if let Some(end) = other_value_end(bytes, start) {
                    hits.push(Hit {
                        start,
                        end,
                        secret: text[start..end].to_string(),
                        quote: true,
                    });
                    match next_quote(bytes, end) {
                        Some(next) => {
                            open = next;
                            continue;
                        }
                        None => return,
                    }
                }
            }
        }
        if let Some(value_quote) = value_quote_after(bytes, close) {
            if raw_key.len() <= MAX_RAW_KEY && is_secret_raw_key(raw_key) {
                let value_end = next_quote(bytes, value_quote + 1);
                let stop = value_end.unwrap_or(bytes.len());
                let secret = json_unescape(&text[value_quote + 1..stop], None);
                if !secret.is_empty() {
                    hits.push(Hit {
                        start: value_quote + 1,
                        end: stop,
                        secret,
                        quote: false,
                    });
                }
                match value_end {
                    Some(end) => {
                        open = end;
                        continue;
                    }
                    None => return,
                }
            }
        }
        scan_embedded(text, open + 1, close, depth, hits);
        open = close;
    }
}

/// Looks for JSON escaped inside the string contents `text[start..end]`, mapping hits back to raw offsets.
fn scan_embedded(text: &str, start: usize, end: usize, depth: u8, hits: &mut Vec<Hit>) {
    let Some(raw) = text.get(start..end) else {
        return;
    };
    // Every '"' inside a segment is escaped, so a '"' here means escaped JSON may be inside.
    if depth >= MAX_EMBED_DEPTH || !raw.as_bytes().contains(&b'"') {
        return;
    }
    let mut map = Vec::with_capacity(raw.len() + 1);
    let decoded = json_unescape(raw, Some(&mut map));
    let mut inner = Vec::new();
    scan_json(&decoded, depth + 1, &mut inner);
    for hit in inner {
        if let (Some(&s), Some(&e)) = (map.get(hit.start), map.get(hit.end)) {
            hits.push(Hit {
                start: start + s,
                end: start + e,
                secret: hit.secret,
                quote: hit.quote,
            });
        }
    }
}

/// Whether `scan_json` could find anything in `text`: one pass that rules out most bodies, which
/// would otherwise have every escaped string decoded and scanned again.
///
/// Without a `\u` escape, every letter of a key, at any embedding depth, is the same letter in the
/// raw text, and the quote before the key ends in a raw `"` (`"`, `\"`, `\\\"`…), so a secret key
/// shows as `"key` followed by the closing quote's first byte (`"` or `\`).
fn may_hold_secret(text: &[u8]) -> bool {
    // Bodies are dense with quotes: walking the matches of each word costs a few instructions
    // per quote, where a memchr call per quote cost fifty.
    let mut at = 0;
    while let Some(chunk) = text.get(at..at + 16) {
        let mut mask = swar::quote_or_backslash16(chunk.try_into().expect("sixteen bytes"));
        while mask != 0 {
            if may_open_secret(text, at + mask.trailing_zeros() as usize) {
                return true;
            }
            mask &= mask - 1;
        }
        at += 16;
    }
    (at..text.len()).any(|i| may_open_secret(text, i))
}

/// Whether the byte at `at` is a `\u` escape, or a quote that opens a secret key.
#[inline]
fn may_open_secret(text: &[u8], at: usize) -> bool {
    match text[at] {
        b'\\' => matches!(text.get(at + 1), Some(b'u' | b'U')),
        b'"' => opens_secret_key(&text[at + 1..]),
        _ => false,
    }
}

/// Whether `rest` starts with a secret name (any case, any style) and then the byte that may
/// close its quote (`"`, or `\` for a quote escaped in embedded JSON).
fn opens_secret_key(rest: &[u8]) -> bool {
    // Names are short: one that runs on past 64 bytes is not looked at.
    let window = &rest[..rest.len().min(65)];
    match memchr::memchr2(b'"', b'\\', window) {
        // A key needs a letter of a secret word or name; most quotes open values, words, ids.
        Some(end) if end > 0 => is_secret_name(&rest[..end]),
        _ => false,
    }
}

/// The next '"' at or after `from` that is not escaped by a backslash (`from` is never inside an escape).
fn next_quote(bytes: &[u8], from: usize) -> Option<usize> {
    // memchr2 skips the long runs between quotes and escapes (string contents) a word at a time.
    let mut at = from;
    loop {
        let found = at + memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[found] == b'"' {
            return Some(found);
        }
        // A backslash escapes the byte after it, whatever it is.
        at = found + 2;
    }
}

/// If the string closing at `close` is followed by `:` and then a string, the position of that string's '"'.
fn value_quote_after(bytes: &[u8], close: usize) -> Option<usize> {
    let mut i = skip_json_ws(bytes, close + 1);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    i = skip_json_ws(bytes, i + 1);
    (bytes.get(i) == Some(&b'"')).then_some(i)
}

/// If the string closing at `close` is followed by `:` and a value that is not a string, where
/// that value starts.
fn other_value_after(bytes: &[u8], close: usize) -> Option<usize> {
    let mut i = skip_json_ws(bytes, close + 1);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    i = skip_json_ws(bytes, i + 1);
    matches!(bytes.get(i), Some(b'-' | b'0'..=b'9' | b'{' | b'[')).then_some(i)
}

/// Where a number, object or array starting at `start` ends (the end of the text, if it is cut
/// off there); `None` for anything else.
fn other_value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    b'"' => match next_quote(bytes, i + 1) {
                        Some(end) => i = end,
                        None => return Some(bytes.len()),
                    },
                    _ => {}
                }
                i += 1;
            }
            Some(bytes.len())
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                .unwrap_or(bytes.len() - start);
            Some(start + len)
        }
    }
}

fn skip_json_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Decodes JSON string escapes leniently (a bad escape stays as written, a lone surrogate becomes U+FFFD).
/// With `map`, records for each decoded byte the raw offset of what produced it, plus `raw.len()` at the end.
fn json_unescape(raw: &str, mut map: Option<&mut Vec<usize>>) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let (ch, len) = if bytes[i] == b'\\' {
            match bytes.get(i + 1) {
                Some(b'"') => ('"', 2),
                Some(b'\\') => ('\\', 2),
                Some(b'/') => ('/', 2),
                Some(b'b') => ('\u{8}', 2),
                Some(b'f') => ('\u{c}', 2),
                Some(b'n') => ('\n', 2),
                Some(b'r') => ('\r', 2),
                Some(b't') => ('\t', 2),
                Some(b'u') => unicode_escape(bytes, i).unwrap_or(('\\', 1)),
                _ => ('\\', 1),
            }
        } else {
            // `i` only ever advances by whole chars or ASCII escapes, so it is a char boundary.
            match raw.get(i..).and_then(|rest| rest.chars().next()) {
                Some(c) => (c, c.len_utf8()),
                None => break,
            }
        };
        if let Some(map) = map.as_deref_mut() {
            map.extend(std::iter::repeat_n(i, ch.len_utf8()));
        }
        out.push(ch);
        i += len;
    }
    if let Some(map) = map {
        map.push(raw.len());
    }
    out
}

/// `\uXXXX` (or a `\uXXXX\uXXXX` surrogate pair) at `at`: the char and the escape's length.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<(char, usize)> {
    let high = hex4(bytes, at + 2)?;
    if (0xD800..0xDC00).contains(&high) {
        if bytes.get(at + 6) == Some(&b'\\') && bytes.get(at + 7) == Some(&b'u') {
            if let Some(low) = hex4(bytes, at + 8).filter(|l| (0xDC00..0xE000).contains(l)) {
                let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return Some((char::from_u32(code).unwrap_or('\u{FFFD}'), 12));
            }
        }
        return Some(('\u{FFFD}', 6));
    }
    Some((char::from_u32(high).unwrap_or('\u{FFFD}'), 6))
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)?
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + char::from(b).to_digit(16)?))
}

/// `is_secret_key` of a raw JSON key: decoded first only when it has an escape (almost no key does).
fn is_secret_raw_key(raw: &str) -> bool {
    if raw.as_bytes().contains(&b'\\') {
        is_secret_key(&json_unescape(raw, None))
    } else {
        is_secret_key(raw)
    }
}

/// Whether text reads as `k=v&k=v`: a name of URL-safe characters, then `=`, before any space,
/// quote or bracket.
fn looks_like_form(text: &str) -> bool {
    let name_end = text
        .find(|c: char| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%' | '[' | ']' | '+'))
        })
        .unwrap_or(text.len());
    name_end > 0 && text[name_end..].starts_with('=')
}

/// HTTP optional whitespace.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Whether `s` starts with `scheme:` (RFC 3986), i.e. is an absolute URL rather than a bare query.
fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// The redaction property, on any input: a secret planted in a body of any syntax, under a
/// secret name in any style, never survives. Used by the property test below and by the
/// `redact` fuzz target.
pub mod properties {
    use super::Redactor;

    /// Secret names in the styles clients write them.
    const NAMES: &[&str] = &[
        "access_token",
        "accessToken",
        "Access-Token",
        "refreshToken",
        "refresh_token",
        "client_secret",
        "clientSecret",
        "apiKey",
        "api_key",
        "API_KEY",
        "password",
        "db_password",
        "code",
        "code_verifier",
        "id_token",
        "token",
        "secret",
        "sessionToken",
        "private_key",
    ];

    /// Builds a body from `data` (name, syntax, secret, noise around it) and checks that the
    /// secret is gone from what would be recorded.
    pub fn planted_secret_never_survives(data: &[u8]) {
        let Some((&pick, rest)) = data.split_first() else {
            return;
        };
        let name = NAMES[usize::from(pick) % NAMES.len()];
        let syntax = usize::from(pick / 32);
        // The secret: URL-safe characters (as tokens are), long enough to be one.
        let secret: String = rest
            .iter()
            .take(32)
            .map(|b| {
                char::from(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
                        [usize::from(*b) % 66],
                )
            })
            .collect();
        if secret.len() < 12 {
            return;
        }
        let secret = format!("zz{secret}");
        let noise: String = rest
            .iter()
            .skip(32)
            .take(40)
            .map(|b| char::from(b"abcdefghij klmnop"[usize::from(*b) % 17]))
            .collect();
        let body = match syntax {
            0 => format!(r#"{{"note":"{noise}","{name}":"{secret}"}}"#),
            1 => format!(r#"{{"result":{{"content":[{{"text":"{{\"{name}\":\"{secret}\"}}"}}]}}}}"#),
            2 => format!("a=1&{name}={secret}&b={}", noise.replace(' ', "+")),
            3 => format!("a=1;{name}={secret}"),
            4 => format!(
                "--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{secret}\r\n--b--\r\n"
            ),
            5 => format!("{noise} {{\"{name}\": \"{secret}\"}}"),
            6 => format!(r#"[{{"{name}" : "{secret}"}}]"#),
            _ => format!("{name}={secret}"),
        };
        let r = Redactor::with_key([7; 32]);
        for form in [false, true] {
            let out = r.body_owned(form, body.clone());
            assert!(!out.contains(&secret), "{name} ({syntax}): {body} -> {out}");
        }
        let url = format!(
            "/p?{}",
            if syntax == 3 {
                format!("x=1;{name}={secret}")
            } else {
                format!("{name}={secret}")
            }
        );
        assert!(!r.target(&url).contains(&secret), "{url}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    fn r() -> Redactor {
        Redactor::with_key(KEY)
    }

    fn ph(secret: &str) -> String {
        r().placeholder(secret)
    }

    // ---- fingerprint, placeholder, construction ----

    #[test]
    fn fingerprint_is_8_lowercase_hex_and_stable() {
        let fp = r().fingerprint("abc");
        assert_eq!(fp.len(), 8);
        assert!(fp.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_eq!(fp, r().fingerprint("abc"));
        assert_ne!(fp, r().fingerprint("abd"));
        let full = blake3::keyed_hash(&KEY, b"abc").to_hex();
        assert_eq!(fp, &full.as_str()[..8]);
    }

    #[test]
    fn fingerprint_depends_on_key() {
        assert_ne!(
            Redactor::with_key([1; 32]).fingerprint("abc"),
            Redactor::with_key([2; 32]).fingerprint("abc")
        );
        // Fresh keys are random: two sessions cannot be correlated.
        assert_ne!(
            Redactor::new(true).fingerprint("abc"),
            Redactor::new(true).fingerprint("abc")
        );
    }

    #[test]
    fn placeholder_format_and_no_secret() {
        let secret = "s3cr3t-value";
        let p = ph(secret);
        assert_eq!(p, format!("<redacted fp={}>", r().fingerprint(secret)));
        assert!(!p.contains(secret));
    }

    #[test]
    fn enabled_flags() {
        assert!(Redactor::new(true).enabled());
        assert!(!Redactor::new(false).enabled());
        assert!(Redactor::with_key(KEY).enabled());
    }

    #[test]
    fn debug_hides_key() {
        let dbg = format!("{:?}", r());
        assert!(dbg.contains("Redactor") && dbg.contains("enabled: true"));
        assert!(!dbg.contains("key") && !dbg.contains('7'));
    }

    #[test]
    fn disabled_returns_input_unchanged() {
        let d = Redactor::new(false);
        assert_eq!(d.header_value("Authorization", "Bearer abc"), "Bearer abc");
        assert_eq!(d.header_value("Cookie", "a=1; b=2"), "a=1; b=2");
        assert_eq!(d.target("/cb?code=abc"), "/cb?code=abc");
        assert_eq!(d.form("code=abc"), "code=abc");
        assert_eq!(
            d.json_text(r#"{"access_token":"x"}"#),
            r#"{"access_token":"x"}"#
        );
        assert_eq!(
            d.body(Some("application/x-www-form-urlencoded"), "code=a"),
            "code=a"
        );
        assert_eq!(d.placeholder("abc"), "abc");
    }

    // ---- headers ----

    #[test]
    fn authorization_keeps_scheme() {
        assert_eq!(
            r().header_value("Authorization", "Bearer abc"),
            format!("Bearer {}", ph("abc"))
        );
        assert_eq!(
            r().header_value("PROXY-AUTHORIZATION", "Basic dXNlcjpwYXNz"),
            format!("Basic {}", ph("dXNlcjpwYXNz"))
        );
        // Extra whitespace does not change which secret is fingerprinted.
        assert_eq!(
            r().header_value("authorization", "Bearer   abc "),
            format!("Bearer {}", ph("abc"))
        );
    }

    #[test]
    fn authorization_without_space_redacted_whole() {
        assert_eq!(r().header_value("Authorization", "abc123"), ph("abc123"));
        assert_eq!(r().header_value("Authorization", ""), "");
        assert_eq!(r().header_value("Authorization", "Bearer "), "Bearer ");
    }

    #[test]
    fn cookie_each_value_redacted() {
        assert_eq!(
            r().header_value("Cookie", "a=1; b=2"),
            format!("a={}; b={}", ph("1"), ph("2"))
        );
        assert_eq!(
            r().header_value("cookie", "sid=\"q\"; flag"),
            format!("sid=\"{}\"; {}", ph("q"), ph("flag"))
        );
        assert_eq!(
            r().header_value("cookie", "a=; b=x;"),
            format!("a=; b={};", ph("x"))
        );
    }

    #[test]
    fn set_cookie_keeps_attributes() {
        assert_eq!(
            r().header_value("Set-Cookie", "sid=abc; Path=/; HttpOnly; Secure"),
            format!("sid={}; Path=/; HttpOnly; Secure", ph("abc"))
        );
        assert_eq!(
            r().header_value("set-cookie", "sid=a=b"),
            format!("sid={}", ph("a=b"))
        );
    }

    #[test]
    fn location_like_headers_use_target() {
        for name in ["Location", "content-location", "Referer"] {
            assert_eq!(
                r().header_value(name, "https://app/cb?code=abc&state=x"),
                format!("https://app/cb?code={}&state=x", ph("abc"))
            );
        }
    }

    #[test]
    fn link_header_urls_redacted() {
        let value = r#"<https://a/x?code=abc&p=1>; rel="next", </y?access_token=t>; rel=prev"#;
        assert_eq!(
            r().header_value("Link", value),
            format!(
                r#"<https://a/x?code={}&p=1>; rel="next", </y?access_token={}>; rel=prev"#,
                ph("abc"),
                ph("t")
            )
        );
        assert_eq!(
            r().header_value("link", "<https://a/?code=abc"),
            format!("<https://a/?code={}", ph("abc"))
        );
    }

    #[test]
    fn other_headers_unchanged() {
        for (name, value) in [
            ("Content-Type", "application/json"),
            ("X-Code", "code=abc"),
            (
                "WWW-Authenticate",
                r#"Bearer resource_metadata="https://a/?code=x""#,
            ),
        ] {
            assert_eq!(r().header_value(name, value), value);
        }
    }

    #[test]
    fn bearer_header_and_json_token_response_same_fp() {
        let token = "eyJhbGciOi.J9/x+y";
        let response =
            r#"{"access_token": "eyJhbGciOi.J9\/x+y", "token_type": "Bearer", "expires_in": 3600}"#;
        let redacted = r().json_text(response);
        let header = r().header_value("Authorization", &format!("Bearer {token}"));
        let fp = ph(token);
        assert!(redacted.contains(&fp), "{redacted}");
        assert!(header.contains(&fp));
        assert_eq!(
            redacted,
            format!(r#"{{"access_token": "{fp}", "token_type": "Bearer", "expires_in": 3600}}"#)
        );
    }

    #[test]
    fn code_in_location_and_form_same_fp() {
        let loc = r().header_value("Location", "https://app/cb?code=abc&state=x");
        let form =
            r().form("grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp%2Fcb");
        assert_eq!(loc, format!("https://app/cb?code={}&state=x", ph("abc")));
        assert_eq!(
            form,
            format!(
                "grant_type=authorization_code&code={}&redirect_uri=https%3A%2F%2Fapp%2Fcb",
                ph("abc")
            )
        );
    }

    // ---- target and form ----

    #[test]
    fn target_keeps_everything_but_secret_values() {
        assert_eq!(r().target("/mcp"), "/mcp");
        assert_eq!(r().target("https://a/b/c"), "https://a/b/c");
        assert_eq!(r().target("/x?a=%41b+c&b&=&c="), "/x?a=%41b+c&b&=&c=");
        assert_eq!(
            r().target(
                "/authorize?response_type=code&client_id=x%20y&code_challenge=abc&state=s#frag"
            ),
            "/authorize?response_type=code&client_id=x%20y&code_challenge=abc&state=s#frag"
        );
        assert_eq!(
            r().target("/cb?state=a%2Fb&CODE=abc&&x=1#top"),
            format!("/cb?state=a%2Fb&CODE={}&&x=1#top", ph("abc"))
        );
    }

    #[test]
    fn target_bare_query() {
        assert_eq!(
            r().target("code=abc&state=x"),
            format!("code={}&state=x", ph("abc"))
        );
        assert_eq!(
            r().target("?refresh_token=r1"),
            format!("?refresh_token={}", ph("r1"))
        );
        assert_eq!(
            r().target("redirect_uri=https://a/b&code=abc"),
            format!("redirect_uri=https://a/b&code={}", ph("abc"))
        );
    }

    #[test]
    fn target_fragment_parameters() {
        assert_eq!(
            r().target("https://app/cb#access_token=t1&token_type=bearer"),
            format!("https://app/cb#access_token={}&token_type=bearer", ph("t1"))
        );
        assert_eq!(
            r().target("/app#/route?code=abc"),
            format!("/app#/route?code={}", ph("abc"))
        );
    }

    #[test]
    fn percent_encoded_secret_fingerprints_decoded_value() {
        let out = r().target("/cb?code=a%2Bb+c%C3%A9");
        assert_eq!(out, format!("/cb?code={}", ph("a+b cé")));
        assert_eq!(
            r().form("code=a%2Bb+c%c3%a9"),
            format!("code={}", ph("a+b cé"))
        );
        // An encoded key name is still recognised.
        assert_eq!(
            r().form("access%5Ftoken=x&Password=p%20w"),
            format!("access%5Ftoken={}&Password={}", ph("x"), ph("p w"))
        );
    }

    #[test]
    fn form_non_secret_byte_exact() {
        let body = "grant_type=client_credentials&scope=a+b%20c&client_id=id&codes=x&xcode=y&code_challenge=z";
        assert_eq!(r().form(body), body);
        assert_eq!(r().form(""), "");
        assert_eq!(
            r().form("client_secret=s&password=p&device_code=d&code_verifier=v"),
            format!(
                "client_secret={}&password={}&device_code={}&code_verifier={}",
                ph("s"),
                ph("p"),
                ph("d"),
                ph("v")
            )
        );
    }

    // ---- JSON ----

    #[test]
    fn json_nested_and_whitespace() {
        let text = "{\"a\": [1, {\"b\": {\"refresh_token\" \n:\t \"r1\", \"x\": \"y\"}}], \"id_token\":\"i1\"}";
        assert_eq!(
            r().json_text(text),
            format!(
                "{{\"a\": [1, {{\"b\": {{\"refresh_token\" \n:\t \"{}\", \"x\": \"y\"}}}}], \"id_token\":\"{}\"}}",
                ph("r1"),
                ph("i1")
            )
        );
    }

    #[test]
    fn json_rpc_error_code_untouched() {
        let text =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code": -32600,"message":"Invalid Request"}}"#;
        assert_eq!(r().json_text(text), text);
    }

    #[test]
    fn json_string_code_redacted() {
        assert_eq!(
            r().json_text(r#"{"code": "abc"}"#),
            format!(r#"{{"code": "{}"}}"#, ph("abc"))
        );
    }

    #[test]
    fn json_values_that_hold_nothing_are_untouched() {
        let text =
            r#"{"access_token": null, "refresh_token": false, "code": -32600, "device_code": ""}"#;
        assert_eq!(r().json_text(text), text);
    }

    #[test]
    fn json_numbers_objects_and_arrays_of_secret_keys_go_whole() {
        assert_eq!(
            r().json_text(
                r#"{"password": 12345678, "id_token": ["a", "b"], "apiKey": {"v": "k"}, "n": 1}"#
            ),
            format!(
                r#"{{"password": "{}", "id_token": "{}", "apiKey": "{}", "n": 1}}"#,
                ph("12345678"),
                ph(r#"["a", "b"]"#),
                ph(r#"{"v": "k"}"#)
            )
        );
    }

    #[test]
    fn json_non_secret_keys_and_values_untouched() {
        let text = r#"{"token_type":"access_token","note":"code","codes":"x","Code_Challenge":"y","token_endpoint":"https://a/token","progressToken":"p1","keys":[{"kty":"RSA"}],"code_challenge_methods_supported":["S256"]}"#;
        assert_eq!(r().json_text(text), text);
    }

    #[test]
    fn the_folded_lists_are_the_lists_folded() {
        let folded: Vec<Vec<u8>> = SECRET_KEYS
            .iter()
            .map(|k| {
                let mut buf = [0u8; 64];
                let (n, held) = fold(k.as_bytes(), &mut buf);
                assert!(NEEDED.iter().any(|need| held & need == *need), "{k}");
                buf[..n].to_vec()
            })
            .collect();
        let listed: Vec<Vec<u8>> = FOLDED_SECRET_KEYS.iter().map(|k| k.to_vec()).collect();
        assert_eq!(folded, listed);
        for word in SECRET_WORDS {
            let mut buf = [0u8; 64];
            let (_, held) = fold(word.as_bytes(), &mut buf);
            assert!(NEEDED.iter().any(|need| held & need == *need), "{word}");
        }
    }

    #[test]
    fn secret_names_match_in_every_style() {
        for name in [
            "access_token",
            "accessToken",
            "AccessToken",
            "access-token",
            "ACCESS_TOKEN",
            "refreshToken",
            "clientSecret",
            "apiKey",
            "api_key",
            "x-api-key",
            "token",
            "secret",
            "sessionToken",
            "private_key",
            "db_password",
            "authToken",
        ] {
            assert!(is_secret_key(name), "{name}");
            let text = format!(r#"{{"{name}":"s3cr3t-value"}}"#);
            assert!(!r().json_text(&text).contains("s3cr3t-value"), "{name}");
            let form = format!("{name}=s3cr3t-value&x=1");
            assert!(!r().form(&form).contains("s3cr3t-value"), "{name}");
        }
        for name in [
            "token_type",
            "tokenType",
            "token_endpoint",
            "keys",
            "key_ops",
            "progressToken",
            "code_challenge",
            "grant_type",
            "expires_in",
        ] {
            assert!(!is_secret_key(name), "{name}");
        }
    }

    #[test]
    fn api_key_and_proof_headers_are_redacted_whole() {
        for name in [
            "Apikey",
            "X-Goog-Api-Key",
            "Private-Token",
            "X-Amz-Security-Token",
            "Ocp-Apim-Subscription-Key",
            "X-Vault-Token",
            "DPoP",
            "X-Api-Key",
            "X-Auth-Token",
        ] {
            let recorded = r().header_value(name, "s3cr3t-value");
            assert!(!recorded.contains("s3cr3t-value"), "{name}: {recorded}");
        }
        for name in [
            "Idempotency-Key",
            "Sec-WebSocket-Key",
            "Mcp-Session-Id",
            "WWW-Authenticate",
            "Content-Type",
        ] {
            assert_eq!(r().header_value(name, "v a l u e"), "v a l u e", "{name}");
        }
    }

    #[test]
    fn json_escaped_key_and_case() {
        assert_eq!(
            r().json_text(r#"{"access\u005ftoken":"t","ACCESS_TOKEN":"u"}"#),
            format!(
                r#"{{"access\u005ftoken":"{}","ACCESS_TOKEN":"{}"}}"#,
                ph("t"),
                ph("u")
            )
        );
    }

    #[test]
    fn json_escaped_value_fingerprints_decoded() {
        let out = r().json_text(r#"{"password":"a\"b\\c\/d\u00e9\ud83d\ude00\n"}"#);
        assert_eq!(out, format!(r#"{{"password":"{}"}}"#, ph("a\"b\\c/dé😀\n")));
    }

    #[test]
    fn json_truncated_and_unclosed() {
        assert_eq!(
            r().json_text(r#"{"access_token": "abc"#),
            format!(r#"{{"access_token": "{}"#, ph("abc"))
        );
        for text in [
            r#"{"access_token": "#,
            r#"{"access_token""#,
            r#"{"access_tok"#,
            r#"{"code":"#,
            "\"",
            "\\",
            "\"\\u12",
            "{\"a\":\"\\ud800\"}",
        ] {
            assert_eq!(r().json_text(text), text);
        }
    }

    #[test]
    fn json_in_non_json_text() {
        let sse = "event: message\ndata: {\"result\":{\"refresh_token\":\"r9\"}}\n\n";
        assert_eq!(
            r().json_text(sse),
            format!(
                "event: message\ndata: {{\"result\":{{\"refresh_token\":\"{}\"}}}}\n\n",
                ph("r9")
            )
        );
        // An unbalanced quote in prose does not hide the JSON after it.
        let prose = r#"He said "hi. {"access_token": "abc"}"#;
        assert_eq!(
            r().json_text(prose),
            format!(r#"He said "hi. {{"access_token": "{}"}}"#, ph("abc"))
        );
        assert_eq!(r().json_text("plain text, no json"), "plain text, no json");
    }

    #[test]
    fn json_fragment_starting_inside_a_string() {
        let text = r#"ab\"cd", "access_token": "xyz"}"#;
        assert_eq!(
            r().json_text(text),
            format!(r#"ab\"cd", "access_token": "{}"}}"#, ph("xyz"))
        );
    }

    #[test]
    fn json_escaped_inside_a_string() {
        let text =
            r#"{"content":[{"type":"text","text":"{\"access_token\": \"t\\\"1\", \"n\":2}"}]}"#;
        assert_eq!(
            r().json_text(text),
            format!(
                r#"{{"content":[{{"type":"text","text":"{{\"access_token\": \"{}\", \"n\":2}}"}}]}}"#,
                ph("t\"1")
            )
        );
    }

    #[test]
    fn quick_test_rules_out_bodies_without_secret_keys() {
        let tool_result = r#"{"result":{"content":[{"type":"text","text":"{\"codes\": [1], \"progressToken\": \"t\"}"}]},"_meta":{"progressToken":"p"}}"#;
        assert!(!may_hold_secret(tool_result.as_bytes()));
        // The quick test knows every secret key, in any case.
        for key in SECRET_KEYS {
            for spelled in [key.to_string(), key.to_ascii_uppercase()] {
                let text = format!(r#"{{"{spelled}":"x"}}"#);
                assert!(may_hold_secret(text.as_bytes()), "{text}");
            }
        }
        for text in [
            r#"{"code": -32600}"#,
            r#"{"text":"{\"Access_Token\":\"t\"}"}"#,
            r#"{"\u0063ode":"x"}"#,
        ] {
            assert!(may_hold_secret(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn body_goes_by_its_syntax_whatever_its_content_type() {
        let form = "code=abc";
        let redacted_form = format!("code={}", ph("abc"));
        assert_eq!(
            r().body(Some("application/x-www-form-urlencoded"), form),
            redacted_form
        );
        assert_eq!(
            r().body(
                Some("Application/X-WWW-Form-URLEncoded ; charset=UTF-8"),
                form
            ),
            redacted_form
        );
        // A form labelled JSON, or not labelled at all, is still a form.
        assert_eq!(r().body(Some("application/json"), form), redacted_form);
        assert_eq!(r().body(None, form), redacted_form);
        let json = r#"{"code":"abc"}"#;
        let redacted_json = format!(r#"{{"code":"{}"}}"#, ph("abc"));
        assert_eq!(r().body(Some("application/json"), json), redacted_json);
        assert_eq!(r().body(Some("text/event-stream"), json), redacted_json);
        assert_eq!(r().body(None, json), redacted_json);
        // JSON labelled a form (`curl -d`), and `;` between a form's pairs.
        assert_eq!(
            r().body(Some("application/x-www-form-urlencoded"), json),
            redacted_json
        );
        assert_eq!(
            r().body(None, "a=1;code=abc"),
            format!("a=1;code={}", ph("abc"))
        );
        // Prose with an `=` in it is not a form.
        let prose = "the answer is x = code";
        assert_eq!(r().body(None, prose), prose);
    }

    #[test]
    fn a_secret_seen_once_is_scrubbed_everywhere_in_every_spelling() {
        use base64::Engine as _;
        let r = r();
        let secret = "tok-1234567890abcdef";
        // Nothing is known yet.
        assert_eq!(r.scrub(&format!("id: {secret}")), None);
        let _ = r.json_text(&format!(r#"{{"access_token":"{secret}"}}"#));
        let fp = ph(secret);
        assert_eq!(
            r.scrub(&format!("id: {secret}")).unwrap(),
            format!("id: {fp}")
        );
        let encoded: String = form_urlencoded::byte_serialize(b"a b").collect();
        assert!(encoded.contains('+'));
        for lead in ["", "x", "xy"] {
            let payload = base64::engine::general_purpose::STANDARD
                .encode(format!("{lead}{{\"t\":\"{secret}\"}}"));
            let out = r
                .scrub(&payload)
                .unwrap_or_else(|| panic!("{lead:?}: {payload}"));
            let left = out.replace(&fp, "");
            // What is left of the payload no longer decodes to anything holding the secret.
            assert!(!left.contains("dG9rLTEyMzQ1Njc4OTBhYmNkZWY"), "{out}");
        }
        assert_eq!(r.scrub("nothing here at all"), None);
    }

    #[test]
    fn multipart_fields_and_path_parameters() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2-secret\r\n--XyZ--\r\n";
        let out = r().body(Some("multipart/form-data; boundary=XyZ"), body);
        assert!(!out.contains("hunter2-secret"), "{out}");
        assert!(
            out.contains("ann") && out.contains(&ph("hunter2-secret")),
            "{out}"
        );
        assert_eq!(
            r().target("/p;access_token=abc/q?x=1"),
            format!("/p;access_token={}/q?x=1", ph("abc"))
        );
    }

    // ---- property tests ----

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn a_planted_secret_never_survives(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            properties::planted_secret_never_survives(&data);
        }
    }

    /// Printable secrets, no surrounding whitespace (headers are trimmed), with characters that need
    /// JSON escaping or percent-encoding.
    const SECRET: &str = "[!-~é€😀][ -~é€😀\"\\\\%&=+#]{6,38}[!-~é€😀]";

    fn mixed_case(key: &str, mask: u64) -> String {
        key.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    fn json_escape(s: &str, escape_non_ascii: bool) -> String {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if escape_non_ascii => out.push_str("\\/"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if escape_non_ascii && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    fn percent_encode(s: &str, every_byte: bool) -> String {
        if every_byte {
            s.bytes().map(|b| format!("%{b:02X}")).collect()
        } else {
            form_urlencoded::byte_serialize(s.as_bytes()).collect()
        }
    }

    /// JSON with the secret key at the given depth; `slot` is the raw text between the value's quotes.
    fn json_doc(key: &str, slot: &str, levels: &[(bool, String)]) -> String {
        let mut doc = format!(
            "{{\"other\": \"code\", \"{key}\"{0}:{0}\"{slot}\", \"n\": -1}}",
            levels.first().map_or("", |l| l.1.as_str())
        );
        for (i, (is_array, ws)) in levels.iter().enumerate() {
            doc = if *is_array {
                format!("[{ws}1,{ws}\"s{i}\",{ws}{doc}{ws}]")
            } else {
                format!("{{{ws}\"k{i}\"{ws}:{ws}{doc},{ws}\"code\":{ws}{i}{ws}}}")
            };
        }
        doc
    }

    /// `next_quote` as it was first written, one byte at a time: the reference for the fast one.
    fn next_quote_bytewise(bytes: &[u8], from: usize) -> Option<usize> {
        let mut escaped = false;
        for (offset, &b) in bytes.get(from..)?.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                return Some(from + offset);
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn next_quote_finds_what_a_bytewise_scan_finds(
            text in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), Just(b'{')], 0..48),
            from in 0usize..52,
        ) {
            prop_assert_eq!(next_quote(&text, from), next_quote_bytewise(&text, from));
        }

        #[test]
        fn secrets_never_leak_and_fingerprints_match(
            secret in SECRET,
            key_index in 0..SECRET_KEYS.len(),
            mask in any::<u64>(),
            every_byte in any::<bool>(),
            escape_non_ascii in any::<bool>(),
            levels in prop::collection::vec((any::<bool>(), "[ \t\n\r]{0,3}"), 0..5),
        ) {
            let red = r();
            let p = red.placeholder(&secret);
            let key = mixed_case(SECRET_KEYS[key_index], mask);
            let enc = percent_encode(&secret, every_byte);
            let mut cases: Vec<(String, String)> = Vec::new();

            let header = red.header_value("Authorization", &format!("Bearer {secret}"));
            cases.push((header, format!("Bearer {p}")));

            let quoted = secret.starts_with('"') && secret.ends_with('"');
            if !secret.contains(';') && !quoted {
                cases.push((
                    red.header_value("Cookie", &format!("theme=dark; sid={secret}")),
                    format!("theme={}; sid={p}", red.placeholder("dark")),
                ));
                cases.push((
                    red.header_value("Set-Cookie", &format!("sid={secret}; Path=/; HttpOnly")),
                    format!("sid={p}; Path=/; HttpOnly"),
                ));
            }

            let url = |v: &str| format!("https://app.example/cb?state=s1&{key}={v}&iss=https%3A%2F%2Fas#top");
            cases.push((red.header_value("Location", &url(&enc)), url(&p)));
            cases.push((red.target(&url(&enc)), url(&p)));

            let form = |v: &str| format!("grant_type=authorization_code&{key}={v}&redirect_uri=https%3A%2F%2Fapp%2Fcb");
            cases.push((red.form(&form(&enc)), form(&p)));
            cases.push((red.body(Some("application/x-www-form-urlencoded; charset=utf-8"), &form(&enc)), form(&p)));

            let doc_in = json_doc(&key, &json_escape(&secret, escape_non_ascii), &levels);
            let doc_out = json_doc(&key, &p, &levels);
            cases.push((red.json_text(&doc_in), doc_out.clone()));
            // The same JSON quoted as a string inside another JSON document.
            let quoted_in = format!("{{\"text\":\"{}\"}}", json_escape(&doc_in, false));
            let quoted_out = format!("{{\"text\":\"{}\"}}", json_escape(&doc_out, false));
            cases.push((red.json_text(&quoted_in), quoted_out));

            for (got, want) in &cases {
                // Equal outputs everywhere imply one fingerprint for one secret across places.
                prop_assert_eq!(got, want);
                if !want.replace(&p, "").contains(&secret) {
                    prop_assert!(!got.contains(&secret), "secret leaked: {}", got);
                }
            }
        }

        /// The quick test never rules out a text in which the full scan finds a secret: keys
        /// spelled with escapes, quoted at one embedding depth or another, in noise.
        #[test]
        fn a_text_ruled_out_holds_no_secret(
            noise in proptest::collection::vec(prop_oneof![
                Just("\""), Just("\\\""), Just("\\"), Just("\\\\"), Just("\\u0063"),
                Just("u"), Just("code"), Just(":"), Just(" "), Just("x"), Just("{"), Just("é"),
            ], 0..6),
            depth in 0usize..3,
            quotes in proptest::collection::vec(0usize..2, 4),
            key in prop_oneof![
                Just("code"), Just("CoDe"), Just("\\u0063ode"), Just("cod\\u0065"), Just("\\\\u0063ode"),
                Just("\\u005cu0063ode"), Just("access_token"), Just("access\\u005Ftoken"), Just("odex"),
                Just("c\\/ode"),
            ],
            split in 0usize..6,
        ) {
            // Two spellings of a quote at each depth.
            const QUOTES: [[&str; 2]; 3] = [
                ["\"", "\""],
                ["\\\"", "\\u0022"],
                ["\\\\\\\"", "\\\\u0022"],
            ];
            let q = |i: usize| QUOTES[depth][quotes[i]];
            let split = split.min(noise.len());
            let text = format!(
                "{}{}{key}{}:{}v{}{}",
                noise[..split].concat(),
                q(0),
                q(1),
                q(2),
                q(3),
                noise[split..].concat(),
            );
            let mut hits = Vec::new();
            scan_json(&text, 0, &mut hits);
            if !may_hold_secret(text.as_bytes()) {
                prop_assert!(hits.is_empty(), "ruled out, yet a secret in {:?}", text);
            }
        }

        /// The writer's `None` for "recorded as it is" means exactly that.
        #[test]
        fn an_unchanged_target_is_the_same_text(
            text in prop_oneof![any::<String>(), "[/a-z:?#&=]{0,12}", "https?://[a-z]{1,4}/[a-z?#=&]{0,8}"],
        ) {
            let red = r();
            let target = red.target_redacted(&text).unwrap_or_else(|| text.clone());
            prop_assert_eq!(target, red.target(&text));
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let red = r();
            let json = red.json_text(&text);
            let _ = red.target(&text);
            let _ = red.form(&text);
            for name in ["authorization", "cookie", "set-cookie", "location", "link"] {
                let _ = red.header_value(name, &text);
            }
            let lower = text.to_ascii_lowercase();
            if !SECRET_KEYS.iter().any(|k| lower.contains(k)) && !lower.contains("\\u") {
                prop_assert_eq!(json, text);
            }
        }

        #[test]
        fn never_panics_on_json_like_text(text in "[\"\\\\:{}\\[\\], \nu0-9a-fdDcoe_?&=#%+<>;é😀]{0,64}") {
            let red = r();
            let _ = red.json_text(&text);
            let _ = red.target(&text);
            let _ = red.form(&text);
            let _ = red.header_value("link", &text);
            let _ = red.header_value("cookie", &text);
        }

        #[test]
        fn never_panics_near_secret_keys(
            prefix in "[\"\\\\: ]{0,4}",
            key_index in 0..SECRET_KEYS.len(),
            tail in "[\"\\\\:{}, u0-9a-f😀]{0,24}",
        ) {
            let text = format!("{prefix}\"{}\"{tail}", SECRET_KEYS[key_index]);
            let _ = r().json_text(&text);
            let sub = format!("{prefix}{}={tail}", SECRET_KEYS[key_index]);
            let _ = r().target(&sub);
            let _ = r().form(&sub);
        }
    }
}
