//! The harness end to end on a tiny plan (`--smoke`): the workloads that need no outside
//! tool (w2 open loop, w4 SSE, w5 idle streams, w6 large body, w8 analysis of a recorded
//! capture), against the mcptap binary
//! the main crate's `cargo test` built (or `MCPTAP_BIN`). `.ci/run` runs it; the figures
//! mean nothing, only that every step of `benches/run` still works.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn mcptap() -> PathBuf {
    let path = std::env::var_os("MCPTAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/mcptap")
        });
    assert!(
        path.exists(),
        "no mcptap binary at {} (build the main crate first, or set MCPTAP_BIN)",
        path.display()
    );
    path
}

#[test]
fn a_smoke_run_measures_mcptap_in_every_tool_free_workload() {
    let results = std::env::temp_dir().join(format!("mcptap-bench-smoke-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap-bench"))
        .arg("--mcptap")
        .arg(mcptap())
        .args([
            "--smoke",
            "--no-mitmdump",
            "--only",
            "w2,w4,w5,w6,w8",
            "--results",
        ])
        .arg(&results)
        .output()
        .expect("running mcptap-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mcptap-bench failed:\n{stderr}\n{stdout}"
    );
    let written: Vec<_> = std::fs::read_dir(&results)
        .expect("the results folder")
        .map(|e| e.unwrap().path())
        .collect();
    let _ = std::fs::remove_dir_all(&results);
    assert_eq!(written.len(), 1, "one partial report: {written:?}");
    assert!(written[0].to_string_lossy().ends_with("-partial.md"));
    assert!(
        stdout.contains("| mitmdump -w | n/a (did not start: left out with --no-mitmdump)"),
        "mitmdump's rows say it was left out:\n{stdout}"
    );
    for title in ["### 2.", "### 4.", "### 5.", "### 6."] {
        let section = stdout
            .split(title)
            .nth(1)
            .unwrap_or_else(|| panic!("no section {title} in:\n{stdout}"));
        let section = section.split("\n### ").next().unwrap_or_default();
        let rows: Vec<&str> = section
            .lines()
            .filter(|l| l.contains("| mcptap, recording |"))
            .collect();
        assert!(!rows.is_empty(), "no mcptap row in {title}:\n{section}");
        for row in rows {
            assert!(
                !row.contains("n/a"),
                "mcptap measured nothing in {title}: {row}"
            );
            assert!(row.chars().any(|c| c.is_ascii_digit()), "{row}");
        }
    }
    let analysis = stdout
        .split("### 8.")
        .nth(1)
        .unwrap_or_else(|| panic!("no section 8 in:\n{stdout}"));
    let commands: Vec<&str> = analysis
        .lines()
        .filter(|l| l.starts_with("| `mcptap "))
        .collect();
    assert_eq!(
        commands.len(),
        5,
        "explain ×2, diff, report, export:\n{analysis}"
    );
    for row in commands {
        assert!(!row.contains("failed"), "an analysis command failed: {row}");
    }
}

#[test]
fn the_open_loop_runs_alone_against_the_upstream_run_alone() {
    let certs = std::env::temp_dir().join(format!("mcptap-bench-alone-{}", std::process::id()));
    let made = Command::new(mcptap())
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .expect("running mcptap certs init");
    assert!(made.status.success(), "{made:?}");
    let mut upstream = Command::new(env!("CARGO_BIN_EXE_mcptap-bench"))
        .arg("upstream")
        .arg(certs.join("localhost.pem"))
        .arg(certs.join("localhost-key.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the upstream");
    // "upstream: http://127.0.0.1:PORT https://127.0.0.1:PORT", once it listens.
    let mut line = String::new();
    BufReader::new(upstream.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("the upstream's first line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let run = Command::new(env!("CARGO_BIN_EXE_mcptap-bench"))
        .args(["openloop", &addr, "200", "0.5"])
        .output()
        .expect("running the open loop");
    let _ = upstream.kill();
    let _ = upstream.wait();
    let _ = std::fs::remove_dir_all(&certs);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}");
    assert!(
        out.starts_with("100 done, 0 errors, 0 unfinished; p50 "),
        "200 req/s for 0.5 s is 100 requests, all answered: {out}"
    );
}
