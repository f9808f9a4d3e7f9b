//! `mcptap explain` on sessions recorded through the real proxy: the fixture connector
//! against the fixture MCP + OAuth server, correct and with each fault, plus hand-made
//! requests for the faults a client makes.

use std::time::Duration;

use hyper::{Request, Response};
use mcptap_fixture::client::{self, ClientOptions, ClientOutcome, ClientReport};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::Value;

use crate::util::*;

/// What one recorded session explains to.
pub struct Explained {
    pub report: Value,
    pub client: Option<ClientReport>,
    pub capture: Capture,
}

impl Explained {
    pub fn stage(&self, id: &str) -> &Value {
        self.report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no stage {id}"))
    }

    pub fn reached(&self, id: &str) -> bool {
        self.stage(id)["reached"] == true
    }

    pub fn findings(&self, check: &str) -> Vec<&Value> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"] == check)
            .collect()
    }

    /// The one finding of `check`, with the severity expected.
    pub fn fires(&self, check: &str, severity: &str) -> &Value {
        let found = self.findings(check);
        assert!(
            !found.is_empty(),
            "{check} did not fire; findings: {:#}",
            self.report["findings"]
        );
        assert_eq!(found[0]["severity"], severity, "{:#}", found[0]);
        found[0]
    }

    pub fn quiet(&self, check: &str) {
        let found = self.findings(check);
        assert!(found.is_empty(), "{check} fired: {found:#?}");
    }

    pub fn errors(&self) -> Vec<&Value> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .collect()
    }
}

/// Runs `mcptap explain --json` on a capture file.
pub fn explain_json(path: &std::path::Path) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["explain", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain --json prints JSON")
}

/// The fixture server (with `faults`) behind the proxy, driven by the fixture connector.
pub async fn session_with(faults: Faults) -> Explained {
    let server = FixtureServer::start(faults, None).await.unwrap();
    let proxy = TestProxy::to(&server.url()).start();
    let base = format!("http://{}", proxy.addr);
    server.set_public_base(base.clone());
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        client::run(&base, &ClientOptions::default()),
    )
    .await
    .expect("the fixture client finished");
    finish(proxy, Some(report))
}

fn finish(proxy: TestProxy, client: Option<ClientReport>) -> Explained {
    let capture = proxy.finish();
    // The proxy's folder is gone with it: explain a copy of the bytes it wrote.
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), &capture.raw).unwrap();
    let report = explain_json(copy.path());
    Explained {
        report,
        client,
        capture,
    }
}

/// The fixture server behind the proxy, with requests sent by hand (for client-side faults).
async fn by_hand<F, Fut>(faults: Faults, send: F) -> Explained
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let server = FixtureServer::start(faults, None).await.unwrap();
    let proxy = TestProxy::to(&server.url()).start();
    let base = format!("http://{}", proxy.addr);
    server.set_public_base(base.clone());
    send(base).await;
    finish(proxy, None)
}

async fn get(url: String, headers: &[(&str, &str)]) -> hyper::Response<hyper::body::Incoming> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h1_client()
        .request(req.body(full("")).unwrap())
        .await
        .unwrap()
}

async fn post(
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<hyper::body::Incoming> {
    let mut req = Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h1_client()
        .request(req.body(full(body.to_string())).unwrap())
        .await
        .unwrap()
}

const MCP_ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn a_correct_session_reaches_every_stage_with_no_error() {
    let s = session_with(Faults::default()).await;
    assert_eq!(s.client.as_ref().unwrap().outcome, ClientOutcome::Completed);
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
        "call",
    ] {
        assert!(
            s.reached(stage),
            "stage {stage} not reached: {:#}",
            s.report["stages"]
        );
    }
    assert!(s.report["silence"].is_null());
    assert!(s.errors().is_empty(), "{:#?}", s.errors());
    let warnings: Vec<_> = s.report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "warning")
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let token = &s.report["tokens"][0];
    assert_eq!(token["accepted"], true);
    assert!(!token["presented"].as_array().unwrap().is_empty());
    // Every rule a correct server keeps stays quiet.
    for check in [
        "challenge-present",
        "challenge-resource-metadata",
        "challenge-scope",
        "prm-fetch-ok",
        "prm-resource-match",
        "prm-authorization-servers",
        "as-issuer-match",
        "as-pkce-s256",
        "as-public-client",
        "dcr-response",
        "authorize-params",
        "authorize-redirect",
        "token-request",
        "token-response",
        "post-token-silence",
        "bearer-accepted",
        "init-latency",
        "mcp-url-redirect",
        "edge-block",
        "accept-406",
        "response-content-type",
        "sse-buffering",
        "sse-response-delivery",
        "session-header",
        "protocol-version-header",
        "get-405",
        "tls-handshake-failures",
        "cors",
    ] {
        s.quiet(check);
    }
}

