//! `mcptap replay`: re-send the client requests of a capture to a target, MCP- and
//! OAuth-aware, and record the new session as a capture.
//!
//! A replay cannot send what the capture does not hold: secrets are redacted. It fills
//! them from what the target itself answers during the replay (the code in the replayed
//! authorization redirect, the token from the replayed token response, the new client_id,
//! the new Mcp-Session-Id, a fresh PKCE verifier), then from `--secrets`, `--token` and
//! `--header`; a request that still holds a redacted value is not sent: the replay stops
//! before it and says which flag supplies it.

pub mod fill;
pub mod origins;
pub mod plan;

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::{Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpInfo;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::capture::model::{self, EventBody, Headers};
use crate::capture::reader::{media_type, Capture, Exchange};
use crate::capture::{Direction, Outcome, Record};
use crate::proxy::forward::version_str;
use crate::proxy::record::body::BodyObserver;
use crate::proxy::record::standalone::{self as recording, Recording, RecordingSetup};
use crate::proxy::record::{ExchangeLog, Shared};
use crate::proxy::record::{Producer, RequestHead};
use crate::proxy::upstream::{self, ConnectFacts, UpstreamClient, UpstreamTls};
use crate::proxy::{headers, CaptureTarget};
use crate::sse::SseParser;
use fill::{Built, Learned, Missing, Values};
use plan::{Phase, Plan, Selection};

const REPLAY_EXAMPLES: &str = "\
Examples:
  mcptap replay captures/20261126T224832Z-3e9b4017.jsonl --target http://127.0.0.1:8000
      the whole recorded session, OAuth included: the replay registers, authorizes and
      gets its own token from the target, and uses them where the recording had its own
  mcptap replay capture.jsonl --target https://staging.example.com --token \"$TOKEN\" --only 'POST /mcp'
  mcptap replay capture.jsonl --target http://127.0.0.1:8000 --secrets secrets.json --pace recorded
      secrets.json: {\"1a2b3c4d\": \"the value\"} — the fp of a redacted value is the 8 hex
      digits of its <redacted fp=…> in the capture (grep -o 'fp=[0-9a-f]*' capture.jsonl)
  mcptap replay capture.jsonl --target http://127.0.0.1:8000 --concurrent --skip 'GET /mcp'

Requests go to --target whatever their recorded Host or absolute URL said: path and query
from the recording, hop-by-hop fields left out, Content-Length recomputed, and the recorded
origin (the proxy's address) swapped for the target's in parameters and bodies.
A request that still holds a redacted value is not sent: the replay stops before it.

Exit status: 0 when every selected exchange was sent (with --exit-code, 1 when a status
differed from the recorded one), 1 when the replay stopped early, 2 on bad usage or an
unreadable capture.";

/// How requests are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pace {
    /// Each request as soon as the requests it depends on are answered.
    Fast,
    /// Each request at its recorded offset from the first.
    Recorded,
}

#[derive(clap::Args, Debug)]
#[command(after_help = REPLAY_EXAMPLES)]
pub struct ReplayArgs {
    /// The capture (JSONL) whose client requests are re-sent.
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,

    /// Only client flow N of the capture (numbered from 1, as `mcptap explain` lists them).
    #[arg(long, value_name = "N")]
    pub flow: Option<usize>,

    /// Where every request goes (http:// or https://, with an optional path prefix).
    #[arg(long, value_name = "URL")]
    pub target: String,

    /// Replace this header in every request that had it ('Name: value'; repeatable),
    /// e.g. 'Authorization: Bearer …'.
    #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,

    /// The credential for every redacted `Authorization: Bearer` value that the replay
    /// cannot obtain from the target itself.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// A JSON object of redacted values, {"1a2b3c4d": "value"}: the key is the fp of a
    /// `<redacted fp=…>` in the capture. Values the replay obtains itself win.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,

    /// Record the replay to this file (never overwritten; /dev/null records nothing).
    #[arg(long = "capture", value_name = "FILE", conflicts_with = "captures_dir")]
    pub record: Option<PathBuf>,

    /// Folder for the replay's capture, named <UTC time>-<id>.jsonl.
    #[arg(long, value_name = "DIR", default_value = "captures")]
    pub captures_dir: PathBuf,

    /// Let requests that overlapped in the recording overlap again, each recorded
    /// connection's in order (default: one at a time, each after the previous one's answer).
    #[arg(long)]
    pub concurrent: bool,

    /// `fast`: each request as soon as what it depends on is answered; `recorded`: at the
    /// recorded offsets.
    #[arg(long, value_enum, default_value = "fast")]
    pub pace: Pace,

    /// Replay only exchanges matching this pattern (repeatable): matched against
    /// "METHOD PATH" and the JSON-RPC method, `*` matches anything ('tools/*', 'GET /.well-known/*').
    #[arg(long, value_name = "PATTERN")]
    pub only: Vec<String>,

    /// Leave out exchanges matching this pattern (repeatable; as --only).
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,

    /// Leave an event stream after this many seconds without data, and read a stream the
    /// recorded client left early (such as the GET stream) no longer than this.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub stream_timeout: f64,

    /// Seconds to wait for response headers, and for a whole body that is not a stream.
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    pub timeout: f64,

    /// Send absolute URLs in parameters and bodies as recorded, instead of swapping the
    /// recorded origin for the target's.
    #[arg(long)]
    pub keep_origin: bool,

    /// Also trust the CA certificates in this PEM file for an https target.
    #[arg(long, value_name = "PEM")]
    pub target_ca: Option<PathBuf>,

    /// Do not verify the target's TLS certificate (recorded in the capture).
    #[arg(long)]
    pub target_insecure: bool,

    /// Record secrets in the replay's capture in clear text.
    #[arg(long)]
    pub no_redact: bool,

    /// Print no line per exchange.
    #[arg(long, short)]
    pub quiet: bool,

    /// Exit with status 1 when a response status differs from the recorded one.
    #[arg(long)]
    pub exit_code: bool,
}

/// A validated replay.
struct Config {
    capture_path: PathBuf,
    capture: Capture,
    target: Uri,
    overrides: Vec<(String, String)>,
    supplied: HashMap<String, String>,
    token: Option<String>,
    record: CaptureTarget,
    redact: bool,
    concurrent: bool,
    pace: Pace,
    selection: Selection,
    stream_timeout: Duration,
    timeout: Duration,
    keep_origin: bool,
    tls: UpstreamTls,
    quiet: bool,
    exit_code: bool,
}

impl ReplayArgs {
    fn validate(&self) -> anyhow::Result<Config> {
        let target = target_url(&self.target)?;
        let mut overrides = Vec::new();
        for h in &self.headers {
            let Some((name, value)) = h.split_once(':') else {
                bail!("--header '{h}' is not 'Name: value'");
            };
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("--header '{h}': '{name}' is not a header name"))?;
            HeaderValue::from_str(&value)
                .with_context(|| format!("--header '{h}': the value cannot be sent"))?;
            overrides.push((name, value));
        }
        if let Some(t) = &self.token {
            if t.trim().is_empty() || HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                bail!("--token must be a non-empty token that fits in a header");
            }
        }
        let supplied = match &self.secrets {
            Some(path) => read_secrets(path)?,
            None => HashMap::new(),
        };
        if let Some(ca) = &self.target_ca {
            if !ca.is_file() {
                bail!("--target-ca {}: no such file", ca.display());
            }
        }
        let capture = crate::args::open_capture(&self.capture, self.flow)?;
        Ok(Config {
            capture_path: self.capture.clone(),
            capture,
            target,
            overrides,
            supplied,
            token: self.token.as_ref().map(|t| t.trim().to_string()),
            record: match &self.record {
                Some(f) => CaptureTarget::File(f.clone()),
                None => CaptureTarget::Dir(self.captures_dir.clone()),
            },
            redact: !self.no_redact,
            concurrent: self.concurrent,
            pace: self.pace,
            selection: Selection {
                only: self.only.clone(),
                skip: self.skip.clone(),
            },
            stream_timeout: seconds("stream-timeout", self.stream_timeout)?,
            timeout: seconds("timeout", self.timeout)?,
            keep_origin: self.keep_origin,
            tls: UpstreamTls {
                ca_file: self.target_ca.clone(),
                insecure: self.target_insecure,
            },
            quiet: self.quiet,
            exit_code: self.exit_code,
        })
    }
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(v) {
        Ok(d) if v > 0.0 && d <= MAX_WAIT => Ok(d),
        _ => bail!("--{flag} must be a number of seconds > 0 and at most a day, not {v}"),
    }
}

