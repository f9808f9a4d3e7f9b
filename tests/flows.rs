//! Client flows: one capture holding several clients at once — one that completes, one that
//! goes silent after its token, one refused at its first step, and a scanner — told apart,
//! listed one line each, and the silent one explained first.

use std::time::Duration;

use hyper::Request;
use mcptap_fixture::client::{self, ClientOptions, ClientOutcome};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::Value;

use std::ffi::OsStr;

use crate::explain::explain_json;
use crate::report::{mcptap, mcptap_ok};
use crate::util::*;

/// Runs `mcptap explain` with `args` on `path`; its standard output.
fn explain_text(path: &std::path::Path, args: &[&str]) -> String {
    let mut all: Vec<&OsStr> = vec!["explain".as_ref(), path.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    String::from_utf8(mcptap_ok(&all).stdout).unwrap()
}

/// The server of ../shared/CASE.md (its resource metadata names the base URL, not the MCP
/// endpoint) behind the proxy started with `args`; the proxy's URL.
async fn case_server(args: &[&str]) -> (FixtureServer, TestProxy, String) {
    case_server_with(args, false).await
}

/// [`case_server`], keeping the proxy's live lines when `live`.
async fn case_server_with(args: &[&str], live: bool) -> (FixtureServer, TestProxy, String) {
    let server = FixtureServer::start(
        Faults {
            prm_resource_base_url: true,
            ..Faults::default()
        },
        None,
    )
    .await
    .unwrap();
    let proxy = TestProxy::to(&server.url()).args(args);
    let proxy = if live { proxy.live() } else { proxy }.start();
    let base = format!("http://{}", proxy.addr);
    server.set_public_base(base.clone());
    (server, proxy, base)
}

/// Two connectors at once against the server of ../shared/CASE.md, their requests
/// interleaved: `connector-lenient/1` carries on past the resource mismatch to a tool call,
/// `connector-strict/1` stops after its token.
async fn two_connectors(base: &str) {
    let lenient = ClientOptions {
        user_agent: "connector-lenient/1".into(),
        stop_after_token_on_resource_mismatch: false,
        ..ClientOptions::default()
    };
    let strict = ClientOptions {
        user_agent: "connector-strict/1".into(),
        ..ClientOptions::default()
    };
    let (done, silent) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(client::run(base, &lenient), client::run(base, &strict))
    })
    .await
    .expect("both connectors finished");
    assert!(
        matches!(done.outcome, ClientOutcome::Completed),
        "{:?}",
        done.outcome
    );
    assert!(
        matches!(silent.outcome, ClientOutcome::StoppedAfterToken { .. }),
        "{:?}",
        silent.outcome
    );
}

