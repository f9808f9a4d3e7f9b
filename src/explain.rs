//! `mcptap explain`: the stages a session reached, where the client went silent, the
//! tokens issued and presented, and the rules broken — as one screen or as JSON.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use crate::capture::reader::{Capture, Exchange};
use crate::mcp::checks::Severity;
use crate::mcp::era::Era;
pub use crate::mcp::explanation::{
    explain, explain_file, Explanation, FlowReport, Keep, StageReport, Streamed,
};
use crate::mcp::session::{Reached, ServerFacts, Session, StageId};
use crate::style::wrap;
pub use crate::style::Style;

fn secs(t: u64) -> String {
    format!("+{:.3}s", t as f64 / 1e6)
}

/// Which flows the human report explains in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The flow `explain` chose (the top-level fields').
    Chosen,
    /// Flow N (1-based).
    Number(usize),
    /// Every flow, one after another.
    All,
}

/// The one-screen human report: with several client flows, a line per flow, then the chosen
/// flow in full.
pub fn render(capture: &Capture, report: &Explanation, style: Style) -> String {
    render_flows(capture, report, Which::Chosen, style)
}

/// The human report of a capture read whole, explaining `which` flows in full.
pub fn render_flows(capture: &Capture, report: &Explanation, which: Which, style: Style) -> String {
    let facts = ServerFacts::of(capture);
    let mut flow_text = |n: usize| {
        if report.flows.is_empty() {
            return Some(render_one(
                capture,
                Session::analyze(capture),
                report,
                style,
            ));
        }
        let f = report.flows.get(n.checked_sub(1)?)?;
        let part = capture.subset(&f.exchange_ids);
        let session = Session::analyze_with(&part, facts.clone());
        Some(render_one(&part, session, &f.explanation, style))
    };
    let sample = other_sample(
        report
            .other_traffic
            .iter()
            .filter_map(|ex| capture.exchange(*ex)),
    );
    render_with(capture, report, &mut flow_text, &sample, which, style)
}

/// The human report of a capture explained as it streamed by ([`explain_file`]): the flows
/// it kept are shown in full; with [`Which::All`], `each` holds every flow's text, rendered
/// with [`render_part`] as the flow went by.
pub fn render_streamed(
    streamed: &Streamed,
    each: &BTreeMap<usize, String>,
    which: Which,
    style: Style,
) -> String {
    let report = &streamed.report;
    let mut flow_text = |n: usize| {
        if let Some(text) = each.get(&n) {
            return Some(text.clone());
        }
        let part = streamed.parts.get(&n)?;
        let explanation = match report.flows.get(n - 1) {
            Some(f) if !report.flows.is_empty() => &f.explanation,
            _ => report,
        };
        Some(render_part(part, &streamed.facts, explanation, style))
    };
    let sample = streamed.other_sample.join(", ");
    render_with(
        &streamed.capture,
        report,
        &mut flow_text,
        &sample,
        which,
        style,
    )
}

/// One flow in full, from its exchanges.
pub fn render_part(
    part: &Capture,
    facts: &ServerFacts,
    explanation: &Explanation,
    style: Style,
) -> String {
    render_one(
        part,
        Session::analyze_with(part, facts.clone()),
        explanation,
        style,
    )
}

/// The report around each flow's own text (`flow_text(n)`, flow 1 for a capture of one).
fn render_with(
    capture: &Capture,
    report: &Explanation,
    flow_text: &mut dyn FnMut(usize) -> Option<String>,
    other_sample: &str,
    which: Which,
    style: Style,
) -> String {
    if report.flows.is_empty() {
        let mut out = flow_text(1).unwrap_or_default();
        if !report.other_traffic.is_empty() {
            let _ = writeln!(
                out,
                "\n{} {} exchanges belong to no MCP flow: {other_sample}.",
                style.bold("Other traffic"),
                report.other_traffic.len(),
            );
        }
        return out;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} · {} client flows{} · {} exchanges in all",
        style.bold("capture"),
        capture.session.session_id,
        report.flows.len(),
        if report.other_traffic.is_empty() {
            String::new()
        } else {
            format!(
                " and {} exchanges of other traffic",
                report.other_traffic.len()
            )
        },
        report.exchanges
    );
    let _ = writeln!(out, "\n{}", style.bold("Flows"));
    let _ = writeln!(
        out,
        "  flow {:<44} {:<10} {:<17} {:<15} {:<26} errors",
        "client", "era", "from – to", "furthest", "silent after"
    );
    for f in &report.flows {
        let e = &f.explanation;
        let silence = e
            .silence
            .as_ref()
            .map(|s| s.after_stage.id().to_string())
            .unwrap_or_else(|| "–".into());
        let line = format!(
            "  {:<4} {:<44} {:<10} {:<17} {:<15} {:<26} {}",
            format!(
                "{}{}",
                f.number,
                if report.flow.as_ref().is_some_and(|c| c.number == f.number) {
                    "*"
                } else {
                    ""
                }
            ),
            f.client,
            e.era.short(),
            format!(
                "{:.1}–{:.1}s",
                f.first_t as f64 / 1e6,
                f.last_t as f64 / 1e6
            ),
            f.furthest_stage.unwrap_or("–"),
            silence,
            f.errors
        );
        let line = if f.errors > 0 || e.silence.is_some() {
            style.yellow(line.trim_end())
        } else {
            line.trim_end().to_string()
        };
        let _ = writeln!(out, "{line}");
    }
    if !report.other_traffic.is_empty() {
        let _ = writeln!(
            out,
            "  other traffic: {} exchanges in no flow ({other_sample})",
            report.other_traffic.len(),
        );
    }
    let shown: Vec<&FlowReport> = match which {
        Which::Chosen => report
            .flow
            .as_ref()
            .and_then(|c| report.flows.get(c.number - 1))
            .into_iter()
            .collect(),
        Which::Number(n) => report.flows.get(n.wrapping_sub(1)).into_iter().collect(),
        Which::All => report.flows.iter().collect(),
    };
    for f in shown {
        let why = match (&report.flow, which) {
            (Some(c), Which::Chosen) => format!(" — {}", c.why),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "\n{}",
            style.bold(&format!("━━ Flow {} · {}{why}", f.number, f.client))
        );
        out.push_str(&flow_text(f.number).unwrap_or_default());
    }
    if which == Which::Chosen {
        let _ = writeln!(
            out,
            "\n{}",
            style.dim("Another flow: mcptap explain CAPTURE --flow N; every flow: --all.")
        );
    }
    out
}

/// A few of the other traffic's requests, for the reader to recognise it.
fn other_sample<'a>(exchanges: impl Iterator<Item = &'a Exchange>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for x in exchanges {
        let what = format!("{} {}", x.method(), x.path());
        if !seen.contains(&what) {
            seen.push(what);
        }
        if seen.len() == 4 {
            break;
        }
    }
    seen.join(", ")
}

/// One client's report.
fn render_one(
    capture: &Capture,
    session: Session<'_>,
    report: &Explanation,
    style: Style,
) -> String {
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
        report.exchanges,
        capture.connections.len()
    );
    if report.folded > 0 {
        let _ = writeln!(
            out,
            "{}",
            style.dim(&format!(
                "  ({} repeated successful POSTs in the middle of this flow were counted, not analysed: the first {}, the last {} and up to {} failures are)",
                report.folded,
                crate::mcp::explanation::KEEP_FIRST,
                crate::mcp::explanation::KEEP_LAST,
                crate::mcp::explanation::KEEP_FAILED
            ))
        );
    }
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
