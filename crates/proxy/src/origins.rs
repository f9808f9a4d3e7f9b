//! `--rewrite-origins`: find whole origins (RFC 6454 `scheme://host[:port]`) in header values
//! and bodies and swap them for others, the way nginx's `proxy_redirect` and `sub_filter` do,
//! but exact: an origin is matched whole (never as a prefix of a longer host or port, never
//! as the user part of another URL), in the spellings it takes in HTTP messages — plain, with
//! JSON's `\/` escapes, and percent-encoded (RFC 3986 §2.1) in query strings and form bodies —
//! and written back in the same spelling.

/// An origin: lowercase scheme and host, and the port (explicit or the scheme's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// An origin from a scheme and an authority (`host`, `host:port`, `[v6]:port`). `None` for
    /// a scheme other than http/https, an authority with user info, or characters that are
    /// not allowed in a host name or address.
    pub fn new(scheme: &str, authority: &str) -> Option<Origin> {
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority: http::uri::Authority = authority.parse().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_:[]".contains(c);
        if host.is_empty() || !host.chars().all(allowed) {
            return None;
        }
        Some(Origin {
            scheme,
            host,
            port: authority.port_u16().unwrap_or(default),
        })
    }

    /// The origin of a URL (`http://127.0.0.1:8000/base` → `http://127.0.0.1:8000`).
    pub fn of_uri(uri: &http::Uri) -> Option<Origin> {
        Origin::new(uri.scheme_str()?, uri.authority()?.as_str())
    }

    /// The same host and scheme on another port.
    pub fn with_port(&self, port: u16) -> Origin {
        Origin {
            port,
            ..self.clone()
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn default_port(&self) -> bool {
        matches!(
            (self.scheme.as_str(), self.port),
            ("http", 80) | ("https", 443)
        )
    }

    /// The ways a message may name this origin: with its port, and also without when the port
    /// is the scheme's default.
    fn spellings(&self) -> Vec<String> {
        let explicit = format!("{}://{}:{}", self.scheme, self.host, self.port);
        if self.default_port() {
            vec![explicit, format!("{}://{}", self.scheme, self.host)]
        } else {
            vec![explicit]
        }
    }
}

/// The canonical spelling: the port left out when it is the scheme's default.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.default_port() {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// How an origin is written where it was found.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Spelling {
    /// `http://host:port`
    Plain,
    /// `http:\/\/host:port`, JSON with escaped solidus (RFC 8259 §7).
    JsonEscaped,
    /// `http%3A%2F%2Fhost%3Aport`, percent-encoded (RFC 3986 §2.1), hex in either case.
    Percent,
}

impl Spelling {
    const ALL: [Spelling; 3] = [Spelling::Plain, Spelling::JsonEscaped, Spelling::Percent];

    fn write(self, origin: &str) -> String {
        match self {
            Spelling::Plain => origin.to_string(),
            Spelling::JsonEscaped => origin.replace('/', "\\/"),
            Spelling::Percent => percent_encode(origin),
        }
    }
}

/// Every byte but RFC 3986 unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One pattern: a spelling of a `from` origin, and what replaces it.
#[derive(Debug, Clone)]
struct Pattern {
    find: Vec<u8>,
    replace: Vec<u8>,
}

/// A set of origin swaps, applied in one pass (so a replacement is never rewritten again).
#[derive(Debug, Clone, Default)]
pub struct OriginMap {
    /// Longest first: where two patterns match at one place, the longer (explicit port) wins.
    patterns: Vec<Pattern>,
}

