//! TLS at the edge: handshakes recorded (failed ones too), SNI, reloads, streaming over TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use mcptap::sse::SseParser;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

/// `mcptap certs init` into `dir` for `hosts`; returns (ca, cert, key).
fn certs_init(dir: &Path, hosts: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"));
    cmd.args(["certs", "init", "--dir"]).arg(dir);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("NODE_EXTRA_CA_CERTS"),
        "trust instructions: {text}"
    );
    let name = hosts[0];
    (
        dir.join("ca.pem"),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with `sni` to the proxy; the certificate the proxy served, or the error.
async fn handshake(
    addr: std::net::SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    CertificateDer<'static>,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((tls, cert))
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    UpBody,
>;

/// An HTTPS client trusting `ca`, speaking HTTP/2 or HTTP/1.1 (by ALPN).
fn https_client(ca: &Path, h2: bool) -> HttpsClient {
    let config = client_config(ca, &[]);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let mut client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    if h2 {
        client.http2_only(true);
    }
    client.build(connector)
}

async fn echo() -> Upstream {
    Upstream::start(|req| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::builder()
            .header("x-seen-proto", proto)
            .body(full(body))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn clients_trusting_the_local_ca_get_through_and_the_handshake_is_recorded() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certs_init(certs.path(), &["localhost"]);
    let up = echo().await;
    let proxy = TestProxy::to(&up.url())
        .arg("--cert")
        .arg(cert.to_str().unwrap())
        .arg("--key")
        .arg(key.to_str().unwrap())
        .start();
    let url = format!("https://localhost:{}/mcp", proxy.addr.port());
    for h2 in [false, true] {
        let resp = https_client(&ca, h2)
            .request(Request::post(url.clone()).body(full("ping")).unwrap())
            .await
            .unwrap();
        assert_eq!(
            resp.version(),
            if h2 {
                hyper::Version::HTTP_2
            } else {
                hyper::Version::HTTP_11
            }
        );
        assert_eq!(resp.headers()["x-seen-proto"], "https");
        assert_eq!(read_all(resp).await, "ping");
    }
    let cap = proxy.finish();
    let opens = cap.kind("conn_open");
    assert_eq!(opens.len(), 2);
    for (open, h2) in opens.iter().zip([false, true]) {
        let tls = &open["tls"];
        assert_eq!(tls["sni"], "localhost");
        // The HTTP/1.1 client offers no ALPN at all; the HTTP/2 one offers and gets h2.
        if h2 {
            assert_eq!(tls["alpn"], "h2");
            assert_eq!(tls["alpn_offered"], serde_json::json!(["h2"]));
        } else {
            assert_ne!(tls["alpn"], "h2");
        }
        assert_eq!(tls["version"], "TLSv1.3");
        assert!(tls["cipher"].as_str().unwrap().starts_with("TLS13_"));
        assert!(tls["handshake_us"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_on_the_record() {
    let certs = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_, cert, key) = certs_init(certs.path(), &["localhost"]);
    // A CA of its own that the proxy's certificate does not chain to.
    let (stranger_ca, _, _) = certs_init(other.path(), &["localhost"]);
    let up = echo().await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .start();
    let failed = handshake(
        proxy.addr,
        "localhost",
        client_config(&stranger_ca, &[b"h2"]),
    )
    .await;
    assert!(failed.is_err());
    let cap = proxy.finish();
    let errors = cap.kind("tls_error");
    assert_eq!(errors.len(), 1, "{:?}", cap.events);
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("rejected our certificate") && reason.contains("unknown_ca"),
        "{reason}"
    );
    assert_eq!(errors[0]["sni"], "localhost");
    assert_eq!(errors[0]["alpn_offered"], serde_json::json!(["h2"]));
    assert!(cap.kind("request").is_empty());
}

fn san_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    parsed
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, a_cert, a_key) = certs_init(certs.path(), &["a.test"]);
    let (_, b_cert, b_key) = certs_init(certs.path(), &["b.test"]);
    let up = echo().await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--cert",
            a_cert.to_str().unwrap(),
            "--key",
            a_key.to_str().unwrap(),
        ])
        .args(&[
            "--cert",
            b_cert.to_str().unwrap(),
            "--key",
            b_key.to_str().unwrap(),
        ])
        .start();
    for name in ["a.test", "b.test"] {
        let (_, served) = handshake(proxy.addr, name, client_config(&ca, &[]))
            .await
            .unwrap();
        assert_eq!(san_names(&served), vec![name.to_string()]);
    }
    assert!(handshake(proxy.addr, "c.test", client_config(&ca, &[]))
        .await
        .is_err());
    let cap = proxy.finish();
    let reason = cap.kind("tls_error")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("no certificate for SNI c.test"), "{reason}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_answered_and_recorded() {
    let certs = tempfile::tempdir().unwrap();
    let (_, cert, key) = certs_init(certs.path(), &["localhost"]);
    let up = echo().await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .start();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");
    let cap = proxy.finish();
    let reason = cap.kind("tls_error")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("plain HTTP"), "{reason}");
}

