//! The checks `mcptap explain` runs: each has a stable id, a severity, the spec rule it
//! enforces, and reports the exchange and the evidence when the rule is broken.

pub mod auth;
pub mod era;
pub mod messages;
pub mod rounds;
#[cfg(test)]
pub(crate) mod testing;
pub mod tools;
pub mod transport;
pub mod urls;

use serde::Serialize;

use super::session::Session;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A broken (or noteworthy) rule, with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The check's stable id (`prm-resource-match`).
    pub check: &'static str,
    pub severity: Severity,
    /// One or two sentences a developer can act on.
    pub message: String,
    /// The exchange it concerns, if one.
    pub exchange: Option<u64>,
    /// The rule: RFC or MCP spec section.
    pub spec: &'static str,
    /// The header or field and its value, as recorded.
    pub evidence: Vec<String>,
}

/// One check.
pub struct Check {
    pub id: &'static str,
    pub spec: &'static str,
    pub run: fn(&Session<'_>) -> Vec<Finding>,
}

/// Every check, in report order.
pub fn all() -> Vec<Check> {
    let mut checks = auth::checks();
    checks.extend(era::checks());
    checks.extend(rounds::checks());
    checks.extend(transport::checks());
    checks.extend(messages::checks());
    checks.extend(tools::checks());
    checks.extend(urls::checks());
    checks
}

/// Runs every check; findings sorted by severity, then by exchange.
pub fn run(session: &Session<'_>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = all().iter().flat_map(|c| (c.run)(session)).collect();
    let refused = refused_steps(session, &findings);
    findings.extend(refused);
    // At one exchange, a diagnosis (what caused it) before a description (what was refused).
    let general = |f: &Finding| matches!(f.check, STEP_REFUSED | "initialize-refused");
    findings.sort_by_key(|f| (f.severity, f.exchange.unwrap_or(u64::MAX), general(f)));
    findings
}

/// The check behind the others: a step the client tried and the server refused.
pub const STEP_REFUSED: &str = "step-refused";
const SPEC_STEP_REFUSED: &str =
    "JSON-RPC 2.0 §5 (error objects); RFC 6749 §4.1.2.1, §5.2; RFC 9110 §15 (status codes)";

/// Every step a client tried that the server refused gets a finding at its exchange: when no
/// other check named the cause there, this one quotes the status and the server's own words.
/// A refused step of the flow's ladder is an error; a refused tool call a warning (its
/// cause may be the tool's own), said once per method and refusal.
fn refused_steps(session: &Session<'_>, found: &[Finding]) -> Vec<Finding> {
    use super::era::Era;
    use super::jsonrpc::Message;
    // Another check named this refusal when it quotes the status (or the JSON-RPC error).
    let named = |ex: u64| {
        let Some(step) = session.step(ex) else {
            return false;
        };
        let status = step.x.status().map(|s| s.to_string());
        let rpc_error = session
            .calls
            .iter()
            .filter(|c| c.ex == ex)
            .find_map(|c| match &c.answer {
                Some((_, _, Message::Error { message, .. })) => Some(message.clone()),
                _ => None,
            });
        let quotes = |text: &str| {
            rpc_error.as_deref().map_or_else(
                || status.as_deref().is_some_and(|s| text.contains(s)),
                |m| text.contains(m),
            )
        };
        found.iter().any(|f| {
            f.exchange == Some(ex)
                && f.severity <= Severity::Warning
                && (quotes(&f.message) || f.evidence.iter().any(|e| quotes(e)))
        })
    };
    let negotiation = &session.negotiation;
    // A 2026-07-28 probe refused by a 2025 server is how auto mode works.
    let expected = |ex: u64| negotiation.era == Era::Fallback && negotiation.probe == Some(ex);
    let mut out: Vec<Finding> = Vec::new();
    let mut said: std::collections::BTreeSet<(String, String)> = Default::default();
    let mut add = |ex: u64, severity: Severity, stage: Option<&str>| {
        if named(ex) || expected(ex) || out.iter().any(|f| f.exchange == Some(ex)) {
            return;
        }
        let Some(step) = session.step(ex) else {
            return;
        };
        let how = session.refusal_of(ex);
        let what = transport::label_with(step);
        if !said.insert((transport::carried_of(step), how.clone())) {
            return;
        }
        let after = match stage {
            Some(stage) => format!(" The client did not reach the {stage} stage."),
            None => String::new(),
        };
        out.push(finding(
            STEP_REFUSED,
            SPEC_STEP_REFUSED,
            severity,
            Some(ex),
            format!("{what} was refused: {how}.{after}"),
            vec![format!(
                "status: {}",
                step.x
                    .status()
                    .map_or_else(|| "(none)".to_string(), |s| s.to_string())
            )],
        ));
    };
    for stage in &session.stages {
        // A stage of the other era (a 2025 initialize a 2026-07-28 server refuses) is not
        // this flow's step.
        if stage.reached == super::session::Reached::NotApplicable {
            continue;
        }
        if let Some(ex) = stage.refused {
            // A tool call's refusal may be the tool's own.
            let severity = if stage.id == super::session::StageId::Call {
                Severity::Warning
            } else {
                Severity::Error
            };
            add(ex, severity, Some(stage.id.id()));
        }
    }
    for call in &session.calls {
        let error = matches!(call.answer, Some((_, _, Message::Error { .. })));
        let http = call.answer.is_none()
            && session
                .step(call.ex)
                .and_then(|s| s.x.status())
                .is_some_and(|c| c >= 400 && c != 401);
        if error || http {
            add(call.ex, Severity::Warning, None);
        }
    }
    out
}

/// Builds a finding for check `id` with the spec text of that check.
pub fn finding(
    check: &'static str,
    spec: &'static str,
    severity: Severity,
    exchange: Option<u64>,
    message: impl Into<String>,
    evidence: Vec<String>,
) -> Finding {
    Finding {
        check,
        severity,
        message: message.into(),
        exchange,
        spec,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{init_ok, rq, Cap, Ex};
    use super::*;
    use crate::explanation::explain;

    const S: u64 = 1_000_000;

    /// The findings at `ex` of error or warning severity, by check.
    fn at(findings: &[Finding], ex: u64) -> Vec<&'static str> {
        findings
            .iter()
            .filter(|f| f.exchange == Some(ex) && f.severity <= Severity::Warning)
            .map(|f| f.check)
            .collect()
    }

    #[test]
    fn an_authorize_answered_with_an_error_page_is_named_and_the_silence_says_it_was_tried() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 0, &rq(1, "initialize")).status(401).rh(
            "www-authenticate",
            r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource""#,
        ))
        .add(
            Ex::new(2, S, "GET", "/.well-known/oauth-authorization-server").json(
                r#"{"issuer":"http://127.0.0.1:1","authorization_endpoint":"http://127.0.0.1:1/authorize","token_endpoint":"http://127.0.0.1:1/token","response_types_supported":["code"],"code_challenge_methods_supported":["S256"]}"#,
            ),
        )
        .add(
            Ex::new(3, 2 * S, "GET", "/authorize?response_type=code&client_id=c&code_challenge=x&code_challenge_method=S256")
                .answer(500, "text/html", "<html><body><h1>Internal Server Error</h1><p>upstream identity provider timed out</p></body></html>"),
        );
        cap.close(60 * S);
        let report = explain(&cap.capture(), "x");
        let f = report
            .findings
            .iter()
            .find(|f| f.exchange == Some(3) && f.check == STEP_REFUSED)
            .unwrap_or_else(|| panic!("{:#?}", report.findings));
        assert_eq!(f.severity, Severity::Error);
        assert!(f.message.contains("HTTP 500"), "{}", f.message);
        assert!(
            f.message.contains("upstream identity provider timed out"),
            "the server's own words: {}",
            f.message
        );
        let silence = report.silence.expect("silent");
        assert!(
            silence
                .expected_next
                .contains("tried at #3 and refused: HTTP 500"),
            "{}",
            silence.expected_next
        );
    }

    #[test]
    fn a_refused_initialize_gets_one_finding_and_the_silence_quotes_the_refusal() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 0, &rq(1, "initialize")).answer(
            400,
            "application/json",
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"Server already initialized"}}"#,
        ));
        cap.close(30 * S);
        let report = explain(&cap.capture(), "x");
        assert_eq!(at(&report.findings, 1).len(), 1, "{:#?}", report.findings);
        let silence = report.silence.expect("silent");
        assert!(
            silence.expected_next.contains("tried at #1 and refused")
                && silence.expected_next.contains("Server already initialized"),
            "{}",
            silence.expected_next
        );
    }

    #[test]
    fn a_405_on_the_endpoint_the_client_posted_to_is_named_but_a_refused_get_stream_is_not() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 0, &rq(1, "initialize"))
                .json(&init_ok(1, "2025-06-18"))
                .rh("mcp-session-id", "s-1"),
        )
        .add(
            Ex::get(2, S)
                .h("mcp-session-id", "s-1")
                .h("mcp-protocol-version", "2025-06-18")
                .h("accept", "text/event-stream")
                .status(405),
        )
        .add(
            Ex::post(3, 2 * S, &rq(2, "tools/list"))
                .h("mcp-session-id", "s-1")
                .h("mcp-protocol-version", "2025-06-18")
                .answer(405, "text/plain", "Method Not Allowed")
                .rh("allow", "GET"),
        );
        cap.close(30 * S);
        let report = explain(&cap.capture(), "x");
        assert!(at(&report.findings, 2).is_empty(), "{:#?}", report.findings);
        assert!(
            !at(&report.findings, 3).is_empty(),
            "{:#?}",
            report.findings
        );
    }
}

#[cfg(test)]
mod listed {
    /// docs/checks.md names every check a finding can carry, and nothing else.
    #[test]
    fn every_check_is_on_the_checks_page() {
        let page = include_str!("../../../../docs/checks.md");
        let listed: std::collections::BTreeSet<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let mut ids: std::collections::BTreeSet<&str> = super::all().iter().map(|c| c.id).collect();
        // Ids a check reports besides its own.
        ids.extend([
            super::STEP_REFUSED,
            "era-fallback",
            "initialize-refused",
            "mcp-name-header",
            "mcp-headers-stripped",
            "session-lost",
        ]);
        assert_eq!(listed, ids);
    }
}
