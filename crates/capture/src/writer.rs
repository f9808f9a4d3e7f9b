//! The recorder: a queue from the data path into one writer thread, which
//! redacts, joins bodies, parses event streams and writes one JSON line per event.
//!
//! The data path only moves refcounted `Bytes` and small structs into the queue;
//! serialisation, redaction and disk writes all happen on the writer thread.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

use super::coding::{self, Coded, Decoder};
use super::line;
use super::model::*;
use super::observer::Observer;
use super::queue;
use super::redact::Redactor;
use crate::sse::SseParser;

/// Session time: microseconds since start on the monotonic clock, and the wall-clock start.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    wall: jiff::Timestamp,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            wall: jiff::Timestamp::now(),
        }
    }

    /// Microseconds since the session started.
    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    /// Microseconds between the session start and `at`.
    pub fn us_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// RFC 3339 wall-clock time (UTC, microseconds) of a session offset.
    pub fn wall_at(&self, t_us: u64) -> String {
        let offset = jiff::SignedDuration::from_micros(t_us as i64);
        let ts = self.wall.checked_add(offset).unwrap_or(self.wall);
        ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    /// The wall-clock start, for file names.
    pub fn wall_start(&self) -> jiff::Timestamp {
        self.wall
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What the data path hands to the writer.
#[derive(Debug)]
pub enum Record {
    /// A finished event (request and response values are still raw: the writer redacts them).
    /// Boxed: an event is some 250 bytes, a frame 80, and each record is moved several times
    /// on its way through the queue, whose slots are as large as the largest record.
    Event { t: u64, body: Box<EventBody> },
    /// One body frame as it crossed the proxy: `len` bytes on the wire, of which `bytes`
    /// (a prefix, possibly empty) are to be recorded. The permit holds the frame's share of
    /// the queue budget until the writer is done with it. `last`: the body ended with it
    /// (a `BodyEnd` at the same time, in the same record).
    Frame {
        ex: u64,
        dir: Direction,
        t: u64,
        len: u64,
        bytes: Bytes,
        permit: Option<OwnedSemaphorePermit>,
        last: bool,
    },
    /// A body finished (ended, failed or was abandoned); the writer flushes what it holds.
    BodyEnd { ex: u64, dir: Direction, t: u64 },
    /// About once a second, for the live watchdog; nothing is written.
    Tick { t: u64 },
    /// The proxy is done: write `session_end` and stop.
    Finish {
        t: u64,
        exchanges: u64,
        connections: u64,
        clean: bool,
    },
}

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// The data path waits: nothing is lost.
    Wait,
    /// The frame is not recorded, and the count goes into a `note`.
    Drop,
}

/// The data path's handle on the recorder. Cheap to clone.
///
/// All records go through one FIFO, so the file keeps the order in which they were made.
/// Body frames, the only records whose volume the traffic decides, first take their size
/// from a byte budget that the writer gives back: that bound is where the data path waits
/// (or, with `--on-full drop`, where frames are dropped). Other records are small and
/// bounded by the number of open exchanges, so they never wait — a `Drop` can record.
///
/// One `Arc`: every body on the data path takes a clone, and each clone or drop of a shared
/// count is a cache line passed between the cores.
#[derive(Clone)]
pub struct Recorder(Arc<Handles>);

struct Handles {
    tx: queue::Sender<Record>,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    clock: Arc<Clock>,
    on_full: OnFull,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    pub fn on_full(&self) -> OnFull {
        self.0.on_full
    }

    /// Queues a record. Never waits; after shutdown it is a no-op.
    pub fn record(&self, record: Record) {
        self.0.tx.send(record);
    }

    /// Queues an event that happens now.
    pub fn event_now(&self, body: EventBody) {
        self.event(self.clock().now_us(), body);
    }

    /// Queues an event that happened at `t` (µs on the session clock).
    pub fn event(&self, t: u64, body: EventBody) {
        self.record(Record::Event {
            t,
            body: Box::new(body),
        });
    }

    /// Queues a frame of `bytes`, whole, outside the byte budget: for bodies mcptap sent or
    /// read itself (probe, replay, mock), not for traffic it forwards.
    pub fn whole_frame(&self, ex: u64, dir: Direction, t: u64, bytes: Bytes) {
        self.record(Record::Frame {
            ex,
            dir,
            t,
            len: bytes.len() as u64,
            bytes,
            permit: None,
            last: false,
        });
    }

    /// A handle for waiting on the queue budget from `Body::poll_frame`.
    pub fn budget(&self) -> PollSemaphore {
        PollSemaphore::new(self.0.budget.clone())
    }

    /// How much of the budget a frame of `recorded` bytes takes (empty frames still cost a little).
    pub fn frame_cost(&self, recorded: usize) -> u32 {
        (recorded.max(64).min(u32::MAX as usize) as u32).min(self.0.budget_bytes)
    }

    /// Waits for budget for a frame (lossless mode); `None` once the writer has stopped.
    pub async fn acquire(&self, cost: u32) -> Option<OwnedSemaphorePermit> {
        self.0.budget.clone().acquire_many_owned(cost).await.ok()
    }

    /// Takes budget for a frame without waiting (`--on-full drop`); `None` counts a drop.
    pub fn try_budget(&self, cost: u32) -> Option<OwnedSemaphorePermit> {
        match self.0.budget.clone().try_acquire_many_owned(cost) {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.0.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// How the writer thread is set up.
pub struct WriterConfig {
    pub file: File,
    /// Go on in a new file by size or time (`--rotate-size`, `--rotate-every`).
    pub rotation: Option<super::file::Rotation>,
    pub redactor: Redactor,
    pub max_body: u64,
    /// Bytes of body frames that may wait in the queue.
    pub queue_bytes: u32,
    pub on_full: OnFull,
    /// Told of every event as it is written.
    pub observers: Vec<Box<dyn Observer>>,
    /// Run before the writer waits for records (the allocator's idle collection).
    pub on_idle: fn(),
}

/// What the writer did, returned when it stops.
#[derive(Debug, Clone, Default)]
pub struct WriterStats {
    pub events_written: u64,
    pub events_dropped: u64,
    pub events_lost: u64,
    /// The first write error, in words.
    pub write_error: Option<String>,
}

/// Starts the writer thread; returns the recorder handle and the thread to join.
pub fn start(
    config: WriterConfig,
    clock: Arc<Clock>,
) -> (Recorder, std::thread::JoinHandle<WriterStats>) {
    let (tx, rx) = queue::queue();
    let dropped = Arc::new(AtomicU64::new(0));
    let budget_bytes = config.queue_bytes.max(64 * 1024);
    let recorder = Recorder(Arc::new(Handles {
        tx,
        budget: Arc::new(Semaphore::new(budget_bytes as usize)),
        budget_bytes,
        clock: clock.clone(),
        on_full: config.on_full,
        dropped: dropped.clone(),
    }));
    let handle = std::thread::Builder::new()
        .name("mcptap-writer".into())
        .spawn(move || Writer::new(config, clock, dropped).run(rx))
        .expect("spawning the capture writer thread");
    (recorder, handle)
}

/// Writes a single event directly (the `session` line, before the queue exists).
pub fn write_line(file: &mut File, clock: &Clock, t: u64, body: EventBody) -> std::io::Result<()> {
    file.write_all(&line_of(clock, t, body)?)
}

/// One event as its capture line, newline included.
pub fn line_of(clock: &Clock, t: u64, body: EventBody) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&Event {
        t,
        ts: clock.wall_at(t),
        body,
    })
    .map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// How a body is recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BodyKind {
    /// Joined and written once at the end, redacted by its content type.
    /// `form`: the content type is `application/x-www-form-urlencoded`, redacted as a form.
    Message { form: bool, coded: Coded },
    /// `text/event-stream`: written as it arrives, cut at line ends, parsed into `sse` events.
    EventStream { coded: Coded },
}

impl BodyKind {
    fn coded(self) -> Coded {
        match self {
            BodyKind::Message { coded, .. } | BodyKind::EventStream { coded } => coded,
        }
    }

    fn is_stream(self) -> bool {
        matches!(self, BodyKind::EventStream { .. })
    }
}

/// The most an event stream's frame may decode to at once (a compressed stream's bomb stops there).
const STREAM_DECODE_LIMIT: usize = 16 << 20;

struct BodyState {
    kind: BodyKind,
    seq: u64,
    /// Message: bytes kept so far (up to max_body). Event stream: the unfinished last line.
    buf: Vec<u8>,
    /// Event stream: how much of `buf` is known to hold no line end, so that a long line
    /// arriving in many frames is searched once, not once per frame.
    scanned: usize,
    recorded: u64,
    wire_len: u64,
    /// Wire bytes of the frames not yet written out.
    pending_len: u64,
    frames: Vec<(u64, u64)>,
    truncated: bool,
    sse: Option<SseParser>,
    sse_seq: u64,
    /// A compressed body's decoder: what is recorded and parsed is what it decodes to.
    decoder: Option<Decoder>,
    /// Why the bytes are left out (a coding that cannot be decoded, with redaction on).
    omitted: Option<String>,
}

impl BodyState {
    fn new(kind: BodyKind, max_body: u64, redacting: bool) -> Self {
        let sse = kind.is_stream().then(SseParser::new);
        let (decoder, omitted) = match kind.coded() {
            Coded::Plain => (None, None),
            Coded::By(coding) => {
                let limit = if kind.is_stream() {
                    STREAM_DECODE_LIMIT
                } else {
                    usize::try_from(max_body).unwrap_or(usize::MAX)
                };
                (Some(Decoder::new(coding, limit, kind.is_stream())), None)
            }
            Coded::Unsupported if redacting => (
                None,
                Some(
                    "its Content-Encoding is not one mcptap decodes (gzip, deflate, br, zstd), so \
                     its bytes cannot be shown free of secrets (--no-redact records them)"
                        .to_string(),
                ),
            ),
            Coded::Unsupported => (None, None),
        };
        BodyState {
            decoder,
            omitted,
            kind,
            seq: 0,
            buf: Vec::new(),
            scanned: 0,
            recorded: 0,
            wire_len: 0,
            pending_len: 0,
            frames: Vec::new(),
            truncated: false,
            sse,
            sse_seq: 0,
        }
    }
}

struct Writer {
    file: File,
    rotation: Option<super::file::Rotation>,
    /// The part being written (0: the first file), its bytes and when it was opened.
    part: u32,
    part_bytes: u64,
    part_opened: std::time::Instant,
    clock: Arc<Clock>,
    redactor: Redactor,
    max_body: u64,
    dropped: Arc<AtomicU64>,
    dropped_reported: u64,
    bodies: HashMap<(u64, Direction), BodyState, ExchangeKeys>,
    /// Content types seen on request/response events, until the body arrives.
    kinds: HashMap<(u64, Direction), BodyKind, ExchangeKeys>,
    batch: Vec<u8>,
    batch_lines: u64,
    stats: WriterStats,
    observers: Vec<Box<dyn Observer>>,
    on_idle: fn(),
    wall: WallCache,
    /// The budget of frames handled this round, released together.
    released: Option<OwnedSemaphorePermit>,
}

/// Above this the batch is written before the queue is drained further.
const BATCH_BYTES: usize = 1 << 20;

/// The writer's pause after a round that found records: under load it then wakes about once
/// per pause, not once per record, and a line still reaches the file well within 50 ms.
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);

/// Hashes the writer's `(exchange id, direction)` keys and observers' exchange ids: ids
/// come from a counter in this process, so SipHash's defence against chosen keys buys nothing
/// and cost 3% of the writer.
#[derive(Default, Clone, Copy)]
pub struct ExchangeKeys;

impl std::hash::BuildHasher for ExchangeKeys {
    type Hasher = ExchangeKeyHasher;
    fn build_hasher(&self) -> ExchangeKeyHasher {
        ExchangeKeyHasher(0)
    }
}

/// Multiply-rotate mixing of the few integers a key is made of.
pub struct ExchangeKeyHasher(u64);

impl std::hash::Hasher for ExchangeKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

/// Formats `ts` values: the date and time down to the second once per second, then only the
/// microseconds (a full `strftime` per event was a tenth of the writer's time).
#[derive(Default)]
struct WallCache {
    second: Option<i64>,
    prefix: String,
}

impl WallCache {
    /// The same text as [`Clock::wall_at`].
    fn format(&mut self, clock: &Clock, t_us: u64) -> String {
        let offset = jiff::SignedDuration::from_micros(t_us as i64);
        let ts = clock.wall.checked_add(offset).unwrap_or(clock.wall);
        let micros = ts.subsec_microsecond();
        if micros < 0 {
            // Before 1970 the fraction counts backwards: leave that to jiff.
            return clock.wall_at(t_us);
        }
        let second = ts.as_second();
        if self.second != Some(second) {
            self.prefix = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
            self.second = Some(second);
        }
        let mut out = String::with_capacity(self.prefix.len() + 8);
        out.push_str(&self.prefix);
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!(".{micros:06}Z"));
        out
    }

    /// [`WallCache::format`], appended to `out` (the text is ASCII: nothing to escape).
    fn format_into(&mut self, clock: &Clock, t_us: u64, out: &mut Vec<u8>) {
        let offset = jiff::SignedDuration::from_micros(t_us as i64);
        let ts = clock.wall.checked_add(offset).unwrap_or(clock.wall);
        let micros = ts.subsec_microsecond();
        if micros < 0 || self.second != Some(ts.as_second()) {
            out.extend_from_slice(self.format(clock, t_us).as_bytes());
            return;
        }
        out.extend_from_slice(self.prefix.as_bytes());
        let mut digits = *b".000000Z";
        let mut n = micros as u32;
        for d in digits[1..7].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
    }
}

