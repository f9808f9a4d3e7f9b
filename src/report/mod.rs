//! `mcptap report`: one self-contained HTML page for a capture — a sequence diagram of the
//! session (client ↔ mcptap ↔ upstream), the stages and the silence point from `explain`,
//! the findings, and every exchange's headers, bodies and SSE events on click.
//!
//! The page carries its data as JSON in a `<script type="application/json">` element and
//! draws itself with the inline script in `page.js` (only the rows on screen are in the DOM,
//! so 10,000 exchanges stay responsive). Everything from the capture is attacker-controlled
//! text: it reaches the page only as escaped JSON and is put in the DOM with `textContent`,
//! and a Content-Security-Policy with hashes of the one style and the one script forbids
//! anything else from running or loading.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use serde::Serialize;

use crate::capture::model::{Headers, Timings, Upgrade};
use crate::capture::reader::{BodyData, Capture, Exchange};
use crate::mcp::diff;
use crate::mcp::explanation::{self as explain, Explanation};
use crate::mcp::jsonrpc::{self, Message};
use crate::mcp::session::{Reached, Role, ServerFacts, Session};

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// Bodies longer than this are cut in the page unless `--body-limit` says otherwise.
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 20;

const EXAMPLES: &str = "\
Examples:
  mcptap report captures/20261126T224832Z-3e9b4017.jsonl -o report.html
  mcptap report failing.jsonl --diff working.jsonl -o compare.html
  mcptap report big.jsonl -o - --body-limit 64KiB > report.html

The page is one file with no outside references: open it in any browser, attach it to a bug
report. It shows only what the capture holds, so redacted secrets stay redacted.";

/// Render a capture as one self-contained HTML page: a sequence diagram of the session,
/// the stages reached, where the client went silent, and the findings.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct ReportArgs {
    /// The capture file (JSONL) written by `mcptap proxy`.
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,

    /// Where to write the page (`-` for stdout). An existing file is replaced.
    #[arg(short, long, value_name = "FILE.html")]
    pub output: PathBuf,

    /// A second capture to show side by side, aligned as `mcptap diff` aligns them; each
    /// pair is marked with the fields that differ (noise suppressed).
    #[arg(long, value_name = "OTHER")]
    pub diff: Option<PathBuf>,

    /// Only client flow N of the capture (numbered from 1, as `mcptap explain` lists them),
    /// drawn alone however many flows the capture holds.
    #[arg(long, value_name = "N", conflicts_with = "diff")]
    pub flow: Option<usize>,

    /// Show at most this much of each body in the page (0: all of it). Accepts a KiB/MiB suffix.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = crate::args::parse_size)]
    pub body_limit: u64,
}

