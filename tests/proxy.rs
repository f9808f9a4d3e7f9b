//! The data path: byte-exact forwarding, streaming, outcomes, shutdown.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use mcptap::sse::SseParser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::util::*;

/// An upstream that echoes the request body and reports what it received in headers.
async fn echo_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let seen = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let names: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
        let (host, xff, proto, xfh) = (
            seen("host"),
            seen("x-forwarded-for"),
            seen("x-forwarded-proto"),
            seen("x-forwarded-host"),
        );
        let ct = seen("content-type");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::builder()
            .header("content-type", ct)
            .header("x-seen-host", host)
            .header("x-seen-xff", xff)
            .header("x-seen-proto", proto)
            .header("x-seen-xfh", xfh)
            .header("x-seen-names", names.join(","))
            .body(full(body))
            .unwrap()
    })
    .await
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"tést ✓","version":"1"}}}"#;

#[tokio::test]
async fn json_post_round_trips_byte_exact_and_is_recorded() {
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let req = Request::post(proxy.url("/mcp?x=1"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(full(INIT))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-seen-host"], up.addr.to_string());
    assert_eq!(resp.headers()["x-seen-xff"], "127.0.0.1");
    assert_eq!(resp.headers()["x-seen-proto"], "http");
    assert_eq!(resp.headers()["x-seen-xfh"], proxy.addr.to_string());
    assert_eq!(read_all(resp).await, INIT.as_bytes());

    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    let req = cap.one(ex, "request");
    assert_eq!(req["method"], "POST");
    assert_eq!(req["target"], "/mcp?x=1");
    assert_eq!(req["upstream"], format!("http://{}/mcp?x=1", up.addr));
    assert_eq!(cap.body_text(ex, "request"), INIT);
    assert_eq!(cap.body_text(ex, "response"), INIT);
    let end = cap.one(ex, "end");
    assert_eq!(end["outcome"], "complete");
    assert_eq!(end["status"], 200);
    assert_eq!(end["bytes"]["request"], INIT.len());
    assert_eq!(end["bytes"]["response"], INIT.len());
    assert!(
        end["timings"]["ttfb_us"].as_u64().unwrap() <= end["timings"]["total_us"].as_u64().unwrap()
    );
    // The exchange's events come in order: request, response, bodies, end.
    let kinds: Vec<&str> = cap
        .exchange(ex)
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"request"));
    assert_eq!(kinds.last(), Some(&"end"));
    assert_eq!(cap.last()["kind"], "session_end");
    assert_eq!(cap.last()["clean"], true);
}

#[tokio::test]
async fn binary_bodies_round_trip_and_are_recorded_as_their_length_and_hash() {
    // Bytes that are not text cannot be shown free of secrets: redacted, the capture holds
    // their length and a keyed hash; with --no-redact, the bytes in base64.
    for redact in [true, false] {
        let up = echo_upstream().await;
        let args: &[&str] = if redact { &[] } else { &["--no-redact"] };
        let proxy = TestProxy::to(&up.url()).args(args).start();
        let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let req = Request::post(proxy.url("/blob"))
            .header("content-type", "application/octet-stream")
            .body(full(payload.clone()))
            .unwrap();
        let resp = h1_client().request(req).await.unwrap();
        assert_eq!(
            read_all(resp).await,
            payload,
            "the client gets the bytes whole"
        );
        let cap = proxy.finish();
        let ex = cap.exchanges()[0];
        let bodies: Vec<serde_json::Value> = cap
            .exchange(ex)
            .into_iter()
            .filter(|e| e["kind"] == "body")
            .cloned()
            .collect();
        assert_eq!(bodies.len(), 2, "request and response");
        for body in &bodies {
            assert_eq!(body["len"], 5000);
            if redact {
                assert!(body["b64"].is_null(), "{body}");
                let why = body["omitted"].as_str().unwrap();
                assert!(
                    why.contains("not UTF-8") && why.contains("5000 bytes") && why.contains("fp="),
                    "{why}"
                );
            } else {
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(body["b64"].as_str().unwrap())
                    .unwrap();
                assert_eq!(decoded, payload);
            }
        }
        if redact {
            // One body, one hash: the request and the echoed response say so.
            let fp = |b: &serde_json::Value| {
                let why = b["omitted"].as_str().unwrap();
                why[why.find("fp=").unwrap()..][..11].to_string()
            };
            assert_eq!(fp(&bodies[0]), fp(&bodies[1]));
        }
    }
}

#[tokio::test]
async fn chunked_request_and_response_stream_frame_by_frame() {
    // The upstream answers with its own frames, one per request frame, as they arrive.
    let up = Upstream::start(|req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        tokio::spawn(async move {
            let mut incoming = req.into_body();
            while let Some(frame) = incoming.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    let mut echoed = b"got:".to_vec();
                    echoed.extend_from_slice(&data);
                    if tx.send_data(Bytes::from(echoed)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Response::builder()
            .header("content-type", "text/plain")
            .body(body.boxed())
            .unwrap()
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let req = Request::post(proxy.url("/upload"))
        .header("content-type", "text/plain")
        .body(body.boxed())
        .unwrap();
    let client = h1_client();
    let pending = tokio::spawn(async move { client.request(req).await.unwrap() });
    tx.send_data(Bytes::from_static(b"one")).await.unwrap();
    let resp = pending.await.unwrap();
    assert!(
        resp.headers().get("content-length").is_none(),
        "chunked, not buffered"
    );
    let mut body = resp.into_body();
    // Each request frame comes back before the next one is sent: nothing waits for the end.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "got:one");
    tx.send_data(Bytes::from_static(b"two")).await.unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "got:two");
    drop(tx);
    assert!(body.frame().await.is_none());

    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    assert_eq!(cap.body_text(ex, "request"), "onetwo");
    assert_eq!(cap.body_text(ex, "response"), "got:onegot:two");
    let req_body = cap
        .exchange(ex)
        .into_iter()
        .find(|e| e["kind"] == "body" && e["dir"] == "request")
        .unwrap()
        .clone();
    assert_eq!(
        req_body["frames"].as_array().unwrap().len(),
        2,
        "each frame's arrival is kept"
    );
    assert_eq!(cap.one(ex, "end")["outcome"], "complete");
}

// Multi-threaded: the client's connection task must answer the proxy's GOAWAY while
// `finish` blocks this thread, or the proxy waits out its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_recorded() {
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h2_client();
    for i in 0..3 {
        let body = format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/list\"}}");
        let req = Request::post(proxy.url("/mcp"))
            .header("content-type", "application/json")
            .body(full(body.clone()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.headers()["x-seen-host"], up.addr.to_string());
        assert_eq!(read_all(resp).await, body.as_bytes());
    }
    let cap = proxy.finish();
    let requests = cap.kind("request");
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r["version"] == "HTTP/2"));
    // One client connection carried all three exchanges.
    assert_eq!(cap.kind("conn_open").len(), 1);
    for ex in cap.exchanges() {
        assert_eq!(cap.one(ex, "end")["outcome"], "complete");
    }
}

