//! Where HTTP messages become capture events. The proxy's two data paths (the fast path,
//! hyper's) and the clients of `replay`, `mock` and `probe` say what crossed — a request head,
//! a response head, body frames — and this module makes the events of its exchange: `request`
//! and `response` here, `body` and `sse` in [`body`], and the `end` that one exchange's
//! progress ([`ExchangeLog`]) ends with. A field added to an event is added here once.
//! [`standalone`] opens a capture for the commands that record without the proxy.

pub mod body;
pub mod standalone;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use mcptap_capture::model::{self, ByteCounts, End, EventBody, Headers, ServedBy, Timings};
use mcptap_capture::{Direction, Outcome, Record, Recorder};
use tokio::sync::Notify;

use crate::upstream::ConnectFacts;
use body::BodyObserver;

/// A request head as it crossed.
pub struct RequestHead {
    pub conn: u64,
    pub method: String,
    /// As received (origin form, or absolute for HTTP/2).
    pub target: String,
    pub version: &'static str,
    pub headers: Headers,
    /// The URL it goes to upstream (empty when it goes nowhere).
    pub upstream: String,
    /// The route (listener) it came in on, for the proxy.
    pub route: Option<u32>,
}

/// Who made a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// The upstream (for `mock`, the recorded upstream it plays).
    Upstream,
    /// The proxy itself: its 502, 504, 405, 400.
    Proxy,
}

impl Producer {
    fn as_str(self) -> &'static str {
        match self {
            Producer::Upstream => "upstream",
            Producer::Proxy => "proxy",
        }
    }
}

impl ExchangeLog {
    /// Records the exchange's request head, at the time the exchange started.
    pub fn record_request(&self, head: RequestHead) {
        let recorder = self.recorder();
        recorder.event(
            recorder.clock().us_at(self.started),
            EventBody::Request(model::Request {
                ex: self.ex,
                conn: head.conn,
                method: head.method,
                target: head.target,
                version: head.version.into(),
                headers: head.headers,
                upstream: head.upstream,
                route: head.route,
            }),
        );
    }

    /// Records a request body sent whole (by `replay`, `probe`) or received whole (by `mock`),
    /// at the time the exchange started: one frame, then its end.
    pub fn record_request_body(&self, body: Bytes) {
        if body.is_empty() {
            return;
        }
        let recorder = self.recorder();
        let t = recorder.clock().us_at(self.started);
        recorder.whole_frame(self.ex, Direction::Request, t, body);
        recorder.record(Record::BodyEnd {
            ex: self.ex,
            dir: Direction::Request,
            t,
        });
    }

    /// Records the response head that arrived (or that the proxy made) at `at`: the
    /// `response` event, and the status, time to first byte and upstream connection its `end`
    /// will carry.
    pub fn record_response(
        &self,
        at: Instant,
        status: u16,
        version: &'static str,
        headers: Headers,
        producer: Producer,
        connect: Option<ConnectFacts>,
    ) {
        self.response_started(status, connect, at);
        let recorder = self.recorder();
        recorder.event(
            recorder.clock().us_at(at),
            EventBody::Response(model::Response {
                ex: self.ex,
                status,
                version: version.into(),
                headers,
                producer: producer.as_str().into(),
            }),
        );
    }
}

// One exchange's progress on the data path, and the `end` event it ends with.
/// State shared by every connection and exchange of one proxy process.
pub struct Shared {
    pub recorder: Recorder,
    pub max_body: u64,
    next_exchange: AtomicU64,
    next_conn: AtomicU64,
    live_exchanges: AtomicU64,
    all_ended: Notify,
    /// Set when the grace period is over and open exchanges are being cut.
    forced_shutdown: AtomicBool,
    /// Upgraded tunnels, which outlive their connection task.
    pub tunnels: tokio_util::task::TaskTracker,
    /// Cancelled when the grace period is over: tunnels close.
    pub cut: tokio_util::sync::CancellationToken,
}

