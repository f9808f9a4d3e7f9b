//! Protocol-era checks: how the 2026-07-28 negotiation went, the DiscoverResult, and the
//! request headers 2026-07-28 requires (`Mcp-Method`, `Mcp-Name`).
//!
//! Each finding sits on the exchange that shows it: the probe for the negotiation, the
//! request for its headers. Harmless details (a metadata request with an older
//! `MCP-Protocol-Version` in a modern flow) are not findings.

use base64::Engine as _;
use serde_json::Value;

use super::{finding, Check, Finding, Severity};
use crate::era::{is_modern_request, Era, ProbeAnswer};
use crate::jsonrpc::Message;
use crate::session::{Role, Session};

const ERA_NEGOTIATION: &str = "era-negotiation";
const ERA_FALLBACK: &str = "era-fallback";
const MCP_HEADERS_STRIPPED: &str = "mcp-headers-stripped";
const DISCOVER_RESULT: &str = "discover-result";
const INITIALIZE_REFUSED: &str = "initialize-refused";
const MCP_METHOD_HEADER: &str = "mcp-method-header";
const MCP_NAME_HEADER: &str = "mcp-name-header";

const SPEC_ERA: &str = "MCP 2026-07-28 Versioning §Backward Compatibility with Initialization-Based Versions; Streamable HTTP §Backward Compatibility";
const SPEC_DISCOVER: &str =
    "MCP 2026-07-28 Server §Discover (DiscoverResult: supportedVersions, capabilities; CacheableResult: resultType, ttlMs, cacheScope)";
const SPEC_HEADERS: &str =
    "MCP 2026-07-28 Streamable HTTP §Standard Request Headers, §Server Validation (-32020 HeaderMismatch)";

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: ERA_NEGOTIATION,
            spec: SPEC_ERA,
            run: negotiation,
        },
        Check {
            id: DISCOVER_RESULT,
            spec: SPEC_DISCOVER,
            run: discover_result,
        },
        Check {
            id: MCP_METHOD_HEADER,
            spec: SPEC_HEADERS,
            run: request_headers,
        },
    ]
}

