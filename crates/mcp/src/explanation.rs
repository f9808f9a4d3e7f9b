//! The explanation of a capture: the stages its session reached, where the client went
//! silent, the tokens issued and presented, and the checks' findings. `mcptap explain`
//! prints it; the report, the demo and the proxy's silence notice use it too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use serde::Serialize;

use super::checks::{self, Finding, Severity};
use super::era::{Era, Negotiation};
use super::flows;
use super::rounds::RoundTrip;
use super::session::{FactsBuilder, Reached, ServerFacts, Session, Silence, StageId, TokenLine};
use mcptap_capture::reader::{Capture, Exchange, Exchanges};

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
    /// Exchanges of a long flow left out of its analysis: repeated successful POSTs between
    /// its first and its last (see [`KEEP_FIRST`]). They count in `exchanges`.
    #[serde(skip_serializing_if = "is_zero")]
    pub folded: usize,
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
    let split = flows::split(capture, &facts);
    // One client (or none): the whole capture is its flow, analysed once.
    if is_whole(&split) {
        let mut top = explain_with(capture, name, facts);
        top.other_traffic = split.other;
        return top;
    }
    let reports: Vec<FlowReport> = split
        .flows
        .iter()
        .map(|flow| flow_report(flow, &capture.subset(&flow.exchanges), name, &facts, 0))
        .collect();
    let choice = choose(&reports);
    let chosen = capture.subset(&reports[choice.number - 1].exchange_ids);
    let mut top = explain_with(&chosen, name, facts);
    top.exchanges = capture.exchanges.len();
    top.warnings = capture.warnings.clone();
    with_flows(top, reports, choice, split.other)
}

/// The top-level explanation (the chosen flow's) with the list of every flow.
fn with_flows(
    mut top: Explanation,
    mut reports: Vec<FlowReport>,
    choice: FlowChoice,
    other: Vec<u64>,
) -> Explanation {
    for r in &mut reports {
        r.explanation.warnings.clear();
    }
    top.flows = reports;
    top.flow = Some(choice);
    top.other_traffic = other;
    top
}

/// Whether a capture is explained as one: it holds no client flow (other traffic at most), or
/// one and nothing else.
fn is_whole(split: &flows::Split) -> bool {
    split.flows.is_empty() || (split.flows.len() == 1 && split.other.is_empty())
}

/// One flow, explained on its own from `part` (the flow's exchanges).
fn flow_report(
    flow: &flows::Flow,
    part: &Capture,
    name: &str,
    facts: &ServerFacts,
    folded: usize,
) -> FlowReport {
    let mut explanation = explain_with(part, name, facts.clone());
    explanation.exchanges = flow.exchanges.len();
    explanation.folded = folded;
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
}

/// Which flows' exchanges [`explain_file`] keeps, for the caller to show them in full.
pub enum Keep<'k> {
    /// The flow `explain` chooses.
    Chosen,
    /// Flow N.
    Flow(usize),
    /// Every flow, each handed to the function as soon as it has been analysed (and then
    /// dropped): its exchanges and its report.
    Each(&'k mut dyn FnMut(&Capture, &ServerFacts, &FlowReport)),
}

/// A capture explained as it streamed by.
pub struct Streamed {
    /// The capture without its exchanges: its session, connections, notes and warnings.
    pub capture: Capture,
    pub report: Explanation,
    /// The exchanges of the flows kept (by [`Keep`]), by flow number; a capture of one
    /// client has its one flow as number 1.
    pub parts: BTreeMap<usize, Capture>,
    /// What the server is known to be, for analysing a part again.
    pub facts: ServerFacts,
    /// A few of the other traffic's requests (`GET /favicon.ico`), for the reader.
    pub other_sample: Vec<String>,
}

/// What one streaming pass over a capture learns: its flows, what its server is, and the
/// capture without its exchanges.
pub struct Scan {
    pub capture: Capture,
    pub facts: ServerFacts,
    pub split: flows::Split,
    pub exchanges: usize,
}

