//! The external load generators: wrk (HTTP/1.1, closed loop, plain and TLS) and h2load
//! (HTTP/2). Both POST the same JSON-RPC body to `/json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::Command;

use crate::client::POST_BODY;

/// A closed-loop result.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The wrk Lua scripts and h2load's body file, written once.
pub struct Scripts {
    pub post: PathBuf,
    pub post_close: PathBuf,
    pub body: PathBuf,
}

impl Scripts {
    pub fn write(dir: &Path) -> anyhow::Result<Scripts> {
        let done = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d status_errors=%d p50=%d p99=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;
        let body = POST_BODY.replace('\'', "\\'");
        let post = format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n{done}"
        );
        // `Connection: close` makes wrk open a new connection (and TLS handshake) per request.
        let post_close = format!("{post}\nwrk.headers[\"Connection\"] = \"close\"\n");
        let scripts = Scripts {
            post: dir.join("post.lua"),
            post_close: dir.join("post-close.lua"),
            body: dir.join("body.json"),
        };
        std::fs::write(&scripts.post, post)?;
        std::fs::write(&scripts.post_close, post_close)?;
        std::fs::write(&scripts.body, POST_BODY)?;
        Ok(scripts)
    }
}

/// `wrk -t2 -c<conns> -d<duration>` with a POST script against `url`.
pub async fn wrk(
    wrk: &Path,
    url: &str,
    conns: usize,
    duration: Duration,
    script: &Path,
) -> anyhow::Result<Load> {
    let out = Command::new(wrk)
        .arg("-t2")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .with_context(|| {
            format!(
                "wrk printed no result: {} {}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let requests = field("requests");
    let errors = field("errors") + field("status_errors");
    if requests == 0.0 {
        bail!("wrk completed no request");
    }
    // Connection-close runs count a reset or two at the end; more is a failure.
    if errors > requests * 0.01 {
        bail!("{errors} of {requests} requests failed");
    }
    Ok(Load {
        rps: (requests - errors) / (field("duration_us") / 1e6),
        p50_us: field("p50"),
        p99_us: field("p99"),
    })
}

/// `h2load` with h2c prior knowledge: `clients` connections, `streams` concurrent streams
/// each, for `duration` after a one-second warm-up.
pub async fn h2load(
    h2load: &Path,
    url: &str,
    clients: usize,
    streams: usize,
    duration: Duration,
    body: &Path,
    log: &Path,
) -> anyhow::Result<Load> {
    let _ = std::fs::remove_file(log);
    let run = Command::new(h2load)
        .arg(format!("-c{clients}"))
        .arg(format!("-m{streams}"))
        .arg("-t2")
        .arg(format!("-D{}", duration.as_secs().max(1)))
        .arg("--warm-up-time=1")
        .arg("-d")
        .arg(body)
        .arg("-H")
        .arg("content-type: application/json")
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(duration + Duration::from_secs(30), run)
        .await
        .context("h2load did not finish")?
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout"
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .with_context(|| format!("h2load printed no result: {}", text.trim()))?;
    let count = |what: &str| -> u64 {
        requests
            .split(',')
            .find(|p| p.trim().ends_with(what))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(0)
    };
    let (succeeded, failed, errored) = (count("succeeded"), count("failed"), count("errored"));
    if succeeded == 0 {
        let why = text
            .lines()
            .filter(|l| l.contains("rror") || l.contains("failed") || l.contains("No protocol"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" / ");
        bail!("h2load: no request succeeded ({})", why.trim());
    }
    if failed + errored > succeeded / 100 {
        bail!(
            "h2load: {} of {} requests failed",
            failed + errored,
            succeeded + failed + errored
        );
    }
    // "finished in 5.00s, 12345.60 req/s, ..."
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("h2load printed no rate")?;
    let mut durations: Vec<f64> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let _ = std::fs::remove_file(log);
    durations.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        rps,
        p50_us: crate::report::percentile(&durations, 50.0),
        p99_us: crate::report::percentile(&durations, 99.0),
    })
}