/// Runs `mcptap report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    for input in std::iter::once(&args.capture).chain(&args.diff) {
        if crate::args::same_file(input, &args.output) {
            anyhow::bail!(
                "-o {} is the capture itself: choose another file for the report",
                args.output.display()
            );
        }
    }
    let options = Options {
        body_limit: args.body_limit,
    };
    // One capture streams (a flow of it is read whole: it is the part asked for); two are
    // read whole to be aligned.
    let (html, count) = match (&args.diff, args.flow) {
        (None, None) => render_file(&args.capture, &options)?,
        (None, Some(_)) => {
            let (capture, name) = load(&args.capture, args.flow)?;
            (render(&capture, &name, &options), capture.exchanges.len())
        }
        (Some(other), _) => {
            let (a, b) = (load(&args.capture, None)?, load(other, None)?);
            let count = a.0.exchanges.len() + b.0.exchanges.len();
            (render_diff((&a.0, &a.1), (&b.0, &b.1), &options), count)
        }
    };
    if args.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(html.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the report to stdout")?;
    } else {
        std::fs::write(&args.output, html.as_bytes())
            .with_context(|| format!("writing the report {}", args.output.display()))?;
        eprintln!(
            "mcptap: wrote {} ({count} exchanges, {})",
            args.output.display(),
            human_bytes(html.len() as u64)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path, flow: Option<usize>) -> anyhow::Result<(Capture, String)> {
    let capture = crate::args::open_capture(path, flow)?;
    for warning in &capture.warnings {
        eprintln!("mcptap: warning: {warning}");
    }
    Ok((capture, path.display().to_string()))
}

/// How the page is built.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes of each body put in the page (0: no limit).
    pub body_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// The page for one capture.
pub fn render(capture: &Capture, name: &str, options: &Options) -> String {
    let report = explain::explain(capture, name);
    let data = PageData {
        generator: generator(),
        mode: "single",
        sessions: vec![SessionData::whole(capture, &report, name, options)],
        diff: None,
        diff_first: None,
    };
    page(&data, &format!("session {}", capture.session.session_id))
}

/// Two captures side by side, aligned as `mcptap diff` aligns them (by route, method,
/// normalised path, JSON-RPC method and role, with noise suppressed), each row marked with
/// the fields that differ.
pub fn render_diff(a: (&Capture, &str), b: (&Capture, &str), options: &Options) -> String {
    let comparison = diff::diff(a.0, a.1, b.0, b.1, &diff::Options::default());
    let rows = diff_rows(&comparison);
    let (report_a, report_b) = (explain::explain(a.0, a.1), explain::explain(b.0, b.1));
    let data = PageData {
        generator: generator(),
        mode: "diff",
        sessions: vec![
            SessionData::whole(a.0, &report_a, a.1, options),
            SessionData::whole(b.0, &report_b, b.1, options),
        ],
        diff: Some(rows),
        diff_first: comparison.first_divergence.map(|d| d.sentence),
    };
    page(
        &data,
        &format!(
            "sessions {} and {}",
            a.0.session.session_id, b.0.session.session_id
        ),
    )
}

/// One row of the side-by-side view: an aligned pair, or an exchange only one side has.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiffRow {
    pub a: Option<u64>,
    pub b: Option<u64>,
    /// What differs: the fields as `mcptap diff` names them (`body.resource`, `status`), or
    /// `only in A`, `only in B`, `order`; empty when the pair compares equal.
    pub differs: Vec<String>,
}

/// The rows of a comparison, in its order.
pub fn diff_rows(report: &diff::Comparison) -> Vec<DiffRow> {
    report
        .entries
        .iter()
        .map(|e| {
            let mut differs: Vec<String> = match e.kind {
                diff::EntryKind::Deleted => vec!["only in A".into()],
                diff::EntryKind::Inserted => vec!["only in B".into()],
                diff::EntryKind::Moved => vec!["order".into()],
                diff::EntryKind::Unchanged | diff::EntryKind::Changed => Vec::new(),
            };
            differs.extend(e.differences.iter().map(|d| d.field.clone()));
            DiffRow {
                a: e.a.as_ref().map(|x| x.ex),
                b: e.b.as_ref().map(|x| x.ex),
                differs,
            }
        })
        .collect()
}

fn generator() -> String {
    format!("mcptap {}", env!("CARGO_PKG_VERSION"))
}

/// The Content-Security-Policy of every page: nothing loads, only the page's own style and
/// script run (by hash), and images only from `data:`.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src '{}'; script-src '{}'; img-src data:; base-uri 'none'; form-action 'none'",
        sha256_source(CSS),
        sha256_source(JS)
    )
}

fn sha256_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

fn page(data: &PageData<'_>, title: &str) -> String {
    let json = script_json(data);
    let mut html = String::with_capacity(json.len() + CSS.len() + JS.len() + 1024);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"");
    html.push_str(&content_security_policy());
    html.push_str("\">\n<meta name=\"referrer\" content=\"no-referrer\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<meta name=\"generator\" content=\"");
    html.push_str(&escape_html(&data.generator));
    html.push_str("\">\n<title>mcptap report — ");
    html.push_str(&escape_html(title));
    html.push_str("</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>");
    html.push_str(CSS);
    html.push_str("</style>\n</head>\n<body>\n<noscript><p>This report draws itself with JavaScript; the data is in the <code>mcptap-data</code> element of the page source.</p></noscript>\n<div id=\"app\"></div>\n<script type=\"application/json\" id=\"mcptap-data\">");
    html.push_str(&json);
    html.push_str("</script>\n<script>");
    html.push_str(JS);
    html.push_str("</script>\n</body>\n</html>\n");
    html
}

