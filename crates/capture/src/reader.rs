//! Reads a capture back: streams the JSONL, skips a partial last line (a crash or a
//! `kill -9` leaves one) with a warning, refuses an unknown format version, and rebuilds
//! connections and exchanges (joined bodies, SSE events, outcomes, timings).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use super::model::*;

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty: not a capture")]
    Empty { path: String },
    #[error("{path} does not start with a session line: not an mcptap capture ({detail})")]
    NotACapture { path: String, detail: String },
    #[error("{path} is capture format v{found}; this mcptap reads v{FORMAT_VERSION} (a newer mcptap wrote it?)")]
    UnknownVersion { path: String, found: u64 },
    #[error("{path} holds {count} captures, not the parts of one: {list}; name one of them")]
    SeveralCaptures {
        path: String,
        count: usize,
        list: String,
    },
    #[error("{path} matches no capture file")]
    NoMatch { path: String },
}

/// A body as recorded: the bytes (joined across events), and how much the wire carried.
#[derive(Debug, Clone, Default)]
pub struct BodyData {
    pub bytes: Vec<u8>,
    /// Wire length, as recorded (before redaction and `--max-body`).
    pub len: u64,
    pub truncated: bool,
    /// `[t, len]` per frame.
    pub frames: Vec<(u64, u64)>,
    /// Whether any body event was seen.
    pub present: bool,
    /// The content coding the body crossed in, when `bytes` are its decoded content.
    pub decoded_from: Option<String>,
    /// Why the bytes were left out of the capture, when they were.
    pub omitted: Option<String>,
}

impl BodyData {
    /// The body as text (lossy for non-UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// The body parsed as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.bytes).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn add(&mut self, body: &Body) {
        self.present = true;
        if let Some(text) = &body.text {
            self.bytes.extend_from_slice(text.as_bytes());
        } else if let Some(b64) = &body.b64 {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
                self.bytes.extend_from_slice(&bytes);
            }
        }
        self.len += body.len;
        self.truncated |= body.truncated;
        self.frames.extend_from_slice(&body.frames);
        if body.encoding.is_some() {
            self.decoded_from.clone_from(&body.encoding);
        }
        if body.omitted.is_some() {
            self.omitted.clone_from(&body.omitted);
        }
    }
}

/// One request/response exchange, rebuilt from its events.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub ex: u64,
    pub conn: u64,
    /// When the request headers arrived (µs since session start).
    pub t: u64,
    pub request: Request,
    pub response: Option<Response>,
    /// When the response headers arrived.
    pub response_t: Option<u64>,
    pub request_body: BodyData,
    pub response_body: BodyData,
    /// Event-stream blocks, with the time each arrived.
    pub sse: Vec<(u64, Sse)>,
    pub end: Option<(u64, End)>,
    pub upgrade: Option<Upgrade>,
}

impl Exchange {
    fn new(t: u64, request: Request) -> Self {
        Exchange {
            ex: request.ex,
            conn: request.conn,
            t,
            request,
            response: None,
            response_t: None,
            request_body: BodyData::default(),
            response_body: BodyData::default(),
            sse: Vec::new(),
            end: None,
            upgrade: None,
        }
    }

