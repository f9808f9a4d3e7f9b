//! Faults from both sides and crashes: the client gets a sensible answer, the capture says what
//! happened in words, and the proxy goes on serving.

use std::time::{Duration, Instant};

use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::*;

async fn get_status(
    proxy: &TestProxy,
    path: &str,
) -> Result<(StatusCode, String), hyper_util::client::legacy::Error> {
    let resp = h1_client()
        .request(Request::get(proxy.url(path)).body(full("")).unwrap())
        .await?;
    let status = resp.status();
    use http_body_util::BodyExt;
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// Runs `fault`, then checks that the proxy still serves a normal request.
async fn and_then_still_serving(proxy: &TestProxy, ok_path: &str) {
    let (status, _) = get_status(proxy, ok_path)
        .await
        .expect("the proxy still answers");
    assert_ne!(
        status,
        StatusCode::BAD_GATEWAY,
        "the next request failed too"
    );
}

#[tokio::test]
async fn malformed_upstream_http_is_a_502_in_words() {
    let up = raw_upstream(b"HTTP/1.1 2OO NOT OK\r\n\x00\x01garbage\r\n\r\n").await;
    let proxy = TestProxy::to(&up.url()).start();
    let (status, text) = get_status(&proxy, "/mcp").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(text.contains("mcptap:"), "{text}");
    let (status, _) = get_status(&proxy, "/again").await.unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "still answered, with the same cause"
    );
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[0], "end");
    assert_eq!(end["outcome"], "upstream_error");
    assert!(!end["error"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn an_upstream_closing_after_its_headers_is_upstream_aborted() {
    let up = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":").await;
    let proxy = TestProxy::to(&up.url()).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    use http_body_util::BodyExt;
    assert!(
        resp.into_body().collect().await.is_err(),
        "the client sees the body break"
    );
    let cap = proxy.finish();
    let ex = cap.exchanges()[0];
    let end = cap.one(ex, "end");
    assert_eq!(end["outcome"], "upstream_aborted", "{end}");
    assert_eq!(cap.body_text(ex, "response"), "{\"partial\":");
}

#[tokio::test]
async fn expect_100_continue_goes_through() {
    let up = Upstream::start(|req| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(body))
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 25];
    tcp.read_exact(&mut first).await.unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    tcp.write_all(b"hello").await.unwrap();
    let mut rest = String::new();
    tcp.read_to_string(&mut rest).await.unwrap();
    assert!(rest.contains("200 OK") && rest.ends_with("hello"), "{rest}");
    let cap = proxy.finish();
    assert_eq!(cap.body_text(cap.exchanges()[0], "request"), "hello");
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_recorded() {
    let up = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let proxy = TestProxy::to(&up.url())
        .args(&["--header-timeout", "0.5"])
        .start();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /mcp HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The proxy closes the connection (with a 408 or nothing): bounded by the test's own limit.
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a slowloris client kept its connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    and_then_still_serving(&proxy, "/next").await;
    let cap = proxy.finish();
    let closes = cap.kind("conn_close");
    let slow = closes
        .iter()
        .find(|c| c["exchanges"] == 0)
        .expect("the slow connection's close");
    assert_eq!(slow["reason"], "error", "{slow}");
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timeout"),
        "{slow}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_bad_bytes_get_400() {
    let up = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let proxy = TestProxy::to(&up.url())
        .args(&["--max-header-bytes", "16KiB"])
        .start();
    let raw = |request: Vec<u8>| async move {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).to_string()
    };
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let answer = raw(big.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer = raw(b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    and_then_still_serving(&proxy, "/next").await;
    drop(proxy);
}

#[tokio::test]
async fn an_http2_client_resetting_a_stream_is_client_aborted() {
    let up = Upstream::start(|_req| async move {
        let (mut tx, body) =
            http_body_util::channel::Channel::<bytes::Bytes, std::io::Error>::new(1);
        tokio::spawn(async move {
            for i in 0..10_000 {
                let event = format!("data: {i}\n\n");
                if tx.send_data(bytes::Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        event_stream(body)
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h2_client();
    let resp = client
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let _ = body.frame().await;
    // Dropping the body resets the stream (RST_STREAM); the connection stays up.
    drop(body);
    let resp = client
        .request(Request::get(proxy.url("/other")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let _ = body.frame().await;
    drop(body);
    drop(client);
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[0], "end");
    assert!(
        end["outcome"] == "client_aborted" || end["outcome"] == "proxy_shutdown",
        "{end}"
    );
    assert_eq!(
        cap.kind("conn_open").len(),
        1,
        "both streams on one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_over_the_limit_are_refused_cleanly_and_counted() {
    const LIMIT: usize = 50;
    const EXTRA: usize = 2000;
    let up = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let proxy = TestProxy::to(&up.url())
        .args(&["--max-connections", &LIMIT.to_string()])
        .start();
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        // A finished exchange on a kept-alive connection keeps it open and counted.
        tcp.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        tcp.read_exact(&mut buf).await.unwrap();
        held.push(tcp);
    }
    // All at once.
    let addr = proxy.addr;
    let attempts: Vec<_> = (0..EXTRA)
        .map(|_| {
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                let _ = tcp.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
                let mut answer = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_string(&mut answer))
                        .await;
                Some(answer.starts_with("HTTP/1.1 503"))
            })
        })
        .collect();
    let mut refused = 0;
    for a in attempts {
        if a.await.unwrap() == Some(true) {
            refused += 1;
        }
    }
    assert_eq!(refused, EXTRA, "every connection over the limit got a 503");
    drop(held);
    // Once the proxy has seen the held connections close, it serves again (until then a new
    // connection may still be turned away, and is counted too).
    let mut late_refusals = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = get_status(&proxy, "/after")
            .await
            .expect("the proxy answers");
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        late_refusals += 1;
        assert!(Instant::now() < deadline, "the proxy never served again");
        tokio::task::yield_now().await;
    }
    let cap = proxy.finish();
    let counted: u64 = cap
        .kind("note")
        .iter()
        .filter(|n| n["code"] == "connections_refused")
        .filter_map(|n| n["count"].as_u64())
        .max()
        .unwrap_or(0);
    assert_eq!(counted, EXTRA as u64 + late_refusals);
}

/// `mcptap explain` reads a capture cut by a kill and warns that its session_end is missing.
fn explain_warns_of_the_kill(capture: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), capture).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .arg("explain")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("session_end"));
}

#[tokio::test]
async fn kill_9_leaves_a_capture_that_reads_back_with_every_completed_exchange() {
    let up = Upstream::start(|req| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    })
    .await;
    let mut proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    let mut completed = 0;
    for i in 0..200 {
        let body = format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/list\"}}");
        let resp = client
            .request(
                Request::post(proxy.url("/mcp"))
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        read_all(resp).await;
        completed += 1;
    }
    // The writer follows the traffic within moments (a loaded machine may starve it for a
    // while): wait until the completed exchanges are in the file, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&proxy.capture)
        .unwrap()
        .matches("\"kind\":\"end\"")
        .count()
        < completed
    {
        assert!(Instant::now() < deadline, "the writer fell 20 s behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then kill it while more traffic is in flight.
    let busy = {
        let client = client.clone();
        let url = proxy.url("/mcp");
        tokio::spawn(async move {
            loop {
                let req = Request::post(url.clone()).body(full("{}")).unwrap();
                if client.request(req).await.is_err() {
                    return;
                }
            }
        })
    };
    proxy.signal("KILL");
    proxy.wait();
    let _ = busy.await;
    let text = std::fs::read(&proxy.capture).unwrap();
    let reader =
        mcptap::capture::reader::Capture::from_reader(text.as_slice(), "killed.jsonl").unwrap();
    // No session_end after a kill, and the reader says so.
    assert!(reader.session_end.is_none());
    assert!(reader.warnings.iter().any(|w| w.contains("session_end")));
    // Every exchange completed and written before the kill is whole on the record.
    let ended = reader.exchanges.iter().filter(|x| x.end.is_some()).count();
    assert!(ended >= completed, "{ended} ended of {completed}");
    for x in reader.exchanges.iter().take(completed) {
        assert!(
            x.response.is_some() && !x.request_body.is_empty(),
            "exchange {} is incomplete",
            x.ex
        );
    }
    explain_warns_of_the_kill(&text);
}

#[tokio::test]
async fn a_capture_that_cannot_be_written_is_said_once_and_traffic_goes_on() {
    let up = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("capture.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A reader that takes the first line and goes away: later writes fail (EPIPE).
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let file = std::fs::File::open(&path).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(file).read_line(&mut line).unwrap();
        line
    });
    let mut proxy = TestProxy::to(&up.url()).capture_to(&fifo).start();
    let first = reader.join().unwrap();
    assert!(first.contains("\"kind\":\"session\""));
    for i in 0..20 {
        let (status, body) = get_status(&proxy, &format!("/r{i}")).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    proxy.signal("TERM");
    assert_eq!(
        proxy.wait(),
        1,
        "the proxy exits non-zero when the capture is incomplete"
    );
}

/// An HTTPS upstream whose certificate, from a CA of its own, expired a year ago; returns it
/// and the CA's PEM file (in `dir`).
async fn expired_https_upstream(dir: &std::path::Path) -> (Upstream, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("expired-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2025, 11, 1);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The proxy gives up in the handshake; nothing is ever served.
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (Upstream::from_task(addr, task), ca_file)
}

#[tokio::test]
async fn an_expired_upstream_certificate_is_a_502_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let (up, ca) = expired_https_upstream(dir.path()).await;
    let proxy = TestProxy::to(&format!("https://localhost:{}", up.addr.port()))
        .args(&["--upstream-ca", ca.to_str().unwrap()])
        .start();
    for path in ["/mcp", "/again"] {
        let (status, text) = get_status(&proxy, path).await.expect("an answer");
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(text.to_lowercase().contains("expired"), "{path}: {text}");
    }
    let cap = proxy.finish();
    let exchanges = cap.exchanges();
    assert_eq!(exchanges.len(), 2, "both requests are on the record");
    for ex in exchanges {
        let end = cap.one(ex, "end");
        assert_eq!(end["outcome"], "upstream_error");
        let error = end["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains("certificate") && error.contains("expired"),
            "{error}"
        );
        assert_eq!(cap.one(ex, "response")["producer"], "proxy");
    }
}

#[tokio::test]
async fn kill_9_during_open_event_streams_keeps_every_event_written() {
    use http_body_util::BodyExt;
    const STREAMS: usize = 8;
    const BEFORE_KILL: usize = 20;
    // Each stream sends an event every 10 ms until the client goes away.
    let up = Upstream::start(|_req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes, std::io::Error>::new(4);
        tokio::spawn(async move {
            for i in 0u64.. {
                let event = format!(
                    "id: {i}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{i}}}}}\n\n"
                );
                if tx.send_data(bytes::Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        event_stream(body)
    })
    .await;
    let mut proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    let mut bodies = Vec::new();
    for _ in 0..STREAMS {
        let resp = client
            .request(
                Request::get(proxy.url("/mcp"))
                    .header("accept", "text/event-stream")
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    // Every client reads its first events through the proxy.
    for body in &mut bodies {
        let mut parser = mcptap::sse::SseParser::new();
        let mut seen = 0;
        while seen < BEFORE_KILL {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                seen += parser.push(&data).len();
            }
        }
    }
    // Wait (bounded) until the writer has those events in the file, then kill the proxy
    // while the streams are still open and events still flowing.
    // The fewest events written of any stream.
    let written = |text: &str| {
        let mut per_stream = std::collections::HashMap::<u64, usize>::new();
        for line in text.lines() {
            if let Ok(e) = serde_json::from_str::<serde_json::Value>(line) {
                if e["kind"] == "sse" {
                    *per_stream.entry(e["ex"].as_u64().unwrap()).or_default() += 1;
                }
            }
        }
        if per_stream.len() < STREAMS {
            0
        } else {
            per_stream.into_values().min().unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while written(&std::fs::read_to_string(&proxy.capture).unwrap()) < BEFORE_KILL {
        assert!(Instant::now() < deadline, "the writer fell 20 s behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.signal("KILL");
    proxy.wait();
    // The clients see their streams cut, not hang.
    for body in &mut bodies {
        while let Some(Ok(_)) = body.frame().await {}
    }

    let text = std::fs::read(&proxy.capture).unwrap();
    let reader =
        mcptap::capture::reader::Capture::from_reader(text.as_slice(), "killed.jsonl").unwrap();
    assert!(reader.session_end.is_none());
    assert!(reader.warnings.iter().any(|w| w.contains("session_end")));
    assert_eq!(reader.exchanges.len(), STREAMS);
    for x in &reader.exchanges {
        assert_eq!(x.status(), Some(200), "exchange {}", x.ex);
        assert!(x.end.is_none(), "exchange {} cannot have ended", x.ex);
        // Each stream's events are whole and in order, from the first.
        let progress: Vec<u64> = x
            .sse
            .iter()
            .filter_map(|(_, e)| {
                let data: serde_json::Value = serde_json::from_str(e.data.as_deref()?).ok()?;
                data["params"]["progress"].as_u64()
            })
            .collect();
        assert!(
            progress.len() >= BEFORE_KILL,
            "exchange {}: {progress:?}",
            x.ex
        );
        assert!(
            progress.iter().enumerate().all(|(i, p)| *p == i as u64),
            "exchange {}: {progress:?}",
            x.ex
        );
    }
    explain_warns_of_the_kill(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_burst_of_streams_took_is_given_back_when_they_close() {
    use std::sync::{Arc, Mutex};
    const STREAMS: usize = 2000;
    // Each stream sends one event, then stays open until the test lets it end.
    type Senders = Arc<Mutex<Vec<http_body_util::channel::Sender<bytes::Bytes, std::io::Error>>>>;
    let senders: Senders = Arc::default();
    let held = senders.clone();
    let up = Upstream::start(move |_req| {
        let held = held.clone();
        async move {
            let (mut tx, body) =
                http_body_util::channel::Channel::<bytes::Bytes, std::io::Error>::new(1);
            let _ = tx
                .send_data(bytes::Bytes::from_static(b"data: {}\n\n"))
                .await;
            held.lock().unwrap().push(tx);
            event_stream(body)
        }
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let before = proxy.rss_kib();
    let mut clients = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(b"GET /mcp HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        clients.push(tcp);
    }
    // Every stream is open end to end: its event came through.
    for tcp in &mut clients {
        let mut got = Vec::new();
        while !got.windows(8).any(|w| w == b"data: {}") {
            let mut buf = [0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "a stream closed early");
            got.extend_from_slice(&buf[..n]);
        }
    }
    let busy = proxy.rss_kib();
    let grown = busy.saturating_sub(before);
    assert!(
        grown > 20_000,
        "{STREAMS} open streams took only {grown} KiB: nothing to measure"
    );
    // The streams end and their clients leave.
    senders.lock().unwrap().clear();
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = proxy.rss_kib();
        if now < before + grown / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS {now} KiB with every stream closed: {busy} KiB while open, {before} KiB before"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cap = proxy.finish();
    assert_eq!(cap.kind("end").len(), STREAMS);
}