/// The longest any single wait may be (a bound that keeps instant arithmetic safe).
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// `base + d`, for offsets read from a capture that may be absurd: never overflows.
pub fn later(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(MAX_WAIT))
        .unwrap_or(base)
}

/// An http(s) URL with a host and no query or credentials: where every request goes.
pub fn target_url(text: &str) -> anyhow::Result<Uri> {
    let uri: Uri = text
        .parse()
        .with_context(|| format!("'{text}' is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => bail!("'{text}' must start with http:// or https://"),
    }
    if uri.host().is_none() {
        bail!("'{text}' has no host");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        bail!("'{text}' has user:password in it; send credentials with --header instead");
    }
    if uri.query().is_some() {
        bail!("'{text}' must not have a query string");
    }
    Ok(uri)
}

/// Reads `--secrets`: `{"1a2b3c4d": "value"}` (keys may also be written `fp=1a2b3c4d` or
/// `<redacted fp=1a2b3c4d>`).
fn read_secrets(path: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading --secrets {name}"))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("--secrets {name} is not JSON"))?;
    let Value::Object(map) = value else {
        bail!("--secrets {name} must hold a JSON object {{\"<fp>\": \"<value>\"}}");
    };
    let mut secrets = HashMap::new();
    for (key, v) in map {
        let k = key.trim().to_ascii_lowercase();
        let fp = fill::whole_placeholder(&k)
            .map(str::to_string)
            .unwrap_or_else(|| k.trim_start_matches("fp=").to_string());
        if !fill::is_fp(&fp) {
            bail!("--secrets {name}: the key {key:?} is not a fingerprint (8 hex digits, as in <redacted fp=1a2b3c4d>)");
        }
        let Value::String(s) = v else {
            bail!("--secrets {name}: the value of {key:?} must be a string");
        };
        secrets.insert(fp, s);
    }
    Ok(secrets)
}

/// Runs `mcptap replay`.
pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = args.validate()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(replay(config))
}

