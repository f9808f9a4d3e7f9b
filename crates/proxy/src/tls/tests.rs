//! End-to-end tests: real TLS over 127.0.0.1 between [`TlsSetup::accept`] and a
//! tokio-rustls client, plus raw bytes for what no well-behaved client sends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::ca::LocalCa;
use super::{RejectKind, Rejected, TlsSetup};
use mcptap_capture::model::TlsFacts;

/// Upper bound on any single wait in these tests, so that a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

type Outcome = Result<TlsFacts, Rejected>;

/// A listener on 127.0.0.1:0 that accepts through `setup`, reports each outcome, and echoes
/// on accepted streams.
struct Server {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
}

impl Server {
    async fn start(setup: Arc<TlsSetup>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, outcomes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (setup, tx) = (setup.clone(), tx.clone());
                tokio::spawn(async move {
                    match setup.accept(tcp).await {
                        Ok(accepted) => {
                            let _ = tx.send(Ok(accepted.facts));
                            let (mut r, mut w) = tokio::io::split(accepted.stream);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                        Err(rejected) => {
                            let _ = tx.send(Err(rejected));
                        }
                    }
                });
            }
        });
        Server { addr, outcomes }
    }

    async fn next(&mut self) -> Outcome {
        tokio::time::timeout(PATIENCE, self.outcomes.recv())
            .await
            .expect("an outcome in time")
            .expect("server running")
    }

    async fn accepted(&mut self) -> TlsFacts {
        match self.next().await {
            Ok(facts) => facts,
            Err(rejected) => panic!("rejected: {rejected:?}"),
        }
    }

    async fn rejected(&mut self) -> Rejected {
        match self.next().await {
            Ok(facts) => panic!("accepted: {facts:?}"),
            Err(rejected) => rejected,
        }
    }
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

fn client(
    roots_pem: &[&str],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for pem in roots_pem {
        for der in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(der.expect("pem")).expect("root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Connects to `addr` as `name` (an IP address sends no SNI).
async fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<ClientStream, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).expect("server name");
    tokio::time::timeout(
        PATIENCE,
        tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .expect("client handshake in time")
}

async fn echo(stream: &mut ClientStream, text: &str) {
    stream.write_all(text.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(buf, text.as_bytes());
}

fn peer_leaf(stream: &ClientStream) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .expect("a peer certificate")
        .clone()
        .into_owned()
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem")
}

/// A server certificate over the key in `key_pem`, signed by `ca`.
pub(crate) fn leaf_for_key(ca: &LocalCa, key_pem: &str, names: &[&str]) -> String {
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .expect("pem")
        .expect("a key");
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).expect("supported");
    let spki = signer.public_key().expect("public key");
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki.as_ref()).expect("spki");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    ca.sign_leaf(&names, &public).expect("leaf")
}

