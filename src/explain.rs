//! `mcptap explain`: the stages a session reached, where the client went silent, the
//! tokens issued and presented, and the rules broken — as one screen or as JSON.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;

use serde::Serialize;

use crate::capture::reader::Capture;
use crate::mcp::checks::{self, Finding, Severity};
use crate::mcp::session::{Reached, Session, Silence, StageId, TokenLine};

/// The report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub capture: String,
    pub session_id: String,
    pub exchanges: usize,
    pub stages: Vec<StageReport>,
    pub silence: Option<Silence>,
    pub tokens: Vec<TokenLine>,
    pub findings: Vec<Finding>,
    /// Problems met reading the capture.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StageReport {
    pub id: &'static str,
    pub reached: bool,
    /// `reached`, `missing`, or `not_observed` (it happened where the proxy could not see).
    pub status: Reached,
    pub first_exchange: Option<u64>,
    /// µs since the session start.
    pub t: Option<u64>,
}

/// Explains a capture already read.
pub fn explain(capture: &Capture, name: &str) -> Report {
    let session = Session::analyze(capture);
    let findings = checks::run(&session);
    Report {
        capture: name.to_string(),
        session_id: capture.session.session_id.clone(),
        exchanges: capture.exchanges.len(),
        stages: session
            .stages
            .iter()
            .map(|s| StageReport {
                id: s.id.id(),
                reached: s.reached == Reached::Reached,
                status: s.reached,
                first_exchange: s.first_exchange,
                t: s.t,
            })
            .collect(),
        silence: session.silence.clone(),
        tokens: session.tokens.clone(),
        findings,
        warnings: capture.warnings.clone(),
    }
}

/// Reads and explains a capture file.
pub fn explain_file(path: &Path) -> anyhow::Result<(Capture, Report)> {
    let capture = Capture::open(path)?;
    let report = explain(&capture, &path.display().to_string());
    Ok((capture, report))
}

/// Terminal styling, off when stdout is not a terminal or NO_COLOR is set.
#[derive(Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn detect() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn plain() -> Style {
        Style { color: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
}

fn secs(t: u64) -> String {
    format!("+{:.3}s", t as f64 / 1e6)
}

/// The one-screen human report.
pub fn render(capture: &Capture, report: &Report, style: Style) -> String {
    let session = Session::analyze(capture);
    let name_of = |ex: u64| {
        capture
            .exchange(ex)
            .map(|x| format!("#{ex} {} {}", x.method(), x.path()))
            .unwrap_or_else(|| format!("#{ex}"))
    };
    let mut out = String::new();
    let route = capture
        .session
        .routes
        .iter()
        .map(|r| format!("{} → {}", r.listen, r.upstream))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "{} {} · started {} · {} exchanges on {} connections · {route}",
        style.bold("session"),
        capture.session.session_id,
        capture.started,
        capture.exchanges.len(),
        capture.connections.len()
    );
    if capture.exchanges.is_empty() {
        let _ = writeln!(
            out,
            "\nNo request reached the proxy. If a client was pointed at it, the failure is before HTTP: DNS, a firewall, or TLS{}.",
            if capture.tls_errors.is_empty() { String::new() } else { format!(" ({} failed handshakes, below)", capture.tls_errors.len()) }
        );
    }

    let _ = writeln!(out, "\n{}", style.bold("Stages"));
    for s in &session.stages {
        let (mark, when) = match s.reached {
            Reached::Reached => (style.green("✓"), s.t.map(secs).unwrap_or_default()),
            Reached::NotObserved => (style.dim("·"), style.dim("not observed here")),
            Reached::NotApplicable if s.id == StageId::Call => {
                (style.dim("-"), style.dim("a probe calls no tools"))
            }
            Reached::NotApplicable => (
                style.dim("-"),
                style.dim("no authorization in this session"),
            ),
            Reached::Missing => (style.red("✗"), String::new()),
        };
        let at = s.first_exchange.map(&name_of).unwrap_or_default();
        let line = format!("  {mark} {:<21} {:<10} {at}", s.id.id(), when);
        let _ = writeln!(out, "{}", line.trim_end());
    }

    let _ = writeln!(out, "\n{}", style.bold("Silence"));
    match &session.silence {
        None if session.stage(StageId::Call).reached == Reached::Reached => {
            let _ = writeln!(out, "  none: the session reached tools/call.");
        }
        None if session.stage(StageId::Call).reached == Reached::NotApplicable => {
            let _ = writeln!(
                out,
                "  none: the probe went as far as it goes (tools/list; it calls no tools)."
            );
        }
        None => {
            let _ = writeln!(out, "  nothing reached the proxy.");
        }
        Some(sil) => {
            let stage = session.stage(sil.after_stage);
            let at = stage.first_exchange.map(&name_of).unwrap_or_default();
            let after = if sil.other_requests.is_empty() {
                "nothing more reached the proxy".to_string()
            } else {
                format!(
                    "only {} followed, none of them the next step",
                    sil.other_requests
                        .iter()
                        .take(5)
                        .map(|ex| name_of(*ex))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = writeln!(
                out,
                "  {} after {} ({} {at}): {after} in the {:.1} s the capture went on.",
                style.yellow("Went quiet"),
                sil.after_stage.id(),
                secs(sil.at_t),
                sil.quiet_for_s
            );
            let _ = writeln!(out, "  Expected next: {}.", sil.expected_next);
        }
    }

    if !report.tokens.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Tokens"));
        for t in &report.tokens {
            let fate = match t.accepted {
                None => style.red("never presented"),
                Some(true) => {
                    style.green(&format!("presented {} times, accepted", t.presented.len()))
                }
                Some(false) => style.red(&format!(
                    "presented {} times, rejected every time",
                    t.presented.len()
                )),
            };
            let _ = writeln!(
                out,
                "  fp={} ({}) issued by {} at {} — {fate}",
                t.fp,
                t.grant_type,
                name_of(t.issued_by),
                secs(t.issued_t)
            );
        }
    }

    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let _ = writeln!(
        out,
        "\n{} ({errors} errors, {warnings} warnings, {} notes)",
        style.bold("Findings"),
        report.findings.len() - errors - warnings
    );
    if report.findings.is_empty() {
        let _ = writeln!(out, "  none: every check held.");
    }
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => style.red("error  "),
            Severity::Warning => style.yellow("warning"),
            Severity::Info => style.dim("note   "),
        };
        let at = f.exchange.map(&name_of).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {sev} {}  {}  {}",
            style.bold(f.check),
            at,
            style.dim(f.spec)
        );
        for line in wrap(&f.message, 88) {
            let _ = writeln!(out, "          {line}");
        }
        for e in &f.evidence {
            let _ = writeln!(out, "          {} {}", style.dim("·"), e);
        }
    }
    out
}

/// Wraps text at word boundaries.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