impl Writer {
    fn new(config: WriterConfig, clock: Arc<Clock>, dropped: Arc<AtomicU64>) -> Self {
        let part_bytes = config
            .rotation
            .as_ref()
            .map_or(0, |r| r.session_line.len() as u64);
        Writer {
            file: config.file,
            rotation: config.rotation,
            part: 0,
            part_bytes,
            part_opened: std::time::Instant::now(),
            clock,
            redactor: config.redactor,
            max_body: config.max_body,
            dropped,
            dropped_reported: 0,
            bodies: HashMap::default(),
            kinds: HashMap::default(),
            batch: Vec::with_capacity(64 * 1024),
            batch_lines: 0,
            stats: WriterStats::default(),
            observers: config.observers,
            on_idle: config.on_idle,
            wall: WallCache::default(),
            released: None,
        }
    }

    fn run(mut self, mut queue: queue::Receiver<Record>) -> WriterStats {
        // Each round takes what is queued, as often as there is more, and writes it with one
        // write, so lines reach the file (and `tail -f`) within a round. Only an idle writer
        // blocks: blocking asks the next record to wake it (a futex call on the data path), so
        // after a busy round the writer pauses for GATHER instead and records gather meanwhile.
        while queue.wait(self.on_idle) {
            loop {
                let mut any = false;
                for record in queue.take() {
                    any = true;
                    if self.handle(record) {
                        self.flush();
                        return self.stats;
                    }
                    if self.batch.len() >= BATCH_BYTES {
                        self.flush();
                    }
                }
                // The budget the frames took, given back at once rather than frame by frame.
                self.released = None;
                if !any {
                    break;
                }
            }
            self.report_dropped();
            self.flush();
            std::thread::sleep(GATHER);
        }
        // Every sender is gone without a Finish: still close the record properly.
        let t = self.clock.now_us();
        self.finish(t, 0, 0, false);
        self.flush();
        self.stats
    }

