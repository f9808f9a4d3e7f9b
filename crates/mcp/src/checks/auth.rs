//! Authorization checks: the 401 challenge, RFC 9728 protected-resource metadata, RFC 8414
//! authorization-server metadata, RFC 7591 registration, the authorize redirect with PKCE
//! (RFC 7636), the token exchange (RFC 6749, RFC 8707), and what became of the token.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{finding, Check, Finding, Severity};
use crate::session::{form_value, url_path, Role, Session, Step};
use mcptap_capture::reader::Exchange;

const CHALLENGE_SPEC: &str = "MCP Authorization (2025-06-18) §2.3.1; RFC 9728 §5.1";
const PRM_SPEC: &str = "RFC 9728 §3.2, §3.3";
const AS_SPEC: &str = "RFC 8414 §3.3";
const PKCE_SPEC: &str = "MCP Authorization §2.7 (PKCE); RFC 7636 §4.2";
const DCR_SPEC: &str = "RFC 7591 §3.2";
const AUTHZ_SPEC: &str = "RFC 6749 §4.1.1–§4.1.2; RFC 8707 §2; RFC 7636 §4.3";
const TOKEN_SPEC: &str = "RFC 6749 §4.1.3, §5.1, §5.2; RFC 8707 §2";
const ISS_SPEC: &str = "RFC 9207 §2, §2.4; MCP Authorization (2026-07-28) §Authorization Response";
const CIMD_SPEC: &str =
    "MCP Authorization (2026-07-28) §Client Registration (client ID metadata documents); draft-ietf-oauth-client-id-metadata-document";
const SILENCE_SPEC: &str = "MCP Authorization §2.6 (access token usage); RFC 6750 §2.1";

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: "challenge-present",
            spec: CHALLENGE_SPEC,
            run: challenge_present,
        },
        Check {
            id: "challenge-resource-metadata",
            spec: CHALLENGE_SPEC,
            run: challenge_resource_metadata,
        },
        Check {
            id: "challenge-scope",
            spec: "MCP Authorization (2025-11-25) scope selection; RFC 6750 §3",
            run: challenge_scope,
        },
        Check {
            id: "prm-fetch-ok",
            spec: PRM_SPEC,
            run: prm_fetch_ok,
        },
        Check {
            id: "prm-resource-match",
            spec: "RFC 9728 §3.3",
            run: prm_resource_match,
        },
        Check {
            id: "prm-authorization-servers",
            spec: "RFC 9728 §2; MCP Authorization §2.3.2",
            run: prm_authorization_servers,
        },
        Check {
            id: "as-issuer-match",
            spec: AS_SPEC,
            run: as_issuer_match,
        },
        Check {
            id: "as-pkce-s256",
            spec: PKCE_SPEC,
            run: as_pkce_s256,
        },
        Check {
            id: "as-public-client",
            spec: "MCP Authorization §2.4 (client registration); RFC 8414 §2",
            run: as_public_client,
        },
        Check {
            id: "dcr-response",
            spec: DCR_SPEC,
            run: dcr_response,
        },
        Check {
            id: "authorize-params",
            spec: AUTHZ_SPEC,
            run: authorize_params,
        },
        Check {
            id: "authorize-redirect",
            spec: "RFC 6749 §4.1.2, §10.12",
            run: authorize_redirect,
        },
        Check {
            id: "authorize-iss",
            spec: ISS_SPEC,
            run: authorize_iss,
        },
        Check {
            id: "client-id-metadata",
            spec: CIMD_SPEC,
            run: client_id_metadata,
        },
        Check {
            id: "token-request",
            spec: TOKEN_SPEC,
            run: token_request,
        },
        Check {
            id: "token-response",
            spec: TOKEN_SPEC,
            run: token_response,
        },
        Check {
            id: "post-token-silence",
            spec: SILENCE_SPEC,
            run: post_token_silence,
        },
        Check {
            id: "bearer-accepted",
            spec: "RFC 6750 §3.1; MCP Authorization §2.6",
            run: bearer_accepted,
        },
    ]
}

/// `POST /mcp #12`, the way findings name an exchange.
pub fn name(x: &Exchange) -> String {
    format!("{} {} #{}", x.method(), x.path(), x.ex)
}

fn requests_jsonrpc(s: &Step<'_>) -> bool {
    matches!(s.role, Role::Mcp | Role::LegacyMessages) || !s.sent.is_empty()
}

/// The `Bearer` challenge parameters of a WWW-Authenticate value (RFC 9110 §11.6.1),
/// names lowercased, values unquoted, in order (repeats kept). The value may hold several
/// challenges (`Basic realm="x", Bearer resource_metadata="…"`); the first Bearer one counts.
pub fn challenge_params(value: &str) -> Vec<(String, String)> {
    challenges(value)
        .into_iter()
        .find(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, params)| params)
        .unwrap_or_default()
}

/// Whether a WWW-Authenticate value holds a Bearer challenge.
pub fn has_bearer_challenge(value: &str) -> bool {
    challenges(value)
        .iter()
        .any(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

/// The challenges of a WWW-Authenticate value: `(scheme, params)` in order. A token68 is kept
/// as a parameter with an empty name.
fn challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for element in list_elements(value) {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        // `name=value` continues the current challenge; anything else starts a new one:
        // `scheme`, `scheme name=value` or `scheme token68`.
        let (head, rest) = match element.split_once(char::is_whitespace) {
            Some((head, rest)) if !head.contains('=') => (head, Some(rest.trim_start())),
            _ if !element.contains('=') => (element, None),
            _ => {
                if let Some((_, params)) = out.last_mut() {
                    params.push(param(element));
                }
                continue;
            }
        };
        let mut params = Vec::new();
        match rest {
            Some(rest) if is_token68(rest) => params.push((String::new(), rest.to_string())),
            Some(rest) => params.push(param(rest)),
            None => {}
        }
        out.push((head.to_string(), params));
    }
    out
}

/// `name=value` or `name="quoted \" value"`, the name lowercased.
fn param(element: &str) -> (String, String) {
    let (name, value) = element.split_once('=').unwrap_or((element, ""));
    let value = value.trim();
    let value = match value.strip_prefix('"') {
        Some(quoted) => {
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '"' => break,
                    c => out.push(c),
                }
            }
            out
        }
        None => value.to_string(),
    };
    (name.trim().to_ascii_lowercase(), value)
}

