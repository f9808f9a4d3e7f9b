//! `mcptap export`: a capture as an HTTP Archive (HAR 1.2), or as one curl command per
//! request.
//!
//! HAR follows the HAR 1.2 spec (W3C Web Performance draft "HTTP Archive (HAR) format"):
//! timings are `blocked`/`dns` -1 (the proxy does not see them), `connect` the upstream
//! connect time (-1 on a reused connection), `ssl` -1 (included in `connect`, §timings), then
//! `send`, `wait` (time to first byte) and `receive`, summing to the entry's `time`. Event
//! streams keep their raw text in `content.text` and their dispatched events in Chrome's
//! `_eventSourceMessages`. Redacted values stay `<redacted fp=…>`: the archive holds only
//! what the capture holds, and its `comment` says which redaction mode made it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::capture::model::{Headers, Outcome};
use crate::capture::reader::{media_type, BodyData, Capture, Exchange};

const EXAMPLES: &str = "\
Examples:
  mcptap export captures/20261126T224832Z-3e9b4017.jsonl --har session.har
  mcptap export capture.jsonl --har - | jq '.log.entries[].request.url'
  mcptap export capture.jsonl --curl
  mcptap export capture.jsonl --curl --target http://127.0.0.1:8000 > replay.sh

HAR files open in browser developer tools (Network → Import HAR) and HAR viewers. Redacted
values stay redacted: a curl command that needs a real token or code says so in a comment.";

/// Export a capture as an HTTP Archive (HAR 1.2) or as curl commands.
#[derive(clap::Args, Debug)]
#[command(
    after_help = EXAMPLES,
    group(clap::ArgGroup::new("format").required(true).args(["har", "curl"]))
)]
pub struct ExportArgs {
    /// The capture file (JSONL) written by `mcptap proxy`.
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,

    /// Only client flow N of the capture (numbered from 1, as `mcptap explain` lists them).
    #[arg(long, value_name = "N")]
    pub flow: Option<usize>,

    /// Write an HTTP Archive (HAR 1.2) to this file (`-` for stdout). An existing file is replaced.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,

    /// Print one curl command per request to stdout, shell-quoted, bodies via --data-binary.
    #[arg(long)]
    pub curl: bool,

    /// With --curl: send to this origin (and path prefix) instead of the URL the client used,
    /// e.g. http://127.0.0.1:8000 to go straight to the upstream.
    #[arg(long, value_name = "URL", requires = "curl")]
    pub target: Option<String>,
}

