//! The harness's own clients: an open-loop JSON POST generator, and raw HTTP/1.1 readers
//! for event streams, idle streams and big downloads, where what matters is what arrives
//! in each `read()`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::upstream::now_us;

/// The JSON-RPC request every POST sends.
pub const POST_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"mcptap benchmark","limit":10}}}"#;

/// One POST /json on a fresh connection; the status.
pub async fn post_once(addr: SocketAddr) -> anyhow::Result<u16> {
    let head = format!(
        "POST /json HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        POST_BODY.len()
    );
    let mut resp = RawResponse::send(addr, &head, POST_BODY.as_bytes()).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    resp.each_read(deadline, |_| true).await?;
    Ok(resp.status)
}

// ---------------------------------------------------------------------------------------
// Open loop

/// What an open-loop run saw.
pub struct OpenLoop {
    /// Latencies in µs, measured from when each request was due (coordinated omission
    /// corrected: a request that waited for its connection counts the wait).
    pub latencies: Vec<u64>,
    pub errors: u64,
    /// Requests that were due but never completed before the run's deadline.
    pub unfinished: u64,
    pub elapsed: Duration,
}

/// Sends POST /json at `rate` per second for `duration` over `conns` keep-alive
/// connections. Request i is due at start + i/rate and goes on connection i mod conns.
pub async fn open_loop(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    conns: usize,
) -> anyhow::Result<OpenLoop> {
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + duration + Duration::from_secs(10);
    let body = Bytes::from_static(POST_BODY.as_bytes());
    let mut workers = JoinSet::new();
    for k in 0..conns as u64 {
        let body = body.clone();
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut done = 0u64;
            let mut sender = None;
            let mut i = k;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                // Idle until due: time from when we actually woke (tokio's timer is coarse).
                // Busy past due: time from when it was due.
                let from = if now < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                i += conns as u64;
                if sender.is_none() {
                    match connect_h1(addr).await {
                        Ok(s) => sender = Some(s),
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let s = sender.as_mut().expect("connected above");
                let req = Request::post("/json")
                    .header("host", addr.to_string())
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                let left = deadline.saturating_duration_since(Instant::now());
                let result = tokio::time::timeout(left, async {
                    s.ready().await?;
                    let resp = s.send_request(req).await?;
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await?;
                    Ok::<bool, hyper::Error>(ok)
                })
                .await;
                match result {
                    Ok(Ok(true)) => {
                        lat.push(from.elapsed().as_micros() as u64);
                        done += 1;
                    }
                    Ok(Ok(false)) => errors += 1,
                    Ok(Err(_)) => {
                        errors += 1;
                        sender = None;
                    }
                    Err(_) => break,
                }
            }
            (lat, errors, done)
        });
    }
    let mut out = OpenLoop {
        latencies: Vec::with_capacity(total as usize),
        errors: 0,
        unfinished: 0,
        elapsed: Duration::ZERO,
    };
    let mut completed = 0;
    while let Some(r) = workers.join_next().await {
        let (lat, errors, done) = r.context("an open-loop worker panicked")?;
        out.latencies.extend(lat);
        out.errors += errors;
        completed += done;
    }
    out.elapsed = start.elapsed();
    out.unfinished = total.saturating_sub(completed + out.errors);
    Ok(out)
}

/// A keep-alive HTTP/1.1 connection (hyper's client, Nagle off).
pub async fn connect_h1(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

// ---------------------------------------------------------------------------------------
// Event streams

/// What one event stream delivered.
pub struct SseRun {
    /// Per event: µs from the upstream's send to the read that completed the event.
    pub latencies: Vec<u64>,
    /// Events that completed in the same read as at least one other event.
    pub coalesced: u64,
    pub reads: u64,
}

/// Reads `GET /sse?n&size&rate` to its end and times every event.
pub async fn sse(
    addr: SocketAddr,
    n: u64,
    size: usize,
    rate: u64,
    timeout: Duration,
) -> anyhow::Result<SseRun> {
    let head = format!(
        "GET /sse?n={n}&size={size}&rate={rate} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    let mut resp = RawResponse::send(addr, &head, b"").await?;
    if resp.status != 200 {
        bail!("status {}", resp.status);
    }
    let mut scan = EventScan::default();
    let mut run = SseRun {
        latencies: Vec::with_capacity(n as usize),
        coalesced: 0,
        reads: 0,
    };
    let deadline = Instant::now() + timeout;
    resp.each_read(deadline, |data| {
        let at = now_us();
        let mut in_this_read = 0;
        scan.feed(data, |stamp| {
            if let Some(sent) = stamp {
                run.latencies.push(at.saturating_sub(sent));
                in_this_read += 1;
            }
        });
        run.reads += 1;
        if in_this_read >= 2 {
            run.coalesced += in_this_read;
        }
        (run.latencies.len() as u64) < n
    })
    .await?;
    if (run.latencies.len() as u64) < n {
        bail!(
            "the stream ended after {} of {n} events",
            run.latencies.len()
        );
    }
    Ok(run)
}

/// Finds event ends (a blank line) in a byte stream and the `"t":` stamp near each start.
#[derive(Default)]
struct EventScan {
    head: Vec<u8>,
    prev_newline: bool,
}

impl EventScan {
    fn feed(&mut self, data: &[u8], mut on_event: impl FnMut(Option<u64>)) {
        for &b in data {
            if self.head.len() < 64 {
                self.head.push(b);
            }
            if b == b'\n' {
                if self.prev_newline {
                    on_event(stamp(&self.head));
                    self.head.clear();
                    self.prev_newline = false;
                } else {
                    self.prev_newline = true;
                }
            } else if b != b'\r' {
                self.prev_newline = false;
            }
        }
    }
}

fn stamp(head: &[u8]) -> Option<u64> {
    let at = head.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits: Vec<u8> = head[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Idle streams and big downloads

/// Opens `count` idle event streams (`GET /sse?n=0`) and keeps their sockets. At most
/// `window` streams are in flight at a time (opened but not yet `established()` at the
/// upstream), so a proxy that accepts slowly is not flooded past its listen backlog.
pub async fn open_idle(
    addr: SocketAddr,
    count: usize,
    window: u64,
    deadline: Instant,
    established: impl Fn() -> u64,
) -> (Vec<TcpStream>, Option<String>) {
    let mut tasks = JoinSet::new();
    let mut opened = 0u64;
    while (opened as usize) < count && Instant::now() < deadline {
        if opened.saturating_sub(established()) >= window {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        opened += 1;
        tasks.spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, async {
                let mut s = TcpStream::connect(addr).await?;
                let head = format!(
                    "GET /sse?n=0 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await?;
                Ok::<_, std::io::Error>(s)
            })
            .await
        });
    }
    let mut streams = Vec::with_capacity(count);
    let mut error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(Ok(s))) => streams.push(s),
            Ok(Ok(Err(e))) => error = Some(e.to_string()),
            Ok(Err(_)) => error = Some("timed out".into()),
            Err(e) => error = Some(e.to_string()),
        }
    }
    (streams, error)
}