    /// The first request header of that name (case-insensitive).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request.headers.get(name)
    }

    /// The first response header of that name (case-insensitive).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response.as_ref().and_then(|r| r.headers.get(name))
    }

    /// Every response header value of that name.
    pub fn response_headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.response
            .iter()
            .flat_map(|r| r.headers.iter())
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    pub fn method(&self) -> &str {
        &self.request.method
    }

    /// The request path without the query (HTTP/2 absolute targets reduced to their path).
    pub fn path(&self) -> &str {
        let target = self.path_and_query();
        target.split(['?', '#']).next().unwrap_or(target)
    }

    /// The request path and query.
    pub fn path_and_query(&self) -> &str {
        let target = self.request.target.as_str();
        match target.find("://") {
            Some(i) => {
                let rest = &target[i + 3..];
                rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
            }
            None => target,
        }
    }

    /// The query parameters of the request target (decoded).
    pub fn query(&self) -> Vec<(String, String)> {
        match self.path_and_query().split_once('?') {
            Some((_, q)) => form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The response media type, lowercased, without parameters.
    pub fn response_media_type(&self) -> Option<String> {
        self.response_header("content-type").map(media_type)
    }

    /// The request media type, lowercased, without parameters.
    pub fn request_media_type(&self) -> Option<String> {
        self.request_header("content-type").map(media_type)
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.end.as_ref().map(|(_, e)| e.outcome)
    }

    /// When the exchange ended, or the last thing seen of it.
    pub fn end_t(&self) -> u64 {
        self.end
            .as_ref()
            .map(|(t, _)| *t)
            .or_else(|| self.sse.last().map(|(t, _)| *t))
            .or(self.response_t)
            .unwrap_or(self.t)
    }
}

/// `text/Event-Stream; charset=utf-8` → `text/event-stream`.
pub fn media_type(value: &str) -> String {
    super::headers::media_type(value).to_ascii_lowercase()
}

/// A client connection, from `conn_open` to `conn_close`.
#[derive(Debug, Clone)]
pub struct Connection {
    pub t: u64,
    pub open: ConnOpen,
    pub close: Option<(u64, ConnClose)>,
}

/// A capture, read back.
#[derive(Debug, Clone)]
pub struct Capture {
    pub session: Session,
    /// Wall-clock time of the session start (the `ts` of the session line).
    pub started: String,
    pub exchanges: Vec<Exchange>,
    pub connections: BTreeMap<u64, Connection>,
    pub tls_errors: Vec<(u64, TlsError)>,
    pub notes: Vec<(u64, Note)>,
    pub session_end: Option<(u64, SessionEnd)>,
    /// The last `t` seen in the file.
    pub last_t: u64,
    /// Problems met while reading (partial last line, unknown kinds), in words.
    pub warnings: Vec<String>,
}

impl Capture {
    /// Reads a capture: a file with the parts a rotating proxy continued it in
    /// (`x.jsonl`, `x.1.jsonl`, `x.2.jsonl`…), a folder holding one capture's files, or a
    /// `*` pattern naming them. The parts read as one capture.
    pub fn open(path: &Path) -> Result<Capture, ReadError> {
        Exchanges::open(path)?.collect_all()
    }

    /// Reads a capture from any byte source; `name` is used in messages.
    pub fn from_reader(reader: impl Read, name: &str) -> Result<Capture, ReadError> {
        Exchanges::from_reader(Box::new(reader), name)?.collect_all()
    }

    /// The part of the capture made of the exchanges `exs` (sorted ids) and their connections:
    /// one client flow of it, say. The session, its end and the notes stay; failed TLS
    /// handshakes, which belong to no exchange, do not.
    pub fn subset(&self, exs: &[u64]) -> Capture {
        // Looked up one by one: a flow is a small part of a large capture.
        let exchanges: Vec<Exchange> = exs
            .iter()
            .filter_map(|ex| self.exchange(*ex))
            .cloned()
            .collect();
        self.with_exchanges(exchanges, false)
    }

    /// This capture's session, notes and end with `exchanges` (sorted) and their connections
    /// in place of its own; its failed TLS handshakes, which belong to no exchange, only with
    /// `tls_errors`.
    pub fn with_exchanges(&self, exchanges: Vec<Exchange>, tls_errors: bool) -> Capture {
        let conns: std::collections::BTreeSet<u64> = exchanges.iter().map(|x| x.conn).collect();
        Capture {
            session: self.session.clone(),
            started: self.started.clone(),
            connections: self
                .connections
                .iter()
                .filter(|(id, _)| conns.contains(id))
                .map(|(id, c)| (*id, c.clone()))
                .collect(),
            exchanges,
            tls_errors: if tls_errors {
                self.tls_errors.clone()
            } else {
                Vec::new()
            },
            notes: self.notes.clone(),
            session_end: self.session_end.clone(),
            last_t: self.last_t,
            warnings: self.warnings.clone(),
        }
    }

    /// The exchange with this id.
    pub fn exchange(&self, ex: u64) -> Option<&Exchange> {
        self.exchanges
            .binary_search_by_key(&ex, |e| e.ex)
            .ok()
            .map(|i| &self.exchanges[i])
    }

    /// The end of the record: `session_end`, or the last event seen.
    pub fn end_t(&self) -> u64 {
        self.session_end
            .as_ref()
            .map(|(t, _)| *t)
            .unwrap_or(self.last_t)
    }
}

struct Builder {
    /// The capture so far, without its exchanges.
    capture: Capture,
    /// Exchanges still open: their `end` (or a tunnel's `upgrade`) not yet read.
    open: HashMap<u64, Exchange>,
    /// Exchanges complete, in the order they completed.
    done: VecDeque<Exchange>,
    /// The open exchanges by the time their request began.
    open_order: BTreeSet<(u64, u64)>,
}

impl Builder {
    fn start(line: &[u8], name: &str) -> Result<Builder, ReadError> {
        let value: Value = serde_json::from_slice(line).map_err(|e| ReadError::NotACapture {
            path: name.to_string(),
            detail: format!("line 1 is not JSON: {e}"),
        })?;
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "session" {
            return Err(ReadError::NotACapture {
                path: name.to_string(),
                detail: format!("the first line's kind is {kind:?}"),
            });
        }
        let found = value.get("v").and_then(Value::as_u64).unwrap_or(0);
        if found != u64::from(FORMAT_VERSION) {
            return Err(ReadError::UnknownVersion {
                path: name.to_string(),
                found,
            });
        }
        let event: Event = serde_json::from_value(value).map_err(|e| ReadError::NotACapture {
            path: name.to_string(),
            detail: format!("the session line does not parse: {e}"),
        })?;
        let EventBody::Session(session) = event.body else {
            unreachable!("kind checked above");
        };
        Ok(Builder {
            capture: Capture {
                session,
                started: event.ts,
                exchanges: Vec::new(),
                connections: BTreeMap::new(),
                tls_errors: Vec::new(),
                notes: Vec::new(),
                session_end: None,
                last_t: 0,
                warnings: Vec::new(),
            },
            open: HashMap::new(),
            done: VecDeque::new(),
            open_order: BTreeSet::new(),
        })
    }

    fn add(&mut self, t: u64, body: EventBody, name: &str, number: u64) {
        self.capture.last_t = self.capture.last_t.max(t);
        match body {
            EventBody::Session(_) => self
                .capture
                .warnings
                .push(format!("{name}:{number}: a second session line; ignored")),
            EventBody::ConnOpen(open) => {
                self.capture.connections.insert(
                    open.conn,
                    Connection {
                        t,
                        open,
                        close: None,
                    },
                );
            }
            EventBody::ConnClose(close) => {
                if let Some(c) = self.capture.connections.get_mut(&close.conn) {
                    c.close = Some((t, close));
                }
            }
            EventBody::TlsError(e) => self.capture.tls_errors.push((t, e)),
            EventBody::Request(req) => {
                self.open_order.insert((t, req.ex));
                if let Some(old) = self.open.insert(req.ex, Exchange::new(t, req)) {
                    // The same id twice (a damaged file): the first is complete as it stands.
                    self.open_order.remove(&(old.t, old.ex));
                    self.done.push_back(old);
                }
            }
            EventBody::Response(resp) => {
                if let Some(x) = self.open.get_mut(&resp.ex) {
                    x.response_t = Some(t);
                    x.response = Some(resp);
                }
            }
            EventBody::Body(body) => {
                if let Some(x) = self.open.get_mut(&body.ex) {
                    match body.dir {
                        Direction::Request => x.request_body.add(&body),
                        Direction::Response => x.response_body.add(&body),
                    }
                }
            }
            EventBody::Sse(sse) => {
                if let Some(x) = self.open.get_mut(&sse.ex) {
                    x.sse.push((t, sse));
                }
            }
            EventBody::End(end) => {
                let ex = end.ex;
                if let Some(x) = self.open.get_mut(&ex) {
                    x.end = Some((t, end));
                    // A tunnel's record follows its end.
                    if x.status() != Some(101) {
                        self.close(ex);
                    }
                }
            }
            EventBody::Upgrade(up) => {
                let ex = up.ex;
                if let Some(x) = self.open.get_mut(&ex) {
                    x.upgrade = Some(up);
                    if x.end.is_some() {
                        self.close(ex);
                    }
                }
            }
            EventBody::Note(note) => self.capture.notes.push((t, note)),
            EventBody::SessionEnd(end) => self.capture.session_end = Some((t, end)),
        }
    }

    fn close(&mut self, ex: u64) {
        if let Some(x) = self.open.remove(&ex) {
            self.open_order.remove(&(x.t, x.ex));
            self.done.push_back(x);
        }
    }

    /// The end of the input: every exchange still open is complete as it stands, in order.
    fn finish(&mut self, name: &str) {
        self.open_order.clear();
        let mut rest: Vec<Exchange> = self.open.drain().map(|(_, x)| x).collect();
        rest.sort_by_key(|x| x.ex);
        self.done.extend(rest);
        if self.capture.session_end.is_none() {
            self.capture.warnings.push(format!(
                "{name} has no session_end line: the proxy was still running or did not shut down cleanly"
            ));
        }
    }
}

/// A capture's exchanges, read one at a time as each completes, in bounded memory: only the
/// exchanges still open at the point reached are held. The rest of the capture (its session,
/// connections, notes, failed handshakes, warnings) accumulates in [`Exchanges::capture`].
pub struct Exchanges<'r> {
    lines: BufReader<Box<dyn Read + 'r>>,
    name: String,
    builder: Builder,
    line: Vec<u8>,
    number: u64,
    ended: bool,
}

