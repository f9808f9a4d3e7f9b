//! ACME against a real Pebble (Let's Encrypt's test CA, Debian's `pebble` package) on
//! loopback, with `pebble-challtestsrv` as the DNS that sends every name to 127.0.0.1:
//! TLS-ALPN-01 and HTTP-01 issuance, the cache reused across restarts, renewal under an open
//! event stream, and a failed order retried and on the record. Without pebble each test
//! prints SKIPPED and passes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::util::*;

/// The domain the tests get certificates for; the mock DNS answers 127.0.0.1 for it.
const DOMAIN: &str = "mcp.example.test";

/// A port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Waits until something accepts TCP connections on `port` (at most 20 s).
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where Pebble validates: the ports it connects to for tls-alpn-01 and http-01, and the
/// lifetime of the certificates it issues.
struct Validation {
    tls_port: u16,
    http_port: u16,
    validity: Option<u64>,
}

/// One Pebble at a time: each start makes CA keys, and the other tests share the two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Pebble and its mock DNS, killed on drop.
struct Pebble {
    dir: tempfile::TempDir,
    acme_port: u16,
    management_port: u16,
    /// The local CA that signed Pebble's own HTTPS certificate: the proxy's `--acme-ca`.
    ca: PathBuf,
    children: Vec<Child>,
}

impl Pebble {
    /// Starts Pebble validating on `validation`'s ports; `None` (after a SKIPPED line) when
    /// pebble is not installed.
    fn start(test: &str, validation: Validation) -> Option<Pebble> {
        if !installed("pebble") || !installed("pebble-challtestsrv") {
            eprintln!("SKIPPED: {test}: pebble is not installed (apt-get install pebble)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let local_ca = mcptap::tls::ca::LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let (cert_pem, key_pem) = local_ca
            .issue_leaf(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let cert = dir.path().join("pebble.pem");
        let key = dir.path().join("pebble-key.pem");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let (acme_port, management_port, dns_port, dns_management_port) =
            (free_port(), free_port(), free_port(), free_port());
        let mut settings = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": validation.http_port,
            "tlsPort": validation.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(seconds) = validation.validity {
            settings["certificateValidityPeriod"] = seconds.into();
        }
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({ "pebble": settings }).to_string(),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();

        let mut children = Vec::new();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("dns.log"))
            .stderr(log("dns.err"))
            .spawn()
            .expect("starting pebble-challtestsrv");
        children.push(dns);
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("starting pebble");
        children.push(pebble);
        let pebble = Pebble {
            acme_port,
            management_port,
            ca: local_ca.cert_path(),
            children,
            dir,
        };
        wait_for_port(dns_management_port, "pebble-challtestsrv");
        wait_for_port(acme_port, "pebble");
        wait_for_port(management_port, "pebble's management interface");
        Some(pebble)
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// Pebble's issuing root, from its management interface (made anew at each start).
    async fn root(&self) -> rustls::RootCertStore {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.management_port));
        let (status, body, _) =
            https_get(addr, "127.0.0.1", &roots_from_file(&self.ca), "/roots/0")
                .await
                .expect("GET /roots/0");
        assert_eq!(status, 200);
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut body.as_ref()) {
            roots.add(cert.unwrap()).unwrap();
        }
        assert!(!roots.is_empty(), "no root from pebble");
        roots
    }

    /// The args that point the proxy at this Pebble, caching under `certs`.
    fn proxy_args(&self, certs: &Path) -> Vec<String> {
        vec![
            "--acme".into(),
            DOMAIN.into(),
            "--acme-email".into(),
            "ops@example.com".into(),
            "--acme-directory".into(),
            self.directory(),
            "--acme-ca".into(),
            self.ca.display().to_string(),
            "--certs-dir".into(),
            certs.display().to_string(),
        ]
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for name in ["pebble.log", "pebble.err", "dns.err"] {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {name} (last lines, newest first)");
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn roots_from_file(ca: &Path) -> rustls::RootCertStore {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A TLS connection to `addr` for `sni`, verified against `roots`.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Sends a GET over HTTPS (HTTP/1.1); the response, headers received, and the certificate
/// the server presented.
async fn https_request(
    addr: SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
    path: &str,
) -> std::io::Result<(Response<Incoming>, CertificateDer<'static>)> {
    let tls = tls_connect(addr, sni, roots).await?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", sni)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    Ok((response, cert))
}

/// [`https_request`] with the whole body read: (status, body, certificate).
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
    path: &str,
) -> std::io::Result<(u16, Bytes, CertificateDer<'static>)> {
    let (response, cert) = https_request(addr, sni, roots, path).await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, body, cert))
}

/// The notes in a capture that is still being written (whole lines only).
fn notes(capture: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(capture).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["kind"] == "note")
        .collect()
}

fn with_code<'a>(notes: &'a [Value], code: &str) -> Vec<&'a Value> {
    notes.iter().filter(|n| n["code"] == code).collect()
}

