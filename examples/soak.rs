//! Soak: minutes of mixed JSON and SSE traffic through the release binary, with faults
//! (clients leaving mid-stream, upstreams failing mid-stream), sampling the proxy's RSS and
//! open file descriptors, then checking that every request sent is in the capture.
//! Run by `scripts/soak`; not part of the test suite. All traffic stays on 127.0.0.1.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// /json echoes; /sse sends `n` events 5 ms apart; /sse?fail fails after 3 events.
async fn upstream(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/json" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap());
    }
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(2);
    let fail = query.contains("fail");
    tokio::spawn(async move {
        for i in 0..40 {
            if fail && i == 3 {
                tx.abort(std::io::Error::other("soak upstream fails on purpose"));
                return;
            }
            let event = format!("id: {i}\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{i}}}}}\n\n");
            if tx.send_data(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(body.boxed())
        .unwrap())
}

fn proc_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/mcptap".into());
    let minutes: f64 = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(10.0);
    let workers: usize = args.get(3).and_then(|w| w.parse().ok()).unwrap_or(16);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let up = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(upstream))
                    .await;
            });
        }
    });

    let dir = tempfile::tempdir()?;
    let capture = dir.path().join("soak.jsonl");
    let mut child = std::process::Command::new(&bin)
        .args([
            "proxy",
            "--upstream",
            &format!("http://{up}"),
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--capture",
        ])
        .arg(&capture)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("the proxy printed its address")?;
        if let Some(rest) = line.strip_prefix("mcptap: listening on http://") {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();

    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let sent = sent.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build_http::<Body>();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let kind = (i + w as u64) % 10;
                let req = match kind {
                    0..=5 => Request::post(format!("http://{addr}/json"))
                        .header("content-type", "application/json")
                        .body(full(format!(
                            "{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/list\"}}"
                        ))),
                    6 => Request::get(format!("http://{addr}/sse?fail")).body(full("")),
                    _ => Request::get(format!("http://{addr}/sse")).body(full("")),
                }
                .expect("a valid request");
                sent.fetch_add(1, Ordering::Relaxed);
                let Ok(resp) = client.request(req).await else {
                    continue;
                };
                let mut body = resp.into_body();
                // Every fourth stream is abandoned after its first events: a client leaving.
                let leave_after = if kind >= 7 && i.is_multiple_of(4) {
                    3
                } else {
                    usize::MAX
                };
                let mut frames = 0;
                while let Some(Ok(_)) = body.frame().await {
                    frames += 1;
                    if frames >= leave_after {
                        break;
                    }
                }
            }
        }));
    }
    println!("| minute | requests sent | proxy RSS (MiB) | open fds |");
    println!("|---:|---:|---:|---:|");
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(30).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let rss = proc_field(pid, "VmRSS:") as f64 / 1024.0;
        let fd = fds(pid);
        samples.push((rss, fd));
        println!(
            "| {:.1} | {} | {:.1} | {} |",
            started.elapsed().as_secs_f64() / 60.0,
            sent.load(Ordering::Relaxed),
            rss,
            fd
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait()?;
    let cap = mcptap::capture::reader::Capture::open(&capture)?;
    let total = sent.load(Ordering::Relaxed);
    println!();
    println!(
        "requests sent: {total}; exchanges in the capture: {}; proxy exit: {status}",
        cap.exchanges.len()
    );
    let outcomes = cap
        .exchanges
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut m, x| {
            *m.entry(format!("{:?}", x.outcome())).or_insert(0u64) += 1;
            m
        });
    println!("outcomes: {outcomes:?}");
    println!(
        "capture: {} bytes, session_end clean: {:?}",
        std::fs::metadata(&capture)?.len(),
        cap.session_end.map(|(_, e)| e.clean)
    );
    if let (Some(first), Some(last)) = (samples.get(1), samples.last()) {
        println!(
            "RSS after warm-up {:.1} MiB → end {:.1} MiB; fds {} → {}",
            first.0, last.0, first.1, last.1
        );
    }
    anyhow::ensure!(
        cap.exchanges.len() as u64 == total,
        "the capture is missing requests"
    );
    Ok(())
}