/// One clock for the upstream's write stamps and the client's arrival times.
fn since_base() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// An SSE upstream: an event every `gap`, whose data says when it was written (µs).
async fn ticking_sse(gap: Duration) -> Upstream {
    Upstream::start(move |_req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        tokio::spawn(async move {
            for i in 0..10_000 {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                let event = format!("id: {i}\ndata: {}\n\n", since_base());
                if tx.send_data(Bytes::from(event)).await.is_err() {
                    return;
                }
            }
        });
        event_stream(body)
    })
    .await
}

/// Reads `n` events; returns (written, arrived) stamps of each.
async fn next_events(
    body: &mut hyper::body::Incoming,
    parser: &mut SseParser,
    n: usize,
) -> Vec<(u64, u64)> {
    let mut times = Vec::new();
    while times.len() < n {
        let frame = body.frame().await.expect("the stream ended").unwrap();
        if let Ok(data) = frame.into_data() {
            for e in parser.push(&data) {
                let written: u64 = e.data.unwrap().parse().unwrap();
                times.push((written, since_base()));
            }
        }
    }
    times
}

#[tokio::test]
async fn event_streams_are_not_buffered_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certs_init(certs.path(), &["localhost"]);
    let up = ticking_sse(Duration::from_millis(200)).await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .start();
    let url = format!("https://localhost:{}/mcp", proxy.addr.port());
    for h2 in [false, true] {
        let resp = https_client(&ca, h2)
            .request(Request::get(url.clone()).body(full("")).unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        let events = next_events(&mut body, &mut SseParser::new(), 4).await;
        for i in 0..3 {
            let (arrived, next_written) = (events[i].1, events[i + 1].0);
            assert!(
                arrived < next_written,
                "event {i} was held back over TLS (h2: {h2})"
            );
        }
    }
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_a_restart_or_a_dropped_stream() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certs_init(certs.path(), &["localhost"]);
    let up = ticking_sse(Duration::from_millis(50)).await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .start();
    let (_, before) = handshake(proxy.addr, "localhost", client_config(&ca, &[]))
        .await
        .unwrap();
    // An open event stream over TLS.
    let url = format!("https://localhost:{}/mcp", proxy.addr.port());
    let resp = https_client(&ca, false)
        .request(Request::get(url).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut parser = SseParser::new();
    next_events(&mut body, &mut parser, 2).await;

    // Renew: a new leaf for the same name replaces the files in place.
    certs_init(certs.path(), &["localhost"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let (_, served) = handshake(proxy.addr, "localhost", client_config(&ca, &[]))
            .await
            .unwrap();
        if served != before {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        next_events(&mut body, &mut parser, 1).await;
    };
    assert_ne!(after, before);
    // The stream opened before the renewal still flows.
    next_events(&mut body, &mut parser, 3).await;
    drop(body);
    let cap = proxy.finish();
    let notes = cap.kind("note");
    assert!(
        notes.iter().any(|n| n["code"] == "tls_reloaded"),
        "{notes:?}"
    );
}

/// An HTTPS upstream with a certificate from a local CA in `certs` (for `localhost`),
/// answering with the HTTP version it spoke.
async fn https_upstream(certs: &Path) -> (Upstream, PathBuf) {
    let (up, ca, _) = counted_https_upstream(certs).await;
    (up, ca)
}

/// [`https_upstream`], and the number of TCP connections it has accepted.
async fn counted_https_upstream(
    certs: &Path,
) -> (Upstream, PathBuf, Arc<std::sync::atomic::AtomicUsize>) {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let setup = mcptap::tls::TlsSetup::self_signed(certs, &["localhost".to_string()]).unwrap();
    let ca = setup.ca_cert().unwrap().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let setup = setup.clone();
            tokio::spawn(async move {
                let Ok(accepted) = setup.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(Response::new(full(version)))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(accepted.stream), service)
                .await;
            });
        }
    });
    (Upstream::from_task(addr, task), ca, accepted)
}