impl<'r> Exchanges<'r> {
    /// Opens a capture as [`Capture::open`] does (its parts, a folder, a pattern).
    pub fn open(path: &Path) -> Result<Exchanges<'static>, ReadError> {
        let name = path.display().to_string();
        let parts = parts_of(path)?;
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| ReadError::Io { path, source }
        };
        if parts.len() == 1 {
            let file = std::fs::File::open(&parts[0]).map_err(io(&parts[0]))?;
            return Exchanges::from_reader(Box::new(file), &name);
        }
        // The first part whole; each later part without its copy of the session line.
        let mut chained: Box<dyn Read> = Box::new(std::io::empty());
        let mut first_id: Option<String> = None;
        let mut stray = None;
        let mut used = 0;
        for part in &parts {
            let mut reader = BufReader::new(std::fs::File::open(part).map_err(io(part))?);
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).map_err(io(part))?;
            let id = session_id_of(&line);
            match &first_id {
                None => {
                    first_id = id;
                    chained = Box::new(chained.chain(std::io::Cursor::new(line)).chain(reader));
                }
                Some(first) if id.as_deref() == Some(first.as_str()) => {
                    chained = Box::new(chained.chain(reader));
                }
                // A file named like a part of this capture that belongs to another: the
                // capture ends before it, and says so.
                Some(_) => {
                    stray = Some(part.display().to_string());
                    break;
                }
            }
            used += 1;
        }
        let label = format!("{name} ({used} parts)");
        let mut exchanges = Exchanges::from_reader(chained, &label)?;
        if let Some(stray) = stray {
            exchanges.builder.capture.warnings.push(format!(
                "{stray} is named like a part of this capture but belongs to another session: it and the parts after it were not read"
            ));
        }
        Ok(exchanges)
    }

    /// Reads a capture from any byte source; `name` is used in messages. The session line
    /// is read (and checked) at once.
    pub fn from_reader(reader: Box<dyn Read + 'r>, name: &str) -> Result<Exchanges<'r>, ReadError> {
        let mut lines = BufReader::with_capacity(256 * 1024, reader);
        let mut line = Vec::new();
        let io = |source| ReadError::Io {
            path: name.to_string(),
            source,
        };
        let mut number = 0;
        // Blank lines before the session line are allowed.
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).map_err(io)? == 0 {
                return Err(ReadError::Empty {
                    path: name.to_string(),
                });
            }
            number += 1;
            if !line.trim_ascii().is_empty() {
                break;
            }
        }
        let builder = Builder::start(line.trim_ascii_end(), name)?;
        Ok(Exchanges {
            lines,
            name: name.to_string(),
            builder,
            line,
            number,
            ended: false,
        })
    }

    /// The capture without its exchanges, as far as it has been read (the whole of it once
    /// [`Exchanges::next_exchange`] has returned `None`).
    pub fn capture(&self) -> &Capture {
        &self.builder.capture
    }

    /// The start time (`t`) of the earliest exchange still open: every exchange still to come
    /// out began at or after it, or after the last line read. `None` when none is open.
    pub fn earliest_open(&self) -> Option<u64> {
        self.builder.open_order.first().map(|(t, _)| *t)
    }

    /// Gives up the capture read so far, without its exchanges.
    pub fn into_capture(self) -> Capture {
        self.builder.capture
    }

    /// The next complete exchange; `None` at the end of the capture. An exchange still open
    /// when the input ends (the proxy was killed, a stream never ended) comes out then, as
    /// it stands.
    pub fn next_exchange(&mut self) -> Result<Option<Exchange>, ReadError> {
        loop {
            if let Some(x) = self.builder.done.pop_front() {
                return Ok(Some(x));
            }
            if self.ended {
                return Ok(None);
            }
            self.read_line()?;
        }
    }

    /// Reads every exchange into a whole [`Capture`].
    pub fn collect_all(mut self) -> Result<Capture, ReadError> {
        let mut exchanges = Vec::new();
        while let Some(x) = self.next_exchange()? {
            exchanges.push(x);
        }
        // Exchange ids grow with arrival; keep them sorted for lookups.
        exchanges.sort_by_key(|x| x.ex);
        let mut capture = self.into_capture();
        capture.exchanges = exchanges;
        Ok(capture)
    }

    fn read_line(&mut self) -> Result<(), ReadError> {
        self.line.clear();
        let n = self
            .lines
            .read_until(b'\n', &mut self.line)
            .map_err(|source| ReadError::Io {
                path: self.name.clone(),
                source,
            })?;
        if n == 0 {
            self.ended = true;
            self.builder.finish(&self.name);
            return Ok(());
        }
        self.number += 1;
        let (name, number) = (&self.name, self.number);
        let complete = self.line.ends_with(b"\n");
        let text = self.line.trim_ascii();
        if text.is_empty() {
            return Ok(());
        }
        let parsed = match parse_event(text) {
            // A damaged file's stray bytes: read the line as the text it mostly is.
            Err(LineError::NotJson(_)) if std::str::from_utf8(text).is_err() => {
                parse_event(String::from_utf8_lossy(text).as_bytes())
            }
            parsed => parsed,
        };
        match parsed {
            Ok((t, body)) => self.builder.add(t, body, name, number),
            Err(LineError::NotJson(e)) => {
                let warning = if complete {
                    format!("{name}:{number}: skipped a line that is not JSON ({e})")
                } else {
                    format!(
                        "{name}:{number}: the last line is partial (the proxy was killed mid-write?); skipped it"
                    )
                };
                self.builder.capture.warnings.push(warning);
            }
            Err(LineError::Unknown { kind, error }) => {
                self.builder.capture.warnings.push(format!(
                    "{name}:{number}: skipped a {kind:?} line this mcptap does not understand ({error})"
                ));
            }
        }
        Ok(())
    }
}