/// Writes `contents` by rename, as deploy tools do.
fn put(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Issues a leaf for `names` and writes it as `dir/<stem>.pem` and `dir/<stem>-key.pem`;
/// returns (cert path, key path, cert PEM).
fn write_leaf(ca: &LocalCa, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let (cert, key) = ca.issue_leaf(&names).expect("leaf");
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    put(&key_path, &key);
    put(&cert_path, &cert);
    (cert_path, key_path, cert)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: LocalCa,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let ca = LocalCa::load_or_create(&dir.join("ca")).expect("ca");
    Fixture { _tmp: tmp, dir, ca }
}

const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test]
async fn tls13_and_tls12_handshakes_report_their_facts() {
    let f = fixture();
    let (cert, key, _) = write_leaf(&f.ca, &f.dir, "local", &["localhost", "127.0.0.1"]);
    let setup = TlsSetup::from_files(&[(cert, key)]).expect("setup");
    assert_eq!(setup.names(), ["localhost", "127.0.0.1"]);
    let mut server = Server::start(setup).await;
    let ca = f.ca.cert_pem();

    let h2 = client(&[ca], TLS13, &["h2", "http/1.1"]);
    let mut stream = connect(server.addr, &h2, "localhost")
        .await
        .expect("TLS 1.3");
    echo(&mut stream, "hello").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let facts = server.accepted().await;
    assert_eq!(facts.sni.as_deref(), Some("localhost"));
    assert_eq!(facts.alpn_offered, ["h2", "http/1.1"]);
    assert_eq!(facts.alpn.as_deref(), Some("h2"));
    assert_eq!(facts.version.as_deref(), Some("TLSv1.3"));
    let cipher = facts.cipher.clone().expect("cipher");
    assert!(cipher.starts_with("TLS13_"), "{cipher}");
    assert_eq!(facts.group.as_deref(), Some("X25519"));
    assert!(facts.handshake_us.is_some_and(|us| us > 0));
    assert!(!facts.resumed);
    let json = serde_json::to_string(&facts).expect("json");
    assert!(json.contains("\"group\":\"X25519\""), "{json}");
    drop(stream);

    // Same client config again: the ticket from the first connection resumes the session.
    let mut stream = connect(server.addr, &h2, "localhost")
        .await
        .expect("resumed");
    echo(&mut stream, "again").await;
    let facts = server.accepted().await;
    assert!(facts.resumed, "{facts:?}");
    assert_eq!(facts.version.as_deref(), Some("TLSv1.3"));

    let h1 = client(&[ca], TLS12, &["http/1.1"]);
    let mut stream = connect(server.addr, &h1, "localhost")
        .await
        .expect("TLS 1.2");
    echo(&mut stream, "twelve").await;
    let facts = server.accepted().await;
    assert_eq!(facts.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(facts.alpn_offered, ["http/1.1"]);
    assert_eq!(facts.version.as_deref(), Some("TLSv1.2"));
    let cipher = facts.cipher.clone().expect("cipher");
    assert!(cipher.starts_with("TLS_ECDHE_ECDSA_WITH_"), "{cipher}");
    assert_eq!(facts.group.as_deref(), Some("X25519"));
    assert!(!facts.resumed);
    drop(stream);
    let mut stream = connect(server.addr, &h1, "localhost")
        .await
        .expect("TLS 1.2 resumed");
    echo(&mut stream, "twelve again").await;
    assert!(server.accepted().await.resumed);

    // An IP address sends no SNI and no ALPN here: the first certificate serves it.
    let bare = client(&[ca], TLS13, &[]);
    let mut stream = connect(server.addr, &bare, "127.0.0.1")
        .await
        .expect("by IP");
    echo(&mut stream, "ip").await;
    let facts = server.accepted().await;
    assert_eq!(facts.sni, None);
    assert!(facts.alpn_offered.is_empty());
    assert_eq!(facts.alpn, None);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_reported() {
    let f = fixture();
    let (cert, key, _) = write_leaf(&f.ca, &f.dir, "local", &["localhost"]);
    let mut server = Server::start(TlsSetup::from_files(&[(cert, key)]).expect("setup")).await;
    for versions in [TLS13, TLS12] {
        let stranger = client(&[], versions, &["h2"]);
        let err = connect(server.addr, &stranger, "localhost")
            .await
            .expect_err("untrusted");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        let rejected = server.rejected().await;
        // rustls clients answer an unknown issuer with the unknown_ca alert.
        assert_eq!(rejected.kind, RejectKind::CertificateRejected);
        assert!(
            rejected
                .reason
                .starts_with("the client rejected our certificate (alert: unknown_ca)"),
            "{}",
            rejected.reason
        );
        assert_eq!(rejected.sni.as_deref(), Some("localhost"));
        assert_eq!(rejected.alpn_offered, ["h2"]);
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name() {
    let f = fixture();
    let (a_cert, a_key, a_pem) = write_leaf(&f.ca, &f.dir, "a", &["a.test"]);
    let (b_cert, b_key, b_pem) = write_leaf(&f.ca, &f.dir, "b", &["b.test", "*.c.test"]);
    let setup = TlsSetup::from_files(&[(a_cert, a_key), (b_cert, b_key)]).expect("setup");
    assert_eq!(setup.names(), ["a.test", "b.test", "*.c.test"]);
    let mut server = Server::start(setup).await;
    let config = client(&[f.ca.cert_pem()], TLS13, &["h2"]);

    for (name, want) in [
        ("a.test", &a_pem),
        ("b.test", &b_pem),
        ("B.Test", &b_pem),
        ("x.c.test", &b_pem),
    ] {
        let mut stream = connect(server.addr, &config, name).await.expect(name);
        echo(&mut stream, name).await;
        assert_eq!(peer_leaf(&stream), der_of(want), "{name}");
        let facts = server.accepted().await;
        assert_eq!(
            facts.sni.map(|s| s.to_ascii_lowercase()),
            Some(name.to_ascii_lowercase())
        );
    }

    let err = connect(server.addr, &config, "zzz.test")
        .await
        .expect_err("no cert");
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::NoCertificate);
    assert_eq!(
        rejected.reason,
        "no certificate for SNI zzz.test (have: a.test, b.test, *.c.test)"
    );
    assert_eq!(rejected.sni.as_deref(), Some("zzz.test"));
    assert_eq!(rejected.alpn_offered, ["h2"]);
}

#[tokio::test]
async fn every_key_type_serves_tls13_and_tls12() {
    let f = fixture();
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("keygen")
        .serialize_pem();
    let keys = [
        (
            "rsa-pkcs1",
            include_str!("testdata/rsa-pkcs1.pem").to_string(),
        ),
        (
            "p256-sec1",
            include_str!("testdata/ec256-sec1.pem").to_string(),
        ),
        (
            "p384-sec1",
            include_str!("testdata/ec384-sec1.pem").to_string(),
        ),
        ("ed25519-pkcs8", ed25519),
    ];
    for (stem, key_pem) in keys {
        let cert_pem = leaf_for_key(&f.ca, &key_pem, &["k.test"]);
        let (cert, key) = (
            f.dir.join(format!("{stem}.pem")),
            f.dir.join(format!("{stem}-key.pem")),
        );
        put(&cert, &cert_pem);
        put(&key, &key_pem);
        let mut server = Server::start(TlsSetup::from_files(&[(cert, key)]).expect(stem)).await;
        for versions in [TLS13, TLS12] {
            let config = client(&[f.ca.cert_pem()], versions, &["http/1.1"]);
            let mut stream = connect(server.addr, &config, "k.test")
                .await
                .unwrap_or_else(|e| panic!("{stem} {versions:?}: {e}"));
            echo(&mut stream, stem).await;
            let facts = server.accepted().await;
            assert!(facts.cipher.is_some(), "{stem}");
        }
    }
}

#[tokio::test]
async fn plain_http_gets_a_400_that_says_use_https() {
    let f = fixture();
    let (cert, key, _) = write_leaf(&f.ca, &f.dir, "local", &["localhost"]);
    let mut server = Server::start(TlsSetup::from_files(&[(cert, key)]).expect("setup")).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nContent-Type: text/plain\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\nThis port speaks TLS: use https:// (mcptap)\n"),
        "{answer}"
    );
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::PlainHttp);
    assert!(
        rejected.reason.contains("plain HTTP"),
        "{}",
        rejected.reason
    );
}

#[tokio::test]
async fn reload_swaps_certificates_and_keeps_connections() {
    let f = fixture();
    let (cert, key, first_pem) = write_leaf(&f.ca, &f.dir, "site", &["site.test"]);
    let setup = TlsSetup::from_files(&[(cert.clone(), key.clone())]).expect("setup");
    let mut server = Server::start(setup.clone()).await;
    let config = client(&[f.ca.cert_pem()], TLS13, &["h2"]);

    let mut before = connect(server.addr, &config, "site.test")
        .await
        .expect("before");
    echo(&mut before, "one").await;
    assert_eq!(peer_leaf(&before), der_of(&first_pem));
    server.accepted().await;

    // From here on, a new client config per connection: a client resuming a session
    // would show the certificate of the session it resumes, not the one served now.
    let fresh = || client(&[f.ca.cert_pem()], TLS13, &["h2"]);
    let (_, _, second_pem) = write_leaf(&f.ca, &f.dir, "site", &["site.test", "www.site.test"]);
    let summary = setup.reload().expect("reload");
    assert_eq!(summary.names(), ["site.test", "www.site.test"]);
    assert_eq!(
        summary.certificates[0].cert.as_deref(),
        Some(cert.as_path())
    );
    assert!(
        summary
            .to_string()
            .starts_with("serving site.test, www.site.test ("),
        "{summary}"
    );

    let mut after = connect(server.addr, &fresh(), "site.test")
        .await
        .expect("after");
    echo(&mut after, "two").await;
    assert_eq!(peer_leaf(&after), der_of(&second_pem));
    server.accepted().await;
    // The connection made before the reload still works.
    echo(&mut before, "still here").await;

    // A broken file: the reload fails, says why, and the current certificate stays.
    put(&cert, "not a certificate\n");
    let err = format!("{:#}", setup.reload().expect_err("broken"));
    assert!(err.contains("holds no certificate"), "{err}");
    assert!(err.contains(&cert.display().to_string()), "{err}");
    let mut third = connect(server.addr, &fresh(), "www.site.test")
        .await
        .expect("third");
    echo(&mut third, "three").await;
    assert_eq!(peer_leaf(&third), der_of(&second_pem));
    server.accepted().await;
    assert_eq!(setup.names(), ["site.test", "www.site.test"]);
    echo(&mut before, "and still").await;

    // A key that does not match: same.
    let (_, other_key, _) = write_leaf(&f.ca, &f.dir, "other", &["other.test"]);
    put(&cert, &second_pem);
    std::fs::copy(&other_key, &key).expect("copy");
    let err = format!("{:#}", setup.reload().expect_err("mismatch"));
    assert!(err.contains("does not match the certificate"), "{err}");
}

async fn next<T>(events: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("watcher running")
}

#[tokio::test]
async fn the_watcher_reloads_when_files_change() {
    let f = fixture();
    let (cert, key, _) = write_leaf(&f.ca, &f.dir, "w", &["w.test"]);
    let setup = TlsSetup::from_files(&[(cert.clone(), key)]).expect("setup");
    let (tx, mut events) = mpsc::unbounded_channel();
    let watcher = setup.spawn_watcher_every(Duration::from_millis(20), move |event| {
        let _ = tx.send(event);
    });

    write_leaf(&f.ca, &f.dir, "w", &["w.test", "new.w.test"]);
    let summary = next(&mut events).await.expect("reloaded");
    assert_eq!(summary.names(), ["w.test", "new.w.test"]);
    assert_eq!(setup.names(), ["w.test", "new.w.test"]);

    // The next event is the one for this change: nothing was reported in between.
    std::fs::write(&cert, "garbage").expect("write");
    let err = next(&mut events).await.expect_err("broken");
    assert!(err.contains("holds no certificate"), "{err}");
    assert_eq!(setup.names(), ["w.test", "new.w.test"]);

    write_leaf(&f.ca, &f.dir, "w", &["w.test"]);
    assert_eq!(next(&mut events).await.expect("fixed").names(), ["w.test"]);

    // Dropping the setup ends the watcher.
    drop(setup);
    tokio::time::timeout(PATIENCE, watcher)
        .await
        .expect("watcher ends")
        .expect("no panic");
}

#[tokio::test]
async fn self_signed_mode_serves_a_leaf_from_the_local_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let setup = TlsSetup::self_signed(&dir, &[]).expect("self-signed");
    assert_eq!(setup.ca_cert(), Some(dir.join("ca.pem").as_path()));
    assert_eq!(setup.names(), ["localhost", "127.0.0.1", "::1"]);
    assert!(setup.files().is_empty());
    assert_eq!(setup.reload().expect("reload").names(), setup.names());
    let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
    let mut server = Server::start(setup.clone()).await;
    for name in ["localhost", "127.0.0.1"] {
        let config = client(&[&ca], TLS13, &["h2"]);
        let mut stream = connect(server.addr, &config, name).await.expect(name);
        echo(&mut stream, name).await;
        server.accepted().await;
    }
    // Nothing to watch: the watcher task ends at once.
    let watcher = setup.spawn_watcher(|_| {});
    tokio::time::timeout(PATIENCE, watcher)
        .await
        .expect("ends")
        .expect("no panic");
    // A second start reuses the CA, so clients keep trusting it.
    TlsSetup::self_signed(&dir, &["mcp.test".into()]).expect("again");
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem"),
        ca
    );
}