/// A token68 (RFC 9110 §11.2): `A-Z a-z 0-9 - . _ ~ + /` then `=` padding only.
fn is_token68(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
}

/// The comma-separated elements of a header value, commas inside quoted strings kept.
fn list_elements(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The origin a client used for a request: scheme (TLS, or X-Forwarded-Proto from a front
/// terminator) and the host it asked for.
pub fn client_origin(session: &Session<'_>, x: &Exchange) -> (String, String) {
    let tls = session
        .capture
        .connections
        .get(&x.conn)
        .is_some_and(|c| c.open.tls.is_some());
    let scheme = if tls {
        "https".to_string()
    } else {
        x.request_header("x-forwarded-proto")
            .map(|p| {
                p.split(',')
                    .next()
                    .unwrap_or("http")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "http".into())
    };
    let host = x
        .request_header("host")
        .map(str::to_string)
        .or_else(|| {
            let t = &x.request.target;
            t.find("://").map(|i| {
                let rest = &t[i + 3..];
                rest.split('/').next().unwrap_or("").to_string()
            })
        })
        .unwrap_or_default();
    (scheme, host)
}

/// `(scheme, host, path)` of an absolute URL; `None` for a relative one.
pub fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    Some((
        scheme.to_ascii_lowercase(),
        host.to_string(),
        path.to_string(),
    ))
}

fn challenge_present(session: &Session<'_>) -> Vec<Finding> {
    session
        .steps
        .iter()
        .filter(|s| requests_jsonrpc(s) && s.x.status() == Some(401))
        .filter(|s| s.x.response_header("www-authenticate").is_none())
        .take(1)
        .map(|s| {
            finding(
                "challenge-present",
                CHALLENGE_SPEC,
                Severity::Error,
                Some(s.x.ex),
                format!(
                    "{} was answered 401 without a WWW-Authenticate header: the client cannot discover where to authorize. Answer `WWW-Authenticate: Bearer resource_metadata=\"https://<host>/.well-known/oauth-protected-resource\"`.",
                    name(s.x)
                ),
                vec![format!("status: 401"), "www-authenticate: (absent)".into()],
            )
        })
        .collect()
}

fn challenge_resource_metadata(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session
        .steps
        .iter()
        .filter(|s| requests_jsonrpc(s) && s.x.status() == Some(401))
    {
        let values: Vec<&str> = s.x.response_headers("www-authenticate").collect();
        let Some(bearer) = values.iter().find(|v| has_bearer_challenge(v)) else {
            continue;
        };
        let params = challenge_params(bearer);
        let metas: Vec<&String> = params
            .iter()
            .filter(|(n, _)| n == "resource_metadata")
            .map(|(_, v)| v)
            .collect();
        let evidence = vec![format!("www-authenticate: {bearer}")];
        let (severity, message) = match metas.as_slice() {
            [] => (
                Severity::Warning,
                format!(
                    "{}: the 401 challenge names no resource_metadata URL; clients must then guess the well-known location. Add resource_metadata=\"<absolute URL of your protected-resource metadata>\".",
                    name(s.x)
                ),
            ),
            [one] if split_url(one).is_none() => (
                Severity::Error,
                format!(
                    "{}: resource_metadata=\"{one}\" is not an absolute URL; clients will not resolve it. Use the full https:// URL.",
                    name(s.x)
                ),
            ),
            [_] => continue,
            _ => (
                Severity::Error,
                format!(
                    "{}: the challenge carries resource_metadata {} times; send it once.",
                    name(s.x),
                    metas.len()
                ),
            ),
        };
        out.push(finding(
            "challenge-resource-metadata",
            CHALLENGE_SPEC,
            severity,
            Some(s.x.ex),
            message,
            evidence,
        ));
        break;
    }
    out
}

fn challenge_scope(session: &Session<'_>) -> Vec<Finding> {
    session
        .steps
        .iter()
        .filter(|s| requests_jsonrpc(s) && s.x.status() == Some(401))
        .filter_map(|s| {
            let value = s
                .x
                .response_headers("www-authenticate")
                .find(|v| has_bearer_challenge(v))?;
            let has_scope = challenge_params(value).iter().any(|(n, _)| n == "scope");
            (!has_scope).then(|| {
                finding(
                    "challenge-scope",
                    "MCP Authorization (2025-11-25) scope selection; RFC 6750 §3",
                    Severity::Info,
                    Some(s.x.ex),
                    format!(
                        "{}: the challenge names no scope; clients then fall back to scopes_supported or ask for none. Add scope=\"...\" with what the request needs.",
                        name(s.x)
                    ),
                    vec![format!("www-authenticate: {value}")],
                )
            })
        })
        .take(1)
        .collect()
}

fn is_json_type(x: &Exchange) -> bool {
    x.response_media_type()
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

fn prm_fetch_ok(session: &Session<'_>) -> Vec<Finding> {
    let fetches: Vec<&Step<'_>> = session.steps_with(Role::ResourceMetadata).collect();
    let good = |s: &&Step<'_>| {
        s.x.status() == Some(200) && is_json_type(s.x) && s.x.response_body.json().is_some()
    };
    let any_good = fetches.iter().any(good);
    // The metadata URLs the 401 challenges named: a client uses that URL and does not fall
    // back to the well-known ones (MCP Authorization, 2025-11-25 §Protected Resource Metadata
    // Discovery).
    let named: BTreeSet<String> = session
        .steps
        .iter()
        .filter(|s| requests_jsonrpc(s) && s.x.status() == Some(401))
        .flat_map(|s| s.x.response_headers("www-authenticate"))
        .flat_map(challenge_params)
        .filter(|(n, _)| n == "resource_metadata")
        .map(|(_, url)| url_path(&url))
        .collect();
    let mut out = Vec::new();
    for s in &fetches {
        if good(s) {
            continue;
        }
        let status = s.x.status();
        // A 404 on one well-known variant is fine when another variant answered, unless the
        // challenge named it.
        if any_good && status == Some(404) && !named.contains(s.x.path()) {
            continue;
        }
        let ct = s.x.response_header("content-type").unwrap_or("(none)");
        let why = match status {
            Some(401) | Some(403) => "is behind authentication: the metadata must be public (it is how a client learns to authorize)".to_string(),
            Some(404) if named.contains(s.x.path()) => "was not found, and it is the URL the 401 challenge names in resource_metadata: a client uses that URL and does not fall back to the well-known ones, so it stops here. Serve the metadata there, or name the URL that serves it".to_string(),
            Some(404) => "was not found: serve RFC 9728 metadata at this path".to_string(),
            Some(200) => format!("answered 200 but not with JSON (content-type {ct}): a framework fallback page or an SPA route answered instead"),
            Some(c) => format!("answered {c}"),
            None => "got no answer".to_string(),
        };
        out.push(finding(
            "prm-fetch-ok",
            PRM_SPEC,
            Severity::Error,
            Some(s.x.ex),
            format!("{} {why}.", name(s.x)),
            vec![
                format!(
                    "status: {}",
                    status.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
                ),
                format!("content-type: {ct}"),
                format!("body: {}", snippet(&s.x.response_body.text())),
            ],
        ));
    }
    out
}

pub use crate::session::snippet;

/// The MCP URL the client uses, as (origin host, path), and the exchange that shows it.
fn client_mcp_url<'s>(
    session: &'s Session<'_>,
    prm: &'s Exchange,
) -> Option<(String, String, String, &'s Exchange)> {
    let mcp = session
        .steps
        .iter()
        .find(|s| s.role == Role::Mcp)
        .map(|s| s.x);
    match mcp {
        Some(x) => {
            let (scheme, host) = client_origin(session, x);
            Some((scheme, host, x.path().to_string(), x))
        }
        None => {
            // No MCP request went through: a path-suffixed metadata URL still names the resource path.
            let suffix = prm
                .path()
                .strip_prefix("/.well-known/oauth-protected-resource")?;
            if suffix.is_empty() {
                return None;
            }
            let (scheme, host) = client_origin(session, prm);
            Some((scheme, host, suffix.to_string(), prm))
        }
    }
}

/// How a metadata `resource` differs from the URL the client used, in words; `None` when identical.
pub fn resource_mismatch(resource: &str, host: &str, path: &str) -> Option<String> {
    let Some((_, r_host, r_path)) = split_url(resource) else {
        return Some(format!("\"{resource}\" is not an absolute URL"));
    };
    let r_path_norm = if r_path.is_empty() {
        "/"
    } else {
        r_path.as_str()
    };
    let host_same = r_host == host;
    let path_same = r_path == path || (r_path.is_empty() && path == "/");
    if host_same && path_same {
        return None;
    }
    if !host_same {
        return Some(if r_host.eq_ignore_ascii_case(host) {
            format!("the host differs in case (\"{r_host}\" vs \"{host}\"); it must be identical")
        } else {
            format!("it names another host (\"{r_host}\", the client used \"{host}\")")
        });
    }
    Some(if r_path_norm == "/" && path != "/" {
        format!(
            "that is the base URL while the client uses {path}: the resource must be the MCP endpoint's URL itself (the case of a server that authorizes fine and then never gets a POST {path})"
        )
    } else if r_path == format!("{path}/") {
        format!("it has a trailing slash the client's URL ({path}) does not")
    } else if format!("{r_path}/") == path {
        format!("it lacks the trailing slash of the client's URL ({path})")
    } else if r_path.eq_ignore_ascii_case(path) {
        format!("the path differs in case (\"{r_path}\" vs \"{path}\")")
    } else if r_path == format!("{path}{path}") || r_path.ends_with(&format!("{path}{path}")) {
        format!("the path is doubled (\"{r_path}\")")
    } else {
        format!("the path \"{r_path}\" is not the client's {path}")
    })
}

fn prm_resource_match(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::ResourceMetadata) {
        if s.x.status() != Some(200) {
            continue;
        }
        let Some(doc) = s.x.response_body.json() else {
            continue;
        };
        let Some(resource) = doc.get("resource").and_then(Value::as_str) else {
            out.push(finding(
                "prm-resource-match",
                "RFC 9728 §3.3",
                Severity::Error,
                Some(s.x.ex),
                format!(
                    "{}: the metadata has no \"resource\" member, which RFC 9728 requires.",
                    name(s.x)
                ),
                vec![format!("body: {}", snippet(&s.x.response_body.text()))],
            ));
            continue;
        };
        let Some((scheme, host, path, used)) = client_mcp_url(session, s.x) else {
            continue;
        };
        if let Some(why) = resource_mismatch(resource, &host, &path) {
            out.push(finding(
                "prm-resource-match",
                "RFC 9728 §3.3",
                Severity::Error,
                Some(s.x.ex),
                format!(
                    "The protected-resource metadata names resource \"{resource}\", but {why}. RFC 9728 §3.3: the client MUST NOT use metadata whose resource is not identical to the URL it connects to, so it stops after authorizing. Set \"resource\" to \"{scheme}://{host}{path}\"."
                ),
                vec![
                    format!("{}: resource = {resource}", name(s.x)),
                    format!("{}: the client's URL = {scheme}://{host}{path}", name(used)),
                ],
            ));
        }
    }
    out
}

