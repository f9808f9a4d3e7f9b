//! `mcptap diff` on sessions recorded through the real proxy: the fixture connector against
//! the fixture MCP + OAuth server, correct and with one planted fault, plus hand-made request
//! sequences for retries and missing calls. Each test compares two captures with the real
//! binary and reads its `--json` report (or its side-by-side view).

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::{Request, Response};
use mcptap_fixture::client::{self, ClientOptions};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::{json, Value};
use tempfile::NamedTempFile;

use crate::util::*;

/// Records the fixture connector's whole flow against the fixture server with `faults`,
/// through the proxy; the capture's bytes in a temp file.
async fn record(faults: Faults) -> NamedTempFile {
    let server = FixtureServer::start(faults, None).await.unwrap();
    let proxy = TestProxy::to(&server.url()).start();
    let base = format!("http://{}", proxy.addr);
    server.set_public_base(base.clone());
    tokio::time::timeout(
        Duration::from_secs(30),
        client::run(&base, &ClientOptions::default()),
    )
    .await
    .expect("the fixture client finished");
    keep(proxy.finish())
}

fn keep(capture: Capture) -> NamedTempFile {
    // The proxy's folder goes with it: keep a copy of the bytes it wrote.
    let file = NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &capture.raw).unwrap();
    file
}

/// A recording of the correct flow, made once and shared by the tests that compare with it.
async fn correct() -> NamedTempFile {
    static CORRECT: tokio::sync::OnceCell<Vec<u8>> = tokio::sync::OnceCell::const_new();
    let bytes = CORRECT
        .get_or_init(|| async { std::fs::read(record(Faults::default()).await.path()).unwrap() })
        .await;
    let file = NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}

fn mcptap_diff(a: &Path, b: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .arg("diff")
        .arg(a)
        .arg(b)
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("COLUMNS")
        .output()
        .unwrap()
}

