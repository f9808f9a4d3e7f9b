//! mcptap's benchmark harness: one invocation runs every workload against every contender
//! (direct, mcptap recording, mcptap recording to /dev/null, nginx, mitmdump) on loopback,
//! in alternating rounds, and mcptap's analysis commands on a capture it recorded under load,
//! and writes a markdown report. See benches/README.md.

mod client;
mod contender;
mod machine;
mod mcpload;
mod measure;
mod report;
mod tools;
mod upstream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use contender::{rotation, Kind, Listen, Running};
use report::{count, ms, na, plus_ms, ratio, Rounds, Table};

/// Everything the workloads share.
pub struct Env {
    pub tmp: PathBuf,
    pub mcptap: PathBuf,
    /// Or why there is none: not installed, or left out.
    pub mitmdump: Result<PathBuf, String>,
    pub nginx: Option<PathBuf>,
    pub wrk: Option<PathBuf>,
    pub h2load: Option<PathBuf>,
    pub upstream: upstream::Upstream,
    pub certs: PathBuf,
    /// The open-files limit of this process (and so of the proxies it starts).
    pub nofile: u64,
    pub scripts: tools::Scripts,
    pub plan: Plan,
    /// Flags for every `mcptap proxy`, by what this mcptap knows.
    pub mcptap_flags: Vec<String>,
}

/// Sizes and durations of the workloads.
#[derive(Clone)]
pub struct Plan {
    pub rounds: usize,
    pub load: Duration,
    pub open_rate: f64,
    pub tls: Duration,
    /// (event size, events per second, events per run)
    pub sse: Vec<(usize, u64, u64)>,
    pub idle: usize,
    pub big: u64,
    /// Size of each capture w8 records and analyses, bytes.
    pub capture: u64,
}

struct Args {
    plan: Plan,
    quick: bool,
    only: Option<Vec<String>>,
    mcptap: PathBuf,
    mitmdump: Option<PathBuf>,
    no_mitmdump: bool,
    results: PathBuf,
    readme: Option<PathBuf>,
    wait_quiet: Duration,
}

const USAGE: &str =
    "usage: mcptap-bench --mcptap PATH [--mitmdump PATH | --no-mitmdump] [--rounds N]
                    [--quick | --smoke] [--only w1,w2,...] [--streams N] [--results DIR]
                    [--readme FILE] [--wait-quiet SECONDS] [--capture-size BYTES]

Workloads: w1 HTTP/1.1 closed loop, w2 open loop, w3 HTTP/2, w4 SSE latency,
w5 idle SSE streams, w6 1 GiB response, w7 TLS, w8 analysis of a 1 GiB capture
(explain, diff, report, export --har; --capture-size sets its size, e.g. 512MiB; --quick
256 MiB, --smoke 8 MiB). Before the first workload, --wait-quiet
waits up to that long for other processes to leave the CPU (under 5%), and up to 15 s of it
before each later one; the report says how much CPU others used during each workload.
--smoke shrinks every workload to a few seconds in all (the harness's own test runs it).
--no-mitmdump leaves mitmdump out (its rounds run to their deadline: most of w1 – w2's
time); such a run is written as partial.
benches/run builds and runs this.";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut smoke = false;
    let mut rounds = None;
    let mut only = None;
    let mut mcptap = None;
    let mut mitmdump = None;
    let mut no_mitmdump = false;
    let mut results = PathBuf::from("benches/results");
    let mut readme = None;
    let mut streams = None;
    let mut capture = None;
    let mut wait_quiet = Duration::ZERO;
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--smoke" => smoke = true,
            "--rounds" => rounds = Some(value()?.parse().context("--rounds")?),
            "--only" => only = Some(value()?.split(',').map(str::to_string).collect()),
            "--mcptap" => mcptap = Some(PathBuf::from(value()?)),
            "--mitmdump" => mitmdump = Some(PathBuf::from(value()?)),
            "--no-mitmdump" => no_mitmdump = true,
            "--results" => results = PathBuf::from(value()?),
            "--readme" => readme = Some(PathBuf::from(value()?)),
            "--streams" => streams = Some(value()?.parse().context("--streams")?),
            "--capture-size" => capture = Some(parse_size(&value()?).context("--capture-size")?),
            "--wait-quiet" => {
                wait_quiet = Duration::from_secs(value()?.parse().context("--wait-quiet")?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a}\n{USAGE}"),
        }
    }
    let plan = if smoke {
        // Proves that every step of the harness works, in seconds; the figures mean nothing.
        Plan {
            rounds: 1,
            load: Duration::from_secs(1),
            open_rate: 200.0,
            tls: Duration::from_secs(1),
            sse: vec![(100, 200, 20)],
            idle: streams.unwrap_or(20),
            big: 4 << 20,
            capture: capture.unwrap_or(8 << 20),
        }
    } else if quick {
        Plan {
            rounds: rounds.unwrap_or(1),
            load: Duration::from_secs(2),
            open_rate: 2000.0,
            tls: Duration::from_secs(2),
            sse: vec![
                (100, 100, 100),
                (16384, 100, 100),
                (100, 1000, 500),
                (16384, 1000, 500),
            ],
            idle: streams.unwrap_or(1000),
            big: 128 << 20,
            capture: capture.unwrap_or(256 << 20),
        }
    } else {
        Plan {
            rounds: rounds.unwrap_or(5),
            load: Duration::from_secs(5),
            open_rate: 2000.0,
            tls: Duration::from_secs(4),
            sse: vec![
                (100, 100, 300),
                (16384, 100, 300),
                (100, 1000, 2000),
                (16384, 1000, 2000),
            ],
            idle: streams.unwrap_or(10_000),
            big: 1 << 30,
            capture: capture.unwrap_or(1 << 30),
        }
    };
    Ok(Args {
        plan,
        quick: quick || smoke,
        only,
        mcptap: mcptap.context(USAGE)?,
        mitmdump,
        no_mitmdump,
        results,
        readme,
        wait_quiet,
    })
}

/// `1073741824`, `512MiB`, `1GiB`, `64KiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB`: all
/// binary, as mcptap reads its own size flags).
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => bail!("{text:?}: the unit is one of KiB, MiB, GiB"),
    };
    number
        .checked_mul(1 << shift)
        .with_context(|| format!("{text:?} is too large"))
}

