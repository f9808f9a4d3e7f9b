use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use mcptap::cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: the proxy allocates on its workers and frees on the
/// capture writer's thread, which glibc serves with a lock per call (see `mcptap::memory`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcptap: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Proxy(args) => {
            let config = args.validate()?;
            let terminal = args.terminal()?;
            let runtime = mcptap::memory::runtime()?;
            let outcome = runtime.block_on(mcptap::proxy::run(config, terminal))?;
            if let Some(e) = &outcome.writer.write_error {
                eprintln!(
                    "mcptap: error: the capture {} is incomplete: {e}; {} events were lost",
                    outcome.capture.display(),
                    outcome.writer.events_lost
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => mcptap::demo::run(&args),
        Command::Diff(args) => mcptap::diff::run(&args),
        Command::Replay(args) => mcptap::replay::run(&args),
        Command::Mock(args) => mcptap::mock::run(&args),
        Command::Report(args) => mcptap::report::run(&args),
        Command::Export(args) => mcptap::export::run(&args),
        Command::Probe(args) => mcptap::probe::run(&args),
        Command::Certs(mcptap::cli::CertsCommand::Init(args)) => {
            let init = mcptap::tls::ca::certs_init(&args.dir, &args.host)?;
            println!(
                "{} the local CA: {}",
                if init.created_ca { "created" } else { "reused" },
                init.ca.display()
            );
            println!("certificate: {}", init.cert.display());
            println!("key:         {}", init.key.display());
            println!();
            println!("{}", init.trust_instructions);
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => {
            use mcptap::explain::{Keep, Which};
            let which = match (args.flow, args.all) {
                (Some(0), _) => anyhow::bail!("--flow 0: flows are numbered from 1"),
                (Some(n), _) => Which::Number(n),
                (None, true) => Which::All,
                (None, false) => Which::Chosen,
            };
            let style = mcptap::explain::Style::detect();
            // With --all, each flow is written out as it goes by, not kept.
            let mut each = std::collections::BTreeMap::new();
            let mut render_each =
                |part: &mcptap::capture::reader::Capture,
                 facts: &mcptap::mcp::session::ServerFacts,
                 f: &mcptap::explain::FlowReport| {
                    each.insert(
                        f.number,
                        mcptap::explain::render_part(part, facts, &f.explanation, style),
                    );
                };
            let keep = match which {
                Which::Number(n) => Keep::Flow(n),
                Which::All if !args.json => Keep::Each(&mut render_each),
                _ => Keep::Chosen,
            };
            let streamed = mcptap::explain::explain_file(&args.capture, keep)?;
            let report = &streamed.report;
            for warning in &streamed.capture.warnings {
                eprintln!("mcptap: warning: {warning}");
            }
            if let Which::Number(n) = which {
                let count = report.flows.len().max(1);
                if n > count {
                    anyhow::bail!(
                        "--flow {n}: {} has {count} client flow{} (numbered from 1)",
                        args.capture.display(),
                        if count == 1 { "" } else { "s" }
                    );
                }
            }
            // The findings `--exit-code` looks at: the flows shown.
            let shown: Vec<&mcptap::explain::Explanation> = match which {
                Which::Number(n) if !report.flows.is_empty() => {
                    vec![&report.flows[n - 1].explanation]
                }
                Which::All if !report.flows.is_empty() => {
                    report.flows.iter().map(|f| &f.explanation).collect()
                }
                _ => vec![&report],
            };
            if args.json {
                // Written as it is serialised: a capture of many flows makes a long document.
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let written = match which {
                    Which::Number(n) if !report.flows.is_empty() => {
                        serde_json::to_writer_pretty(&mut out, &report.flows[n - 1])
                    }
                    _ => serde_json::to_writer_pretty(&mut out, report),
                };
                let written = written
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
                    .and_then(|()| out.flush());
                match written {
                    Ok(()) => {}
                    // `| head` closing the pipe is not an error worth a message.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    Err(e) => return Err(anyhow::Error::new(e).context("writing to stdout")),
                }
            } else {
                print!(
                    "{}",
                    mcptap::explain::render_streamed(&streamed, &each, which, style)
                );
            }
            let has_error = shown.iter().any(|e| {
                e.findings
                    .iter()
                    .any(|f| f.severity == mcptap::mcp::checks::Severity::Error)
            });
            Ok(if args.exit_code && has_error {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
