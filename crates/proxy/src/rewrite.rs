//! `--rewrite-origins` on the data path: which origins one exchange swaps (each upstream's for
//! the proxy's public one, and back), in which headers and bodies, and the bodies that carry
//! the swap — a whole message rewritten with its Content-Length fixed, or an event stream
//! rewritten line by line as it streams. Every rewrite, and every body left alone, is a `note`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::origins::{Origin, OriginMap};
use mcptap_capture::model::{self, EventBody};
use mcptap_capture::Recorder;

/// The largest message body rewritten: it must be held whole first. Larger ones are forwarded
/// unmodified (and noted). OAuth and MCP JSON documents are a few KiB.
pub const BODY_LIMIT: usize = 4 << 20;

/// The longest event-stream line held while waiting for its end; a longer one is forwarded
/// unmodified so that the stream keeps moving.
const LINE_LIMIT: usize = 1 << 20;

/// Response fields that name URLs the client follows (RFC 9110 §10.2.2 Location, §8.7
/// Content-Location; RFC 8288 Link; RFC 9110 §11.6.1 WWW-Authenticate, whose Bearer
/// `resource_metadata` is RFC 9728 §5.1), and the CORS origin echo.
pub const RESPONSE_FIELDS: &[&str] = &[
    "location",
    "content-location",
    "link",
    "www-authenticate",
    "access-control-allow-origin",
];

/// Request fields that name the proxy's origin: the page's origin and the referring URL.
pub const REQUEST_FIELDS: &[&str] = &["origin", "referer"];

/// Fields that describe the exact bytes of a body, wrong once it is rewritten.
const DIGEST_FIELDS: &[&str] = &["content-md5", "digest", "content-digest", "repr-digest"];

/// Every route's listener and upstream origin, shared by all exchanges.
#[derive(Debug)]
pub struct Rewriting {
    routes: Vec<(SocketAddr, Option<Origin>)>,
    tls: bool,
}

/// The swaps of one exchange.
pub struct ExchangeRewrite {
    /// Upstream origins → the proxy's, for responses.
    pub to_public: OriginMap,
    /// The proxy's origins → the upstreams', for requests.
    pub to_upstream: OriginMap,
}

impl Rewriting {
    /// `routes`: each route's bound listen address and upstream URL, in route order.
    pub fn new(routes: &[(SocketAddr, http::Uri)], tls: bool) -> Rewriting {
        Rewriting {
            routes: routes
                .iter()
                .map(|(listen, upstream)| (*listen, Origin::of_uri(upstream)))
                .collect(),
            tls,
        }
    }

    /// The swaps for a request that came in on `route`. The public origin of that route is the
    /// one the client used (its scheme, and the `Host` it sent); another route's is the same
    /// host on that route's listen port. The host only names origins in what the client is
    /// sent: it never chooses where anything is forwarded. `None` without a usable host.
    pub fn for_request(
        &self,
        route: usize,
        host: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<ExchangeRewrite> {
        // Behind a TLS terminator the client's scheme is the terminator's to say.
        let forwarded_proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| v == "http" || v == "https");
        let scheme = if self.tls {
            "https".to_string()
        } else {
            forwarded_proto.unwrap_or_else(|| "http".into())
        };
        let fallback = self.routes.get(route).map(|(listen, _)| listen.to_string());
        let current = Origin::new(&scheme, host.or(fallback.as_deref())?)?;
        let mut pairs: Vec<(Origin, Origin)> = Vec::new();
        let order = std::iter::once(route).chain((0..self.routes.len()).filter(|&i| i != route));
        for i in order {
            let Some((listen, Some(upstream))) = self.routes.get(i) else {
                continue;
            };
            let public = if i == route {
                current.clone()
            } else {
                current.with_port(listen.port())
            };
            pairs.push((upstream.clone(), public));
        }
        Some(ExchangeRewrite {
            to_public: OriginMap::new(pairs.iter().cloned()),
            to_upstream: OriginMap::new(pairs.into_iter().map(|(up, public)| (public, up))),
        })
    }
}