/// JSON that is safe inside a `<script>` element: `<`, `>` and `&` only ever occur inside
/// JSON strings, where `\u003c` and friends mean the same characters, so `</script>` and
/// `<!--` cannot end or change the element. U+2028/2029 are escaped for old parsers.
pub fn script_json<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
    let mut out = String::with_capacity(json.len() + json.len() / 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for an HTML text node or a double-quoted attribute.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[derive(Serialize)]
struct PageData<'a> {
    generator: String,
    /// `single` or `diff`.
    mode: &'static str,
    sessions: Vec<SessionData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<Vec<DiffRow>>,
    /// `mcptap diff`'s sentence for the first divergence, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    diff_first: Option<String>,
}

#[derive(Serialize)]
struct SessionData<'a> {
    name: &'a str,
    session_id: &'a str,
    started: &'a str,
    tool_version: &'a str,
    redaction: &'a str,
    routes: Vec<(&'a str, &'a str)>,
    end_t: u64,
    clean: Option<bool>,
    warnings: &'a [String],
    notes: Vec<NoteData<'a>>,
    tls_errors: Vec<TlsErrorData<'a>>,
    /// The protocol era (`modern`, `legacy`, `fallback`, `failed_negotiation`, `unknown`) and
    /// its words; the stages are the era's ladder.
    era: &'static str,
    era_label: &'static str,
    stages: Vec<StageData>,
    silence: Option<SilenceData>,
    /// The capture's client flows (empty for a capture of one client); the stages, silence,
    /// tokens and findings are those of the chosen one.
    flows: Vec<FlowData<'a>>,
    flow_choice: Option<&'a str>,
    other_traffic: usize,
    tokens: &'a [crate::mcp::session::TokenLine],
    findings: &'a [crate::mcp::checks::Finding],
    conns: Vec<ConnData<'a>>,
    /// Every exchange of the capture, drawn or not.
    exchanges_total: usize,
    /// What a large capture's page leaves out, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    folded: Option<String>,
    exchanges: Vec<ExchangeData<'a>>,
}

/// One line of the flow table.
#[derive(Serialize)]
struct FlowData<'a> {
    number: usize,
    client: &'a str,
    era_label: &'static str,
    first_t: u64,
    last_t: u64,
    exchanges: usize,
    furthest_stage: Option<&'static str>,
    silent_after: Option<&'static str>,
    errors: usize,
    chosen: bool,
    /// Its exchanges are in the sequence (a large capture's page draws a few flows).
    drawn: bool,
}

#[derive(Serialize)]
struct NoteData<'a> {
    t: u64,
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct TlsErrorData<'a> {
    t: u64,
    peer: &'a str,
    sni: Option<&'a str>,
    reason: &'a str,
}

#[derive(Serialize)]
struct StageData {
    id: &'static str,
    title: &'static str,
    /// `reached`, `missing`, `not_observed` or `not_applicable`.
    status: crate::mcp::session::Reached,
    first_exchange: Option<u64>,
    t: Option<u64>,
}

#[derive(Serialize)]
struct SilenceData {
    after_stage: &'static str,
    after_title: &'static str,
    at_t: u64,
    /// The exchange that reached the stage the client stopped after.
    at_exchange: Option<u64>,
    expected_next: String,
    quiet_for_s: f64,
    other_requests: Vec<u64>,
}

#[derive(Serialize)]
struct ConnData<'a> {
    conn: u64,
    t: u64,
    peer: &'a str,
    local: &'a str,
    listener: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a crate::capture::model::TlsFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close: Option<ConnCloseData<'a>>,
}

#[derive(Serialize)]
struct ConnCloseData<'a> {
    t: u64,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
}

#[derive(Serialize)]
struct ExchangeData<'a> {
    ex: u64,
    conn: u64,
    /// The client flow it belongs to (none: other traffic, or a capture of one client).
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<usize>,
    t: u64,
    method: &'a str,
    target: &'a str,
    path: &'a str,
    version: &'a str,
    upstream: &'a str,
    req_headers: &'a Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    req_body: Option<BodyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp_t: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp_headers: Option<&'a Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp_body: Option<BodyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mime: Option<String>,
    /// The response is an event stream.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sse: Vec<SseData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<EndData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upgrade: Option<&'a Upgrade>,
    role: Role,
    /// The JSON-RPC the request carried, in words (`initialize`, `tools/call echo`).
    #[serde(skip_serializing_if = "String::is_empty")]
    rpc: String,
    /// The JSON-RPC the response carried, in words (`result`, `error -32601`).
    #[serde(skip_serializing_if = "String::is_empty")]
    answer: String,
}