/// What happened to one step.
#[derive(Debug, Clone, Default)]
struct StepResult {
    status: Option<u16>,
    error: Option<String>,
}

/// Everything the steps share.
struct Run {
    capture: Capture,
    plan: Plan,
    target: Uri,
    overrides: Vec<(String, String)>,
    values: Mutex<Values>,
    phases: Vec<watch::Sender<Phase>>,
    results: Mutex<Vec<Option<StepResult>>>,
    stop: Mutex<Option<String>>,
    cancel: CancellationToken,
    client: UpstreamClient<Full<Bytes>>,
    shared: Arc<Shared>,
    conns: Mutex<HashMap<String, u64>>,
    output: Output,
    start: tokio::time::Instant,
    pace: Pace,
    stream_timeout: Duration,
    timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is plain values: a panic elsewhere must not stop the replay.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Run {
    fn exchange(&self, k: usize) -> &Exchange {
        &self.capture.exchanges[self.plan.steps[k].index]
    }

    fn publish(&self, k: usize, phase: Phase) {
        self.phases[k].send_if_modified(|p| {
            if *p < phase {
                *p = phase;
                true
            } else {
                false
            }
        });
    }

    async fn wait(&self, k: usize, phase: Phase) {
        let mut rx = self.phases[k].subscribe();
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Stops the replay (the first reason wins) and cuts what is in flight.
    fn halt(&self, why: String) {
        let mut stop = lock(&self.stop);
        if stop.is_none() {
            *stop = Some(why);
        }
        self.cancel.cancel();
    }

    fn replayed(&self) -> usize {
        lock(&self.results).iter().filter(|r| r.is_some()).count()
    }
}

async fn replay(config: Config) -> anyhow::Result<ExitCode> {
    for warning in &config.capture.warnings {
        eprintln!("mcptap: warning: {warning}");
    }
    let plan = plan::plan(&config.capture, &config.selection, &config.supplied);
    for why in &plan.unsendable {
        eprintln!("mcptap: warning: not replayed: {why}");
    }
    let target_base = config.target.to_string().trim_end_matches('/').to_string();
    let values = Values {
        supplied: config.supplied.clone(),
        generated: plan.generated.clone(),
        token: config.token.clone(),
        origins: origins::recorded_origins(&config.capture)
            .into_iter()
            .filter(|o| *o != target_base)
            .collect(),
        origin_to: (!config.keep_origin).then(|| target_base.clone()),
        ..Values::default()
    };
    for (name, _) in &config.overrides {
        let used = config
            .capture
            .exchanges
            .iter()
            .any(|x| x.request_header(name).is_some());
        if !used {
            eprintln!(
                "mcptap: warning: --header {name}: no recorded request has it, so it is never sent"
            );
        }
    }

    let recording = Recording::start(RecordingSetup {
        target: config.record.clone(),
        route: model::Route {
            listen: model::LISTEN_REPLAY.into(),
            upstream: config.target.to_string(),
        },
        options: recording::options(
            config.capture.session.options.max_body,
            Some(config.timeout),
            &config.tls,
        ),
        redact: config.redact,
    })?;
    recording.note(
        "replay",
        format!(
            "replay of {} (session {}) to {}: {} exchanges",
            config.capture_path.display(),
            config.capture.session.session_id,
            config.target,
            plan.steps.len()
        ),
    );
    let total = plan.steps.len();
    eprintln!(
        "mcptap: replaying {total} exchanges of {} to {}{}",
        config.capture_path.display(),
        config.target,
        if plan.deselected > 0 {
            format!(" ({} left out by --only/--skip)", plan.deselected)
        } else {
            String::new()
        }
    );
    eprintln!("mcptap: capturing to {}", recording.path.display());
    if config.tls.insecure {
        eprintln!(
            "mcptap: WARNING: --target-insecure: the target's TLS certificate is not checked"
        );
    }

    let client = upstream::client::<Full<Bytes>>(&config.tls)?;
    let run = Arc::new(Run {
        phases: (0..total)
            .map(|_| watch::channel(Phase::Pending).0)
            .collect(),
        results: Mutex::new(vec![None; total]),
        capture: config.capture,
        plan,
        target: config.target.clone(),
        overrides: config.overrides,
        values: Mutex::new(values),
        stop: Mutex::new(None),
        cancel: CancellationToken::new(),
        client,
        shared: recording.shared.clone(),
        conns: Mutex::new(HashMap::new()),
        output: Output::new(config.quiet, total),
        start: tokio::time::Instant::now(),
        pace: config.pace,
        stream_timeout: config.stream_timeout,
        timeout: config.timeout,
    });

    drive(run.clone(), config.concurrent).await;
    for k in 0..total {
        run.wait(k, Phase::Done).await;
    }
    run.output.close();

    let stopped = lock(&run.stop).clone();
    let results: Vec<StepResult> = lock(&run.results).iter().flatten().cloned().collect();
    let differ = run
        .plan
        .steps
        .iter()
        .zip(lock(&run.results).iter())
        .filter(|(s, r)| {
            r.as_ref()
                .is_some_and(|r| r.status != run.capture.exchanges[s.index].status())
        })
        .count();
    let failed = results.iter().filter(|r| r.status.is_none()).count();
    let path = recording.path.clone();
    let stats = recording.finish(stopped.is_none()).await?;
    drop(run);
    if let Some(why) = &stopped {
        eprintln!("mcptap: {why}");
    }
    eprintln!(
        "mcptap: replayed {} of {total} exchanges to {}: {} answered with the recorded status, {differ} differently{}",
        results.len(),
        config.target,
        results.len() - differ,
        if failed > 0 {
            format!(" ({failed} got no response)")
        } else {
            String::new()
        }
    );
    eprintln!(
        "mcptap: capture complete: {} ({} events)",
        path.display(),
        stats.events_written
    );
    if let Some(e) = &stats.write_error {
        eprintln!("mcptap: error: the replay's capture is incomplete: {e}");
        return Ok(ExitCode::from(1));
    }
    Ok(if stopped.is_some() || (config.exit_code && differ > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends the steps in recorded order. Each waits until every response that had ended when it
/// was recorded has ended again, until the responses whose values it uses are in, and (with
/// `--pace recorded`) until its recorded offset. Then, one at a time (default), it waits for
/// the previous step's answer; with `--concurrent`, only for the previous step on its own
/// recorded connection, so requests that overlapped in the recording overlap again.
async fn drive(run: Arc<Run>, concurrent: bool) {
    let total = run.plan.steps.len();
    let mut in_flight: Vec<usize> = Vec::new();
    let mut previous: Option<usize> = None;
    let mut last_on_conn: HashMap<u64, usize> = HashMap::new();
    let mut next = 0;
    while next < total {
        let k = next;
        next += 1;
        let x = run.exchange(k);
        let conn = run.plan.steps[k].conn;
        let before = if concurrent {
            last_on_conn.get(&conn).copied()
        } else {
            previous
        };
        if let Some(p) = before {
            run.wait(p, Phase::Answered).await;
        }
        for &j in &in_flight {
            if run.exchange(j).end_t() <= x.t {
                run.wait(j, Phase::Done).await;
            }
        }
        in_flight.retain(|&j| *run.phases[j].borrow() < Phase::Done);
        for &(j, phase) in &run.plan.steps[k].waits {
            run.wait(j, phase).await;
        }
        if run.pace == Pace::Recorded {
            let at = later(run.start.into_std(), run.plan.steps[k].offset);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = run.cancel.cancelled() => {}
            }
        }
        if run.cancel.is_cancelled() {
            run.publish(k, Phase::Done);
            break;
        }
        if let Some(why) = &x.request_body.omitted {
            // Its bytes were never recorded: sending an empty body would be a different request.
            run.halt(format!(
                "replay stopped before exchange {} ({}): its body is not in the capture ({why}); a capture made with --no-redact has it; {} earlier exchanges were replayed",
                x.ex,
                run.plan.steps[k].label,
                run.replayed()
            ));
            run.publish(k, Phase::Done);
            break;
        }
        let built = {
            let values = lock(&run.values);
            fill::build(x, &values, &run.overrides, &run.plan.steps[k].scoped)
        };
        match built {
            Ok(built) => {
                tokio::spawn(send(run.clone(), k, built));
                in_flight.push(k);
                previous = Some(k);
                last_on_conn.insert(conn, k);
            }
            Err(missing) => {
                run.halt(missing_message(&run, k, &missing));
                run.publish(k, Phase::Done);
                break;
            }
        }
    }
    // Steps never sent are done: nothing waits for them forever.
    for k in next..total {
        run.publish(k, Phase::Done);
    }
}

/// "replay stopped before exchange 7 (POST /mcp initialize): …; supply it with --token …".
fn missing_message(run: &Run, k: usize, missing: &Missing) -> String {
    let x = run.exchange(k);
    let fp = &missing.fp;
    let secrets = format!("--secrets FILE with {{\"{fp}\": \"…\"}}");
    let flags = match &missing.place {
        fill::Place::Bearer(h) => format!(
            "--token TOKEN (or --header '{}: Bearer …', or {secrets})",
            fill::title_case(h)
        ),
        fill::Place::Header(h) => format!("--header '{}: …' or {secrets}", fill::title_case(h)),
        _ => secrets,
    };
    let origin = match run.plan.sources.get(fp) {
        Some(&src) => {
            let source = run
                .capture
                .exchange(src)
                .map(plan::label)
                .unwrap_or_default();
            let step = run.plan.steps.iter().position(|s| s.ex == src);
            let result = step.and_then(|s| lock(&run.results)[s].clone());
            let what = match (step, result) {
                (None, _) => "it was not replayed (--only/--skip)".to_string(),
                (Some(_), None) => "it was not sent".to_string(),
                (
                    Some(_),
                    Some(StepResult {
                        status: Some(s), ..
                    }),
                ) => {
                    format!("in this replay it answered {s} without it")
                }
                (Some(_), Some(StepResult { error, .. })) => format!(
                    "in this replay it failed ({})",
                    error.unwrap_or_else(|| "no response".into())
                ),
            };
            format!(", which the recording got from exchange {src} ({source}), but {what}")
        }
        None => ", which the capture does not show being issued".to_string(),
    };
    format!(
        "replay stopped before exchange {} ({}): {} holds the redacted value fp={fp}{origin}; supply it with {flags}; {} earlier exchanges were replayed",
        x.ex,
        run.plan.steps[k].label,
        missing.place,
        run.replayed()
    )
}

/// Marks a step answered and done however its task ends.
struct StepGuard {
    run: Arc<Run>,
    k: usize,
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        self.run.publish(self.k, Phase::Done);
    }
}

/// Why the replay stopped reading a response body.
enum Read {
    Ended,
    Failed(String),
    Left(String),
}

/// Sends one step, records it, learns from the answer.
async fn send(run: Arc<Run>, k: usize, built: Built) {
    let _guard = StepGuard {
        run: run.clone(),
        k,
    };
    let x = run.exchange(k);
    let step = &run.plan.steps[k];
    let recorder = run.shared.recorder.clone();
    let log = ExchangeLog::start(&run.shared);
    let ex = log.ex;

    let uri = match upstream::upstream_uri(&run.target, &built.path_and_query) {
        Ok(u) => u,
        Err(e) => {
            let why = format!("cannot form the URL for {}: {e}", built.path_and_query);
            let sent = RequestRecord {
                method: x.method().to_string(),
                uri: String::new(),
                target: built.path_and_query,
                headers: built.headers.into(),
                body: built.body,
            };
            finish_failed(&run, k, &log, &sent, Outcome::UpstreamError, why);
            return;
        }
    };
    let mut sent_headers = HeaderMap::new();
    for (name, value) in &built.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            sent_headers.append(n, v);
        }
    }
    // The target's authority, unless --header names a Host of its own (virtual hosting).
    let host = match run.overrides.iter().find(|(n, _)| n == "host") {
        Some((_, h)) => Some(h.clone()),
        None => uri.authority().map(|a| a.to_string()),
    };
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        sent_headers.insert(HOST, host);
    }
    let method = Method::from_bytes(x.method().as_bytes()).unwrap_or(Method::GET);
    let mut req = Request::new(Full::new(Bytes::from(built.body.clone())));
    *req.method_mut() = method;
    *req.uri_mut() = uri.clone();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = sent_headers.clone();
    let sent = RequestRecord {
        method: x.method().to_string(),
        uri: uri.to_string(),
        headers: headers::to_record(&sent_headers),
        body: built.body,
        target: built.path_and_query,
    };