/// Rewrites the values of `fields` in place; returns `(field, origins swapped)` for each
/// field that changed.
pub fn rewrite_fields(
    map: &OriginMap,
    headers: &mut HeaderMap,
    fields: &[&'static str],
) -> Vec<(&'static str, usize)> {
    let mut changed = Vec::new();
    for &field in fields {
        let name = HeaderName::from_static(field);
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut count = 0;
        let mut rewritten = Vec::with_capacity(values.len());
        for v in values {
            match map
                .rewrite(v.as_bytes())
                .and_then(|(b, n)| HeaderValue::from_bytes(&b).ok().map(|v| (v, n)))
            {
                Some((v, n)) => {
                    count += n;
                    rewritten.push(v);
                }
                None => rewritten.push(v),
            }
        }
        if count > 0 {
            headers.remove(&name);
            for v in rewritten {
                headers.append(name.clone(), v);
            }
            changed.push((field, count));
        }
    }
    changed
}

/// What a body's Content-Type says about rewriting it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BodyKind {
    /// JSON (`application/json`, `*+json`) or a form (`application/x-www-form-urlencoded`):
    /// held whole, rewritten, Content-Length fixed.
    Message,
    /// `text/event-stream`: `data:` lines rewritten as they stream.
    EventStream,
    /// Anything else: forwarded as it is.
    Other,
}

pub fn body_kind(headers: &HeaderMap) -> BodyKind {
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(mcptap_capture::reader::media_type)
        .unwrap_or_default();
    match media.as_str() {
        "text/event-stream" => BodyKind::EventStream,
        "application/json" | "application/x-www-form-urlencoded" => BodyKind::Message,
        m if m.ends_with("+json") => BodyKind::Message,
        _ => BodyKind::Other,
    }
}

/// The Content-Encoding of a body, when it is not `identity`: such a body is not rewritten
/// (its bytes are not the text).
pub fn encoded(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity"))
        .collect::<Vec<_>>()
        .join(", ");
    (!value.is_empty()).then_some(value)
}

/// The declared Content-Length, when there is one and it parses.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// After a body was rewritten to `len` bytes: the new Content-Length, and no digest of the
/// old bytes.
pub fn fix_length(headers: &mut HeaderMap, len: usize) {
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    for field in DIGEST_FIELDS {
        headers.remove(*field);
    }
}

/// A body the proxy forwards: as it is, rewritten whole, resumed after an attempt to hold it
/// whole, or an event stream rewritten line by line.
pub enum Forwarded<B: Body> {
    Through(B),
    Whole {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Resumed {
        head: VecDeque<Frame<Bytes>>,
        rest: Option<B>,
        error: Option<B::Error>,
    },
    Lines(Box<LineRewriter<B>>),
}

/// What holding a body whole came to.
pub enum Collected<B: Body> {
    /// The whole body, and its trailers.
    Whole {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Given up: what was read, then the rest of the body (over the limit) or its error.
    Partial {
        head: VecDeque<Frame<Bytes>>,
        rest: Option<B>,
        error: Option<B::Error>,
    },
}

/// Reads `body` whole, giving up past `limit` bytes or at an error.
pub async fn collect<B>(mut body: B, limit: usize) -> Collected<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut head = VecDeque::new();
    let mut size = 0;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                size += frame.data_ref().map_or(0, Bytes::len);
                head.push_back(frame);
                if size > limit {
                    return Collected::Partial {
                        head,
                        rest: Some(body),
                        error: None,
                    };
                }
            }
            Some(Err(e)) => {
                return Collected::Partial {
                    head,
                    rest: None,
                    error: Some(e),
                }
            }
            None => break,
        }
    }
    let mut data = BytesMut::with_capacity(size);
    let mut trailers: Option<HeaderMap> = None;
    for frame in head {
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
    Collected::Whole {
        data: data.freeze(),
        trailers,
    }
}

impl<B: Body> Forwarded<B> {
    /// The forwarded form of a collected body: `data` replaces a whole one.
    pub fn from_collected(collected: Collected<B>, data: Option<Bytes>) -> Forwarded<B> {
        match collected {
            Collected::Whole { data: d, trailers } => Forwarded::Whole {
                data: Some(data.unwrap_or(d)),
                trailers,
            },
            Collected::Partial { head, rest, error } => Forwarded::Resumed { head, rest, error },
        }
    }
}

