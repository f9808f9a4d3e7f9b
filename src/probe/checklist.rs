//! What the probe found, step by step: the checklist on screen and its `--json` form.

use std::fmt::Write as _;

use serde::Serialize;

use crate::mcp::checks::{Finding, Severity};

/// A step's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Done, nothing worse than a note.
    Pass,
    /// Done, with warnings.
    Warn,
    /// Failed, or an error-severity finding.
    Fail,
    /// Not run (an earlier step failed, or a flag is needed).
    Skip,
}

/// One step of the connector's path.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Stable id: `dns`, `tcp`, `tls`, `reach`, `challenge`, `resource_metadata`,
    /// `auth_server_metadata`, `registration`, `authorize`, `token`, `initialize`,
    /// `initialized`, `get_stream`, `list`, `close`; `session` for findings about the whole
    /// capture.
    pub id: &'static str,
    pub status: Status,
    /// What was seen, in one line.
    pub summary: String,
    /// The capture's exchanges this step made.
    pub exchanges: Vec<u64>,
    /// Milliseconds the step took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<f64>,
    pub findings: Vec<Finding>,
    /// The step did not get what a connector needs (independent of findings).
    #[serde(skip)]
    pub failed: bool,
}

impl Step {
    pub fn new(id: &'static str) -> Step {
        Step {
            id,
            status: Status::Pass,
            summary: String::new(),
            exchanges: Vec::new(),
            took_ms: None,
            findings: Vec::new(),
            failed: false,
        }
    }

    pub fn skipped(id: &'static str, why: impl Into<String>) -> Step {
        Step {
            status: Status::Skip,
            summary: why.into(),
            ..Step::new(id)
        }
    }

    /// Sets the status from `failed` and the findings.
    pub fn settle(&mut self) {
        if self.status == Status::Skip {
            return;
        }
        let worst = self.findings.iter().map(|f| f.severity).min();
        self.status = if self.failed || worst == Some(Severity::Error) {
            Status::Fail
        } else if worst == Some(Severity::Warning) {
            Status::Warn
        } else {
            Status::Pass
        };
        self.findings
            .sort_by_key(|f| (f.severity, f.exchange.unwrap_or(u64::MAX)));
    }
}

/// The whole probe, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Checklist {
    pub url: String,
    /// `generic` or `claude`.
    pub profile: &'static str,
    /// The capture file written.
    pub capture: String,
    pub steps: Vec<Step>,
    pub errors: usize,
    pub warnings: usize,
}

impl Checklist {
    pub fn count(&mut self) {
        let all = || self.steps.iter().flat_map(|s| &s.findings);
        self.errors = all().filter(|f| f.severity == Severity::Error).count()
            + self
                .steps
                .iter()
                .filter(|s| s.failed && !s.findings.iter().any(|f| f.severity == Severity::Error))
                .count();
        self.warnings = all().filter(|f| f.severity == Severity::Warning).count();
    }
}

/// The checklist for a terminal (colour when `color`).
pub fn render(report: &Checklist, color: bool) -> String {
    let style = crate::style::Style::colored(color);
    let paint = |code: &str, s: &str| style.paint(code, s);
    let mut out = String::new();
    let _ = writeln!(out, "mcptap probe {} (as {})", report.url, report.profile);
    for step in &report.steps {
        let mark = match step.status {
            Status::Pass => paint("32", "✓"),
            Status::Warn => paint("33", "✓"),
            Status::Fail => paint("31", "✗"),
            Status::Skip => paint("2", "-"),
        };
        let took = step
            .took_ms
            .map(|ms| format!(" · {}", human_ms(ms)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {mark} {:<21} {}{took}",
            step.id,
            printable(&step.summary)
        );
        for f in &step.findings {
            let sev = match f.severity {
                Severity::Error => paint("31", "error  "),
                Severity::Warning => paint("33", "warning"),
                Severity::Info => paint("2", "info   "),
            };
            let _ = writeln!(out, "      {sev} {}: {}", f.check, printable(&f.message));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} error{}, {} warning{} · capture: {} (mcptap explain {})",
        report.errors,
        if report.errors == 1 { "" } else { "s" },
        report.warnings,
        if report.warnings == 1 { "" } else { "s" },
        report.capture,
        report.capture
    );
    out
}

/// Server-chosen text (a header, a JSON-RPC error message, a tool name) made safe for a
/// terminal: control characters are shown escaped, never sent to the terminal as they are.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn human_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let mut step = Step::new("list");
        step.summary =
            "POST tools/list → 200: 1 tool (\u{1b}[2J\u{1b}]0;owned\u{7}x\r\nfake ✓)".into();
        step.findings.push(Finding {
            check: "x",
            severity: Severity::Warning,
            message: "error message \u{1b}[31mred".into(),
            exchange: None,
            spec: "",
            evidence: vec![],
        });
        step.settle();
        let report = Checklist {
            url: "https://h.example/mcp".into(),
            profile: "generic",
            capture: "c.jsonl".into(),
            steps: vec![step],
            errors: 0,
            warnings: 1,
        };
        let text = render(&report, false);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b}[2J"), "{text}");
        // One step is one line: a CR LF in server text does not forge another.
        assert!(!text.contains("\nfake"), "{text}");
    }
}