/// Reads a capture file once, keeping only what the flow rules need of each exchange.
pub fn scan(path: &Path) -> anyhow::Result<Scan> {
    let mut pass = Exchanges::open(path)?;
    let mut marker = flows::Marker::default();
    let mut facts = FactsBuilder::default();
    let mut exchanges = 0usize;
    while let Some(x) = pass.next_exchange()? {
        facts.add(&x);
        marker.add(&x, &pass.capture().connections);
        exchanges += 1;
    }
    let facts = facts.finish();
    let split = marker.split(&facts);
    Ok(Scan {
        capture: pass.into_capture(),
        facts,
        split,
        exchanges,
    })
}

/// How much of one flow is analysed in full: its first exchanges, its last, and up to this
/// many failures in between. What lies between, repeated successful POSTs, is counted and
/// left out, so a day-long session costs no more memory than an hour's.
pub const KEEP_FIRST: usize = 200;
pub const KEEP_LAST: usize = 200;
pub const KEEP_FAILED: usize = 200;

/// One flow's exchanges as they stream by, folded: its first `first`, its last `last` and up
/// to `failed` between them that are not [`routine`] are kept, the rest counted.
pub struct Folder {
    windows: (usize, usize, usize),
    first: Vec<Exchange>,
    failed: Vec<Exchange>,
    last: VecDeque<Exchange>,
    folded: usize,
}

impl Default for Folder {
    /// As `explain` folds: [`KEEP_FIRST`], [`KEEP_LAST`], [`KEEP_FAILED`].
    fn default() -> Self {
        Folder::new(KEEP_FIRST, KEEP_LAST, KEEP_FAILED)
    }
}

impl Folder {
    pub fn new(first: usize, last: usize, failed: usize) -> Folder {
        Folder {
            windows: (first, last, failed),
            first: Vec::new(),
            failed: Vec::new(),
            last: VecDeque::new(),
            folded: 0,
        }
    }

    pub fn push(&mut self, x: Exchange) {
        let (first, last, failed) = self.windows;
        if self.first.len() < first {
            self.first.push(x);
            return;
        }
        self.last.push_back(x);
        if self.last.len() <= last {
            return;
        }
        let Some(out) = self.last.pop_front() else {
            return;
        };
        if !routine(&out) && self.failed.len() < failed {
            self.failed.push(out);
        } else {
            self.folded += 1;
        }
    }

    /// The exchanges kept, in order, and how many were left out.
    pub fn into_exchanges(self) -> (Vec<Exchange>, usize) {
        let mut all = self.first;
        all.extend(self.failed);
        all.extend(self.last);
        all.sort_by_key(|x| x.ex);
        (all, self.folded)
    }
}

/// Of `exchanges` (in order), the ids of the first `first`, the last `last` and up to
/// `failed` between them that are not [`routine`]; and how many were left out.
pub fn fold_ids(
    exchanges: &[&Exchange],
    first: usize,
    last: usize,
    failed: usize,
) -> (std::collections::BTreeSet<u64>, usize) {
    let n = exchanges.len();
    let mut kept: std::collections::BTreeSet<u64> = exchanges
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < first || *i + last >= n)
        .map(|(_, x)| x.ex)
        .collect();
    let middle = exchanges
        .iter()
        .take(n.saturating_sub(last))
        .skip(first)
        .filter(|x| !routine(x))
        .take(failed)
        .map(|x| x.ex);
    kept.extend(middle);
    let left_out = n - kept.len();
    (kept, left_out)
}

/// A POST answered 2xx whose answer names no error: the repeated tool call a long session is
/// made of.
pub fn routine(x: &Exchange) -> bool {
    let has_error = |bytes: &[u8]| memchr::memmem::find(bytes, b"\"error\"").is_some();
    x.method() == "POST"
        && x.status().is_some_and(|s| (200..300).contains(&s))
        && !has_error(&x.response_body.bytes)
        && !x
            .sse
            .iter()
            .any(|(_, e)| e.data.as_deref().is_some_and(|d| has_error(d.as_bytes())))
}