fn prm_authorization_servers(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::ResourceMetadata) {
        let Some(doc) =
            s.x.response_body
                .json()
                .filter(|_| s.x.status() == Some(200))
        else {
            continue;
        };
        let servers = doc.get("authorization_servers");
        let valid = servers.and_then(Value::as_array).is_some_and(|a| {
            !a.is_empty() && a.iter().all(|v| v.as_str().and_then(split_url).is_some())
        });
        if !valid {
            out.push(finding(
                "prm-authorization-servers",
                "RFC 9728 §2; MCP Authorization §2.3.2",
                Severity::Error,
                Some(s.x.ex),
                format!(
                    "{}: \"authorization_servers\" must be a non-empty array of absolute issuer URLs; without it the client cannot find where to authorize.",
                    name(s.x)
                ),
                vec![format!(
                    "authorization_servers = {}",
                    servers.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into())
                )],
            ));
        }
    }
    out
}

fn as_docs<'s>(session: &'s Session<'_>) -> impl Iterator<Item = (&'s Step<'s>, Value)> + 's {
    session
        .steps_with(Role::AuthServerMetadata)
        .filter(|s| s.x.status() == Some(200))
        .filter_map(|s| Some((s, s.x.response_body.json()?)))
}

fn as_issuer_match(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (s, doc) in as_docs(session) {
        let path = s.x.path();
        let suffix = path
            .strip_prefix("/.well-known/oauth-authorization-server")
            .or_else(|| path.strip_prefix("/.well-known/openid-configuration"))
            .map(str::to_string)
            .or_else(|| {
                path.strip_suffix("/.well-known/openid-configuration")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let (scheme, host) = client_origin(session, s.x);
        let expected = format!("{scheme}://{host}{suffix}");
        let issuer = doc.get("issuer").and_then(Value::as_str);
        // RFC 8414 §3.1: a terminating "/" of the issuer is dropped before the well-known
        // part is inserted, so "https://h/" and "https://h" fetch the same document.
        let ok = issuer.and_then(split_url).is_some_and(|(_, h, p)| {
            h.eq_ignore_ascii_case(&host) && p.trim_end_matches('/') == suffix.trim_end_matches('/')
        });
        if !ok {
            out.push(finding(
                "as-issuer-match",
                AS_SPEC,
                Severity::Error,
                Some(s.x.ex),
                format!(
                    "{}: the metadata's issuer {} is not the URL it was fetched from ({expected}); RFC 8414 §3.3 has clients reject it.",
                    name(s.x),
                    issuer.map(|i| format!("\"{i}\"")).unwrap_or_else(|| "(absent)".into())
                ),
                vec![
                    format!("issuer = {}", issuer.unwrap_or("(absent)")),
                    format!("fetched from {expected}{}", &path[..path.len() - suffix.len()]),
                ],
            ));
        }
    }
    out
}

fn as_pkce_s256(session: &Session<'_>) -> Vec<Finding> {
    as_docs(session)
        .filter_map(|(s, doc)| {
            let methods = doc.get("code_challenge_methods_supported");
            let has = methods
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|m| m.as_str() == Some("S256")));
            (!has).then(|| {
                finding(
                    "as-pkce-s256",
                    PKCE_SPEC,
                    Severity::Error,
                    Some(s.x.ex),
                    format!(
                        "{}: code_challenge_methods_supported does not include \"S256\"; MCP clients must refuse to authorize without it.",
                        name(s.x)
                    ),
                    vec![format!(
                        "code_challenge_methods_supported = {}",
                        methods.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into())
                    )],
                )
            })
        })
        .collect()
}

