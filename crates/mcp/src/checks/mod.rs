//! The checks `mcptap explain` runs: each has a stable id, a severity, the spec rule it
//! enforces, and reports the exchange and the evidence when the rule is broken.

pub mod auth;
pub mod era;
pub mod rounds;
#[cfg(test)]
pub(crate) mod testing;
pub mod transport;

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
    checks
}

/// Runs every check; findings sorted by severity, then by exchange.
pub fn run(session: &Session<'_>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = all().iter().flat_map(|c| (c.run)(session)).collect();
    findings.sort_by_key(|f| (f.severity, f.exchange.unwrap_or(u64::MAX)));
    findings
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