/// A TLS record holding a ClientHello with the given legacy version, cipher suites and
/// extensions (type, body).
fn raw_client_hello(version: u16, suites: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    fn u16_len(n: usize) -> [u8; 2] {
        u16::try_from(n).expect("short").to_be_bytes()
    }
    let mut body = version.to_be_bytes().to_vec();
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend(u16_len(suites.len() * 2));
    suites.iter().for_each(|s| body.extend(s.to_be_bytes()));
    body.extend([1, 0]); // compression: null only
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend(u16_len(data.len()));
        ext.extend(data);
    }
    body.extend(u16_len(ext.len()));
    body.extend(ext);
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend(&u32::try_from(body.len()).expect("short").to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16_len(handshake.len()));
    record.extend(handshake);
    record
}

fn sni_extension(name: &str) -> (u16, Vec<u8>) {
    let mut entry = vec![0u8]; // host_name
    entry.extend((name.len() as u16).to_be_bytes());
    entry.extend(name.as_bytes());
    let mut data = (entry.len() as u16).to_be_bytes().to_vec();
    data.extend(entry);
    (0x0000, data)
}

fn alpn_extension(protocols: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend(p.as_bytes());
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend(list);
    (0x0010, data)
}

/// Sends `bytes` and waits for the server to close, then returns its verdict.
async fn send_raw(server: &mut Server, bytes: &[u8]) -> Rejected {
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink)).await;
    server.rejected().await
}