impl<B> Body for Forwarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.get_mut() {
            Forwarded::Through(b) => Pin::new(b).poll_frame(cx),
            Forwarded::Whole { data, trailers } => {
                if let Some(d) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Forwarded::Resumed { head, rest, error } => {
                if let Some(frame) = head.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                match rest {
                    Some(b) => Pin::new(b).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
            Forwarded::Lines(lines) => lines.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Forwarded::Through(b) => b.is_end_stream(),
            Forwarded::Whole { data, trailers } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
            Forwarded::Resumed { head, rest, error } => {
                head.is_empty() && error.is_none() && rest.as_ref().is_none_or(B::is_end_stream)
            }
            Forwarded::Lines(lines) => lines.finished && lines.after.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Forwarded::Through(b) => b.size_hint(),
            Forwarded::Whole { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            _ => SizeHint::default(),
        }
    }
}

/// Records the `note` of one rewrite (or of a body left alone).
#[derive(Clone)]
pub struct Notes {
    pub recorder: Recorder,
    pub ex: u64,
}

impl Notes {
    /// `origins_rewritten`: `places` lists each place and its count (a count of 0 is a remark,
    /// such as the new Content-Length).
    pub fn rewritten(&self, what: &str, places: &[(String, usize)]) {
        let count: usize = places.iter().map(|(_, n)| n).sum();
        if count == 0 {
            return;
        }
        let list = places
            .iter()
            .map(|(place, n)| match n {
                0 => place.clone(),
                n => format!("{place} ×{n}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let s = if count == 1 { "" } else { "s" };
        self.record(
            "origins_rewritten",
            format!(
                "{count} origin{s} rewritten in the {what} of #{}: {list}",
                self.ex
            ),
            Some(count as u64),
        );
    }

    /// `origins_not_rewritten`: a body that could have named an origin was forwarded as it was.
    pub fn left_alone(&self, what: &str, why: &str) {
        self.record(
            "origins_not_rewritten",
            format!(
                "the {what} body of #{} was forwarded unmodified: {why}",
                self.ex
            ),
            None,
        );
    }

    fn record(&self, code: &str, message: String, count: Option<u64>) {
        self.recorder.event_now(EventBody::Note(model::Note {
            code: code.into(),
            message,
            count,
            ex: Some(self.ex),
        }));
    }
}

/// An event stream whose `data:` lines are rewritten as they pass: each frame goes on as soon
/// as its complete lines are rewritten (an unfinished line waits for its end, which the client
/// needs before it can use it anyway).
pub struct LineRewriter<B: Body> {
    inner: B,
    map: OriginMap,
    pending: BytesMut,
    /// What comes after the text being flushed: trailers or the error that ended the stream.
    after: Option<Result<Frame<Bytes>, B::Error>>,
    finished: bool,
    rewritten: usize,
    notes: Notes,
    what: &'static str,
    noted: bool,
}

impl<B: Body> LineRewriter<B> {
    pub fn new(inner: B, map: OriginMap, notes: Notes, what: &'static str) -> Self {
        LineRewriter {
            inner,
            map,
            pending: BytesMut::new(),
            after: None,
            finished: false,
            rewritten: 0,
            notes,
            what,
            noted: false,
        }
    }

    fn note(&mut self) {
        if !self.noted {
            self.noted = true;
            self.notes.rewritten(
                self.what,
                &[("event-stream data lines".to_string(), self.rewritten)],
            );
        }
    }

    /// The complete lines held (all held bytes when `all`), rewritten; `None` when empty.
    fn take(&mut self, all: bool) -> Option<Bytes> {
        let cut = if all || self.pending.len() > LINE_LIMIT {
            self.pending.len()
        } else {
            self.pending
                .iter()
                .rposition(|&b| b == b'\n' || b == b'\r')
                .map_or(0, |i| i + 1)
        };
        if cut == 0 {
            return None;
        }
        let chunk = self.pending.split_to(cut).freeze();
        let (out, n) = rewrite_data_lines(&self.map, &chunk);
        self.rewritten += n;
        Some(out)
    }
}

impl<B> LineRewriter<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        loop {
            if let Some(next) = self.after.take() {
                return Poll::Ready(Some(next));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.pending.extend_from_slice(&data);
                        if let Some(out) = self.take(false) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        self.after = Some(Ok(trailers));
                        if let Some(out) = self.take(true) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Some(Err(e)) => {
                    self.finished = true;
                    self.after = Some(Err(e));
                    let out = self.take(true);
                    self.note();
                    if let Some(out) = out {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                None => {
                    self.finished = true;
                    let out = self.take(true);
                    self.note();
                    if let Some(out) = out {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }
}

impl<B: Body> Drop for LineRewriter<B> {
    fn drop(&mut self) {
        // A stream cut short (the client left, the proxy shut down) still says what it rewrote.
        self.note();
    }
}

/// `chunk` with the origins in its `data:` lines (WHATWG HTML §9.2.6) swapped; other lines
/// and every line end are left as they are.
fn rewrite_data_lines(map: &OriginMap, chunk: &Bytes) -> (Bytes, usize) {
    let mut out: Option<BytesMut> = None;
    let mut count = 0;
    let mut start = 0;
    while start < chunk.len() {
        let end = chunk[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(chunk.len(), |i| start + i);
        let line = &chunk[start..end];
        let rewritten = line
            .starts_with(b"data:")
            .then(|| map.rewrite(line))
            .flatten();
        match rewritten {
            Some((text, n)) => {
                count += n;
                let out = out.get_or_insert_with(|| BytesMut::from(&chunk[..start]));
                out.extend_from_slice(&text);
            }
            None => {
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(line);
                }
            }
        }
        // The line end itself (CR, LF or CRLF: one byte at a time is enough here).
        let next = (end + 1).min(chunk.len());
        if let Some(out) = out.as_mut() {
            out.extend_from_slice(&chunk[end..next]);
        }
        start = next;
    }
    match out {
        Some(out) => (out.freeze(), count),
        None => (chunk.clone(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> OriginMap {
        let up = Origin::new("http", "127.0.0.1:8000").unwrap();
        let public = Origin::new("https", "mcp.example.com").unwrap();
        OriginMap::new([(up, public)])
    }

    #[test]
    fn only_data_lines_are_rewritten_and_line_ends_kept() {
        let chunk = Bytes::from_static(
            b"event: http://127.0.0.1:8000\r\ndata: {\"u\":\"http://127.0.0.1:8000/x\"}\r\n\r\n: http://127.0.0.1:8000\ndata:http://127.0.0.1:8000\n",
        );
        let (out, n) = rewrite_data_lines(&map(), &chunk);
        assert_eq!(n, 2);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "event: http://127.0.0.1:8000\r\ndata: {\"u\":\"https://mcp.example.com/x\"}\r\n\r\n: http://127.0.0.1:8000\ndata:https://mcp.example.com\n"
        );
        let untouched = Bytes::from_static(b"data: nothing\n\n");
        assert_eq!(
            rewrite_data_lines(&map(), &untouched),
            (untouched.clone(), 0)
        );
    }

    #[test]
    fn public_origins_come_from_the_host_and_each_routes_port() {
        let routes = [
            (
                "127.0.0.1:7000".parse().unwrap(),
                "http://127.0.0.1:8000".parse().unwrap(),
            ),
            (
                "0.0.0.0:7001".parse().unwrap(),
                "http://127.0.0.1:9000/".parse().unwrap(),
            ),
        ];
        let rw = Rewriting::new(&routes, false);
        let x = rw
            .for_request(0, Some("localhost:7000"), &HeaderMap::new())
            .unwrap();
        let text = "http://127.0.0.1:8000/mcp http://127.0.0.1:9000/token";
        assert_eq!(
            x.to_public.rewrite_str(text).unwrap().0,
            "http://localhost:7000/mcp http://localhost:7001/token"
        );
        assert_eq!(
            x.to_upstream
                .rewrite_str("resource=http%3A%2F%2Flocalhost%3A7000%2Fmcp")
                .unwrap()
                .0,
            "resource=http%3A%2F%2F127.0.0.1%3A8000%2Fmcp"
        );
        // Behind a TLS terminator: its scheme, the client's host without a port.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let x = rw
            .for_request(1, Some("auth.example.com"), &headers)
            .unwrap();
        assert_eq!(
            x.to_public.rewrite_str(text).unwrap().0,
            "https://auth.example.com:7000/mcp https://auth.example.com/token"
        );
        // A host that is not one is no reason to rewrite anything.
        assert!(rw.for_request(0, Some("a b"), &HeaderMap::new()).is_none());
    }

    #[test]
    fn encoded_bodies_and_kinds_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/vnd.api+json; charset=utf-8"),
        );
        assert_eq!(body_kind(&h), BodyKind::Message);
        h.insert(
            "content-type",
            HeaderValue::from_static("Text/Event-Stream"),
        );
        assert_eq!(body_kind(&h), BodyKind::EventStream);
        h.insert("content-type", HeaderValue::from_static("text/html"));
        assert_eq!(body_kind(&h), BodyKind::Other);
        assert_eq!(encoded(&h), None);
        h.insert("content-encoding", HeaderValue::from_static("identity"));
        assert_eq!(encoded(&h), None);
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        assert_eq!(encoded(&h).as_deref(), Some("gzip"));
    }

    #[test]
    fn fields_are_rewritten_value_by_value() {
        let mut h = HeaderMap::new();
        h.append(
            "link",
            HeaderValue::from_static("<http://127.0.0.1:8000/a>; rel=x"),
        );
        h.append("link", HeaderValue::from_static("<http://other/b>; rel=y"));
        h.insert(
            "www-authenticate",
            HeaderValue::from_static(r#"Bearer resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp""#),
        );
        h.insert("x-other", HeaderValue::from_static("http://127.0.0.1:8000"));
        let changed = rewrite_fields(&map(), &mut h, RESPONSE_FIELDS);
        assert_eq!(changed, vec![("link", 1), ("www-authenticate", 1)]);
        let links: Vec<_> = h
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            links,
            [
                "<https://mcp.example.com/a>; rel=x",
                "<http://other/b>; rel=y"
            ]
        );
        assert_eq!(h["x-other"], "http://127.0.0.1:8000");
    }
}
