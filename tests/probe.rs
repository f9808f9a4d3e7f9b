//! `mcptap probe` against the fixture MCP + OAuth server served over TLS from a local CA
//! (`--ca`), correct and with one fault each, and against the TypeScript SDK's example OAuth
//! server with `--login`; each fault must be reported at the right step with the right check.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The fixture server behind a TLS front that holds a certificate from a fresh local CA.
struct Site {
    url: String,
    ca: PathBuf,
    dir: tempfile::TempDir,
    _server: FixtureServer,
    front: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.front.abort();
    }
}

async fn site(faults: Faults) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let init = mcptap::tls::ca::certs_init(
        &dir.path().join("certs"),
        &["localhost".to_string(), "127.0.0.1".to_string()],
    )
    .unwrap();
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::fs::read(&init.cert).unwrap().as_slice())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&init.key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let server = FixtureServer::start(faults, None).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("https://127.0.0.1:{}", addr.port());
    server.set_public_base(url.clone());
    let upstream = server.addr;
    // TLS terminated here, bytes piped to the fixture (which speaks HTTP/1.1 and h2).
    let front = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Site {
        url: format!("{url}/mcp"),
        ca: init.ca,
        dir,
        _server: server,
        front,
    }
}

/// One run of `mcptap probe --json`.
struct Probed {
    code: i32,
    report: Value,
    capture: PathBuf,
    /// Everything the probe printed on stderr.
    stderr: String,
    /// The code the authorization server redirected back with (when the test followed it).
    code_seen: Option<String>,
    /// The folder the capture is in, when the run made one: removed with the result.
    _dir: Option<tempfile::TempDir>,
}

impl Probed {
    /// Every step from the `first`-th on passed, or passed with a warning.
    fn passes_from(&self, first: usize) {
        for step in self.report["steps"].as_array().unwrap().iter().skip(first) {
            assert!(
                step["status"] == "pass" || step["status"] == "warn",
                "step {} is {}: {step:#}",
                step["id"],
                step["status"]
            );
        }
    }

    fn step(&self, id: &str) -> &Value {
        self.report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}: {:#}", self.report))
    }

    /// Asserts that `check` is reported at step `id` with `severity`, and nowhere else.
    fn fires(&self, id: &str, check: &str, severity: &str) -> &Value {
        let all: Vec<(&Value, &Value)> = self.report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |f| (s, f))
            })
            .filter(|(_, f)| f["check"] == check)
            .collect();
        assert!(
            !all.is_empty(),
            "{check} was not reported: {:#}",
            self.report["steps"]
        );
        for (step, f) in &all {
            assert_eq!(step["id"], id, "{check} reported at {}", step["id"]);
            assert_eq!(f["severity"], severity, "{f:#}");
        }
        let status = &self.step(id)["status"];
        if severity == "error" {
            assert_eq!(status, "fail");
        } else {
            assert!(
                status == "warn" || status == "fail",
                "step {id} is {status}"
            );
        }
        all[0].1
    }

    fn checks(&self) -> Vec<String> {
        self.report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["findings"].as_array().unwrap().iter())
            .map(|f| f["check"].as_str().unwrap().to_string())
            .collect()
    }
}

fn bin() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcptap"));
    cmd.env_remove("MCPTAP_TOKEN").env("NO_COLOR", "1");
    cmd
}