/// The session of the write-up that started mcptap: the metadata names the base URL as
/// `resource`, the connector authorizes, gets its token, and sends nothing more.
#[tokio::test]
async fn the_case_session_names_the_resource_mismatch_and_the_silence_after_token() {
    let s = session_with(Faults {
        prm_resource_base_url: true,
        ..Faults::default()
    })
    .await;
    assert!(matches!(
        s.client.as_ref().unwrap().outcome,
        ClientOutcome::StoppedAfterToken { .. }
    ));
    assert!(s.reached("token"));
    assert!(!s.reached("initialize"));
    // The capture itself shows it: the token exchange is the last request that arrived.
    let last = s.capture.kind("request").last().copied().unwrap().clone();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["target"], "/token");
    assert_eq!(s.report["silence"]["after_stage"], "token");
    assert!(s.report["silence"]["expected_next"]
        .as_str()
        .unwrap()
        .contains("initialize"));
    let f = s.fires("prm-resource-match", "error");
    assert!(f["message"].as_str().unwrap().contains("base URL"), "{f:#}");
    assert_eq!(f["spec"], "RFC 9728 §3.3");
    let silence = s.fires("post-token-silence", "error");
    assert!(silence["message"]
        .as_str()
        .unwrap()
        .contains("never presented"));
    assert_eq!(s.report["tokens"][0]["accepted"], Value::Null);
}

macro_rules! fault_fires {
    ($name:ident, $field:ident, $check:literal, $severity:literal) => {
        #[tokio::test]
        async fn $name() {
            let s = session_with(Faults {
                $field: true,
                ..Faults::default()
            })
            .await;
            s.fires($check, $severity);
        }
    };
}

fault_fires!(
    prm_with_a_trailing_slash_is_a_mismatch,
    prm_resource_trailing_slash,
    "prm-resource-match",
    "error"
);
fault_fires!(
    prm_not_found_fires_prm_fetch_ok,
    prm_not_found,
    "prm-fetch-ok",
    "error"
);
fault_fires!(
    prm_as_html_fires_prm_fetch_ok,
    prm_html,
    "prm-fetch-ok",
    "error"
);
fault_fires!(
    prm_without_authorization_servers,
    prm_no_authorization_servers,
    "prm-authorization-servers",
    "error"
);
fault_fires!(
    a_401_without_www_authenticate,
    missing_www_authenticate,
    "challenge-present",
    "error"
);
fault_fires!(
    a_challenge_without_resource_metadata,
    challenge_no_resource_metadata,
    "challenge-resource-metadata",
    "warning"
);
fault_fires!(
    a_challenge_with_a_relative_resource_metadata,
    challenge_relative_resource_metadata,
    "challenge-resource-metadata",
    "error"
);
fault_fires!(
    an_issuer_that_is_not_the_metadata_url,
    issuer_mismatch,
    "as-issuer-match",
    "error"
);
fault_fires!(no_s256_pkce, no_pkce_s256, "as-pkce-s256", "error");
fault_fires!(
    no_public_client_path,
    no_public_client,
    "as-public-client",
    "warning"
);
fault_fires!(
    a_registration_without_client_id,
    dcr_bad_response,
    "dcr-response",
    "error"
);
fault_fires!(
    a_redirect_that_drops_state,
    authorize_drops_state,
    "authorize-redirect",
    "error"
);
fault_fires!(
    a_redirect_without_the_promised_iss,
    authorize_drops_iss,
    "authorize-iss",
    "error"
);
fault_fires!(
    a_token_error_is_named,
    token_error,
    "token-response",
    "error"
);
fault_fires!(
    a_token_without_token_type,
    token_no_token_type,
    "token-response",
    "error"
);
fault_fires!(
    the_first_bearer_rejected_then_accepted,
    reject_first_bearer,
    "bearer-accepted",
    "warning"
);
fault_fires!(
    every_bearer_rejected,
    reject_all_bearer,
    "bearer-accepted",
    "error"
);
fault_fires!(an_edge_block_page, edge_block, "edge-block", "error");
fault_fires!(a_406_to_a_correct_accept, accept_406, "accept-406", "error");
fault_fires!(
    a_json_rpc_request_answered_as_text,
    wrong_content_type,
    "response-content-type",
    "error"
);
fault_fires!(a_get_stream_answered_405, get_405, "get-405", "info");
fault_fires!(
    a_buffered_event_stream,
    buffered_sse,
    "sse-buffering",
    "warning"
);
fault_fires!(a_gzipped_event_stream, gzip_sse, "sse-buffering", "warning");
fault_fires!(
    an_mcp_endpoint_that_redirects,
    mcp_redirect,
    "mcp-url-redirect",
    "warning"
);