#[tokio::test]
async fn failed_handshakes_say_why_in_words() {
    let f = fixture();
    let (cert, key, _) = write_leaf(&f.ca, &f.dir, "local", &["a.test"]);
    let setup = TlsSetup::from_files(&[(cert, key)]).expect("setup");
    let mut server = Server::start(setup.clone()).await;
    let ca = f.ca.cert_pem();

    // No ALPN protocol in common (RFC 7301 §3.2).
    let spdy = client(&[ca], TLS13, &["spdy/3"]);
    assert!(connect(server.addr, &spdy, "a.test").await.is_err());
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::NoCommonParameters);
    assert_eq!(
        rejected.reason,
        "no ALPN protocol in common: the client offered spdy/3, mcptap speaks h2, http/1.1"
    );

    // A TLS 1.1-only client: legacy version 1.1, no supported_versions extension.
    let groups = (0x000a, vec![0, 2, 0x00, 0x1d]);
    let points = (0x000b, vec![1, 0]);
    let sigalgs = (0x000d, vec![0, 4, 0x04, 0x03, 0x08, 0x04]);
    let old = raw_client_hello(
        0x0302,
        &[0x002f, 0xc013],
        &[
            sni_extension("a.test"),
            groups.clone(),
            points.clone(),
            sigalgs.clone(),
        ],
    );
    let rejected = send_raw(&mut server, &old).await;
    assert_eq!(
        rejected.kind,
        RejectKind::NoCommonParameters,
        "{rejected:?}"
    );
    assert!(
        rejected.reason.starts_with("no TLS version in common"),
        "{}",
        rejected.reason
    );
    // Older still: no signature_algorithms extension either (TLS 1.0 style).
    let older = raw_client_hello(0x0301, &[0x002f], &[sni_extension("a.test")]);
    let rejected = send_raw(&mut server, &older).await;
    assert_eq!(
        rejected.kind,
        RejectKind::NoCommonParameters,
        "{rejected:?}"
    );
    assert!(
        rejected.reason.contains("TLS 1.1 or older"),
        "{}",
        rejected.reason
    );

    // TLS 1.2 with only an RSA-key-exchange CBC suite.
    let cbc = raw_client_hello(
        0x0303,
        &[0x002f],
        &[
            sni_extension("a.test"),
            alpn_extension(&["h2"]),
            groups,
            points,
            sigalgs,
        ],
    );
    let rejected = send_raw(&mut server, &cbc).await;
    assert_eq!(
        rejected.kind,
        RejectKind::NoCommonParameters,
        "{rejected:?}"
    );
    assert!(
        rejected.reason.starts_with("no cipher suite in common"),
        "{}",
        rejected.reason
    );
    assert_eq!(rejected.sni.as_deref(), Some("a.test"));
    assert_eq!(rejected.alpn_offered, ["h2"]);

    // The client hangs up in the middle of its ClientHello.
    let hello = raw_client_hello(0x0303, &[0x1301], &[sni_extension("a.test")]);
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(&hello[..20]).await.expect("write");
    tcp.shutdown().await.expect("shutdown");
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::ClientClosed);
    assert_eq!(
        rejected.reason,
        "the client closed the connection during the handshake"
    );
    drop(tcp);

    // Neither TLS nor HTTP.
    let rejected = send_raw(&mut server, &[0x00, 0x01, 0x02]).await;
    assert_eq!(rejected.kind, RejectKind::NotTls);
    assert_eq!(
        rejected.reason,
        "the client did not speak TLS (first bytes: 00 01 02)"
    );

    // Connected, then gone without a byte (a port probe).
    drop(TcpStream::connect(server.addr).await.expect("connect"));
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::ClientClosed);
    assert_eq!(
        rejected.reason,
        "the client closed the connection before sending anything"
    );

    // Too slow: nothing at all, then half a ClientHello.
    setup.set_handshake_timeout(Duration::from_millis(200));
    let silent = TcpStream::connect(server.addr).await.expect("connect");
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::Timeout);
    assert_eq!(
        rejected.reason,
        "the TLS handshake did not finish within 0.2 s (the client sent nothing)"
    );
    drop(silent);
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(&hello[..20]).await.expect("write");
    let rejected = server.rejected().await;
    assert_eq!(
        rejected.reason,
        "the TLS handshake did not finish within 0.2 s"
    );
    drop(slow);
}