/// Reads and explains a capture file (its parts, a folder, a pattern) in bounded memory: a
/// first pass notes what the flow rules and the server's facts need of each exchange, a
/// second groups the exchanges by flow and analyses each flow when its last exchange has
/// gone by, keeping of each at most [`KEEP_FIRST`] + [`KEEP_FAILED`] + [`KEEP_LAST`]
/// exchanges. Memory grows with the flows open at one time, not with the capture.
pub fn explain_file(path: &Path, keep: Keep<'_>) -> anyhow::Result<Streamed> {
    let name = path.display().to_string();
    // 1. Facts and flow evidence.
    let Scan {
        capture: skeleton,
        facts,
        split,
        exchanges: total,
    } = scan(path)?;

    // 2. Each flow, analysed as its last exchange goes by.
    const OTHER: usize = usize::MAX;
    let flow_of: HashMap<u64, usize> = split
        .flows
        .iter()
        .flat_map(|f| f.exchanges.iter().map(move |&ex| (ex, f.number - 1)))
        .collect();
    let mut remaining: Vec<usize> = split.flows.iter().map(|f| f.exchanges.len()).collect();
    let mut open: HashMap<usize, Folder> = HashMap::new();
    let mut kept = Kept {
        keep,
        facts: &facts,
        reports: Vec::new(),
        parts: BTreeMap::new(),
        latest_troubled: None,
        latest: None,
    };
    let mut other_sample: Vec<String> = Vec::new();
    let whole = is_whole(&split);
    let mut all = Folder::default();
    // Reading and analysing share the work across two threads: this one reads the capture
    // again and hands each flow over as its last exchange goes by; the other analyses it.
    let (to_worker, flows_in) = std::sync::mpsc::sync_channel::<(usize, Folder)>(4);
    let (to_reader, done) = std::sync::mpsc::sync_channel::<(usize, Capture, FlowReport)>(4);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // Owned here, so that an error reading ends the worker rather than leaving it
        // waiting to hand over a result.
        let done = done;
        let (split, skeleton, facts, name) = (&split, &skeleton, &facts, &name);
        scope.spawn(move || {
            for (f, folder) in flows_in {
                let (exchanges, folded) = folder.into_exchanges();
                let part = skeleton.with_exchanges(exchanges, false);
                let report = flow_report(&split.flows[f], &part, name, facts, folded);
                if to_reader.send((f, part, report)).is_err() {
                    break;
                }
            }
        });
        let mut pass = Exchanges::open(path)?;
        while let Some(x) = pass.next_exchange()? {
            let f = flow_of.get(&x.ex).copied().unwrap_or(OTHER);
            if f == OTHER {
                let what = format!("{} {}", x.method(), x.path());
                if other_sample.len() < 4 && !other_sample.contains(&what) {
                    other_sample.push(what);
                }
            }
            if whole {
                all.push(x);
                continue;
            }
            if f == OTHER {
                continue;
            }
            open.entry(f).or_default().push(x);
            remaining[f] -= 1;
            if remaining[f] > 0 {
                continue;
            }
            let item = (f, open.remove(&f).unwrap_or_default());
            hand_over(item, &to_worker, &done, &mut kept, split)?;
        }
        // Flows whose last exchanges were not read again (the file changed between passes).
        let mut unfinished: Vec<(usize, Folder)> = open.drain().collect();
        unfinished.sort_by_key(|(f, _)| *f);
        for item in unfinished {
            hand_over(item, &to_worker, &done, &mut kept, split)?;
        }
        drop(to_worker);
        for (f, part, report) in done {
            kept.flow_done(&split.flows[f], part, report);
        }
        Ok(())
    })?;
    let Kept {
        keep,
        mut reports,
        mut parts,
        ..
    } = kept;
    reports.sort_by_key(|r| r.number);
    let report = if whole {
        let (exchanges, folded) = all.into_exchanges();
        let part = skeleton.with_exchanges(exchanges, true);
        let mut top = explain_with(&part, &name, facts.clone());
        top.exchanges = total;
        top.folded = folded;
        top.other_traffic = split.other;
        parts.insert(1, part);
        top
    } else {
        let choice = choose(&reports);
        let mut top = match parts.get(&choice.number) {
            Some(part) => explain_with(part, &name, facts.clone()),
            None => explain_with(
                &skeleton.with_exchanges(Vec::new(), false),
                &name,
                facts.clone(),
            ),
        };
        top.folded = reports
            .iter()
            .find(|r| r.number == choice.number)
            .map_or(0, |r| r.explanation.folded);
        if matches!(keep, Keep::Chosen) {
            parts.retain(|n, _| *n == choice.number);
        }
        top.exchanges = total;
        top.warnings = skeleton.warnings.clone();
        with_flows(top, reports, choice, split.other)
    };
    Ok(Streamed {
        capture: skeleton,
        report,
        parts,
        facts,
        other_sample,
    })
}

