//! TLS termination for the proxy's listeners: certificates from files, a local CA or an ACME
//! CA, chosen by SNI (RFC 6066), TLS 1.3/1.2 (RFC 8446) with ALPN (RFC 7301), reloaded and
//! renewed without restarts.

pub mod accept;
pub mod acme;
pub mod ca;
mod files;
mod resolver;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use rustls::server::{ResolvesServerCert, ServerSessionMemoryCache};
use rustls::ServerConfig;

pub use accept::{Accepted, RejectKind, Rejected, PLAIN_HTTP_BODY};
pub use acme::{AcmeConfig, AcmeEvent};
pub use resolver::SniResolver;

use files::LoadedPair;
use resolver::{list_names, ServedPair, Snapshot};

/// How long a client gets to finish its handshake unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the watcher looks at the certificate files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Cap on configurable durations, so that deadline arithmetic cannot overflow.
const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);
/// Size of the server-side session cache (TLS 1.2 session IDs, TLS 1.3 stateful tickets).
const SESSION_CACHE_ENTRIES: usize = 1024;

/// Where one served certificate comes from.
#[derive(Debug)]
enum Source {
    /// A certificate file and its key file, re-read on reload.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate made at startup (self-signed mode); reload keeps it.
    Memory(LoadedPair),
    /// A certificate kept by ACME: served once obtained, replaced when renewed.
    Acme(Arc<acme::Managed>),
}

/// The TLS side of a listener: its certificates, its server config, and the accept path.
/// Shared as `Arc<TlsSetup>` between the accept loop, the file watcher and a SIGHUP handler.
pub struct TlsSetup {
    sources: Vec<Source>,
    resolver: Arc<SniResolver>,
    config: Arc<ServerConfig>,
    handshake_timeout_ms: AtomicU64,
    /// Serialises reloads, so that a slow one cannot overwrite a newer one's result.
    reload_lock: Mutex<()>,
    ca_cert: Option<PathBuf>,
    /// The ACME side, in ACME mode: challenges answered in `accept`, orders and renewals.
    acme: Option<Arc<acme::Acme>>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("sources", &self.sources)
            .field("names", &self.names())
            .field("handshake_timeout", &self.handshake_timeout())
            .finish_non_exhaustive()
    }
}

/// The certificates served after a load or reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// In lookup order: for each SNI name the first certificate covering it wins, and the
    /// first certificate also serves clients that send no name.
    pub certificates: Vec<ServedCertificate>,
}

/// One served certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCertificate {
    /// The certificate file, or `None` for one made in memory.
    pub cert: Option<PathBuf>,
    /// The key file, or `None` for one made in memory.
    pub key: Option<PathBuf>,
    /// The leaf's DNS names and IP addresses (subjectAltName).
    pub names: Vec<String>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: Option<i64>,
}

impl ServedCertificate {
    /// Whether the leaf's notAfter has passed.
    pub fn expired(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.not_after.is_some_and(|t| t < now)
    }
}

impl ReloadSummary {
    /// Every served name, first appearance first.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.certificates.iter().flat_map(|c| c.names.iter()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

impl fmt::Display for ReloadSummary {
    /// `serving a.test, b.test (certs/a.pem); localhost (generated)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.certificates.is_empty() {
            return f.write_str("serving no certificate yet");
        }
        f.write_str("serving ")?;
        for (i, cert) in self.certificates.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let from = cert
                .cert
                .as_ref()
                .map_or_else(|| "generated".to_string(), |p| p.display().to_string());
            let expired = if cert.expired() { ", EXPIRED" } else { "" };
            write!(f, "{} ({from}{expired})", list_names(&cert.names))?;
        }
        Ok(())
    }
}

impl TlsSetup {
    /// Serves certificate/key file pairs: each a PEM full chain (leaf first) and its PEM
    /// private key (RSA, ECDSA P-256/P-384 or Ed25519; PKCS#8, PKCS#1 or SEC1). For an SNI
    /// name, the first pair whose certificate covers it is used; the first pair also serves
    /// clients that send no name.
    pub fn from_files(pairs: &[(PathBuf, PathBuf)]) -> anyhow::Result<Arc<TlsSetup>> {
        if pairs.is_empty() {
            bail!("no certificate given");
        }
        let sources = pairs
            .iter()
            .map(|(cert, key)| Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect();
        Self::build(sources, None, None)
    }

    /// Serves a certificate for `names` (default: localhost, 127.0.0.1, ::1), freshly
    /// signed at startup by the local CA in `certs_dir` (created there on first use, reused
    /// after, so clients trust it once: see [`ca::certs_init`] for the instructions).
    pub fn self_signed(certs_dir: &Path, names: &[String]) -> anyhow::Result<Arc<TlsSetup>> {
        let names = if names.is_empty() {
            ca::default_hosts()
        } else {
            names.to_vec()
        };
        let local_ca = ca::LocalCa::load_or_create(certs_dir)?;
        let (cert_pem, key_pem) = local_ca.issue_leaf(&names)?;
        let pair = files::pair_from_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            "the generated certificate",
            "the generated key",
        )?;
        Self::build(vec![Source::Memory(pair)], Some(local_ca.cert_path()), None)
    }

    fn build(
        sources: Vec<Source>,
        ca_cert: Option<PathBuf>,
        acme: Option<Arc<acme::Acme>>,
    ) -> anyhow::Result<Arc<TlsSetup>> {
        let snapshot = load_all(&sources)?;
        let resolver = Arc::new(SniResolver::new(snapshot));
        let config = server_config(resolver.clone())?;
        Ok(Arc::new(TlsSetup {
            sources,
            resolver,
            config: Arc::new(config),
            handshake_timeout_ms: AtomicU64::new(millis(DEFAULT_HANDSHAKE_TIMEOUT)),
            reload_lock: Mutex::new(()),
            ca_cert,
            acme,
        }))
    }