#[derive(Serialize)]
struct BodyView {
    /// The recorded bytes as text (UTF-8), cut at the body limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// The recorded bytes in base64 when they are not UTF-8, cut at the body limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    b64: Option<String>,
    /// Bytes recorded in the capture.
    recorded: u64,
    /// Bytes on the wire.
    len: u64,
    /// The capture holds only the first `--max-body` bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    /// The page holds only the first `--body-limit` bytes of what was recorded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cut: bool,
}

#[derive(Serialize)]
struct SseData<'a> {
    t: u64,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    comments: &'a [String],
    dispatched: bool,
}

#[derive(Serialize)]
struct EndData<'a> {
    t: u64,
    outcome: crate::capture::model::Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    timings: &'a Timings,
    bytes: (u64, u64),
    #[serde(skip_serializing_if = "Vec::is_empty")]
    truncated: Vec<&'static str>,
}

impl<'a> SessionData<'a> {
    /// A capture read whole: folded if it is large.
    fn whole(
        capture: &'a Capture,
        report: &'a Explanation,
        name: &'a str,
        options: &Options,
    ) -> SessionData<'a> {
        let fold = Fold::of(capture, report);
        SessionData::build(
            capture,
            report,
            name,
            options,
            fold,
            &ServerFacts::of(capture),
        )
    }

    fn build(
        capture: &'a Capture,
        report: &'a Explanation,
        name: &'a str,
        options: &Options,
        fold: Fold,
        facts: &ServerFacts,
    ) -> SessionData<'a> {
        let session = Session::analyze_with(capture, facts.clone());
        // With several client flows the stages and silence are the chosen flow's, as the
        // explanation's are; the sequence shows every exchange, each tagged with its flow.
        let chosen = report
            .flow
            .as_ref()
            .and_then(|c| report.flows.get(c.number - 1))
            .map(|f| capture.subset(&f.exchange_ids));
        let flow_session = chosen
            .as_ref()
            .map(|part| Session::analyze_with(part, facts.clone()));
        let ladder = flow_session.as_ref().unwrap_or(&session);
        let era = ladder.negotiation.era;
        let stages = ladder
            .stages
            .iter()
            .filter(|s| s.id.in_era(era) || s.reached == Reached::Reached)
            .map(|s| StageData {
                id: s.id.id(),
                title: s.id.title(),
                status: s.reached,
                first_exchange: s.first_exchange,
                t: s.t,
            })
            .collect();
        let silence = ladder.silence.as_ref().map(|s| SilenceData {
            after_stage: s.after_stage.id(),
            after_title: s.after_stage.title(),
            at_t: s.at_t,
            at_exchange: ladder.stage(s.after_stage).first_exchange,
            expected_next: s.expected_next.clone(),
            quiet_for_s: s.quiet_for_s,
            other_requests: s.other_requests.clone(),
        });
        let flow_of: std::collections::HashMap<u64, usize> = report
            .flows
            .iter()
            .flat_map(|f| f.exchange_ids.iter().map(move |&ex| (ex, f.number)))
            .collect();
        let mut fold = fold;
        let is_drawn = |x: &Exchange| fold.drawn.as_ref().is_none_or(|d| d.contains(&x.ex));
        // A page of many large bodies is cut to its budget.
        let limit = match options.body_limit {
            0 => u64::MAX,
            n => n,
        };
        let cap = |len: usize| (len as u64).min(limit);
        let (count, bytes) =
            capture
                .exchanges
                .iter()
                .filter(|x| is_drawn(x))
                .fold((0u64, 0u64), |(n, b), x| {
                    let body = cap(x.request_body.bytes.len()) + cap(x.response_body.bytes.len());
                    (n + 1, b + body)
                });
        let mut options = options.clone();
        if bytes > BODY_BUDGET {
            let limit = (BODY_BUDGET / (2 * count.max(1))).max(1024);
            options.body_limit = limit;
            let words = format!(
                "bodies are cut at {} each (their {} would not fit the page)",
                human_bytes(limit),
                human_bytes(bytes)
            );
            fold.sentence = Some(match fold.sentence.take() {
                Some(s) => format!("{s} And {words}."),
                None => format!("{}{}.", words[..1].to_uppercase(), &words[1..]),
            });
        }
        let options = &options;
        let exchanges = session
            .steps
            .iter()
            .filter(|step| is_drawn(step.x))
            .map(|step| {
                // JSON-RPC words only where JSON-RPC is spoken: an OAuth JSON body is not "invalid JSON-RPC".
                let rpc = matches!(
                    step.role,
                    Role::Mcp | Role::LegacySse | Role::LegacyMessages
                );
                let (sent, received) = if rpc {
                    (&step.sent[..], &step.received[..])
                } else {
                    (&[][..], &[][..])
                };
                let mut data = exchange_data(step.x, step.role, sent, received, options);
                data.flow = flow_of.get(&step.x.ex).copied();
                data
            })
            .collect();
        let flows = report
            .flows
            .iter()
            .map(|f| FlowData {
                number: f.number,
                client: &f.client,
                era_label: f.explanation.era.label(),
                first_t: f.first_t,
                last_t: f.last_t,
                exchanges: f.exchange_ids.len(),
                furthest_stage: f.furthest_stage,
                silent_after: f.explanation.silence.as_ref().map(|s| s.after_stage.id()),
                errors: f.errors,
                chosen: report.flow.as_ref().is_some_and(|c| c.number == f.number),
                drawn: fold.flows.as_ref().is_none_or(|d| d.contains(&f.number)),
            })
            .collect();
        SessionData {
            name,
            session_id: &capture.session.session_id,
            started: &capture.started,
            tool_version: &capture.session.tool_version,
            redaction: &capture.session.redaction,
            routes: capture
                .session
                .routes
                .iter()
                .map(|r| (r.listen.as_str(), r.upstream.as_str()))
                .collect(),
            end_t: capture.end_t(),
            clean: capture.session_end.as_ref().map(|(_, e)| e.clean),
            warnings: &capture.warnings,
            notes: capture
                .notes
                .iter()
                .map(|(t, n)| NoteData {
                    t: *t,
                    code: &n.code,
                    message: &n.message,
                })
                .collect(),
            tls_errors: capture
                .tls_errors
                .iter()
                .map(|(t, e)| TlsErrorData {
                    t: *t,
                    peer: &e.peer,
                    sni: e.sni.as_deref(),
                    reason: &e.reason,
                })
                .collect(),
            era: era.id(),
            era_label: era.label(),
            stages,
            silence,
            flows,
            flow_choice: report.flow.as_ref().map(|c| c.why.as_str()),
            other_traffic: report.other_traffic.len(),
            tokens: &report.tokens,
            findings: &report.findings,
            conns: capture
                .connections
                .values()
                .map(|c| ConnData {
                    conn: c.open.conn,
                    t: c.t,
                    peer: &c.open.peer,
                    local: &c.open.local,
                    listener: &c.open.listener,
                    tls: c.open.tls.as_ref(),
                    close: c.close.as_ref().map(|(t, close)| ConnCloseData {
                        t: *t,
                        reason: &close.reason,
                        error: close.error.as_deref(),
                        bytes_in: close.bytes_in,
                        bytes_out: close.bytes_out,
                    }),
                })
                .collect(),
            exchanges_total: report.exchanges,
            folded: fold.sentence,
            exchanges,
        }
    }
}