    /// Returns true when the session is finished.
    fn handle(&mut self, record: Record) -> bool {
        match record {
            Record::Event { t, body } => self.event(t, *body),
            Record::Frame {
                ex,
                dir,
                t,
                len,
                bytes,
                permit,
                last,
            } => {
                self.frame(ex, dir, t, len, &bytes);
                // The bytes are copied into the writer's own state: the budget can go back.
                if let Some(permit) = permit {
                    match &mut self.released {
                        Some(released) => released.merge(permit),
                        None => self.released = Some(permit),
                    }
                }
                if last {
                    self.body_end(ex, dir, t);
                }
            }
            Record::BodyEnd { ex, dir, t } => self.body_end(ex, dir, t),
            Record::Tick { t } => {
                for observer in &mut self.observers {
                    observer.tick(t);
                }
            }
            Record::Finish {
                t,
                exchanges,
                connections,
                clean,
            } => {
                self.finish(t, exchanges, connections, clean);
                return true;
            }
        }
        false
    }

    fn event(&mut self, t: u64, mut body: EventBody) {
        match &mut body {
            EventBody::Request(req) => {
                let kind = body_kind(&req.headers);
                self.kinds.insert((req.ex, Direction::Request), kind);
                if let Some(target) = self.redactor.target_redacted(&req.target) {
                    req.target = target;
                }
                if let Some(upstream) = self.redactor.target_redacted(&req.upstream) {
                    req.upstream = upstream;
                }
                if let Some(target) = self.redactor.scrub(&req.target) {
                    req.target = target;
                }
                if let Some(upstream) = self.redactor.scrub(&req.upstream) {
                    req.upstream = upstream;
                }
                self.redact_headers(&mut req.headers);
            }
            EventBody::Response(resp) => {
                let kind = body_kind(&resp.headers);
                self.kinds.insert((resp.ex, Direction::Response), kind);
                self.redact_headers(&mut resp.headers);
            }
            EventBody::End(end) => {
                self.kinds.remove(&(end.ex, Direction::Request));
                self.kinds.remove(&(end.ex, Direction::Response));
            }
            _ => {}
        }
        self.push(t, body);
    }