async fn send(req: Request<UpBody>) -> u16 {
    let resp = h1_client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    read_all(resp).await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_clients_are_told_apart_and_the_silent_one_is_explained_first() {
    let (_server, proxy, base) = case_server(&[]).await;

    // A client refused at its first step: a bearer token this server never issued.
    let refused = send(
        Request::post(format!("{base}/mcp"))
            .header("authorization", "Bearer a-token-from-somewhere-else")
            .header("user-agent", "refused-client/1")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(full(
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"r","version":"1"}}}"#,
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(refused, 401);
    // A scanner knocking.
    for path in ["/favicon.ico", "/wp-login.php", "/healthz"] {
        send(
            Request::get(format!("{base}{path}"))
                .header("user-agent", "scanner/1")
                .body(full(""))
                .unwrap(),
        )
        .await;
    }
    two_connectors(&base).await;

    let capture = proxy.finish();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &capture.raw).unwrap();
    let report = explain_json(file.path());

    let flows = report["flows"].as_array().expect("flows[]");
    assert_eq!(flows.len(), 3, "{:#}", report["flows"]);
    let flow = |agent: &str| -> &Value {
        flows
            .iter()
            .find(|f| f["client"].as_str().unwrap().contains(agent))
            .unwrap_or_else(|| panic!("no flow of {agent}: {:#}", report["flows"]))
    };
    // Every exchange is in exactly one flow or in the other traffic.
    let mut seen: Vec<u64> = flows
        .iter()
        .flat_map(|f| f["exchange_ids"].as_array().unwrap())
        .chain(report["other_traffic"].as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, capture.exchanges());
    let other: Vec<&str> = report["other_traffic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ex| {
            capture.one(ex.as_u64().unwrap(), "request")["target"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(other, ["/favicon.ico", "/wp-login.php", "/healthz"]);

    // Each flow's own ladder: the whole way, silent after the token, refused at the start.
    let lenient = flow("connector-lenient");
    assert_eq!(lenient["silence"], Value::Null, "{lenient:#}");
    assert!(lenient["stages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == "call" && s["reached"] == true));
    let strict = flow("connector-strict");
    assert_eq!(strict["furthest_stage"], "token", "{strict:#}");
    assert_eq!(strict["silence"]["after_stage"], "token");
    assert_eq!(strict["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(
        strict["tokens"][0]["accepted"],
        Value::Null,
        "never presented"
    );
    // The lenient client's token was presented: the two lineages were not mixed.
    assert_eq!(
        lenient["tokens"][0]["accepted"], true,
        "{:#}",
        lenient["tokens"]
    );
    let refused = flow("refused-client");
    assert_eq!(refused["exchange_ids"].as_array().unwrap().len(), 1);

    // The silent flow is the one explained, and the top-level fields are its.
    assert_eq!(
        report["flow"]["number"], strict["number"],
        "{:#}",
        report["flow"]
    );
    assert!(
        report["flow"]["why"].as_str().unwrap().contains("silent"),
        "{}",
        report["flow"]["why"]
    );
    assert_eq!(report["silence"]["after_stage"], "token");
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "post-token-silence"));

    // The screen: a line per flow, then the chosen flow in full.
    let text = explain_text(file.path(), &[]);
    assert!(
        text.contains("3 client flows and 3 exchanges of other traffic"),
        "{text}"
    );
    for agent in [
        "connector-lenient/1",
        "connector-strict/1",
        "refused-client/1",
    ] {
        assert!(text.contains(agent), "{agent} missing:\n{text}");
    }
    let header = format!("━━ Flow {} ·", strict["number"]);
    assert_eq!(text.matches("━━ Flow").count(), 1, "{text}");
    assert!(text.contains(&header), "{text}");
    assert!(text.contains("Went quiet after token"), "{text}");
    // Another flow on request, and every flow.
    let number = lenient["number"].to_string();
    let text = explain_text(file.path(), &["--flow", &number]);
    assert!(
        text.contains("none: the session reached tools/call"),
        "{text}"
    );
    let text = explain_text(file.path(), &["--all"]);
    assert_eq!(text.matches("━━ Flow").count(), 3, "{text}");

    // diff: two flows of the one capture, the first divergence named.
    let (whole, silent) = numbers(&report);
    let (whole_n, silent_n) = (whole.to_string(), silent.to_string());
    let out = mcptap_ok(&[
        "diff".as_ref(),
        file.path().as_os_str(),
        file.path().as_os_str(),
        "--flow-a".as_ref(),
        whole_n.as_ref(),
        "--flow-b".as_ref(),
        silent_n.as_ref(),
        "--json".as_ref(),
        // Two clients: their User-Agents differ by nature.
        "--ignore".as_ref(),
        "user-agent".as_ref(),
    ]);
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cmp["a"]["exchanges"],
        lenient["exchange_ids"].as_array().unwrap().len()
    );
    assert_eq!(
        cmp["b"]["exchanges"],
        strict["exchange_ids"].as_array().unwrap().len()
    );
    assert!(cmp["a"]["capture"]
        .as_str()
        .unwrap()
        .ends_with(&format!("(flow {whole})")));
    let first = &cmp["first_divergence"];
    assert_eq!(first["kind"], "deleted", "{first:#}");
    assert!(
        first["sentence"].as_str().unwrap().contains("initialize"),
        "the silent flow stops where the whole one goes on to initialize: {first:#}"
    );
    // export: one flow's exchanges, no other.
    let har = tempfile::NamedTempFile::new().unwrap();
    mcptap_ok(&[
        "export".as_ref(),
        file.path().as_os_str(),
        "--flow".as_ref(),
        silent_n.as_ref(),
        "--har".as_ref(),
        har.path().as_os_str(),
    ]);
    let har: Value = serde_json::from_slice(&std::fs::read(har.path()).unwrap()).unwrap();
    let urls: Vec<&str> = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls.len(),
        strict["exchange_ids"].as_array().unwrap().len(),
        "{urls:#?}"
    );
    assert!(urls.last().unwrap().ends_with("/token"), "{urls:#?}");

    // report: the flow table, and one flow's sequence alone on request.
    if crate::report::browser_ready("interleaved_clients_are_told_apart") {
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("flows.html");
        crate::report::mcptap_ok(&[
            "report".as_ref(),
            file.path().as_os_str(),
            "-o".as_ref(),
            html.as_os_str(),
        ]);
        let png = crate::report::artifacts().join("report-flows.png");
        let filter = format!("--filter=flow:{silent}");
        let page = crate::report::render(&html, &png, &[&filter]);
        let listed: Vec<u64> = page["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["flow"].as_u64().unwrap())
            .collect();
        assert_eq!(listed, [1, 2, 3], "{:#}", page["flows"]);
        let shown = page["filtered"]["shown"].as_u64().unwrap();
        assert_eq!(
            shown as usize,
            strict["exchange_ids"].as_array().unwrap().len(),
            "{:#}",
            page["filtered"]
        );
        // The stages on the page are the silent flow's.
        assert!(
            page["silence"][0]["stage"] == "token",
            "{:#}",
            page["silence"]
        );
    }

    let one = mcptap(&[
        "explain".as_ref(),
        file.path().as_os_str(),
        "--flow".as_ref(),
        "9".as_ref(),
    ]);
    assert!(!one.status.success());
    assert!(
        String::from_utf8_lossy(&one.stderr).contains("has 3 client flows"),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
}

/// The numbers of the lenient (whole) and strict (silent) connectors' flows, as `explain`
/// lists them.
fn numbers(report: &Value) -> (u64, u64) {
    let of = |agent: &str| {
        report["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["client"].as_str().unwrap().contains(agent))
            .unwrap()["number"]
            .as_u64()
            .unwrap()
    };
    (of("connector-lenient"), of("connector-strict"))
}

/// `--rotate-size`: a long capture goes on in numbered files, each 0600 and beginning with the
/// session line; every reading command reads them as one capture, named by the first file,
/// their folder or a pattern, and a client flow that spans files is one flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_capture_reads_as_one_and_its_flow_spans_the_files() {
    use std::os::unix::fs::PermissionsExt;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("cap.jsonl");
    let proxy = TestProxy::to(&server.url())
        .capture_to(&first)
        .args(&["--rotate-size", "4KiB"])
        .start();
    let base = format!("http://{}", proxy.addr);
    server.set_public_base(base.clone());
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        client::run(&base, &ClientOptions::default()),
    )
    .await
    .expect("the connector finished");
    assert!(
        matches!(report.outcome, ClientOutcome::Completed),
        "{:?}",
        report.outcome
    );
    drop(proxy.finish());

    let mut parts: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert!(parts.len() >= 3, "{parts:?}");
    let mut session_ids = Vec::new();
    let mut requests = 0;
    for part in &parts {
        let mode = std::fs::metadata(part).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", part.display());
        // Each part is a capture of its own, checked against the schema.
        let cap = Capture::load(part);
        assert_eq!(cap.events[0]["kind"], "session");
        session_ids.push(cap.events[0]["session_id"].clone());
        requests += cap.kind("request").len();
    }
    assert!(
        session_ids.windows(2).all(|w| w[0] == w[1]),
        "{session_ids:?}"
    );
    let later = Capture::load(&parts[1]);
    assert_eq!(
        later.events[1]["code"], "capture_part",
        "{:#}",
        later.events[1]
    );

    // Named by its first file, its folder, or a pattern: one capture, one flow, the whole way.
    let pattern = dir.path().join("cap*.jsonl");
    for name in [first.as_path(), dir.path(), pattern.as_path()] {
        let report = explain_json(name);
        assert_eq!(report["exchanges"], requests, "{}", name.display());
        assert!(
            report["flows"].is_null(),
            "one client, one flow: {:#}",
            report["flows"]
        );
        assert_eq!(report["silence"], Value::Null, "{}", name.display());
        assert!(report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "call" && s["reached"] == true));
    }
    // A folder with two captures in it is refused in words.
    std::fs::copy(&parts[0], dir.path().join("other.jsonl")).unwrap();
    let out = mcptap(&["explain".as_ref(), dir.path().as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds 2 captures"), "{err}");
}

/// The silence watchdog follows each token: another client presenting its own token does not
/// hide one that went silent, and the notice names the silent client and its flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_names_the_client_that_went_silent_among_others() {
    let (_server, proxy, base) = case_server(&["--silence-after", "1"]).await;
    two_connectors(&base).await;
    let notice = proxy.until_stderr("NOTICE", Duration::from_secs(20)).await;
    assert!(notice.contains("connector-strict/1"), "{notice}");
    assert!(notice.contains("(flow "), "{notice}");
    // The lenient client presented its token: one notice, for the other.
    assert_eq!(proxy.stderr_lines("NOTICE").len(), 1);
    let errors = proxy.stderr_lines("prm-resource-match");
    assert!(!errors.is_empty(), "the silent flow's error is told");
    drop(proxy.finish());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_lines_name_each_client_flow() {
    let (_server, mut proxy, base) = case_server_with(&[], true).await;
    two_connectors(&base).await;
    let stdout = proxy.stdout.take().unwrap();
    let _capture = proxy.finish();
    let lines: Vec<String> = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .collect();
    let flow_of = |line: &str| -> Option<String> {
        line.rsplit_once(" · flow ")
            .map(|(_, n)| n.trim().to_string())
    };
    // Each connector's token request, and the tool call only the lenient one made.
    let tokens: Vec<Option<String>> = lines
        .iter()
        .filter(|l| l.contains("POST /token 200"))
        .map(|l| flow_of(l))
        .collect();
    assert_eq!(tokens.len(), 2, "{lines:#?}");
    assert!(tokens.iter().all(Option::is_some), "{lines:#?}");
    assert_ne!(tokens[0], tokens[1], "two clients, two flows: {lines:#?}");
    // A call's line is the one its stream closes with (the line it opens with has no end yet).
    let calls: Vec<Option<String>> = lines
        .iter()
        .filter(|l| l.contains("[call]"))
        .map(|l| flow_of(l))
        .collect();
    assert!(!calls.is_empty(), "{lines:#?}");
    assert!(
        calls.iter().all(|c| c.is_some() && tokens.contains(c)),
        "the tool calls are in one of the two token flows: {lines:#?}"
    );
    // Only two flows were ever named.
    let named: std::collections::BTreeSet<String> =
        lines.iter().filter_map(|l| flow_of(l)).collect();
    assert_eq!(named.len(), 2, "{named:?}\n{lines:#?}");
}
