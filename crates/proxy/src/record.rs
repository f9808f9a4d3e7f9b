//! Where HTTP messages become capture events. The proxy's two data paths (the fast path,
//! hyper's) and the clients of `replay`, `mock` and `probe` say what crossed — a request head,
//! a response head — and these make the `request` and `response` events of its exchange, so a
//! field added to either event is added here once.

use std::time::Instant;

use bytes::Bytes;
use mcptap_capture::model::{self, Direction, EventBody, Headers};
use mcptap_capture::Record;

use super::exchange::ExchangeLog;
use super::upstream::ConnectFacts;

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