    let resp = tokio::select! {
        r = tokio::time::timeout(run.timeout, run.client.request(req)) => r,
        _ = run.cancel.cancelled() => {
            finish_failed(&run, k, &log, &sent, Outcome::ClientAborted,
                "the replay stopped before the response arrived".into());
            return;
        }
    };
    let resp = match resp {
        Err(_) => {
            let why = format!(
                "no response headers within {:.1}s (--timeout)",
                run.timeout.as_secs_f64()
            );
            finish_failed(&run, k, &log, &sent, Outcome::Timeout, why);
            return;
        }
        Ok(Err(e)) => {
            let why = upstream::error_chain(&e);
            finish_failed(&run, k, &log, &sent, Outcome::UpstreamError, why.clone());
            run.halt(format!(
                "replay stopped: exchange {} ({}) could not be sent to {}: {why}",
                x.ex, step.label, run.target
            ));
            return;
        }
        Ok(Ok(resp)) => resp,
    };

    let answered = Instant::now();
    let conn = connection(&run, &resp, log.started);
    record_request(&log, conn, &sent, resp.version());
    log.frame(Direction::Request, sent.body.len(), log.started);
    log.ended(Direction::Request, answered);
    let status = resp.status();
    let connect = resp.extensions().get::<ConnectFacts>().copied();
    let (parts, mut body) = resp.into_parts();
    let mut clean_headers = parts.headers.clone();
    headers::remove_hop_by_hop(&mut clean_headers, false);
    let got_headers = headers::to_record(&clean_headers);
    log.record_response(
        answered,
        status.as_u16(),
        version_str(parts.version),
        got_headers.clone(),
        Producer::Upstream,
        connect,
    );
    let mut learned = Learned::default();
    if let Some(r) = &x.response {
        fill::learn_headers(&r.headers, &got_headers, &mut learned);
    }
    lock(&run.values).learn(std::mem::take(&mut learned));
    run.publish(k, Phase::Answered);

