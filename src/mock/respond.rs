//! A recorded response, served again: the recorded origin swapped for the mock's, redacted
//! values served as stand-ins, JSON-RPC ids and progress tokens (in a JSON body or inside
//! event data) and echoed parameters (`state` in a redirect) set to the incoming request's,
//! and an event stream re-emitted event by event on the recorded clock.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use tokio::sync::mpsc;

use super::matcher::{to_stand_ins, Shape};
use crate::capture::model::{Outcome, Sse};
use crate::capture::reader::{media_type, Exchange};
use crate::replay::later;
use crate::replay::origins::replace_origins;

/// No recorded wait is played longer than this.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// How recorded time is played: `1.0` as recorded, `2.0` twice as fast, infinite: no waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed(pub f64);

impl Speed {
    /// A recorded duration at this speed (at most a day: captures can hold anything).
    pub fn scale(self, d: Duration) -> Duration {
        if self.0.is_infinite() {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(d.as_secs_f64() / self.0)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }
}

/// Recorded response headers that are not served as they were: the length is recomputed,
/// the date is today's, and the framing fields belong to the recorded connection.
const NOT_SERVED: &[&str] = &[
    "content-length",
    "date",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// A response ready to serve.
#[derive(Debug)]
pub struct Served {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The recorded wait before the headers.
    pub ttfb: Duration,
    /// Body chunks, each at its offset from the headers.
    pub chunks: Vec<(Duration, Bytes)>,
    /// When the body ends (from the headers); `None`: it stays open until the client leaves,
    /// as it did in the recording.
    pub end: Option<Duration>,
}

/// How values in the response are rewritten for one incoming request.
pub struct Rewrite<'a> {
    /// The recorded origins, and the mock's origin as the client addressed it (`None`: kept).
    pub origins: &'a [String],
    pub own_origin: Option<&'a str>,
    pub recorded: &'a Shape,
    pub incoming: &'a Shape,
}

impl Rewrite<'_> {
    fn text(&self, text: &str) -> String {
        let s = match self.own_origin {
            Some(own) => replace_origins(text, self.origins, own),
            None => text.to_string(),
        };
        to_stand_ins(&s)
    }

    /// JSON-RPC ids and progress tokens of the recorded request → the incoming request's.
    fn messages(&self, value: &mut Value) -> bool {
        match value {
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.messages(item);
                }
                changed
            }
            Value::Object(obj) => {
                let mut changed = false;
                let answers = obj.contains_key("result") || obj.contains_key("error");
                if answers && !obj.contains_key("method") {
                    if let Some(id) = obj.get_mut("id") {
                        if let Some(new) = swap(&self.recorded.ids, &self.incoming.ids, id) {
                            *id = new;
                            changed = true;
                        }
                    }
                }
                if let Some(token) = obj
                    .get_mut("params")
                    .and_then(|p| p.get_mut("progressToken"))
                {
                    if let Some(new) = swap(
                        &self.recorded.progress_tokens,
                        &self.incoming.progress_tokens,
                        token,
                    ) {
                        *token = new;
                        changed = true;
                    }
                }
                changed
            }
            _ => false,
        }
    }

    /// A JSON-RPC body or event data, with ids and tokens swapped (text kept when unchanged).
    fn json_text(&self, text: &str) -> String {
        let text = self.text(text);
        if self.recorded.ids.is_empty() && self.recorded.progress_tokens.is_empty() {
            return text;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&text) else {
            return text;
        };
        if self.messages(&mut v) {
            serde_json::to_string(&v).unwrap_or(text)
        } else {
            text
        }
    }

    /// `Location: …?code=…&state=RECORDED` → the incoming request's `state`.
    fn echoed(&self, url: &str) -> String {
        let mut out = url.to_string();
        for (name, value) in &self.recorded.raw_params {
            let Some((_, new)) = self.incoming.raw_params.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if new == value || value.is_empty() {
                continue;
            }
            out = swap_param(&out, name, value, new);
        }
        out
    }
}