/// The flows analysed so far, and the exchanges of those kept.
struct Kept<'k, 'f> {
    keep: Keep<'k>,
    facts: &'f ServerFacts,
    reports: Vec<FlowReport>,
    parts: BTreeMap<usize, Capture>,
    /// For the chosen flow: the latest to begin of the troubled, and of all.
    latest_troubled: Option<(u64, usize)>,
    latest: Option<(u64, usize)>,
}

impl Kept<'_, '_> {
    /// Takes a flow's report, and keeps its exchanges if `keep` asks for them.
    fn flow_done(&mut self, flow: &flows::Flow, part: Capture, report: FlowReport) {
        let number = flow.number;
        let at = (flow.first_t, number);
        match &mut self.keep {
            Keep::Flow(n) => {
                if *n == number {
                    self.parts.insert(number, part);
                }
            }
            Keep::Each(show) => show(&part, self.facts, &report),
            Keep::Chosen => {
                let later = |slot: Option<(u64, usize)>| slot.is_none_or(|s| at > s);
                if troubled(&report) && later(self.latest_troubled) {
                    self.latest_troubled = Some(at);
                }
                if later(self.latest) {
                    self.latest = Some(at);
                }
                let kept = [self.latest_troubled, self.latest].map(|s| s.map(|s| s.1));
                if kept.contains(&Some(number)) {
                    self.parts.insert(number, part);
                }
                self.parts.retain(|n, _| kept.contains(&Some(*n)));
            }
        }
        self.reports.push(report);
    }
}

/// Gives a flow to the analysing thread; while it is four flows behind, takes its results
/// first, so memory stays bounded and neither thread waits on the other.
fn hand_over(
    mut item: (usize, Folder),
    to_worker: &std::sync::mpsc::SyncSender<(usize, Folder)>,
    done: &std::sync::mpsc::Receiver<(usize, Capture, FlowReport)>,
    kept: &mut Kept<'_, '_>,
    split: &flows::Split,
) -> anyhow::Result<()> {
    loop {
        match to_worker.try_send(item) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                item = back;
                let (f, part, report) = done.recv()?;
                kept.flow_done(&split.flows[f], part, report);
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                anyhow::bail!("the analysing thread stopped")
            }
        }
    }
    while let Ok((f, part, report)) = done.try_recv() {
        kept.flow_done(&split.flows[f], part, report);
    }
    Ok(())
}

/// Whether a flow went silent, or stopped short of a tool call with an error.
fn troubled(f: &FlowReport) -> bool {
    let called = f
        .explanation
        .stages
        .iter()
        .any(|s| s.id == StageId::Call.id() && s.status == Reached::Reached);
    f.explanation.silence.is_some() || (f.errors > 0 && !called)
}