/// A capture of up to this many exchanges is drawn whole: the page stays well under 20 MB
/// and opens in a couple of seconds (its rows are virtualised).
pub const DRAWN_ALL: usize = 10_000;
/// Beyond that, a capture of one client: the first and last exchanges and up to this many
/// failures between them.
pub const DRAWN_ONE: (usize, usize, usize) = (4_000, 4_000, 2_000);
/// Beyond that, a capture of several flows: at most this many flows are drawn (the chosen one,
/// then those that went silent or failed, latest first, then the latest others; the flow
/// table lists every flow), each folded like this.
pub const DRAWN_FLOWS: usize = 12;
pub const DRAWN_EACH: (usize, usize, usize) = (400, 400, 200);
/// Exchanges of other traffic drawn, at most.
pub const DRAWN_OTHER: usize = 50;
/// Body bytes the page holds in all; beyond, each body is cut shorter than `--body-limit`.
pub const BODY_BUDGET: u64 = 12 << 20;

/// What a page leaves out of a capture too large to read whole in a browser: a person
/// cannot read 100,000 rows anyway, and the page must open in a couple of seconds.
struct Fold {
    /// The exchanges drawn; `None`: all of them.
    drawn: Option<std::collections::BTreeSet<u64>>,
    /// The flows drawn; `None`: all of them.
    flows: Option<std::collections::BTreeSet<usize>>,
    /// What was left out, in words.
    sentence: Option<String>,
}