#[tokio::test]
async fn a_notification_answered_200_with_a_body() {
    let s = session_with(Faults {
        notification_200_body: true,
        ..Faults::default()
    })
    .await;
    let f = &s.findings("response-content-type");
    assert!(!f.is_empty(), "{:#}", s.report["findings"]);
}

#[tokio::test]
async fn a_slow_initialize_fires_init_latency() {
    let s = session_with(Faults {
        slow_initialize: Some(Duration::from_millis(10_500)),
        ..Faults::default()
    })
    .await;
    s.fires("init-latency", "warning");
}

#[tokio::test]
async fn a_challenge_without_scope_is_noted() {
    // A hand-made server whose challenge names the metadata but no scope.
    let up = Upstream::start(|_req| async move {
        Response::builder()
            .status(401)
            .header("www-authenticate", "Bearer resource_metadata=\"http://127.0.0.1:1/.well-known/oauth-protected-resource\"")
            .body(full(""))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    read_all(post(proxy.url("/mcp"), &[MCP_ACCEPT, JSON], INIT).await).await;
    let s = finish(proxy, None);
    s.fires("challenge-scope", "info");
    s.quiet("challenge-present");
}

#[tokio::test]
async fn an_authorize_request_without_pkce_or_resource() {
    let s = by_hand(Faults::default(), |base| async move {
        read_all(
            get(
                format!("{base}/authorize?response_type=code&client_id=nobody&state=s"),
                &[],
            )
            .await,
        )
        .await;
    })
    .await;
    let f = s.fires("authorize-params", "warning");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains("code_challenge") && message.contains("resource"),
        "{message}"
    );
}

#[tokio::test]
async fn a_token_request_without_a_verifier() {
    let s = by_hand(Faults::default(), |base| async move {
        read_all(
            post(
                format!("{base}/token"),
                &[("content-type", "application/x-www-form-urlencoded")],
                "grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcallback&client_id=x",
            )
            .await,
        )
        .await;
    })
    .await;
    s.fires("token-request", "error");
}

#[tokio::test]
async fn a_browser_client_meets_a_server_without_cors() {
    let s = by_hand(
        Faults {
            no_cors: true,
            ..Faults::default()
        },
        |base| async move {
            let mut req = Request::options(format!("{base}/mcp"))
                .header("origin", "http://localhost:6274")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type, mcp-protocol-version",
                );
            req = req.header("accept", "*/*");
            read_all(
                h1_client()
                    .request(req.body(full("")).unwrap())
                    .await
                    .unwrap(),
            )
            .await;
        },
    )
    .await;
    s.fires("cors", "warning");
}