/// The flow most likely to be the user's problem: the latest to begin of those that went
/// silent or failed (stopped short of a tool call with an error finding), else the latest.
/// A flow that went all the way is not chosen for its findings alone: its neighbours that
/// stopped are what the user is asking about.
fn choose(flows: &[FlowReport]) -> FlowChoice {
    let troubled: Vec<&FlowReport> = flows.iter().filter(|f| troubled(f)).collect();
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

fn is_zero(n: &usize) -> bool {
    *n == 0
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
        folded: 0,
        flows: Vec::new(),
        flow: None,
        other_traffic: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testing::{init_ok, ok, rq, Cap, Ex};

    const S: u64 = 1_000_000;

    fn file_of(cap: &Cap) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), cap.lines.join("\n") + "\n").unwrap();
        file
    }

    fn json(e: &Explanation) -> serde_json::Value {
        let mut v = serde_json::to_value(e).unwrap();
        v["capture"] = serde_json::Value::Null;
        v
    }

    /// A client's session: initialize (with a session id), then `calls` tools/list calls, the
    /// one of exchange `fail` answered 500.
    fn session(cap: &mut Cap, first_ex: u64, t: u64, token: &str, calls: u64, fail: u64) -> u64 {
        let id = format!("session-{token}");
        cap.add(
            Ex::post(first_ex, t, &rq(1, "initialize"))
                .h("authorization", &format!("Bearer {token}"))
                .rh("mcp-session-id", &id)
                .json(&init_ok(1, "2025-06-18")),
        );
        for i in 0..calls {
            let ex = first_ex + 1 + i;
            let call = Ex::post(ex, t + (i + 1) * 20_000, &rq(i + 2, "tools/list"))
                .h("authorization", &format!("Bearer {token}"))
                .h("mcp-session-id", &id);
            cap.add(if ex == fail {
                call.answer(500, "text/plain", "replica lost")
            } else {
                call.json(&ok(i + 2))
            });
        }
        first_ex + calls + 1
    }

    #[test]
    fn streamed_it_says_what_it_says_of_the_capture_read_whole() {
        let mut cap = Cap::new();
        let next = session(&mut cap, 1, 0, "token-a", 3, 0);
        let next = session(&mut cap, next, 2 * S, "token-b", 0, 0);
        cap.add(
            Ex::new(next, 3 * S, "GET", "/favicon.ico")
                .h("user-agent", "scanner/2")
                .on(2)
                .status(404),
        );
        cap.close(10 * S);
        let file = file_of(&cap);
        let whole = explain(&cap.capture(), &file.path().display().to_string());
        let streamed = explain_file(file.path(), Keep::Chosen).unwrap();
        assert_eq!(whole.flows.len(), 2);
        assert_eq!(whole.other_traffic, [next]);
        assert_eq!(json(&streamed.report), json(&whole));
        // The chosen flow (the one silent after initialize) is kept to be shown.
        assert_eq!(streamed.parts.keys().collect::<Vec<_>>(), [&2]);
        assert_eq!(streamed.other_sample, ["GET /favicon.ico"]);
    }

    #[test]
    fn a_long_flow_is_folded_and_its_failures_and_its_end_are_still_analysed() {
        let mut cap = Cap::new();
        let calls = (KEEP_FIRST + KEEP_LAST + 300) as u64;
        // One call in the middle fails.
        let failed = 1 + KEEP_FIRST as u64 + 100;
        let next = session(&mut cap, 1, 0, "token-a", calls, failed);
        cap.close(100 * S);
        let file = file_of(&cap);
        let mut shown = Vec::new();
        let streamed = explain_file(file.path(), Keep::Chosen).unwrap();
        let report = &streamed.report;
        assert_eq!(report.exchanges as u64, next - 1);
        assert_eq!(
            report.folded as u64,
            calls + 1 - (KEEP_FIRST + KEEP_LAST + 1) as u64
        );
        let part = &streamed.parts[&1];
        assert!(part.exchange(failed).is_some(), "the failure is kept");
        assert!(part.exchange(next - 1).is_some(), "the end is kept");
        shown.extend(part.exchanges.iter().map(|x| x.ex));
        assert_eq!(shown.len(), KEEP_FIRST + KEEP_LAST + 1);
        // What the whole capture says of its stages, the folded one says too.
        let whole = explain(&cap.capture(), "x");
        assert_eq!(
            serde_json::to_value(&report.stages).unwrap(),
            serde_json::to_value(&whole.stages).unwrap()
        );
        assert_eq!(
            report.silence.as_ref().map(|s| s.after_stage),
            whole.silence.as_ref().map(|s| s.after_stage)
        );
    }
}