impl Fold {
    /// Nothing left out.
    fn none() -> Fold {
        Fold {
            drawn: None,
            flows: None,
            sentence: None,
        }
    }

    /// What to draw of a capture read whole.
    fn of(capture: &Capture, report: &Explanation) -> Fold {
        if capture.exchanges.len() <= DRAWN_ALL {
            return Fold::none();
        }
        if report.flows.is_empty() {
            let every: Vec<&Exchange> = capture.exchanges.iter().collect();
            let (first, last, failed) = DRAWN_ONE;
            let (drawn, left_out) = explain::fold_ids(&every, first, last, failed);
            return Fold {
                sentence: Some(one_client_words(left_out)),
                drawn: Some(drawn),
                flows: None,
            };
        }
        let shown = shown_flows(report);
        let mut drawn = std::collections::BTreeSet::new();
        let mut left_out = 0;
        let (first, last, failed) = DRAWN_EACH;
        for f in report.flows.iter().filter(|f| shown.contains(&f.number)) {
            let exchanges: Vec<&Exchange> = f
                .exchange_ids
                .iter()
                .filter_map(|ex| capture.exchange(*ex))
                .collect();
            let (ids, out) = explain::fold_ids(&exchanges, first, last, failed);
            drawn.extend(ids);
            left_out += out;
        }
        drawn.extend(report.other_traffic.iter().take(DRAWN_OTHER));
        Fold {
            drawn: Some(drawn),
            sentence: Some(flows_words(report, &shown, left_out)),
            flows: Some(shown),
        }
    }
}

/// The flows a page of a large capture draws: the chosen one, then those that went silent or
/// failed, then the rest; latest first in each; [`DRAWN_FLOWS`] of them.
fn shown_flows(report: &Explanation) -> std::collections::BTreeSet<usize> {
    let chosen = report.flow.as_ref().map(|c| c.number);
    let troubled = |f: &explain::FlowReport| f.explanation.silence.is_some() || f.errors > 0;
    let mut order: Vec<&explain::FlowReport> = report.flows.iter().collect();
    order.sort_by_key(|f| {
        (
            Some(f.number) != chosen,
            !troubled(f),
            std::cmp::Reverse((f.first_t, f.number)),
        )
    });
    order
        .into_iter()
        .take(DRAWN_FLOWS)
        .map(|f| f.number)
        .collect()
}

fn one_client_words(left_out: usize) -> String {
    let (first, last, failed) = DRAWN_ONE;
    format!(
        "{left_out} repeated successful POSTs in the middle of this capture are not drawn: the first {first} exchanges, the last {last} and up to {failed} failures between are."
    )
}

fn flows_words(
    report: &Explanation,
    shown: &std::collections::BTreeSet<usize>,
    left_out: usize,
) -> String {
    let mut words = vec![format!(
        "drawn: {} of {} flows (the chosen one, then those that went silent or failed, latest first: {})",
        shown.len(),
        report.flows.len(),
        shown.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    )];
    if left_out > 0 {
        words.push(format!(
            "{left_out} repeated successful POSTs in their middles left out"
        ));
    }
    if report.other_traffic.len() > DRAWN_OTHER {
        words.push(format!(
            "{DRAWN_OTHER} of {} exchanges of other traffic",
            report.other_traffic.len()
        ));
    }
    format!(
        "{}. Draw another flow with `mcptap report CAPTURE --flow N`.",
        words.join("; ")
    )
}

