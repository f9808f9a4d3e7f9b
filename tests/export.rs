//! `mcptap export`: HAR files of recorded sessions checked against the HAR 1.2 schema
//! (tests/data/har-1.2.schema.json) and read back by a HAR reader (har-validator, through
//! tests/browser/har-check.mjs), and `--curl` commands re-run with /usr/bin/curl against a
//! fresh fixture server.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::Value;

use crate::explain::session_with;
use crate::report::{browser_dir, loud, mcptap, mcptap_ok, node_ready, ODD_CAPTURE};

fn har_schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/har-1.2.schema.json");
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("schema JSON");
        jsonschema::validator_for(&schema).expect("the HAR schema compiles")
    })
}

/// Checks a HAR document against the HAR 1.2 schema.
fn assert_valid_har(har: &Value) {
    let errors: Vec<String> = har_schema()
        .iter_errors(har)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "the HAR breaks the schema: {errors:#?}");
}

/// Writes capture bytes to `dir` and exports them as HAR; returns the file and the document.
fn export_har(dir: &Path, raw: &[u8]) -> (PathBuf, Value) {
    let capture = dir.join("capture.jsonl");
    std::fs::write(&capture, raw).unwrap();
    let har = dir.join("capture.har");
    mcptap_ok(&[
        OsStr::new("export"),
        capture.as_os_str(),
        OsStr::new("--har"),
        har.as_os_str(),
    ]);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&har).unwrap()).unwrap();
    assert_valid_har(&doc);
    (har, doc)
}

/// Reads a HAR file back with har-validator; None (after a loud SKIPPED) when not installed.
fn reimport(test: &str, har: &Path) -> Option<Value> {
    if !node_ready(test, "har-validator") {
        return None;
    }
    let out = std::process::Command::new("node")
        .arg(browser_dir().join("har-check.mjs"))
        .arg(har)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["valid"], true,
        "har-validator: {:#}",
        result["errors"]
    );
    Some(result)
}

fn entry_of(har: &Value, ex: u64) -> &Value {
    har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["_mcptap"]["exchange"] == ex)
        .unwrap_or_else(|| panic!("no entry for exchange {ex}"))
}