#[tokio::test]
async fn an_http2_upstream_carries_every_client_connection_on_one_connection() {
    let certs = tempfile::tempdir().unwrap();
    let (up, ca, accepted) = counted_https_upstream(certs.path()).await;
    let upstream = format!("https://localhost:{}", up.addr.port());
    let proxy = TestProxy::to(&upstream)
        .args(&["--upstream-ca", ca.to_str().unwrap()])
        .start();
    // Three client connections, one after another, two exchanges each.
    for _ in 0..3 {
        let client = h1_client();
        for _ in 0..2 {
            let resp = client
                .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(read_all(resp).await, "HTTP/2.0");
        }
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let cap = proxy.finish();
    let ends = cap.kind("end");
    assert_eq!(ends.len(), 6);
    assert_eq!(ends[0]["timings"]["reused_connection"], false);
    assert!(ends[1..]
        .iter()
        .all(|e| e["timings"]["reused_connection"] == true));
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_given_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (up, ca) = https_upstream(certs.path()).await;
    let upstream = format!("https://localhost:{}", up.addr.port());

    // Trusted through --upstream-ca: HTTP/2 by ALPN.
    let proxy = TestProxy::to(&upstream)
        .args(&["--upstream-ca", ca.to_str().unwrap()])
        .start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(read_all(resp).await, "HTTP/2.0");
    let cap = proxy.finish();
    assert_eq!(cap.one(cap.exchanges()[0], "response")["version"], "HTTP/2");

    // Not trusted: a 502 that says why, on the record.
    let proxy = TestProxy::to(&upstream).start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = String::from_utf8(read_all(resp).await.to_vec()).unwrap();
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[0], "end");
    assert_eq!(end["outcome"], "upstream_error");
    assert!(end["error"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("certificate"));

    // --upstream-insecure: through, and the capture says the check was off.
    let proxy = TestProxy::to(&upstream).arg("--upstream-insecure").start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cap = proxy.finish();
    assert_eq!(cap.events[0]["options"]["upstream_insecure"], true);
}

#[tokio::test]
async fn explain_names_failed_handshakes() {
    let certs = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_, cert, key) = certs_init(certs.path(), &["localhost"]);
    let (stranger_ca, _, _) = certs_init(other.path(), &["localhost"]);
    let up = echo().await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .start();
    for _ in 0..2 {
        assert!(
            handshake(proxy.addr, "localhost", client_config(&stranger_ca, &[]))
                .await
                .is_err()
        );
    }
    let cap = proxy.finish();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &cap.raw).unwrap();
    let report = crate::explain::explain_json(file.path());
    let f: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "tls-handshake-failures")
        .collect();
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["severity"], "error");
    assert!(
        f[0]["message"].as_str().unwrap().contains("unknown_ca"),
        "{:#}",
        f[0]
    );
}

#[tokio::test]
async fn self_signed_serves_a_certificate_from_the_local_ca() {
    let certs = tempfile::tempdir().unwrap();
    let up = echo().await;
    let proxy = TestProxy::to(&up.url())
        .args(&[
            "--self-signed",
            "--host",
            "mcp.test",
            "--certs-dir",
            certs.path().to_str().unwrap(),
        ])
        .start();
    let ca = certs.path().join("ca.pem");
    assert!(ca.is_file(), "the local CA was created");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(certs.path().join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    for name in ["localhost", "mcp.test"] {
        let (_, served) = handshake(proxy.addr, name, client_config(&ca, &[]))
            .await
            .unwrap();
        assert!(san_names(&served).contains(&name.to_string()));
    }
    let resp = https_client(&ca, true)
        .request(
            Request::post(format!("https://localhost:{}/mcp", proxy.addr.port()))
                .body(full("hi"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(read_all(resp).await, "hi");
}

#[tokio::test]
async fn an_upstream_certificate_for_another_name_is_a_502_in_words() {
    let certs = tempfile::tempdir().unwrap();
    let (up, ca) = https_upstream(certs.path()).await;
    // The certificate names localhost; the proxy is told to reach the upstream as 127.0.0.1.
    let upstream = format!("https://127.0.0.1:{}", up.addr.port());
    let proxy = TestProxy::to(&upstream)
        .args(&["--upstream-ca", ca.to_str().unwrap()])
        .start();
    let resp = h1_client()
        .request(Request::get(proxy.url("/mcp")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = String::from_utf8(read_all(resp).await.to_vec()).unwrap();
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    let (status, _) = (
        h1_client()
            .request(Request::get(proxy.url("/again")).body(full("")).unwrap())
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 502, "the proxy keeps answering");
    let cap = proxy.finish();
    let end = cap.one(cap.exchanges()[0], "end");
    assert_eq!(end["outcome"], "upstream_error");
    let error = end["error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("certificate")
            && (error.contains("name") || error.contains("notvalidforname")),
        "{error}"
    );
}