/// The page for a capture file, read as it streams by: `explain` in bounded memory, then one
/// more pass keeping only the exchanges the page draws (see [`DRAWN_ALL`]). Memory grows with
/// what is drawn, not with the capture. Returns the page and the capture's exchange count.
pub fn render_file(path: &Path, options: &Options) -> anyhow::Result<(String, usize)> {
    let name = path.display().to_string();
    let streamed = explain::explain_file(path, explain::Keep::Chosen)?;
    for warning in &streamed.capture.warnings {
        eprintln!("mcptap: warning: {warning}");
    }
    let report = &streamed.report;
    let all = report.exchanges <= DRAWN_ALL;
    let shown = (!all && !report.flows.is_empty()).then(|| shown_flows(report));
    let flow_of: std::collections::HashMap<u64, usize> = report
        .flows
        .iter()
        .filter(|f| shown.as_ref().is_some_and(|s| s.contains(&f.number)))
        .flat_map(|f| f.exchange_ids.iter().map(move |&ex| (ex, f.number)))
        .collect();
    let other: std::collections::HashSet<u64> = report
        .other_traffic
        .iter()
        .take(DRAWN_OTHER)
        .copied()
        .collect();
    let mut every = Vec::new();
    let mut one = {
        let (first, last, failed) = DRAWN_ONE;
        explain::Folder::new(first, last, failed)
    };
    let mut folders: std::collections::HashMap<usize, explain::Folder> = Default::default();
    let mut pass = crate::capture::reader::Exchanges::open(path)?;
    while let Some(x) = pass.next_exchange()? {
        if all {
            every.push(x);
        } else if shown.is_none() {
            one.push(x);
        } else if let Some(&f) = flow_of.get(&x.ex) {
            let (first, last, failed) = DRAWN_EACH;
            folders
                .entry(f)
                .or_insert_with(|| explain::Folder::new(first, last, failed))
                .push(x);
        } else if other.contains(&x.ex) {
            every.push(x);
        }
    }
    let fold = match &shown {
        _ if all => Fold::none(),
        None => {
            let (kept, left_out) = one.into_exchanges();
            every = kept;
            Fold {
                drawn: None,
                flows: None,
                sentence: Some(one_client_words(left_out)),
            }
        }
        Some(shown) => {
            let mut left_out = 0;
            for folder in folders.into_values() {
                let (kept, out) = folder.into_exchanges();
                every.extend(kept);
                left_out += out;
            }
            Fold {
                drawn: None,
                flows: Some(shown.clone()),
                sentence: Some(flows_words(report, shown, left_out)),
            }
        }
    };
    every.sort_by_key(|x| x.ex);
    let drawn = streamed.capture.with_exchanges(every, true);
    let data = PageData {
        generator: generator(),
        mode: "single",
        sessions: vec![SessionData::build(
            &drawn,
            report,
            &name,
            options,
            fold,
            &streamed.facts,
        )],
        diff: None,
        diff_first: None,
    };
    let html = page(&data, &format!("session {}", drawn.session.session_id));
    Ok((html, report.exchanges))
}