impl OriginMap {
    /// Swaps each `from` for its `to`. When two pairs share a `from`, the first wins.
    pub fn new(pairs: impl IntoIterator<Item = (Origin, Origin)>) -> OriginMap {
        let mut patterns: Vec<Pattern> = Vec::new();
        for (from, to) in pairs {
            if from == to {
                continue;
            }
            let to = to.to_string();
            for spelled in from.spellings() {
                for spelling in Spelling::ALL {
                    let find = spelling.write(&spelled).into_bytes();
                    if patterns.iter().any(|p| p.find.eq_ignore_ascii_case(&find)) {
                        continue;
                    }
                    patterns.push(Pattern {
                        find,
                        replace: spelling.write(&to).into_bytes(),
                    });
                }
            }
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.find.len()));
        OriginMap { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every whole origin swapped, and how many were; `None` when none was.
    pub fn rewrite(&self, text: &[u8]) -> Option<(Vec<u8>, usize)> {
        if self.patterns.is_empty() {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        let mut copied = 0;
        let mut count = 0;
        let mut i = 0;
        while i < text.len() {
            // Every spelling starts with the scheme's `h`.
            if !text[i].eq_ignore_ascii_case(&b'h') || !starts_whole(text, i) {
                i += 1;
                continue;
            }
            let hit = self.patterns.iter().find(|p| {
                text.len() - i >= p.find.len()
                    && text[i..i + p.find.len()].eq_ignore_ascii_case(&p.find)
                    && ends_whole(text, i + p.find.len())
            });
            match hit {
                Some(p) => {
                    out.extend_from_slice(&text[copied..i]);
                    out.extend_from_slice(&p.replace);
                    i += p.find.len();
                    copied = i;
                    count += 1;
                }
                None => i += 1,
            }
        }
        if count == 0 {
            return None;
        }
        out.extend_from_slice(&text[copied..]);
        Some((out, count))
    }

    /// [`OriginMap::rewrite`] for text (header values, request targets).
    pub fn rewrite_str(&self, text: &str) -> Option<(String, usize)> {
        let (bytes, n) = self.rewrite(text.as_bytes())?;
        // Only ASCII was swapped for ASCII at ASCII boundaries: still UTF-8.
        String::from_utf8(bytes).ok().map(|s| (s, n))
    }
}

/// The character before `at`, percent-decoded when it is written `%XX`.
fn char_before(text: &[u8], at: usize) -> Option<u8> {
    if at >= 3 && text[at - 3] == b'%' {
        if let Some(b) = hex_pair(text[at - 2], text[at - 1]) {
            return Some(b);
        }
    }
    at.checked_sub(1).map(|i| text[i])
}

/// The character at `at`, percent-decoded when it is written `%XX`.
fn char_at(text: &[u8], at: usize) -> Option<u8> {
    let b = *text.get(at)?;
    if b == b'%' && at + 2 < text.len() {
        if let Some(d) = hex_pair(text[at + 1], text[at + 2]) {
            return Some(d);
        }
    }
    Some(b)
}

fn hex_pair(a: u8, b: u8) -> Option<u8> {
    let v = |c: u8| (c as char).to_digit(16);
    Some((v(a)? * 16 + v(b)?) as u8)
}

/// Not inside a longer scheme (`xhttp://`, `git+http://`).
fn starts_whole(text: &[u8], at: usize) -> bool {
    !char_before(text, at).is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
}

/// Not followed by more host (`.example`, `-2`), more port digits, another port, or `@` (the
/// origin was user info and the URL goes elsewhere).
fn ends_whole(text: &[u8], at: usize) -> bool {
    !char_at(text, at).is_some_and(|c| c.is_ascii_alphanumeric() || b".-_:@".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        let uri: http::Uri = s.parse().unwrap();
        Origin::of_uri(&uri).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> OriginMap {
        OriginMap::new(pairs.iter().map(|(a, b)| (origin(a), origin(b))))
    }

    fn rewrite(m: &OriginMap, text: &str) -> (String, usize) {
        m.rewrite_str(text).unwrap_or((text.to_string(), 0))
    }

    const UP: &str = "http://127.0.0.1:8000";
    const PUB: &str = "https://mcp.example.com";

    #[test]
    fn plain_json_and_percent_spellings_are_swapped_in_kind() {
        let m = map(&[(UP, PUB)]);
        assert_eq!(
            rewrite(&m, r#"{"resource":"http://127.0.0.1:8000/mcp"}"#),
            (r#"{"resource":"https://mcp.example.com/mcp"}"#.into(), 1)
        );
        assert_eq!(
            rewrite(&m, r#"{"issuer":"http:\/\/127.0.0.1:8000\/"}"#),
            (r#"{"issuer":"https:\/\/mcp.example.com\/"}"#.into(), 1)
        );
        assert_eq!(
            rewrite(
                &m,
                "/authorize?redirect_uri=x&resource=http%3A%2F%2F127.0.0.1%3A8000%2Fmcp"
            ),
            (
                "/authorize?redirect_uri=x&resource=https%3A%2F%2Fmcp.example.com%2Fmcp".into(),
                1
            )
        );
        // Lowercase hex, as some encoders write it.
        assert_eq!(
            rewrite(&m, "resource=http%3a%2f%2f127.0.0.1%3a8000"),
            ("resource=https%3A%2F%2Fmcp.example.com".into(), 1)
        );
    }

    #[test]
    fn a_longer_host_or_port_is_another_origin() {
        let m = map(&[(UP, PUB)]);
        for other in [
            "http://127.0.0.1:80001/x",
            "http://127.0.0.1:8000.evil.example/x",
            "http://127.0.0.1:8000@evil.example/x",
            "http://127.0.0.1:8000-x",
            "https://127.0.0.1:8000/x",
            "xhttp://127.0.0.1:8000/x",
            "git+http://127.0.0.1:8000/x",
            "http%3A%2F%2F127.0.0.1%3A8000%2Eevil",
            "http%3A%2F%2F127.0.0.1%3A8000%40evil",
        ] {
            assert_eq!(m.rewrite_str(other), None, "{other}");
        }
        let m = map(&[("http://up.example", PUB)]);
        assert_eq!(m.rewrite_str("http://up.example.org/"), None);
        assert_eq!(m.rewrite_str("http://up.example:8080/"), None);
        assert_eq!(
            rewrite(&m, "<http://up.example/a>, <http://up.example:80/b>"),
            (
                "<https://mcp.example.com/a>, <https://mcp.example.com/b>".into(),
                2
            )
        );
    }

    #[test]
    fn ports_are_kept_unless_they_are_the_default() {
        let m = map(&[
            (UP, "http://127.0.0.1:9000"),
            ("http://127.0.0.1:8001", "http://127.0.0.1:443"),
        ]);
        assert_eq!(
            rewrite(
                &m,
                "http://127.0.0.1:8000 http://127.0.0.1:8001 http://127.0.0.1:8002"
            ),
            (
                "http://127.0.0.1:9000 http://127.0.0.1:443 http://127.0.0.1:8002".into(),
                2
            )
        );
        let m = map(&[(UP, "https://127.0.0.1:443")]);
        assert_eq!(
            rewrite(&m, "http://127.0.0.1:8000/"),
            ("https://127.0.0.1/".into(), 1)
        );
    }

    #[test]
    fn case_is_ignored_in_scheme_and_host_and_replacements_are_not_rewritten_again() {
        let m = map(&[
            ("http://up.example:8000", "http://down.example:9000"),
            ("http://down.example:9000", "http://up.example:8000"),
        ]);
        assert_eq!(
            rewrite(&m, "HTTP://Up.Example:8000/a http://down.example:9000/b"),
            (
                "http://down.example:9000/a http://up.example:8000/b".into(),
                2
            )
        );
    }

    #[test]
    fn several_origins_in_one_body_and_at_the_edges() {
        let m = map(&[
            (UP, PUB),
            ("http://127.0.0.1:8100", "https://auth.example.com"),
        ]);
        let body = r#"http://127.0.0.1:8000{"a":["http://127.0.0.1:8100/token","http:\/\/127.0.0.1:8000"]}http://127.0.0.1:8100"#;
        assert_eq!(
            rewrite(&m, body),
            (
                r#"https://mcp.example.com{"a":["https://auth.example.com/token","https:\/\/mcp.example.com"]}https://auth.example.com"#.into(),
                4
            )
        );
        assert_eq!(m.rewrite_str("no origins here, just http and h"), None);
        assert_eq!(m.rewrite_str("http://127.0.0.1:800"), None);
    }

    #[test]
    fn form_bodies_are_rewritten_field_by_field() {
        // The public origin back to the upstream's, as in a token request.
        let m = map(&[(PUB, UP)]);
        let form = "grant_type=authorization_code&code=a%2Bb&redirect_uri=https%3A%2F%2Fmcp.example.com%2Fcb&resource=https%3A%2F%2Fmcp.example.com%2Fmcp&note=https%3A%2F%2Fmcp.example.com.evil%2F";
        let (out, n) = rewrite(&m, form);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            "grant_type=authorization_code&code=a%2Bb&redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fcb&resource=http%3A%2F%2F127.0.0.1%3A8000%2Fmcp&note=https%3A%2F%2Fmcp.example.com.evil%2F"
        );
        let decoded: Vec<(String, String)> = form_urlencoded::parse(out.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded[3].1, "http://127.0.0.1:8000/mcp");
    }

    #[test]
    fn ipv6_hosts_match_in_every_spelling() {
        let m = map(&[("http://[::1]:8000", PUB)]);
        assert_eq!(
            rewrite(
                &m,
                "http://[::1]:8000/x http%3A%2F%2F%5B%3A%3A1%5D%3A8000%2Fx"
            ),
            (
                "https://mcp.example.com/x https%3A%2F%2Fmcp.example.com%2Fx".into(),
                2
            )
        );
    }

    #[test]
    fn origins_refuse_what_is_not_a_host() {
        assert!(Origin::new("http", "u:p@host").is_none());
        assert!(Origin::new("ftp", "host").is_none());
        assert!(Origin::new("http", "host\"><script>").is_none());
        assert!(Origin::new("http", "").is_none());
        assert_eq!(
            Origin::new("HTTPS", "MCP.Example.com:443")
                .unwrap()
                .to_string(),
            "https://mcp.example.com"
        );
        assert_eq!(
            Origin::new("http", "127.0.0.1:0")
                .unwrap()
                .with_port(81)
                .to_string(),
            "http://127.0.0.1:81"
        );
    }
}