fn main() -> anyhow::Result<()> {
    // `mcptap-bench upstream CERT KEY`: only the upstream, until killed (for poking at it by hand).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("upstream") && argv.len() == 4 {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(async {
            let up = upstream::start(Path::new(&argv[2]), Path::new(&argv[3])).await?;
            println!("upstream: http://{} https://{}", up.plain, up.tls);
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    // `mcptap-bench openloop ADDR RATE SECONDS`: w2's load alone against ADDR, its latency
    // percentiles printed (for comparing builds by hand, under a profiler).
    if argv.get(1).map(String::as_str) == Some("openloop") && argv.len() == 5 {
        let addr: std::net::SocketAddr = argv[2].parse().context("openloop ADDR")?;
        let rate: f64 = argv[3].parse().context("openloop RATE")?;
        let secs: f64 = argv[4].parse().context("openloop SECONDS")?;
        let rt = tokio::runtime::Runtime::new()?;
        let o = rt.block_on(client::open_loop(
            addr,
            rate,
            Duration::from_secs_f64(secs),
            64,
        ))?;
        let p = report::latency_percentiles(&o.latencies, &[50.0, 90.0, 99.0, 99.9, 100.0]);
        println!(
            "{} done, {} errors, {} unfinished; p50 {} p90 {} p99 {} p99.9 {} max {} ms",
            o.latencies.len(),
            o.errors,
            o.unfinished,
            ms(p[0]),
            ms(p[1]),
            ms(p[2]),
            ms(p[3]),
            ms(p[4])
        );
        return Ok(());
    }
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// One workload's part of the report.
struct Section {
    title: String,
    what: String,
    table: String,
    notes: Vec<String>,
    rounds: Rounds,
    /// Share of the CPU other processes used during the workload.
    others: f64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let began = Instant::now();
    let tmp = std::env::temp_dir().join(format!("mcptap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run_in(&args, &tmp).await;
    let _ = std::fs::remove_dir_all(&tmp);
    let (report, date) = result?;
    println!("{report}");
    std::fs::create_dir_all(&args.results)?;
    // A quick run is a smoke test: its figures never replace a full run's.
    // Fewer than 5 rounds is not what the targets are judged on (#10: medians of at least 5).
    let quick = args.plan.rounds < 5 || args.only.is_some() || args.quick || args.no_mitmdump;
    let file = if quick {
        args.results.join(format!("{date}-partial.md"))
    } else {
        unused_name(&args.results, &date)
    };
    std::fs::write(&file, &report)?;
    eprintln!(
        "bench: wrote {} ({:.0} s in all)",
        file.display(),
        began.elapsed().as_secs_f64()
    );
    if let Some(readme) = args.readme.as_ref().filter(|_| !quick) {
        update_readme(readme, &report)?;
        eprintln!("bench: updated the results in {}", readme.display());
    }
    Ok(())
}

/// `<date>.md` in `dir`, or `<date>-2.md`, `<date>-3.md` … if a full run of that day is
/// there already: a second run the same day keeps the first one's figures.
fn unused_name(dir: &Path, date: &str) -> PathBuf {
    let first = dir.join(format!("{date}.md"));
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| dir.join(format!("{date}-{n}.md")))
        .find(|p| !p.exists())
        .expect("some number is free")
}

async fn run_in(args: &Args, tmp: &Path) -> anyhow::Result<(String, String)> {
    let certs = tmp.join("certs");
    let made = std::process::Command::new(&args.mcptap)
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .with_context(|| format!("running {}", args.mcptap.display()))?;
    if !made.status.success() {
        bail!(
            "mcptap certs init failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let upstream = upstream::start(
        &certs.join("localhost.pem"),
        &certs.join("localhost-key.pem"),
    )
    .await?;
    let nofile = machine::open_files_limit();
    let env = Env {
        tmp: tmp.to_path_buf(),
        mcptap: args.mcptap.clone(),
        mitmdump: match &args.mitmdump {
            _ if args.no_mitmdump => Err("left out with --no-mitmdump".into()),
            Some(p) if p.exists() => Ok(p.clone()),
            _ => Err("mitmdump not installed".into()),
        },
        nginx: which("nginx"),
        wrk: which("wrk"),
        h2load: which("h2load"),
        upstream,
        certs,
        nofile,
        scripts: tools::Scripts::write(tmp)?,
        plan: args.plan.clone(),
        mcptap_flags: mcptap_flags(&args.mcptap),
    };
    let wanted = |w: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == w));
    let mut sections = Vec::new();
    for w in ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"] {
        if !wanted(w) {
            continue;
        }
        // The whole patience before the first workload, a little before each other one.
        let patience = if sections.is_empty() {
            args.wait_quiet
        } else {
            args.wait_quiet.min(Duration::from_secs(15))
        };
        if !patience.is_zero() {
            machine::wait_quiet(0.05, patience).await;
        }
        let meter = machine::CpuMeter::start();
        let mut section = match w {
            "w1" => w1_http1(&env).await,
            "w2" => w2_open_loop(&env).await,
            "w3" => w3_http2(&env).await,
            "w4" => w4_sse(&env).await,
            "w5" => w5_idle(&env).await,
            "w6" => w6_big(&env).await,
            "w7" => w7_tls(&env).await,
            _ => w8_analysis(&env).await,
        };
        section.others = meter.others();
        eprintln!(
            "bench: {w} done; other processes used {:.0}% of the CPU meanwhile",
            section.others * 100.0
        );
        sections.push(section);
    }
    let date = shell("date", &["-u", "+%Y-%m-%d"]);
    let mut out = String::new();
    out.push_str(&format!(
        "## Results {} ({})\n\n",
        shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine::describe()
    ));
    out.push_str(&versions(&env));
    out.push_str(&format!(
        "\nEach figure is the median of {} alternating rounds (the contenders' order rotates each round).\n\n",
        env.plan.rounds
    ));
    out.push_str(&headline(&sections));
    for s in &sections {
        out.push_str(&format!("### {}\n\n{}\n\n{}", s.title, s.what, s.table));
        for n in &s.notes {
            out.push_str(&format!("\n- {n}"));
        }
        if s.others >= 0.05 {
            out.push_str(&format!(
                "\n- **Other processes used {:.0}% of the CPU during this workload: its figures are disturbed.**",
                s.others * 100.0
            ));
        } else {
            out.push_str(&format!(
                "\n- Other processes used {:.0}% of the CPU meanwhile.",
                s.others * 100.0
            ));
        }
        out.push_str("\n\n");
    }
    Ok((out, date))
}

// ---------------------------------------------------------------------------------------
// Workloads

async fn start_all(
    env: &Env,
    kinds: &[Kind],
    listen: Listen,
    rounds: &mut Rounds,
    metric: &str,
) -> BTreeMap<Kind, Running> {
    let mut running = BTreeMap::new();
    for &kind in kinds {
        match contender::start(kind, env, listen).await {
            Ok(r) => {
                running.insert(kind, r);
            }
            Err(e) => {
                eprintln!("bench: {} did not start: {e}", kind.label());
                rounds.na(kind, metric, format!("did not start: {e}"));
            }
        }
    }
    running
}

async fn stop_all(running: BTreeMap<Kind, Running>) {
    for (_, r) in running {
        r.stop().await;
    }
}

fn url(addr: std::net::SocketAddr, scheme: &str) -> String {
    format!("{scheme}://{addr}/json")
}

/// (1) Small JSON POSTs, HTTP/1.1 keep-alive, 64 connections, as fast as they go.
async fn w1_http1(env: &Env) -> Section {
    let kinds = Kind::ALL;
    let mut rounds = Rounds::default();
    let mut notes = Vec::new();
    let mut running = start_all(env, &kinds, Listen::Plain, &mut rounds, "rps").await;
    let mut mcptap_requests = 0.0;
    if let Some(wrk) = &env.wrk {
        for r in running.values() {
            let Some(addr) = r.plain else { continue };
            if let Ok(l) = tools::wrk(
                wrk,
                &url(addr, "http"),
                64,
                Duration::from_secs(1),
                &env.scripts.post,
            )
            .await
            {
                if r.kind == Kind::McptapOn {
                    mcptap_requests += l.rps;
                }
            }
        }
        for round in 0..env.plan.rounds {
            for kind in rotation(&kinds, round) {
                let Some(addr) = running.get(&kind).and_then(|r| r.plain) else {
                    continue;
                };
                match tools::wrk(
                    wrk,
                    &url(addr, "http"),
                    64,
                    env.plan.load,
                    &env.scripts.post,
                )
                .await
                {
                    Ok(l) => {
                        eprintln!(
                            "bench: w1 round {} {}: {} req/s",
                            round + 1,
                            kind.label(),
                            count(l.rps)
                        );
                        rounds.add(kind, "rps", l.rps);
                        rounds.add(kind, "p50", l.p50_us);
                        rounds.add(kind, "p99", l.p99_us);
                        if kind == Kind::McptapOn {
                            mcptap_requests += l.rps * env.plan.load.as_secs_f64();
                        }
                    }
                    Err(e) => rounds.na(kind, "rps", e.to_string()),
                }
            }
        }
    } else {
        for k in kinds {
            rounds.na(k, "rps", "wrk not installed");
        }
    }
    if let Some(r) = running.get(&Kind::McptapOn) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bytes = r.recorded_bytes() as f64;
        if mcptap_requests > 0.0 {
            notes.push(format!(
                "mcptap recorded every exchange (request, response, both bodies, timings): {:.0} MiB of capture, about {} bytes per exchange.",
                bytes / 1048576.0,
                count(bytes / mcptap_requests)
            ));
        }
    }
    for kind in [Kind::McptapOn, Kind::McptapOff] {
        if let Some(r) = running.get(&kind) {
            let threads: Vec<String> = r
                .thread_cpu()
                .iter()
                .filter(|(_, t)| *t >= 0.5)
                .map(|(n, t)| format!("{n} {t:.0} s"))
                .collect();
            notes.push(format!(
                "{}: CPU time by thread over the workload: {}.",
                kind.label(),
                threads.join(", ")
            ));
        }
    }
    if let Some(r) = running.get_mut(&Kind::Nginx) {
        notes.push(format!(
            "nginx logged one access-log line per request ({:.0} MiB).",
            r.recorded_bytes() as f64 / 1048576.0
        ));
    }
    stop_all(running).await;
    let t = rate_table(&rounds, &kinds);
    notes.extend(paired_note(&rounds, "rps"));
    Section {
        title: "1. Small JSON POSTs, HTTP/1.1 keep-alive, 64 connections (closed loop)".into(),
        what: format!(
            "wrk -t2 -c64 -d{}s with a Lua script POSTing a 124-byte JSON-RPC request; the upstream answers 1 KiB of JSON. Throughput and wrk's latency percentiles.",
            env.plan.load.as_secs()
        ),
        table: t.markdown(),
        notes,
        rounds,
        others: 0.0,
    }
}

