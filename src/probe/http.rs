//! One HTTP exchange as the probe makes it: a fresh connection (DNS, TCP, TLS), the request,
//! the answer read as far as the connector would read it, all recorded into the capture the
//! way `replay` records (the same `request`/`response`/`body`/`end` events, redacted by the
//! writer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::net::{Connector, NetError};
use crate::capture::model::{self, EventBody};
use crate::capture::reader::media_type;
use crate::capture::{Direction, Outcome, Record};
use crate::mcp::jsonrpc::{self, Message};
use crate::proxy::forward::version_str;
use crate::proxy::headers;
use crate::proxy::record::body::BodyObserver;
use crate::proxy::record::{ExchangeLog, Shared};
use crate::proxy::record::{Producer, RequestHead};
use crate::sse::{SseEvent, SseParser};

/// A request to make.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    pub fn get(url: &str) -> Outgoing {
        Outgoing {
            method: Method::GET,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Outgoing {
        self.headers.push((name, value.into()));
        self
    }

    pub fn json(mut self, method: Method, body: &Value) -> Outgoing {
        self.method = method;
        self.body = serde_json::to_vec(body).unwrap_or_default();
        self.header(http::header::CONTENT_TYPE, "application/json")
    }
}

/// How far to read the answer.
#[derive(Clone)]
pub enum Until {
    /// To the end of the body.
    End,
    /// Until the JSON-RPC response with this id arrived (in a JSON body or an event), then
    /// leave, as a client does once it has its answer.
    Answer(u64),
    /// Until the token is cancelled (a GET stream kept open while other requests go).
    Cancelled(CancellationToken),
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The exchange number in the capture.
    pub ex: u64,
    pub url: String,
    pub status: Option<u16>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub events: Vec<SseEvent>,
    /// The connection failed (no request was sent).
    pub net: Option<NetError>,
    /// Why the answer is incomplete, in words (deadline passed, stream broke).
    pub error: Option<String>,
    /// The deadline passed before the answer (or the awaited JSON-RPC response) arrived.
    pub timed_out: bool,
    /// The body passed the probe's size cap and was not read to its end.
    pub oversized: bool,
    pub took: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `WWW-Authenticate` value a client acts on: the `Bearer` challenge when there are
    /// several headers, read leniently (a byte outside ASCII must not hide the challenge).
    pub fn challenge(&self) -> Option<String> {
        let values: Vec<String> = self
            .headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let bearer = values.iter().position(|v| {
            v.trim_start()
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        });
        let i = bearer.unwrap_or(0);
        values.into_iter().nth(i)
    }

    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(media_type)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The JSON-RPC response with `id`, from the body or the events.
    pub fn rpc_answer(&self, id: u64) -> Option<Message> {
        answer_in(&self.body, &self.events, id)
    }

    /// `401`, `200, then …` when the body broke off, or `no answer: …`, for one line of output.
    pub fn status_words(&self) -> String {
        match (self.status, &self.net, &self.error) {
            (Some(s), _, Some(e)) => format!("{s}, then {e}"),
            (Some(s), _, _) => s.to_string(),
            (None, Some(net), _) => format!("no answer: {net}"),
            (None, None, Some(e)) => format!("no answer: {e}"),
            (None, None, None) => "no answer".into(),
        }
    }
}

fn answer_in(body: &[u8], events: &[SseEvent], id: u64) -> Option<Message> {
    let key = format!("n:{id}");
    let matches = |m: &Message| m.is_response() && m.id() == Some(key.as_str());
    if let Some(found) = jsonrpc::decode_bytes(body)
        .unwrap_or_default()
        .into_iter()
        .find(matches)
    {
        return Some(found);
    }
    events
        .iter()
        .filter_map(|e| e.data.as_deref())
        .filter_map(|d| jsonrpc::decode_bytes(d.as_bytes()))
        .flatten()
        .find(matches)
}

/// The probe's HTTP side: connections and the record of every exchange.
pub struct Http {
    pub connector: Connector,
    pub shared: Arc<Shared>,
    pub user_agent: String,
}