#[tokio::test]
async fn a_recorded_session_exports_to_a_valid_har() {
    let s = session_with(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, har) = export_har(dir.path(), &s.capture.raw);
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "mcptap");
    assert!(log["comment"]
        .as_str()
        .unwrap()
        .contains("redaction fingerprint"));
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), s.capture.exchanges().len());

    let mut streams = 0;
    for ex in s.capture.exchanges() {
        let e = entry_of(&har, ex);
        let request = s.capture.one(ex, "request");
        let end = s.capture.one(ex, "end");
        // Started when the request headers arrived, to the microsecond.
        assert_eq!(e["startedDateTime"], request["ts"]);
        assert_eq!(e["request"]["method"], request["method"]);
        assert_eq!(e["connection"], request["conn"].to_string());
        let t = &e["timings"];
        assert_eq!(
            (t["blocked"].as_f64(), t["dns"].as_f64(), t["ssl"].as_f64()),
            (Some(-1.0), Some(-1.0), Some(-1.0))
        );
        let timings = &end["timings"];
        match timings["upstream_connect_us"].as_u64() {
            Some(us) if timings["reused_connection"] == false => {
                assert_eq!(t["connect"].as_f64().unwrap(), us as f64 / 1000.0)
            }
            _ => assert_eq!(t["connect"], -1.0),
        }
        let sum: f64 = ["connect", "send", "wait", "receive"]
            .iter()
            .map(|k| t[*k].as_f64().unwrap().max(0.0))
            .sum();
        let total = timings["total_us"].as_f64().unwrap() / 1000.0;
        assert!((sum - total).abs() < 1e-6, "{sum} vs {total}");
        assert!((e["time"].as_f64().unwrap() - total).abs() < 1e-6);
        if let Some(ttfb) = timings["ttfb_us"].as_f64() {
            // wait ends at the first byte (or when the upload ended, if later).
            let before_wait = t["connect"].as_f64().unwrap().max(0.0) + t["send"].as_f64().unwrap();
            assert!(
                (before_wait + t["wait"].as_f64().unwrap()
                    - ttfb.max(before_wait * 1000.0) / 1000.0)
                    .abs()
                    < 1e-6
            );
        }

        let sse: Vec<&Value> = s
            .capture
            .exchange(ex)
            .into_iter()
            .filter(|l| l["kind"] == "sse" && l["dispatched"] == true)
            .collect();
        let ctype = s.capture.one(ex, "response")["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "content-type")
            .map(|h| h[1].as_str().unwrap().to_string())
            .unwrap_or_default();
        if ctype.starts_with("text/event-stream") {
            streams += 1;
            let text = e["response"]["content"]["text"].as_str().unwrap_or("");
            assert_eq!(text, s.capture.body_text(ex, "response"), "the raw stream");
            let messages = e["_eventSourceMessages"].as_array().unwrap();
            assert_eq!(messages.len(), sse.len());
            for (m, line) in messages.iter().zip(&sse) {
                assert_eq!(m["data"], line["data"]);
                assert_eq!(m["eventName"], line["event"].as_str().unwrap_or("message"));
                let when = jiff::Timestamp::from_microsecond(
                    (m["time"].as_f64().unwrap() * 1e6).round() as i64,
                )
                .unwrap();
                let ts: jiff::Timestamp = line["ts"].as_str().unwrap().parse().unwrap();
                assert!(
                    (when.as_microsecond() - ts.as_microsecond()).abs() <= 1,
                    "{when} vs {ts}"
                );
            }
        } else {
            assert!(e.get("_eventSourceMessages").is_none());
        }
    }
    assert!(streams >= 2, "the GET stream and the slow_count call");

    // The token request: a form with its fields as params, secrets still redacted.
    let token = entries
        .iter()
        .find(|e| e["request"]["url"].as_str().unwrap().ends_with("/token"))
        .unwrap();
    let post = &token["request"]["postData"];
    assert_eq!(post["mimeType"], "application/x-www-form-urlencoded");
    let params: Vec<(&str, &str)> = post["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["value"].as_str().unwrap()))
        .collect();
    assert!(params.contains(&("grant_type", "authorization_code")));
    let code = params.iter().find(|(n, _)| *n == "code").unwrap().1;
    assert!(code.starts_with("<redacted fp="), "{code}");
    let verifier = params
        .iter()
        .find(|(n, _)| *n == "code_verifier")
        .unwrap()
        .1;
    assert!(verifier.starts_with("<redacted fp="), "{verifier}");
    // The access token in the response stays a fingerprint too.
    let issued = token["response"]["content"]["text"].as_str().unwrap();
    assert!(
        issued.contains("\"access_token\":\"<redacted fp="),
        "{issued}"
    );
    // The authorize redirect keeps its (redacted) code in redirectURL.
    let redirect = entries
        .iter()
        .find(|e| e["response"]["status"] == 302)
        .unwrap();
    assert!(redirect["response"]["redirectURL"]
        .as_str()
        .unwrap()
        .contains("code=<redacted fp="));

    if let Some(read) = reimport("a_recorded_session_exports_to_a_valid_har", &file) {
        let read_entries = read["entries"].as_array().unwrap();
        assert_eq!(read_entries.len(), entries.len());
        assert!(read_entries
            .iter()
            .any(|e| e["events"].as_u64().unwrap() > 0));
        assert!(read_entries.iter().any(|e| e["postParams"]
            .as_array()
            .is_some_and(|p| p.iter().any(|n| n == "code_verifier"))));
    }
}

#[tokio::test]
async fn har_to_stdout() {
    let s = session_with(Faults {
        prm_resource_base_url: true,
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("c.jsonl");
    std::fs::write(&capture, &s.capture.raw).unwrap();
    let out = mcptap_ok(&[
        OsStr::new("export"),
        capture.as_os_str(),
        OsStr::new("--har"),
        OsStr::new("-"),
    ]);
    let har: Value = serde_json::from_slice(&out.stdout).expect("stdout is the HAR");
    assert_valid_har(&har);
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 6);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_odd_capture_exports_to_a_valid_har() {
    let dir = tempfile::tempdir().unwrap();
    let (file, har) = export_har(dir.path(), ODD_CAPTURE.as_bytes());
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 5);

    // A binary, truncated upload answered 502 by the proxy, over HTTP/2 and TLS.
    let e = entry_of(&har, 1);
    assert_eq!(
        e["request"]["url"],
        "https://mcp.test/upload?token=%3Credacted%20fp%3D0a0b0c0d%3E"
    );
    assert_eq!(
        e["request"]["queryString"][0]["value"],
        "<redacted fp=0a0b0c0d>"
    );
    assert_eq!(e["request"]["postData"]["text"], "AAECA/8=");
    assert_eq!(e["request"]["postData"]["_encoding"], "base64");
    assert!(e["request"]["postData"]["comment"]
        .as_str()
        .unwrap()
        .contains("--max-body"));
    assert_eq!(e["request"]["bodySize"], 5000);
    let cookies: Vec<&str> = e["request"]["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cookies, ["sid", "theme"]);
    assert_eq!(e["response"]["status"], 502);
    assert_eq!(e["response"]["statusText"], "Bad Gateway");
    assert!(e["response"]["comment"]
        .as_str()
        .unwrap()
        .contains("mcptap"));
    let set = &e["response"]["cookies"][0];
    assert_eq!(set["value"], "<redacted fp=deadbeef>");
    assert_eq!(set["expires"], "2015-10-21T07:28:00Z");
    assert_eq!(set["httpOnly"], true);
    assert!(e["comment"].as_str().unwrap().contains("upstream_error"));

    // An upgrade: byte counts, no frames.
    let e = entry_of(&har, 2);
    assert!(e.get("_webSocketMessages").is_none());
    assert_eq!(e["_upgrade"]["protocol"], "websocket");
    assert_eq!(e["_upgrade"]["upstreamToClientBytes"], 10);
    assert!(e["comment"]
        .as_str()
        .unwrap()
        .contains("does not record its frames"));
    assert_eq!(e["serverIPAddress"], "::1");
    assert_eq!(e["timings"]["connect"], 0.007);

    // An event stream: only what EventSource would dispatch, the last id carried over.
    let e = entry_of(&har, 3);
    let m = e["_eventSourceMessages"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (&m[0]["eventName"], &m[0]["eventId"], &m[0]["data"]),
        (
            &Value::from("note"),
            &Value::from("7"),
            &Value::from("{\"a\":1}")
        )
    );
    assert_eq!(
        (&m[1]["eventName"], &m[1]["eventId"]),
        (&Value::from("message"), &Value::from("7"))
    );
    assert_eq!(m[0]["time"].as_f64().unwrap(), 1767225602.00008);

    // No response at all, and no end at all.
    let e = entry_of(&har, 4);
    assert_eq!(e["response"]["status"], 0);
    assert!(e["response"]["_error"]
        .as_str()
        .unwrap()
        .contains("client_aborted"));
    assert_eq!(e["request"]["url"], "https://127.0.0.1:1/");
    let e = entry_of(&har, 5);
    assert_eq!(e["timings"]["send"], 0.0);
    assert!(e["timings"]["comment"].as_str().unwrap().contains("no end"));

    reimport("an_odd_capture_exports_to_a_valid_har", &file);
}

#[test]
fn export_needs_a_format_and_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("c.jsonl");
    std::fs::write(&capture, ODD_CAPTURE).unwrap();
    let out = mcptap(&[OsStr::new("export"), capture.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let out = mcptap(&[
        OsStr::new("export"),
        dir.path().join("missing.jsonl").as_os_str(),
        OsStr::new("--curl"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The blocks of a `--curl` script: (comment lines, command line).
fn curl_blocks(script: &str) -> Vec<(Vec<&str>, &str)> {
    script
        .split("\n\n")
        .skip(1)
        .map(|block| {
            let lines: Vec<&str> = block.lines().collect();
            let (command, comments) = lines.split_last().expect("a command");
            (comments.to_vec(), *command)
        })
        .collect()
}

fn block_for<'a>(blocks: &'a [(Vec<&'a str>, &'a str)], what: &str) -> &'a (Vec<&'a str>, &'a str) {
    blocks
        .iter()
        .find(|(comments, _)| comments[0].contains(what))
        .unwrap_or_else(|| panic!("no command for {what}"))
}

/// Runs a printed command with the system's curl; returns stdout.
async fn run_curl(command: &str) -> String {
    let out = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{command} --silent --show-error --fail"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{command}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn curl_commands_reproduce_requests_against_a_fresh_server() {
    let s = session_with(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("c.jsonl");
    std::fs::write(&capture, &s.capture.raw).unwrap();
    let fresh = FixtureServer::start(Faults::default(), None).await.unwrap();
    let out = mcptap_ok(&[
        OsStr::new("export"),
        capture.as_os_str(),
        OsStr::new("--curl"),
        OsStr::new("--target"),
        OsStr::new(&fresh.url()),
    ]);
    let script = String::from_utf8(out.stdout).unwrap();
    let blocks = curl_blocks(&script);
    assert_eq!(blocks.len(), s.capture.exchanges().len());
    for (_, command) in &blocks {
        assert!(
            command.starts_with("curl --http1.1 --globoff --path-as-is "),
            "{command}"
        );
        assert!(
            command.contains(&format!("'{}/", fresh.url()))
                || command.contains(&format!(" {}/", fresh.url())),
            "{command}"
        );
    }

    // Redacted values are named above the commands that need them.
    let (comments, command) = block_for(&blocks, "POST /token");
    let needs = comments
        .iter()
        .find(|l| l.contains("needs real values"))
        .expect("a note");
    assert!(
        needs.contains("form field code,") && needs.contains("form field code_verifier"),
        "{needs}"
    );
    assert!(command.contains("--data-binary 'grant_type=authorization_code&code=<redacted fp="));
    let (comments, _) = block_for(&blocks, "POST /mcp → 200");
    assert!(
        comments.iter().any(|l| l.contains("header authorization")),
        "{comments:?}"
    );

    if !Path::new("/usr/bin/curl").is_file() {
        loud("SKIPPED curl_commands_reproduce_requests_against_a_fresh_server: /usr/bin/curl is missing");
        return;
    }
    // The protected-resource metadata GET, as the client sent it, to a server that was not there.
    let (_, command) = block_for(&blocks, "GET /.well-known/oauth-protected-resource/mcp");
    let answer: Value = serde_json::from_str(&run_curl(command).await).unwrap();
    let recorded: Value = serde_json::from_str(&s.capture.body_text(2, "response")).unwrap();
    assert_eq!(answer["resource"], format!("{}/mcp", fresh.url()));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&answer), keys(&recorded));

    // The registration POST, its JSON body sent with --data-binary.
    let (_, command) = block_for(&blocks, "POST /register");
    let answer: Value = serde_json::from_str(&run_curl(command).await).unwrap();
    assert_eq!(answer["client_name"], "mcptap fixture connector");
    assert!(answer["client_id"].is_string());
}

#[test]
fn curl_commands_for_odd_requests() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("c.jsonl");
    std::fs::write(&capture, ODD_CAPTURE).unwrap();
    let out = mcptap_ok(&[
        OsStr::new("export"),
        capture.as_os_str(),
        OsStr::new("--curl"),
    ]);
    let script = String::from_utf8(out.stdout).unwrap();
    let blocks = curl_blocks(&script);
    let (comments, command) = block_for(&blocks, "#1 POST");
    assert!(comments.iter().any(|l| l.contains("query parameter token")));
    assert!(comments.iter().any(|l| l.contains("header cookie")));
    assert!(comments
        .iter()
        .any(|l| l.contains("--max-body (5 of 5000 bytes)")));
    assert!(
        command.starts_with("printf '%s' AAECA/8= | base64 -d | curl --http2 "),
        "{command}"
    );
    assert!(command.ends_with("--data-binary @-"), "{command}");
    let (comments, command) = block_for(&blocks, "#2 GET /ws");
    assert!(comments.iter().any(|l| l.contains("upgraded to websocket")));
    assert!(!command.contains("upgrade"), "{command}");
    // A body starting with @ is data, not a file name for curl to read.
    let (_, command) = block_for(&blocks, "#5 PUT");
    assert!(
        command.starts_with("printf '%s' QC9ldGMvcGFzc3dk | base64 -d | curl --http1.0 "),
        "{command}"
    );
    assert!(command.contains("--request PUT"));
    if Path::new("/usr/bin/base64").is_file() {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("printf '%s' QC9ldGMvcGFzc3dk | base64 -d")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"@/etc/passwd");
    }
}