    fn redact_headers(&self, headers: &mut Headers) {
        headers.map_values(
            |name, value| match self.redactor.header_value_redacted(name, value) {
                Some(redacted) => Some(self.redactor.scrubbed(redacted)),
                None => self.redactor.scrub(value),
            },
        );
    }

    fn state(&mut self, ex: u64, dir: Direction) -> &mut BodyState {
        let kinds = &mut self.kinds;
        let (max_body, redacting) = (self.max_body, self.redactor.enabled());
        self.bodies.entry((ex, dir)).or_insert_with(|| {
            let kind = kinds.get(&(ex, dir)).copied().unwrap_or(BodyKind::Message {
                form: false,
                coded: Coded::Plain,
            });
            BodyState::new(kind, max_body, redacting)
        })
    }

    fn frame(&mut self, ex: u64, dir: Direction, t: u64, len: u64, bytes: &[u8]) {
        let max_body = self.max_body;
        let state = self.state(ex, dir);
        state.wire_len += len;
        state.pending_len += len;
        // What is recorded and parsed: the decoded content of a compressed body, nothing of
        // one whose bytes are left out.
        let decoded;
        let wire = bytes;
        let bytes: &[u8] = match &mut state.decoder {
            Some(decoder) => {
                decoded = decoder.feed(wire);
                // The proxy hands over the wire bytes up to --max-body: a cut stream decodes
                // only so far.
                if decoder.over_limit() || (wire.len() as u64) < len {
                    state.truncated = true;
                }
                &decoded
            }
            None if state.omitted.is_some() => &[],
            None => wire,
        };
        let room = max_body.saturating_sub(state.recorded + state.buf.len() as u64) as usize;
        let kept = bytes.len().min(room);
        let plain = state.decoder.is_none() && state.omitted.is_none();
        if kept < bytes.len() || (plain && (kept as u64) < len) {
            state.truncated = true;
        }
        if kept > 0 || state.frames.is_empty() || state.decoder.is_some() {
            state.frames.push((t, len));
        }
        state.buf.extend_from_slice(&bytes[..kept]);
        let mut events = Vec::new();
        if let Some(parser) = &mut state.sse {
            events = parser.push(bytes);
        }
        if state.kind.is_stream() {
            // The events are redacted first, so that the stream's lines, written before them,
            // are scrubbed of what their redaction found (a data line split in two).
            let events: Vec<Sse> = events
                .into_iter()
                .map(|event| self.sse_redacted(ex, dir, event, true))
                .collect();
            self.flush_stream_lines(ex, dir, t, false);
            for sse in events {
                self.push(t, EventBody::Sse(sse));
            }
        }
    }

    fn sse_event(
        &mut self,
        ex: u64,
        dir: Direction,
        t: u64,
        event: crate::sse::SseEvent,
        ended: bool,
    ) {
        let sse = self.sse_redacted(ex, dir, event, ended);
        self.push(t, EventBody::Sse(sse));
    }

    /// An event of a stream as it is recorded: numbered, redacted and scrubbed.
    fn sse_redacted(
        &mut self,
        ex: u64,
        dir: Direction,
        event: crate::sse::SseEvent,
        ended: bool,
    ) -> Sse {
        let state = self.state(ex, dir);
        let seq = state.sse_seq;
        state.sse_seq += 1;
        let dispatched = ended && event.dispatched();
        let redactor = &self.redactor;
        let data = event
            .data
            .map(|d| redactor.scrubbed(redactor.json_text(&d)));
        let scrub = |field: Option<String>| field.map(|f| redactor.scrubbed(f));
        Sse {
            ex,
            dir,
            seq,
            event: scrub(event.event),
            id: scrub(event.id),
            data,
            retry: event.retry,
            comments: event
                .comments
                .into_iter()
                .map(|c| redactor.scrubbed(c))
                .collect(),
            dispatched,
        }
    }

