//! `mcptap demo`: the whole story on loopback in one command. A built-in MCP server with
//! OAuth (the test fixture, `crate::fixture`) runs behind `mcptap proxy`, and a connector-like
//! client walks the flow twice: against a correct server, then against the same server with a
//! fault (by default the one of the original case: the protected-resource metadata names the
//! base URL as `resource`, so the client authorizes, gets its token, and sends nothing more).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;

use crate::capture::reader::Capture;
use crate::capture::writer::OnFull;
use crate::diff;
use crate::explain::{self, Style};
use crate::proxy::{self, upstream::UpstreamTls, CaptureTarget, ListenTls, ProxyConfig};
use mcptap_fixture::client::{self, ClientEra, ClientOptions, ClientOutcome};
use mcptap_fixture::server::{Faults, FixtureServer};

/// The faults the demo can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The metadata's `resource` is the base URL while the client uses /mcp: the client
    /// authorizes and then goes silent (RFC 9728 §3.3).
    Case,
    /// 401 without WWW-Authenticate.
    MissingWwwAuthenticate,
    /// Event streams held back until they end, as a buffering proxy does.
    BufferedSse,
    /// The first request with the new token is answered 401.
    RejectFirstBearer,
    /// A CDN/WAF answers the connector with an HTML block page.
    EdgeBlock,
    /// `server/discover`, the 2026-07-28 client's opening, is answered 500: the client cannot
    /// tell the server's era and gives up (with `--era 2025` the client never probes).
    Discover500,
}

/// The protocol era the demo's client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoEra {
    /// MCP 2026-07-28, as the hosted connectors speak it: `server/discover` first, falling back
    /// to initialize for a 2025-only server.
    #[value(name = "2026-07-28")]
    Modern,
    /// The 2025 revisions: initialize, a session, the GET stream.
    #[value(name = "2025")]
    Legacy,
}

impl Scenario {
    fn faults(self) -> Faults {
        let mut f = Faults::default();
        match self {
            Scenario::Case => f.prm_resource_base_url = true,
            Scenario::MissingWwwAuthenticate => f.missing_www_authenticate = true,
            Scenario::BufferedSse => f.buffered_sse = true,
            Scenario::RejectFirstBearer => f.reject_first_bearer = true,
            Scenario::EdgeBlock => f.edge_block = true,
            Scenario::Discover500 => f.discover_500 = true,
        }
        f
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Case => "case",
            Scenario::MissingWwwAuthenticate => "missing-www-authenticate",
            Scenario::BufferedSse => "buffered-sse",
            Scenario::RejectFirstBearer => "reject-first-bearer",
            Scenario::EdgeBlock => "edge-block",
            Scenario::Discover500 => "discover500",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::Case => "the same server, but its protected-resource metadata names the base URL as `resource` (the client uses /mcp)",
            Scenario::MissingWwwAuthenticate => "the same server, but its 401 carries no WWW-Authenticate",
            Scenario::BufferedSse => "the same server behind something that buffers event streams",
            Scenario::RejectFirstBearer => "the same server, but it rejects the first request made with a new token",
            Scenario::EdgeBlock => "the same server behind an edge that blocks the connector with an HTML page",
            Scenario::Discover500 => "the same server, but it answers server/discover (the 2026-07-28 opening) with 500",
        }
    }
}

/// `mcptap demo` flags.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  mcptap demo\n  mcptap demo --era 2025\n  mcptap demo --scenario discover500\n  mcptap demo --scenario buffered-sse --captures-dir /tmp/demo"
)]
pub struct DemoArgs {
    /// Which fault the second run shows.
    #[arg(long, value_enum, default_value = "case")]
    pub scenario: Scenario,

    /// The protocol era the client speaks: 2026-07-28 (probing with server/discover, as the
    /// hosted connectors do) or 2025 (initialize and a session).
    #[arg(long, value_enum, default_value = "2026-07-28")]
    pub era: DemoEra,

    /// Where the two captures are written.
    #[arg(long, value_name = "DIR", default_value = "captures")]
    pub captures_dir: PathBuf,
}

/// The two captures the demo wrote.
#[derive(Debug)]
pub struct DemoOutcome {
    pub working: PathBuf,
    pub failing: PathBuf,
}