    // The body: to its end, or as the recorded client left it, within the limits.
    let media = got_headers.get("content-type").map(media_type);
    let stream = media.as_deref() == Some("text/event-stream");
    let hard = if stream {
        step.left_after.map(|d| d.min(run.stream_timeout))
    } else {
        Some(run.timeout)
    };
    let idle = stream.then_some(run.stream_timeout);
    let mut kept: Vec<u8> = Vec::new();
    let mut events: Vec<Option<String>> = Vec::new();
    let mut parser = SseParser::new();
    let mut last = Instant::now();
    let read = loop {
        let deadline = [
            hard.map(|d| later(answered, d)),
            idle.map(|d| later(last, d)),
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    let at = Instant::now();
                    last = at;
                    log.frame(Direction::Response, data.len(), at);
                    if kept.len() < KEEP_BYTES {
                        kept.extend_from_slice(&data);
                    }
                    if stream {
                        events.extend(parser.push(&data).into_iter().map(|e| e.data));
                    }
                    recorder.whole_frame(ex, Direction::Response, recorder.clock().us_at(at), data);
                }
                Some(Err(e)) => break Read::Failed(upstream::error_chain(&e)),
                None => break Read::Ended,
            },
            _ = wait => {
                let waited = Instant::now().saturating_duration_since(answered);
                break Read::Left(match (stream, step.left_after) {
                    (false, _) => format!("the body did not end within {:.1}s (--timeout)", run.timeout.as_secs_f64()),
                    (true, Some(left)) if left <= run.stream_timeout && waited >= left => format!(
                        "the replay left the stream after {}, as the recorded client did", human(left)),
                    (true, _) => format!("the replay left the stream: no end after {} (--stream-timeout {}s)",
                        human(waited), run.stream_timeout.as_secs_f64()),
                });
            }
            _ = run.cancel.cancelled() => break Read::Left("the replay stopped".into()),
        }
    };
    let at = Instant::now();
    recorder.record(Record::BodyEnd {
        ex,
        dir: Direction::Response,
        t: recorder.clock().us_at(at),
    });
    match &read {
        Read::Ended => log.ended(Direction::Response, at),
        Read::Failed(e) => log.failed(Direction::Response, at, e.clone()),
        Read::Left(why) => {
            log.preset_outcome(Outcome::ClientAborted, why.clone());
            log.finish(Outcome::ClientAborted, None, at);
        }
    }

    // Learn what the body handed out, where the recorded body had it.
    if stream {
        let recorded: Vec<&str> = x
            .sse
            .iter()
            .filter_map(|(_, e)| e.data.as_deref())
            .collect();
        let replayed: Vec<&str> = events.iter().flatten().map(String::as_str).collect();
        for (r, n) in recorded.iter().zip(replayed) {
            if let (Ok(r), Ok(n)) = (
                serde_json::from_str::<Value>(r),
                serde_json::from_str::<Value>(n),
            ) {
                fill::learn_json(&r, &n, None, &mut learned);
            }
        }
    } else if !x.response_body.is_empty() {
        fill::learn_body(
            &x.response_body.bytes,
            x.response_header("content-type"),
            &kept,
            &mut learned,
        );
    }
    lock(&run.values).learn(learned);

    let recorded_status = x.status();
    let mut detail = String::new();
    if stream {
        let n = events.len();
        detail = format!(" event stream, {n} event{}", if n == 1 { "" } else { "s" });
    }
    if let Read::Failed(e) | Read::Left(e) = &read {
        detail.push_str(&format!(" ({e})"));
    }
    lock(&run.results)[k] = Some(StepResult {
        status: Some(status.as_u16()),
        error: None,
    });
    let elapsed = at.saturating_duration_since(log.started);
    let differs = recorded_status != Some(status.as_u16());
    let recorded = match (differs, recorded_status) {
        (false, _) => String::new(),
        (true, Some(s)) => format!(" (recorded {s})"),
        (true, None) => " (recorded: no response)".into(),
    };
    run.output.line(
        &format!(
            "{:>4} {} → {}{recorded}{detail} · {}",
            x.ex,
            step.label,
            status.as_u16(),
            human(elapsed)
        ),
        differs,
    );
}

