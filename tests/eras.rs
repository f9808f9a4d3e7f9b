//! The two protocol eras, with the official TypeScript SDK v2 on both sides
//! (tests/peers/v2-server.mjs and v2-client.mjs): a 2026-07-28 flow, a fallback to 2025, and
//! the negotiations that fail, each recorded through the real `mcptap` binary and explained.

use std::io::{BufRead, BufReader};
use std::time::Instant;

use mcptap_fixture::client::{ClientEra, ClientOptions};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::Value;

use crate::mock::{connector_sees_what_it_saw, MockServer};
use crate::peers::{
    error_findings, explain, field, may_skip, peers_dir, stage_status, Peer, TEST_BUDGET,
};
use crate::replay::{record_session_with, replay, sequence};
use crate::util::*;

/// What one run gave: the client's own summary, `explain --json`, and the proxy's live lines.
struct Run {
    client: Value,
    client_exit: i32,
    report: Value,
    live: Vec<String>,
}

/// v2-server.mjs (`--era`, `--fault`) behind the proxy, v2-client.mjs (`--mode`) through it.
fn run(era: &str, fault: &str, mode: &str) -> Option<Run> {
    run_client(era, fault, &["--mode", mode])
}

/// [`run`] with the client's arguments (`--mode`, `--call confirm`, `--listen`).
fn run_client(era: &str, fault: &str, client_args: &[&str]) -> Option<Run> {
    let Some(dir) = peers_dir() else {
        may_skip("the real MCP peers (the TypeScript SDK v2)");
        return None;
    };
    let deadline = Instant::now() + TEST_BUDGET;
    let server = Peer::node(
        "v2-server",
        &dir,
        &["v2-server.mjs", "--era", era, "--fault", fault],
        &[],
    );
    let listening = server.wait_for("mcptap-peer: listening", deadline);
    let mcp = field(&listening, "mcp=");
    let upstream = mcp.strip_suffix("/mcp").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("capture.jsonl");
    let mut proxy = TestProxy::to(upstream).live().capture_to(&capture).start();
    let url = proxy.url("/mcp");
    let mut args = vec!["v2-client.mjs", url.as_str()];
    args.extend_from_slice(client_args);
    let (client_exit, out) = Peer::node("v2-client", &dir, &args, &[]).finish(deadline);
    let client: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("v2-client printed no JSON summary:\n{out}"));
    let stdout = proxy.stdout.take().unwrap();
    let _ = proxy.finish();
    let live = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    drop(server);
    Some(Run {
        client,
        client_exit,
        report: explain(&capture),
        live,
    })
}

fn findings<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

/// The stages a 2026-07-28 flow without OAuth goes through, and the 2025 ones it has not.
const MODERN_LADDER: [(&str, &str); 7] = [
    ("reach", "reached"),
    ("discover", "reached"),
    ("initialize", "not_applicable"),
    ("initialized", "not_applicable"),
    ("get_stream", "not_applicable"),
    ("list", "reached"),
    ("call", "reached"),
];

/// An auto-mode v2 client against a dual-era server stays in 2026-07-28: the modern ladder,
/// no error, the era on the header line and on the proxy's live line of the discover.
#[test]
fn a_modern_flow_explains_with_the_modern_ladder_and_no_error() {
    let Some(run) = run("both", "none", "auto") else {
        return;
    };
    assert_eq!(run.client_exit, 0, "{:#}", run.client);
    assert_eq!(run.client["era"], "modern", "{:#}", run.client);
    assert_eq!(
        run.client["echo"]["content"][0]["text"],
        "Echo: through mcptap ✓"
    );
    let report = &run.report;
    assert_eq!(report["era"], "modern");
    assert_eq!(report["negotiation"]["protocol_version"], "2026-07-28");
    assert_eq!(report["negotiation"]["probe_method"], "server/discover");
    for (stage, want) in MODERN_LADDER {
        assert_eq!(stage_status(report, stage), want, "stage {stage}");
    }
    assert!(report["silence"].is_null(), "{:#}", report["silence"]);
    assert_eq!(error_findings(report), Vec::<String>::new());
    let warnings: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "warning")
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let discover = run
        .live
        .iter()
        .find(|l| l.contains("server/discover"))
        .unwrap_or_else(|| panic!("no live line for server/discover: {:?}", run.live));
    assert!(discover.contains("[discover]"), "{discover}");
    assert!(discover.contains("era 2026-07-28"), "{discover}");
}

