//! The HTTP/1.1 fast path: what it forwards and records is what the general path does, and
//! what it does not take (a chunked upload, an upgrade) moves the connection to the general
//! path mid-way without losing a byte.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::*;

/// An upstream with a few kinds of answer, each in the body's first word.
async fn varied_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let path = req.uri().path().to_string();
        let method = req.method().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let echo = format!("{method} {path} {}", String::from_utf8_lossy(&body));
        match path.as_str() {
            "/events" => {
                let (mut tx, body) =
                    http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
                tokio::spawn(async move {
                    for event in [
                        "event: message\ndata: {\"n\":1}\n\n",
                        ": keep-alive\n\n",
                        "data: {\"n\":2}\n\n",
                    ] {
                        if tx.send_data(Bytes::from(event)).await.is_err() {
                            return;
                        }
                    }
                });
                event_stream(body)
            }
            "/empty" => Response::builder().status(204).body(full("")).unwrap(),
            "/missing" => Response::builder()
                .status(404)
                .header("content-type", "text/plain")
                .body(full("not here"))
                .unwrap(),
            _ => Response::builder()
                .header("content-type", "application/json")
                .header("x-dup", "1")
                .header("x-other", "o")
                .header("x-dup", "2")
                .body(full(echo))
                .unwrap(),
        }
    })
    .await
}

async fn run_sequence(up: &Upstream, extra: &[&str]) -> Capture {
    let proxy = TestProxy::to(&up.url()).args(extra).start();
    // One client connection, one request after another: both runs make the same exchanges.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let send = |req: Request<UpBody>| {
        let sender = sender.clone();
        async move {
            let mut req = req;
            // Origin-form, with a Host, as clients send them.
            req.headers_mut().insert(
                "host",
                hyper::header::HeaderValue::from_static("mcp.example"),
            );
            let mut sender = sender.lock().await;
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            (status, read_all(resp).await)
        }
    };
    let (status, body) = send(
        Request::post("/json?x=1")
            .header("content-type", "application/json")
            .header("x-dup", "a")
            .header("x-mid", "m")
            .header("x-dup", "b")
            .header("connection", "x-hop")
            .header("x-hop", "gone")
            .body(full(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"POST /json {"jsonrpc":"2.0","id":1,"method":"ping"}"#
    );
    let (status, body) = send(
        Request::get("/events")
            .header("accept", "text/event-stream")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.ends_with(b"data: {\"n\":2}\n\n"), "{body:?}");
    let (status, body) = send(Request::head("/json").body(full("")).unwrap()).await;
    assert_eq!((status.as_u16(), body.len()), (200, 0));
    let (status, _) = send(Request::get("/empty").body(full("")).unwrap()).await;
    assert_eq!(status, 204);
    let (status, body) = send(Request::get("/missing").body(full("")).unwrap()).await;
    assert_eq!((status.as_u16(), &body[..]), (404, &b"not here"[..]));
    drop(sender);
    proxy.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_record_the_same_events() {
    let up = varied_upstream().await;
    let fast = run_sequence(&up, &[]).await;
    let general = run_sequence(&up, &["--no-fast-path"]).await;
    // Each exchange's record names the path that served it.
    for (cap, path) in [(&fast, "fast_path"), (&general, "hyper")] {
        let ends = cap.kind("end");
        assert_eq!(ends.len(), 5);
        for end in ends {
            assert_eq!(end["served_by"], path, "{end:#}");
        }
    }
    let (fast, general) = (comparable_events(&fast), comparable_events(&general));
    assert_eq!(fast.len(), general.len(), "{fast:#?}\n{general:#?}");
    for (f, g) in fast.iter().zip(&general) {
        assert_eq!(f, g, "fast path (left) and general path (right) differ");
    }
    // Not vacuous: what the sequence made is on the record.
    let kinds: Vec<&str> = fast.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "end").count(), 5);
    assert_eq!(
        kinds.iter().filter(|k| **k == "sse").count(),
        3,
        "{kinds:?}"
    );
    let request = fast.iter().find(|e| e["kind"] == "request").unwrap();
    let names: Vec<&str> = request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    // Repeated names recorded together at their first place, as they arrived.
    let dup = names.iter().position(|n| *n == "x-dup").unwrap();
    assert_eq!(names[dup + 1], "x-dup", "{names:?}");
}

#[tokio::test]
async fn a_response_that_ends_at_close_reaches_a_kept_alive_client_whole() {
    let up =
        raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close").await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    for _ in 0..2 {
        let resp = client
            .request(Request::get(proxy.url("/c")).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(read_all(resp).await, "hello until close");
    }
    drop(client);
    let cap = proxy.finish();
    assert_eq!(
        cap.kind("conn_open").len(),
        1,
        "the client kept its connection"
    );
    for ex in cap.exchanges() {
        assert_eq!(cap.one(ex, "end")["outcome"], "complete");
        assert_eq!(cap.body_text(ex, "response"), "hello until close");
    }
    assert_eq!(cap.exchanges().len(), 2);
}

#[tokio::test]
async fn interim_answers_are_passed_over() {
    let up = raw_upstream(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/hints")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(read_all(resp).await, "ok");
    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    assert_eq!(cap.one(ex, "response")["status"], 200);
    assert_eq!(cap.body_text(ex, "response"), "ok");
}

/// An upstream that answers `<method> <path> <body>`.
async fn echo_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let head = format!("{} {} ", req.method(), req.uri().path());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("{head}{}", String::from_utf8_lossy(&body))))
    })
    .await
}

