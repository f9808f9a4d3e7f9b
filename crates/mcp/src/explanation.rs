//! The explanation of a capture: the stages its session reached, where the client went
//! silent, the tokens issued and presented, and the checks' findings. `mcptap explain`
//! prints it; the report, the demo and the proxy's silence notice use it too.

use std::path::Path;

use serde::Serialize;

use super::checks::{self, Finding, Severity};
use super::era::{Era, Negotiation};
use super::flows;
use super::rounds::RoundTrip;
use super::session::{Reached, ServerFacts, Session, Silence, StageId, TokenLine};
use mcptap_capture::reader::Capture;

/// What `mcptap explain` says of a capture; `--json` prints it as it is.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub capture: String,
    pub session_id: String,
    pub exchanges: usize,
    /// The protocol era: `modern` (2026-07-28), `legacy` (2025, initialize), `fallback`
    /// (2025 after a refused 2026-07-28 probe), `failed_negotiation`, or `unknown`.
    pub era: Era,
    /// How the era was negotiated: the probe, its answer, the versions the server named.
    pub negotiation: Negotiation,
    pub stages: Vec<StageReport>,
    pub silence: Option<Silence>,
    pub tokens: Vec<TokenLine>,
    /// Calls answered `input_required` (2026-07-28), each with its rounds.
    pub round_trips: Vec<RoundTrip>,
    pub findings: Vec<Finding>,
    /// Problems met reading the capture.
    pub warnings: Vec<String>,
    /// The capture's client flows, when it holds more than one or other traffic besides
    /// (see [`flows`]); the fields above are then those of the flow named in `flow`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<FlowReport>,
    /// The flow the fields above describe, and why it was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowChoice>,
    /// Exchanges that belong to no MCP flow (favicons, health checks, scanners).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_traffic: Vec<u64>,
}

/// One client flow of a capture, explained on its own.
#[derive(Debug, Serialize)]
pub struct FlowReport {
    /// 1, 2, … in the order the flows began.
    pub number: usize,
    /// The client's address and User-Agent.
    pub client: String,
    /// µs since the session start: the flow's first request and the end of its last exchange.
    pub first_t: u64,
    pub last_t: u64,
    pub exchange_ids: Vec<u64>,
    /// The last stage of its ladder it reached.
    pub furthest_stage: Option<&'static str>,
    /// Its error-severity findings.
    pub errors: usize,
    #[serde(flatten)]
    pub explanation: Explanation,
}

/// Which flow `explain` explains first, and why.
#[derive(Debug, Clone, Serialize)]
pub struct FlowChoice {
    pub number: usize,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct StageReport {
    pub id: &'static str,
    pub reached: bool,
    /// `reached`, `missing`, `not_observed` (it happened where the proxy could not see), or
    /// `not_applicable` (not part of this flow: the other era's stage, say).
    pub status: Reached,
    pub first_exchange: Option<u64>,
    /// µs since the session start.
    pub t: Option<u64>,
}

/// Explains a capture already read: each client flow on its own when it holds several (or
/// other traffic besides), the top-level fields being those of the flow most likely to be the
/// user's problem.
pub fn explain(capture: &Capture, name: &str) -> Explanation {
    let facts = ServerFacts::of(capture);
    let whole = Session::analyze_with(capture, facts.clone());
    let split = flows::split(&whole);
    // One client (or none): the whole capture is its flow, analysed once.
    if split.flows.len() <= 1 && split.other.is_empty() {
        return explained(capture, name, whole);
    }
    if split.flows.is_empty() {
        let mut top = explained(capture, name, whole);
        top.other_traffic = split.other;
        return top;
    }
    drop(whole);
    let mut reports: Vec<FlowReport> = split
        .flows
        .iter()
        .map(|flow| {
            let part = capture.subset(&flow.exchanges);
            let explanation = explain_with(&part, name, facts.clone());
            FlowReport {
                number: flow.number,
                client: flow.client.clone(),
                first_t: flow.first_t,
                last_t: flow.last_t,
                exchange_ids: flow.exchanges.clone(),
                furthest_stage: explanation
                    .stages
                    .iter()
                    .rev()
                    .find(|s| s.status == Reached::Reached)
                    .map(|s| s.id),
                errors: explanation
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .count(),
                explanation,
            }
        })
        .collect();
    let choice = choose(&reports);
    let chosen = &reports[choice.number - 1];
    let part = capture.subset(&chosen.exchange_ids);
    let mut top = explain_with(&part, name, facts);
    top.exchanges = capture.exchanges.len();
    top.warnings = capture.warnings.clone();
    for r in &mut reports {
        r.explanation.warnings.clear();
    }
    top.flows = reports;
    top.flow = Some(choice);
    top.other_traffic = split.other;
    top
}

/// The flow most likely to be the user's problem: the latest to begin of those that went
/// silent or failed (stopped short of a tool call with an error finding), else the latest.
/// A flow that went all the way is not chosen for its findings alone: its neighbours that
/// stopped are what the user is asking about.
fn choose(flows: &[FlowReport]) -> FlowChoice {
    let troubled: Vec<&FlowReport> = flows
        .iter()
        .filter(|f| {
            let called = f
                .explanation
                .stages
                .iter()
                .any(|s| s.id == StageId::Call.id() && s.status == Reached::Reached);
            f.explanation.silence.is_some() || (f.errors > 0 && !called)
        })
        .collect();
    let latest = |list: &[&FlowReport]| {
        list.iter()
            .max_by_key(|f| (f.first_t, f.number))
            .map(|f| f.number)
    };
    match latest(&troubled) {
        Some(number) => {
            let f = &flows[number - 1];
            let what = match (&f.explanation.silence, f.errors) {
                (Some(s), 0) => format!("went silent after {}", s.after_stage.id()),
                (Some(s), n) => format!(
                    "went silent after {} with {n} error{}",
                    s.after_stage.id(),
                    plural(n)
                ),
                (None, n) => format!("stopped short with {n} error{}", plural(n)),
            };
            let why = if troubled.len() == 1 {
                format!("the one flow of {} that {what}", flows.len())
            } else {
                format!(
                    "the latest of the {} flows that went silent or failed; it {what}",
                    troubled.len()
                )
            };
            FlowChoice { number, why }
        }
        None => FlowChoice {
            number: latest(&flows.iter().collect::<Vec<_>>()).unwrap_or(1),
            why: format!(
                "the latest of {} flows; none went silent or failed",
                flows.len()
            ),
        },
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Explains a capture (or one flow of it) as one client's, with what is known of its server.
pub fn explain_with(capture: &Capture, name: &str, facts: ServerFacts) -> Explanation {
    explained(capture, name, Session::analyze_with(capture, facts))
}

/// The explanation of a session already analysed.
fn explained(capture: &Capture, name: &str, session: Session<'_>) -> Explanation {
    let findings = checks::run(&session);
    Explanation {
        capture: name.to_string(),
        session_id: capture.session.session_id.clone(),
        exchanges: capture.exchanges.len(),
        era: session.negotiation.era,
        negotiation: session.negotiation.clone(),
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
        round_trips: session.round_trips.clone(),
        findings,
        warnings: capture.warnings.clone(),
        flows: Vec::new(),
        flow: None,
        other_traffic: Vec::new(),
    }
}

/// Reads and explains a capture file.
pub fn explain_file(path: &Path) -> anyhow::Result<(Capture, Explanation)> {
    let capture = Capture::open(path)?;
    let report = explain(&capture, &path.display().to_string());
    Ok((capture, report))
}