/// Bodies above this are recorded but not kept for learning.
const KEEP_BYTES: usize = 8 << 20;

/// A request as sent, for the record.
struct RequestRecord {
    method: String,
    uri: String,
    target: String,
    headers: Headers,
    body: Vec<u8>,
}

/// The recorded connection id of the TCP connection that carried a response (a new one gets
/// its `conn_open`).
fn connection(run: &Run, resp: &http::Response<hyper::body::Incoming>, started: Instant) -> u64 {
    let Some(info) = resp.extensions().get::<HttpInfo>() else {
        return 0;
    };
    let local = info.local_addr().to_string();
    let mut conns = lock(&run.conns);
    if let Some(&c) = conns.get(&local) {
        return c;
    }
    let conn = run.shared.next_conn();
    conns.insert(local.clone(), conn);
    let recorder = &run.shared.recorder;
    let opened = resp
        .extensions()
        .get::<ConnectFacts>()
        .map(|f| {
            f.opened_at
                .checked_sub(Duration::from_micros(f.connect_us))
                .unwrap_or(f.opened_at)
        })
        .unwrap_or(started)
        .min(started);
    recorder.event(
        recorder.clock().us_at(opened),
        EventBody::ConnOpen(model::ConnOpen {
            conn,
            // The replay is the client: its socket is the peer, the target's is the local end.
            peer: local,
            local: info.remote_addr().to_string(),
            listener: model::LISTEN_REPLAY.into(),
            route: None,
            tls: None,
        }),
    );
    conn
}