/// mcptap's rate over nginx's round by round, beside the table's ratio of medians.
fn paired_note(rounds: &Rounds, metric: &str) -> Option<String> {
    let pairs = rounds.paired(Kind::McptapOn, Kind::Nginx, metric)?;
    let each: Vec<String> = pairs.iter().map(|r| format!("{r:.2}")).collect();
    Some(format!(
        "{} over nginx round by round (each round runs the contenders back to back, so a change in the machine's speed between rounds cancels out): {}; median {:.2}×.",
        Kind::McptapOn.label(),
        each.join(", "),
        report::median(&pairs)
    ))
}

/// (2) The same requests at a fixed rate (open loop): latency added over direct.
/// The closed-loop request-rate table of w1 and w3: req/s against direct and nginx, and the
/// load generator's p50/p99.
fn rate_table(rounds: &Rounds, kinds: &[Kind]) -> Table {
    let direct = rounds.get(Kind::Direct, "rps");
    let nginx = rounds.get(Kind::Nginx, "rps");
    let mut t = Table::new(&[
        "contender",
        "req/s",
        "× direct",
        "× nginx",
        "p50 ms",
        "p99 ms",
    ]);
    for &k in kinds {
        match rounds.get(k, "rps") {
            Some(rps) => t.row(vec![
                k.label().into(),
                count(rps),
                ratio(rps, direct),
                ratio(rps, nginx),
                ms(rounds.get(k, "p50").unwrap_or(0.0)),
                ms(rounds.get(k, "p99").unwrap_or(0.0)),
            ]),
            None => t.row(vec![
                k.label().into(),
                na(rounds.why(k, "rps")),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    t
}

async fn w2_open_loop(env: &Env) -> Section {
    let kinds = Kind::ALL;
    let mut rounds = Rounds::default();
    let mut notes = Vec::new();
    let running = start_all(env, &kinds, Listen::Plain, &mut rounds, "p50").await;
    let rate = env.plan.open_rate;
    for r in running.values() {
        if let Some(addr) = r.plain {
            let _ = client::open_loop(addr, rate, Duration::from_secs(1), 64).await;
        }
    }
    for round in 0..env.plan.rounds {
        for kind in rotation(&kinds, round) {
            let Some(addr) = running.get(&kind).and_then(|r| r.plain) else {
                continue;
            };
            match client::open_loop(addr, rate, env.plan.load, 64).await {
                Ok(o) => {
                    let p = report::latency_percentiles(&o.latencies, &[50.0, 99.0, 100.0]);
                    let achieved = o.latencies.len() as f64
                        / o.elapsed.as_secs_f64().max(env.plan.load.as_secs_f64());
                    eprintln!(
                        "bench: w2 round {} {}: {} req/s, p50 {} ms, p99 {} ms, {} errors, {} unfinished",
                        round + 1, kind.label(), count(achieved), ms(p[0]), ms(p[1]), o.errors, o.unfinished
                    );
                    rounds.add(kind, "rate", achieved);
                    rounds.add(kind, "p50", p[0]);
                    rounds.add(kind, "p99", p[1]);
                    rounds.add(kind, "max", p[2]);
                    rounds.add(kind, "lost", (o.errors + o.unfinished) as f64);
                }
                Err(e) => rounds.na(kind, "p50", e.to_string()),
            }
        }
    }
    stop_all(running).await;
    let d50 = rounds.get(Kind::Direct, "p50");
    let d99 = rounds.get(Kind::Direct, "p99");
    let mut t = Table::new(&[
        "contender",
        "achieved req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "added p50 ms",
        "added p99 ms",
    ]);
    for k in kinds {
        let Some(p50) = rounds.get(k, "p50") else {
            t.row(vec![
                k.label().into(),
                na(rounds.why(k, "p50")),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        };
        let p99 = rounds.get(k, "p99").unwrap_or(0.0);
        let added = |v: f64, base: Option<f64>| {
            if k == Kind::Direct {
                "–".to_string()
            } else {
                base.map(|b| plus_ms(v - b)).unwrap_or("–".into())
            }
        };
        let rate_cell = rounds.get(k, "rate").unwrap_or(0.0);
        let lost = rounds.get(k, "lost").unwrap_or(0.0);
        if rate_cell < rate * 0.95 || lost > 0.0 {
            notes.push(format!(
                "{} could not keep up with {} req/s: it completed {} req/s, {} requests per round failed or were still waiting at the deadline; its latencies include the queueing.",
                k.label(), count(rate), count(rate_cell), count(lost)
            ));
        }
        t.row(vec![
            k.label().into(),
            count(rate_cell),
            ms(p50),
            ms(p99),
            ms(rounds.get(k, "max").unwrap_or(0.0)),
            added(p50, d50),
            added(p99, d99),
        ]);
    }
    Section {
        title: format!("2. The same POSTs at a fixed {} req/s (open loop)", count(rate)),
        what: format!(
            "The harness's own Rust generator (hyper): 64 keep-alive connections, request i due at i/{} s on connection i mod 64, for {} s. Latency counts from when a request was due if its connection was still busy (no coordinated omission), else from when it was sent.",
            count(rate), env.plan.load.as_secs()
        ),
        table: t.markdown(),
        notes,
        rounds,
        others: 0.0,
    }
}

/// (3) HTTP/2 (h2c prior knowledge) with h2load.
async fn w3_http2(env: &Env) -> Section {
    let kinds = Kind::ALL;
    let mut rounds = Rounds::default();
    let running = start_all(env, &kinds, Listen::Plain, &mut rounds, "rps").await;
    let (clients, streams) = (16, 8);
    match &env.h2load {
        None => {
            for k in kinds {
                rounds.na(k, "rps", "h2load not installed");
            }
        }
        Some(h2load) => {
            for round in 0..env.plan.rounds {
                for kind in rotation(&kinds, round) {
                    let Some(r) = running.get(&kind) else {
                        continue;
                    };
                    let addr = match &r.h2c {
                        Ok(a) => *a,
                        Err(e) => {
                            rounds.na(kind, "rps", e.clone());
                            continue;
                        }
                    };
                    if rounds.why(kind, "rps").is_some() {
                        continue;
                    }
                    let log = env.tmp.join("h2load.log");
                    match tools::h2load(
                        h2load,
                        &url(addr, "http"),
                        clients,
                        streams,
                        env.plan.load,
                        &env.scripts.body,
                        &log,
                    )
                    .await
                    {
                        Ok(l) => {
                            eprintln!(
                                "bench: w3 round {} {}: {} req/s",
                                round + 1,
                                kind.label(),
                                count(l.rps)
                            );
                            rounds.add(kind, "rps", l.rps);
                            rounds.add(kind, "p50", l.p50_us);
                            rounds.add(kind, "p99", l.p99_us);
                        }
                        Err(e) => {
                            eprintln!("bench: w3 {}: {e:#}", kind.label());
                            // mitmproxy says why in its log (at a level -q hides).
                            let why = match (kind, r.log_line("not supported")) {
                                (_, Some(said)) => format!("mitmproxy: “{said}”"),
                                (Kind::Mitmproxy, None) => "no h2c in mitmproxy, which logs “Initiating HTTP/2 connections with prior knowledge are currently not supported.”; h2load: no request succeeded".into(),
                                _ => e.to_string(),
                            };
                            rounds.na(kind, "rps", why);
                        }
                    }
                }
            }
        }
    }
    stop_all(running).await;
    let t = rate_table(&rounds, &kinds);
    Section {
        title: "3. Small JSON POSTs over HTTP/2 (h2c, prior knowledge)".into(),
        what: format!(
            "h2load -c{clients} -m{streams} -t2 -D{} --warm-up-time=1 (128 concurrent streams). The proxies speak HTTP/1.1 to the upstream; direct is h2c to the upstream itself. nginx serves h2c on its own `listen … http2` port (1.22: prior knowledge only there). Latencies from h2load's per-request log.",
            env.plan.load.as_secs()
        ),
        table: t.markdown(),
        notes: paired_note(&rounds, "rps").into_iter().collect(),
        rounds,
        others: 0.0,
    }
}

/// (4) SSE: per-event delivery latency over direct, and coalescing.
async fn w4_sse(env: &Env) -> Section {
    let kinds = Kind::ALL;
    let mut rounds = Rounds::default();
    let mut notes = Vec::new();
    let running = start_all(env, &kinds, Listen::Plain, &mut rounds, "all").await;
    let metric = |case: &(usize, u64, u64), m: &str| format!("{}/{}:{m}", case.0, case.1);
    for r in running.values() {
        if let Some(addr) = r.plain {
            let _ = client::sse(addr, 20, 100, 1000, Duration::from_secs(10)).await;
        }
    }
    let mut sent_through_mcptap = 20;
    for case in env.plan.sse.clone() {
        let (size, rate, n) = case;
        let timeout = Duration::from_secs_f64(n as f64 / rate as f64) + Duration::from_secs(15);
        for round in 0..env.plan.rounds {
            for kind in rotation(&kinds, round) {
                let Some(addr) = running.get(&kind).and_then(|r| r.plain) else {
                    continue;
                };
                match client::sse(addr, n, size, rate, timeout).await {
                    Ok(run) => {
                        let p = report::latency_percentiles(&run.latencies, &[50.0, 99.0, 100.0]);
                        let coalesced = 100.0 * run.coalesced as f64 / n as f64;
                        eprintln!(
                            "bench: w4 {size} B at {rate}/s round {} {}: p50 {} ms p99 {} ms max {} ms, {coalesced:.0}% coalesced",
                            round + 1, kind.label(), ms(p[0]), ms(p[1]), ms(p[2])
                        );
                        rounds.add(kind, &metric(&case, "p50"), p[0]);
                        rounds.add(kind, &metric(&case, "p99"), p[1]);
                        rounds.add(kind, &metric(&case, "max"), p[2]);
                        rounds.add(kind, &metric(&case, "coalesced"), coalesced);
                        if kind == Kind::McptapOn {
                            sent_through_mcptap += n;
                        }
                    }
                    Err(e) => rounds.na(kind, &metric(&case, "p50"), e.to_string()),
                }
            }
        }
    }
    if let Some(r) = running.get(&Kind::McptapOn) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(dir) = &r.record {
            let recorded = count_in_files(dir, b"\"kind\":\"sse\"");
            notes.push(format!(
                "mcptap's capture holds {} `sse` lines for the {} events it forwarded (one line per event, parsed and redacted as they passed).",
                count(recorded as f64),
                count(sent_through_mcptap as f64)
            ));
        }
    }
    if running.contains_key(&Kind::Mitmproxy) {
        notes.push("mitmproxy buffers a `text/event-stream` response until it ends unless response streaming is turned on for it (mitmproxy issue 4469), and a streamed body is not kept in the flow: recording and live SSE exclude each other. It ran in its recording configuration, so every event waits for the end of its stream.".into());
    }
    stop_all(running).await;
    let mut t = Table::new(&[
        "events",
        "contender",
        "p50 ms",
        "p99 ms",
        "max ms",
        "added p50",
        "added p99",
        "added max",
        "coalesced",
    ]);
    for case in &env.plan.sse {
        let label = format!(
            "{} × {} B at {}/s",
            case.2,
            if case.0 >= 1024 {
                format!("{}Ki", case.0 / 1024)
            } else {
                case.0.to_string()
            },
            case.1
        );
        let label = label.replace("Ki B", " KiB");
        for k in kinds {
            let m = |x: &str| rounds.get(k, &metric(case, x));
            let Some(p50) = m("p50") else {
                t.row(vec![
                    label.clone(),
                    k.label().into(),
                    na(rounds.why(k, &metric(case, "p50")).or(rounds.why(k, "all"))),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
                continue;
            };
            let added = |x: &str| {
                if k == Kind::Direct {
                    "–".to_string()
                } else {
                    match (m(x), rounds.get(Kind::Direct, &metric(case, x))) {
                        (Some(v), Some(d)) => plus_ms(v - d),
                        _ => "–".into(),
                    }
                }
            };
            t.row(vec![
                label.clone(),
                k.label().into(),
                ms(p50),
                ms(m("p99").unwrap_or(0.0)),
                ms(m("max").unwrap_or(0.0)),
                added("p50"),
                added("p99"),
                added("max"),
                format!("{:.0}%", m("coalesced").unwrap_or(0.0)),
            ]);
        }
    }
    Section {
        title: "4. Server-sent events: delivery latency and coalescing".into(),
        what: "One `GET /sse` stream per run; the upstream (in the harness process) stamps each event with its send time on the process's monotonic clock, a pacing thread sends them at the given rate, and the harness reads the stream with plain `read()` calls and times each event at the read that completes it. Added = contender − direct (medians). Coalesced = events that completed in the same read as another event.".into(),
        table: t.markdown(),
        notes,
        rounds,
        others: 0.0,
    }
}

/// (5) Many idle SSE streams: the proxy's resident memory per stream.
async fn w5_idle(env: &Env) -> Section {
    let kinds = Kind::PROXIES;
    let mut rounds = Rounds::default();
    let mut notes = Vec::new();
    // Each stream costs the proxy two descriptors (client and upstream side), and the
    // harness two as well (its client socket and the upstream's).
    let fit = ((env.nofile.saturating_sub(400)) / 2) as usize;
    let n = env.plan.idle.min(fit);
    if n < env.plan.idle {
        notes.push(format!(
            "{} streams asked for; the open-files limit here is {} (a hard limit root cannot raise in this container), and the proxy and the harness each hold two descriptors per stream, so {} streams.",
            count(env.plan.idle as f64), count(env.nofile as f64), count(n as f64)
        ));
    }
    let stats = env.upstream.stats.clone();
    let open_now = || stats.idle_open.load(std::sync::atomic::Ordering::Acquire);
    for round in 0..env.plan.rounds {
        for kind in rotation(&kinds, round) {
            if rounds.why(kind, "per").is_some() {
                continue;
            }
            // A fresh process each time: memory freed by closed streams is not given back
            // to the system, so a second measurement in the same process would start high.
            let r = match contender::start(kind, env, Listen::Plain).await {
                Ok(r) => r,
                Err(e) => {
                    rounds.na(kind, "per", format!("did not start: {e}"));
                    continue;
                }
            };
            let Some(addr) = r.plain else { continue };
            let before = r.rss_kib();
            let base = open_now();
            let deadline = Instant::now() + Duration::from_secs(60);
            let est = {
                let stats = stats.clone();
                move || {
                    stats
                        .idle_open
                        .load(std::sync::atomic::Ordering::Acquire)
                        .saturating_sub(base)
                }
            };
            let (streams, error) = client::open_idle(addr, n, 128, deadline, est).await;
            // Established means the request reached the upstream through the proxy.
            while (open_now().saturating_sub(base) as usize) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let established = open_now().saturating_sub(base) as f64;
            let with = r.rss_kib();
            drop(streams);
            // Let every stream close, then see what the proxy keeps.
            let wait = Instant::now() + Duration::from_secs(30);
            while open_now() > base && Instant::now() < wait {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let closed = r.rss_kib();
            eprintln!(
                "bench: w5 round {} {}: {} streams, RSS {} → {} → {} KiB{}",
                round + 1,
                kind.label(),
                established,
                before,
                with,
                closed,
                error
                    .as_deref()
                    .map(|e| format!(" (client error: {e})"))
                    .unwrap_or_default()
            );
            if established < n as f64 / 10.0 {
                rounds.na(
                    kind,
                    "per",
                    format!(
                        "only {} of {} streams reached the upstream within 60 s",
                        count(established),
                        count(n as f64)
                    ),
                );
            } else {
                if established < n as f64 {
                    notes.push(format!(
                        "Round {}: {} held only {} of the {} streams within 60 s; its figure is per stream held.",
                        round + 1, kind.label(), count(established), count(n as f64)
                    ));
                }
                rounds.add(kind, "streams", established);
                rounds.add(kind, "before", before as f64);
                rounds.add(kind, "after", with as f64);
                rounds.add(kind, "closed", closed as f64);
                rounds.add(kind, "per", (with as f64 - before as f64) / established);
            }
            r.stop().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut t = Table::new(&[
        "contender",
        "streams",
        "RSS before MiB",
        "RSS with streams MiB",
        "KiB per stream",
        "RSS after they closed MiB",
    ]);
    for k in kinds {
        match rounds.get(k, "per") {
            Some(per) => t.row(vec![
                k.label().into(),
                count(rounds.get(k, "streams").unwrap_or(0.0)),
                format!("{:.1}", rounds.get(k, "before").unwrap_or(0.0) / 1024.0),
                format!("{:.1}", rounds.get(k, "after").unwrap_or(0.0) / 1024.0),
                format!("{per:.1}"),
                format!("{:.1}", rounds.get(k, "closed").unwrap_or(0.0) / 1024.0),
            ]),
            None => t.row(vec![
                k.label().into(),
                na(rounds.why(k, "per")),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    Section {
        title: format!("5. {} idle SSE streams: memory per stream", count(n as f64)),
        what: "The harness opens the streams (`GET /sse?n=0`: headers and one comment, then silence), at most 128 on their way at a time, waits until all reached the upstream, waits 1 s, and reads the proxy's VmRSS (nginx: its workers added up). Per stream = (RSS with streams − RSS before) / streams. Then it closes them all and reads the RSS again, 1 s after the last one closed at the upstream. Each measurement is on a freshly started proxy. Direct has no proxy to measure.".into(),
        table: t.markdown(),
        notes,
        rounds,
        others: 0.0,
    }
}

/// (6) One 1 GiB response: throughput and the proxy's peak RSS.
async fn w6_big(env: &Env) -> Section {
    let kinds = Kind::ALL;
    let mut rounds = Rounds::default();
    let mut notes = Vec::new();
    let bytes = env.plan.big;
    let mut recorded: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    for round in 0..env.plan.rounds {
        for kind in rotation(&kinds, round) {
            if rounds.why(kind, "mibs").is_some() {
                continue;
            }
            // A fresh process each time, so the peak is this transfer's alone.
            let r = match contender::start(kind, env, Listen::Plain).await {
                Ok(r) => r,
                Err(e) => {
                    rounds.na(kind, "mibs", format!("did not start: {e}"));
                    continue;
                }
            };
            let Some(addr) = r.plain else { continue };
            r.reset_peak();
            match client::download(addr, bytes, Duration::from_secs(180)).await {
                Ok(elapsed) => {
                    let mibs = bytes as f64 / 1048576.0 / elapsed.as_secs_f64();
                    let peak = r.peak_kib() as f64;
                    eprintln!(
                        "bench: w6 round {} {}: {:.0} MiB/s, peak RSS {:.0} MiB",
                        round + 1,
                        kind.label(),
                        mibs,
                        peak / 1024.0
                    );
                    rounds.add(kind, "mibs", mibs);
                    if kind != Kind::Direct {
                        rounds.add(kind, "peak", peak);
                    }
                }
                Err(e) => rounds.na(kind, "mibs", e.to_string()),
            }
            if r.record.is_some() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                recorded
                    .entry(kind)
                    .or_default()
                    .push(r.recorded_bytes() as f64);
            }
            r.stop().await;
        }
    }
    if let Some(v) = recorded.get(&Kind::McptapOn) {
        notes.push(format!(
            "mcptap recorded the first 10 MiB of the body (`--max-body`, default) and its true length: a capture of {:.1} MiB per transfer.",
            report::median(v) / 1048576.0
        ));
    }
    if let Some(v) = recorded.get(&Kind::Mitmproxy) {
        notes.push(format!(
            "mitmproxy holds the whole response in memory before it forwards it (no streaming in its recording configuration) and writes all of it to the flow file ({:.2} GiB per transfer).",
            report::median(v) / 1073741824.0
        ));
    }
    let direct = rounds.get(Kind::Direct, "mibs");
    let mut t = Table::new(&["contender", "MiB/s", "× direct", "peak RSS MiB"]);
    for k in kinds {
        match rounds.get(k, "mibs") {
            Some(v) => t.row(vec![
                k.label().into(),
                count(v),
                ratio(v, direct),
                rounds
                    .get(k, "peak")
                    .map(|p| format!("{:.0}", p / 1024.0))
                    .unwrap_or("–".into()),
            ]),
            None => t.row(vec![
                k.label().into(),
                na(rounds.why(k, "mibs")),
                String::new(),
                String::new(),
            ]),
        }
    }
    Section {
        title: format!("6. One {} response", if bytes >= 1 << 30 { format!("{} GiB", bytes >> 30) } else { format!("{} MiB", bytes >> 20) }),
        what: "`GET /big`: the upstream streams the body in 256 KiB frames with a Content-Length; the harness reads it with 256 KiB reads. Throughput from request to last byte; peak RSS is the proxy's VmHWM over the transfer (a freshly started proxy for each transfer; nginx: the largest worker).".into(),
        table: t.markdown(),
        notes,
        rounds,
        others: 0.0,
    }
}

/// (7) TLS on the client side, connections reused and new per request.
async fn w7_tls(env: &Env) -> Section {
    let kinds = Kind::ALL;
    let mut rounds = Rounds::default();
    let running = start_all(env, &kinds, Listen::Tls, &mut rounds, "reused").await;
    for k in kinds {
        if let Some(why) = rounds.why(k, "reused").map(str::to_string) {
            rounds.na(k, "new", why);
        }
    }
    let modes = [
        ("reused", &env.scripts.post),
        ("new", &env.scripts.post_close),
    ];
    match &env.wrk {
        None => {
            for k in kinds {
                rounds.na(k, "reused", "wrk not installed");
                rounds.na(k, "new", "wrk not installed");
            }
        }
        Some(wrk) => {
            // Warm-up with every connection, so first handshakes (mitmproxy makes its
            // certificate then) are not measured.
            for r in running.values() {
                if let Some(addr) = r.tls {
                    let _ = tools::wrk(
                        wrk,
                        &url(addr, "https"),
                        64,
                        Duration::from_secs(2),
                        &env.scripts.post,
                    )
                    .await;
                }
            }
            for (mode, script) in modes {
                for round in 0..env.plan.rounds {
                    for kind in rotation(&kinds, round) {
                        let Some(addr) = running.get(&kind).and_then(|r| r.tls) else {
                            continue;
                        };
                        match tools::wrk(wrk, &url(addr, "https"), 64, env.plan.tls, script).await {
                            Ok(l) => {
                                eprintln!(
                                    "bench: w7 {mode} round {} {}: {} req/s",
                                    round + 1,
                                    kind.label(),
                                    count(l.rps)
                                );
                                rounds.add(kind, mode, l.rps);
                            }
                            Err(e) => rounds.na(kind, mode, e.to_string()),
                        }
                    }
                }
            }
        }
    }
    stop_all(running).await;
    let mut t = Table::new(&[
        "contender",
        "reused: req/s",
        "× direct",
        "new per request: req/s",
        "× direct",
    ]);
    for k in kinds {
        let mut row = vec![k.label().to_string()];
        for mode in ["reused", "new"] {
            match rounds.get(k, mode) {
                Some(v) => {
                    row.push(count(v));
                    row.push(ratio(v, rounds.get(Kind::Direct, mode)));
                }
                None => {
                    row.push(na(rounds.why(k, mode)));
                    row.push(String::new());
                }
            }
        }
        t.row(row);
    }
    Section {
        title: "7. TLS on the client side".into(),
        what: format!(
            "wrk -t2 -c64 -d{}s over https (TLS 1.3, HTTP/1.1), the same POSTs; \"new\" sends `Connection: close` so every request pays a fresh TCP connection and full handshake (wrk resumes no session). Direct: the upstream terminates TLS itself (rustls). mcptap runs with `--self-signed` from a local CA that also signed the ECDSA P-256 certificate nginx and the upstream serve; mitmproxy serves a certificate from its own CA (RSA 2048).",
            env.plan.tls.as_secs()
        ),
        table: t.markdown(),
        notes: Vec::new(),
        rounds,
        others: 0.0,
    }
}

/// A capture w8 had mcptap record under MCP load.
struct Recorded {
    /// The capture folder (`--captures-dir`), deleted when w8 is done.
    dir: PathBuf,
    /// The capture file in it.
    file: PathBuf,
    bytes: u64,
    load: mcpload::McpLoad,
}

/// A fresh `mcptap proxy` recording MCP sessions from [`mcpload::CLIENTS`] clients until
/// its capture holds `target` bytes, then stopped, so the capture ends as a finished one does.
async fn record_capture(env: &Env, target: u64) -> anyhow::Result<Recorded> {
    let mut proxy = contender::start(Kind::McptapOn, env, Listen::Plain)
        .await
        .map_err(|e| anyhow::anyhow!("mcptap did not start: {e}"))?;
    let addr = proxy.plain.context("mcptap has no plain listener")?;
    let limit = Duration::from_secs(1800);
    // Under load the capture writer runs behind the traffic (by seconds for a debug build),
    // so its file size alone would stop the load late. One client first, then the writer
    // idle: the capture's bytes per exchange, and the load stops when its exchanges make
    // `target`.
    let load = async {
        let mut load = mcpload::run(addr, 0..1, limit, |done| done >= 500).await?;
        // The readiness check's exchange is in the capture too.
        let per_exchange = settled_size(&proxy).await as f64 / (load.exchanges + 1) as f64;
        let before = load.exchanges;
        let rest = mcpload::run(addr, 1..mcpload::CLIENTS + 1, limit, |done| {
            (before + done) as f64 * per_exchange >= target as f64
                || proxy.recorded_bytes() >= target
        })
        .await?;
        load.add(rest);
        anyhow::Ok(load)
    }
    .await;
    let dir = proxy.keep_record().context("mcptap records nowhere")?;
    proxy.stop().await;
    let load = load?;
    // One proxy run, no rotation: one file.
    let file = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .min()
        .with_context(|| format!("no capture in {}", dir.display()))?;
    let bytes = std::fs::metadata(&file)?.len();
    if load.sessions == 0 {
        bail!(
            "no MCP session went through mcptap: {}",
            load.first_error.as_deref().unwrap_or("no error seen")
        );
    }
    Ok(Recorded {
        dir,
        file,
        bytes,
        load,
    })
}

/// The recording's size once the writer has written all it was given (unchanged for 100 ms;
/// it writes whatever is queued every round).
async fn settled_size(proxy: &Running) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut same) = (proxy.recorded_bytes(), 0);
    while same < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = proxy.recorded_bytes();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// The targets for analysing a 1 GB capture (MB read as MiB, as the 1 GB is 1 GiB).
#[derive(Clone, Copy)]
enum Target {
    /// Reads at least 100 MiB/s, peak RSS under 256 MiB.
    Explain,
    /// Peak RSS under 512 MiB (two captures).
    Diff,
    /// Under 20 MiB of HTML.
    Report,
    None,
}

impl Target {
    fn says(self) -> &'static str {
        match self {
            Target::Explain => "≥ 100 MiB/s, peak < 256 MiB",
            Target::Diff => "peak < 512 MiB",
            Target::Report => "HTML < 20 MiB",
            Target::None => "–",
        }
    }

    /// "met", or "not met:" and what missed.
    fn judge(self, mibs: f64, peak_mib: f64, output_mib: f64) -> String {
        let missed: Vec<String> = match self {
            Target::Explain => [
                (mibs < 100.0).then(|| format!("{mibs:.0} MiB/s")),
                (peak_mib >= 256.0).then(|| format!("{peak_mib:.0} MiB peak")),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Target::Diff => (peak_mib >= 512.0)
                .then(|| format!("{peak_mib:.0} MiB peak"))
                .into_iter()
                .collect(),
            Target::Report => (output_mib >= 20.0)
                .then(|| format!("{output_mib:.1} MiB of HTML"))
                .into_iter()
                .collect(),
            Target::None => return "–".into(),
        };
        if missed.is_empty() {
            "met".into()
        } else {
            format!("**not met**: {}", missed.join(", "))
        }
    }
}

/// One analysis command of w8.
struct Analysis {
    /// As the table shows it, with the captures called A and B.
    shown: &'static str,
    args: Vec<std::ffi::OsString>,
    /// Where its stdout goes.
    stdout: PathBuf,
    /// What it writes: its stdout, or the file it was told to write.
    output: PathBuf,
    /// Capture bytes it reads.
    reads: u64,
    target: Target,
}

/// (8) Analysis of a production-sized capture: `explain`, `diff`, `report` and
/// `export --har` on two captures mcptap recorded under MCP load, each command timed and its
/// peak memory measured, from one run.
async fn w8_analysis(env: &Env) -> Section {
    let target = env.plan.capture;
    let mut notes = Vec::new();
    let title = format!(
        "8. Analysis of captures of {}: explain, diff, report, export",
        size(target)
    );
    let what = format!(
        "Two captures, A and B, each recorded by a fresh `mcptap proxy` (as in the other workloads) until it holds {}: {} MCP clients, each on its own keep-alive HTTP/1.1 connection, open session after session against the upstream's `POST /mcp` (MCP 2025-06-18, Streamable HTTP, JSON responses), each session with its own bearer token: `initialize`, `notifications/initialized`, `tools/list` and {} `tools/call` with `Mcp-Session-Id` and `MCP-Protocol-Version`; every {}th session stops after `initialize` (a client gone silent). Then each command below runs once, alone, on the finished captures: wall time, CPU time (user + system) and peak RSS (`ru_maxrss` from `wait4`). MiB/s = capture bytes read / wall time. The targets are the issue's for a 1 GB capture, its MB read as MiB.",
        size(target),
        mcpload::CLIENTS,
        mcpload::CALLS,
        mcpload::SILENT_EVERY,
    );
    let failed = |why: String| Section {
        title: title.clone(),
        what: what.clone(),
        table: format!("n/a ({why})\n"),
        notes: Vec::new(),
        rounds: Rounds::default(),
        others: 0.0,
    };
    let mut recorded: Vec<Recorded> = Vec::new();
    for name in ["A", "B"] {
        match record_capture(env, target).await {
            Ok(r) => {
                eprintln!(
                    "bench: w8 capture {name}: {}, {} exchanges in {} sessions, {:.1} s",
                    size(r.bytes),
                    count(r.load.exchanges as f64),
                    count(r.load.sessions as f64),
                    r.load.elapsed.as_secs_f64()
                );
                recorded.push(r);
            }
            Err(e) => {
                for r in &recorded {
                    let _ = std::fs::remove_dir_all(&r.dir);
                }
                return failed(format!("recording capture {name}: {e:#}"));
            }
        }
    }
    let (a, b) = (&recorded[0], &recorded[1]);
    for (name, r) in [("A", a), ("B", b)] {
        let l = &r.load;
        notes.push(format!(
            "Capture {name}: {} ({} bytes) in {:.1} s: {} exchanges ({} per s) in {} sessions, {} of them silent after `initialize`; {} bytes of capture per exchange.{}",
            size(r.bytes),
            count(r.bytes as f64),
            l.elapsed.as_secs_f64(),
            count(l.exchanges as f64),
            count(l.exchanges as f64 / l.elapsed.as_secs_f64()),
            count(l.sessions as f64),
            count(l.silent as f64),
            count(r.bytes as f64 / l.exchanges.max(1) as f64),
            match &l.first_error {
                Some(e) => format!(" {} requests failed (first: {e}); each ended its session.", count(l.errors as f64)),
                None => String::new(),
            }
        ));
        if r.bytes < target {
            notes.push(format!(
                "Capture {name} is short of the {} asked for: the load stopped at its time limit or every client gave up.",
                size(target)
            ));
        }
    }
    let out = env.tmp.join("w8");
    let _ = std::fs::create_dir_all(&out);
    let os = |s: &str| std::ffi::OsString::from(s);
    let analyses = [
        Analysis {
            shown: "`mcptap explain A --json`",
            args: vec![os("explain"), a.file.clone().into(), os("--json")],
            stdout: out.join("explain.json"),
            output: out.join("explain.json"),
            reads: a.bytes,
            target: Target::Explain,
        },
        Analysis {
            shown: "`mcptap explain A`",
            args: vec![os("explain"), a.file.clone().into()],
            stdout: out.join("explain.txt"),
            output: out.join("explain.txt"),
            reads: a.bytes,
            target: Target::Explain,
        },
        Analysis {
            shown: "`mcptap diff A B`",
            args: vec![os("diff"), a.file.clone().into(), b.file.clone().into()],
            stdout: out.join("diff.txt"),
            output: out.join("diff.txt"),
            reads: a.bytes + b.bytes,
            target: Target::Diff,
        },
        Analysis {
            shown: "`mcptap report A -o report.html`",
            args: vec![
                os("report"),
                a.file.clone().into(),
                os("-o"),
                out.join("report.html").into(),
            ],
            stdout: out.join("report.stdout"),
            output: out.join("report.html"),
            reads: a.bytes,
            target: Target::Report,
        },
        Analysis {
            shown: "`mcptap export --har export.har A`",
            args: vec![
                os("export"),
                os("--har"),
                out.join("export.har").into(),
                a.file.clone().into(),
            ],
            stdout: out.join("export.stdout"),
            output: out.join("export.har"),
            reads: a.bytes,
            target: Target::None,
        },
    ];
    // A runaway must not take the shared machine: at most half its memory, and 8 GiB.
    let max_rss_kib = machine::memory_kib()
        .map(|kib| kib / 2)
        .unwrap_or(u64::MAX)
        .min(8 << 20);
    let mut t = Table::new(&[
        "command",
        "wall s",
        "CPU s",
        "capture MiB/s",
        "peak RSS MiB",
        "output",
        "target",
        "met",
    ]);
    for analysis in &analyses {
        // Generous: 1 MiB/s of capture, and a minute.
        let limit = Duration::from_secs(60 + analysis.reads / (1 << 20));
        let mcptap = env.mcptap.clone();
        let (args, stdout) = (analysis.args.clone(), analysis.stdout.clone());
        let stderr = analysis.stdout.with_extension("stderr");
        let measured = tokio::task::spawn_blocking(move || {
            measure::run(&mcptap, &args, &stdout, &stderr, limit, max_rss_kib)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|m| m);
        let output = std::fs::metadata(&analysis.output).map(|m| m.len()).ok();
        let failure = match &measured {
            Err(e) => Some(format!("{e:#}")),
            Ok(m) => match (&m.failure, output) {
                (Some(why), _) => Some(why.clone()),
                (None, None | Some(0)) => Some("exited 0 but wrote nothing".into()),
                (None, Some(_)) => None,
            },
        };
        let target_cell = analysis.target.says().to_string();
        match (measured, failure) {
            (Ok(m), None) => {
                let wall = m.wall.as_secs_f64();
                let mibs = analysis.reads as f64 / 1048576.0 / wall;
                let peak = m.peak_kib as f64 / 1024.0;
                let output = output.unwrap_or(0);
                eprintln!(
                    "bench: w8 {}: {wall:.2} s, {mibs:.0} MiB/s, peak RSS {peak:.0} MiB, {} out",
                    analysis.shown,
                    size(output)
                );
                t.row(vec![
                    analysis.shown.into(),
                    format!("{wall:.2}"),
                    format!("{:.2}", m.cpu.as_secs_f64()),
                    format!("{mibs:.0}"),
                    format!("{peak:.0}"),
                    size(output),
                    target_cell,
                    analysis.target.judge(mibs, peak, output as f64 / 1048576.0),
                ]);
            }
            (_, why) => {
                let why = why.unwrap_or_default();
                eprintln!("bench: w8 {} failed: {why}", analysis.shown);
                t.row(vec![
                    analysis.shown.into(),
                    format!("**failed** ({})", why.replace('|', "\\|")),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    target_cell,
                    match analysis.target {
                        Target::None => "–".into(),
                        _ => "**not met** (failed)".into(),
                    },
                ]);
            }
        }
    }
    if let Some(found) = explained_flows(&out.join("explain.json")) {
        let silent = found
            .flows
            .iter()
            .filter(|f| f.furthest_stage.as_deref() == Some("initialize"))
            .count();
        let exchanges: u64 = found.flows.iter().map(|f| f.exchanges).sum();
        notes.push(format!(
            "`explain` found {} client flows in A, {} of them silent after `initialize`, with {} exchanges, and {} exchanges of other traffic; the load made {} sessions ({} silent) with {} exchanges, and the harness's readiness check one `POST /json` (a `tools/call`).",
            count(found.flows.len() as f64),
            count(silent as f64),
            count(exchanges as f64),
            count(found.other_traffic.len() as f64),
            count(a.load.sessions as f64),
            count(a.load.silent as f64),
            count(a.load.exchanges as f64),
        ));
    }
    notes.push(format!(
        "The captures had just been written and fit in this machine's RAM ({}), so every command read them from the page cache: the rates are mcptap's, not the disk's.",
        machine::memory_kib()
            .map(|kib| size(kib << 10))
            .unwrap_or_else(|| "unknown".into())
    ));
    if target < 1 << 30 {
        notes.push(format!(
            "The targets are set for a 1 GiB capture; this run's are {}, so its figures only preview them (memory that grows with the capture grows further at full size).",
            size(target)
        ));
    }
    for r in &recorded {
        let _ = std::fs::remove_dir_all(&r.dir);
    }
    let _ = std::fs::remove_dir_all(&out);
    Section {
        title,
        what,
        table: t.markdown(),
        notes,
        rounds: Rounds::default(),
        others: 0.0,
    }
}

/// The parts of `explain --json` w8 counts, read without holding the rest.
#[derive(serde::Deserialize)]
struct ExplainedFlows {
    #[serde(default)]
    flows: Vec<ExplainedFlow>,
    #[serde(default)]
    other_traffic: Vec<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ExplainedFlow {
    exchanges: u64,
    furthest_stage: Option<String>,
}

fn explained_flows(json: &Path) -> Option<ExplainedFlows> {
    let file = std::fs::File::open(json).ok()?;
    serde_json::from_reader(std::io::BufReader::new(file)).ok()
}

/// `1.0 GiB`, `256 MiB`, `12.3 MiB`, `840 KiB`, `12 B`.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", b / 1073741824.0)
    } else if bytes >= 100 << 20 {
        format!("{:.0} MiB", b / 1048576.0)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / 1048576.0)
    } else if bytes >= 1 << 10 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

// ---------------------------------------------------------------------------------------
// Summary and surroundings

fn headline(sections: &[Section]) -> String {
    let find = |prefix: &str| {
        sections
            .iter()
            .find(|s| s.title.starts_with(prefix))
            .map(|s| &s.rounds)
    };
    let cols = [
        Kind::McptapOn,
        Kind::McptapOff,
        Kind::Nginx,
        Kind::Mitmproxy,
    ];
    let mut t = Table::new(&[
        "",
        "mcptap, recording",
        "mcptap, /dev/null",
        "nginx",
        "mitmdump -w",
    ]);
    let mut add = |label: &str, section: &str, cell: &dyn Fn(&Rounds, Kind) -> Option<String>| {
        if let Some(r) = find(section) {
            let mut row = vec![label.to_string()];
            for k in cols {
                row.push(cell(r, k).unwrap_or_else(|| "n/a".into()));
            }
            t.row(row);
        }
    };
    let vs_direct = |metric: &'static str| {
        move |r: &Rounds, k: Kind| Some(ratio(r.get(k, metric)?, r.get(Kind::Direct, metric)))
    };
    let added = |metric: String| {
        move |r: &Rounds, k: Kind| Some(plus_ms(r.get(k, &metric)? - r.get(Kind::Direct, &metric)?))
    };
    add("HTTP/1.1 req/s, × direct", "1.", &vs_direct("rps"));
    add("added p99 at 2,000 req/s, ms", "2.", &added("p99".into()));
    add("HTTP/2 req/s, × direct", "3.", &vs_direct("rps"));
    add(
        "SSE 100 B at 1,000/s: added p99, ms",
        "4.",
        &added("100/1000:p99".into()),
    );
    add(
        "SSE 16 KiB at 1,000/s: added p99, ms",
        "4.",
        &added("16384/1000:p99".into()),
    );
    add("idle SSE stream, KiB each", "5.", &|r: &Rounds, k: Kind| {
        Some(format!("{:.1}", r.get(k, "per")?))
    });
    add("large response MiB/s, × direct", "6.", &vs_direct("mibs"));
    add(
        "large response peak RSS, MiB",
        "6.",
        &|r: &Rounds, k: Kind| Some(format!("{:.0}", r.get(k, "peak")? / 1024.0)),
    );
    add("TLS reused req/s, × direct", "7.", &vs_direct("reused"));
    add(
        "TLS new connections req/s, × direct",
        "7.",
        &vs_direct("new"),
    );
    if t.is_empty() {
        // Only workloads with no summary row ran (w8).
        return String::new();
    }
    format!("### Summary\n\n{}\n", t.markdown())
}

/// mcptap refuses connections over `--max-connections` (10,000 by default) where it has
/// the flag: w5 wants as many as the descriptors allow, like nginx's worker_connections.
fn mcptap_flags(mcptap: &Path) -> Vec<String> {
    let help = shell(&mcptap.display().to_string(), &["proxy", "--help"]);
    if help.contains("--max-connections") {
        vec!["--max-connections".into(), "1000000".into()]
    } else {
        Vec::new()
    }
}

fn update_readme(readme: &Path, report: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(readme)?;
    let (begin, end) = ("<!-- results:begin -->", "<!-- results:end -->");
    let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
        bail!("{} has no {begin} … {end} markers", readme.display());
    };
    let updated = format!(
        "{}{begin}\n{}\n{}",
        &text[..a],
        report.trim_end(),
        &text[b..]
    );
    std::fs::write(readme, updated)?;
    Ok(())
}

fn count_in_files(path: &Path, needle: &[u8]) -> u64 {
    let mut total = 0;
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    for f in files {
        if let Ok(bytes) = std::fs::read(&f) {
            total += bytes.windows(needle.len()).filter(|w| *w == needle).count() as u64;
        }
    }
    total
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn shell(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        })
        .unwrap_or_default()
}

fn versions(env: &Env) -> String {
    let first = |s: String| s.lines().next().unwrap_or("").trim().to_string();
    let mut v = vec![first(shell(
        &env.mcptap.display().to_string(),
        &["--version"],
    ))];
    let commit = shell("git", &["rev-parse", "--short", "HEAD"]);
    if !commit.is_empty() && !commit.contains("fatal") {
        v[0].push_str(&format!(" ({commit})"));
    }
    if let Some(n) = &env.nginx {
        v.push(first(shell(&n.display().to_string(), &["-v"])).replace("nginx version: ", ""));
    }
    if let Ok(m) = &env.mitmdump {
        v.push(
            first(shell(&m.display().to_string(), &["--version"]))
                .replace("Mitmproxy: ", "mitmproxy "),
        );
    }
    if let Some(w) = &env.wrk {
        let s = first(shell(&w.display().to_string(), &["-v"]));
        v.push(
            s.split(" [")
                .next()
                .unwrap_or(&s)
                .replace("wrk debian/", "wrk "),
        );
    }
    if let Some(h) = &env.h2load {
        v.push(first(shell(&h.display().to_string(), &["--version"])).replace("h2load ", ""));
    }
    format!("Contenders and tools: {}.\n", v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_full_run_the_same_day_keeps_the_first_ones_file() {
        let dir = std::env::temp_dir().join(format!("mcptap-bench-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(unused_name(&dir, "2026-11-27"), dir.join("2026-11-27.md"));
        std::fs::write(dir.join("2026-11-27.md"), "first").unwrap();
        assert_eq!(unused_name(&dir, "2026-11-27"), dir.join("2026-11-27-2.md"));
        std::fs::write(dir.join("2026-11-27-2.md"), "second").unwrap();
        assert_eq!(unused_name(&dir, "2026-11-27"), dir.join("2026-11-27-3.md"));
        assert_eq!(unused_name(&dir, "2026-11-28"), dir.join("2026-11-28.md"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_read_as_mcptap_reads_them() {
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 TiB").is_err());
    }
}