/// Runs `mcptap export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    if let Some(har) = &args.har {
        if crate::args::same_file(&args.capture, har) {
            bail!(
                "--har {} is the capture itself: choose another file",
                har.display()
            );
        }
    }
    let name = args.capture.display().to_string();
    if let Some(path) = &args.har {
        let (entries, warnings) = if path.as_os_str() == "-" {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match write_har(&args.capture, args.flow, &mut out).and_then(|r| {
                out.flush().context("writing to stdout")?;
                Ok(r)
            }) {
                Ok(r) => r,
                // `| head` closing the pipe is not an error worth a message.
                Err(e) if is_broken_pipe(&e) => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(e),
            }
        } else {
            // Written beside, then renamed: a failure leaves no half archive under its name.
            let part = path.with_extension("har.partial");
            let file = std::fs::File::create(&part)
                .with_context(|| format!("writing {}", part.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let written = write_har(&args.capture, args.flow, &mut out).and_then(|r| {
                out.flush()
                    .with_context(|| format!("writing {}", part.display()))?;
                Ok(r)
            });
            let written = written.and_then(|r| {
                std::fs::rename(&part, path)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(r)
            });
            if written.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            written?
        };
        for warning in &warnings {
            eprintln!("mcptap: warning: {warning}");
        }
        if path.as_os_str() != "-" {
            eprintln!("mcptap: wrote {} ({entries} entries)", path.display());
        }
    }
    if args.curl {
        let capture = crate::args::open_capture(&args.capture, args.flow)?;
        for warning in &capture.warnings {
            eprintln!("mcptap: warning: {warning}");
        }
        let target = args.target.as_deref().map(Target::parse).transpose()?;
        let text = curl_script(&capture, &name, target.as_ref());
        write_out(Path::new("-"), &text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// How many finished entries wait for an earlier exchange still open (a long event stream)
/// before they are written anyway, out of request order: the memory `export --har` may hold.
const HAR_REORDER: usize = 10_000;

/// Writes the capture at `path` (or its flow `flow`) as a HAR, one entry at a time as the
/// capture streams by, in request order (but for an exchange left open past [`HAR_REORDER`]
/// later ones). Returns the entries written and the capture's reading warnings.
pub fn write_har(
    path: &Path,
    flow: Option<usize>,
    out: &mut dyn Write,
) -> anyhow::Result<(usize, Vec<String>)> {
    let name = path.display().to_string();
    let only: Option<std::collections::HashSet<u64>> = match flow {
        None => None,
        Some(n) => {
            let scan = crate::mcp::explanation::scan(path)?;
            let count = scan.split.flows.len();
            let Some(f) = scan.split.flows.into_iter().nth(n.wrapping_sub(1)) else {
                bail!(
                    "--flow {n}: {name} has {count} client flow{} (numbered from 1; `mcptap explain {name}` lists them)",
                    if count == 1 { "" } else { "s" },
                );
            };
            Some(f.exchanges.into_iter().collect())
        }
    };
    let mut pass = crate::capture::reader::Exchanges::open(path)?;
    let wall = Wall::of(pass.capture());
    let head = serde_json::json!({
        "version": "1.2",
        "creator": Creator { name: "mcptap", version: env!("CARGO_PKG_VERSION") },
        "comment": har_comment(pass.capture(), &name),
    });
    // `{"log": {…head…, "entries": [ … ]}}`, the head's fields first.
    let head = serde_json::to_string_pretty(&head)?;
    let head = head
        .trim_end()
        .strip_suffix('}')
        .unwrap_or(&head)
        .trim_end();
    let head = head.replace("\n  ", "\n    ");
    let io = |e: std::io::Error| anyhow::Error::new(e).context("writing the HAR");
    write!(out, "{{\n  \"log\": {head},\n    \"entries\": [").map_err(io)?;
    let mut pending: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut written = 0usize;
    let mut write_entry = |text: String, out: &mut dyn Write| -> anyhow::Result<()> {
        let sep = if written == 0 { "\n" } else { ",\n" };
        written += 1;
        out.write_all(sep.as_bytes()).map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)
    };
    while let Some(x) = pass.next_exchange()? {
        if only.as_ref().is_some_and(|only| !only.contains(&x.ex)) {
            continue;
        }
        let entry = entry(pass.capture(), &x, &wall);
        let text = serde_json::to_string_pretty(&entry)?;
        pending.insert((x.t, x.ex), indent(&text, "      "));
        // Whatever began before every exchange still open is in its place.
        let before = pass
            .earliest_open()
            .unwrap_or(u64::MAX)
            .min(pass.capture().last_t);
        while pending
            .first_key_value()
            .is_some_and(|((t, _), _)| *t < before || pending.len() > HAR_REORDER)
        {
            if let Some((_, text)) = pending.pop_first() {
                write_entry(text, out)?;
            }
        }
    }
    for (_, text) in std::mem::take(&mut pending) {
        write_entry(text, out)?;
    }
    write!(out, "\n    ]\n  }}\n}}\n").map_err(io)?;
    Ok((written, pass.into_capture().warnings))
}

/// `text` with every line after the first indented by `by`, and the first too.
fn indent(text: &str, by: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(by);
        out.push_str(line);
    }
    out
}

fn write_out(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            // `| head` closing the pipe is not an error worth a message.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e).context("writing to stdout"),
        }
    } else {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

// ---------------------------------------------------------------------------------------
// HAR 1.2

/// A HAR file: `{"log": …}`.
#[derive(Debug, Serialize)]
pub struct Har {
    pub log: Log,
}

#[derive(Debug, Serialize)]
pub struct Log {
    pub version: &'static str,
    pub creator: Creator,
    pub entries: Vec<Entry>,
    pub comment: String,
}

#[derive(Debug, Serialize)]
pub struct Creator {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub started_date_time: String,
    /// Milliseconds: the sum of the timings that are not -1.
    pub time: f64,
    pub request: HarRequest,
    pub response: HarResponse,
    pub cache: Cache,
    pub timings: HarTimings,
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    pub server_ip_address: Option<String>,
    pub connection: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Chrome's field for EventSource messages.
    #[serde(
        rename = "_eventSourceMessages",
        skip_serializing_if = "Option::is_none"
    )]
    pub event_source_messages: Option<Vec<EventSourceMessage>>,
    /// The tunnel of an upgraded connection: mcptap counts its bytes, not its frames, so
    /// there is no `_webSocketMessages`.
    #[serde(rename = "_upgrade", skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Value>,
    #[serde(rename = "_mcptap")]
    pub mcptap: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HarRequest {
    pub method: String,
    pub url: String,
    pub http_version: String,
    pub cookies: Vec<Cookie>,
    pub headers: Vec<NameValue>,
    pub query_string: Vec<NameValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
    pub headers_size: i64,
    pub body_size: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HarResponse {
    pub status: u16,
    pub status_text: String,
    pub http_version: String,
    pub cookies: Vec<Cookie>,
    pub headers: Vec<NameValue>,
    pub content: Content,
    #[serde(rename = "redirectURL")]
    pub redirect_url: String,
    pub headers_size: i64,
    pub body_size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Clone)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostData {
    pub mime_type: String,
    /// The decoded fields of a form body (empty for other bodies).
    pub params: Vec<NameValue>,
    /// The body as recorded (base64 when it is not UTF-8, see `_encoding`).
    pub text: String,
    #[serde(rename = "_encoding", skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub size: i64,
    pub mime_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Cache {}

/// Milliseconds; -1 where it does not apply.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct HarTimings {
    pub blocked: f64,
    pub dns: f64,
    pub connect: f64,
    pub send: f64,
    pub wait: f64,
    pub receive: f64,
    pub ssl: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One dispatched event of an event stream, as Chrome writes it in a HAR.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSourceMessage {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The event type (`message` when the block named none).
    pub event_name: String,
    /// The last event id, `""` when none was set.
    pub event_id: String,
    pub data: String,
    /// The same as `eventName`, under the short name some readers use.
    pub event: String,
    /// The same as `eventId`.
    pub id: String,
}

/// The wall clock of a session offset: the session start plus `t` µs.
struct Wall {
    start: Option<jiff::Timestamp>,
}

impl Wall {
    fn of(capture: &Capture) -> Wall {
        Wall {
            start: capture.started.parse::<jiff::Timestamp>().ok(),
        }
    }

    fn at(&self, t: u64) -> jiff::Timestamp {
        let start = self.start.unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let offset = jiff::SignedDuration::from_micros(i64::try_from(t).unwrap_or(i64::MAX));
        start.checked_add(offset).unwrap_or(start)
    }

    fn rfc3339(&self, t: u64) -> String {
        self.at(t).strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    fn epoch_seconds(&self, t: u64) -> f64 {
        self.at(t).as_microsecond() as f64 / 1e6
    }
}

/// The capture as a HAR log, one entry per exchange in request order.
pub fn har(capture: &Capture, name: &str) -> Har {
    let wall = Wall::of(capture);
    let mut exchanges: Vec<&Exchange> = capture.exchanges.iter().collect();
    exchanges.sort_by_key(|x| (x.t, x.ex));
    let entries = exchanges
        .into_iter()
        .map(|x| entry(capture, x, &wall))
        .collect();
    Har {
        log: Log {
            version: "1.2",
            creator: Creator {
                name: "mcptap",
                version: env!("CARGO_PKG_VERSION"),
            },
            entries,
            comment: har_comment(capture, name),
        },
    }
}

/// The log's comment: where the archive came from, and what its redaction means.
fn har_comment(capture: &Capture, name: &str) -> String {
    let redaction = match capture.session.redaction.as_str() {
        "off" => "redaction off (--no-redact): this archive holds secrets (tokens, codes, cookies) in clear; do not share it".to_string(),
        "fingerprint" => "redaction fingerprint: secrets are replaced by <redacted fp=XXXXXXXX> (the same secret has the same fp within this capture); they are placeholders, not real values".to_string(),
        other => format!("redaction {other}"),
    };
    format!(
        "Exported by mcptap {} from the capture {name} (session {}, recorded by mcptap {}). {redaction}.",
        env!("CARGO_PKG_VERSION"),
        capture.session.session_id,
        capture.session.tool_version
    )
}

/// HAR timings of an exchange, from the capture's µs offsets (all from the request headers).
pub fn timings(x: &Exchange) -> HarTimings {
    let ms = |us: u64| us as f64 / 1000.0;
    let Some((_, end)) = &x.end else {
        return HarTimings {
            blocked: -1.0,
            dns: -1.0,
            connect: -1.0,
            send: 0.0,
            wait: 0.0,
            receive: 0.0,
            ssl: -1.0,
            comment: Some("the capture has no end for this exchange".into()),
        };
    };
    let t = &end.timings;
    let total = t.total_us;
    let connect = t
        .upstream_connect_us
        .filter(|_| !t.reused_connection)
        .map(|c| c.min(total));
    let c = connect.unwrap_or(0);
    // Each phase ends where the next starts; clamped so they never overlap or pass the total.
    let sent = t.request_body_done_us.unwrap_or(c).clamp(c, total);
    let first_byte = t.ttfb_us.unwrap_or(total).clamp(sent, total);
    HarTimings {
        blocked: -1.0,
        dns: -1.0,
        connect: connect.map_or(-1.0, ms),
        send: ms(sent - c),
        wait: ms(first_byte - sent),
        receive: ms(total - first_byte),
        ssl: -1.0,
        comment: None,
    }
}

fn entry(capture: &Capture, x: &Exchange, wall: &Wall) -> Entry {
    let timings = timings(x);
    let time = [
        timings.blocked,
        timings.dns,
        timings.connect,
        timings.send,
        timings.wait,
        timings.receive,
    ]
    .iter()
    .filter(|v| **v >= 0.0)
    .sum();
    let stream = x.response_media_type().as_deref() == Some("text/event-stream");
    let event_source_messages = stream.then(|| event_source_messages(x, wall));
    let mut comments = Vec::new();
    let upgrade = x.upgrade.as_ref().map(|u| {
        comments.push(format!(
            "upgraded to {}: mcptap counts the tunnel's bytes ({} up, {} down over {} ms) but does not record its frames, so there are no _webSocketMessages",
            u.protocol,
            u.client_to_upstream,
            u.upstream_to_client,
            u.duration_us / 1000
        ));
        serde_json::json!({
            "protocol": u.protocol,
            "clientToUpstreamBytes": u.client_to_upstream,
            "upstreamToClientBytes": u.upstream_to_client,
            "durationMs": u.duration_us as f64 / 1000.0,
            "error": u.error,
        })
    });
    if let Some((_, end)) = &x.end {
        if end.outcome != Outcome::Complete {
            comments.push(format!(
                "{}{}",
                outcome_word(end.outcome),
                end.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    Entry {
        started_date_time: wall.rfc3339(x.t),
        time,
        request: request(capture, x),
        response: response(x),
        cache: Cache {},
        timings,
        server_ip_address: upstream_ip(&x.request.upstream),
        connection: x.conn.to_string(),
        comment: (!comments.is_empty()).then(|| comments.join("; ")),
        event_source_messages,
        upgrade,
        mcptap: serde_json::json!({
            "exchange": x.ex,
            "connection": x.conn,
            "outcome": x.outcome().map(outcome_word),
            "upstreamUrl": x.request.upstream,
            "producer": x.response.as_ref().map(|r| &*r.producer),
            "upstreamHttpVersion": x.response.as_ref().map(|r| &*r.version),
        }),
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Complete => "complete",
        Outcome::ClientAborted => "client_aborted",
        Outcome::UpstreamAborted => "upstream_aborted",
        Outcome::UpstreamError => "upstream_error",
        Outcome::Timeout => "timeout",
        Outcome::ProxyShutdown => "proxy_shutdown",
    }
}

fn upstream_ip(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// The URL the client asked for: an HTTP/2 target is already absolute; an origin-form target
/// gets the scheme of its connection and the Host header (or the listener's address).
pub fn client_url(capture: &Capture, x: &Exchange) -> String {
    let target = x.request.target.as_str();
    if target.contains("://") {
        return target.to_string();
    }
    let conn = capture.connections.get(&x.conn);
    let scheme = if conn.is_some_and(|c| c.open.tls.is_some()) {
        "https"
    } else {
        "http"
    };
    let host = x
        .request_header("host")
        .map(str::to_string)
        .or_else(|| conn.map(|c| c.open.local.clone()).filter(|l| !l.is_empty()))
        .or_else(|| capture.session.routes.first().map(|r| r.listen.clone()))
        .unwrap_or_else(|| "localhost".to_string());
    if target.starts_with('/') {
        format!("{scheme}://{host}{target}")
    } else if x.method() == "CONNECT" {
        format!("{scheme}://{target}")
    } else {
        // `OPTIONS *` and other odd targets: the origin.
        format!("{scheme}://{host}/")
    }
}

fn name_values(headers: &Headers) -> Vec<NameValue> {
    headers
        .iter()
        .map(|(n, v)| NameValue {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn request(capture: &Capture, x: &Exchange) -> HarRequest {
    let cookies = x
        .request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some(Cookie {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
                path: None,
                domain: None,
                expires: None,
                http_only: None,
                secure: None,
            })
        })
        .collect();
    let post_data = x.request_body.present.then(|| post_data(x));
    let body_size = x
        .end
        .as_ref()
        .map(|(_, e)| e.bytes.request)
        .unwrap_or(x.request_body.len);
    HarRequest {
        method: x.method().to_string(),
        url: client_url(capture, x),
        http_version: x.request.version.to_string(),
        cookies,
        headers: name_values(&x.request.headers),
        query_string: x
            .query()
            .into_iter()
            .map(|(name, value)| NameValue { name, value })
            .collect(),
        post_data,
        headers_size: -1,
        body_size: i64::try_from(body_size).unwrap_or(i64::MAX),
    }
}

fn post_data(x: &Exchange) -> PostData {
    let mime_type = x.request_header("content-type").unwrap_or("").to_string();
    let (text, encoding) = body_text(&x.request_body);
    let params = if media_type(&mime_type) == "application/x-www-form-urlencoded" {
        form_urlencoded::parse(&x.request_body.bytes)
            .map(|(k, v)| NameValue {
                name: k.into_owned(),
                value: v.into_owned(),
            })
            .collect()
    } else {
        Vec::new()
    };
    PostData {
        mime_type,
        params,
        text,
        encoding,
        comment: truncation_note(&x.request_body),
    }
}

/// The recorded bytes as text, or as base64 when they are not UTF-8.
fn body_text(body: &BodyData) -> (String, Option<&'static str>) {
    match std::str::from_utf8(&body.bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&body.bytes),
            Some("base64"),
        ),
    }
}

fn truncation_note(body: &BodyData) -> Option<String> {
    body.truncated.then(|| {
        format!(
            "recorded only up to --max-body: {} of {} bytes",
            body.bytes.len(),
            body.len
        )
    })
}

fn response(x: &Exchange) -> HarResponse {
    let Some(resp) = &x.response else {
        let error = x
            .end
            .as_ref()
            .map(|(_, e)| {
                let mut s = outcome_word(e.outcome).to_string();
                if let Some(err) = &e.error {
                    s.push_str(": ");
                    s.push_str(err);
                }
                s
            })
            .unwrap_or_else(|| "no response recorded".to_string());
        return HarResponse {
            status: 0,
            status_text: String::new(),
            http_version: String::new(),
            cookies: Vec::new(),
            headers: Vec::new(),
            content: Content {
                size: 0,
                mime_type: "x-unknown".into(),
                text: None,
                encoding: None,
                comment: None,
            },
            redirect_url: String::new(),
            headers_size: -1,
            body_size: -1,
            comment: Some(format!("no response: {error}")),
            error: Some(error),
        };
    };
    let cookies = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| set_cookie(v))
        .collect();
    let (text, encoding) = body_text(&x.response_body);
    let mut comments = Vec::new();
    if let Some(note) = truncation_note(&x.response_body) {
        comments.push(note);
    }
    if let Some(ce) = resp.headers.get("content-encoding") {
        comments.push(match &x.response_body.decoded_from {
            Some(coding) => format!(
                "content-encoding {ce}: the text is the body decoded from {coding} ({} bytes on the wire)",
                x.response_body.len
            ),
            None => format!("content-encoding {ce}: the body was not decoded"),
        });
    }
    if let Some(why) = &x.response_body.omitted {
        comments.push(format!("the body is not in the capture: {why}"));
    }
    let body_size = x
        .end
        .as_ref()
        .map(|(_, e)| e.bytes.response)
        .unwrap_or(x.response_body.len);
    HarResponse {
        status: resp.status,
        status_text: http::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .to_string(),
        // What the client got: the proxy answers in the client's version.
        http_version: x.request.version.to_string(),
        cookies,
        headers: name_values(&resp.headers),
        content: Content {
            size: i64::try_from(x.response_body.len).unwrap_or(i64::MAX),
            mime_type: resp
                .headers
                .get("content-type")
                .unwrap_or("x-unknown")
                .to_string(),
            text: x.response_body.present.then_some(text),
            encoding: encoding.filter(|_| x.response_body.present),
            comment: (!comments.is_empty()).then(|| comments.join("; ")),
        },
        redirect_url: resp.headers.get("location").unwrap_or("").to_string(),
        headers_size: -1,
        body_size: i64::try_from(body_size).unwrap_or(i64::MAX),
        comment: (resp.producer == "proxy")
            .then(|| "made by mcptap, not by the upstream".to_string()),
        error: None,
    }
}

/// `name=value; Path=/; HttpOnly` → a HAR cookie (RFC 6265 §5.2, leniently).
fn set_cookie(value: &str) -> Option<Cookie> {
    let mut parts = value.split(';');
    let (name, val) = parts.next()?.trim().split_once('=')?;
    let mut cookie = Cookie {
        name: name.trim().to_string(),
        value: val.trim().to_string(),
        path: None,
        domain: None,
        expires: None,
        http_only: None,
        secure: None,
    };
    for attr in parts {
        let (k, v) = match attr.trim().split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (attr.trim(), ""),
        };
        match k.to_ascii_lowercase().as_str() {
            "path" => cookie.path = Some(v.to_string()),
            "domain" => cookie.domain = Some(v.to_string()),
            "expires" => {
                cookie.expires = jiff::fmt::rfc2822::parse(v)
                    .ok()
                    .map(|z| z.timestamp().strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
            "httponly" => cookie.http_only = Some(true),
            "secure" => cookie.secure = Some(true),
            _ => {}
        }
    }
    Some(cookie)
}

fn event_source_messages(x: &Exchange, wall: &Wall) -> Vec<EventSourceMessage> {
    // What a browser's EventSource would dispatch: blocks with data that ended in a blank
    // line. The last event id carries over between events (WHATWG HTML §9.2.6).
    let mut last_id = String::new();
    let mut out = Vec::new();
    for (t, e) in &x.sse {
        if let Some(id) = &e.id {
            last_id = id.clone();
        }
        if !e.dispatched {
            continue;
        }
        let Some(data) = &e.data else { continue };
        let name = e
            .event
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "message".to_string());
        out.push(EventSourceMessage {
            time: wall.epoch_seconds(*t),
            event_name: name.clone(),
            event_id: last_id.clone(),
            data: data.clone(),
            event: name,
            id: last_id.clone(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// curl

/// Where `--curl --target` sends requests: an origin and an optional path prefix.
#[derive(Debug, Clone)]
pub struct Target {
    scheme: String,
    authority: String,
    prefix: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: http::Uri = url
            .trim()
            .parse()
            .with_context(|| format!("--target '{url}' is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_string(),
            _ => bail!("--target '{url}' must start with http:// or https://"),
        };
        let Some(authority) = uri.authority() else {
            bail!("--target '{url}' has no host");
        };
        if uri.query().is_some() {
            bail!("--target '{url}' must not have a query string");
        }
        Ok(Target {
            scheme,
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn url(&self, x: &Exchange) -> String {
        format!(
            "{}://{}{}{}",
            self.scheme,
            self.authority,
            self.prefix,
            x.path_and_query()
        )
    }
}

/// Headers curl writes itself, or that describe the old connection rather than the request.
const SKIPPED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "te",
    "expect",
];

const REDACTED: &str = "<redacted fp=";

/// One curl command per request, each under a comment naming the exchange.
pub fn curl_script(capture: &Capture, name: &str, target: Option<&Target>) -> String {
    let mut out = format!(
        "# {} requests of the capture {name} (session {}), as curl commands.\n",
        capture.exchanges.len(),
        capture.session.session_id
    );
    if capture.session.redaction == "off" {
        out.push_str(
            "# The capture was recorded with --no-redact: these commands carry real secrets.\n",
        );
    } else {
        out.push_str("# Secrets were redacted when recorded: a command that needs a real value says so above it.\n");
    }
    for x in &capture.exchanges {
        out.push('\n');
        out.push_str(&curl_command(capture, x, target));
    }
    out
}

/// The commented curl command for one exchange (ends with a newline).
pub fn curl_command(capture: &Capture, x: &Exchange, target: Option<&Target>) -> String {
    let mut out = String::new();
    let status = x
        .status()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "no response".into());
    out.push_str(&comment_line(&format!(
        "#{} {} {} → {status} (+{:.3} s)",
        x.ex,
        x.method(),
        x.request.target,
        x.t as f64 / 1e6
    )));
    let needs = redacted_places(x);
    if !needs.is_empty() {
        out.push_str(&comment_line(&format!(
            "needs real values (recorded redacted): {}",
            needs.join(", ")
        )));
    }
    if let Some(up) = &x.upgrade {
        out.push_str(&comment_line(&format!(
            "upgraded to {}: curl sends the request, not the tunnel's traffic",
            up.protocol
        )));
    }
    if x.request_body.truncated {
        out.push_str(&comment_line(&format!(
            "the body was recorded only up to --max-body ({} of {} bytes): this sends the recorded part",
            x.request_body.bytes.len(),
            x.request_body.len
        )));
    }
    let url = match target {
        Some(t) => t.url(x),
        None => client_url(capture, x),
    };
    let https = url.starts_with("https://");
    let mut args: Vec<String> = vec!["curl".into()];
    match &*x.request.version {
        "HTTP/1.0" => args.push("--http1.0".into()),
        "HTTP/2" | "HTTP/2.0" if https => args.push("--http2".into()),
        "HTTP/2" | "HTTP/2.0" => args.push("--http2-prior-knowledge".into()),
        "HTTP/3" => args.push("--http3".into()),
        _ => args.push("--http1.1".into()),
    }
    // No URL globbing ([] and {} are literal) and no dot-segment squashing: the target as recorded.
    args.push("--globoff".into());
    args.push("--path-as-is".into());
    let body = &x.request_body;
    let has_body = body.present && !body.bytes.is_empty();
    match (x.method(), has_body) {
        ("GET", false) | ("POST", true) => {}
        ("HEAD", false) => args.push("--head".into()),
        (m, _) => {
            args.push("--request".into());
            args.push(shell_quote(m));
        }
    }
    args.push(shell_quote(&url));
    for (n, v) in &x.request.headers {
        if SKIPPED_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s)) {
            continue;
        }
        args.push("--header".into());
        // `Name;` is curl's way to send a header with an empty value.
        args.push(shell_quote(&if v.is_empty() {
            format!("{n};")
        } else {
            format!("{n}: {v}")
        }));
    }
    let mut prefix = String::new();
    if has_body {
        match std::str::from_utf8(&body.bytes) {
            Ok(text) if !text.starts_with('@') && !text.contains('\0') => {
                args.push("--data-binary".into());
                args.push(shell_quote(text));
            }
            _ => {
                // Bytes a shell argument cannot hold (or a leading @, which curl reads as a
                // file name) go through stdin.
                let b64 = base64::engine::general_purpose::STANDARD.encode(&body.bytes);
                prefix = format!("printf '%s' {} | base64 -d | ", shell_quote(&b64));
                args.push("--data-binary".into());
                args.push("@-".into());
            }
        }
    }
    out.push_str(&prefix);
    out.push_str(&args.join(" "));
    out.push('\n');
    out
}

/// A `#` comment line; line breaks in recorded text cannot escape the comment.
fn comment_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("# {flat}\n")
}

/// Single-quotes a word for POSIX shells: `it's` → `'it'\''s'`.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Where a request carries redacted values: header names, query parameters, form fields,
/// JSON fields.
fn redacted_places(x: &Exchange) -> Vec<String> {
    let mut places = Vec::new();
    for (n, v) in &x.request.headers {
        if v.contains(REDACTED) {
            places.push(format!("header {n}"));
        }
    }
    for (k, v) in x.query() {
        if v.contains(REDACTED) {
            places.push(format!("query parameter {k}"));
        }
    }
    let body = &x.request_body;
    if body.present
        && body
            .bytes
            .windows(REDACTED.len())
            .any(|w| w == REDACTED.as_bytes())
    {
        let mime = x.request_media_type().unwrap_or_default();
        if mime == "application/x-www-form-urlencoded" {
            for (k, v) in form_urlencoded::parse(&body.bytes) {
                if v.contains(REDACTED) {
                    places.push(format!("form field {k}"));
                }
            }
        } else if let Some(json) = body.json() {
            let mut fields = Vec::new();
            json_fields(&json, "", &mut fields);
            places.extend(fields.into_iter().map(|f| format!("JSON field {f}")));
        } else {
            places.push("the body".into());
        }
    }
    places
}

fn json_fields(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.contains(REDACTED) => out.push(if path.is_empty() {
            "(the whole body)".into()
        } else {
            path.to_string()
        }),
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_fields(v, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                json_fields(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = r#"{"t":0,"ts":"2026-01-01T00:00:00.000000Z","kind":"session","v":1,"tool":"mcptap","tool_version":"0.1.0","session_id":"abcd1234","routes":[{"listen":"127.0.0.1:1","upstream":"http://127.0.0.1:2/"}],"options":{"max_body":10,"on_full":"wait","preserve_host":false,"upstream_insecure":false,"upstream_timeout_s":null,"grace_s":5.0},"redaction":"fingerprint"}"#;

    fn capture(lines: &[&str]) -> Capture {
        let mut text = format!("{SESSION}\n");
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        Capture::from_reader(text.as_bytes(), "test.jsonl").unwrap()
    }

    fn request(ex: u64, t: u64, path: &str) -> String {
        format!(
            r#"{{"t":{t},"ts":"x","kind":"request","ex":{ex},"conn":1,"method":"GET","target":"{path}","version":"HTTP/1.1","headers":[],"upstream":""}}"#
        )
    }

    fn end(ex: u64, t: u64) -> String {
        format!(
            r#"{{"t":{t},"ts":"x","kind":"end","ex":{ex},"outcome":"complete","status":200,"timings":{{"upstream_connect_us":null,"reused_connection":true,"request_body_done_us":null,"ttfb_us":1,"response_done_us":null,"total_us":1}},"bytes":{{"request":0,"response":0}}}}"#
        )
    }

    #[test]
    fn the_har_is_written_as_the_capture_streams_by_in_request_order() {
        // A stream opened first and ended last, with requests ending around it.
        let mut lines = vec![request(1, 10, "/stream")];
        for ex in 2..=5 {
            lines.push(request(ex, ex * 100, &format!("/r{ex}")));
            lines.push(end(ex, ex * 100 + 50));
        }
        lines.push(end(1, 10_000));
        // One still open when the capture ends.
        lines.push(request(6, 20_000, "/cut"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, format!("{SESSION}\n{}\n", lines.join("\n"))).unwrap();
        let mut out = Vec::new();
        let (written, warnings) = write_har(&path, None, &mut out).unwrap();
        assert_eq!(written, 6);
        assert!(
            warnings.iter().any(|w| w.contains("session_end")),
            "{warnings:?}"
        );
        let streamed: Value = serde_json::from_slice(&out).unwrap();
        let urls: Vec<&str> = streamed["log"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["url"].as_str().unwrap())
            .collect();
        let paths: Vec<&str> = urls.iter().map(|u| &u[u.rfind('/').unwrap()..]).collect();
        assert_eq!(paths, ["/stream", "/r2", "/r3", "/r4", "/r5", "/cut"]);
        // The same archive as the capture read whole.
        let whole = har(&Capture::open(&path).unwrap(), &path.display().to_string());
        assert_eq!(streamed, serde_json::to_value(&whole).unwrap());
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn timings_add_up_to_the_total() {
        let cap = capture(&[
            r#"{"t":5,"ts":"x","kind":"request","ex":1,"conn":1,"method":"GET","target":"/a","version":"HTTP/1.1","headers":[],"upstream":"http://127.0.0.1:2/a"}"#,
            r#"{"t":3005,"ts":"x","kind":"end","ex":1,"outcome":"complete","status":200,"timings":{"upstream_connect_us":500,"reused_connection":false,"request_body_done_us":700,"ttfb_us":2000,"response_done_us":3000,"total_us":3000},"bytes":{"request":0,"response":5}}"#,
        ]);
        let t = timings(&cap.exchanges[0]);
        assert_eq!((t.connect, t.send, t.wait, t.receive), (0.5, 0.2, 1.3, 1.0));
        assert_eq!((t.blocked, t.dns, t.ssl), (-1.0, -1.0, -1.0));
    }

    #[test]
    fn a_reused_connection_has_no_connect_time() {
        let cap = capture(&[
            r#"{"t":5,"ts":"x","kind":"request","ex":1,"conn":1,"method":"GET","target":"/a","version":"HTTP/1.1","headers":[],"upstream":""}"#,
            r#"{"t":3005,"ts":"x","kind":"end","ex":1,"outcome":"complete","status":200,"timings":{"upstream_connect_us":null,"reused_connection":true,"request_body_done_us":null,"ttfb_us":4000,"response_done_us":null,"total_us":3000},"bytes":{"request":0,"response":5}}"#,
        ]);
        let t = timings(&cap.exchanges[0]);
        assert_eq!(t.connect, -1.0);
        // A ttfb past the total (clock skew between tasks) is clamped, never negative.
        assert_eq!((t.send, t.wait, t.receive), (0.0, 3.0, 0.0));
    }

    #[test]
    fn set_cookie_attributes() {
        let c = set_cookie("sid=<redacted fp=1234abcd>; Path=/; Domain=example.com; Expires=Wed, 21 Oct 2015 07:28:00 GMT; HttpOnly; Secure").unwrap();
        assert_eq!(c.value, "<redacted fp=1234abcd>");
        assert_eq!(c.path.as_deref(), Some("/"));
        assert_eq!(c.expires.as_deref(), Some("2015-10-21T07:28:00Z"));
        assert_eq!((c.http_only, c.secure), (Some(true), Some(true)));
    }

    #[test]
    fn curl_names_the_redacted_places() {
        let cap = capture(&[
            r#"{"t":5,"ts":"x","kind":"request","ex":1,"conn":1,"method":"POST","target":"/token?code=%3Credacted%20fp%3Dab%3E","version":"HTTP/1.1","headers":[["authorization","Bearer <redacted fp=11111111>"],["content-type","application/x-www-form-urlencoded"],["content-length","9"]],"upstream":"http://127.0.0.1:2/token"}"#,
            r#"{"t":6,"ts":"x","kind":"body","ex":1,"dir":"request","seq":0,"text":"code_verifier=<redacted fp=22222222>&x=1","len":40,"frames":[[6,40]]}"#,
        ]);
        let cmd = curl_command(&cap, &cap.exchanges[0], None);
        assert!(cmd.contains("header authorization"), "{cmd}");
        assert!(cmd.contains("query parameter code"), "{cmd}");
        assert!(cmd.contains("form field code_verifier"), "{cmd}");
        assert!(cmd.contains("--data-binary 'code_verifier=<redacted fp=22222222>&x=1'"));
        assert!(!cmd.contains("content-length"));
        assert!(
            !cmd.contains("--request"),
            "POST with a body is curl's default: {cmd}"
        );
    }
}