#[tokio::test]
async fn a_browser_client_meets_a_server_with_cors() {
    let s = by_hand(Faults::default(), |base| async move {
        let req = Request::options(format!("{base}/mcp"))
            .header("origin", "http://localhost:6274")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-protocol-version",
            );
        read_all(
            h1_client()
                .request(req.body(full("")).unwrap())
                .await
                .unwrap(),
        )
        .await;
    })
    .await;
    s.quiet("cors");
}

/// A server without authorization that answers every JSON-RPC request with JSON and hands out
/// a session id: enough for the client-side header rules.
async fn plain_mcp_upstream() -> Upstream {
    Upstream::start(|req| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(id) = msg.get("id").cloned() else {
            return Response::builder().status(202).body(full("")).unwrap();
        };
        let result = if msg["method"] == "initialize" {
            serde_json::json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"plain","version":"1"}})
        } else {
            serde_json::json!({"tools":[]})
        };
        Response::builder()
            .header("content-type", "application/json")
            .header("mcp-session-id", "session-1")
            .body(full(serde_json::json!({"jsonrpc":"2.0","id":id,"result":result}).to_string()))
            .unwrap()
    })
    .await
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

#[tokio::test]
async fn requests_without_the_session_and_version_headers() {
    let up = plain_mcp_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    read_all(post(proxy.url("/mcp"), &[MCP_ACCEPT, JSON], INIT).await).await;
    read_all(post(proxy.url("/mcp"), &[MCP_ACCEPT, JSON], LIST).await).await;
    let s = finish(proxy, None);
    assert!(s.reached("initialize") && s.reached("list"));
    s.fires("session-header", "warning");
    s.fires("protocol-version-header", "warning");
}

#[tokio::test]
async fn requests_with_the_session_and_version_headers() {
    let up = plain_mcp_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    read_all(post(proxy.url("/mcp"), &[MCP_ACCEPT, JSON], INIT).await).await;
    let headers = [
        MCP_ACCEPT,
        JSON,
        ("mcp-session-id", "session-1"),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    read_all(post(proxy.url("/mcp"), &headers, LIST).await).await;
    let s = finish(proxy, None);
    s.quiet("session-header");
    s.quiet("protocol-version-header");
    s.quiet("response-content-type");
}

#[tokio::test]
async fn an_event_stream_that_ends_without_the_answer() {
    let up = Upstream::start(|_req| async move {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(full("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n"))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    let call =
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{}}}"#;
    read_all(post(proxy.url("/mcp"), &[MCP_ACCEPT, JSON], call).await).await;
    let s = finish(proxy, None);
    s.fires("sse-response-delivery", "error");
}

/// One WWW-Authenticate value with two challenges, the Bearer one naming a metadata URL that
/// is not there, while the well-known URL answers: a client uses the named URL and stops.
#[tokio::test]
async fn a_challenge_url_that_is_not_found_is_an_error_even_if_a_well_known_one_answers() {
    let up = Upstream::start(|req| async move {
        let metadata = r#"{"resource":"http://127.0.0.1/mcp","authorization_servers":["http://127.0.0.1"]}"#;
        match req.uri().path() {
            "/mcp" => Response::builder()
                .status(401)
                .header(
                    "www-authenticate",
                    r#"Basic realm="a, b", Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource/elsewhere", scope="mcp""#,
                )
                .body(full("")),
            "/.well-known/oauth-protected-resource/mcp" => Response::builder()
                .header("content-type", "application/json")
                .body(full(metadata)),
            _ => Response::builder().status(404).body(full("not found")),
        }
        .unwrap()
    })
    .await;
    let proxy = TestProxy::to(&up.url()).start();
    read_all(post(proxy.url("/mcp"), &[MCP_ACCEPT, JSON], INIT).await).await;
    for path in [
        "/.well-known/oauth-protected-resource/elsewhere",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        read_all(get(proxy.url(path), &[]).await).await;
    }
    let s = finish(proxy, None);
    // The Bearer challenge is found after the Basic one, with its scope.
    s.quiet("challenge-present");
    s.quiet("challenge-scope");
    let f = s.fires("prm-fetch-ok", "error");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("the URL the 401 challenge names"),
        "{f:#}"
    );
    assert_eq!(f["exchange"], 2);
}
