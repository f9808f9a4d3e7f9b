//! `mcptap explain`: the stages a session reached, where the client went silent, the
//! tokens issued and presented, and the rules broken — as one screen or as JSON.

use std::fmt::Write as _;

use crate::capture::reader::Capture;
use crate::mcp::checks::Severity;
use crate::mcp::era::Era;
pub use crate::mcp::explanation::{explain, explain_file, Explanation, StageReport};
use crate::mcp::session::{Reached, Session, StageId};
use crate::style::wrap;
pub use crate::style::Style;

fn secs(t: u64) -> String {
    format!("+{:.3}s", t as f64 / 1e6)
}

/// The one-screen human report.
pub fn render(capture: &Capture, report: &Explanation, style: Style) -> String {
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
    let _ = writeln!(out, "{} {}", style.bold("era"), era_line(&session));
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
            Reached::NotApplicable if !s.id.in_era(session.negotiation.era) => (
                style.dim("-"),
                style.dim(if s.id.in_era(Era::Modern) {
                    "not in the 2025 revisions"
                } else {
                    "not in 2026-07-28"
                }),
            ),
            Reached::NotApplicable if s.id == StageId::Listen => (
                style.dim("-"),
                style.dim("optional: no subscriptions/listen"),
            ),
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

    if !report.round_trips.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Rounds (input_required)"));
        for trip in &report.round_trips {
            let steps: Vec<String> = trip
                .attempts
                .iter()
                .map(|a| match a.answer {
                    "input_required" if a.input_requests.is_empty() => {
                        format!("#{} input_required", a.ex)
                    }
                    "input_required" => format!(
                        "#{} input_required ({})",
                        a.ex,
                        a.input_requests
                            .iter()
                            .map(|(_, m)| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    other => format!("#{} {other}", a.ex),
                })
                .collect();
            let fate = if trip.completed() {
                style.green("completed")
            } else {
                style.red("never completed")
            };
            let _ = writeln!(out, "  {}: {} — {fate}", trip.label(), steps.join(" → "));
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

/// The era in words, with its evidence: `2026-07-28 (server/discover answered at #3)`.
fn era_line(session: &Session<'_>) -> String {
    let n = &session.negotiation;
    let probe = || {
        format!(
            "{} at #{}",
            n.probe_method.as_deref().unwrap_or("the probe"),
            n.probe.unwrap_or_default()
        )
    };
    let offered = if n.server_versions.is_empty() {
        String::new()
    } else {
        format!("; the server offers {}", n.server_versions.join(", "))
    };
    match n.era {
        Era::Modern => match n.probe {
            Some(_) => format!("{} ({} answered{offered})", n.era.label(), probe()),
            None => format!(
                "{} (the client's own requests; none was answered past the authorization gate)",
                n.era.label()
            ),
        },
        Era::Legacy => match &n.protocol_version {
            Some(v) => format!("2025 ({v}, opened with initialize)"),
            None => n.era.label().into(),
        },
        Era::Fallback => format!(
            "{} ({} refused, initialize at #{}{offered})",
            n.era.label(),
            probe(),
            n.initialize.unwrap_or_default()
        ),
        Era::FailedNegotiation => format!(
            "{} ({} answered {}, and no initialize followed)",
            n.era.label(),
            probe(),
            n.probe_answer
                .as_ref()
                .map(|a| a.describe())
                .unwrap_or_default()
        ),
        Era::Unknown => n.era.label().into(),
    }
}
