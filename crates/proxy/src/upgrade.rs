//! Upgraded connections (RFC 9110 §7.8, WebSocket's 101): once both sides have switched,
//! bytes are copied both ways until either closes, and the totals are recorded.

use std::sync::Arc;
use std::time::Instant;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use std::sync::atomic::{AtomicU64, Ordering};

use super::record::Shared;
use super::CountingStream;
use mcptap_capture::model::{EventBody, Upgrade};

/// Spawns the tunnel between the client's and the upstream's upgraded connections.
pub fn tunnel(
    ex: u64,
    protocol: String,
    client: OnUpgrade,
    upstream: OnUpgrade,
    shared: Arc<Shared>,
) {
    let tracker = shared.tunnels.clone();
    tracker.spawn(async move {
        let started = Instant::now();
        let mut error = None;
        // Counted on the client side as bytes move, so a cut tunnel still reports its totals.
        let c2u = Arc::new(AtomicU64::new(0));
        let u2c = Arc::new(AtomicU64::new(0));
        let tunnel = async {
            let (client, upstream) = tokio::try_join!(client, upstream)
                .map_err(|e| format!("the upgrade did not complete: {e}"))?;
            let mut client = CountingStream {
                inner: TokioIo::new(client),
                bytes_in: c2u.clone(),
                bytes_out: u2c.clone(),
            };
            let mut upstream = TokioIo::new(upstream);
            tokio::io::copy_bidirectional(&mut client, &mut upstream)
                .await
                .map_err(|e| format!("the tunnel failed: {e}"))
        };
        tokio::select! {
            result = tunnel => {
                if let Err(e) = result {
                    error = Some(e);
                }
            }
            _ = shared.cut.cancelled() => {
                error = Some("the proxy shut down while the tunnel was open".into());
            }
        }
        let (c2u, u2c) = (c2u.load(Ordering::Relaxed), u2c.load(Ordering::Relaxed));
        let recorder = &shared.recorder;
        recorder.event_now(EventBody::Upgrade(Upgrade {
            ex,
            protocol,
            client_to_upstream: c2u,
            upstream_to_client: u2c,
            duration_us: started.elapsed().as_micros() as u64,
            error,
        }));
    });
}