/// The negotiation at the probe: nothing when the client stayed modern, a note for a
/// fallback, a warning when headers were lost on the way, an error when no era was reached.
fn negotiation(session: &Session<'_>) -> Vec<Finding> {
    let n = &session.negotiation;
    if let Some(refused) = initialize_refused(session) {
        return vec![refused];
    }
    let (Some(probe), Some(answer)) = (n.probe, n.probe_answer.as_ref()) else {
        return Vec::new();
    };
    let method = n.probe_method.as_deref().unwrap_or("the probe");
    let mcp = session.mcp_path().unwrap_or("/mcp");
    let said = answer.describe();
    let offered = if n.server_versions.is_empty() {
        String::new()
    } else {
        format!(" The server offers {}.", n.server_versions.join(", "))
    };
    let evidence = vec![format!("#{probe} POST {mcp} {method} → {said}")];
    match n.era {
        Era::Fallback => {
            if let ProbeAnswer::ModernError { code: -32020, .. } = answer {
                let sent = session
                    .step(probe)
                    .map(|s| {
                        ["mcp-protocol-version", "mcp-method", "mcp-name"]
                            .iter()
                            .filter_map(|h| s.x.request_header(h).map(|v| format!("{h}: {v}")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                return vec![finding(
                    MCP_HEADERS_STRIPPED,
                    SPEC_HEADERS,
                    Severity::Warning,
                    Some(probe),
                    format!(
                        "The server answered {method} with HeaderMismatch (-32020) although the request reached mcptap with its headers ({sent}): something between mcptap and the server (a gateway, a framework's middleware) removed or changed Mcp-Method, Mcp-Name or MCP-Protocol-Version. The client fell back to initialize, so a server that speaks 2026-07-28 is used in its 2025 mode. Let those headers through unchanged."
                    ),
                    evidence,
                )];
            }
            if matches!(
                answer,
                ProbeAnswer::ServerError { .. }
                    | ProbeAnswer::NoAnswer { .. }
                    | ProbeAnswer::Nothing
            ) {
                // This client fell back on an answer the SDK clients and hosted connectors
                // give up on: the server works with it, not with them.
                return vec![finding(
                    ERA_NEGOTIATION,
                    SPEC_ERA,
                    Severity::Error,
                    Some(probe),
                    format!(
                        "The server answered {method}, the 2026-07-28 probe, with {said}. This client fell back to initialize at #{} anyway, but the SDK clients and the hosted connectors fall back only when the answer is a 400 (or 404) carrying a JSON-RPC error; on this answer they give up. Serve server/discover (2026-07-28), or answer it as a 2025-only server does: HTTP 400 with a JSON-RPC error such as -32601 \"Method not found\".",
                        n.initialize.unwrap_or_default()
                    ),
                    evidence,
                )];
            }
            vec![finding(
                ERA_FALLBACK,
                SPEC_ERA,
                Severity::Info,
                Some(probe),
                format!(
                    "The server does not speak 2026-07-28: it answered {method} with {said}, and the client fell back to initialize at #{}.{offered} This works; serving 2026-07-28 (server/discover, per-request _meta) saves 2026-07-28 clients the probe and the fallback.",
                    n.initialize.unwrap_or_default()
                ),
                evidence,
            )]
        }
        Era::FailedNegotiation => {
            let message = match answer {
                ProbeAnswer::LegacyError { .. } | ProbeAnswer::Refused { .. } => format!(
                    "The client speaks only 2026-07-28 and the server does not: it answered {method} with {said}, and the client did not fall back to initialize, as a client pinned to 2026-07-28 does not.{offered} Serve 2026-07-28 on {mcp} (server/discover and per-request _meta; the SDKs' dual-era handlers do both eras), or connect with a client that falls back to the 2025 revisions."
                ),
                ProbeAnswer::ModernError { code, message, .. } => format!(
                    "The server speaks 2026-07-28 but refused the client's {method} with {code} \"{message}\", and the client went no further.{offered} {}",
                    match code {
                        -32022 => "The client asked for a protocol version the server does not support: the two share none.",
                        -32020 => "The request's headers and body disagree as the server received them: a gateway may have changed them.",
                        -32021 => "The server requires a client capability the client does not declare.",
                        _ => "The server does not serve that method on this endpoint.",
                    }
                ),
                ProbeAnswer::ServerError { .. }
                | ProbeAnswer::NoAnswer { .. }
                | ProbeAnswer::Nothing
                | ProbeAnswer::Result { .. } => format!(
                    "The client opened with {method}, the 2026-07-28 probe, and the server answered it with {said}. A client that speaks both eras falls back to initialize only when the answer is a 400 (or 404) carrying a JSON-RPC error; on a 5xx, an HTML page, a 2xx without a JSON-RPC answer or no answer it gives up, and no MCP request follows. Serve server/discover (2026-07-28), or answer it as a 2025-only server does: HTTP 400 with a JSON-RPC error such as -32601 \"Method not found\"."
                ),
            };
            vec![finding(
                ERA_NEGOTIATION,
                SPEC_ERA,
                Severity::Error,
                Some(probe),
                message,
                evidence,
            )]
        }
        _ => Vec::new(),
    }
}

/// An `initialize` (the 2025 opening, or the fallback) that the server refused. When the
/// server named only 2026-07-28 versions, the client and server share no era.
fn initialize_refused(session: &Session<'_>) -> Option<Finding> {
    let n = &session.negotiation;
    let (Some(ex), Some(answer)) = (n.initialize, n.initialize_answer.as_ref()) else {
        return None;
    };
    if matches!(answer, ProbeAnswer::Result { .. }) || !n.era.is_legacy() {
        return None;
    }
    let mcp = session.mcp_path().unwrap_or("/mcp");
    let said = answer.describe();
    let modern_only = !n.server_versions.is_empty()
        && n.server_versions
            .iter()
            .all(|v| crate::era::MODERN_VERSIONS.contains(&v.as_str()));
    let (check, message) = if modern_only {
        (
            ERA_NEGOTIATION,
            format!(
                "The client speaks only the 2025 revisions and the server only {}: it refused initialize with {said}. A 2025 client has no way forward to 2026-07-28 (its opening is initialize, which 2026-07-28 does not have). Serve the 2025 revisions too (the SDKs' dual-era handlers answer initialize), or connect with a 2026-07-28 client.",
                n.server_versions.join(", ")
            ),
        )
    } else {
        (
            INITIALIZE_REFUSED,
            format!(
                "The server refused initialize with {said}: the client cannot start a session, and no MCP request follows. The server's own words above say why."
            ),
        )
    };
    Some(finding(
        check,
        SPEC_ERA,
        Severity::Error,
        Some(ex),
        message,
        vec![format!("#{ex} POST {mcp} initialize → {said}")],
    ))
}

/// Every `server/discover` answered with a result: the fields a DiscoverResult must have.
fn discover_result(session: &Session<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for call in session
        .calls
        .iter()
        .filter(|c| c.method == "server/discover")
    {
        let Some((ex, _, Message::Result { result, .. })) = &call.answer else {
            continue;
        };
        let mut errors = Vec::new();
        match result.get("supportedVersions").and_then(Value::as_array) {
            None => errors.push("no supportedVersions array".to_string()),
            Some(list) if list.is_empty() || !list.iter().all(Value::is_string) => {
                errors.push("supportedVersions is not a non-empty list of strings".into())
            }
            Some(_) => {}
        }
        if !result.get("capabilities").is_some_and(Value::is_object) {
            errors.push("no capabilities object".into());
        }
        let mut warnings = Vec::new();
        if !result.get("resultType").is_some_and(Value::is_string) {
            warnings.push("resultType");
        }
        if !result.get("ttlMs").is_some_and(Value::is_u64) {
            warnings.push("ttlMs");
        }
        if !matches!(
            result.get("cacheScope").and_then(Value::as_str),
            Some("public" | "private")
        ) {
            warnings.push("cacheScope");
        }
        let evidence = vec![format!(
            "result: {}",
            crate::session::snippet(&result.to_string())
        )];
        if !errors.is_empty() {
            findings.push(finding(
                DISCOVER_RESULT,
                SPEC_DISCOVER,
                Severity::Error,
                Some(*ex),
                format!(
                    "The server/discover result is not a DiscoverResult: {}. A 2026-07-28 client cannot pick a version from it; the SDK clients treat it as a legacy server's answer.",
                    errors.join(", ")
                ),
                evidence,
            ));
        } else if !warnings.is_empty() {
            findings.push(finding(
                DISCOVER_RESULT,
                SPEC_DISCOVER,
                Severity::Warning,
                Some(*ex),
                format!(
                    "The DiscoverResult lacks {}, which 2026-07-28 requires of every (cacheable) result.",
                    warnings.join(", ")
                ),
                evidence,
            ));
        }
    }
    findings
}

/// A header value with the Base64 sentinel (`=?base64?…?=`) decoded.
fn header_value(raw: &str) -> Option<String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(raw.to_string()),
    }
}

/// How bad a request whose mirrored headers are wrong is: the client's mistake the server
/// rightly refused (400 with -32020) is a warning; one the server served anyway is an error,
/// since a server that processes the body MUST reject it.
fn header_verdict(step: &crate::session::Step<'_>) -> (Severity, &'static str) {
    let refused = step.x.status() == Some(400)
        && step
            .received
            .iter()
            .any(|(_, m)| matches!(m, Message::Error { code: -32020, .. }));
    if refused {
        (
            Severity::Warning,
            "The server rightly refused it with 400 and -32020 HeaderMismatch; the client must send the headers right.",
        )
    } else {
        (
            Severity::Error,
            "The server served it anyway, but a server that processes the body must refuse it with 400 and -32020 HeaderMismatch: gateways route and authorize on these headers.",
        )
    }
}

/// Modern requests: `Mcp-Method` equal to the body's method, and `Mcp-Name` to the name or
/// URI of the requests that need it.
fn request_headers(session: &Session<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for step in session.steps.iter().filter(|s| s.role == Role::Mcp) {
        let Some(message) = step.sent.first() else {
            continue;
        };
        // A batch carries several methods; the header names one. Batches left alone, and
        // notifications: the headers are required of requests.
        if step.sent.len() != 1 || !message.is_request() || !is_modern_request(step, message) {
            continue;
        }
        let Some(method) = message.method() else {
            continue;
        };
        let ex = step.x.ex;
        let (severity, verdict) = header_verdict(step);
        let got = step.x.request_header("mcp-method");
        if got != Some(method) {
            let what = match got {
                None => "carries no Mcp-Method header".to_string(),
                Some(v) => format!("names {v:?} in Mcp-Method"),
            };
            findings.push(finding(
                MCP_METHOD_HEADER,
                SPEC_HEADERS,
                severity,
                Some(ex),
                format!(
                    "This 2026-07-28 request ({method}) {what}: every request must mirror its method there. {verdict}"
                ),
                vec![format!("mcp-method: {}", got.unwrap_or("(absent)"))],
            ));
        }
        let params = match message {
            Message::Request { params, .. } | Message::Notification { params, .. } => {
                params.as_ref()
            }
            _ => None,
        };
        let name_field = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        let Some(field) = name_field else {
            continue;
        };
        let want = params.and_then(|p| p.get(field)).and_then(Value::as_str);
        let raw = step.x.request_header("mcp-name");
        let got = raw.and_then(header_value);
        if want.is_some() && got.as_deref() != want {
            let what = match (raw, &got) {
                (None, _) => "carries no Mcp-Name header".to_string(),
                (Some(r), None) => format!("has an Mcp-Name that does not decode: {r:?}"),
                (Some(_), Some(g)) => format!("names {g:?} in Mcp-Name"),
            };
            findings.push(finding(
                MCP_NAME_HEADER,
                SPEC_HEADERS,
                severity,
                Some(ex),
                format!(
                    "This {method} for {:?} {what}: 2026-07-28 requires Mcp-Name to mirror params.{field} on tools/call, resources/read and prompts/get. {verdict}",
                    want.unwrap_or_default()
                ),
                vec![format!("mcp-name: {}", raw.unwrap_or("(absent)"))],
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use serde_json::json;

    const MS: u64 = 1_000;

    /// A 2026-07-28 request with its `_meta` and mirrored headers.
    fn modern(ex: u64, t: u64, id: u64, method: &str, params: serde_json::Value) -> Ex {
        let mut params = params;
        params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        Ex::post(ex, t, &body.to_string())
            .h("mcp-protocol-version", "2026-07-28")
            .h("mcp-method", method)
    }

    fn discover_ok(id: u64) -> String {
        json!({"jsonrpc": "2.0", "id": id, "result": {"supportedVersions": ["2026-07-28"],
            "capabilities": {}, "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}})
        .to_string()
    }

    fn error(code: i64, message: &str) -> String {
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
            .to_string()
    }

    #[test]
    fn a_modern_flow_gives_no_finding() {
        let mut cap = Cap::new();
        cap.add(modern(1, 0, 1, "server/discover", json!({})).json(&discover_ok(1)))
            .add(modern(2, 20 * MS, 2, "tools/list", json!({})).json(&ok(2)));
        quiet(&cap.run(negotiation));
        quiet(&cap.run(discover_result));
        quiet(&cap.run(request_headers));
    }

    /// A 404 carrying -32601 is a modern server's unknown method, not a legacy refusal.
    #[test]
    fn a_404_with_method_not_found_is_a_modern_error() {
        let mut cap = Cap::new();
        cap.add(modern(1, 0, 1, "server/discover", json!({})).answer(
            404,
            "application/json",
            &error(-32601, "Method not found"),
        ));
        let f = one(
            &cap.run(negotiation),
            ERA_NEGOTIATION,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("speaks 2026-07-28"), "{}", f.message);
    }

    /// A client that falls back even on a 500 works with this server; the connectors do not.
    #[test]
    fn a_fallback_after_a_500_is_still_an_error() {
        let mut cap = Cap::new();
        cap.add(modern(1, 0, 1, "server/discover", json!({})).answer(
            500,
            "text/html",
            "<h1>Internal Server Error</h1>",
        ))
        .add(Ex::post(2, 20 * MS, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")));
        let f = one(
            &cap.run(negotiation),
            ERA_NEGOTIATION,
            Severity::Error,
            Some(1),
        );
        assert!(
            f.message.contains("fell back to initialize at #2 anyway"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_discover_result_without_its_required_fields_is_an_error_and_missing_hints_a_warning() {
        let mut cap = Cap::new();
        cap.add(
            modern(1, 0, 1, "server/discover", json!({})).json(
                &json!({"jsonrpc": "2.0", "id": 1, "result": {"capabilities": {}}}).to_string(),
            ),
        );
        let f = one(
            &cap.run(discover_result),
            DISCOVER_RESULT,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("no supportedVersions"), "{}", f.message);
        let mut cap = Cap::new();
        cap.add(
            modern(1, 0, 1, "server/discover", json!({})).json(
                &json!({"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2026-07-28"],
                "capabilities": {}}})
                .to_string(),
            ),
        );
        let f = one(
            &cap.run(discover_result),
            DISCOVER_RESULT,
            Severity::Warning,
            Some(1),
        );
        assert!(
            f.message.contains("resultType, ttlMs, cacheScope"),
            "{}",
            f.message
        );
    }

    /// Mcp-Method must mirror the method; Mcp-Name the tool's name, Base64 sentinel decoded.
    #[test]
    fn mirrored_headers_are_checked_and_the_base64_sentinel_decoded() {
        let call = |ex, name: &str| {
            modern(
                ex,
                ex * 10 * MS,
                ex,
                "tools/call",
                json!({"name": "get weather"}),
            )
            .h("mcp-name", name)
            .json(&ok(ex))
        };
        let mut cap = Cap::new();
        cap.add(call(1, "=?base64?Z2V0IHdlYXRoZXI=?="));
        quiet(&cap.run(request_headers));
        let mut cap = Cap::new();
        cap.add(call(1, "get_weather"));
        one(
            &cap.run(request_headers),
            MCP_NAME_HEADER,
            Severity::Error,
            Some(1),
        );
        let mut cap = Cap::new();
        cap.add(
            modern(1, 0, 1, "tools/list", json!({}))
                .h("mcp-method", "tools/call")
                .json(&ok(1)),
        );
        let f = one(
            &cap.run(request_headers),
            MCP_METHOD_HEADER,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("\"tools/call\""), "{}", f.message);
        // Refused by the server with -32020, as it must be: the client's mistake, a warning.
        let mut cap = Cap::new();
        cap.add(
            modern(1, 0, 1, "tools/list", json!({}))
                .h("mcp-method", "TOOLS/LIST")
                .answer(400, "application/json", &error(-32020, "Header mismatch")),
        );
        let f = one(
            &cap.run(request_headers),
            MCP_METHOD_HEADER,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("rightly refused"), "{}", f.message);
        // A 2025 request needs neither header.
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 0, &rq(1, "tools/list")).json(&ok(1)));
        quiet(&cap.run(request_headers));
    }
}