/// The `request` event and the request body, once the connection is known.
fn record_request(log: &ExchangeLog, conn: u64, sent: &RequestRecord, version: Version) {
    log.record_request(RequestHead {
        conn,
        method: sent.method.clone(),
        target: sent.target.clone(),
        version: version_str(version),
        headers: sent.headers.clone(),
        upstream: sent.uri.clone(),
        route: None,
    });
    log.record_request_body(Bytes::from(sent.body.clone()));
}

/// Records a request that got no response, and its `end`.
fn finish_failed(
    run: &Run,
    k: usize,
    log: &Arc<ExchangeLog>,
    sent: &RequestRecord,
    outcome: Outcome,
    why: String,
) {
    let x = run.exchange(k);
    // No connection carried it: conn 0.
    record_request(log, 0, sent, Version::HTTP_11);
    log.preset_outcome(outcome, why.clone());
    log.finish(outcome, None, Instant::now());
    lock(&run.results)[k] = Some(StepResult {
        status: None,
        error: Some(why.clone()),
    });
    run.output.line(
        &format!(
            "{:>4} {} → no response: {why}",
            x.ex, run.plan.steps[k].label
        ),
        true,
    );
}

/// `3 ms`, `1.2 s`.
fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// Lines on stdout, one per exchange, and on a terminal a progress bar on stderr for long
/// replays (redrawn in place under the lines).
struct Output {
    quiet: bool,
    bar: Option<Mutex<Bar>>,
}