/// The CA's side of TLS-ALPN-01 takes the self-signed challenge certificate and inspects it
/// by hand (RFC 8737 §3).
#[derive(Debug)]
struct InspectAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for InspectAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // webpki cannot read the certificate (its critical acmeIdentifier extension), and
    // the test only looks at what was sent.
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    // webpki cannot read the certificate (its critical acmeIdentifier extension), and
    // the test only looks at what was sent.
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn acme_names_say_why_they_have_no_certificate_and_answer_tls_alpn_01() {
    let f = fixture();
    let setup = TlsSetup::acme(super::AcmeConfig {
        domains: vec!["a.example.com".into()],
        email: None,
        directory: super::acme::LETS_ENCRYPT.into(),
        ca_file: None,
        certs_dir: f.dir.clone(),
        http_listen: None,
    })
    .expect("setup");
    assert_eq!(setup.summary().to_string(), "serving no certificate yet");
    let mut server = Server::start(setup.clone()).await;

    // An ordinary client, while the first order runs: refused at once, with the reason.
    let ordinary = client(&[f.ca.cert_pem()], TLS13, &["h2"]);
    assert!(connect(server.addr, &ordinary, "a.example.com")
        .await
        .is_err());
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::NoCertificate);
    assert_eq!(
        rejected.reason,
        "no certificate for a.example.com yet: the ACME order is in progress"
    );

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut ca_side = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InspectAnyCertificate(provider)))
        .with_no_client_auth();
    ca_side.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let ca_side = Arc::new(ca_side);

    // No challenge pending: no_application_protocol (RFC 8737 §4), and why.
    assert!(connect(server.addr, &ca_side, "a.example.com")
        .await
        .is_err());
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::NoCommonParameters);
    assert!(
        rejected.reason.contains("no challenge is pending"),
        "{}",
        rejected.reason
    );

    // Pending: the challenge certificate, acme-tls/1 negotiated, then closed.
    let digest = [9u8; 32];
    setup
        .acme
        .as_ref()
        .expect("acme")
        .pend_tls_alpn("a.example.com", &digest)
        .expect("pending");
    let stream = connect(server.addr, &ca_side, "a.example.com")
        .await
        .expect("the validation handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    let leaf = peer_leaf(&stream);
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("x509");
    let acme_identifier = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("id-pe-acmeIdentifier");
    assert_eq!(acme_identifier.value[2..], digest);
    let rejected = server.rejected().await;
    assert_eq!(rejected.kind, RejectKind::AcmeChallenge);
    assert_eq!(
        rejected.reason,
        "answered the ACME CA's tls-alpn-01 validation for a.example.com"
    );

    // Ordinary clients still do not get the challenge certificate.
    assert!(connect(server.addr, &ordinary, "a.example.com")
        .await
        .is_err());
    assert_eq!(server.rejected().await.kind, RejectKind::NoCertificate);
}
