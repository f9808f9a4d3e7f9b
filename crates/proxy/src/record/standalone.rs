//! A capture written by a command other than the proxy (`replay` records what it sent and
//! got, `mock` what it served): the same file rules as the proxy's (created 0600, never
//! overwritten, `/dev/null` accepted), the same `session` line, writer thread and `end`
//! bookkeeping ([`Shared`], [`super::ExchangeLog`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::Shared;
use crate::CaptureTarget;
use mcptap_capture::file::{open_capture, short_id};
use mcptap_capture::model::{self, EventBody, SessionOptions};
use mcptap_capture::redact::Redactor;
use mcptap_capture::writer::{self, OnFull, WriterConfig, WriterStats};
use mcptap_capture::{Clock, Record, Recorder};

/// What the session line says and how the capture is written.
pub struct RecordingSetup {
    /// Where the capture goes.
    pub target: CaptureTarget,
    /// The one route: for `replay`, `replay` → the target; for `mock`, its listen address →
    /// `mock:<capture>`.
    pub route: model::Route,
    pub options: SessionOptions,
    /// Redact secrets (false: `--no-redact`).
    pub redact: bool,
}

/// An open capture: the data path's [`Shared`] state and the writer thread behind it.
pub struct Recording {
    pub path: PathBuf,
    pub shared: Arc<Shared>,
    clock: Arc<Clock>,
    writer: std::thread::JoinHandle<WriterStats>,
}

impl Recording {
    /// Creates the file, writes the `session` line and starts the writer thread.
    pub fn start(setup: RecordingSetup) -> anyhow::Result<Recording> {
        let clock = Arc::new(Clock::new());
        let session_id = short_id();
        let (path, mut file) = open_capture(&setup.target, &clock, &session_id)?;
        let max_body = setup.options.max_body;
        let session = model::Session {
            v: model::FORMAT_VERSION,
            tool: "mcptap".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            session_id,
            routes: vec![setup.route],
            options: setup.options,
            redaction: if setup.redact { "fingerprint" } else { "off" }.into(),
        };
        writer::write_line(&mut file, &clock, 0, EventBody::Session(session))
            .with_context(|| format!("writing the capture {}", path.display()))?;
        let (recorder, writer) = writer::start(
            WriterConfig {
                file,
                rotation: None,
                redactor: Redactor::new(setup.redact),
                max_body,
                queue_bytes: 64 << 20,
                on_full: OnFull::Wait,
                observers: Vec::new(),
                on_idle: || {},
            },
            clock.clone(),
        );
        Ok(Recording {
            path,
            shared: Arc::new(Shared::new(recorder, max_body)),
            clock,
            writer,
        })
    }

    pub fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }

    /// Records a `note` (a fact about the run, not about the traffic).
    pub fn note(&self, code: &str, message: String) {
        self.recorder().event(
            self.clock.now_us(),
            EventBody::Note(model::Note {
                code: code.into(),
                message,
                count: None,
                ex: None,
            }),
        );
    }

    /// Waits (briefly) for every exchange's `end`, writes `session_end` and closes the file.
    pub async fn finish(self, clean: bool) -> anyhow::Result<WriterStats> {
        let all_ended = tokio::time::timeout(Duration::from_secs(2), self.shared.all_ended())
            .await
            .is_ok();
        self.shared.recorder.record(Record::Finish {
            t: self.clock.now_us(),
            exchanges: self.shared.exchanges(),
            connections: self.shared.connections(),
            clean: clean && all_ended,
        });
        drop(self.shared);
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .context("waiting for the capture writer")?
            .map_err(|_| anyhow::anyhow!("the capture writer thread panicked"))
    }
}

/// Session options for a capture that no proxy wrote: nothing is dropped, no grace period.
pub fn options(
    max_body: u64,
    timeout: Option<Duration>,
    tls: &crate::upstream::UpstreamTls,
) -> SessionOptions {
    SessionOptions {
        max_body,
        on_full: "wait".into(),
        preserve_host: false,
        upstream_insecure: tls.insecure,
        upstream_ca: tls.ca_file.as_ref().map(|p| p.display().to_string()),
        upstream_timeout_s: timeout.map(|d| d.as_secs_f64()),
        grace_s: 0.0,
        rewrite_origins: false,
    }
}