    /// Re-reads every certificate and key file and swaps them in all at once. When any pair
    /// fails to load, nothing changes and the error says which (all failures, one line).
    /// Connections already established keep the certificate they started with.
    pub fn reload(&self) -> anyhow::Result<ReloadSummary> {
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = load_all(&self.sources)?;
        self.resolver.replace(snapshot);
        Ok(self.summary())
    }

    /// The certificates served now.
    pub fn summary(&self) -> ReloadSummary {
        let snapshot = self.resolver.snapshot();
        ReloadSummary {
            certificates: snapshot
                .pairs
                .iter()
                .map(|served| ServedCertificate {
                    cert: served.files.as_ref().map(|(c, _)| c.clone()),
                    key: served.files.as_ref().map(|(_, k)| k.clone()),
                    names: served.pair.names.clone(),
                    not_after: served.pair.not_after,
                })
                .collect(),
        }
    }

    /// Every name served now (DNS names and IP addresses), first appearance first.
    pub fn names(&self) -> Vec<String> {
        self.resolver.snapshot().names()
    }

    /// The local CA certificate clients must trust, in self-signed mode.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The certificate and key files reload reads (empty in self-signed mode).
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .flat_map(|source| match source {
                Source::Files { cert, key } => vec![cert.clone(), key.clone()],
                Source::Memory(_) | Source::Acme(_) => Vec::new(),
            })
            .collect()
    }

    /// The server config (SNI resolver, TLS 1.3 and 1.2, ALPN h2 then http/1.1, session
    /// cache and tickets), for callers that drive rustls themselves.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The time limit of [`TlsSetup::accept`], from the TCP accept to the finished handshake.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed))
    }

    /// Changes the time limit of [`TlsSetup::accept`] (default 10 s, at most a day) for
    /// later accepts.
    pub fn set_handshake_timeout(&self, limit: Duration) {
        self.handshake_timeout_ms
            .store(millis(limit.min(LONGEST)).max(1), Ordering::Relaxed);
    }

    /// Watches the certificate and key files every 2 s and reloads when any of them changed
    /// (contents, modification time or inode: a rewrite, a `touch`, a rename over, or a
    /// symlink moved to a new file as certbot does); `on_event` gets each reload's result. Nothing is reported
    /// while the files stay as they are, including after a failed reload. The task ends
    /// when the `TlsSetup` is dropped; in self-signed mode there is nothing to watch and it
    /// ends at once. Call within a Tokio runtime.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        on_event: impl Fn(Result<ReloadSummary, String>) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_watcher_every(WATCH_INTERVAL, on_event)
    }

    /// [`TlsSetup::spawn_watcher`] with another polling interval.
    pub fn spawn_watcher_every(
        self: &Arc<Self>,
        every: Duration,
        on_event: impl Fn(Result<ReloadSummary, String>) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let paths = self.files();
        let mut seen = stamps(&paths);
        // A weak reference: the watcher must not keep a dropped setup alive.
        let setup = Arc::downgrade(self);
        let every = every.clamp(Duration::from_millis(10), LONGEST);
        tokio::spawn(async move {
            if paths.is_empty() {
                return;
            }
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(setup) = setup.upgrade() else {
                    return;
                };
                let now = stamps(&paths);
                if now == seen {
                    continue;
                }
                seen = now;
                on_event(setup.reload().map_err(|e| format!("{e:#}")));
            }
        })
    }
}

/// What the watcher compares between polls, per file: modification time, inode and a
/// hash of the contents (`None`: missing or unreadable). The hash catches rewrites that
/// file systems with coarse timestamps would hide; the files are a few KiB each.
type Stamp = Option<(Option<SystemTime>, u64, u64)>;

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    use std::hash::{Hash, Hasher};
    paths
        .iter()
        .map(|path| {
            // Both calls follow symlinks: certbot's live/ links move to new archive files.
            let meta = std::fs::metadata(path).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            let contents = files::read_small(path).ok()?;
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            contents.hash(&mut hasher);
            Some((meta.modified().ok(), inode, hasher.finish()))
        })
        .collect()
}

/// Loads every source; all failures are reported together, on one line.
fn load_all(sources: &[Source]) -> anyhow::Result<Snapshot> {
    let mut pairs = Vec::with_capacity(sources.len());
    let mut errors = Vec::new();
    for source in sources {
        match source {
            Source::Files { cert, key } => match files::load_pair(cert, key) {
                Ok(pair) => pairs.push(ServedPair {
                    pair,
                    files: Some((cert.clone(), key.clone())),
                }),
                Err(e) => errors.push(format!("{e:#}")),
            },
            Source::Memory(pair) => pairs.push(ServedPair {
                pair: pair.clone(),
                files: None,
            }),
            // Not obtained yet: no entry, and `accept` says why.
            Source::Acme(managed) => {
                if let Some(pair) = managed.current() {
                    pairs.push(ServedPair {
                        pair,
                        files: Some((managed.cert_path.clone(), managed.key_path.clone())),
                    });
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(anyhow!("{}", errors.join("; ")));
    }
    Ok(Snapshot { pairs })
}

/// TLS 1.3 and 1.2 with the ring provider, ALPN `h2` then `http/1.1` (RFC 7301: the server
/// picks, in its own order), and resumption both ways: a stateful session cache and
/// stateless tickets (RFC 8446 §2.2).
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("configuring TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().context("making TLS session ticket keys")?;
    Ok(config)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