/// Runs the probe; with `login`, plays the browser: follows the authorize URL it prints and
/// brings the redirect back to its listener.
async fn run_probe(url: &str, ca: Option<&Path>, dir: &Path, args: &[&str], login: bool) -> Probed {
    let capture = dir.join(format!("probe-{}.jsonl", mcptap::capture::file::short_id()));
    let mut cmd = bin();
    cmd.arg("probe")
        .arg(url)
        .arg("--json")
        .arg("--capture")
        .arg(&capture);
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    if login {
        cmd.args(["--login", "--login-timeout", "20"]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("starting mcptap probe");
    let stderr = child.stderr.take().unwrap();
    let ca = ca.map(Path::to_path_buf);
    let browser = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut code = None;
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[probe] {line}");
            all.push_str(&line);
            all.push('\n');
            if let Some(authorize) = line.strip_prefix("mcptap: authorize URL: ") {
                if login && code.is_none() {
                    code = Some(follow(authorize, ca.as_deref()).await);
                }
            }
        }
        (code, all)
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the probe finished within 60 s")
        .unwrap();
    let (code_seen, stderr) = browser.await.unwrap();
    let printed = stderr.contains("mcptap: authorize URL: ");
    if login {
        assert!(printed, "--login printed no authorize URL: {stderr}");
    } else if !args.contains(&"--login") {
        assert!(!printed, "an authorize URL without --login: {stderr}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("probe --json printed no JSON ({e}): {stdout}"));
    Probed {
        code: out.status.code().unwrap_or(-1),
        report,
        capture,
        stderr,
        code_seen,
        _dir: None,
    }
}

/// The browser: GET the authorize URL, then GET where it redirects (the probe's listener).
/// Returns the code it carried.
async fn follow(authorize: &str, ca: Option<&Path>) -> String {
    let (status, location) = get(authorize, ca).await;
    assert!(
        (300..400).contains(&status),
        "the authorize URL answered {status}, not a redirect"
    );
    let location = location.expect("a Location");
    assert!(
        location.contains("code="),
        "redirected without a code: {location}"
    );
    let (status, _) = get(&location, None).await;
    assert_eq!(
        status, 200,
        "the probe's redirect listener answered {status}"
    );
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn get(url: &str, ca: Option<&Path>) -> (u16, Option<String>) {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(https);
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let _ = resp.into_body().collect().await;
    (status, location)
}

async fn probe_site(site: &Site, args: &[&str], login: bool) -> Probed {
    run_probe(&site.url, Some(&site.ca), site.dir.path(), args, login).await
}

fn explain(capture: &Path) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["explain", "--json"])
        .arg(capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stage_status(explained: &Value, id: &str) -> String {
    explained["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_passes_every_step_with_login() {
    let site = site(Faults::default()).await;
    let probed = probe_site(&site, &[], true).await;
    let ids: Vec<&str> = probed.report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "dns",
            "tcp",
            "tls",
            "reach",
            "challenge",
            "resource_metadata",
            "auth_server_metadata",
            "registration",
            "authorize",
            "token",
            "discover",
            "initialize",
            "initialized",
            "get_stream",
            "list",
            "close"
        ]
    );
    probed.passes_from(0);
    // The 2026-07-28 opening, asked first without and then with the token: the fixture
    // speaks both eras.
    let discover = probed.step("discover");
    assert_eq!(
        discover["exchanges"].as_array().unwrap().len(),
        2,
        "{discover:#}"
    );
    assert!(
        discover["summary"]
            .as_str()
            .unwrap()
            .contains("with the token → 200 #"),
        "{discover:#}"
    );
    assert!(
        discover["summary"]
            .as_str()
            .unwrap()
            .contains("speaks 2026-07-28"),
        "{discover:#}"
    );
    // Only what a local test server cannot avoid: a loopback address and a port other than 443.
    probed.fires("dns", "dns-address", "warning");
    probed.fires("tcp", "tcp-port", "warning");
    assert_eq!(probed.report["errors"], 0, "{:#}", probed.report);
    assert_eq!(probed.code, 0);
    assert!(probed.step("tls")["summary"]
        .as_str()
        .unwrap()
        .contains("chain verified"));
    assert!(probed.step("list")["summary"]
        .as_str()
        .unwrap()
        .contains("tools"));
    // The session the probe opened is ended politely.
    let close = probed.step("close");
    assert!(
        close["summary"]
            .as_str()
            .unwrap()
            .starts_with("DELETE /mcp with Mcp-Session-Id → 2"),
        "{close:#}"
    );
    // The authorization code is a secret: never on screen, never in clear in the capture.
    let code = probed.code_seen.clone().expect("the browser saw a code");
    assert!(code.len() >= 8, "{code}");
    assert!(!probed.stderr.contains(&code), "{}", probed.stderr);
    assert!(!probed.report.to_string().contains(&code));
    assert!(!std::fs::read_to_string(&probed.capture)
        .unwrap()
        .contains(&code));

    // The capture is a normal one: explain reads every stage the probe went through.
    assert_eq!(
        probed.report["capture"],
        probed.capture.display().to_string()
    );
    explains_a_whole_login(&probed.capture);
    // Redacted by default, and private.
    let text = std::fs::read_to_string(&probed.capture).unwrap();
    assert!(text.contains("<redacted fp="));
    assert!(!text.contains("\"access_token\":\"") || text.contains("\"access_token\":\"<redacted"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&probed.capture)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_alone_passes_on_a_correct_server_and_registers_nothing() {
    let site = site(Faults::default()).await;
    let probed = probe_site(&site, &[], false).await;
    assert_eq!(probed.code, 0, "{:#}", probed.report);
    assert!(
        probed.step("discover")["summary"]
            .as_str()
            .unwrap()
            .contains("authorization first"),
        "{:#}",
        probed.step("discover")
    );
    for id in [
        "discover",
        "reach",
        "challenge",
        "resource_metadata",
        "auth_server_metadata",
    ] {
        assert_eq!(probed.step(id)["status"], "pass", "{:#}", probed.step(id));
    }
    let registration = probed.step("registration");
    assert!(registration["exchanges"].as_array().unwrap().is_empty());
    assert!(registration["summary"]
        .as_str()
        .unwrap()
        .contains("dynamic registration"));
    assert_eq!(probed.step("initialize")["status"], "skip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discover_answered_500_is_reported_at_discover_with_the_era_check() {
    let site = site(Faults {
        discover_500: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], true).await;
    assert_eq!(
        probed.step("discover")["status"],
        "fail",
        "{:#}",
        probed.report
    );
    probed.fires("discover", "era-negotiation", "error");
    assert_ne!(probed.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2025_only_server_is_said_to_refuse_discover_and_passes() {
    let site = site(Faults {
        legacy_only: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], true).await;
    let discover = probed.step("discover");
    assert!(
        discover["summary"]
            .as_str()
            .unwrap()
            .contains("does not speak 2026-07-28"),
        "{discover:#}"
    );
    let note = discover["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "era-fallback")
        .unwrap_or_else(|| panic!("no era-fallback note at discover: {discover:#}"));
    assert_eq!(note["severity"], "info");
    assert_eq!(probed.report["errors"], 0, "{:#}", probed.report);
    assert_eq!(probed.step("list")["status"], "pass", "{:#}", probed.report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prm_resource_mismatch_is_reported_at_resource_metadata() {
    let site = site(Faults {
        prm_resource_base_url: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], false).await;
    let f = probed.fires("resource_metadata", "prm-resource-match", "error");
    assert!(f["message"].as_str().unwrap().contains("/mcp"), "{f:#}");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_www_authenticate_is_reported_at_challenge() {
    let site = site(Faults {
        missing_www_authenticate: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], false).await;
    probed.fires("challenge", "challenge-present", "error");
    // The well-known URLs still lead on, as the spec's fallback says.
    assert_eq!(probed.step("resource_metadata")["status"], "pass");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_behind_auth_is_reported_at_resource_metadata() {
    let site = site(Faults {
        prm_requires_auth: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], false).await;
    let f = probed.fires("resource_metadata", "prm-fetch-ok", "error");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains("behind authentication"));
    // The challenge's URL, then the well-known ones, to say where the metadata is.
    assert_eq!(
        probed.step("resource_metadata")["exchanges"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{:#}",
        probed.step("resource_metadata")
    );
    assert_eq!(probed.step("auth_server_metadata")["status"], "skip");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_mismatch_is_reported_at_auth_server_metadata() {
    let site = site(Faults {
        issuer_mismatch: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], false).await;
    probed.fires("auth_server_metadata", "as-issuer-match", "error");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_s256_is_reported_at_auth_server_metadata() {
    let site = site(Faults {
        no_pkce_s256: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], false).await;
    probed.fires("auth_server_metadata", "as-pkce-s256", "error");
    assert!(!probed.checks().contains(&"as-issuer-match".to_string()));
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_403_to_a_connector_user_agent_is_reported_at_reach() {
    let site = site(Faults {
        edge_block: true,
        ..Faults::default()
    })
    .await;
    // The fixture's WAF blocks user agents that name a connector; the probe's own passes.
    let probed = probe_site(&site, &["--user-agent", "Example-Connector/1.0"], false).await;
    probed.fires("reach", "edge-block", "error");
    assert_eq!(probed.step("resource_metadata")["status"], "skip");
    assert_eq!(probed.code, 1);
    let probed = probe_site(&site, &[], false).await;
    assert_eq!(probed.code, 0, "{:#}", probed.report);
    // As Claude: its published agent token is what such rules match.
    let probed = probe_site(&site, &["--as", "claude"], false).await;
    probed.fires("reach", "edge-block", "error");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_slower_than_the_deadline_is_reported_at_initialize() {
    let site = site(Faults {
        slow_initialize: Some(Duration::from_secs(3)),
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &["--init-timeout", "1"], true).await;
    probed.fires("initialize", "init-deadline", "error");
    probed.fires("initialize", "init-latency", "warning");
    assert_eq!(probed.step("token")["status"], "pass");
    assert_eq!(probed.step("initialized")["status"], "skip");
    assert_eq!(probed.code, 1);
}

/// The TypeScript SDK's example OAuth server (tests/peers/oauth-server.mjs), reached directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_completes_against_the_typescript_sdk_example_server() {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    if !peers
        .join("node_modules/@modelcontextprotocol/sdk/package.json")
        .is_file()
        && crate::peers::may_skip("the real MCP peers")
    {
        return;
    }
    let mut server = tokio::process::Command::new("node")
        .args(["oauth-server.mjs", "--as", "same"])
        .current_dir(&peers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed with tests/peers");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut stdin = server.stdin.take().unwrap();
    let listening = wait_for(&mut lines, "mcptap-peer: listening").await;
    let mcp = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mcp="))
        .unwrap()
        .to_string();
    // The server names the URL the probe uses as its resource (RFC 9728 §3.3).
    use tokio::io::AsyncWriteExt as _;
    stdin
        .write_all(format!("{mcp}\n").as_bytes())
        .await
        .unwrap();
    wait_for(&mut lines, "mcptap-peer: ready").await;

    let dir = tempfile::tempdir().unwrap();
    let probed = run_probe(&mcp, None, dir.path(), &[], true).await;
    probed.passes_from(3);
    // Plain http on loopback is only a warning; nothing else is wrong with the SDK's server.
    probed.fires("tls", "tls-required", "warning");
    assert_eq!(probed.report["errors"], 0, "{:#}", probed.report);
    assert_eq!(probed.code, 0);
    assert!(probed.step("list")["summary"]
        .as_str()
        .unwrap()
        .contains("greet"));
    explains_a_whole_login(&probed.capture);
    drop(stdin);
}

/// The first line of a peer's output that starts with `prefix` (30 s at most).
async fn wait_for(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("[oauth-server] {line}");
            if line.starts_with(prefix) {
                return line;
            }
        }
        panic!("oauth-server exited before `{prefix}`");
    })
    .await
    .unwrap_or_else(|_| panic!("oauth-server did not print `{prefix}` within 30 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_fails_at_tls_in_words() {
    let site = site(Faults::default()).await;
    let probed = run_probe(&site.url, None, site.dir.path(), &[], false).await;
    let f = probed.fires("tls", "tls-handshake", "error");
    assert!(
        f["message"].as_str().unwrap().contains("unknown issuer"),
        "{f:#}"
    );
    assert_eq!(probed.step("reach")["status"], "skip");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    for (args, expected) in [
        (
            vec!["probe", "ftp://example.com/mcp"],
            "must start with https://",
        ),
        (
            vec!["probe", "https://u:p@example.com/mcp"],
            "user:password",
        ),
        (
            vec![
                "probe",
                "https://example.com/mcp",
                "--ca",
                missing.to_str().unwrap(),
            ],
            "no such file",
        ),
        (
            vec!["probe", "https://example.com/mcp", "--init-timeout", "0"],
            "--init-timeout",
        ),
        (
            vec!["probe", "https://example.com/mcp", "--capture", "/dev/null"],
            "regular file",
        ),
    ] {
        let out = bin().args(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let help = bin().args(["probe", "--help"]).output().await.unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Examples:") && help.contains("--login") && help.contains("--ca"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_skips_oauth_and_a_rejected_one_fails_at_initialize() {
    let site = site(Faults::default()).await;
    let probed = probe_site(&site, &["--token", "not-a-token-the-server-issued"], false).await;
    let ids: Vec<&str> = probed.report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[..5], ["dns", "tcp", "tls", "discover", "initialize"]);
    let initialize = probed.step("initialize");
    assert_eq!(initialize["status"], "fail");
    assert!(initialize["summary"].as_str().unwrap().contains("401"));
    assert_eq!(probed.code, 1);
    // The token was sent, and is not in the capture in clear.
    let text = std::fs::read_to_string(&probed.capture).unwrap();
    assert!(!text.contains("not-a-token-the-server-issued"));
    assert!(text.contains("Bearer <redacted fp="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_as_claude_registers_claudes_callback() {
    let site = site(Faults::default()).await;
    let probed = probe_site(&site, &["--as", "claude", "--register"], false).await;
    assert_eq!(probed.report["profile"], "claude");
    let registration = probed.step("registration");
    assert_eq!(registration["status"], "pass", "{registration:#}");
    assert_eq!(registration["exchanges"].as_array().unwrap().len(), 1);
    assert!(registration["summary"]
        .as_str()
        .unwrap()
        .contains("https://claude.ai/api/mcp/auth_callback"));
    assert_eq!(probed.code, 0, "{:#}", probed.report);
}

/// What the odd server does for one `METHOD /path`.
#[derive(Clone)]
enum Reply {
    /// These bytes as the whole response (head without Content-Length: it is added), then close.
    Raw(Vec<u8>, Vec<u8>),
    /// The head, then a body that never ends: this filler over and over.
    Endless(Vec<u8>, &'static [u8]),
    /// Reads the request and never answers.
    Silent,
}

fn json_reply(status: &str, body: &str) -> Reply {
    Reply::Raw(
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\n").into_bytes(),
        body.as_bytes().to_vec(),
    )
}

/// A hand-written server for what no real peer does: bytes chosen per request line, every
/// request head it received kept for the test to read. Plain HTTP on loopback.
struct Odd {
    origin: String,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Odd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Odd {
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Starts the odd server on `bind` (`127.0.0.1:0`, `[::1]:0`); `routes` gets its origin.
async fn odd_server(bind: &str, routes: impl FnOnce(&str) -> Vec<(&'static str, Reply)>) -> Odd {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind(bind).await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let routes: Arc<Vec<(&'static str, Reply)>> = Arc::new(routes(&origin));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                seen.lock().unwrap().push(head.clone());
                let line = head.lines().next().unwrap_or("").to_string();
                let mut words = line.split(' ');
                let method = words.next().unwrap_or("");
                let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
                let key = format!("{method} {path}");
                let reply = routes
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| Reply::Raw(b"HTTP/1.1 404 Not Found\r\n".to_vec(), vec![]));
                match reply {
                    Reply::Raw(head, body) => {
                        let mut out = head;
                        out.extend_from_slice(
                            format!(
                                "content-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        out.extend_from_slice(&body);
                        let _ = tcp.write_all(&out).await;
                        let _ = tcp.shutdown().await;
                    }
                    Reply::Endless(head, filler) => {
                        let mut out = head;
                        out.extend_from_slice(b"connection: close\r\n\r\n");
                        if tcp.write_all(&out).await.is_err() {
                            return;
                        }
                        let filler = filler.repeat(64 * 1024 / filler.len());
                        while tcp.write_all(&filler).await.is_ok() {}
                    }
                    Reply::Silent => {
                        let _ = tcp.read_to_end(&mut Vec::new()).await;
                    }
                }
            });
        }
    });
    Odd {
        origin,
        heads,
        task,
    }
}

/// The 401 a protected MCP endpoint answers, with this WWW-Authenticate head part.
fn challenge(www_authenticate: &[u8]) -> Reply {
    let mut head = b"HTTP/1.1 401 Unauthorized\r\n".to_vec();
    head.extend_from_slice(www_authenticate);
    Reply::Raw(head, vec![])
}

fn prm(origin: &str) -> Reply {
    json_reply(
        "200 OK",
        &format!(r#"{{"resource":"{origin}/mcp","authorization_servers":["{origin}"]}}"#),
    )
}

async fn probe_odd(odd: &Odd, args: &[&str]) -> Probed {
    let dir = tempfile::tempdir().unwrap();
    let probed = run_probe(
        &format!("{}/mcp", odd.origin),
        None,
        dir.path(),
        args,
        false,
    )
    .await;
    // The capture lives in the folder: it goes when the result does, not before.
    Probed {
        _dir: Some(dir),
        ..probed
    }
}

fn summary<'a>(probed: &'a Probed, id: &str) -> &'a str {
    probed.step(id)["summary"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_url_is_dialled_with_a_valid_host_header() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let odd = odd_server("[::1]:0", |_| {
        vec![("POST /mcp", challenge(b"WWW-Authenticate: Bearer\r\n"))]
    })
    .await;
    let probed = probe_odd(&odd, &[]).await;
    assert_eq!(
        probed.step("reach")["status"],
        "pass",
        "{:#}",
        probed.report
    );
    let port = odd.origin.rsplit(':').next().unwrap();
    for head in odd.heads() {
        assert!(
            head.contains(&format!("\r\nhost: [::1]:{port}\r\n")),
            "{head}"
        );
    }
    // An address literal is not a DNS answer.
    let f = probed.fires("dns", "dns-ipv6-only", "warning");
    assert!(
        f["message"].as_str().unwrap().contains("IPv6 address"),
        "{f:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_url_that_fails_is_an_error_even_when_a_well_known_uri_answers() {
    let odd = odd_server("127.0.0.1:0", |origin| {
        vec![
            (
                "POST /mcp",
                challenge(
                    format!(
                        "WWW-Authenticate: Bearer resource_metadata=\"{origin}/.well-known/oauth-protected-resource/wrong\"\r\n"
                    )
                    .as_bytes(),
                ),
            ),
            ("GET /.well-known/oauth-protected-resource/mcp", prm(origin)),
        ]
    })
    .await;
    let probed = probe_odd(&odd, &[]).await;
    let f = probed.fires("resource_metadata", "prm-challenge-url", "error");
    let message = f["message"].as_str().unwrap();
    assert!(message.contains("/wrong answered 404"), "{message}");
    assert!(
        message.contains("/.well-known/oauth-protected-resource/mcp"),
        "{message}"
    );
    // The metadata was found, so the walk goes on to tell the rest.
    assert_ne!(probed.step("auth_server_metadata")["status"], "skip");
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_challenge_is_found_among_several_and_in_non_ascii_bytes() {
    for www_authenticate in [
        // Two challenges, Basic first: a client acts on the Bearer one.
        b"WWW-Authenticate: Basic realm=\"x\"\r\nWWW-Authenticate: Bearer resource_metadata=\"ORIGIN/meta\"\r\n".to_vec(),
        // A byte that is not UTF-8 in an unrelated parameter.
        b"WWW-Authenticate: Bearer realm=\"caf\xe9\", resource_metadata=\"ORIGIN/meta\"\r\n".to_vec(),
    ] {
        let odd = odd_server("127.0.0.1:0", |origin| {
            let value = String::from_utf8_lossy(&www_authenticate).replace("ORIGIN", origin);
            let value: Vec<u8> = value
                .chars()
                .map(|c| if c == '\u{fffd}' { 0xe9 } else { c as u8 })
                .collect();
            vec![
                ("POST /mcp", challenge(&value)),
                ("GET /meta", prm(origin)),
            ]
        })
        .await;
        let probed = probe_odd(&odd, &[]).await;
        assert!(
            summary(&probed, "challenge").contains("resource_metadata="),
            "{:#}",
            probed.step("challenge")
        );
        assert!(
            summary(&probed, "resource_metadata").starts_with("GET /meta → 200"),
            "{:#}",
            probed.step("resource_metadata")
        );
        assert!(!probed.checks().contains(&"prm-challenge-url".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_challenges_and_metadata_are_reported_not_crashed_on() {
    let odd = odd_server("127.0.0.1:0", |origin| {
        vec![
            // An unterminated quoted string, and a scheme with no parameters.
            (
                "POST /mcp",
                challenge(b"WWW-Authenticate: Bearer resource_metadata=\"http://\r\n"),
            ),
            // A JSON array where an object belongs, then not JSON at all.
            (
                "GET /.well-known/oauth-protected-resource/mcp",
                json_reply("200 OK", "[1,2,3]"),
            ),
            (
                "GET /.well-known/oauth-protected-resource",
                json_reply(
                    "200 OK",
                    &format!(r#"{{"resource":"{origin}/mcp","authorization_servers":["{origin}/tenant"]}}"#),
                ),
            ),
            // An authorization server with a path: only the second URL of the spec's order answers.
            (
                "GET /.well-known/openid-configuration/tenant",
                json_reply("200 OK", "{not json"),
            ),
            (
                "GET /tenant/.well-known/openid-configuration",
                json_reply("200 OK", r#"["an array"]"#),
            ),
        ]
    })
    .await;
    let probed = probe_odd(&odd, &[]).await;
    assert!(!probed.stderr.contains("panicked"), "{}", probed.stderr);
    // The array at the first URL is wrong (and said so); the root document leads on.
    let f = probed.fires("resource_metadata", "prm-authorization-servers", "error");
    assert!(
        f["evidence"][0].as_str().unwrap().contains("absent"),
        "{f:#}"
    );
    assert!(summary(&probed, "resource_metadata").contains("/tenant"));
    // Every URL of the spec's order for an issuer with a path, in that order.
    let asked: Vec<String> = odd
        .heads()
        .iter()
        .filter_map(|h| h.lines().next())
        .filter(|l| l.contains("openid-configuration") || l.contains("oauth-authorization-server"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        asked,
        [
            "GET /.well-known/oauth-authorization-server/tenant HTTP/1.1",
            "GET /.well-known/openid-configuration/tenant HTTP/1.1",
            "GET /tenant/.well-known/openid-configuration HTTP/1.1",
        ]
    );
    probed.fires("auth_server_metadata", "as-metadata-found", "error");
    assert_eq!(probed.code, 1);
}

/// An SSE comment of 4 KiB, sent forever: a stream that never brings the answer.
const KEEP_ALIVE: &[u8] = &{
    let mut line = [b'x'; 4096];
    line[0] = b':';
    line[4094] = b'\n';
    line[4095] = b'\n';
    line
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_cut_at_a_cap_and_said_in_words() {
    let odd = odd_server("127.0.0.1:0", |_| {
        vec![(
            "POST /mcp",
            Reply::Endless(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n".to_vec(),
                KEEP_ALIVE,
            ),
        )]
    })
    .await;
    // The deadline is far: the probe must stop on the size, not on the clock.
    let probed = probe_odd(&odd, &["--timeout", "120", "--init-timeout", "120"]).await;
    let reach = summary(&probed, "reach");
    assert!(reach.contains("stopped reading after 4 MiB"), "{reach}");
    probed.fires("reach", "reach-initialize", "error");

    let odd = odd_server("127.0.0.1:0", |_| {
        vec![
            ("POST /mcp", challenge(b"WWW-Authenticate: Bearer\r\n")),
            (
                "GET /.well-known/oauth-protected-resource/mcp",
                Reply::Endless(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_vec(),
                    b"[1,",
                ),
            ),
        ]
    })
    .await;
    let probed = probe_odd(&odd, &["--timeout", "120"]).await;
    let tried = &probed.step("resource_metadata")["exchanges"];
    assert_eq!(tried.as_array().unwrap().len(), 2, "{:#}", probed.report);
    assert_eq!(probed.step("resource_metadata")["status"], "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_each_step_within_its_deadline_in_words() {
    let odd = odd_server("127.0.0.1:0", |_| vec![("POST /mcp", Reply::Silent)]).await;
    let probed = probe_odd(&odd, &["--timeout", "0.5", "--init-timeout", "0.5"]).await;
    let reach = summary(&probed, "reach");
    assert!(reach.contains("no answer within 0.5 s"), "{reach}");
    let f = probed.fires("reach", "reach-initialize", "error");
    assert!(
        f["message"].as_str().unwrap().contains("got no answer"),
        "{f:#}"
    );

    // https:// to a port that accepts TCP and then says nothing: the TLS step gives up.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/mcp", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let probed = run_probe(&url, None, dir.path(), &["--timeout", "0.5"], false).await;
    hold.abort();
    let f = probed.fires("tls", "tls-handshake", "error");
    assert!(
        f["message"].as_str().unwrap().contains("within 0.5 s"),
        "{f:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_without_our_state_is_refused_and_no_token_is_asked_for() {
    let site = site(Faults {
        authorize_drops_state: true,
        ..Faults::default()
    })
    .await;
    let probed = probe_site(&site, &[], true).await;
    let authorize = probed.step("authorize");
    assert_eq!(authorize["status"], "fail");
    assert!(
        authorize["summary"]
            .as_str()
            .unwrap()
            .contains("without our state"),
        "{authorize:#}"
    );
    assert_eq!(probed.step("token")["status"], "skip");
    assert!(probed.step("token")["exchanges"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_port_in_use_fails_authorize_and_skips_the_rest() {
    let site = site(Faults::default()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let probed = probe_site(&site, &["--login", "--callback-port", &port], false).await;
    assert_eq!(probed.step("registration")["status"], "skip");
    let authorize = probed.step("authorize");
    assert_eq!(authorize["status"], "fail");
    assert!(
        authorize["summary"].as_str().unwrap().contains(&port),
        "{authorize:#}"
    );
    for id in ["token", "initialize"] {
        assert_eq!(probed.step(id)["status"], "skip", "{:#}", probed.report);
    }
    assert!(!probed.stderr.contains("authorize URL"));
    assert_eq!(probed.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_endpoint_that_is_not_https_is_neither_printed_nor_opened() {
    let odd = odd_server("127.0.0.1:0", |origin| {
        vec![
            (
                "POST /mcp",
                challenge(
                    format!("WWW-Authenticate: Bearer resource_metadata=\"{origin}/prm\"\r\n")
                        .as_bytes(),
                ),
            ),
            ("GET /prm", prm(origin)),
            (
                "GET /.well-known/oauth-authorization-server",
                json_reply(
                    "200 OK",
                    &format!(
                        r#"{{"issuer":"{origin}","authorization_endpoint":"file:///etc/passwd","token_endpoint":"{origin}/token","response_types_supported":["code"],"code_challenge_methods_supported":["S256"],"token_endpoint_auth_methods_supported":["none"]}}"#
                    ),
                ),
            ),
        ]
    })
    .await;
    let probed = probe_odd(&odd, &["--login", "--client-id", "pre-registered"]).await;
    let authorize = probed.step("authorize");
    assert_eq!(authorize["status"], "fail");
    assert!(
        authorize["summary"]
            .as_str()
            .unwrap()
            .contains("not an https URL"),
        "{authorize:#}"
    );
    assert!(
        !probed.stderr.contains("authorize URL"),
        "{}",
        probed.stderr
    );
    assert_eq!(probed.step("token")["status"], "skip");
    assert_eq!(probed.code, 1);
}

/// explain on the capture of a probe that logged in: every stage up to tools/list reached,
/// `call` not applicable (the probe stops at tools/list on purpose), no silence.
fn explains_a_whole_login(capture: &Path) {
    let explained = explain(capture);
    for stage in [
        "reach",
        "challenge",
        "resource_metadata",
        "auth_server_metadata",
        "registration",
        "authorize",
        "token",
        "initialize",
        "initialized",
        "get_stream",
        "list",
    ] {
        assert_eq!(stage_status(&explained, stage), "reached", "stage {stage}");
    }
    assert_eq!(stage_status(&explained, "call"), "not_applicable");
    assert!(explained["silence"].is_null(), "{}", explained["silence"]);
}
