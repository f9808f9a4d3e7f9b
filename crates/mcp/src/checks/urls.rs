//! `url-reachable`: every URL the server tells a client to use, judged as a hosted connector
//! (running in a cloud, on the public internet) sees it: the challenge's `resource_metadata`,
//! the protected-resource metadata's `authorization_servers`, the authorization server's
//! endpoints, and redirects.

use std::net::IpAddr;

use serde_json::Value;

use super::{finding, Check, Finding, Severity};
use crate::session::{Role, Session};
use mcptap_capture::reader::Exchange;

const URL_REACHABLE: &str = "url-reachable";
const SPEC_URL_REACHABLE: &str = "RFC 9728 §3, §5.1; RFC 8414 §2; MCP Authorization §2.3 (discovery), §Communication Security (HTTPS)";

pub fn checks() -> Vec<Check> {
    vec![Check {
        id: URL_REACHABLE,
        spec: SPEC_URL_REACHABLE,
        run: url_reachable,
    }]
}

/// A URL the server told the client to use, and where it said so.
struct Told {
    url: String,
    /// `the challenge's resource_metadata`, `authorization_servers`, `token_endpoint`…
    what: String,
    ex: u64,
}

/// The URLs the server told the client, in the order it told them (first mention each).
fn told(session: &Session<'_>) -> Vec<Told> {
    let mut out: Vec<Told> = Vec::new();
    let mut add = |url: &str, what: &str, ex: u64| {
        if url.contains("://") && !out.iter().any(|t| t.url == url) {
            out.push(Told {
                url: url.to_string(),
                what: what.to_string(),
                ex,
            });
        }
    };
    for s in &session.steps {
        let x = s.x;
        for value in x.response_headers("www-authenticate") {
            for (name, url) in super::auth::challenge_params(value) {
                if name.eq_ignore_ascii_case("resource_metadata") {
                    add(&url, "the 401 challenge's resource_metadata", x.ex);
                }
            }
        }
        let doc = || x.response_body.json();
        match s.role {
            Role::ResourceMetadata => {
                if let Some(servers) = doc()
                    .and_then(|d| d.get("authorization_servers").cloned())
                    .and_then(|v| v.as_array().cloned())
                {
                    for server in servers.iter().filter_map(Value::as_str) {
                        add(
                            server,
                            "the resource metadata's authorization_servers",
                            x.ex,
                        );
                    }
                }
            }
            Role::AuthServerMetadata => {
                if let Some(doc) = doc() {
                    for field in [
                        "authorization_endpoint",
                        "token_endpoint",
                        "registration_endpoint",
                    ] {
                        if let Some(url) = doc.get(field).and_then(Value::as_str) {
                            add(url, &format!("the authorization server's {field}"), x.ex);
                        }
                    }
                }
            }
            _ => {}
        }
        // A redirect, except the authorization response's (it goes back to the client).
        if x.status().is_some_and(|c| (300..400).contains(&c)) && s.role != Role::Authorize {
            if let Some(location) = x.response_header("location") {
                add(
                    location,
                    &format!("the redirect of {} {}", x.method(), x.path()),
                    x.ex,
                );
            }
        }
    }
    out
}

/// `scheme://host[:port]` and the host of a URL.
fn origin(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    Some((
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase(),
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            authority.to_ascii_lowercase()
        ),
    ))
}

/// Where a host is, as a connector on the public internet sees it: `None` when public.
fn unreachable_host(host: &str) -> Option<&'static str> {
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("a loopback name");
    }
    if host.ends_with(".local") || host.ends_with(".internal") || host.ends_with(".lan") {
        return Some("a name only a local network resolves");
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Some("a loopback address"),
        Ok(IpAddr::V4(v4)) if v4.is_private() || v4.is_link_local() => Some("a private address"),
        Ok(IpAddr::V6(v6)) if (v6.segments()[0] & 0xfe00) == 0xfc00 => Some("a private address"),
        Ok(IpAddr::V6(v6)) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        Ok(ip) if ip.is_unspecified() => Some("the unspecified address"),
        _ => None,
    }
}

/// The origin the client reached the server at (its first request's Host, over TLS or not).
fn client_origin(session: &Session<'_>, x: &Exchange) -> Option<(String, String)> {
    let host = x.request_header("host")?.trim().to_ascii_lowercase();
    let tls = session
        .capture
        .connections
        .get(&x.conn)
        .is_some_and(|c| c.open.tls.is_some());
    let scheme = if tls { "https" } else { "http" };
    let name = origin(&format!("{scheme}://{host}"))?.1;
    Some((format!("{scheme}://{host}"), name))
}