struct Bar {
    total: usize,
    done: usize,
    differ: usize,
    started: Instant,
}

/// Replays at least this long get a progress bar.
const BAR_FROM: usize = 20;

impl Output {
    fn new(quiet: bool, total: usize) -> Output {
        let bar = (std::io::stderr().is_terminal() && total >= BAR_FROM).then(|| {
            Mutex::new(Bar {
                total,
                done: 0,
                differ: 0,
                started: Instant::now(),
            })
        });
        Output { quiet, bar }
    }

    fn line(&self, text: &str, differs: bool) {
        let mut bar = self.bar.as_ref().map(lock);
        if let Some(b) = bar.as_deref_mut() {
            b.done += 1;
            b.differ += usize::from(differs);
            eprint!("\r\x1b[2K");
        }
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
        if let Some(b) = bar.as_deref() {
            b.draw();
        }
    }

    fn close(&self) {
        if self.bar.is_some() {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

impl Bar {
    fn draw(&self) {
        const WIDTH: usize = 30;
        let filled = (self.done * WIDTH) / self.total.max(1);
        let secs = self.started.elapsed().as_secs();
        eprint!(
            "\r[{}{}] {}/{} exchanges · {} differ · {}:{:02}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.done,
            self.total,
            self.differ,
            secs / 60,
            secs % 60
        );
        let _ = std::io::stderr().flush();
    }
}
