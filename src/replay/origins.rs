//! The origins a recorded client used (the proxy's public address), and rewriting them:
//! metadata, redirects and resource indicators name the origin the client saw, so a replay
//! against another server, or a mock on another port, must swap it for its own.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::capture::reader::Capture;

/// `scheme://host[:port]` for every host the recorded clients asked for (the `Host` header,
/// or the authority of an absolute target), in both schemes because a TLS terminator in
/// front of the proxy hides the one the client used, plus each route's listen address.
/// Longest first, so that replacing them one after the other never cuts one in half.
pub fn recorded_origins(capture: &Capture) -> Vec<String> {
    let mut hosts = BTreeSet::new();
    for x in &capture.exchanges {
        let host = x.request_header("host").map(str::to_string).or_else(|| {
            let t = &x.request.target;
            t.find("://").map(|i| {
                t[i + 3..]
                    .split(['/', '?'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        });
        if let Some(h) = host.map(|h| h.trim().to_ascii_lowercase()) {
            if !h.is_empty() {
                hosts.insert(h);
            }
        }
    }
    for route in &capture.session.routes {
        if let Ok(addr) = route.listen.parse::<std::net::SocketAddr>() {
            if !addr.ip().is_unspecified() {
                hosts.insert(addr.to_string());
            }
        }
    }
    let mut origins: Vec<String> = hosts
        .into_iter()
        .flat_map(|h| [format!("http://{h}"), format!("https://{h}")])
        .collect();
    origins.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    origins
}

/// Replaces every occurrence of the origin `from` in `text` by `to`, except where `from` is
/// followed by a character that continues a host or port (`http://h:80` never matches inside
/// `http://h:8080`, nor `http://h` inside `http://h.example`). Case-sensitive, as recorded.
pub fn replace_origin<'a>(text: &'a str, from: &str, to: &str) -> Cow<'a, str> {
    if from.is_empty() || from == to || !text.contains(from) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let continues = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '@'));
        out.push_str(&rest[..i]);
        out.push_str(if continues { from } else { to });
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// [`replace_origin`] for each of `froms` in turn.
pub fn replace_origins(text: &str, froms: &[String], to: &str) -> String {
    let mut out = text.to_string();
    for from in froms {
        if let Cow::Owned(s) = replace_origin(&out, from, to) {
            out = s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_replaced_only_where_it_ends() {
        let text = r#"{"a":"http://h:80/mcp","b":"http://h:8080/x","c":"http://h:80"}"#;
        assert_eq!(
            replace_origin(text, "http://h:80", "http://n:1"),
            r#"{"a":"http://n:1/mcp","b":"http://h:8080/x","c":"http://n:1"}"#
        );
        assert_eq!(
            replace_origin("http://h.example/ http://h/", "http://h", "X"),
            "http://h.example/ X/"
        );
    }

    #[test]
    fn origins_come_from_host_headers_and_routes() {
        let session = r#"{"t":0,"ts":"2026-01-01T00:00:00.000000Z","kind":"session","v":1,"tool":"mcptap","tool_version":"0.1.0","session_id":"abcd1234","routes":[{"listen":"0.0.0.0:1","upstream":"http://127.0.0.1:2/"},{"listen":"127.0.0.1:9","upstream":"http://127.0.0.1:2/"}],"options":{"max_body":10,"on_full":"wait","preserve_host":false,"upstream_insecure":false,"upstream_timeout_s":null,"grace_s":5.0},"redaction":"fingerprint"}"#;
        let request = r#"{"t":5,"ts":"2026-01-01T00:00:00.000005Z","kind":"request","ex":1,"conn":1,"method":"GET","target":"/","version":"HTTP/1.1","headers":[["host","MCP.example.com"]],"upstream":""}"#;
        let cap = Capture::from_reader(format!("{session}\n{request}\n").as_bytes(), "t").unwrap();
        let origins = recorded_origins(&cap);
        assert!(origins.contains(&"https://mcp.example.com".to_string()));
        assert!(origins.contains(&"http://127.0.0.1:9".to_string()));
        assert!(!origins.iter().any(|o| o.contains("0.0.0.0")));
    }
}