/// A 2025-only server: the probe is refused with a JSON-RPC error on 400, the client falls
/// back to initialize. A note at the probe, the 2025 ladder, no error.
#[test]
fn a_fallback_to_2025_is_a_note_at_the_probe() {
    let Some(run) = run("legacy", "none", "auto") else {
        return;
    };
    assert_eq!(run.client_exit, 0, "{:#}", run.client);
    assert_eq!(run.client["era"], "legacy", "{:#}", run.client);
    let report = &run.report;
    assert_eq!(report["era"], "fallback");
    assert_eq!(report["negotiation"]["probe"], 1);
    assert_eq!(report["negotiation"]["initialize"], 2);
    for (stage, want) in [
        ("discover", "not_applicable"),
        ("initialize", "reached"),
        ("initialized", "reached"),
        ("list", "reached"),
        ("call", "reached"),
    ] {
        assert_eq!(stage_status(report, stage), want, "stage {stage}");
    }
    assert_eq!(error_findings(report), Vec::<String>::new());
    let notes = findings(report, "era-fallback");
    assert_eq!(notes.len(), 1, "{:#}", report["findings"]);
    assert_eq!(notes[0]["severity"], "info");
    assert_eq!(notes[0]["exchange"], 1);
    let message = notes[0]["message"].as_str().unwrap();
    assert!(message.contains("HTTP 400"), "{message}");
    assert!(message.contains("2025-11-25"), "{message}");
    assert!(
        run.live.iter().any(|l| l.contains("era 2025: fell back")),
        "{:?}",
        run.live
    );
}

/// A probe answered 500: the real client gives up, and explain says why at the probe, with
/// the fix, instead of "expected next: initialize".
#[test]
fn a_probe_answered_500_is_an_error_at_the_probe_with_the_fix() {
    let Some(run) = run("modern", "discover-500", "auto") else {
        return;
    };
    assert_ne!(run.client_exit, 0, "{:#}", run.client);
    assert_eq!(run.client["error"]["code"], "ERA_NEGOTIATION_FAILED");
    let report = &run.report;
    assert_eq!(report["era"], "failed_negotiation");
    assert_eq!(stage_status(report, "discover"), "missing");
    assert_eq!(stage_status(report, "initialize"), "not_applicable");
    let errors = findings(report, "era-negotiation");
    assert_eq!(errors.len(), 1, "{:#}", report["findings"]);
    assert_eq!(errors[0]["severity"], "error");
    assert_eq!(errors[0]["exchange"], 1);
    let message = errors[0]["message"].as_str().unwrap();
    for words in [
        "server/discover",
        "HTTP 500",
        "falls back to initialize only",
        "-32601",
    ] {
        assert!(message.contains(words), "{words:?} not in {message}");
    }
    let expected = report["silence"]["expected_next"].as_str().unwrap();
    assert!(expected.contains("tried at #1 and refused"), "{expected}");
}

/// A client pinned to 2026-07-28 against a 2025-only server: an error that says exactly that.
#[test]
fn a_pinned_client_against_a_2025_server_is_an_error_that_says_so() {
    let Some(run) = run("legacy", "none", "modern") else {
        return;
    };
    assert_ne!(run.client_exit, 0, "{:#}", run.client);
    let report = &run.report;
    assert_eq!(report["era"], "failed_negotiation");
    let errors = findings(report, "era-negotiation");
    assert_eq!(errors.len(), 1, "{:#}", report["findings"]);
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("speaks only 2026-07-28 and the server does not"),
        "{message}"
    );
    assert!(message.contains("pinned"), "{message}");
}

/// A 2025-only client against a server that speaks only 2026-07-28: the refused initialize
/// names the versions the server offers.
#[test]
fn a_2025_client_against_a_2026_only_server_is_an_error_at_initialize() {
    let Some(run) = run("modern", "none", "legacy") else {
        return;
    };
    assert_ne!(run.client_exit, 0, "{:#}", run.client);
    let report = &run.report;
    assert_eq!(report["era"], "legacy");
    let errors = findings(report, "era-negotiation");
    assert_eq!(errors.len(), 1, "{:#}", report["findings"]);
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("-32022"), "{message}");
    assert!(message.contains("only 2026-07-28"), "{message}");
    let expected = report["silence"]["expected_next"].as_str().unwrap();
    assert!(expected.contains("tried at #1 and refused"), "{expected}");
}