fn as_public_client(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (s, doc) in as_docs(session) {
        let mut problems = Vec::new();
        let mut evidence = Vec::new();
        if let Some(methods) = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
        {
            if !methods.iter().any(|m| m.as_str() == Some("none")) {
                problems.push("token_endpoint_auth_methods_supported lacks \"none\", so a public client (a connector with no secret) cannot redeem a code");
                evidence.push(format!(
                    "token_endpoint_auth_methods_supported = {}",
                    Value::Array(methods.clone())
                ));
            }
        }
        let registration = doc.get("registration_endpoint").is_some();
        let cimd = doc
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !registration && !cimd {
            problems.push("neither registration_endpoint nor client_id_metadata_document_supported is offered, so a connector cannot get a client_id without manual setup");
            evidence.push("registration_endpoint = (absent)".into());
        }
        if !problems.is_empty() {
            out.push(finding(
                "as-public-client",
                "MCP Authorization §2.4 (client registration); RFC 8414 §2",
                Severity::Warning,
                Some(s.x.ex),
                format!("{}: {}.", name(s.x), problems.join("; and ")),
                evidence,
            ));
        }
    }
    out
}

/// `error` and `error_description` of an OAuth error body, in one line.
fn oauth_error(x: &Exchange) -> Option<String> {
    let doc = x.response_body.json()?;
    let error = doc.get("error")?.as_str()?;
    Some(match doc.get("error_description").and_then(Value::as_str) {
        Some(d) => format!("{error} ({d})"),
        None => error.to_string(),
    })
}