/// The incoming counterpart of a recorded value, matched by position.
fn swap(recorded: &[Value], incoming: &[Value], value: &Value) -> Option<Value> {
    let i = recorded.iter().position(|r| r == value)?;
    incoming.get(i).filter(|new| *new != value).cloned()
}

/// Replaces the value of parameter `name` in a URL's query and fragment where it is `from`.
fn swap_param(url: &str, name: &str, from: &str, to: &str) -> String {
    let rewrite = |part: &str| -> String {
        part.split('&')
            .map(|piece| {
                let decoded = form_urlencoded::parse(piece.as_bytes()).next();
                match decoded {
                    Some((k, v)) if k == name && v == from => {
                        let k_raw = piece.split('=').next().unwrap_or(name);
                        let v: String = form_urlencoded::byte_serialize(to.as_bytes()).collect();
                        format!("{k_raw}={v}")
                    }
                    _ => piece.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let (main, fragment) = match url.split_once('#') {
        Some((m, f)) => (m, Some(f)),
        None => (url, None),
    };
    let mut out = match main.split_once('?') {
        Some((base, query)) => format!("{base}?{}", rewrite(query)),
        None => main.to_string(),
    };
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&rewrite(f));
    }
    out
}

/// Prepares the recorded response of `x` for one incoming request.
pub fn serve(x: &Exchange, rewrite: &Rewrite<'_>, speed: Speed) -> Served {
    let response = match &x.response {
        // An interim or switching response cannot be served on its own.
        Some(r) if r.status >= 200 => r,
        other => {
            let status = other.as_ref().map(|r| r.status);
            let message = match status {
                Some(s) => format!("mcptap mock: the recorded response is {s}, which a mock cannot serve (upgrades are not replayed)"),
                None => "mcptap mock: the recorded exchange has no response".to_string(),
            };
            return Served {
                status: 501,
                headers: vec![("content-type".into(), "application/json".into())],
                ttfb: Duration::ZERO,
                chunks: vec![(
                    Duration::ZERO,
                    Bytes::from(
                        serde_json::json!({"error": "mcptap_mock_unservable", "message": message})
                            .to_string(),
                    ),
                )],
                end: Some(Duration::ZERO),
            };
        }
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(n, _)| !NOT_SERVED.contains(&n.to_ascii_lowercase().as_str()))
        // The capture holds a compressed body decoded: it is served as it is recorded.
        .filter(|(n, _)| {
            !(x.response_body.decoded_from.is_some() && n.eq_ignore_ascii_case("content-encoding"))
        })
        .map(|(n, v)| {
            let mut v = rewrite.text(v);
            if n.eq_ignore_ascii_case("location") || n.eq_ignore_ascii_case("content-location") {
                v = rewrite.echoed(&v);
            }
            (n.to_string(), v)
        })
        .collect();
    let response_t = x.response_t.unwrap_or(x.t);
    let ttfb = speed.scale(Duration::from_micros(response_t.saturating_sub(x.t)));
    let since_headers = |t: u64| speed.scale(Duration::from_micros(t.saturating_sub(response_t)));
    let is_stream = x.response_media_type().as_deref() == Some("text/event-stream");
    let body = &x.response_body;
    let text = std::str::from_utf8(&body.bytes).ok();
    let (chunks, end) = if is_stream && (text.is_some() || !x.sse.is_empty()) {
        let chunks = x
            .sse
            .iter()
            .map(|(t, e)| (since_headers(*t), Bytes::from(block(e, rewrite))))
            .collect();
        // A stream the recorded server ended ends here too; one the client left (or the
        // proxy cut) stays open, as it was.
        let ended = matches!(
            x.outcome(),
            Some(Outcome::Complete | Outcome::UpstreamAborted)
        );
        (chunks, ended.then(|| since_headers(x.end_t())))
    } else {
        let bytes = match text {
            Some(t) => {
                let json = response
                    .headers
                    .get("content-type")
                    .map(media_type)
                    .is_some_and(|m| m.contains("json"));
                Bytes::from(if json {
                    rewrite.json_text(t)
                } else {
                    rewrite.text(t)
                })
            }
            // Not UTF-8 (gzip, images): served byte for byte.
            None => Bytes::from(body.bytes.clone()),
        };
        let chunks = if bytes.is_empty() {
            Vec::new()
        } else {
            vec![(Duration::ZERO, bytes)]
        };
        (chunks, Some(Duration::ZERO))
    };
    Served {
        status: response.status,
        headers,
        ttfb,
        chunks,
        end,
    }
}

/// One event-stream block as text (WHATWG HTML §9.2.6), ended by a blank line unless it was
/// cut off by the end of the recorded stream.
fn block(e: &Sse, rewrite: &Rewrite<'_>) -> String {
    let mut out = String::new();
    for c in &e.comments {
        if c.is_empty() {
            out.push_str(":\n");
        } else {
            out.push_str(&format!(": {c}\n"));
        }
    }
    if let Some(event) = &e.event {
        out.push_str(&format!("event: {event}\n"));
    }
    if let Some(id) = &e.id {
        out.push_str(&format!("id: {id}\n"));
    }
    if let Some(retry) = e.retry {
        out.push_str(&format!("retry: {retry}\n"));
    }
    if let Some(data) = &e.data {
        for line in rewrite.json_text(data).split('\n') {
            out.push_str(&format!("data: {line}\n"));
        }
    }
    let cut_off = !e.dispatched && e.data.is_some();
    if !cut_off {
        out.push('\n');
    }
    out
}

/// A body fed by a timer task: chunks arrive at their offsets; it ends when the task drops
/// its sender (and the task stops when the client goes away).
pub struct TimedBody {
    rx: mpsc::Receiver<Bytes>,
    len: Option<u64>,
}

impl TimedBody {
    /// Starts the timer task for `chunks`, ending at `end` (or never).
    pub fn start(chunks: Vec<(Duration, Bytes)>, end: Option<Duration>) -> TimedBody {
        let len = end
            .filter(|d| d.is_zero())
            .map(|_| chunks.iter().map(|(_, b)| b.len() as u64).sum());
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            for (offset, chunk) in chunks {
                tokio::time::sleep_until(later(start, offset).into()).await;
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            match end {
                Some(offset) => tokio::time::sleep_until(later(start, offset).into()).await,
                None => tx.closed().await,
            }
        });
        TimedBody { rx, len }
    }

    /// A body of one chunk, at once.
    pub fn whole(bytes: Bytes) -> TimedBody {
        TimedBody::start(vec![(Duration::ZERO, bytes)], Some(Duration::ZERO))
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_parameters_keep_the_rest_of_the_url() {
        assert_eq!(
            swap_param(
                "http://h/cb?code=c&state=old#state=old",
                "state",
                "old",
                "n w"
            ),
            "http://h/cb?code=c&state=n+w#state=n+w"
        );
        assert_eq!(swap_param("http://h/cb", "state", "a", "b"), "http://h/cb");
    }

    proptest::proptest! {
        #[test]
        fn any_url_swaps_without_panicking(url in "\\PC{0,60}", name in "[a-z]{0,3}", from in "\\PC{0,4}") {
            let _ = swap_param(&url, &name, &from, "x y");
        }
    }

    #[test]
    fn blocks_are_written_back_as_event_stream_text() {
        let shape = super::super::matcher::shape("GET", "/", None, b"", &[], None);
        let rw = Rewrite {
            origins: &[],
            own_origin: None,
            recorded: &shape,
            incoming: &shape,
        };
        let e = Sse {
            ex: 1,
            dir: crate::capture::Direction::Response,
            seq: 0,
            event: Some("message".into()),
            id: Some("7".into()),
            data: Some("a\nb".into()),
            retry: None,
            comments: vec!["ping".into()],
            dispatched: true,
        };
        assert_eq!(
            block(&e, &rw),
            ": ping\nevent: message\nid: 7\ndata: a\ndata: b\n\n"
        );
    }
}