/// Mcp-Method removed between mcptap and the server (a gateway's doing): the server answers
/// -32020, the client falls back; a warning names the stripped header, and it reached mcptap.
#[test]
fn a_stripped_mcp_method_header_is_a_warning() {
    let Some(run) = run("both", "strip-mcp-method", "auto") else {
        return;
    };
    assert_eq!(run.client_exit, 0, "{:#}", run.client);
    assert_eq!(run.client["era"], "legacy", "{:#}", run.client);
    let report = &run.report;
    assert_eq!(report["era"], "fallback");
    let warnings = findings(report, "mcp-headers-stripped");
    assert_eq!(warnings.len(), 1, "{:#}", report["findings"]);
    assert_eq!(warnings[0]["severity"], "warning");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(message.contains("mcp-method: server/discover"), "{message}");
    assert_eq!(error_findings(report), Vec::<String>::new());
}

/// A 2026-07-28 session (the fixture connector in auto mode, OAuth included) replays against
/// a live server with no flags and no session id to remap, and mocks to an unchanged client.
#[tokio::test(flavor = "multi_thread")]
async fn a_modern_session_replays_and_mocks() {
    let modern = ClientOptions {
        era: ClientEra::Auto,
        ..ClientOptions::default()
    };
    let recorded = record_session_with(modern.clone()).await;
    assert!(
        recorded
            .report
            .steps
            .iter()
            .any(|s| s.contains("speaking 2026-07-28")),
        "{:#?}",
        recorded.report.steps
    );
    assert_eq!(explain(&recorded.path)["era"], "modern");

    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("replayed.jsonl");
    let out = replay(&recorded.path, &server.url(), &out_path, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = Capture::load(&out_path);
    assert_eq!(sequence(&replayed), sequence(&recorded.capture));
    let report = explain(&out_path);
    assert_eq!(report["era"], "modern", "{report:#}");
    assert_eq!(stage_status(&report, "call"), "reached");
    assert_eq!(error_findings(&report), Vec::<String>::new());

    let mock = MockServer::start(&recorded.path, &[]);
    connector_sees_what_it_saw(&mock, &recorded, &modern).await;
}

/// `diff` of a 2026-07-28 session against a 2025 one names the era change first, and each
/// side's era; discover aligns with discover within an era.
#[tokio::test(flavor = "multi_thread")]
async fn diff_names_an_era_change_as_the_first_divergence() {
    let modern = record_session_with(ClientOptions {
        era: ClientEra::Auto,
        ..ClientOptions::default()
    })
    .await;
    let legacy = record_session_with(ClientOptions::default()).await;
    let diff = |a: &std::path::Path, b: &std::path::Path| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
            .arg("diff")
            .arg(a)
            .arg(b)
            .arg("--json")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("diff --json prints JSON")
    };
    let across = diff(&modern.path, &legacy.path);
    assert_eq!(across["a"]["era"], "modern");
    assert_eq!(across["b"]["era"], "legacy");
    let sentence = across["first_divergence"]["sentence"].as_str().unwrap();
    assert!(
        sentence.starts_with("the protocol era differs: 2026-07-28 in A, 2025 (initialize) in B"),
        "{sentence}"
    );
    let again = record_session_with(ClientOptions {
        era: ClientEra::Auto,
        ..ClientOptions::default()
    })
    .await;
    let within = diff(&modern.path, &again.path);
    assert!(within["first_divergence"].is_null(), "{within:#}");
    let discover = within["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["label"] == "server/discover")
        .count();
    assert_eq!(discover, 2, "{within:#}");
}

/// A tool that needs a confirmation (multi round-trip request): the v2 server answers
/// input_required with an elicitation, the v2 client answers it and retries. explain shows one
/// call with two rounds and no finding.
#[test]
fn an_input_required_round_reads_as_one_call_that_completed() {
    let Some(run) = run_client("modern", "none", &["--mode", "modern", "--call", "confirm"]) else {
        return;
    };
    assert_eq!(run.client_exit, 0, "{:#}", run.client);
    assert_eq!(
        run.client["confirm"]["result"]["content"][0]["text"], "confirmed: deploy",
        "{:#}",
        run.client
    );
    let report = &run.report;
    let trips = report["round_trips"].as_array().unwrap();
    assert_eq!(trips.len(), 1, "{report:#}");
    assert_eq!(trips[0]["method"], "tools/call");
    assert_eq!(trips[0]["name"], "confirm");
    let answers: Vec<&str> = trips[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["input_required", "complete"]);
    assert!(
        findings(report, "input-required").is_empty(),
        "{:#}",
        report["findings"]
    );
    assert_eq!(error_findings(report), Vec::<String>::new());
}

/// A server that asks again on every retry: the client gives up after its round limit, and
/// explain names the loop.
#[test]
fn input_required_rounds_that_never_end_are_named() {
    let Some(run) = run_client(
        "modern",
        "input-loop",
        &["--mode", "modern", "--call", "confirm"],
    ) else {
        return;
    };
    assert_ne!(run.client_exit, 0, "{:#}", run.client);
    let report = &run.report;
    let warnings = findings(report, "input-required");
    assert_eq!(warnings.len(), 1, "{:#}", report["findings"]);
    assert_eq!(warnings[0]["severity"], "warning");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("the rounds loop"),
        "{:#}",
        warnings[0]
    );
}