fn dcr_response(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::Registration) {
        let x = s.x;
        let status = x.status();
        let ok = status.is_some_and(|c| (200..300).contains(&c));
        let doc = x.response_body.json();
        let problem = if !ok {
            Some(format!(
                "registration was refused with {}{}",
                status
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "no answer".into()),
                oauth_error(x).map(|e| format!(": {e}")).unwrap_or_default()
            ))
        } else if doc.is_none() {
            Some("registration answered without a JSON body".into())
        } else if doc
            .as_ref()
            .and_then(|d| d.get("client_id"))
            .and_then(Value::as_str)
            .is_none()
        {
            Some("the registration response has no client_id".into())
        } else {
            None
        };
        if let Some(problem) = problem {
            out.push(finding(
                "dcr-response",
                DCR_SPEC,
                Severity::Error,
                Some(x.ex),
                format!(
                    "{}: {problem}; RFC 7591 §3.2.1 answers 201 with the client_id.",
                    name(x)
                ),
                vec![
                    format!(
                        "status: {}",
                        status.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
                    ),
                    format!("body: {}", snippet(&x.response_body.text())),
                ],
            ));
        }
    }
    out
}

fn authorize_params(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::Authorize) {
        let q = s.x.query();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let mut missing = Vec::new();
        if get("response_type") != Some("code") {
            missing.push("response_type=code");
        }
        for k in [
            "client_id",
            "redirect_uri",
            "code_challenge",
            "state",
            "resource",
        ] {
            if get(k).is_none() {
                missing.push(k);
            }
        }
        if get("code_challenge").is_some() && get("code_challenge_method") != Some("S256") {
            missing.push("code_challenge_method=S256");
        }
        if !missing.is_empty() {
            out.push(finding(
                "authorize-params",
                AUTHZ_SPEC,
                Severity::Warning,
                Some(s.x.ex),
                format!(
                    "{}: the client's authorization request lacks {}.",
                    name(s.x),
                    missing.join(", ")
                ),
                vec![format!("target: {}", s.x.request.target)],
            ));
        }
    }
    out
}