/// Runs the demo and prints it.
pub fn run(args: &DemoArgs) -> anyhow::Result<std::process::ExitCode> {
    let runtime = crate::memory::runtime()?;
    let outcome = runtime.block_on(demo(args))?;
    let style = Style::detect();
    let cap = Capture::open(&outcome.failing)?;
    let report = explain::explain(&cap, &outcome.failing.display().to_string());
    println!(
        "\n── What `mcptap explain {}` says ──\n",
        outcome.failing.display()
    );
    print!("{}", explain::render(&cap, &report, style));

    // The working run against the failing one: what the developer of the original case did by
    // hand, field by field, for three hours.
    let working = Capture::open(&outcome.working)?;
    let comparison = diff::diff(
        &working,
        &outcome.working.display().to_string(),
        &cap,
        &outcome.failing.display().to_string(),
        &diff::Options::default(),
    );
    println!("\n── What `mcptap diff` says: the correct run (A) against this one (B) ──\n");
    print!(
        "{}",
        diff::render(
            &comparison,
            crate::style::Style::detect(),
            diff::terminal_width()
        )
    );

    println!("\n── Next ──");
    println!(
        "  mcptap report {}   (one HTML page: the sequence, the stages, every exchange)",
        outcome.failing.display()
    );
    println!("  mcptap explain {}", outcome.failing.display());
    println!(
        "  mcptap diff {} {}",
        outcome.working.display(),
        outcome.failing.display()
    );
    println!(
        "  jq -c 'select(.kind==\"sse\")' {}   (the correct run's server-sent events)",
        outcome.working.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn demo(args: &DemoArgs) -> anyhow::Result<DemoOutcome> {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let dir = &args.captures_dir;
    let working = dir.join(format!("demo-working-{stamp}.jsonl"));
    let failing = dir.join(format!("demo-{}-{stamp}.jsonl", args.scenario.name()));

    println!(
        "mcptap demo: a built-in MCP server with OAuth, mcptap proxy in front of it, and a client"
    );
    println!(
        "that walks the flow the way a hosted connector does, speaking MCP {}. Everything runs on 127.0.0.1.\n",
        match args.era {
            DemoEra::Modern => "2026-07-28 (server/discover first)",
            DemoEra::Legacy => "2025 (initialize and a session)",
        }
    );
    println!("── 1/2: a correct server ──");
    let first = session(Faults::default(), args.era, &working, false).await?;
    println!("   client: {}", outcome_words(&first));
    println!("\n── 2/2: {} ──", args.scenario.title());
    let second = session(args.scenario.faults(), args.era, &failing, true).await?;
    println!("   client: {}", outcome_words(&second));
    Ok(DemoOutcome { working, failing })
}

fn outcome_words(o: &ClientOutcome) -> String {
    match o {
        ClientOutcome::Completed => "completed the whole flow".into(),
        ClientOutcome::StoppedAfterToken { reason } => {
            format!("got its token, then sent nothing more ({reason})")
        }
        ClientOutcome::Failed { step, detail } => format!("gave up at {step}: {detail}"),
    }
}

/// One recorded session: fixture server (with `faults`) behind the proxy, the client through it.
async fn session(
    faults: Faults,
    era: DemoEra,
    capture: &Path,
    wait_for_watchdog: bool,
) -> anyhow::Result<ClientOutcome> {
    let server = FixtureServer::start(faults, None)
        .await
        .context("starting the demo server")?;
    let config = ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        tls: ListenTls::Off,
        upstream: server.url().parse().context("the demo server's URL")?,
        extra_routes: Vec::new(),
        rewrite_origins: false,
        capture: CaptureTarget::File(capture.to_path_buf()),
        rotate_size: None,
        rotate_every: None,
        max_body: 10 << 20,
        on_full: OnFull::Wait,
        queue_bytes: 64 << 20,
        redact: true,
        preserve_host: false,
        upstream_tls: UpstreamTls::default(),
        upstream_timeout: Some(Duration::from_secs(60)),
        grace: Duration::from_secs(2),
        header_timeout: Some(Duration::from_secs(30)),
        max_header_bytes: 64 << 10,
        fast_path: true,
        max_connections: 1000,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let proxy = tokio::spawn(proxy::run_until(
        config,
        crate::terminal::observers(true, Some(Duration::from_secs(2))),
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
    ));
    let addr = match ready_rx.await {
        Ok(addr) => addr,
        // The proxy ended before it listened: its error says why.
        Err(_) => {
            return Err(match proxy.await {
                Ok(Err(e)) => e,
                _ => anyhow::anyhow!("the demo proxy did not start"),
            })
        }
    };
    let base = format!("http://{addr}");
    server.set_public_base(base.clone());
    let options = ClientOptions {
        era: match era {
            DemoEra::Modern => ClientEra::Auto,
            DemoEra::Legacy => ClientEra::Legacy,
        },
        ..ClientOptions::default()
    };
    let report = client::run(&base, &options).await;
    if wait_for_watchdog && !matches!(report.outcome, ClientOutcome::Completed) {
        // Stay a moment, as a user watching the proxy would: the silence watchdog speaks up.
        tokio::time::sleep(Duration::from_millis(3200)).await;
    }
    let _ = stop_tx.send(());
    proxy.await.context("the demo proxy task")??;
    // Make sure what was written reads back.
    Capture::open(capture).context("reading back the demo capture")?;
    Ok(report.outcome)
}