impl Shared {
    pub fn new(recorder: Recorder, max_body: u64) -> Self {
        Shared {
            recorder,
            max_body,
            next_exchange: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            live_exchanges: AtomicU64::new(0),
            all_ended: Notify::new(),
            forced_shutdown: AtomicBool::new(false),
            tunnels: tokio_util::task::TaskTracker::new(),
            cut: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn exchanges(&self) -> u64 {
        self.next_exchange.load(Ordering::Relaxed) - 1
    }

    pub fn connections(&self) -> u64 {
        self.next_conn.load(Ordering::Relaxed) - 1
    }

    pub fn live_exchanges(&self) -> u64 {
        self.live_exchanges.load(Ordering::Acquire)
    }

    pub fn force_shutdown(&self) {
        self.forced_shutdown.store(true, Ordering::Release);
        self.cut.cancel();
    }

    pub fn forced(&self) -> bool {
        self.forced_shutdown.load(Ordering::Acquire)
    }

    /// Waits until every exchange has queued its `end` event.
    pub async fn all_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            if self.live_exchanges() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Progress {
    status: Option<u16>,
    connect: Option<ConnectFacts>,
    request_done: Option<Instant>,
    ttfb: Option<Instant>,
    response_done: Option<Instant>,
    /// Why the request body failed (the client went away mid-upload).
    request_error: Option<String>,
    /// An outcome decided before the response body ends (a 502 the proxy made).
    preset: Option<(Outcome, String)>,
    ended: bool,
}

/// Tracks one exchange from request headers to its `end` event, which it queues exactly once.
pub struct ExchangeLog {
    pub ex: u64,
    pub started: Instant,
    shared: Arc<Shared>,
    progress: Mutex<Progress>,
    /// Body bytes so far, counted on every frame: atomics, so a frame takes no lock.
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    served_by: Option<ServedBy>,
}

impl ExchangeLog {
    /// An exchange of `replay`, `mock` or `probe`, starting now.
    pub fn start(shared: &Arc<Shared>) -> Arc<ExchangeLog> {
        Self::begin(shared, Instant::now(), None)
    }

    /// An exchange the proxy serves on one of its data paths, whose request head arrived at
    /// `started` (its upstream connection may have been opened since).
    pub fn proxied(shared: &Arc<Shared>, started: Instant, by: ServedBy) -> Arc<ExchangeLog> {
        Self::begin(shared, started, Some(by))
    }

    fn begin(
        shared: &Arc<Shared>,
        started: Instant,
        served_by: Option<ServedBy>,
    ) -> Arc<ExchangeLog> {
        let ex = shared.next_exchange.fetch_add(1, Ordering::Relaxed);
        shared.live_exchanges.fetch_add(1, Ordering::AcqRel);
        Arc::new(ExchangeLog {
            ex,
            started,
            shared: shared.clone(),
            progress: Mutex::new(Progress::default()),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            served_by,
        })
    }

    /// The recorder this exchange's events go to.
    pub(crate) fn recorder(&self) -> &mcptap_capture::Recorder {
        &self.shared.recorder
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // A panic elsewhere must not stop the record: the data is plain counters.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Upstream response headers arrived (or the proxy made its own answer).
    pub fn response_started(&self, status: u16, connect: Option<ConnectFacts>, at: Instant) {
        let mut p = self.lock();
        p.status = Some(status);
        p.connect = connect;
        p.ttfb = Some(at);
    }

    /// The exchange failed in a way the answer body will not show (upstream error, timeout).
    pub fn preset_outcome(&self, outcome: Outcome, error: String) {
        self.lock().preset = Some((outcome, error));
    }

    /// The reason the request body failed, if it did.
    pub fn request_error(&self) -> Option<String> {
        self.lock().request_error.clone()
    }

    /// Queues the `end` event, once.
    pub fn finish(&self, outcome: Outcome, error: Option<String>, at: Instant) {
        let end = {
            let mut p = self.lock();
            if p.ended {
                return;
            }
            p.ended = true;
            let (outcome, error) = match p.preset.take() {
                Some((o, e)) => (o, Some(e)),
                None => (outcome, error),
            };
            let since = |i: Option<Instant>| {
                i.map(|i| i.saturating_duration_since(self.started).as_micros() as u64)
            };
            let (upstream_connect_us, reused_connection) = match p.connect {
                Some(c) if c.opened_at >= self.started => (Some(c.connect_us), false),
                Some(_) => (None, true),
                None => (None, false),
            };
            let request_bytes = self.request_bytes.load(Ordering::Relaxed);
            let response_bytes = self.response_bytes.load(Ordering::Relaxed);
            let mut truncated = Vec::new();
            if request_bytes > self.shared.max_body {
                truncated.push(Direction::Request);
            }
            if response_bytes > self.shared.max_body {
                truncated.push(Direction::Response);
            }
            End {
                ex: self.ex,
                outcome,
                status: p.status,
                error,
                timings: Timings {
                    upstream_connect_us,
                    reused_connection,
                    request_body_done_us: since(p.request_done),
                    ttfb_us: since(p.ttfb),
                    response_done_us: since(p.response_done),
                    total_us: at.saturating_duration_since(self.started).as_micros() as u64,
                },
                bytes: ByteCounts {
                    request: request_bytes,
                    response: response_bytes,
                },
                truncated,
                served_by: self.served_by,
            }
        };
        let recorder = &self.shared.recorder;
        recorder.event(recorder.clock().us_at(at), EventBody::End(end));
        if self.shared.live_exchanges.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_ended.notify_waiters();
        }
    }
}

impl BodyObserver for ExchangeLog {
    fn frame(&self, dir: Direction, len: usize, _at: Instant) {
        let count = match dir {
            Direction::Request => &self.request_bytes,
            Direction::Response => &self.response_bytes,
        };
        count.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn ended(&self, dir: Direction, at: Instant) {
        match dir {
            Direction::Request => self.lock().request_done = Some(at),
            Direction::Response => {
                self.lock().response_done = Some(at);
                self.finish(Outcome::Complete, None, at);
            }
        }
    }

    fn failed(&self, dir: Direction, at: Instant, error: String) {
        match dir {
            Direction::Request => {
                self.lock().request_error =
                    Some(format!("reading the request body failed: {error}"))
            }
            Direction::Response => self.finish(
                Outcome::UpstreamAborted,
                Some(format!("the upstream response body failed: {error}")),
                at,
            ),
        }
    }

    fn abandoned(&self, dir: Direction, at: Instant) {
        if dir == Direction::Request {
            // The upstream side stopped reading the upload (it answered early or failed):
            // the exchange's outcome comes from the response.
            return;
        }
        let bytes = self.response_bytes.load(Ordering::Relaxed);
        if self.shared.forced() {
            self.finish(
                Outcome::ProxyShutdown,
                Some(format!("the proxy shut down after {bytes} response bytes")),
                at,
            );
        } else {
            self.finish(
                Outcome::ClientAborted,
                Some(format!("the client went away after {bytes} response bytes")),
                at,
            );
        }
    }
}

impl Drop for ExchangeLog {
    fn drop(&mut self) {
        // Nothing else ended it: the handler was dropped before a response existed,
        // which happens when the client disconnects while the upstream is still thinking.
        let at = Instant::now();
        let (outcome, why) = if self.shared.forced() {
            (
                Outcome::ProxyShutdown,
                "the proxy shut down before the upstream answered",
            )
        } else {
            (
                Outcome::ClientAborted,
                "the client went away before the upstream answered",
            )
        };
        self.finish(outcome, Some(why.to_string()), at);
    }
}