fn url_reachable(session: &Session<'_>) -> Vec<Finding> {
    let Some(first) = session.steps.first() else {
        return Vec::new();
    };
    let Some((client_origin, client_host)) = client_origin(session, first.x) else {
        return Vec::new();
    };
    // A client testing on its own machine reaches loopback and private addresses too.
    let public = unreachable_host(&client_host).is_none();
    let mut out = Vec::new();
    for t in told(session) {
        let Some((scheme, host, url_origin)) = origin(&t.url) else {
            continue;
        };
        let mut problems: Vec<String> = Vec::new();
        let mut severity = Severity::Warning;
        if public {
            if let Some(place) = unreachable_host(&host) {
                problems.push(format!(
                    "it points at {place} ({host}), which a hosted connector cannot reach"
                ));
                severity = Severity::Error;
            } else if scheme == "http" {
                problems.push(
                    "it is plain http on a public origin (OAuth and MCP require https there)"
                        .to_string(),
                );
                severity = Severity::Error;
            }
        }
        // Fetched later, and how it went, when it is on an origin the proxy fronts.
        // By host and path: behind a TLS terminator the proxy itself hears plain http.
        let authority = |o: &str| o.split_once("://").map_or(o, |(_, a)| a).to_string();
        let fetched = session.steps.iter().find(|s| {
            s.x.ex > t.ex
                && client_origin_of(session, s.x)
                    .is_some_and(|o| authority(&o) == authority(&url_origin))
                && crate::session::url_path(&t.url) == s.x.path()
        });
        match fetched {
            Some(s) if s.x.status().is_none_or(|c| c >= 400) => problems.push(format!(
                "the client fetched it at #{} and it failed: {}",
                s.x.ex,
                session.refusal_of(s.x.ex)
            )),
            Some(_) => {}
            // Only a discovery URL must be fetched next; an endpoint may simply not be
            // reached yet.
            None if authority(&url_origin) == authority(&client_origin)
                && problems.is_empty()
                && t.what.contains("resource_metadata")
                && session.silence.is_some() =>
            {
                problems.push("the client never fetched it".to_string())
            }
            None => {}
        }
        if problems.is_empty() {
            continue;
        }
        out.push(finding(
            URL_REACHABLE,
            SPEC_URL_REACHABLE,
            severity,
            Some(t.ex),
            format!("{} is {}: {}.", t.what, t.url, problems.join("; ")),
            vec![
                format!("url: {}", t.url),
                format!("the client used: {client_origin}"),
            ],
        ));
    }
    out
}

/// The origin a request was sent to, as the client wrote it.
fn client_origin_of(session: &Session<'_>, x: &Exchange) -> Option<String> {
    client_origin(session, x).map(|(o, _)| o)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn a_loopback_metadata_url_behind_a_public_name_is_an_error() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .h("host", "mcp.example.com")
                .status(401)
                .rh(
                    "www-authenticate",
                    r#"Bearer resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource""#,
                ),
        );
        let f = one(
            &cap.run(url_reachable),
            URL_REACHABLE,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("loopback address"), "{f:#?}");
    }

    #[test]
    fn local_testing_and_fetched_urls_are_fine_and_a_failed_fetch_is_named() {
        // On one's own machine loopback is reachable.
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).status(401).rh(
            "www-authenticate",
            r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource""#,
        ))
        .add(
            Ex::new(2, SEC, "GET", "/.well-known/oauth-protected-resource")
                .h("host", "127.0.0.1:1")
                .json(r#"{"resource":"http://127.0.0.1:1/mcp","authorization_servers":["http://127.0.0.1:1"]}"#),
        );
        assert!(
            cap.run(url_reachable).is_empty(),
            "{:#?}",
            cap.run(url_reachable)
        );
        // The same metadata URL answered 404.
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).status(401).rh(
            "www-authenticate",
            r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp""#,
        ))
        .add(
            Ex::new(2, SEC, "GET", "/.well-known/oauth-protected-resource/mcp")
                .h("host", "127.0.0.1:1")
                .answer(404, "text/plain", "Not Found"),
        );
        let f = one(
            &cap.run(url_reachable),
            URL_REACHABLE,
            Severity::Warning,
            Some(1),
        );
        assert!(
            f.message.contains("fetched it at #2 and it failed"),
            "{f:#?}"
        );
    }

    #[test]
    fn a_private_authorization_server_is_named() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "GET", "/.well-known/oauth-protected-resource")
                .h("host", "mcp.example.com")
                .json(r#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://10.0.3.7:8443"]}"#),
        );
        let f = one(
            &cap.run(url_reachable),
            URL_REACHABLE,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("private address"), "{f:#?}");
    }
}