/// Downloads `GET /big?bytes=N`; the time from sending the request to the last byte.
pub async fn download(addr: SocketAddr, bytes: u64, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let head = format!("GET /big?bytes={bytes} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut resp = RawResponse::send(addr, &head, b"").await?;
    if resp.status != 200 {
        bail!("status {}", resp.status);
    }
    let mut got = 0u64;
    resp.each_read(started + timeout, |data| {
        got += data.len() as u64;
        true
    })
    .await?;
    let elapsed = started.elapsed();
    if got != bytes {
        bail!("received {got} of {bytes} bytes");
    }
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 response reader

enum Framing {
    Length(u64),
    Chunked(Chunked),
    Close,
}

/// A response whose body is read by hand, one `read()` at a time.
pub struct RawResponse {
    stream: TcpStream,
    pub status: u16,
    framing: Framing,
    /// Body bytes that came in with the head.
    early: Vec<u8>,
}

impl RawResponse {
    /// Sends a request (head and body as given) and reads the response head.
    pub async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> anyhow::Result<RawResponse> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut req = head.as_bytes().to_vec();
        req.extend_from_slice(body);
        stream.write_all(&req).await?;
        let mut buf = Vec::with_capacity(8192);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                bail!("response head too long");
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before the response head");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let mut framing = Framing::Close;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                framing = Framing::Length(value.parse().context("bad content-length")?);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked(Chunked::default());
                break;
            }
        }
        Ok(RawResponse {
            stream,
            status,
            framing,
            early: buf[end..].to_vec(),
        })
    }

    /// Calls `on_read` with the body bytes each `read()` delivered (the bytes that came
    /// with the head count as one read), until the body ends, `on_read` returns false, or
    /// the deadline passes (an error).
    pub async fn each_read(
        &mut self,
        deadline: Instant,
        mut on_read: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut decoded = Vec::new();
        let early = std::mem::take(&mut self.early);
        let mut first = Some(early);
        loop {
            let n = match first.take() {
                Some(early) if !early.is_empty() => {
                    buf[..early.len()].copy_from_slice(&early);
                    early.len()
                }
                _ => {
                    if self.finished() {
                        return Ok(());
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let n = tokio::time::timeout(left, self.stream.read(&mut buf))
                        .await
                        .map_err(|_| anyhow::anyhow!("timed out reading the body"))??;
                    if n == 0 {
                        if matches!(self.framing, Framing::Close) {
                            return Ok(());
                        }
                        bail!("connection closed before the body's end");
                    }
                    n
                }
            };
            let more = match &mut self.framing {
                Framing::Length(left) => {
                    let take = (*left).min(n as u64) as usize;
                    *left -= take as u64;
                    on_read(&buf[..take])
                }
                Framing::Close => on_read(&buf[..n]),
                Framing::Chunked(c) => {
                    decoded.clear();
                    c.feed(&buf[..n], &mut decoded);
                    on_read(&decoded)
                }
            };
            if !more || self.finished() {
                return Ok(());
            }
        }
    }

    fn finished(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(c) => c.state == ChunkState::Done,
            Framing::Close => false,
        }
    }
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd(u8),
    Trailer,
    Done,
}

/// A `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1).
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

impl Chunked {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let b = input[0];
                    input = &input[1..];
                    if b != b'\n' {
                        self.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches('\r');
                    if self.state == ChunkState::Trailer {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = (left as usize).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(2)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(n) => {
                    input = &input[1..];
                    self.state = if n == 1 {
                        ChunkState::Size
                    } else {
                        ChunkState::DataEnd(n - 1)
                    };
                }
                ChunkState::Done => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decodes_across_reads() {
        let wire = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut c = Chunked::default();
            let mut out = Vec::new();
            c.feed(&wire[..split], &mut out);
            c.feed(&wire[split..], &mut out);
            assert_eq!(out, b"hello world");
            assert!(c.state == ChunkState::Done);
        }
    }

    #[test]
    fn events_are_found_with_their_stamps() {
        let mut scan = EventScan::default();
        let mut got = Vec::new();
        scan.feed(b": open\n\ndata: {\"t\":42,\"seq\":0}\n", |s| got.push(s));
        scan.feed(b"\ndata: {\"t\":43}\n\n", |s| got.push(s));
        assert_eq!(got, vec![None, Some(42), Some(43)]);
    }
}
