//! `mcptap demo`, run as a new user would: non-interactive, on loopback, both captures usable.

use crate::explain::explain_json;

fn demo_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut working = None;
    let mut failing = None;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("demo-working-") {
            working = Some(path);
        } else if name.starts_with("demo-") {
            failing = Some(path);
        }
    }
    (
        working.expect("a working capture"),
        failing.expect("a failing capture"),
    )
}

fn demo(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .arg("demo")
        .args(args)
        .arg("--captures-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// By default the demo's client speaks 2026-07-28, as the hosted connectors do.
#[test]
fn the_demo_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(&[], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // The live lines, the watchdog's notice, the explanation and what to do next.
    assert!(stdout.contains("POST /token 200"), "{stdout}");
    assert!(stdout.contains("server/discover"), "{stdout}");
    assert!(stdout.contains("[discover] · era 2026-07-28"), "{stdout}");
    assert!(!stdout.contains("[initialize]"), "{stdout}");
    assert!(
        stderr.contains("NOTICE"),
        "the silence watchdog did not speak: {stderr}"
    );
    assert!(stdout.contains("Went quiet after token"), "{stdout}");
    assert!(stdout.contains("prm-resource-match"), "{stdout}");
    assert!(stdout.contains("mcptap explain"), "{stdout}");
    // The diff against the working run puts the planted fault first, then the calls that
    // never came.
    let divergence = stdout
        .lines()
        .skip_while(|l| !l.starts_with("First divergence:"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        divergence.contains("resource_metadata") && divergence.contains("body.resource"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- #7 POST /mcp server/discover 200"),
        "the working run's discover shows as missing from the failing one: {stdout}"
    );
    assert!(stdout.contains("mcptap report"), "{stdout}");

    let (working, failing) = demo_files(dir.path());
    let good = explain_json(&working);
    let call = good["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "call")
        .unwrap();
    assert_eq!(call["reached"], true, "{good:#}");
    assert!(good["silence"].is_null());

    assert_eq!(good["era"], "modern", "{good:#}");

    let bad = explain_json(&failing);
    assert_eq!(bad["era"], "modern", "{bad:#}");
    assert_eq!(bad["silence"]["after_stage"], "token");
    let expected = bad["silence"]["expected_next"].as_str().unwrap();
    assert!(
        expected.starts_with("POST /mcp server/discover with Authorization: Bearer"),
        "{expected}"
    );
    assert!(bad["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "prm-resource-match" && f["severity"] == "error"));
}

/// `--era 2025` keeps the 2025 story: initialize, a session, the GET stream.
#[test]
fn the_demo_in_the_2025_era_tells_the_initialize_story() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(&["--era", "2025"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}");
    assert!(stdout.contains("[initialize] · era 2025"), "{stdout}");
    assert!(!stdout.contains("server/discover"), "{stdout}");
    assert!(stdout.contains("- #7 POST /mcp initialize 200"), "{stdout}");
    let (working, failing) = demo_files(dir.path());
    assert_eq!(explain_json(&working)["era"], "legacy");
    let bad = explain_json(&failing);
    let expected = bad["silence"]["expected_next"].as_str().unwrap();
    assert!(
        expected.starts_with("POST /mcp initialize with"),
        "{expected}"
    );
}

#[test]
fn every_demo_scenario_runs() {
    for scenario in [
        "missing-www-authenticate",
        "buffered-sse",
        "reject-first-bearer",
        "edge-block",
        "discover500",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = demo(&["--scenario", scenario], dir.path());
        assert!(
            out.status.success(),
            "{scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, failing) = demo_files(dir.path());
        let report = explain_json(&failing);
        let checks: Vec<&str> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        let expected = match scenario {
            "missing-www-authenticate" => "challenge-present",
            "buffered-sse" => "sse-buffering",
            "reject-first-bearer" => "bearer-accepted",
            "discover500" => "era-negotiation",
            _ => "edge-block",
        };
        assert!(checks.contains(&expected), "{scenario}: {checks:?}");
    }
}