/// Scheme, host and port of an absolute http(s) URL, and the path and query. The host is
/// bare (an IPv6 literal without its brackets); a port that is not 1 to 65535 is no URL.
pub fn parts(url: &str) -> Option<(bool, String, u16, String)> {
    let uri: Uri = url.parse().ok()?;
    let https = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    let host = host.to_string();
    let port = match port_text(uri.authority()?.as_str()) {
        None | Some("") => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Some((https, host, port, pq))
}

/// The port as written in an authority (`http::Uri::port` hides one that is out of range).
pub fn port_text(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    match host_port.rfind(']') {
        Some(end) => host_port[end + 1..].strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    }
}

impl Http {
    /// Makes one exchange on a connection of its own, recorded; never fails: a failure is in
    /// the answer.
    pub async fn send(&self, out: Outgoing, deadline: Duration, until: Until) -> Answer {
        let log = ExchangeLog::start(&self.shared);
        let started = log.started;
        let mut answer = Answer {
            ex: log.ex,
            url: out.url.clone(),
            ..Answer::default()
        };
        let Some((https, host, port, pq)) = parts(&out.url) else {
            answer.error = Some(format!("{} is not an http(s) URL", out.url));
            self.record_request(&log, 0, &out, "/", "", http::Version::HTTP_11);
            log.preset_outcome(
                Outcome::UpstreamError,
                answer.error.clone().unwrap_or_default(),
            );
            log.finish(Outcome::UpstreamError, None, Instant::now());
            return answer;
        };
        let default_port = if https { 443 } else { 80 };
        let authority = match (port == default_port, host.contains(':')) {
            (true, false) => host.clone(),
            (true, true) => format!("[{host}]"),
            (false, false) => format!("{host}:{port}"),
            (false, true) => format!("[{host}]:{port}"),
        };
        let end_by = started + deadline;
        let opened =
            tokio::time::timeout_at(end_by.into(), self.connector.open(https, &host, port)).await;
        let conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(net)) => {
                self.record_request(&log, 0, &out, &pq, &authority, http::Version::HTTP_11);
                log.preset_outcome(Outcome::UpstreamError, net.message.clone());
                log.finish(Outcome::UpstreamError, None, Instant::now());
                answer.net = Some(net);
                answer.took = started.elapsed();
                return answer;
            }
            Err(_) => {
                let why = format!("could not connect within {:.1} s", deadline.as_secs_f64());
                self.record_request(&log, 0, &out, &pq, &authority, http::Version::HTTP_11);
                log.preset_outcome(Outcome::ClientAborted, why.clone());
                log.finish(Outcome::ClientAborted, None, Instant::now());
                answer.error = Some(why);
                answer.timed_out = true;
                answer.took = started.elapsed();
                return answer;
            }
        };
        let conn_id = self.shared.next_conn();
        let recorder = &self.shared.recorder;
        recorder.event(
            recorder.clock().us_at(started),
            EventBody::ConnOpen(model::ConnOpen {
                route: None,
                conn: conn_id,
                // The probe is the client: its socket is the peer, the server's the local end.
                peer: conn.local.to_string(),
                local: conn.remote.to_string(),
                listener: model::LISTEN_PROBE.into(),
                tls: conn.tls.clone(),
            }),
        );
        let h2 = conn.h2();
        let version = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        self.record_request(&log, conn_id, &out, &pq, &authority, version);
        log.frame(Direction::Request, out.body.len(), started);

        let io = TokioIo::new(conn.io);
        let mut request = Request::new(Full::new(Bytes::from(out.body.clone())));
        *request.method_mut() = out.method.clone();
        *request.headers_mut() = self.header_map(&out, &authority, h2);
        let sent = if h2 {
            *request.uri_mut() = out.url.parse().unwrap_or_default();
            *request.version_mut() = http::Version::HTTP_2;
            // The whole exchange, handshake included, keeps to the deadline.
            tokio::time::timeout_at(end_by.into(), async {
                let (mut send, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                send.send_request(request).await
            })
            .await
        } else {
            *request.uri_mut() = pq.parse().unwrap_or_default();
            tokio::time::timeout_at(end_by.into(), async {
                let (mut send, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                send.send_request(request).await
            })
            .await
        };
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let why = format!(
                    "the server closed the connection without an answer: {}",
                    crate::proxy::upstream::error_chain(&e)
                );
                log.preset_outcome(Outcome::UpstreamError, why.clone());
                log.finish(Outcome::UpstreamError, None, Instant::now());
                answer.error = Some(why);
                answer.took = started.elapsed();
                return answer;
            }
            Err(_) => {
                let why = format!(
                    "no answer within {:.1} s; the probe gave up as a connector would",
                    deadline.as_secs_f64()
                );
                log.preset_outcome(Outcome::ClientAborted, why.clone());
                log.finish(Outcome::ClientAborted, None, Instant::now());
                answer.error = Some(why);
                answer.timed_out = true;
                answer.took = started.elapsed();
                return answer;
            }
        };
        let at = Instant::now();
        log.ended(Direction::Request, at);
        let status = response.status().as_u16();
        let (head, mut body) = response.into_parts();
        let mut clean = head.headers.clone();
        headers::remove_hop_by_hop(&mut clean, false);
        log.record_response(
            at,
            status,
            version_str(head.version),
            headers::to_record(&clean),
            Producer::Upstream,
            None,
        );
        answer.status = Some(status);
        answer.headers = head.headers;
        let stream = answer.media_type().as_deref() == Some("text/event-stream");
        let mut parser = SseParser::new();
        let cancelled = match &until {
            Until::Cancelled(token) => token.clone(),
            _ => CancellationToken::new(),
        };
        // Why reading stopped early, if it did: (outcome, words).
        let stopped: Option<(Outcome, String)> = loop {
            let frame = tokio::select! {
                f = tokio::time::timeout_at(end_by.into(), body.frame()) => f,
                _ = cancelled.cancelled() => break Some((Outcome::ClientAborted,
                    "the probe closed the stream once it was done".into())),
            };
            match frame {
                Err(_) => {
                    answer.timed_out = true;
                    break Some((
                        Outcome::ClientAborted,
                        format!(
                            "the probe gave up after {:.1} s without the answer, as a connector would",
                            deadline.as_secs_f64()
                        ),
                    ));
                }
                Ok(None) => break None,
                Ok(Some(Err(e))) => {
                    break Some((
                        Outcome::UpstreamAborted,
                        format!(
                            "the response body broke off: {}",
                            crate::proxy::upstream::error_chain(&e)
                        ),
                    ))
                }
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    let now = Instant::now();
                    log.frame(Direction::Response, data.len(), now);
                    let keep = answer.body.len() < KEEP_BYTES;
                    let mut answered = false;
                    if keep {
                        answer.body.extend_from_slice(&data);
                        if stream {
                            let new = parser.push(&data);
                            if let Until::Answer(id) = &until {
                                answered = answer_in(&[], &new, *id).is_some();
                            }
                            answer.events.extend(new);
                        }
                    }
                    recorder.whole_frame(
                        log.ex,
                        Direction::Response,
                        recorder.clock().us_at(now),
                        data,
                    );
                    if answered {
                        break Some((
                            Outcome::ClientAborted,
                            "the probe left the stream once the answer had arrived".into(),
                        ));
                    }
                    // A body that never ends (or is absurdly large) must not hold the probe
                    // until the deadline or fill its memory; a stream kept open on purpose is
                    // still recorded, up to the capture's own cap.
                    if !keep && !matches!(until, Until::Cancelled(_)) {
                        answer.oversized = true;
                        break Some((
                            Outcome::ClientAborted,
                            format!(
                                "the probe stopped reading after {} MiB{}; no connector needs that much",
                                KEEP_BYTES >> 20,
                                if stream {
                                    " of event stream without the answer"
                                } else {
                                    " of body"
                                }
                            ),
                        ));
                    }
                }
            }
        };
        let at = Instant::now();
        recorder.record(Record::BodyEnd {
            ex: log.ex,
            dir: Direction::Response,
            t: recorder.clock().us_at(at),
        });
        match stopped {
            None => log.ended(Direction::Response, at),
            Some((outcome, why)) => {
                if outcome == Outcome::UpstreamAborted || answer.timed_out || answer.oversized {
                    answer.error = Some(why.clone());
                }
                log.preset_outcome(outcome, why);
                log.finish(outcome, None, at);
            }
        }
        answer.took = at.saturating_duration_since(started);
        answer
    }

    fn header_map(&self, out: &Outgoing, authority: &str, h2: bool) -> HeaderMap {
        let mut map = HeaderMap::new();
        if !h2 {
            if let Ok(v) = HeaderValue::from_str(authority) {
                map.insert(HOST, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&self.user_agent) {
            map.insert(USER_AGENT, v);
        }
        for (name, value) in &out.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                map.append(name.clone(), v);
            }
        }
        map
    }

    /// The `request` event and its body. The recorded headers always name the host (as
    /// `:authority` is on HTTP/2), so explain knows which origin the probe used.
    fn record_request(
        &self,
        log: &ExchangeLog,
        conn: u64,
        out: &Outgoing,
        pq: &str,
        authority: &str,
        version: http::Version,
    ) {
        let mut map = self.header_map(out, authority, false);
        if map.get(HOST).is_none() {
            if let Ok(v) = HeaderValue::from_str(authority) {
                map.insert(HOST, v);
            }
        }
        log.record_request(RequestHead {
            conn,
            method: out.method.to_string(),
            target: pq.to_string(),
            version: version_str(version),
            headers: headers::to_record(&map),
            upstream: out.url.clone(),
            route: None,
        });
        log.record_request_body(Bytes::from(out.body.clone()));
    }
}

/// Bodies above this are recorded (up to the capture's cap) but not kept for the probe's use.
const KEEP_BYTES: usize = 4 << 20;