/// Waits until the live capture holds `count` notes with `code` (the writer flushes within
/// 50 ms of each event); returns all its notes then.
async fn wait_for_notes(capture: &Path, code: &str, count: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let all = notes(capture);
        if with_code(&all, code).len() >= count {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} {code} notes within {limit:?}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hello() -> Upstream {
    Upstream::start(|_req| async move { Response::new(full("hello from the upstream")) }).await
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

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn tls_alpn_01_gets_a_certificate_that_a_restart_reuses() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let proxy_port = free_port();
    let Some(pebble) = Pebble::start(
        "tls_alpn_01_gets_a_certificate_that_a_restart_reuses",
        Validation {
            tls_port: proxy_port,
            http_port: free_port(),
            validity: None,
        },
    ) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let up = hello().await;
    let listen = format!("127.0.0.1:{proxy_port}");
    let args = pebble.proxy_args(certs.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let proxy = TestProxy::to(&up.url()).listen(&listen).args(&args).start();
    let notes = wait_for_notes(&proxy.capture, "acme_issued", 1, Duration::from_secs(60)).await;
    let issued = with_code(&notes, "acme_issued")[0]["message"]
        .as_str()
        .unwrap();
    assert!(issued.contains("validated by tls-alpn-01"), "{issued}");
    let validations = with_code(&notes, "acme_validation");
    assert!(!validations.is_empty());
    assert!(validations
        .iter()
        .all(|n| n["message"].as_str().unwrap().contains("(tls-alpn-01)")));

    // A client that trusts Pebble's root gets through, and sees the ACME certificate.
    let roots = pebble.root().await;
    let (status, body, served) = https_get(proxy.addr, DOMAIN, &roots, "/mcp").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "hello from the upstream");
    assert_eq!(san_names(&served), [DOMAIN]);

    // Cached: account and key 0600, folders 0700.
    let cache = certs
        .path()
        .join("acme")
        .join(format!("127.0.0.1-{}-dir", pebble.acme_port));
    #[cfg(unix)]
    {
        assert_eq!(mode(&cache.join(format!("{DOMAIN}-key.pem"))), 0o600);
        assert_eq!(mode(&cache.join("account.json")), 0o600);
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&certs.path().join("acme")), 0o700);
    }
    let cap = proxy.finish();
    assert_eq!(
        with_code(
            &cap.kind("note").into_iter().cloned().collect::<Vec<_>>(),
            "acme_ordering"
        )
        .len(),
        1
    );
    // The CA's validation handshakes are notes, not failed handshakes.
    assert!(
        cap.kind("tls_error").is_empty(),
        "{:?}",
        cap.kind("tls_error")
    );
    assert_eq!(cap.kind("conn_open")[0]["tls"]["sni"], DOMAIN);

    // Restarted: the cached certificate is served at once, and no order is placed.
    let proxy = TestProxy::to(&up.url()).listen(&listen).args(&args).start();
    let (status, _, again) = https_get(proxy.addr, DOMAIN, &roots, "/mcp").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        again, served,
        "the restart did not reuse the cached certificate"
    );
    let cap = proxy.finish();
    let notes: Vec<Value> = cap.kind("note").into_iter().cloned().collect();
    assert_eq!(with_code(&notes, "acme_cached").len(), 1, "{notes:#?}");
    assert!(with_code(&notes, "acme_ordering").is_empty(), "{notes:#?}");
    assert!(with_code(&notes, "acme_issued").is_empty(), "{notes:#?}");
}