#[tokio::test]
async fn pipelined_requests_in_pieces_and_a_chunked_upload_mid_way_are_all_served_in_order() {
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    // Plain, then a chunked upload (not the fast path's), then plain again: three requests
    // sent at once, cut at places that split a head and a body.
    let requests: &[u8] = b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst\
POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n\
GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for piece in [&requests[..20], &requests[20..47], &requests[47..]] {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .expect("the proxy closes after the third answer")
        .unwrap();
    let one = answer.find("POST /one first").expect(&answer);
    let two = answer.find("POST /two second").expect(&answer);
    let three = answer.find("GET /three ").expect(&answer);
    assert!(one < two && two < three, "{answer}");
    let cap = proxy.finish();
    let exchanges = cap.exchanges();
    assert_eq!(exchanges.len(), 3);
    let bodies: Vec<String> = exchanges
        .iter()
        .map(|ex| cap.body_text(*ex, "request"))
        .collect();
    assert_eq!(bodies, ["first", "second", ""]);
    let conns: Vec<&Value> = exchanges
        .iter()
        .map(|ex| &cap.one(*ex, "request")["conn"])
        .collect();
    assert!(conns.iter().all(|c| *c == conns[0]), "{conns:?}");
    let close = cap.kind("conn_close");
    assert_eq!(close.len(), 1);
    assert_eq!(close[0]["exchanges"], 3);
    assert_eq!(close[0]["reason"], "closed", "{}", close[0]);
}

/// A raw upstream that serves each connection with `serve` (given the connection's number).
async fn scripted_upstream<F, Fut>(serve: F) -> Upstream
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    let task = tokio::spawn(async move {
        let mut number = 0;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(tcp, number));
            number += 1;
        }
    });
    Upstream::from_task(addr, task)
}

/// Reads one request (head and Content-Length body) from `buf` and the stream; `None` at
/// the end of the stream.
async fn read_request(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            let length: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 4096];
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
            buf.drain(..end + 4 + length);
            return Some(format!("{head}{body}"));
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_connection_field_naming_the_framing_cannot_smuggle_a_request() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let up = scripted_upstream(move |mut tcp, _| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(request) = read_request(&mut tcp, &mut buf).await {
                log.lock().unwrap().push(request);
                // Its own Connection field names its Content-Length: the proxy must still frame it.
                let answer =
                    b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok";
                if tcp.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let hidden = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut request = format!(
        "POST /first HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n",
        hidden.len()
    )
    .into_bytes();
    request.extend_from_slice(hidden);
    request.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(&request).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .expect("both answers, then the close")
        .unwrap();
    // Two answers, each framed for the client.
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert_eq!(
        answer
            .to_ascii_lowercase()
            .matches("content-length: 2")
            .count(),
        2,
        "{answer}"
    );
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<&str> = seen.iter().map(|r| r.lines().next().unwrap()).collect();
    assert_eq!(
        lines,
        ["POST /first HTTP/1.1", "GET /second HTTP/1.1"],
        "{seen:#?}"
    );
    assert!(
        seen[0].ends_with("GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
        "the body went as a body"
    );
}

#[tokio::test]
async fn a_post_the_upstream_dropped_unanswered_is_not_sent_again() {
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = posts.clone();
    let up = scripted_upstream(move |mut tcp, number| {
        let count = count.clone();
        async move {
            let mut buf = Vec::new();
            let mut served = 0;
            while let Some(request) = read_request(&mut tcp, &mut buf).await {
                if request.contains("tools/call") {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                served += 1;
                if number == 0 && served == 2 {
                    // Took the call, then went down without a word.
                    return;
                }
                if tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    let first = client
        .request(Request::post(proxy.url("/mcp")).body(full("ping")).unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    read_all(first).await;
    let second = client
        .request(
            Request::post(proxy.url("/mcp"))
                .body(full("tools/call"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(second.status(), 502, "answered in words, not sent again");
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(client);
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[1], "end");
    assert_eq!(end["outcome"], "upstream_error", "{end}");
}

#[tokio::test]
async fn a_client_leaving_while_the_upstream_thinks_or_streams_is_noticed_at_once() {
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let up = scripted_upstream(move |mut tcp, number| {
        let closed_tx = closed_tx.clone();
        async move {
            let mut buf = Vec::new();
            let request = read_request(&mut tcp, &mut buf).await;
            if request.is_some_and(|r| r.starts_with("GET /stream")) {
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                let _ = tcp.write_all(head).await;
                let _ = tcp.write_all(b"8\r\n: open\n\n\r\n").await;
            }
            // Then silence, until the proxy closes the connection.
            let mut rest = [0u8; 64];
            while matches!(tcp.read(&mut rest).await, Ok(n) if n > 0) {}
            let _ = closed_tx.send(number);
        }
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    for path in ["/think", "/stream"] {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        if path == "/stream" {
            let mut first = [0u8; 64];
            let n = tcp.read(&mut first).await.unwrap();
            assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        } else {
            until_recorded(&proxy, "request", 1).await;
        }
        drop(tcp);
        // The proxy lets go of the upstream connection too.
        tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
            .await
            .expect("the upstream connection was closed after the client left");
    }
    let cap = proxy.finish();
    let ends: Vec<&Value> = cap.kind("end");
    assert_eq!(ends.len(), 2);
    for end in &ends {
        assert_eq!(end["outcome"], "client_aborted", "{end}");
    }
    assert!(ends[0]["error"]
        .as_str()
        .unwrap()
        .contains("before the upstream answered"));
    assert!(
        ends[1]["error"].as_str().unwrap().contains("after"),
        "{}",
        ends[1]
    );
}