fn authorize_redirect(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::Authorize) {
        let x = s.x;
        if !x.status().is_some_and(|c| (300..400).contains(&c)) {
            continue;
        }
        let Some(location) = x.response_header("location") else {
            out.push(finding(
                "authorize-redirect",
                "RFC 6749 §4.1.2",
                Severity::Error,
                Some(x.ex),
                format!("{}: a redirect without a Location header.", name(x)),
                vec![format!("status: {}", x.status().unwrap_or(0))],
            ));
            continue;
        };
        let q = x.query();
        let sent = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (base, query) = location.split_once('?').unwrap_or((location, ""));
        let back: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let got = |k: &str| back.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut problems = Vec::new();
        if let Some(error) = got("error") {
            problems.push(format!(
                "the authorization server refused: error={error}{}",
                got("error_description")
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
        } else if got("code").is_none() {
            problems.push("the redirect carries neither code nor error".to_string());
        }
        if let Some(redirect_uri) = sent("redirect_uri") {
            if base != redirect_uri {
                problems.push(format!(
                    "it redirects to {base}, not to the registered redirect_uri {redirect_uri}"
                ));
            }
        }
        match (sent("state"), got("state")) {
            (Some(a), Some(b)) if a != b => {
                problems.push(format!("state came back as \"{b}\", not \"{a}\""))
            }
            (Some(_), None) => problems.push(
                "state was not echoed; clients reject the redirect as a possible CSRF".into(),
            ),
            _ => {}
        }
        if !problems.is_empty() {
            out.push(finding(
                "authorize-redirect",
                "RFC 6749 §4.1.2, §10.12",
                Severity::Error,
                Some(x.ex),
                format!("{}: {}.", name(x), problems.join("; ")),
                vec![format!("location: {location}")],
            ));
        }
    }
    out
}

/// RFC 9207: the authorization response names its issuer (`iss`). A client rejects a response
/// without it when the metadata advertises `authorization_response_iss_parameter_supported`,
/// and one whose `iss` is not the issuer, compared as plain strings (2026-07-28 requires both).
fn authorize_iss(session: &Session<'_>) -> Vec<Finding> {
    let mut advertised = false;
    let mut issuer = None;
    for (_, doc) in as_docs(session) {
        advertised |=
            doc.get("authorization_response_iss_parameter_supported") == Some(&Value::Bool(true));
        issuer = issuer.or_else(|| {
            doc.get("issuer")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    }
    let mut out = Vec::new();
    for s in session.steps_with(Role::Authorize) {
        let x = s.x;
        let Some(location) = x
            .response_header("location")
            .filter(|_| x.status().is_some_and(|c| (300..400).contains(&c)))
        else {
            continue;
        };
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
        let iss = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "iss")
            .map(|(_, v)| v.into_owned());
        let problem = match (&iss, &issuer) {
            (None, _) if advertised => Some(
                "the authorization server advertises authorization_response_iss_parameter_supported, but its redirect carries no iss: the client must reject the response (RFC 9207 §2.4) and never exchanges the code".to_string(),
            ),
            (Some(got), Some(want)) if got != want => Some(format!(
                "the redirect's iss \"{got}\" is not the issuer \"{want}\" (compared as plain strings, no normalising): the client must reject the response as a possible mix-up attack (RFC 9207 §2.4)"
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            out.push(finding(
                "authorize-iss",
                ISS_SPEC,
                Severity::Error,
                Some(x.ex),
                format!("{}: {problem}.", name(x)),
                vec![
                    format!("location: {location}"),
                    format!(
                        "issuer = {}; authorization_response_iss_parameter_supported = {advertised}",
                        issuer.as_deref().unwrap_or("(no metadata seen)")
                    ),
                ],
            ));
        }
    }
    out
}

/// Client ID metadata documents (2026-07-28's preferred registration): a URL `client_id` must
/// be https with a path, and the authorization server must say it accepts one. In a
/// 2026-07-28 flow, an authorization server that offers only dynamic registration gets a note.
fn client_id_metadata(session: &Session<'_>) -> Vec<Finding> {
    let docs: Vec<(&Step<'_>, Value)> = as_docs(session).collect();
    let supported = docs
        .iter()
        .any(|(_, d)| d.get("client_id_metadata_document_supported") == Some(&Value::Bool(true)));
    let mut out = Vec::new();
    for s in session.steps_with(Role::Authorize) {
        let x = s.x;
        let Some(client_id) = x
            .query()
            .into_iter()
            .find(|(k, _)| k == "client_id")
            .map(|(_, v)| v)
            .filter(|v| v.starts_with("http://") || v.starts_with("https://"))
        else {
            continue;
        };
        let path = split_url(&client_id).map(|(_, _, p)| p).unwrap_or_default();
        if !client_id.starts_with("https://") || path.is_empty() || path == "/" {
            out.push(finding(
                "client-id-metadata",
                CIMD_SPEC,
                Severity::Error,
                Some(x.ex),
                format!(
                    "{}: the client_id {client_id} is a URL, so a client ID metadata document, but such a URL must use https and have a path (e.g. https://app.example.com/client.json): the authorization server must refuse it.",
                    name(x)
                ),
                vec![format!("client_id = {client_id}")],
            ));
        } else if !docs.is_empty() && !supported {
            out.push(finding(
                "client-id-metadata",
                CIMD_SPEC,
                Severity::Error,
                Some(x.ex),
                format!(
                    "{}: the client identifies itself with a client ID metadata document ({client_id}), but the authorization server's metadata does not set client_id_metadata_document_supported: it will not know this client. Support client ID metadata documents (fetch the URL, check its client_id and redirect_uris) and advertise it.",
                    name(x)
                ),
                vec![format!("client_id = {client_id}")],
            ));
        }
    }
    if session.negotiation.era == crate::era::Era::Modern {
        for (s, doc) in &docs {
            if doc.get("registration_endpoint").is_some() && !supported {
                out.push(finding(
                    "client-id-metadata",
                    CIMD_SPEC,
                    Severity::Info,
                    Some(s.x.ex),
                    format!(
                        "{}: the authorization server offers dynamic registration only. 2026-07-28 deprecates it in favour of client ID metadata documents, which 2026-07-28 clients use first: advertise client_id_metadata_document_supported and accept https client_ids.",
                        name(s.x)
                    ),
                    vec![format!(
                        "registration_endpoint = {}",
                        doc["registration_endpoint"].as_str().unwrap_or("?")
                    )],
                ));
                break;
            }
        }
    }
    out
}

fn is_code_grant(s: &Step<'_>) -> bool {
    form_value(&s.x.request_body.text(), "grant_type").as_deref() == Some("authorization_code")
}

fn token_request(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::Token).filter(|s| is_code_grant(s)) {
        let body = s.x.request_body.text();
        let mut missing = Vec::new();
        let mut severity = Severity::Warning;
        if form_value(&body, "code_verifier").is_none() {
            missing.push("code_verifier (PKCE)");
            severity = Severity::Error;
        }
        if form_value(&body, "resource").is_none() {
            missing.push("resource (RFC 8707, which MCP clients must send)");
        }
        if !missing.is_empty() {
            out.push(finding(
                "token-request",
                TOKEN_SPEC,
                severity,
                Some(s.x.ex),
                format!(
                    "{}: the token request lacks {}.",
                    name(s.x),
                    missing.join(" and ")
                ),
                vec![format!("body: {}", snippet(&body))],
            ));
        }
    }
    out
}

fn token_response(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::Token) {
        let x = s.x;
        let Some(status) = x.status() else { continue };
        let doc = x.response_body.json();
        let problem = if !(200..300).contains(&status) {
            Some(format!(
                "the token endpoint refused with {status}: {}",
                oauth_error(x).unwrap_or_else(|| snippet(&x.response_body.text()))
            ))
        } else if let Some(doc) = &doc {
            let token_type = doc.get("token_type").and_then(Value::as_str);
            if doc.get("access_token").and_then(Value::as_str).is_none() {
                Some("the response has no access_token".to_string())
            } else if !token_type.is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
                Some(format!(
                    "token_type is {}, not \"Bearer\" (RFC 6749 §5.1 requires it; clients reject the token)",
                    token_type.map(|t| format!("\"{t}\"")).unwrap_or_else(|| "absent".into())
                ))
            } else {
                None
            }
        } else {
            Some(format!(
                "the response is not JSON (content-type {})",
                x.response_header("content-type").unwrap_or("(none)")
            ))
        };
        if let Some(problem) = problem {
            out.push(finding(
                "token-response",
                TOKEN_SPEC,
                Severity::Error,
                Some(x.ex),
                format!("{}: {problem}.", name(x)),
                vec![
                    format!("status: {status}"),
                    format!("body: {}", snippet(&x.response_body.text())),
                ],
            ));
            continue;
        }
        // A lifetime of no time at all: the client holds a token it must treat as expired.
        let lifetime = doc
            .as_ref()
            .and_then(|d| d.get("expires_in"))
            .and_then(Value::as_f64);
        if let Some(seconds) = lifetime.filter(|s| *s <= 0.0) {
            out.push(finding(
                "token-response",
                TOKEN_SPEC,
                Severity::Warning,
                Some(x.ex),
                format!(
                    "{}: expires_in is {seconds}: the token is expired as it is issued, so a \
                     client refreshes at once (or, with no refresh token, starts authorization \
                     again) instead of using it. Give its real lifetime in seconds, or leave \
                     expires_in out.",
                    name(x)
                ),
                vec![format!("expires_in: {seconds}")],
            ));
        }
    }
    out
}

/// The RFC 9728 §3.3 mismatch of this session, if the metadata broke it (a likely cause of silence).
fn resource_cause(session: &Session<'_>) -> Option<String> {
    prm_resource_match(session)
        .into_iter()
        .next()
        .map(|_| "likely cause: the protected-resource metadata's \"resource\" does not match the client's URL (see prm-resource-match)".to_string())
}

fn post_token_silence(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for token in session
        .tokens
        .iter()
        .filter(|t| t.grant_type == "authorization_code")
    {
        if !token.presented.is_empty() {
            continue;
        }
        let Some(x) = session.capture.exchange(token.issued_by) else {
            continue;
        };
        // Did any authenticated request follow at all (a different token)?
        let later_bearer = session
            .steps
            .iter()
            .any(|s| s.x.t > token.issued_t && s.bearer.is_some());
        if later_bearer {
            continue;
        }
        let quiet = session.capture.end_t().saturating_sub(token.issued_t) as f64 / 1e6;
        let after: Vec<String> = session
            .steps
            .iter()
            .filter(|s| s.x.t > token.issued_t)
            .map(|s| name(s.x))
            .collect();
        let mut message = format!(
            "The token fp={} issued by {} was never presented: no request with Authorization: Bearer followed in the {quiet:.1} s the capture went on{}.",
            token.fp,
            name(x),
            if after.is_empty() {
                " (nothing at all reached the proxy after it)".to_string()
            } else {
                format!("; what did arrive: {}", after.join(", "))
            }
        );
        if let Some(cause) = resource_cause(session) {
            message.push_str(&format!(" {}.", capitalize(&cause)));
        }
        out.push(finding(
            "post-token-silence",
            SILENCE_SPEC,
            Severity::Error,
            Some(x.ex),
            message,
            vec![
                format!("{}: access_token fp={}", name(x), token.fp),
                format!("requests presenting fp={}: none", token.fp),
            ],
        ));
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn bearer_accepted(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for token in &session.tokens {
        let rejected: Vec<&(u64, Option<u16>)> = token
            .presented
            .iter()
            .filter(|(_, st)| *st == Some(401))
            .collect();
        let Some((first, _)) = rejected.first() else {
            continue;
        };
        let Some(x) = session.capture.exchange(*first) else {
            continue;
        };
        let challenge = x.response_header("www-authenticate").unwrap_or("(absent)");
        let error = challenge_params(challenge)
            .into_iter()
            .filter(|(n, _)| n == "error" || n == "error_description")
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (severity, message) = if token.accepted == Some(true) {
            (
                Severity::Warning,
                format!(
                    "{}: the first request with the new token fp={} was answered 401, a retry was accepted: the token store may lag behind the token endpoint (a race some connectors do not retry).",
                    name(x),
                    token.fp
                ),
            )
        } else if error.is_empty() && challenge != "(absent)" {
            // RFC 6750 §3.1: a request without credentials gets a challenge without an error
            // code; one whose token failed gets error="invalid_token". This one was answered as
            // if it carried none.
            (
                Severity::Error,
                format!(
                    "{}: the request presented the token fp={} and was answered 401 with a challenge that names no error, as a request without credentials is (RFC 6750 §3.1): the Authorization header likely never reached the app. A proxy, gateway or CDN in front of it may strip it (Apache without CGIPassAuth, some serverless front doors); check what the app receives.",
                    name(x),
                    token.fp,
                ),
            )
        } else {
            (
                Severity::Error,
                format!(
                    "{}: the token fp={} issued moments before was rejected with 401{}: the resource server does not accept what its own authorization server issued (audience/resource, issuer, or token store).",
                    name(x),
                    token.fp,
                    if error.is_empty() { String::new() } else { format!(" ({error})") }
                ),
            )
        };
        out.push(finding(
            "bearer-accepted",
            "RFC 6750 §3.1; MCP Authorization §2.6",
            severity,
            Some(x.ex),
            message,
            vec![
                format!("www-authenticate: {challenge}"),
                format!("rejected {} time(s)", rejected.len()),
            ],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{one, quiet, Cap, Ex};
    use super::*;

    #[test]
    fn a_token_answered_as_if_absent_points_at_a_stripped_header() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "POST", "/token")
                .h("content-type", "application/x-www-form-urlencoded")
                .send("grant_type=authorization_code&code=c&code_verifier=v")
                .json(r#"{"access_token":"tok-123456","token_type":"Bearer"}"#),
        )
        .add(
            Ex::post(2, 1_000_000, &super::super::testing::rq(1, "initialize"))
                .h("authorization", "Bearer tok-123456")
                .status(401)
                .rh(
                    "www-authenticate",
                    r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource""#,
                ),
        );
        let f = one(
            &cap.run(bearer_accepted),
            "bearer-accepted",
            Severity::Error,
            Some(2),
        );
        assert!(f.message.contains("never reached the app"), "{f:#?}");
    }

    #[test]
    fn a_token_that_expires_as_it_is_issued_is_a_warning() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "POST", "/token")
                .h("content-type", "application/x-www-form-urlencoded")
                .send("grant_type=authorization_code&code=c&code_verifier=v")
                .json(r#"{"access_token":"t","token_type":"Bearer","expires_in":0}"#),
        );
        let f = one(
            &cap.run(token_response),
            "token-response",
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("expires_in is 0"), "{f:#?}");
    }

    #[test]
    fn challenge_params_parse_quoted_and_tokens() {
        let p = challenge_params(
            r#"Bearer resource_metadata="https://x/.well-known/oauth-protected-resource", scope="mcp read", error=invalid_token"#,
        );
        assert_eq!(
            p[0],
            (
                "resource_metadata".into(),
                "https://x/.well-known/oauth-protected-resource".into()
            )
        );
        assert_eq!(p[1], ("scope".into(), "mcp read".into()));
        assert_eq!(p[2], ("error".into(), "invalid_token".into()));
        assert!(challenge_params("Basic realm=x").is_empty());
    }

    #[test]
    fn a_bearer_challenge_is_found_among_several_in_one_value() {
        let value = r#"Basic realm="a, b", Bearer resource_metadata="https://x/m", scope=mcp, Negotiate abc+/=="#;
        assert!(has_bearer_challenge(value));
        assert_eq!(
            challenge_params(value),
            [
                ("resource_metadata".to_string(), "https://x/m".to_string()),
                ("scope".to_string(), "mcp".to_string())
            ]
        );
        assert_eq!(
            challenges(value)
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>(),
            ["Basic", "Bearer", "Negotiate"]
        );
        assert!(has_bearer_challenge("bearer"));
        assert!(challenge_params("Bearer").is_empty());
        assert!(!has_bearer_challenge(r#"Basic realm="Bearer x""#));
        assert_eq!(
            challenge_params(
                r#"Bearer error="invalid_token", error_description="a \"quoted\", text""#
            )[1]
            .1,
            r#"a "quoted", text"#
        );
    }

    #[test]
    fn resource_mismatches_are_named() {
        let m = |r: &str| resource_mismatch(r, "h.example", "/mcp");
        assert_eq!(m("https://h.example/mcp"), None);
        assert!(m("https://h.example").unwrap().contains("base URL"));
        assert!(m("https://h.example/").unwrap().contains("base URL"));
        assert!(m("https://h.example/mcp/")
            .unwrap()
            .contains("trailing slash"));
        assert!(m("https://H.example/mcp").unwrap().contains("case"));
        assert!(m("https://h.example/MCP").unwrap().contains("case"));
        assert!(m("https://h.example/mcp/mcp").unwrap().contains("doubled"));
        assert!(m("https://other.example/mcp")
            .unwrap()
            .contains("another host"));
        assert!(m("/mcp").unwrap().contains("absolute"));
    }

    /// AS metadata (issuer http://127.0.0.1:1, the fixture's public origin), then an
    /// authorize redirect whose Location carries `extra`.
    fn iss_flow(advertised: bool, extra: &str, client_id: &str) -> Cap {
        let mut doc = serde_json::json!({"issuer": "http://127.0.0.1:1",
            "authorization_endpoint": "http://127.0.0.1:1/authorize",
            "token_endpoint": "http://127.0.0.1:1/token",
            "registration_endpoint": "http://127.0.0.1:1/register"});
        if advertised {
            doc["authorization_response_iss_parameter_supported"] = true.into();
        }
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 0, "GET", "/.well-known/oauth-authorization-server").json(&doc.to_string()),
        );
        let target: &'static str = Box::leak(
            format!("/authorize?response_type=code&client_id={client_id}&state=s").into_boxed_str(),
        );
        cap.add(Ex::new(2, 10_000, "GET", target).status(302).rh(
            "location",
            &format!("http://127.0.0.1:9/cb?code=c&state=s{extra}"),
        ));
        cap
    }

    #[test]
    fn iss_is_required_when_promised_and_compared_as_a_plain_string() {
        let missing = iss_flow(true, "", "abc").run(authorize_iss);
        assert_eq!(missing.len(), 1, "{missing:#?}");
        assert!(
            missing[0].message.contains("carries no iss"),
            "{}",
            missing[0].message
        );
        quiet(&iss_flow(true, "&iss=http%3A%2F%2F127.0.0.1%3A1", "abc").run(authorize_iss));
        // Not advertised: an absent iss is fine, a wrong one is not (2026-07-28 compares it).
        quiet(&iss_flow(false, "", "abc").run(authorize_iss));
        let wrong = iss_flow(false, "&iss=http%3A%2F%2F127.0.0.1%3A1%2F", "abc").run(authorize_iss);
        assert_eq!(wrong.len(), 1, "{wrong:#?}");
        assert!(
            wrong[0].message.contains("is not the issuer"),
            "{}",
            wrong[0].message
        );
    }

    #[test]
    fn a_url_client_id_must_be_https_with_a_path_and_accepted_by_the_server() {
        let f = iss_flow(false, "", "http%3A%2F%2Fapp.example%2F").run(client_id_metadata);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].message.contains("must use https and have a path"),
            "{}",
            f[0].message
        );
        let f =
            iss_flow(false, "", "https%3A%2F%2Fapp.example%2Fclient.json").run(client_id_metadata);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].message
                .contains("does not set client_id_metadata_document_supported"),
            "{}",
            f[0].message
        );
        quiet(&iss_flow(false, "", "abc").run(client_id_metadata));
    }
}