    /// Writes the complete lines of an event stream (all of it at the end).
    fn flush_stream_lines(&mut self, ex: u64, dir: Direction, t: u64, at_end: bool) {
        let Some(state) = self.bodies.get_mut(&(ex, dir)) else {
            return;
        };
        let cut = if at_end {
            state.buf.len()
        } else {
            let from = state.scanned.min(state.buf.len());
            match state.buf[from..]
                .iter()
                .rposition(|&b| b == b'\n' || b == b'\r')
            {
                Some(i) => from + i + 1,
                None => {
                    state.scanned = state.buf.len();
                    return;
                }
            }
        };
        if cut == 0 && !(at_end && state.truncated && state.pending_len > 0) {
            return;
        }
        let rest = state.buf.split_off(cut);
        // What stays is after the last line end: it holds none.
        state.scanned = rest.len();
        let chunk = std::mem::replace(&mut state.buf, rest);
        state.recorded += chunk.len() as u64;
        let event = Body {
            ex,
            dir,
            seq: state.seq,
            text: None,
            b64: None,
            len: state.pending_len,
            frames: std::mem::take(&mut state.frames),
            truncated: state.truncated,
            encoding: state
                .decoder
                .as_ref()
                .map(|d| d.coding().name().to_string()),
            omitted: state.omitted.clone(),
        };
        state.seq += 1;
        state.pending_len = 0;
        let event = self.fill_body(event, chunk, false);
        self.push(t, EventBody::Body(event));
    }