#[tokio::test]
async fn http_01_on_the_plain_listener_gets_a_certificate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let proxy_port = free_port();
    let http_port = free_port();
    let closed = free_port();
    // tls-alpn-01 would fail (nothing listens on `closed`): only http-01 can succeed.
    let Some(pebble) = Pebble::start(
        "http_01_on_the_plain_listener_gets_a_certificate",
        Validation {
            tls_port: closed,
            http_port,
            validity: None,
        },
    ) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let up = hello().await;
    let http_listen = format!("127.0.0.1:{http_port}");
    let proxy = TestProxy::to(&up.url())
        .listen(&format!("127.0.0.1:{proxy_port}"))
        .args(
            &pebble
                .proxy_args(certs.path())
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .args(&["--acme-http-listen", &http_listen])
        .start();
    let notes = wait_for_notes(&proxy.capture, "acme_issued", 1, Duration::from_secs(60)).await;
    let issued = with_code(&notes, "acme_issued")[0]["message"]
        .as_str()
        .unwrap();
    assert!(issued.contains("validated by http-01"), "{issued}");
    assert!(with_code(&notes, "acme_validation")
        .iter()
        .all(|n| n["message"].as_str().unwrap().contains("(http-01)")));
    assert_eq!(with_code(&notes, "acme_http01").len(), 1);

    let roots = pebble.root().await;
    let (status, body, _) = https_get(proxy.addr, DOMAIN, &roots, "/mcp").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "hello from the upstream");

    // Everything else on the plain listener is redirected to https; unknown tokens are 404.
    let client = h1_client();
    let resp = client
        .request(
            Request::get(format!("http://{http_listen}/mcp?x=1"))
                .header("host", format!("{DOMAIN}:{http_port}"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://{DOMAIN}:{proxy_port}/mcp?x=1")
    );
    let resp = client
        .request(
            Request::get(format!(
                "http://{http_listen}/.well-known/acme-challenge/nope"
            ))
            .body(full(""))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let cap = proxy.finish();
    // The plain listener's traffic is not client traffic: one exchange, the HTTPS one.
    assert_eq!(cap.exchanges().len(), 1);
}

/// An SSE upstream: an event every 100 ms, numbered.
async fn ticking() -> Upstream {
    Upstream::start(|_req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        tokio::spawn(async move {
            for i in 0..10_000u32 {
                let event = format!("id: {i}\ndata: tick {i}\n\n");
                if tx.send_data(Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        event_stream(body)
    })
    .await
}

/// Reads until `n` more complete events have arrived on `body`.
async fn read_events(body: &mut Incoming, n: usize) {
    let mut seen = 0;
    let mut text = String::new();
    while seen < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the stream stalled")
            .expect("the stream ended")
            .expect("the stream failed");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            seen += text.matches("\n\n").count();
            text = text.rsplit("\n\n").next().unwrap_or_default().to_string();
        }
    }
}

#[tokio::test]
async fn renewal_replaces_the_certificate_without_dropping_an_open_stream() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let proxy_port = free_port();
    // Certificates that live 8 s: renewal (a third of the lifetime left) comes ~5 s after issue.
    let Some(pebble) = Pebble::start(
        "renewal_replaces_the_certificate_without_dropping_an_open_stream",
        Validation {
            tls_port: proxy_port,
            http_port: free_port(),
            validity: Some(8),
        },
    ) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let up = ticking().await;
    let proxy = TestProxy::to(&up.url())
        .listen(&format!("127.0.0.1:{proxy_port}"))
        .args(
            &pebble
                .proxy_args(certs.path())
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .start();
    wait_for_notes(&proxy.capture, "acme_issued", 1, Duration::from_secs(60)).await;
    let roots = pebble.root().await;

    // An event stream over the first certificate.
    let (response, first) = https_request(proxy.addr, DOMAIN, &roots, "/mcp")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    read_events(&mut body, 2).await;

    let notes = wait_for_notes(&proxy.capture, "acme_issued", 2, Duration::from_secs(60)).await;
    let renewed = with_code(&notes, "acme_issued")[1]["message"]
        .as_str()
        .unwrap();
    assert!(renewed.starts_with("renewed the certificate"), "{renewed}");
    let (response, second) = https_request(proxy.addr, DOMAIN, &roots, "/mcp")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert_ne!(
        second, first,
        "new connections still get the old certificate"
    );
    // The stream opened before the renewal still flows.
    read_events(&mut body, 3).await;
    drop(body);
    let cap = proxy.finish();
    let ends: Vec<&Value> = cap.kind("end");
    assert!(
        ends.iter().all(|e| e["outcome"] != "upstream_aborted"),
        "{ends:?}"
    );
}

#[tokio::test]
async fn a_failed_order_is_retried_and_its_reason_is_on_the_record() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let proxy_port = free_port();
    let closed = free_port();
    // Pebble validates tls-alpn-01 on a port where nothing answers.
    let Some(pebble) = Pebble::start(
        "a_failed_order_is_retried_and_its_reason_is_on_the_record",
        Validation {
            tls_port: closed,
            http_port: free_port(),
            validity: None,
        },
    ) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let up = hello().await;
    let proxy = TestProxy::to(&up.url())
        .listen(&format!("127.0.0.1:{proxy_port}"))
        .args(
            &pebble
                .proxy_args(certs.path())
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .start();
    let notes = wait_for_notes(&proxy.capture, "acme_failed", 1, Duration::from_secs(60)).await;
    let failed = with_code(&notes, "acme_failed")[0]["message"]
        .as_str()
        .unwrap();
    assert!(
        failed.starts_with(&format!(
            "the ACME order for {DOMAIN} failed: the CA could not reach us on port {closed}"
        )),
        "{failed}"
    );
    assert!(failed.ends_with("next attempt in 5 s"), "{failed}");

    // Meanwhile a client is told why there is no certificate, at once.
    let roots = roots_from_file(&pebble.ca);
    let started = Instant::now();
    assert!(tls_connect(proxy.addr, DOMAIN, &roots).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));

    // Retried with backoff: the second failure waits longer.
    let notes = wait_for_notes(&proxy.capture, "acme_failed", 2, Duration::from_secs(30)).await;
    let again = with_code(&notes, "acme_failed")[1]["message"]
        .as_str()
        .unwrap();
    assert!(again.ends_with("next attempt in 30 s"), "{again}");
    assert_eq!(with_code(&notes, "acme_ordering").len(), 2);

    let cap = proxy.finish();
    let errors = cap.kind("tls_error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "no certificate for {DOMAIN} yet: the ACME order failed: the CA could not reach us on port {closed}"
        )),
        "{reason}"
    );
    assert_eq!(errors[0]["sni"], DOMAIN);
}