enum LineError {
    NotJson(serde_json::Error),
    Unknown { kind: String, error: String },
}

/// The two fields every line starts with; the rest is the kind's own.
#[derive(serde::Deserialize)]
struct Stamp<'a> {
    t: u64,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// The stamp of a line as mcptap writes them (`{"t":5,"ts":"…","kind":"body",…`), read
/// without a JSON parser; `None` for any other shape, which the parser then reads.
fn stamp_of(line: &[u8]) -> Option<Stamp<'_>> {
    let rest = line.strip_prefix(br#"{"t":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let t = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(br#","ts":""#)?;
    let rest = &rest[memchr::memchr(b'"', rest)? + 1..];
    let rest = rest.strip_prefix(br#","kind":""#)?;
    let kind = &rest[..memchr::memchr(b'"', rest)?];
    if kind.contains(&b'\\') {
        return None;
    }
    Some(Stamp {
        t,
        kind: std::borrow::Cow::Borrowed(std::str::from_utf8(kind).ok()?),
    })
}

/// One line as an event: its `t` and what it records. Each kind is parsed straight into its
/// own type (the fields it does not know are skipped), not through a generic JSON value.
fn parse_event(line: &[u8]) -> Result<(u64, EventBody), LineError> {
    let stamp = match stamp_of(line)
        .map(Ok)
        .unwrap_or_else(|| serde_json::from_slice(line))
    {
        Ok(s) => s,
        Err(e) if e.is_data() => {
            // JSON, but not an event's shape.
            let kind = serde_json::from_slice::<Value>(line)
                .ok()
                .and_then(|v| v.get("kind").and_then(Value::as_str).map(String::from))
                .unwrap_or_default();
            return Err(LineError::Unknown {
                kind,
                error: e.to_string(),
            });
        }
        Err(e) => return Err(LineError::NotJson(e)),
    };
    fn of<'a, T: serde::Deserialize<'a>>(
        line: &'a [u8],
        wrap: fn(T) -> EventBody,
    ) -> Result<EventBody, serde_json::Error> {
        serde_json::from_slice(line).map(wrap)
    }
    let body = match stamp.kind.as_ref() {
        "session" => of(line, EventBody::Session),
        "conn_open" => of(line, EventBody::ConnOpen),
        "conn_close" => of(line, EventBody::ConnClose),
        "tls_error" => of(line, EventBody::TlsError),
        "request" => of(line, EventBody::Request),
        "response" => of(line, EventBody::Response),
        "body" => of(line, EventBody::Body),
        "sse" => of(line, EventBody::Sse),
        "end" => of(line, EventBody::End),
        "upgrade" => of(line, EventBody::Upgrade),
        "note" => of(line, EventBody::Note),
        "session_end" => of(line, EventBody::SessionEnd),
        _ => {
            return Err(LineError::Unknown {
                kind: stamp.kind.into_owned(),
                error: "unknown kind".into(),
            })
        }
    };
    body.map(|b| (stamp.t, b)).map_err(|e| {
        if e.is_data() {
            LineError::Unknown {
                kind: stamp.kind.into_owned(),
                error: e.to_string(),
            }
        } else {
            LineError::NotJson(e)
        }
    })
}

/// The session id of a capture's first line, if it is a session line.
fn session_id_of(line: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(line).ok()?;
    (value.get("kind")?.as_str()? == "session")
        .then(|| value.get("session_id")?.as_str().map(String::from))
        .flatten()
}

/// The files of the capture `path` names, first part first.
fn parts_of(path: &Path) -> Result<Vec<std::path::PathBuf>, ReadError> {
    let name = path.display().to_string();
    if path.is_file() || (path.exists() && !path.is_dir()) {
        let mut parts = vec![path.to_path_buf()];
        for n in 1.. {
            let next = super::file::part_path(path, n);
            if !next.is_file() {
                break;
            }
            parts.push(next);
        }
        return Ok(parts);
    }
    let (dir, pattern) = if path.is_dir() {
        (path.to_path_buf(), "*.jsonl".to_string())
    } else {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        match file.filter(|f| f.contains('*')) {
            Some(pattern) => (
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
                pattern,
            ),
            // Not there: the error names the file.
            None => return Ok(vec![path.to_path_buf()]),
        }
    };
    let entries = std::fs::read_dir(&dir).map_err(|source| ReadError::Io {
        path: name.clone(),
        source,
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| wildcard(&pattern, &f.to_string_lossy()))
        })
        .collect();
    if files.is_empty() {
        return Err(ReadError::NoMatch { path: name });
    }
    // The first parts: files that are not `<stem>.<n>.jsonl` of a `<stem>.jsonl` here.
    let names: std::collections::HashSet<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let is_later_part = |f: &std::path::PathBuf| {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        name.as_deref()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.rsplit_once('.'))
            .is_some_and(|(stem, n)| {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && names.contains(&format!("{stem}.jsonl"))
            })
    };
    let firsts: Vec<std::path::PathBuf> = files
        .iter()
        .filter(|f| !is_later_part(f))
        .cloned()
        .collect();
    if firsts.len() > 1 {
        return Err(ReadError::SeveralCaptures {
            path: name,
            count: firsts.len(),
            list: firsts
                .iter()
                .take(5)
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    files.sort();
    let first = firsts
        .into_iter()
        .next()
        .unwrap_or_else(|| files[0].clone());
    parts_of(&first)
}

/// Whether `name` matches `pattern`, in which `*` stands for any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| wildcard(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = r#"{"t":0,"ts":"2026-01-01T00:00:00.000000Z","kind":"session","v":1,"tool":"mcptap","tool_version":"0.1.0","session_id":"abcd1234","routes":[{"listen":"127.0.0.1:1","upstream":"http://127.0.0.1:2/"}],"options":{"max_body":10,"on_full":"wait","preserve_host":false,"upstream_insecure":false,"upstream_timeout_s":null,"grace_s":5.0},"redaction":"fingerprint"}"#;
    const REQUEST: &str = r#"{"t":5,"ts":"2026-01-01T00:00:00.000005Z","kind":"request","ex":1,"conn":1,"method":"POST","target":"/mcp?a=1","version":"HTTP/1.1","headers":[["content-type","application/json"]],"upstream":"http://127.0.0.1:2/mcp?a=1"}"#;
    const BODY: &str = r#"{"t":6,"ts":"2026-01-01T00:00:00.000006Z","kind":"body","ex":1,"dir":"request","seq":0,"text":"{\"a\":1}","len":7,"frames":[[6,7]]}"#;

    fn read(text: &str) -> Result<Capture, ReadError> {
        Capture::from_reader(text.as_bytes(), "test.jsonl")
    }

    #[test]
    fn parts_are_read_as_one_and_a_stray_file_named_like_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("x.jsonl");
        std::fs::write(&first, format!("{SESSION}\n")).unwrap();
        std::fs::write(
            dir.path().join("x.1.jsonl"),
            format!("{SESSION}\n{REQUEST}\n{BODY}\n"),
        )
        .unwrap();
        let other = SESSION.replace("abcd1234", "ffff0000");
        std::fs::write(
            dir.path().join("x.2.jsonl"),
            format!("{other}\n{REQUEST}\n"),
        )
        .unwrap();
        let cap = Capture::open(&first).unwrap();
        assert_eq!(cap.exchanges.len(), 1);
        assert_eq!(cap.exchanges[0].request_body.text(), r#"{"a":1}"#);
        assert!(
            cap.warnings
                .iter()
                .any(|w| w.contains("x.2.jsonl") && w.contains("another session")),
            "{:?}",
            cap.warnings
        );
        // Their folder, and a pattern, name the same capture.
        std::fs::remove_file(dir.path().join("x.2.jsonl")).unwrap();
        for name in [dir.path().to_path_buf(), dir.path().join("x*.jsonl")] {
            assert_eq!(
                Capture::open(&name).unwrap().exchanges.len(),
                1,
                "{}",
                name.display()
            );
        }
        assert!(matches!(
            Capture::open(&dir.path().join("y*.jsonl")),
            Err(ReadError::NoMatch { .. })
        ));
    }

    #[test]
    fn rebuilds_an_exchange() {
        let cap = read(&format!("{SESSION}\n{REQUEST}\n{BODY}\n")).unwrap();
        let x = cap.exchange(1).unwrap();
        assert_eq!(x.path(), "/mcp");
        assert_eq!(x.query(), vec![("a".to_string(), "1".to_string())]);
        assert_eq!(x.request_body.json().unwrap()["a"], 1);
        assert_eq!(x.request_media_type().as_deref(), Some("application/json"));
    }

    #[test]
    fn a_partial_last_line_is_skipped_with_a_warning() {
        let cut = &BODY[..BODY.len() / 2];
        let cap = read(&format!("{SESSION}\n{REQUEST}\n{cut}")).unwrap();
        assert!(cap.exchange(1).unwrap().request_body.is_empty());
        assert!(
            cap.warnings.iter().any(|w| w.contains("partial")),
            "{:?}",
            cap.warnings
        );
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let v2 = SESSION.replace("\"v\":1", "\"v\":2");
        let err = read(&format!("{v2}\n")).unwrap_err();
        assert!(err.to_string().contains("v2"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_capture_says_so() {
        assert!(matches!(
            read("hello\n"),
            Err(ReadError::NotACapture { .. })
        ));
        assert!(matches!(read(""), Err(ReadError::Empty { .. })));
        assert!(matches!(
            read(&format!("{REQUEST}\n")),
            Err(ReadError::NotACapture { .. })
        ));
    }

    #[test]
    fn unknown_kinds_are_skipped_with_a_warning() {
        let odd = r#"{"t":7,"ts":"x","kind":"hologram","ex":1}"#;
        let cap = read(&format!("{SESSION}\n{REQUEST}\n{odd}\n")).unwrap();
        assert_eq!(cap.exchanges.len(), 1);
        assert!(cap.warnings.iter().any(|w| w.contains("hologram")));
    }

    proptest::proptest! {
        /// Any truncation of a valid capture reads back all of its whole lines.
        #[test]
        fn any_truncation_reads_back_its_whole_lines(cut in 0usize..2000) {
            let full = format!("{SESSION}\n{REQUEST}\n{BODY}\n");
            let cut = SESSION.len() + 1 + cut % (full.len() - SESSION.len());
            let text = &full[..cut];
            let cap = read(text).unwrap();
            // A line counts once all of its JSON is there (its newline may be missing).
            let request_end = SESSION.len() + 1 + REQUEST.len();
            let body_end = request_end + 1 + BODY.len();
            proptest::prop_assert_eq!(cap.exchanges.len(), usize::from(cut >= request_end));
            if cut >= body_end {
                proptest::prop_assert!(!cap.exchange(1).unwrap().request_body.is_empty());
            } else if cut >= request_end {
                proptest::prop_assert!(cap.exchange(1).unwrap().request_body.is_empty());
            }
        }
    }
}