    /// Takes the bytes by value: text with no secret in it becomes the event's text without a copy.
    fn fill_body(&self, mut event: Body, bytes: Vec<u8>, form: bool) -> Body {
        let text = match String::from_utf8(bytes) {
            Ok(text) => Ok(text),
            // A cut at max_body may split a UTF-8 sequence: drop the broken tail, not the text.
            Err(e) if e.utf8_error().error_len().is_none() && event.truncated => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).map_err(|e| e.into_bytes())
            }
            Err(e) => Err(e.into_bytes()),
        };
        // Text with NUL bytes is UTF-16 or binary: its secrets hide between the NULs.
        let text = match text {
            Ok(text) if self.redactor.enabled() && text.as_bytes().contains(&0) => {
                Err(text.into_bytes())
            }
            other => other,
        };
        match text {
            Ok(text) => {
                event.text = Some(
                    self.redactor
                        .scrubbed(self.redactor.body_owned(form, text)),
                )
            }
            // Bytes that are not text cannot be shown free of secrets: their length and hash.
            Err(bytes) if self.redactor.enabled() => {
                event.omitted = Some(format!(
                    "not UTF-8 text without NUL bytes ({} bytes recorded, fp={}), so its bytes cannot be shown free of secrets (--no-redact records them)",
                    bytes.len(),
                    self.redactor.fingerprint_bytes(&bytes)
                ))
            }
            Err(bytes) => event.b64 = Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
        event
    }

    fn body_end(&mut self, ex: u64, dir: Direction, t: u64) {
        let max_body = self.max_body;
        let Some(state) = self.bodies.get_mut(&(ex, dir)) else {
            return;
        };
        // The decoder's last bytes, and its failure on the record.
        let mut undecodable = None;
        if let Some(decoder) = &mut state.decoder {
            let tail = decoder.finish();
            let room = max_body.saturating_sub(state.recorded + state.buf.len() as u64) as usize;
            let kept = tail.len().min(room);
            if kept < tail.len() || decoder.over_limit() {
                state.truncated = true;
            }
            state.buf.extend_from_slice(&tail[..kept]);
            if let Some(parser) = &mut state.sse {
                let events = parser.push(&tail);
                if !events.is_empty() {
                    for event in events {
                        self.sse_event(ex, dir, t, event, true);
                    }
                }
            }
            let Some(state) = self.bodies.get_mut(&(ex, dir)) else {
                return;
            };
            // A body cut at --max-body ends mid-stream: that is its truncation, not a fault.
            let cut = state.truncated;
            if let Some(error) = state
                .decoder
                .as_ref()
                .and_then(Decoder::error)
                .filter(|_| !cut)
            {
                let coding = state.decoder.as_ref().map_or("", |d| d.coding().name());
                state.truncated = true;
                undecodable = Some(format!(
                    "the {} body of exchange {ex} could not be decoded ({coding}) past its first {} bytes: {error}",
                    dir.as_str(),
                    state.decoder.as_ref().map_or(0, Decoder::decoded)
                ));
            }
        }
        if let Some(message) = undecodable {
            self.push(
                t,
                EventBody::Note(Note {
                    code: "body_undecodable".into(),
                    message,
                    count: None,
                    ex: Some(ex),
                }),
            );
        }
        let Some(state) = self.bodies.get(&(ex, dir)) else {
            return;
        };
        match state.kind {
            BodyKind::EventStream { .. } => {
                let tail = self
                    .bodies
                    .get_mut(&(ex, dir))
                    .and_then(|s| s.sse.as_mut())
                    .and_then(|p| p.finish())
                    .map(|event| self.sse_redacted(ex, dir, event, false));
                self.flush_stream_lines(ex, dir, t, true);
                if let Some(sse) = tail {
                    self.push(t, EventBody::Sse(sse));
                }
            }
            BodyKind::Message { form, .. } => {
                let Some(state) = self.bodies.get_mut(&(ex, dir)) else {
                    return;
                };
                let bytes = std::mem::take(&mut state.buf);
                let omitted = state.omitted.clone();
                let event = Body {
                    ex,
                    dir,
                    seq: state.seq,
                    text: None,
                    b64: None,
                    len: state.wire_len,
                    frames: std::mem::take(&mut state.frames),
                    truncated: state.truncated,
                    encoding: state
                        .decoder
                        .as_ref()
                        .map(|d| d.coding().name().to_string()),
                    omitted: omitted.clone(),
                };
                let event = if omitted.is_some() {
                    event
                } else {
                    self.fill_body(event, bytes, form)
                };
                self.push(t, EventBody::Body(event));
            }
        }
        self.bodies.remove(&(ex, dir));
    }

    fn finish(&mut self, t: u64, exchanges: u64, connections: u64, clean: bool) {
        // Bodies still open at the end are written as far as they got.
        let mut open: Vec<(u64, Direction)> = self.bodies.keys().copied().collect();
        open.sort_by_key(|(ex, dir)| (*ex, *dir == Direction::Response));
        let had_open = !open.is_empty();
        for (ex, dir) in open {
            self.body_end(ex, dir, t);
        }
        self.report_dropped();
        let dropped = self.dropped.load(Ordering::Relaxed);
        self.stats.events_dropped = dropped;
        let end = SessionEnd {
            exchanges,
            connections,
            // The session line, written before the writer started, counts too.
            events_written: 1 + self.stats.events_written + self.batch_lines + 1,
            events_dropped: dropped,
            events_lost: self.stats.events_lost,
            clean: clean && !had_open && dropped == 0 && self.stats.events_lost == 0,
        };
        self.push(t, EventBody::SessionEnd(end));
    }

    fn report_dropped(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_reported {
            let count = dropped - self.dropped_reported;
            self.dropped_reported = dropped;
            let t = self.clock.now_us();
            self.push(
                t,
                EventBody::Note(Note {
                    code: "events_dropped".into(),
                    message: format!(
                        "{count} events were dropped because the capture queue was full (--on-full drop)"
                    ),
                    count: Some(count),
                    ex: None,
                }),
            );
        }
    }

    /// Appends one line: the same bytes as serialising [`Event`], whose body is flattened
    /// into it, written as `{"t":…,"ts":"…"` and then the body's own object, its opening
    /// brace overwritten by a comma (serde's flatten path costs more than the rest of the line).
    /// The frequent kinds are written by hand ([`line`]), the others by serde.
    fn push(&mut self, t: u64, body: EventBody) {
        let start = self.batch.len();
        self.batch.extend_from_slice(b"{\"t\":");
        line::number(&mut self.batch, t);
        self.batch.extend_from_slice(b",\"ts\":\"");
        self.wall.format_into(&self.clock, t, &mut self.batch);
        self.batch.push(b'"');
        let body_at = self.batch.len();
        let written = if line::write_event_body(&mut self.batch, &body) {
            Ok(())
        } else {
            serde_json::to_writer(&mut self.batch, &body)
        };
        match written {
            Ok(()) if self.batch.get(body_at) == Some(&b'{') => {
                self.batch[body_at] = b',';
                self.batch.push(b'\n');
                self.batch_lines += 1;
                for observer in &mut self.observers {
                    observer.event(t, &body);
                }
            }
            Ok(()) => {
                self.batch.truncate(start);
                tracing::error!("a capture event did not serialise as an object");
                self.stats.events_lost += 1;
            }
            Err(e) => {
                self.batch.truncate(start);
                tracing::error!("could not serialise a capture event: {e}");
                self.stats.events_lost += 1;
            }
        }
    }

    /// Goes on in the next part when this one is full or old enough: the old part's last line
    /// says where the capture goes on; the new one begins with the session line, as the first
    /// did, and says which capture it continues.
    fn rotate_if_due(&mut self) {
        let Some(rotation) = self.rotation.clone() else {
            return;
        };
        let due = rotation.max_bytes.is_some_and(|m| self.part_bytes >= m)
            || rotation
                .every
                .is_some_and(|e| self.part_opened.elapsed() >= e);
        if !due {
            return;
        }
        let next = self.part + 1;
        let path = super::file::part_path(&rotation.first, next);
        let name = |p: &std::path::Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let t = self.clock.now_us();
        let note = |code: &str, message: String| {
            line_of(
                &self.clock,
                t,
                EventBody::Note(Note {
                    code: code.into(),
                    message,
                    count: None,
                    ex: None,
                }),
            )
        };
        let opening = note(
            "capture_part",
            format!(
                "part {next} of the capture that begins in {}",
                name(&rotation.first)
            ),
        );
        let closing = note(
            "capture_continues",
            format!("the capture goes on in {} (part {next})", name(&path)),
        );
        let started = super::file::create_part(&path).and_then(|mut file| {
            file.write_all(&rotation.session_line)?;
            file.write_all(
                opening
                    .as_ref()
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            )?;
            Ok(file)
        });
        match started {
            Ok(file) => {
                if let Ok(closing) = closing {
                    let _ = self.file.write_all(&closing);
                }
                self.part_bytes = rotation.session_line.len() as u64
                    + opening.as_ref().map_or(0, |l| l.len() as u64);
                self.file = file;
                self.part = next;
                self.part_opened = std::time::Instant::now();
            }
            Err(e) => {
                let current = match self.part {
                    0 => rotation.first.clone(),
                    n => super::file::part_path(&rotation.first, n),
                };
                eprintln!(
                    "mcptap: could not start the capture's next part {} ({e}); it goes on in {}",
                    path.display(),
                    name(&current)
                );
                self.rotation = None;
            }
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.stats.write_error.is_none() {
            match self.file.write_all(&self.batch) {
                Ok(()) => {
                    self.stats.events_written += self.batch_lines;
                    self.part_bytes += self.batch.len() as u64;
                    self.rotate_if_due();
                }
                Err(e) => {
                    eprintln!(
                        "mcptap: writing the capture failed ({e}); traffic is still forwarded, but from now on events are lost"
                    );
                    self.stats.write_error = Some(e.to_string());
                    self.stats.events_lost += self.batch_lines;
                }
            }
        } else {
            self.stats.events_lost += self.batch_lines;
        }
        self.batch.clear();
        self.batch_lines = 0;
    }
}