/// `mcptap diff --json A B [extra]`, which must succeed.
fn diff_json(a: &Path, b: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = mcptap_diff(a, b, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("diff --json prints JSON")
}

fn exit_code(a: &Path, b: &Path) -> i32 {
    mcptap_diff(a, b, &["--exit-code"]).status.code().unwrap()
}

fn entries<'r>(report: &'r Value, kind: &str) -> Vec<&'r Value> {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Every field named by any difference of the report.
fn fields(report: &Value) -> Vec<String> {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["differences"].as_array().unwrap())
        .map(|d| d["field"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_recordings_of_the_correct_flow_have_no_differences() {
    let first = correct().await;
    let first = first.path();
    let second = record(Faults::default()).await;
    let report = diff_json(first, second.path(), &[]);
    assert!(
        report["first_divergence"].is_null(),
        "{:#}",
        report["first_divergence"]
    );
    let summary = &report["summary"];
    assert_eq!(summary["differences"], 0, "{:#}", report);
    assert_eq!(summary["changed"], 0);
    assert_eq!(summary["inserted"], 0);
    assert_eq!(summary["deleted"], 0);
    assert_eq!(summary["moved"], 0);
    assert_eq!(summary["aligned"], report["a"]["exchanges"]);
    assert_eq!(exit_code(first, second.path()), 0);

    // The suppression is doing the work: strictly, the two recordings differ everywhere a
    // random value lives — state and PKCE, issued client ids, session ids, fingerprints.
    let strict = diff_json(first, second.path(), &["--strict"]);
    let strict_fields = fields(&strict);
    for expected in [
        "query.state",
        "query.code_challenge",
        "query.client_id",
        "form.code",
        "body.client_id",
        "header.mcp-session-id",
        "request.header.authorization",
        "body.access_token",
    ] {
        assert!(
            strict_fields.iter().any(|f| f == expected),
            "--strict does not show {expected}: {strict_fields:?}"
        );
    }
    assert!(strict["summary"]["changed"].as_u64().unwrap() > 5);

    // Timings only when asked; with a 0 ms threshold some always differ.
    assert!(!fields(&report).iter().any(|f| f.starts_with("timing")));
    let timed = diff_json(first, second.path(), &["--timing-threshold", "0"]);
    assert!(
        fields(&timed).iter().any(|f| f.starts_with("timing.")),
        "{:?}",
        fields(&timed)
    );
}

/// The session of CASE.md: the metadata names the base URL as `resource`.
#[tokio::test]
async fn a_resource_that_names_the_base_url_is_the_first_divergence() {
    let a = correct().await;
    let a = a.path();
    let b = record(Faults {
        prm_resource_base_url: true,
        ..Faults::default()
    })
    .await;
    let report = diff_json(a, b.path(), &[]);
    let first = &report["first_divergence"];
    assert_eq!(first["kind"], "changed", "{first:#}");
    assert_eq!(first["field"], "body.resource");
    let sentence = first["sentence"].as_str().unwrap();
    assert!(
        sentence.starts_with("resource_metadata (#2 GET /.well-known/oauth-protected-resource/mcp): body.resource is \"http://127.0.0.1:"),
        "{sentence}"
    );
    assert!(
        sentence.contains("/mcp\" in A, \"http://127.0.0.1:"),
        "{sentence}"
    );
    // That is the one changed pair; then the connector stopped, so the MCP exchanges are
    // only in A.
    let changed = entries(&report, "changed");
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let only_a =
        report["a"]["exchanges"].as_u64().unwrap() - report["b"]["exchanges"].as_u64().unwrap();
    assert_eq!(report["summary"]["deleted"], only_a);
    assert_eq!(report["summary"]["inserted"], 0);
    assert!(entries(&report, "deleted")
        .iter()
        .all(|e| e["a"]["role"] == "mcp"));
    assert_eq!(exit_code(a, b.path()), 1);

    // --html writes the same comparison as a page: the pair with the fault marked by its field.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("compare.html");
    let out = mcptap_diff(a, b.path(), &["--html", page.to_str().unwrap()]);
    assert!(out.status.success());
    let data = crate::report::page_data(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(data["mode"], "diff");
    assert_eq!(data["diff_first"], report["first_divergence"]["sentence"]);
    let marked: Vec<&Value> = data["diff"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["differs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == "body.resource")
        })
        .collect();
    assert_eq!(marked.len(), 1, "{:#}", data["diff"]);
    assert_eq!(marked[0]["a"], 2);

    // Ignoring the field leaves the silence after the token as the first divergence.
    let ignored = diff_json(a, b.path(), &["--ignore", "/body/resource"]);
    assert_eq!(ignored["summary"]["changed"], 0, "{:#}", ignored["entries"]);
    assert_eq!(ignored["first_divergence"]["kind"], "deleted");
    assert_eq!(
        ignored["first_divergence"]["sentence"],
        "initialize (#7 POST /mcp) is only in A"
    );
}

#[tokio::test]
async fn a_401_without_www_authenticate_is_the_one_difference() {
    let a = correct().await;
    let a = a.path();
    let b = record(Faults {
        missing_www_authenticate: true,
        ..Faults::default()
    })
    .await;
    let report = diff_json(a, b.path(), &[]);
    let first = &report["first_divergence"];
    assert_eq!(first["field"], "header.www-authenticate", "{first:#}");
    let sentence = first["sentence"].as_str().unwrap();
    assert!(
        sentence.starts_with(
            "initialize (#1 POST /mcp): header.www-authenticate is \"Bearer resource_metadata="
        ),
        "{sentence}"
    );
    assert!(sentence.ends_with("in A, absent in B"), "{sentence}");
    assert_eq!(
        report["summary"]["differences"], 1,
        "{:#}",
        report["entries"]
    );
    assert_eq!(exit_code(a, b.path()), 1);
}

#[tokio::test]
async fn a_get_stream_answered_405_differs_in_status_first() {
    let a = correct().await;
    let a = a.path();
    let b = record(Faults {
        get_405: true,
        ..Faults::default()
    })
    .await;
    let report = diff_json(a, b.path(), &[]);
    let first = &report["first_divergence"];
    assert_eq!(first["field"], "status", "{first:#}");
    assert_eq!(
        first["sentence"],
        "get_stream (#9 GET /mcp): status is 200 in A, 405 in B"
    );
    let changed = entries(&report, "changed");
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(report["summary"]["inserted"], 0);
    assert_eq!(report["summary"]["deleted"], 0);
    assert_eq!(exit_code(a, b.path()), 1);

    // The side-by-side view says the same, fitted to the width asked for, without colour.
    let out = mcptap_diff(a, b.path(), &["--width", "100"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("First divergence: get_stream (#9 GET /mcp): status is 200 in A, 405 in B"),
        "{text}"
    );
    assert!(text.contains("≠ #9 GET /mcp 200"), "{text}");
    assert!(text.contains("= #10 POST /mcp tools/list 200"), "{text}");
    assert!(!text.contains('\x1b'), "NO_COLOR is set: {text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
    }
}

/// A retry that succeeds the second time shows as one extra 401, and nothing else moves.
#[tokio::test]
async fn a_rejected_first_bearer_is_one_inserted_401() {
    let a = correct().await;
    let a = a.path();
    let b = record(Faults {
        reject_first_bearer: true,
        ..Faults::default()
    })
    .await;
    let report = diff_json(a, b.path(), &[]);
    let inserted = entries(&report, "inserted");
    assert_eq!(inserted.len(), 1, "{:#}", report["entries"]);
    assert_eq!(inserted[0]["b"]["status"], 401);
    assert_eq!(inserted[0]["label"], "initialize");
    let summary = &report["summary"];
    assert_eq!(summary["changed"], 0, "{:#}", report["entries"]);
    assert_eq!(summary["deleted"], 0);
    assert_eq!(summary["aligned"], report["a"]["exchanges"]);
    assert_eq!(
        report["first_divergence"]["sentence"],
        "initialize (#7 POST /mcp) is only in B"
    );
}

/// A plain MCP server without authorization that hands out a fresh session id per
/// initialize and stamps every answer with a request id.
async fn plain_mcp_upstream() -> Upstream {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Upstream::start(|req| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{n:08x}-0000-4000-8000-{:012x}", n * 7919);
        let Some(id) = msg.get("id").cloned() else {
            return Response::builder()
                .status(202)
                .header("x-request-id", request_id)
                .body(full(""))
                .unwrap();
        };
        let result = match msg["method"].as_str() {
            Some("initialize") => {
                json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"plain","version":"1"}})
            }
            Some("tools/list") => json!({"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}),
            _ => json!({"content":[{"type":"text","text":"hello"}],"isError":false}),
        };
        Response::builder()
            .header("content-type", "application/json")
            .header("mcp-session-id", format!("session-{n}-{}", n * 104729))
            .header("x-request-id", request_id)
            .body(full(json!({"jsonrpc":"2.0","id":id,"result":result}).to_string()))
            .unwrap()
    })
    .await
}

/// POSTs JSON-RPC bodies to the plain server through the proxy, one after another.
async fn by_hand(bodies: &[&str]) -> NamedTempFile {
    let up = plain_mcp_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    for body in bodies {
        let req = Request::post(proxy.url("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap();
        read_all(h1_client().request(req).await.unwrap()).await;
    }
    keep(proxy.finish())
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

#[tokio::test]
async fn an_extra_retry_and_a_missing_final_call_are_one_insertion_and_one_deletion() {
    let list = |id: u32| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
    let (list2, list3) = (list(2), list(3));
    let a = by_hand(&[INIT, INITIALIZED, &list2, call]).await;
    let retry = INIT.replace("\"id\":1", "\"id\":2");
    let b = by_hand(&[INIT, &retry, INITIALIZED, &list3]).await;
    let report = diff_json(a.path(), b.path(), &[]);
    let summary = &report["summary"];
    assert_eq!(summary["inserted"], 1, "{:#}", report["entries"]);
    assert_eq!(summary["deleted"], 1);
    assert_eq!(summary["unchanged"], 3);
    assert_eq!(summary["changed"], 0);
    assert_eq!(summary["moved"], 0);
    assert_eq!(entries(&report, "inserted")[0]["label"], "initialize");
    let deleted = entries(&report, "deleted");
    assert_eq!(deleted[0]["label"], "tools/call");
    assert_eq!(deleted[0]["a"]["ex"], 4);
    // Strictly, the session ids and request ids the server made up differ.
    let strict = fields(&diff_json(a.path(), b.path(), &["--strict"]));
    assert!(
        strict.iter().any(|f| f == "header.mcp-session-id"),
        "{strict:?}"
    );
    assert!(
        strict.iter().any(|f| f == "header.x-request-id"),
        "{strict:?}"
    );
}

#[tokio::test]
async fn reordered_exchanges_show_as_moved() {
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let ping = r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;
    let a = by_hand(&[INIT, list, ping]).await;
    let b = by_hand(&[INIT, ping, list]).await;
    let report = diff_json(a.path(), b.path(), &[]);
    assert_eq!(report["summary"]["moved"], 1, "{:#}", report["entries"]);
    assert_eq!(report["summary"]["unchanged"], 2);
    assert_eq!(report["first_divergence"]["kind"], "moved");
}

#[tokio::test]
async fn the_json_report_has_the_documented_fields() {
    let a = by_hand(&[INIT, INITIALIZED]).await;
    let b = by_hand(&[INIT]).await;
    let report = diff_json(a.path(), b.path(), &["--ignore", "x-powered-by"]);
    let mut top: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        [
            "a",
            "b",
            "entries",
            "first_divergence",
            "format",
            "options",
            "summary",
            "version"
        ]
    );
    assert_eq!(report["format"], "mcptap-diff");
    assert_eq!(report["version"], 1);
    for side in ["a", "b"] {
        for field in ["capture", "session_id", "exchanges", "routes", "warnings"] {
            assert!(!report[side][field].is_null(), "{side}.{field}");
        }
    }
    assert_eq!(report["options"]["ignore"], json!(["x-powered-by"]));
    for field in [
        "aligned",
        "unchanged",
        "changed",
        "inserted",
        "deleted",
        "moved",
        "differences",
    ] {
        assert!(report["summary"][field].is_u64(), "summary.{field}");
    }
    let first = &report["first_divergence"];
    assert_eq!(first["kind"], "deleted");
    assert_eq!(first["entry"], 1);
    assert!(first["field"].is_null());
    assert!(first["sentence"].is_string());
    let entry = &report["entries"][1];
    for field in ["kind", "label", "a", "b", "differences"] {
        assert!(entry.get(field).is_some(), "entries[].{field}");
    }
    for field in ["ex", "method", "path", "status", "rpc", "role"] {
        assert!(entry["a"].get(field).is_some(), "entries[].a.{field}");
    }
    assert!(entry["b"].is_null());
}

#[tokio::test]
async fn an_unreadable_capture_is_one_line_and_status_2() {
    let a = by_hand(&[INIT]).await;
    let not_a_capture = NamedTempFile::new().unwrap();
    std::fs::write(not_a_capture.path(), "hello\n").unwrap();
    for b in [
        not_a_capture.path(),
        Path::new("/nonexistent/capture.jsonl"),
    ] {
        let out = mcptap_diff(a.path(), b, &[]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("mcptap: error: "), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