/// An SSE upstream that writes `count` events `gap` apart, noting when each was written;
/// `aborted` fires when the stream can no longer be written (the proxy dropped it).
fn sse_upstream(
    count: usize,
    gap: Duration,
    written: Arc<Mutex<Vec<Instant>>>,
    aborted: Option<oneshot::Sender<()>>,
    fail_after: Option<usize>,
) -> impl Fn(
    Request<hyper::body::Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<UpBody>> + Send>>
       + Send
       + Sync
       + 'static {
    let aborted = Arc::new(Mutex::new(aborted));
    move |_req| {
        let written = written.clone();
        let aborted = aborted.clone();
        Box::pin(async move {
            let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
            tokio::spawn(async move {
                for i in 0..count {
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    if fail_after == Some(i) {
                        tx.abort(std::io::Error::other("upstream fixture failed on purpose"));
                        return;
                    }
                    let event = format!(
                        "id: {i}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"n\":{i}}}}}\n\n"
                    );
                    written.lock().unwrap().push(Instant::now());
                    if tx.send_data(Bytes::from(event)).await.is_err() {
                        if let Some(a) = aborted.lock().unwrap().take() {
                            let _ = a.send(());
                        }
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(body.boxed())
                .unwrap()
        })
    }
}

/// Reads SSE events from a response body until `n` have arrived; returns their arrival times.
async fn read_events(
    body: &mut hyper::body::Incoming,
    n: usize,
) -> (Vec<mcptap::sse::SseEvent>, Vec<Instant>, usize) {
    let mut parser = SseParser::new();
    let (mut events, mut times, mut bytes) = (Vec::new(), Vec::new(), 0);
    while events.len() < n {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        bytes += data.len();
        for e in parser.push(&data) {
            events.push(e);
            times.push(Instant::now());
        }
    }
    (events, times, bytes)
}

#[tokio::test]
async fn sse_events_reach_the_client_before_the_next_is_written() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream::start(sse_upstream(
        5,
        Duration::from_millis(200),
        written.clone(),
        None,
        None,
    ))
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    for client in [h1_client(), h2_client()] {
        written.lock().unwrap().clear();
        let req = Request::get(proxy.url("/mcp"))
            .header("accept", "text/event-stream")
            .body(full(""))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let mut body = resp.into_body();
        let (events, arrived, _) = read_events(&mut body, 5).await;
        assert_eq!(events.len(), 5);
        let written = written.lock().unwrap().clone();
        for i in 0..4 {
            assert!(
                arrived[i] < written[i + 1],
                "event {i} arrived {:?} after event {} was written: the proxy buffered",
                arrived[i] - written[i + 1],
                i + 1
            );
        }
        // Then the stream ends (an empty last DATA frame may come first over HTTP/2).
        loop {
            match body.frame().await {
                None => break,
                Some(frame) => assert!(frame.unwrap().into_data().unwrap().is_empty()),
            }
        }
    }
    let cap = proxy.finish();
    for ex in cap.exchanges() {
        let sse: Vec<_> = cap
            .exchange(ex)
            .into_iter()
            .filter(|e| e["kind"] == "sse")
            .collect();
        assert_eq!(sse.len(), 5);
        let mut last_t = 0;
        for (i, e) in sse.iter().enumerate() {
            assert_eq!(e["id"], i.to_string());
            assert_eq!(e["event"], "message");
            assert_eq!(e["dispatched"], true);
            let data: serde_json::Value =
                serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
            assert_eq!(data["params"]["n"], i);
            let t = e["t"].as_u64().unwrap();
            if i > 0 {
                assert!(
                    t >= last_t + 150_000,
                    "events are stamped as they arrived ({t} after {last_t})"
                );
            }
            last_t = t;
        }
        assert_eq!(cap.one(ex, "end")["outcome"], "complete");
        // The raw stream is on the record too, whole.
        let raw = cap.body_text(ex, "response");
        assert_eq!(raw.matches("\n\n").count(), 5);
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_recorded_as_client_aborted() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let (aborted_tx, aborted_rx) = oneshot::channel();
    let up = Upstream::start(sse_upstream(
        1000,
        Duration::from_millis(20),
        written,
        Some(aborted_tx),
        None,
    ))
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let req = Request::get(proxy.url("/mcp")).body(full("")).unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let (events, _, received) = read_events(&mut body, 3).await;
    assert_eq!(events.len(), 3);
    drop(body);
    // The upstream learns the stream is gone once the proxy drops it.
    tokio::time::timeout(Duration::from_secs(10), aborted_rx)
        .await
        .expect("the proxy never let go of the upstream stream")
        .unwrap();
    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    let end = cap.one(ex, "end");
    assert_eq!(end["outcome"], "client_aborted", "{end}");
    assert!(end["error"].as_str().unwrap().contains("client went away"));
    assert!(end["bytes"]["response"].as_u64().unwrap() >= received as u64);
    assert!(
        cap.exchange(ex)
            .iter()
            .filter(|e| e["kind"] == "sse")
            .count()
            >= 3
    );
}

#[tokio::test]
async fn an_upstream_failing_mid_stream_is_recorded_as_upstream_aborted() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream::start(sse_upstream(
        10,
        Duration::from_millis(10),
        written,
        None,
        Some(3),
    ))
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let req = Request::get(proxy.url("/mcp")).body(full("")).unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let result = resp.into_body().collect().await;
    assert!(
        result.is_err(),
        "the client sees the stream break, not a clean end"
    );
    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    let end = cap.one(ex, "end");
    assert_eq!(end["outcome"], "upstream_aborted", "{end}");
    assert!(end["error"].as_str().unwrap().contains("upstream"));
    assert_eq!(
        cap.exchange(ex)
            .iter()
            .filter(|e| e["kind"] == "sse")
            .count(),
        3
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gets_a_502_with_the_cause() {
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = TestProxy::to(&format!("http://{dead}")).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = String::from_utf8(read_all(resp).await.to_vec()).unwrap();
    assert!(text.contains("refused"), "{text}");
    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    assert_eq!(cap.one(ex, "response")["producer"], "proxy");
    let end = cap.one(ex, "end");
    assert_eq!(end["outcome"], "upstream_error");
    assert!(end["error"].as_str().unwrap().contains("refused"), "{end}");
    assert_eq!(cap.body_text(ex, "response"), text);
}

#[tokio::test]
async fn a_large_response_streams_without_the_proxy_holding_it() {
    const TOTAL: usize = 200 << 20;
    const FRAME: usize = 64 << 10;
    let up = Upstream::start(|_req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(2);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; FRAME]);
            for _ in 0..TOTAL / FRAME {
                if tx.send_data(chunk.clone()).await.is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", TOTAL.to_string())
            .body(body.boxed())
            .unwrap()
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    // Warm up the process (runtime, pools) before taking the baseline.
    let warm = h1_client()
        .request(Request::get(proxy.url("/warm")).body(full("")).unwrap())
        .await
        .unwrap();
    let _ = warm.into_body().frame().await;
    let baseline = proxy.rss_kib();
    let resp = h1_client()
        .request(Request::get(proxy.url("/big")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
        }
    }
    assert_eq!(received, TOTAL);
    let growth_mib = (proxy.peak_rss_kib().saturating_sub(baseline)) / 1024;
    eprintln!(
        "proxy RSS: {} MiB before, grew {growth_mib} MiB streaming 200 MiB",
        baseline / 1024
    );
    assert!(
        growth_mib < 64,
        "the proxy grew by {growth_mib} MiB while streaming 200 MiB"
    );
    let cap = proxy.finish();
    let ex = cap.exchanges()[1];
    let end = cap.one(ex, "end");
    assert_eq!(end["bytes"]["response"], TOTAL);
    assert_eq!(end["truncated"], serde_json::json!(["response"]));
    let body = cap
        .exchange(ex)
        .into_iter()
        .find(|e| e["kind"] == "body")
        .unwrap()
        .clone();
    assert_eq!(body["truncated"], true);
    assert_eq!(body["len"], TOTAL);
    assert_eq!(
        body["text"].as_str().unwrap().len(),
        10 << 20,
        "recorded up to --max-body"
    );
}

#[tokio::test]
async fn sigterm_during_an_open_stream_closes_the_capture_cleanly() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream::start(sse_upstream(
        100_000,
        Duration::from_millis(50),
        written,
        None,
        None,
    ))
    .await;
    let mut proxy = TestProxy::to(&up.url()).args(&["--grace", "0.5"]).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (events, _, _) = read_events(&mut body, 2).await;
    assert_eq!(events.len(), 2);
    let started = Instant::now();
    assert_eq!(proxy.stop(), 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The client's stream ends once the proxy is gone.
    while let Some(Ok(_)) = body.frame().await {}
    let cap = Capture::load(&proxy.capture);
    let last = cap.last();
    assert_eq!(last["kind"], "session_end");
    assert_eq!(last["clean"], false, "an exchange was cut");
    let ex = cap.exchanges()[0];
    let end = cap.one(ex, "end");
    assert_eq!(end["outcome"], "proxy_shutdown");
    assert!(
        cap.exchange(ex)
            .iter()
            .filter(|e| e["kind"] == "sse")
            .count()
            >= 2
    );
    assert_eq!(cap.kind("conn_close")[0]["reason"], "shutdown");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_shutdown() {
    let up = echo_upstream().await;
    let mut proxy = TestProxy::to(&up.url()).args(&["--grace", "30"]).start();
    let client = h1_client();
    let resp = client
        .request(Request::get(proxy.url("/")).body(full("")).unwrap())
        .await
        .unwrap();
    read_all(resp).await;
    let started = Instant::now();
    assert_eq!(proxy.stop(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an idle connection held the shutdown"
    );
    let cap = Capture::load(&proxy.capture);
    assert_eq!(cap.last()["clean"], true);
    drop(client);
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /h HTTP/1.1\r\nHost: public.example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret-route\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.1.2.3\r\nX-Kept: yes\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let lower = answer.to_ascii_lowercase();
    let names = lower
        .lines()
        .find_map(|l| l.strip_prefix("x-seen-names: "))
        .unwrap()
        .to_string();
    assert!(names.contains("x-kept"), "{names}");
    for gone in ["x-hop", "keep-alive", "connection"] {
        assert!(
            !names.split(',').any(|n| n == gone),
            "{gone} reached the upstream: {names}"
        );
    }
    assert!(lower.contains("x-seen-xff: 10.1.2.3, 127.0.0.1"));
    assert!(lower.contains("x-seen-xfh: public.example"));
    assert!(lower.contains(&format!("x-seen-host: {}", up.addr)));
    drop(proxy);
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).arg("--preserve-host").start();
    let req = Request::get(proxy.url("/"))
        .header("host", "mcp.example.com")
        .body(full(""))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    assert_eq!(resp.headers()["x-seen-host"], "mcp.example.com");

    // An HTTP/1.0 client may send no Host at all: the upstream still gets one, its own.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer
            .to_lowercase()
            .contains(&format!("x-seen-host: {}\r\n", up.addr)),
        "{answer}"
    );
}

#[tokio::test]
async fn neither_absolute_targets_nor_connect_reach_another_host() {
    let other_hits = Arc::new(Mutex::new(0));
    let hits = other_hits.clone();
    let other = Upstream::start(move |_req| {
        *hits.lock().unwrap() += 1;
        async { Response::new(full("other")) }
    })
    .await;
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let raw = |request: String| async move {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let absolute = raw(format!(
        "GET http://{}/steal HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        other.addr, other.addr
    ))
    .await;
    assert!(
        absolute
            .to_ascii_lowercase()
            .contains(&format!("x-seen-host: {}", up.addr)),
        "{absolute}"
    );
    let connect = raw(format!(
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        other.addr, other.addr
    ))
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let host_header = raw(format!(
        "GET /x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        other.addr
    ))
    .await;
    assert!(host_header.starts_with("HTTP/1.1 200"));
    assert_eq!(
        *other_hits.lock().unwrap(),
        0,
        "a request reached a host that is not the upstream"
    );
}

#[tokio::test]
async fn upgrades_are_tunnelled_and_counted() {
    let up = Upstream::start(|mut req| async move {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let mut buf = [0u8; 4];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(b"pong!").await.unwrap();
            io.shutdown().await.unwrap();
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo-test")
            .body(full(""))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo-test\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo-test"));
    stream.write_all(b"ping").await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"pong!");
    drop(stream);
    // Shutdown waits for open tunnels, so the upgrade is on the record.
    let cap = proxy.finish();
    let up_ev = cap.kind("upgrade");
    assert_eq!(up_ev.len(), 1, "{:?}", cap.events);
    assert_eq!(up_ev[0]["protocol"], "echo-test");
    assert_eq!(up_ev[0]["client_to_upstream"], 4);
    assert_eq!(up_ev[0]["upstream_to_client"], 5);
}

#[tokio::test]
async fn captures_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let up = echo_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let mode = std::fs::metadata(&proxy.capture)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let path = proxy.capture.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args([
            "proxy",
            "--upstream",
            &up.url(),
            "--listen",
            "127.0.0.1:0",
            "--capture",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert!(!err.contains("panicked"));
    drop(proxy);
    let _ = Full::<Bytes>::new(Bytes::new());
}

/// An event-stream upstream that sends `total` bytes of 16 KiB events as fast as the proxy
/// takes them (event streams are written to the capture as they arrive).
async fn bulk_upstream(total: usize) -> Upstream {
    Upstream::start(move |_req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(2);
        tokio::spawn(async move {
            let mut event = b"data: ".to_vec();
            event.resize((16 << 10) - 2, b'y');
            event.extend_from_slice(b"\n\n");
            let chunk = Bytes::from(event);
            for _ in 0..total / chunk.len() {
                if tx.send_data(chunk.clone()).await.is_err() {
                    return;
                }
            }
        });
        event_stream(body)
    })
    .await
}

/// A FIFO as the capture file, read by a thread that starts reading only when told to:
/// until then the capture writer is stuck, as on a stalled disk.
struct StalledCapture {
    path: std::path::PathBuf,
    go: Option<std::sync::mpsc::Sender<()>>,
    reader: Option<std::thread::JoinHandle<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl StalledCapture {
    fn new() -> StalledCapture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success());
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let fifo = path.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut file = std::fs::File::open(&fifo).unwrap();
            let _ = wait.recv();
            let mut all = Vec::new();
            file.read_to_end(&mut all).unwrap();
            all
        });
        StalledCapture {
            path,
            go: Some(go),
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn release(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    fn read(mut self) -> Capture {
        self.release();
        Capture::parse(self.reader.take().unwrap().join().unwrap())
    }
}

#[tokio::test]
async fn on_full_drop_keeps_traffic_moving_and_counts_what_it_dropped() {
    const TOTAL: usize = 8 << 20;
    let up = bulk_upstream(TOTAL).await;
    let stalled = StalledCapture::new();
    let mut proxy = TestProxy::to(&up.url())
        .capture_to(&stalled.path)
        .args(&["--on-full", "drop", "--queue-bytes", "64KiB"])
        .start();
    // The writer cannot write, yet the client gets everything.
    let resp = h1_client()
        .request(Request::get(proxy.url("/bulk")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(read_all(resp).await.len(), TOTAL);
    proxy.signal("TERM");
    let cap = stalled.read();
    assert_eq!(proxy.wait(), 0);
    let notes = cap.kind("note");
    let dropped: u64 = notes
        .iter()
        .filter(|n| n["code"] == "events_dropped")
        .map(|n| n["count"].as_u64().unwrap())
        .sum();
    assert!(dropped > 0, "no drop was recorded: {notes:?}");
    let end = cap.last();
    assert_eq!(end["kind"], "session_end");
    assert_eq!(end["events_dropped"], dropped);
    assert_eq!(end["clean"], false);
}

#[tokio::test]
async fn by_default_a_stalled_capture_slows_the_traffic_and_loses_nothing() {
    const TOTAL: usize = 4 << 20;
    let up = bulk_upstream(TOTAL).await;
    let mut stalled = StalledCapture::new();
    let mut proxy = TestProxy::to(&up.url())
        .capture_to(&stalled.path)
        .args(&["--queue-bytes", "64KiB", "--max-body", "16MiB"])
        .start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/bulk")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut received = 0;
    // The transfer stops short of the end while the capture cannot be written...
    loop {
        match tokio::time::timeout(Duration::from_millis(500), body.frame()).await {
            Ok(Some(frame)) => received += frame.unwrap().into_data().unwrap().len(),
            Ok(None) => panic!("the whole body went through while the capture was stalled"),
            Err(_) => break,
        }
    }
    assert!(received < TOTAL);
    // ...and completes once it can.
    stalled.release();
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().unwrap().len();
    }
    assert_eq!(received, TOTAL);
    proxy.signal("TERM");
    let cap = stalled.read();
    assert_eq!(proxy.wait(), 0);
    let ex = cap.exchanges()[0];
    assert_eq!(
        cap.body_text(ex, "response").len(),
        TOTAL,
        "every byte is on the record"
    );
    assert_eq!(cap.last()["events_dropped"], 0);
    assert_eq!(cap.last()["clean"], true);
}

#[tokio::test]
async fn the_capture_is_live_while_a_stream_is_open() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream::start(sse_upstream(
        100_000,
        Duration::from_millis(50),
        written,
        None,
        None,
    ))
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (events, _, _) = read_events(&mut body, 1).await;
    assert_eq!(events.len(), 1);
    // `tail -f` sees the stream's events while it is still open (bounded wait, no sleep-and-hope).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&proxy.capture).unwrap();
        if text.lines().any(|l| l.contains("\"kind\":\"sse\"")) {
            // Only whole lines are ever in the file.
            assert!(text.ends_with('\n'));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sse line in the live capture:\n{text}"
        );
        tokio::task::yield_now().await;
    }
    drop(body);
}

#[tokio::test]
async fn the_terminal_shows_one_line_per_exchange_with_its_rpc_method() {
    let up = echo_upstream().await;
    let mut proxy = TestProxy::to(&up.url()).live().start();
    let req = Request::post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .body(full(INIT))
        .unwrap();
    read_all(h1_client().request(req).await.unwrap()).await;
    let stdout = proxy.stdout.take().unwrap();
    let _cap = proxy.finish();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains("POST /mcp 200 initialize"), "{line}");
    assert!(line.contains(&format!("↑{}B", INIT.len())), "{line}");
}

#[tokio::test]
async fn with_several_routes_each_terminal_line_names_its_upstream() {
    let mcp = named_upstream("mcp").await;
    let auth = named_upstream("auth").await;
    let mut proxy = TestProxy::to(&mcp.url())
        .args(&["--route", &format!("127.0.0.1:0={}", auth.url())])
        .live()
        .start();
    let client = h1_client();
    for (route, path) in [(0, "/mcp"), (1, "/token")] {
        let req = Request::get(proxy.route_url(route, path))
            .body(full(""))
            .unwrap();
        read_all(client.request(req).await.unwrap()).await;
    }
    let stdout = proxy.stdout.take().unwrap();
    let _cap = proxy.finish();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(&format!("[{}] GET /mcp 200", mcp.addr)),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!("[{}] GET /token 200", auth.addr)),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_a_504_after_the_timeout() {
    let up = Upstream::start(|_req| async move {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let proxy = TestProxy::to(&up.url())
        .args(&["--upstream-timeout", "0.3"])
        .start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[0], "end");
    assert_eq!(end["outcome"], "timeout");
    assert!(end["error"]
        .as_str()
        .unwrap()
        .contains("--upstream-timeout"));
}

#[tokio::test]
async fn a_client_leaving_mid_upload_is_recorded_as_client_aborted() {
    let (got_error_tx, got_error_rx) = oneshot::channel();
    let got_error = Arc::new(Mutex::new(Some(got_error_tx)));
    let up = Upstream::start(move |req| {
        let got_error = got_error.clone();
        async move {
            if req.into_body().collect().await.is_err() {
                if let Some(tx) = got_error.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
            Response::new(full("read it all"))
        }
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    // Give the proxy the first chunk, then vanish mid-body.
    let mut peek = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut peek)).await;
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), got_error_rx)
        .await
        .expect("the upstream never saw the upload break")
        .unwrap();
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[0], "end");
    assert_eq!(end["outcome"], "client_aborted", "{end}");
    assert!(
        end["error"].as_str().unwrap().contains("request body"),
        "{end}"
    );
    assert_eq!(end["bytes"]["request"], 5);
}

/// An upstream that answers every request with its own name, so a test can tell which one a
/// request reached.
async fn named_upstream(name: &'static str) -> Upstream {
    Upstream::start(move |req| async move {
        let path = req.uri().path().to_string();
        Response::builder()
            .header("content-type", "text/plain")
            .body(full(format!("{name} {path}")))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn several_routes_forward_each_to_its_own_upstream_into_one_capture() {
    let mcp = named_upstream("mcp").await;
    let auth = named_upstream("auth").await;
    let proxy = TestProxy::to(&mcp.url())
        .args(&["--route", &format!("127.0.0.1:0={}", auth.url())])
        .start();
    assert_eq!(proxy.addrs.len(), 2, "one listener per route");
    assert_ne!(proxy.addrs[0], proxy.addrs[1]);
    let client = h1_client();
    for (route, path, want) in [
        (0, "/mcp", "mcp /mcp"),
        (1, "/token", "auth /token"),
        (
            0,
            "/.well-known/oauth-protected-resource",
            "mcp /.well-known/oauth-protected-resource",
        ),
        (1, "/authorize", "auth /authorize"),
    ] {
        let resp = client
            .request(
                Request::get(proxy.route_url(route, path))
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            read_all(resp).await,
            want.as_bytes(),
            "route {route} {path}"
        );
    }
    // A Host naming the other route's listener changes nothing: the listener picks the upstream.
    let resp = client
        .request(
            Request::get(proxy.route_url(1, "/token"))
                .header("host", proxy.addrs[0].to_string())
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(read_all(resp).await, "auth /token".as_bytes());

    let listens: Vec<String> = proxy.addrs.iter().map(|a| a.to_string()).collect();
    let cap = proxy.finish();
    let session = &cap.events[0];
    let routes: Vec<(String, String)> = session["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["listen"].as_str().unwrap().to_string(),
                r["upstream"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            (listens[0].clone(), format!("{}/", mcp.url())),
            (listens[1].clone(), format!("{}/", auth.url())),
        ]
    );
    // Every exchange carries its route, and its connection the same route and listener.
    let mut seen = Vec::new();
    for ex in cap.exchanges() {
        let req = cap.one(ex, "request");
        let route = req["route"].as_u64().expect("request.route") as usize;
        let conn = cap
            .kind("conn_open")
            .into_iter()
            .find(|c| c["conn"] == req["conn"])
            .expect("the request's conn_open");
        assert_eq!(conn["route"], route);
        assert_eq!(conn["listener"], listens[route]);
        let upstream = if route == 0 { &mcp } else { &auth };
        assert!(
            req["upstream"]
                .as_str()
                .unwrap()
                .starts_with(&upstream.url()),
            "{req}"
        );
        seen.push((route, req["target"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        seen,
        vec![
            (0, "/mcp".to_string()),
            (1, "/token".to_string()),
            (0, "/.well-known/oauth-protected-resource".to_string()),
            (1, "/authorize".to_string()),
            (1, "/token".to_string()),
        ]
    );
}

#[test]
fn a_malformed_route_is_a_one_line_usage_error() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
            .arg("proxy")
            .args(args)
            .args(["--capture", "/dev/null"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, says) in [
        (&["--route", "127.0.0.1:0"][..], "LISTEN=UPSTREAM"),
        (&["--route", "127.0.0.1:0=ftp://x"][..], "http://"),
        (
            &["--route", "nowhere=http://127.0.0.1:9"][..],
            "not an address",
        ),
        (
            &[
                "--route",
                "127.0.0.1:9=http://127.0.0.1:1",
                "--route",
                "127.0.0.1:9=http://127.0.0.1:2",
            ][..],
            "two routes listen on 127.0.0.1:9",
        ),
        (&["--listen", "127.0.0.1:0"][..], "--upstream"),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.lines().next().unwrap_or("").contains("error"),
            "the first line says what is wrong: {err}"
        );
    }
}

/// An MCP-like upstream that names its own origin (`SELF`) and the authorization server's
/// (`AS`) everywhere a real one does: metadata JSON (with `\/` escapes too), redirects, Link,
/// WWW-Authenticate, an event stream; `/echo` answers with what it received.
async fn origin_naming_upstream(
    me: Arc<std::sync::OnceLock<String>>,
    auth: String,
    second_event: Arc<tokio::sync::Notify>,
) -> Upstream {
    Upstream::start(move |req| {
        let me = me.get().unwrap().clone();
        let auth = auth.clone();
        let second_event = second_event.clone();
        async move {
            let json = |body: String| {
                Response::builder()
                    .header("content-type", "application/json")
                    .header("content-length", body.len())
                    .header("content-md5", "stale")
                    .body(full(body))
                    .unwrap()
            };
            match req.uri().path() {
                "/.well-known/oauth-protected-resource/mcp" => json(format!(
                    r#"{{"resource":"{me}/mcp","authorization_servers":["{auth}"],"escaped":"{}\/x","longer":"{me}1/x","other":"{me}.evil.example/"}}"#,
                    me.replace('/', "\\/")
                )),
                "/mcp" => Response::builder()
                    .status(401)
                    .header(
                        "www-authenticate",
                        format!(r#"Bearer resource_metadata="{me}/.well-known/oauth-protected-resource/mcp""#),
                    )
                    .header("link", format!("<{me}/docs>; rel=help"))
                    .header("location", format!("{me}/elsewhere"))
                    .header("x-not-rewritten", me.clone())
                    .body(full(""))
                    .unwrap(),
                "/authorize" => Response::builder()
                    .status(302)
                    .header(
                        "location",
                        format!(
                            "{auth}/login?next={}",
                            form_urlencoded::byte_serialize(format!("{me}/callback").as_bytes())
                                .collect::<String>()
                        ),
                    )
                    .body(full(""))
                    .unwrap(),
                "/events" => {
                    let (mut tx, body) =
                        http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
                    tokio::spawn(async move {
                        let one = format!("event: endpoint\ndata: {me}/messages?s=1\n\n");
                        let _ = tx.send_data(Bytes::from(one)).await;
                        // The second event waits until the client has the first: streaming.
                        second_event.notified().await;
                        let two = format!(
                            "id: {me}\ndata: {{\"uri\":\"{me}/r\"}}\r\ndata: {{\"uri\":\"{me}/s\"}}\r\n\r\n"
                        );
                        let _ = tx.send_data(Bytes::from(two)).await;
                    });
                    event_stream(body)
                }
                "/big" => json(format!(
                    r#"{{"resource":"{me}/mcp","pad":"{}"}}"#,
                    "x".repeat(5 << 20)
                )),
                "/gzip" => Response::builder()
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(full(gzip(format!(r#"{{"resource":"{me}/mcp"}}"#).as_bytes())))
                    .unwrap(),
                _ => {
                    let target = req.uri().to_string();
                    let origin = req
                        .headers()
                        .get("origin")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let ae = req
                        .headers()
                        .get("accept-encoding")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let length = req
                        .headers()
                        .get("content-length")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    Response::builder()
                        .header("content-type", "text/plain")
                        .header("x-seen-target", target)
                        .header("x-seen-origin", origin)
                        .header("x-seen-accept-encoding", ae)
                        .header("x-seen-length", length)
                        .body(full(body))
                        .unwrap()
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn rewrite_origins_keeps_the_client_at_the_proxy_and_notes_every_rewrite() {
    let me = Arc::new(std::sync::OnceLock::new());
    let auth = named_upstream("auth").await;
    let second_event = Arc::new(tokio::sync::Notify::new());
    let up = origin_naming_upstream(me.clone(), auth.url(), second_event.clone()).await;
    me.set(up.url()).unwrap();
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--route",
            &format!("127.0.0.1:0={}", auth.url()),
            "--rewrite-origins",
        ])
        .start();
    let public = proxy.route_url(0, "");
    let public_auth = proxy.route_url(1, "");
    let client = h1_client();
    let get = |path: &str| Request::get(proxy.url(path)).body(full("")).unwrap();

    // Metadata: every whole upstream origin is the proxy's, in the spelling it had; longer
    // hosts and ports are other origins; Content-Length fits the new body.
    let resp = client
        .request(get("/.well-known/oauth-protected-resource/mcp"))
        .await
        .unwrap();
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        resp.headers().get("content-md5").is_none(),
        "a digest of the old bytes is dropped"
    );
    let prm = read_all(resp).await;
    assert_eq!(length, prm.len());
    let prm: serde_json::Value = serde_json::from_slice(&prm).unwrap();
    assert_eq!(prm["resource"], format!("{public}/mcp"));
    assert_eq!(prm["authorization_servers"][0], public_auth);
    assert_eq!(prm["escaped"], format!("{public}/x"));
    assert_eq!(prm["longer"], format!("{}1/x", up.url()));
    assert_eq!(prm["other"], format!("{}.evil.example/", up.url()));

    // Headers the client follows.
    let resp = client.request(get("/mcp")).await.unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        format!(r#"Bearer resource_metadata="{public}/.well-known/oauth-protected-resource/mcp""#)
            .as_str()
    );
    assert_eq!(
        resp.headers()["link"],
        format!("<{public}/docs>; rel=help").as_str()
    );
    assert_eq!(
        resp.headers()["location"],
        format!("{public}/elsewhere").as_str()
    );
    assert_eq!(resp.headers()["x-not-rewritten"], up.url().as_str());
    let resp = client.request(get("/authorize")).await.unwrap();
    let encoded = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    assert_eq!(
        resp.headers()["location"],
        format!(
            "{public_auth}/login?next={}",
            encoded(&format!("{public}/callback"))
        )
        .as_str()
    );

    // Requests: the proxy's origins become the upstream's in the query, the form body and
    // Origin; the upstream is asked for an uncompressed body it can be sent back rewritten.
    let form = format!(
        "resource={}&redirect_uri={}",
        encoded(&format!("{public}/mcp")),
        encoded(&format!("{public_auth}/cb"))
    );
    let resp = client
        .request(
            Request::post(proxy.url(&format!(
                "/token?resource={}",
                encoded(&format!("{public}/mcp"))
            )))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", public.as_str())
            .header("accept-encoding", "gzip")
            .body(full(form.clone()))
            .unwrap(),
        )
        .await
        .unwrap();
    let seen_target = resp.headers()["x-seen-target"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        seen_target,
        format!("/token?resource={}", encoded(&format!("{}/mcp", up.url())))
    );
    assert_eq!(resp.headers()["x-seen-origin"], up.url().as_str());
    assert_eq!(resp.headers()["x-seen-accept-encoding"], "identity");
    let upstream_form = format!(
        "resource={}&redirect_uri={}",
        encoded(&format!("{}/mcp", up.url())),
        encoded(&format!("{}/cb", auth.url()))
    );
    assert_eq!(
        resp.headers()["x-seen-length"],
        upstream_form.len().to_string().as_str()
    );
    assert_eq!(read_all(resp).await, upstream_form.as_bytes());

    // An event stream is rewritten line by line and still streams.
    let resp = client.request(get("/events")).await.unwrap();
    let mut body = resp.into_body();
    let (first, _, _) = read_events(&mut body, 1).await;
    assert_eq!(
        first[0].data.as_deref(),
        Some(format!("{public}/messages?s=1").as_str())
    );
    second_event.notify_one();
    let (second, _, _) = read_events(&mut body, 1).await;
    assert_eq!(
        second[0].data.as_deref(),
        Some(format!("{{\"uri\":\"{public}/r\"}}\n{{\"uri\":\"{public}/s\"}}").as_str())
    );
    assert_eq!(
        second[0].id.as_deref(),
        Some(up.url().as_str()),
        "only data lines"
    );
    drop(body);

    // Too large to hold, or compressed: forwarded as it is.
    let big = read_all(client.request(get("/big")).await.unwrap()).await;
    assert!(big.starts_with(format!(r#"{{"resource":"{}/mcp""#, up.url()).as_bytes()));
    let gz = read_all(client.request(get("/gzip")).await.unwrap()).await;
    assert_eq!(
        gz,
        gzip(format!(r#"{{"resource":"{}/mcp"}}"#, up.url()).as_bytes()),
        "a compressed body goes through as it came"
    );

    let cap = proxy.finish();
    assert_eq!(cap.events[0]["options"]["rewrite_origins"], true);
    let by_target = |t: &str| {
        cap.exchanges()
            .into_iter()
            .find(|&ex| {
                cap.one(ex, "request")["target"]
                    .as_str()
                    .unwrap()
                    .starts_with(t)
            })
            .unwrap()
    };
    let notes_of = |ex: u64| -> Vec<(String, String, u64)> {
        cap.kind("note")
            .into_iter()
            .filter(|n| n["ex"] == ex)
            .map(|n| {
                (
                    n["code"].as_str().unwrap().to_string(),
                    n["message"].as_str().unwrap().to_string(),
                    n["count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    // The capture holds what the client saw, and says what was rewritten where.
    let ex = by_target("/.well-known");
    let recorded: serde_json::Value = serde_json::from_str(&cap.body_text(ex, "response")).unwrap();
    assert_eq!(recorded, prm);
    let notes = notes_of(ex);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "origins_rewritten");
    assert_eq!(notes[0].2, 3);
    assert!(
        notes[0].1.contains("body (application/json) ×3"),
        "{notes:?}"
    );
    assert!(notes[0].1.contains("Content-Length"), "{notes:?}");
    let ex = by_target("/mcp");
    let headers = cap.one(ex, "response")["headers"].to_string();
    assert!(headers.contains(&format!("{public}/docs")), "{headers}");
    let notes = notes_of(ex);
    assert_eq!(notes[0].2, 3, "{notes:?}");
    for field in ["location ×1", "link ×1", "www-authenticate ×1"] {
        assert!(notes[0].1.contains(field), "{notes:?}");
    }
    // The request as the client sent it; where it went, rewritten.
    let ex = by_target("/token");
    let req = cap.one(ex, "request");
    assert!(req["target"].as_str().unwrap().contains(&encoded(&public)));
    assert_eq!(req["upstream"], format!("{}{seen_target}", up.url()));
    assert_eq!(cap.body_text(ex, "request"), form);
    let notes = notes_of(ex);
    assert_eq!(notes.len(), 1, "{notes:?}");
    for place in [
        "target ×1",
        "origin ×1",
        "body (application/x-www-form-urlencoded) ×2",
    ] {
        assert!(notes[0].1.contains(place), "{notes:?}");
    }
    let ex = by_target("/events");
    let notes = notes_of(ex);
    assert_eq!(notes[0].2, 3, "{notes:?}");
    assert!(cap
        .kind("sse")
        .iter()
        .any(|e| e["ex"] == ex && e["data"].as_str().unwrap().contains(&format!("{public}/r"))));
    for target in ["/big", "/gzip"] {
        let notes = notes_of(by_target(target));
        assert_eq!(notes.len(), 1, "{target}: {notes:?}");
        assert_eq!(notes[0].0, "origins_not_rewritten");
    }
}

#[tokio::test]
async fn without_rewrite_origins_the_upstream_origins_reach_the_client_unchanged() {
    let me = Arc::new(std::sync::OnceLock::new());
    let second_event = Arc::new(tokio::sync::Notify::new());
    let up = origin_naming_upstream(me.clone(), "http://127.0.0.1:1".into(), second_event).await;
    me.set(up.url()).unwrap();
    let proxy = TestProxy::to(&up.url()).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["location"],
        format!("{}/elsewhere", up.url()).as_str()
    );
    let prm = read_all(
        h1_client()
            .request(
                Request::get(proxy.url("/.well-known/oauth-protected-resource/mcp"))
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .await;
    assert!(prm.starts_with(format!(r#"{{"resource":"{}/mcp""#, up.url()).as_bytes()));
    let cap = proxy.finish();
    assert!(cap.events[0]["options"].get("rewrite_origins").is_none());
    assert!(cap.kind("note").is_empty());
}

#[tokio::test]
async fn rewrite_origins_never_chooses_where_a_request_goes() {
    let me = Arc::new(std::sync::OnceLock::new());
    let second_event = Arc::new(tokio::sync::Notify::new());
    let up = origin_naming_upstream(me.clone(), "http://127.0.0.1:1".into(), second_event).await;
    me.set(up.url()).unwrap();
    let proxy = TestProxy::to(&up.url()).arg("--rewrite-origins").start();
    // A client naming another host: it reaches the configured upstream all the same, its body's
    // mention of that host is swapped for the upstream (the only origin this route knows), and
    // only its own answer names the host it claimed.
    let resp = h1_client()
        .request(
            Request::post(proxy.url("/echo?u=http%3A%2F%2Fevil.example%3A9%2Fx"))
                .header("host", "evil.example:9")
                .header("content-type", "application/json")
                .body(full(
                    r#"{"u":"http://evil.example:9/x","v":"http://evil.example:99/x"}"#,
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-seen-target"],
        format!(
            "/echo?u={}",
            form_urlencoded::byte_serialize(format!("{}/x", up.url()).as_bytes())
                .collect::<String>()
        )
        .as_str()
    );
    assert_eq!(
        read_all(resp).await,
        format!(r#"{{"u":"{}/x","v":"http://evil.example:99/x"}}"#, up.url()).as_bytes()
    );
    let resp = h1_client()
        .request(
            Request::get(proxy.url("/mcp"))
                .header("host", "evil.example:9")
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["location"],
        "http://evil.example:9/elsewhere"
    );
    let cap = proxy.finish();
    for req in cap.kind("request") {
        assert!(
            req["upstream"].as_str().unwrap().starts_with(&up.url()),
            "{req}"
        );
    }
}

/// A raw HTTP/1.1 upstream that numbers its connections and answers each request with the
/// number of the connection it came on. With `one_each`, it closes every connection after
/// its first response, without saying so (no `Connection: close`), as servers with a short
/// keep-alive timeout do.
async fn numbering_upstream(one_each: bool) -> (Upstream, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: the head, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let body = number.to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() || one_each {
                        return;
                    }
                }
            });
        }
    });
    (Upstream::from_task(addr, task), accepted)
}

#[tokio::test]
async fn a_kept_alive_client_keeps_its_upstream_connection_and_hands_it_on() {
    let (up, accepted) = numbering_upstream(false).await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut served_by = Vec::new();
    for _ in 0..2 {
        // A client connection of its own each time, with three exchanges on it.
        let client = h1_client();
        for i in 0..3 {
            let req = Request::post(proxy.url("/mcp"))
                .body(full(format!("{{\"id\":{i}}}")))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            served_by.push(String::from_utf8(read_all(resp).await.to_vec()).unwrap());
        }
        drop(client);
        // The proxy has seen the client connection close before the next one opens.
        until_recorded(&proxy, "conn_close", served_by.len() / 3).await;
    }
    // One upstream connection served all six exchanges, across both client connections.
    assert_eq!(served_by, vec!["1"; 6]);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let cap = proxy.finish();
    let ends = cap.kind("end");
    assert_eq!(ends.len(), 6);
    // The capture says so: the first exchange opened it (and how long that took), the rest reused it.
    assert_eq!(ends[0]["timings"]["reused_connection"], false);
    assert!(ends[0]["timings"]["upstream_connect_us"].is_u64());
    for end in &ends[1..] {
        assert_eq!(end["timings"]["reused_connection"], true, "{end}");
        assert!(end["timings"]["upstream_connect_us"].is_null(), "{end}");
    }
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_costs_no_exchange() {
    let (up, accepted) = numbering_upstream(true).await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    let mut served_by = Vec::new();
    for i in 0..5 {
        let req = Request::post(proxy.url("/mcp"))
            .body(full(format!("{{\"id\":{i}}}")))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "exchange {i}");
        served_by.push(String::from_utf8(read_all(resp).await.to_vec()).unwrap());
    }
    // Every exchange went on a connection of its own: none was sent on a closed one.
    assert_eq!(served_by, vec!["1", "2", "3", "4", "5"]);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
    let cap = proxy.finish();
    for end in cap.kind("end") {
        assert_eq!(end["outcome"], "complete", "{end}");
        assert_eq!(end["timings"]["reused_connection"], false, "{end}");
    }
}

// Multi-threaded: the client's connection task must answer the proxy's GOAWAY while
// `finish` blocks this thread, or the proxy waits out its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http2_streams_get_upstream_connections_that_later_streams_reuse() {
    let (up, accepted) = numbering_upstream(false).await;
    let proxy = TestProxy::to(&up.url()).start();
    // One HTTP/2 client connection, four streams at once: the upstream speaks HTTP/1.1, so
    // each stream in flight needs a connection of its own.
    let client = h2_client();
    let round = || {
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let client = client.clone();
                let req = Request::post(proxy.url("/mcp"))
                    .body(full(format!("{{\"id\":{i}}}")))
                    .unwrap();
                tokio::spawn(async move {
                    let resp = client.request(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let body = read_all(resp).await;
                    String::from_utf8(body.to_vec())
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
            })
            .collect();
        async move {
            let mut served_by = Vec::new();
            for task in tasks {
                served_by.push(task.await.unwrap());
            }
            served_by
        }
    };
    round().await;
    round().await;
    // Never more connections than streams in flight at once: the second round's streams
    // went on the connections the first round left (without reuse there would be eight).
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=4).contains(&opened), "{opened} upstream connections");
    drop(client);
    let cap = proxy.finish();
    assert_eq!(cap.kind("end").len(), 8);
}

/// `data` gzip-compressed.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