/// The recording kind of a body from its headers.
fn body_kind(headers: &Headers) -> BodyKind {
    let coded = coding::coded(headers.get("content-encoding"));
    match headers.get("content-type") {
        Some(value) if super::headers::is_event_stream(value) => BodyKind::EventStream { coded },
        value => BodyKind::Message {
            form: value.is_some_and(super::headers::is_form),
            coded,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::Coding;
    use proptest::prelude::*;

    #[test]
    fn each_line_is_what_serde_makes_of_its_event() {
        let text = record("s3cr3t \"quoted\" ✓", &[3, 17]);
        let mut kinds = Vec::new();
        for line in text.lines() {
            let event: Event = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&event).unwrap(), line);
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            kinds.push(value["kind"].as_str().unwrap().to_string());
        }
        // Every kind of line the writer makes for an exchange was compared.
        for kind in ["request", "body", "response", "sse", "session_end"] {
            assert!(
                kinds.iter().any(|k| k == kind),
                "no {kind} line in {kinds:?}"
            );
        }
    }

    #[test]
    fn timestamps_are_written_as_the_clock_formats_them() {
        let clock = Clock::new();
        let mut cache = WallCache::default();
        for t in [
            0u64,
            1,
            999_999,
            1_000_000,
            1_000_001,
            59_123_456,
            3_600_000_007,
        ] {
            let mut out = Vec::new();
            cache.format_into(&clock, t, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), clock.wall_at(t), "t = {t}");
            // A second call within the same second takes the cached path.
            let mut again = Vec::new();
            cache.format_into(&clock, t, &mut again);
            assert_eq!(
                String::from_utf8(again).unwrap(),
                clock.wall_at(t),
                "t = {t}"
            );
        }
    }

    /// The capture a writer makes of `records`.
    fn capture_of(records: Vec<Record>, max_body: u64) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let (recorder, thread) = start(
            WriterConfig {
                file: std::fs::File::create(&path).unwrap(),
                rotation: None,
                redactor: Redactor::new(true),
                max_body,
                queue_bytes: 1 << 20,
                on_full: OnFull::Wait,
                observers: Vec::new(),
                on_idle: || {},
            },
            Arc::new(Clock::new()),
        );
        for record in records {
            recorder.record(record);
        }
        drop(recorder);
        thread.join().unwrap();
        std::fs::read_to_string(&path).unwrap()
    }

    /// The lines the writer makes of `records`, less what differs between two sessions: each
    /// line's wall-clock `ts`, the time of `session_end`, redaction fingerprints.
    fn lines_of(records: Vec<Record>, max_body: u64) -> Vec<serde_json::Value> {
        capture_of(records, max_body)
            .lines()
            .map(|line| {
                let line = without_fingerprints(line);
                let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
                let fields = value.as_object_mut().unwrap();
                fields.remove("ts");
                if fields["kind"] == "session_end" {
                    fields.remove("t");
                }
                value
            })
            .collect()
    }

    /// `fp=` and the eight hex digits after it, without the digits.
    fn without_fingerprints(line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(at) = rest.find("fp=") {
            out.push_str(&rest[..at + 3]);
            rest = &rest[(at + 11).min(rest.len())..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn a_last_frame_is_recorded_as_a_frame_and_its_end() {
        let bodies: [&[u8]; 3] = [
            br#"{"access_token":"s3cr3t","n":1}"#,
            b"plain text that is longer than the limit",
            &[0xff, 0xfe, 0x00, 0x01],
        ];
        for body in bodies {
            let session = |last: bool| {
                let mut records = vec![Record::Event {
                    t: 1,
                    body: Box::new(EventBody::Response(Response {
                        ex: 7,
                        status: 200,
                        version: "HTTP/1.1".into(),
                        headers: Headers::from_iter([("content-type", "application/json")]),
                        producer: "upstream".into(),
                    })),
                }];
                records.push(Record::Frame {
                    ex: 7,
                    dir: Direction::Response,
                    t: 2,
                    len: body.len() as u64,
                    bytes: Bytes::copy_from_slice(body),
                    permit: None,
                    last,
                });
                if !last {
                    records.push(Record::BodyEnd {
                        ex: 7,
                        dir: Direction::Response,
                        t: 2,
                    });
                }
                lines_of(records, 32)
            };
            let whole = session(true);
            assert_eq!(whole, session(false), "{body:?}");
            assert!(whole.iter().any(|line| line["kind"] == "body"), "{whole:?}");
        }
    }

    /// Records one exchange whose every redacted place holds `secret`, the bodies cut into
    /// frames at `cuts`; returns the capture bytes.
    fn record(secret: &str, cuts: &[usize]) -> String {
        record_coded(secret, cuts, None)
    }

    /// `data` in a content coding, as a server would send it.
    fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match coding {
            Coding::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Coding::Deflate => {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Coding::Br => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            Coding::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }

    /// [`record`] with both bodies in `coding` (their `Content-Encoding` says so).
    fn record_coded(secret: &str, cuts: &[usize], coding: Option<Coding>) -> String {
        let coded = |text: String| -> Vec<u8> {
            match coding {
                Some(c) => encode(c, text.as_bytes()),
                None => text.into_bytes(),
            }
        };
        let encoding = |mut headers: Vec<(&'static str, String)>| {
            if let Some(c) = coding {
                headers.push(("content-encoding", c.name().to_string()));
            }
            Headers::from_iter(headers)
        };
        let mut records = Vec::new();
        let enc: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let json = serde_json::to_string(secret).unwrap();
        let ev = |body| Record::Event {
            t: 1,
            body: Box::new(body),
        };
        records.push(ev(EventBody::Request(Request {
            ex: 1,
            conn: 1,
            method: "POST".into(),
            target: format!("/token?code={enc}&x=1"),
            version: "HTTP/1.1".into(),
            headers: encoding(vec![
                ("authorization", format!("Bearer {secret}")),
                ("cookie", format!("sid={secret}")),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ]),
            upstream: format!("http://u/token?code={enc}"),
            route: None,
        })));
        let form = coded(format!(
            "grant_type=authorization_code&code={enc}&code_verifier={enc}"
        ));
        let frames = |text: &[u8]| -> Vec<Bytes> {
            let mut out = Vec::new();
            let mut last = 0;
            for &c in cuts {
                let c = c % (text.len() + 1);
                if c > last {
                    out.push(Bytes::copy_from_slice(&text[last..c]));
                    last = c;
                }
            }
            out.push(Bytes::copy_from_slice(&text[last..]));
            out
        };
        for b in frames(&form) {
            records.push(Record::Frame {
                ex: 1,
                dir: Direction::Request,
                t: 2,
                len: b.len() as u64,
                bytes: b,
                permit: None,
                last: false,
            });
        }
        records.push(Record::BodyEnd {
            ex: 1,
            dir: Direction::Request,
            t: 3,
        });
        records.push(ev(EventBody::Response(Response {
            ex: 1,
            status: 200,
            version: "HTTP/1.1".into(),
            headers: encoding(vec![("content-type", "text/event-stream".into())]),
            producer: "upstream".into(),
        })));
        let stream = coded(format!(
            "data: {{\"result\":{{\"deep\":[{{\"access_token\":{json}}}]}}}}\n\ndata: {{\"refresh_token\": {json}}}\n\n"
        ));
        for b in frames(&stream) {
            records.push(Record::Frame {
                ex: 1,
                dir: Direction::Response,
                t: 4,
                len: b.len() as u64,
                bytes: b,
                permit: None,
                last: false,
            });
        }
        records.push(Record::BodyEnd {
            ex: 1,
            dir: Direction::Response,
            t: 5,
        });
        records.push(Record::Finish {
            t: 6,
            exchanges: 1,
            connections: 1,
            clean: true,
        });
        capture_of(records, 1 << 20)
    }

    #[test]
    fn cached_wall_clock_text_is_jiffs() {
        let clock = Clock::new();
        let mut cache = WallCache::default();
        // Across second boundaries, back and forth, and far from the start.
        for t in [
            0,
            1,
            999_999,
            1_000_000,
            1_000_001,
            2_500_000,
            999_999,
            86_400_000_123,
        ] {
            assert_eq!(cache.format(&clock, t), clock.wall_at(t), "t = {t}");
        }
        let mut t = 0;
        while t < 5_000_000 {
            assert_eq!(cache.format(&clock, t), clock.wall_at(t), "t = {t}");
            t += 37_911;
        }
    }

    /// A long event-stream line that arrives a few bytes at a time is written as one body
    /// event when its line end comes, and the next line as the next.
    #[test]
    fn a_long_stream_line_in_many_frames_is_cut_at_its_line_end() {
        let mut records = vec![Record::Event {
            t: 1,
            body: Box::new(EventBody::Response(Response {
                ex: 1,
                status: 200,
                version: "HTTP/1.1".into(),
                headers: Headers::from_iter([("content-type", "text/event-stream")]),
                producer: "upstream".into(),
            })),
        }];
        let long = format!("data: {}", "x".repeat(5000));
        let mut frames: Vec<Vec<u8>> = long.as_bytes().chunks(7).map(<[u8]>::to_vec).collect();
        frames.push(b"\n\ndata: short".to_vec());
        frames.push(b"\n\n".to_vec());
        for frame in frames {
            records.push(Record::Frame {
                ex: 1,
                dir: Direction::Response,
                t: 2,
                len: frame.len() as u64,
                bytes: Bytes::from(frame),
                permit: None,
                last: false,
            });
        }
        records.push(Record::BodyEnd {
            ex: 1,
            dir: Direction::Response,
            t: 3,
        });
        records.push(Record::Finish {
            t: 4,
            exchanges: 1,
            connections: 0,
            clean: true,
        });
        let text = capture_of(records, 1 << 20);
        let bodies: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == "body")
            .map(|e| e["text"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            bodies,
            [format!("{long}\n\n"), "data: short\n\n".to_string()],
            "{text}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// No secret reaches the file, whatever it holds, however the bodies are cut and
        /// whichever content coding they cross in, and one secret has one fingerprint everywhere.
        #[test]
        fn secrets_never_reach_the_capture(
            secret in "[A-Za-z0-9+/=_.~ -]{12,40}",
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            prop_assume!(secret.trim() == secret);
            let coding = [None, Some(Coding::Gzip), Some(Coding::Deflate), Some(Coding::Br), Some(Coding::Zstd)]
                [cuts.len() % 5];
            let text = record_coded(&secret, &cuts, coding);
            let enc: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            prop_assert!(!text.contains(&secret), "clear secret in:\n{}", text);
            prop_assert!(!text.contains(&enc), "encoded secret in:\n{}", text);
            let fps: std::collections::BTreeSet<&str> = text
                .match_indices("fp=")
                .map(|(i, _)| &text[i + 3..i + 11])
                .collect();
            prop_assert_eq!(fps.len(), 1, "one secret, one fingerprint: {:?}", fps);
            // Every place was redacted: header, cookie, query (twice), form (twice), SSE (twice).
            prop_assert!(text.matches("<redacted fp=").count() >= 8, "{}", text);
        }
    }
}
