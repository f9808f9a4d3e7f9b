//! Header rules of a forwarding proxy, one function per rule.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

use mcptap_capture::model::Headers;

/// Fields that are hop-by-hop whether or not `Connection` names them
/// (RFC 9110 §7.6.1; `Proxy-Connection` and `Keep-Alive` are the legacy ones).
/// Typed names: removing by `&str` parses the name again on every exchange.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
];

/// The same fields by name, for code that reads raw header lines (the HTTP/1.1 fast path).
pub const HOP_BY_HOP_NAMES: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// RFC 9110 §7.6.1: remove `Connection`, every field it names (all `Connection` lines,
/// comma lists), and the fixed hop-by-hop set. For an upgrade (RFC 9110 §7.8) the
/// `Upgrade` field is kept and `Connection: upgrade` restored so the next hop sees it.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a request asks to switch protocols (RFC 9110 §7.8): an `Upgrade` field named by `Connection`.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The de-facto `X-Forwarded-For`/`-Proto`/`-Host` fields: the client address is appended
/// to any list already present, so the upstream sees the whole chain.
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: &str, proto: &str, host: Option<&str>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let chain = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {client_ip}"),
        _ => client_ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
    );
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// Headers as recorded: names lowercased, each name at its first appearance with all its
/// values in arrival order (duplicates kept),
/// non-UTF-8 values decoded lossily.
pub fn to_record(headers: &HeaderMap) -> Headers {
    let bytes = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let mut record = Headers::with_capacity(headers.len(), bytes);
    for (name, value) in headers {
        record.push(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn both_hop_by_hop_lists_name_the_same_fields() {
        let typed = HOP_BY_HOP;
        let names: Vec<&str> = typed.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, HOP_BY_HOP_NAMES);
    }

    #[test]
    fn connection_named_fields_are_removed_from_every_line() {
        let mut h = map(&[
            ("connection", "keep-alive, x-a"),
            ("connection", "X-B"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-c"]);
    }

    #[test]
    fn set_cookie_lines_are_kept_whole() {
        let mut h = map(&[("set-cookie", "a=1, b"), ("set-cookie", "c=2")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn recorded_fields_keep_repeats_and_decode_lossily() {
        let mut h = map(&[("accept", "a"), ("x-b", "b"), ("accept", "c")]);
        h.append("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let got = to_record(&h);
        assert!(got.iter().eq([
            ("accept", "a"),
            ("accept", "c"),
            ("x-b", "b"),
            ("x-raw", "caf\u{fffd}"),
        ]));
    }

    #[test]
    fn forwarded_for_appends_to_a_chain() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        add_forwarded(&mut h, "127.0.0.1", "http", Some("mcp.example.com"));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "mcp.example.com");
    }
}
