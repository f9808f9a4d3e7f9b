//! The explanation of a capture: the stages its session reached, where the client went
//! silent, the tokens issued and presented, and the checks' findings. `mcptap explain`
//! prints it; the report, the demo and the proxy's silence notice use it too.

use std::path::Path;

use serde::Serialize;

use super::checks::{self, Finding};
use super::era::{Era, Negotiation};
use super::rounds::RoundTrip;
use super::session::{Reached, Session, Silence, TokenLine};
use mcptap_capture::reader::Capture;

/// What `mcptap explain` says of a capture; `--json` prints it as it is.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub capture: String,
    pub session_id: String,
    pub exchanges: usize,
    /// The protocol era: `modern` (2026-07-28), `legacy` (2025, initialize), `fallback`
    /// (2025 after a refused 2026-07-28 probe), `failed_negotiation`, or `unknown`.
    pub era: Era,
    /// How the era was negotiated: the probe, its answer, the versions the server named.
    pub negotiation: Negotiation,
    pub stages: Vec<StageReport>,
    pub silence: Option<Silence>,
    pub tokens: Vec<TokenLine>,
    /// Calls answered `input_required` (2026-07-28), each with its rounds.
    pub round_trips: Vec<RoundTrip>,
    pub findings: Vec<Finding>,
    /// Problems met reading the capture.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StageReport {
    pub id: &'static str,
    pub reached: bool,
    /// `reached`, `missing`, `not_observed` (it happened where the proxy could not see), or
    /// `not_applicable` (not part of this flow: the other era's stage, say).
    pub status: Reached,
    pub first_exchange: Option<u64>,
    /// µs since the session start.
    pub t: Option<u64>,
}

/// Explains a capture already read.
pub fn explain(capture: &Capture, name: &str) -> Explanation {
    let session = Session::analyze(capture);
    let findings = checks::run(&session);
    Explanation {
        capture: name.to_string(),
        session_id: capture.session.session_id.clone(),
        exchanges: capture.exchanges.len(),
        era: session.negotiation.era,
        negotiation: session.negotiation.clone(),
        stages: session
            .stages
            .iter()
            .map(|s| StageReport {
                id: s.id.id(),
                reached: s.reached == Reached::Reached,
                status: s.reached,
                first_exchange: s.first_exchange,
                t: s.t,
            })
            .collect(),
        silence: session.silence.clone(),
        tokens: session.tokens.clone(),
        round_trips: session.round_trips.clone(),
        findings,
        warnings: capture.warnings.clone(),
    }
}

/// Reads and explains a capture file.
pub fn explain_file(path: &Path) -> anyhow::Result<(Capture, Explanation)> {
    let capture = Capture::open(path)?;
    let report = explain(&capture, &path.display().to_string());
    Ok((capture, report))
}
