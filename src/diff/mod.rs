//! `mcptap diff A B`: the command. The comparison itself is [`mcptap_mcp::diff`] (its
//! `--json` schema is documented there); this module owns the flags, the side-by-side view
//! (`render.rs`) and the `--html` page.

mod render;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::style::Style;
pub use mcptap_mcp::diff::*;
pub use render::render;

const EXAMPLES: &str = "\
Examples:
  mcptap diff working.jsonl failing.jsonl
  mcptap diff working.jsonl failing.jsonl --ignore /body/scopes_supported --ignore x-powered-by
  mcptap diff a.jsonl b.jsonl --json | jq '.first_divergence.sentence'
  mcptap diff a.jsonl b.jsonl --strict          everything, dates and ids included
  mcptap diff a.jsonl b.jsonl --timing --timing-threshold 250
  mcptap diff working.jsonl failing.jsonl --html compare.html   the same as a page, side by side
  mcptap diff cap.jsonl cap.jsonl --flow-a 2 --flow-b 3   two client flows of one capture

Noise suppressed by default: Date, Age, ETag, Last-Modified, Expires, request and trace ids,
hop-by-hop headers, Mcp-Session-Id values, Content-Length when the bodies compare equal,
redaction fingerprints, OAuth code/state/nonce/PKCE values, issued client_id/client_secret,
iat/exp/*_at times, JSON-RPC ids, UUIDs, RFC 3339 timestamps, each capture's own proxy
address (127.0.0.1:<port>, and the Host clients used), SSE keep-alive comments, and which side
closed an event stream first (client_aborted vs complete) when its events compare equal.

Exit status: 0 when both captures were read (with --exit-code: 0 when they compare equal,
1 when differences remain), 2 when a capture could not be read.";

/// Compare two captures exchange by exchange.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct DiffArgs {
    /// The reference capture (JSONL), e.g. the session that works.
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The capture to compare with it, e.g. the session that fails.
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Compare only client flow N of A (numbered from 1, as `mcptap explain A` lists them).
    #[arg(long, value_name = "N")]
    pub flow_a: Option<usize>,

    /// Compare only client flow N of B. Two flows of one capture: give it as A and B.
    #[arg(long, value_name = "N")]
    pub flow_b: Option<usize>,

    /// Print one JSON object (summary, first divergence, every entry) instead of the
    /// side-by-side view.
    #[arg(long)]
    pub json: bool,

    /// Exit with status 1 when differences remain after noise suppression.
    #[arg(long)]
    pub exit_code: bool,

    /// Suppress no noise: dates, ids, tokens, ports and keep-alive comments all count.
    #[arg(long)]
    pub strict: bool,

    /// Also ignore this field (repeatable): a JSON pointer into the compared fields
    /// (/body/scopes_supported, /request/header/user-agent), a field as shown
    /// (body.scopes_supported), or a header name (x-powered-by).
    #[arg(long, value_name = "PATH")]
    pub ignore: Vec<String>,

    /// Compare timings too: time to first byte and total time of each pair.
    #[arg(long)]
    pub timing: bool,

    /// The smallest timing difference reported, in milliseconds (implies --timing; default 100).
    #[arg(long, value_name = "MS")]
    pub timing_threshold: Option<u64>,

    /// Width of the side-by-side view in columns (default: $COLUMNS, else 120).
    #[arg(long, value_name = "N")]
    pub width: Option<usize>,

    /// Also write the comparison as one self-contained HTML page: both sessions' sequence
    /// diagrams side by side, each pair marked with the fields that differ (as
    /// `mcptap report A --diff B`).
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
}

impl DiffArgs {
    /// The options these flags ask for.
    pub fn options(&self) -> anyhow::Result<Options> {
        if let Some(empty) = self
            .ignore
            .iter()
            .find(|i| i.trim().is_empty() || i.trim() == "/")
        {
            anyhow::bail!("--ignore {empty:?} names nothing: give a JSON pointer like /body/scopes_supported or a header name");
        }
        Ok(Options {
            strict: self.strict,
            ignore: self.ignore.clone(),
            timing_threshold_ms: (self.timing || self.timing_threshold.is_some())
                .then(|| self.timing_threshold.unwrap_or(TIMING_THRESHOLD_MS)),
        })
    }

    /// The width of the view: `--width`, else `$COLUMNS`, else 120; at least 60.
    pub fn view_width(&self) -> usize {
        self.width.unwrap_or_else(terminal_width).clamp(60, 1000)
    }
}

/// The width of the view when none is given: `$COLUMNS`, else 120.
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(120)
}

/// Runs `mcptap diff`.
pub fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let options = args.options()?;
    let a = crate::args::open_capture(&args.a, args.flow_a)?;
    let b = crate::args::open_capture(&args.b, args.flow_b)?;
    for (side, capture) in [("A", &a), ("B", &b)] {
        for warning in &capture.warnings {
            eprintln!("mcptap: warning: {side}: {warning}");
        }
    }
    // A flow is named with its capture: `a.jsonl (flow 2)`.
    let label = |path: &std::path::Path, flow: Option<usize>| match flow {
        Some(n) => format!("{} (flow {n})", display(path)),
        None => display(path),
    };
    let (name_a, name_b) = (label(&args.a, args.flow_a), label(&args.b, args.flow_b));
    let report = diff(&a, &name_a, &b, &name_b, &options);
    if let Some(html) = &args.html {
        for input in [&args.a, &args.b] {
            if crate::args::same_file(input, html) {
                anyhow::bail!(
                    "--html {} is one of the captures: choose another file",
                    html.display()
                );
            }
        }
        let page = crate::report::render_diff(
            (&a, &name_a),
            (&b, &name_b),
            &crate::report::Options::default(),
        );
        std::fs::write(html, page.as_bytes())
            .with_context(|| format!("writing {}", html.display()))?;
        eprintln!("mcptap: wrote {}", html.display());
    }
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report).context("writing the report")?;
        json.push('\n');
        json
    } else {
        render(&report, Style::detect(), args.view_width())
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is the reader's choice, not an error.
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing to stdout")
        }
        _ => {}
    }
    Ok(if args.exit_code && report.has_differences() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