fn exchange_data<'a>(
    x: &'a Exchange,
    role: Role,
    sent: &[Message],
    received: &[(u64, Message)],
    options: &Options,
) -> ExchangeData<'a> {
    let mime = x.response_media_type();
    ExchangeData {
        ex: x.ex,
        conn: x.conn,
        flow: None,
        t: x.t,
        method: x.method(),
        target: &x.request.target,
        path: x.path(),
        version: &x.request.version,
        upstream: &x.request.upstream,
        req_headers: &x.request.headers,
        req_body: body_view(&x.request_body, options),
        resp_t: x.response_t,
        status: x.status(),
        resp_version: x.response.as_ref().map(|r| &*r.version),
        producer: x.response.as_ref().map(|r| &*r.producer),
        resp_headers: x.response.as_ref().map(|r| &r.headers),
        resp_body: body_view(&x.response_body, options),
        stream: mime.as_deref() == Some("text/event-stream"),
        mime,
        sse: x
            .sse
            .iter()
            .map(|(t, e)| SseData {
                t: *t,
                seq: e.seq,
                event: e.event.as_deref(),
                id: e.id.as_deref(),
                data: e.data.as_deref(),
                retry: e.retry,
                comments: &e.comments,
                dispatched: e.dispatched,
            })
            .collect(),
        end: x.end.as_ref().map(|(t, e)| EndData {
            t: *t,
            outcome: e.outcome,
            error: e.error.as_deref(),
            timings: &e.timings,
            bytes: (e.bytes.request, e.bytes.response),
            truncated: e.truncated.iter().map(|d| d.as_str()).collect(),
        }),
        upgrade: x.upgrade.as_ref(),
        role,
        rpc: rpc_words(sent),
        // A 401's JSON error body is not a JSON-RPC answer gone wrong; a 2xx that is not JSON-RPC is.
        answer: answer_words(received.iter().map(|(_, m)| m).filter(|m| {
            x.status().is_some_and(|s| (200..300).contains(&s))
                || !matches!(m, Message::Invalid { .. })
        })),
    }
}

fn body_view(body: &BodyData, options: &Options) -> Option<BodyView> {
    if !body.present {
        return None;
    }
    let limit = if options.body_limit == 0 {
        usize::MAX
    } else {
        usize::try_from(options.body_limit).unwrap_or(usize::MAX)
    };
    let bytes = &body.bytes;
    let (text, b64, cut) = match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut end = text.len().min(limit);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (Some(text[..end].to_string()), None, end < text.len())
        }
        Err(_) => {
            let end = bytes.len().min(limit);
            (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&bytes[..end])),
                end < bytes.len(),
            )
        }
    };
    Some(BodyView {
        text,
        b64,
        recorded: bytes.len() as u64,
        len: body.len,
        truncated: body.truncated,
        cut,
    })
}

/// `initialize`, `tools/call echo`, `notifications/initialized`, `batch of 3: …`.
fn rpc_words(messages: &[Message]) -> String {
    let words: Vec<String> = messages
        .iter()
        .map(|m| match m {
            Message::Request { method, params, .. } => {
                let tool = params
                    .as_ref()
                    .filter(|_| method == "tools/call" || method == "prompts/get")
                    .and_then(|p| p.get("name"))
                    .and_then(|n| n.as_str());
                match tool {
                    Some(tool) => format!("{method} {tool}"),
                    None => method.clone(),
                }
            }
            Message::Notification { method, .. } => method.clone(),
            Message::Result { id, .. } => format!("result for {}", jsonrpc::show_id(id)),
            Message::Error { code, .. } => format!("error {code}"),
            Message::Invalid { .. } => "invalid JSON-RPC".to_string(),
        })
        .collect();
    join_words(words)
}

fn answer_words<'m>(messages: impl Iterator<Item = &'m Message>) -> String {
    let words: Vec<String> = messages
        .map(|m| match m {
            Message::Result { .. } => "result".to_string(),
            Message::Error { code, message, .. } => format!("error {code} {message}"),
            Message::Request { method, .. } | Message::Notification { method, .. } => {
                method.clone()
            }
            Message::Invalid { .. } => "invalid JSON-RPC".to_string(),
        })
        .collect();
    join_words(words)
}

fn join_words(words: Vec<String>) -> String {
    match words.len() {
        0 | 1 => words.into_iter().next().unwrap_or_default(),
        n if n <= 3 => words.join(", "),
        n => format!("{n} messages: {}, …", words[..2].join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_the_element() {
        let json = script_json(&vec!["</script><script>alert(1)</script>", "<!--", "a&b"]);
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0], "</script><script>alert(1)</script>");
    }

    #[test]
    fn the_inline_assets_cannot_end_their_elements() {
        assert!(!CSS.contains("</style"));
        assert!(!JS.to_ascii_lowercase().contains("</script"));
        assert!(!JS.to_ascii_lowercase().contains("<!--"));
    }

    #[test]
    fn the_policy_names_the_hashes_of_the_inline_assets() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'"));
        assert!(csp.contains(&sha256_source(JS)));
        assert!(csp.contains(&sha256_source(CSS)));
    }
}