/// subscriptions/listen: the stream opens (the listen stage), carries its notifications, and
/// the client closing it is no unanswered request.
#[test]
fn a_listen_stream_is_a_stage_and_closing_it_is_no_fault() {
    let Some(run) = run_client("modern", "none", &["--mode", "modern", "--listen"]) else {
        return;
    };
    assert_eq!(run.client_exit, 0, "{:#}", run.client);
    assert!(
        run.client["listen"]["notifications"]
            .as_array()
            .is_some_and(|n| !n.is_empty()),
        "{:#}",
        run.client
    );
    let report = &run.report;
    assert_eq!(stage_status(report, "listen"), "reached", "{report:#}");
    assert!(
        findings(report, "sse-response-delivery").is_empty(),
        "{:#}",
        report["findings"]
    );
    assert_eq!(error_findings(report), Vec::<String>::new());
}

/// The conformance suite's 2026-07-28 server scenarios against the v2 server give the same
/// result per scenario directly and through the proxy, and explain raises no error on the
/// recorded run (the suite's deliberately bad requests, refused by the server, are warnings).
#[test]
fn the_conformance_suite_sees_the_same_server_through_mcptap() {
    let Some(dir) = peers_dir() else {
        may_skip("the real MCP peers");
        return;
    };
    if !dir
        .join("node_modules/@modelcontextprotocol/conformance/dist/index.js")
        .is_file()
        && may_skip("the MCP conformance suite")
    {
        return;
    }
    let deadline = Instant::now() + TEST_BUDGET;
    let server = Peer::node(
        "v2-server",
        &dir,
        &["v2-server.mjs", "--era", "modern"],
        &[],
    );
    let listening = server.wait_for("mcptap-peer: listening", deadline);
    let direct_url = field(&listening, "mcp=").to_string();
    let suite = |url: &str| -> Value {
        let out = std::process::Command::new("bash")
            .arg(dir.join("conformance-server.sh"))
            .arg(url)
            .env("CONFORMANCE_TIMEOUT_S", "50")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "the suite did not run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    };
    let direct = suite(&direct_url);
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("conformance.jsonl");
    let proxy = TestProxy::to(direct_url.strip_suffix("/mcp").unwrap())
        .capture_to(&capture)
        .start();
    let proxied = suite(&proxy.url("/mcp"));
    let _ = proxy.finish();
    assert_eq!(direct["complete"], true, "{direct:#}");
    assert_eq!(
        proxied["scenarios"], direct["scenarios"],
        "direct vs through mcptap"
    );
    // Not vacuous: the suite reached the server and some required scenarios pass.
    assert_eq!(
        direct["scenarios"]["tools-list"]["result"], "pass",
        "{direct:#}"
    );
    assert!(
        direct["scored"]["passed"].as_u64().unwrap() >= 5,
        "{direct:#}"
    );
    let report = explain(&capture);
    assert!(report["exchanges"].as_u64().unwrap() > 50, "{report:#}");
    assert_eq!(error_findings(&report), Vec::<String>::new());
}

/// The report carries each session's era and draws the ladder of that era only.
#[tokio::test(flavor = "multi_thread")]
async fn the_report_shows_the_era_and_its_ladder() {
    for (era, label, has, lacks) in [
        (ClientEra::Auto, "modern", "discover", "initialize"),
        (ClientEra::Legacy, "legacy", "initialize", "discover"),
    ] {
        let recorded = record_session_with(ClientOptions {
            era,
            ..ClientOptions::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("report.html");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
            .arg("report")
            .arg(&recorded.path)
            .arg("-o")
            .arg(&html)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = crate::report::page_data(&std::fs::read_to_string(&html).unwrap());
        let session = &data["sessions"][0];
        assert_eq!(session["era"], label, "{session:#}");
        let stages: Vec<&str> = session["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert!(stages.contains(&has), "{label}: {stages:?}");
        assert!(!stages.contains(&lacks), "{label}: {stages:?}");
    }
}
