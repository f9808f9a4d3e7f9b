//! Certificates from an ACME CA (RFC 8555) that the proxy obtains and renews by itself, the
//! way Caddy does: TLS-ALPN-01 (RFC 8737) answered on the TLS listener, HTTP-01 (RFC 8555
//! §8.3) on an optional plain listener, account and certificates cached under
//! `certs/acme/<CA>/`, renewal when a third of the lifetime is left.
//!
//! Why instant-acme and not tokio-rustls-acme: tokio-rustls-acme runs the whole life cycle
//! inside its own acceptor and cache, so our accept path (ClientHello first, every failure in
//! words) and our notes would only see its end result. instant-acme is a plain RFC 8555
//! client: we drive each order step by step, read every problem document the CA sends, and
//! bring our own HTTP client (hyper-rustls on ring, trusting `--acme-ca`), through which all
//! ACME traffic passes and is logged. It is built without its default `aws-lc-rs` and
//! `hyper-rustls` features: ring only, like the rest of mcptap.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, Order, OrderStatus, Problem, RetryPolicy,
};
use rustls::sign::CertifiedKey;

use super::files::{self, LoadedPair};
use super::{ca, TlsSetup};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`): untrusted certificates, high limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &str = "acme-tls/1";

/// Note code: a certificate was obtained (first time or renewal).
pub const ACME_ISSUED: &str = "acme_issued";
/// Note code: an order failed; the message says why and when the next attempt is.
pub const ACME_FAILED: &str = "acme_failed";
/// Note code: an order was placed.
pub const ACME_ORDERING: &str = "acme_ordering";
/// Note code: a certificate from the cache is served at startup.
pub const ACME_CACHED: &str = "acme_cached";
/// Note code: the CA connected to validate a challenge, and was answered.
pub const ACME_VALIDATION: &str = "acme_validation";
/// Note code: the HTTP-01 listener is up.
pub const ACME_HTTP01: &str = "acme_http01";

/// The folder under the certificates folder that holds everything ACME.
const CACHE_FOLDER: &str = "acme";
const ACCOUNT_FILE: &str = "account.json";
/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";
/// Waits between failed orders; the last one repeats.
const RETRY_DELAYS: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
];
/// How long one request to the ACME server may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
/// How long the CA gets to validate, and then to issue.
const POLL_LIMIT: Duration = Duration::from_secs(120);
/// How long a connection to the HTTP-01 listener may stay open.
const HTTP01_CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// What `--acme` and its companion flags ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The DNS names to get certificates for, one certificate each.
    pub domains: Vec<String>,
    /// The contact address given to the CA (`--acme-email`).
    pub email: Option<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// Extra CA certificates (PEM) trusted for the ACME server's own HTTPS (`--acme-ca`).
    pub ca_file: Option<PathBuf>,
    /// The certificates folder; the cache is `<certs_dir>/acme/<CA>/`.
    pub certs_dir: PathBuf,
    /// A plain-HTTP listener for HTTP-01 challenges (`--acme-http-listen`).
    pub http_listen: Option<SocketAddr>,
}

impl AcmeConfig {
    /// Checks the names (DNS names only: no IP addresses, no wildcards), the email address
    /// and the directory URL; names are lowercased and duplicates dropped.
    pub fn checked(mut self) -> anyhow::Result<AcmeConfig> {
        if self.domains.is_empty() {
            bail!("--acme needs a domain name");
        }
        let mut domains: Vec<String> = Vec::new();
        for name in &self.domains {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if name.parse::<std::net::IpAddr>().is_ok() {
                bail!("--acme {name}: an IP address; mcptap gets ACME certificates for DNS names only");
            }
            if name.contains('*') {
                bail!(
                    "--acme {name}: wildcards need the dns-01 challenge, which mcptap does not answer; \
                     name each host"
                );
            }
            if rustls::pki_types::DnsName::try_from(name.as_str()).is_err() || !name.contains('.') {
                bail!("--acme {name:?} is not a public domain name");
            }
            if !domains.contains(&name) {
                domains.push(name);
            }
        }
        self.domains = domains;
        if let Some(email) = &self.email {
            let email = email.trim().trim_start_matches("mailto:").to_string();
            let plausible = email
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
                && !email.contains(char::is_whitespace);
            if !plausible {
                bail!("--acme-email {email:?} is not an email address");
            }
            self.email = Some(email);
        }
        let uri: hyper::Uri = self
            .directory
            .parse()
            .with_context(|| format!("--acme-directory {:?} is not a URL", self.directory))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            bail!(
                "--acme-directory {:?} must be an https:// URL",
                self.directory
            );
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                bail!("--acme-ca {}: no such file", ca.display());
            }
        }
        Ok(self)
    }

    /// `<certs_dir>/acme/<CA>/`, one folder per directory URL (`acme-v02.api.letsencrypt.org-directory`),
    /// so that switching CAs never serves another CA's certificate or account.
    pub fn cache_dir(&self) -> PathBuf {
        let without_scheme = self
            .directory
            .split_once("://")
            .map_or(self.directory.as_str(), |(_, rest)| rest);
        let slug: String = without_scheme
            .trim_end_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        self.certs_dir.join(CACHE_FOLDER).join(slug)
    }
}

/// A fact about ACME for the capture (a `note`) and the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeEvent {
    /// One of [`ACME_ISSUED`], [`ACME_FAILED`], [`ACME_ORDERING`], [`ACME_CACHED`],
    /// [`ACME_VALIDATION`], [`ACME_HTTP01`].
    pub code: &'static str,
    /// The domain it is about (empty for the HTTP-01 listener).
    pub domain: String,
    /// The fact in one sentence.
    pub message: String,
}

type EventSink = Arc<dyn Fn(AcmeEvent) + Send + Sync>;

/// Where a domain's certificate stands.
#[derive(Debug, Clone)]
enum Standing {
    /// No order yet (the manager has not started, or waits for renewal).
    Idle,
    /// An order is running.
    Ordering,
    /// The last order failed; the next starts at `retry_at`.
    Failed { reason: String, retry_at: Instant },
}

/// What the cache held for a domain at startup.
#[derive(Debug, Clone)]
enum Cached {
    Nothing,
    Usable,
    Expired(i64),
    Unusable(String),
}

/// One domain under ACME management: its served certificate and how its order goes.
#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) domain: String,
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
    current: Mutex<Option<LoadedPair>>,
    standing: Mutex<Standing>,
    cached: Cached,
}

impl Managed {
    /// The certificate served now, if any.
    pub(crate) fn current(&self) -> Option<LoadedPair> {
        lock(&self.current).clone()
    }

    fn set_standing(&self, standing: Standing) {
        *lock(&self.standing) = standing;
    }

    /// When the current certificate should be renewed: when a third of its lifetime is
    /// left (Let's Encrypt's advice for 90-day certificates: renew at 60 days). `None`
    /// when there is no certificate.
    fn renewal_due(&self) -> Option<SystemTime> {
        let pair = self.current()?;
        Some(renewal_time(pair.not_before, pair.not_after))
    }
}

/// `not_after - lifetime / 3`, as wall-clock time.
fn renewal_time(not_before: Option<i64>, not_after: Option<i64>) -> SystemTime {
    let (Some(from), Some(until)) = (not_before, not_after) else {
        return SystemTime::UNIX_EPOCH;
    };
    let lifetime = until.saturating_sub(from).max(0);
    let due = until.saturating_sub(lifetime / 3);
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(due).unwrap_or(0))
}

/// A pending HTTP-01 challenge: what to answer for its token.
#[derive(Debug, Clone)]
struct Http01 {
    domain: String,
    key_authorization: String,
}

/// The ACME side of a [`TlsSetup`]: the managed domains, the challenges being answered,
/// the account and the HTTP client that talks to the CA.
pub(crate) struct Acme {
    config: AcmeConfig,
    cache: PathBuf,
    pub(crate) domains: Vec<Arc<Managed>>,
    /// TLS-ALPN-01 challenge certificates, by domain.
    tls_alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 answers, by token.
    http01: Mutex<HashMap<String, Http01>>,
    events: OnceLock<EventSink>,
    account: tokio::sync::Mutex<Option<Account>>,
    http: AcmeHttp,
}

impl fmt::Debug for Acme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.config.directory)
            .field("domains", &self.config.domains)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// Creates the cache folder (0700) and loads what it holds: a cached certificate that
    /// covers its domain and has not expired is served at once.
    pub(crate) fn load(config: AcmeConfig) -> anyhow::Result<Acme> {
        let cache = config.cache_dir();
        ca::ensure_private_dir(&cache)?;
        let http = AcmeHttp::new(config.ca_file.as_deref())?;
        let domains = config
            .domains
            .iter()
            .map(|domain| {
                let stem = ca::file_stem(domain);
                let cert_path = cache.join(format!("{stem}.pem"));
                let key_path = cache.join(format!("{stem}-key.pem"));
                let (current, cached) = load_cached(domain, &cert_path, &key_path);
                Arc::new(Managed {
                    domain: domain.clone(),
                    cert_path,
                    key_path,
                    current: Mutex::new(current),
                    standing: Mutex::new(Standing::Idle),
                    cached,
                })
            })
            .collect();
        Ok(Acme {
            config,
            cache,
            domains,
            tls_alpn: Mutex::new(HashMap::new()),
            http01: Mutex::new(HashMap::new()),
            events: OnceLock::new(),
            account: tokio::sync::Mutex::new(None),
            http,
        })
    }

    fn emit(&self, code: &'static str, domain: &str, message: String) {
        match self.events.get() {
            Some(sink) => sink(AcmeEvent {
                code,
                domain: domain.to_string(),
                message,
            }),
            None => tracing::info!("{message}"),
        }
    }

    /// Why a handshake for `sni` found no certificate, when ACME manages that name and has
    /// none for it yet: "no certificate for X yet: the ACME order is in progress".
    pub(crate) fn missing_reason(&self, sni: Option<&str>) -> Option<String> {
        let managed = match sni {
            Some(name) => self
                .domains
                .iter()
                .find(|m| m.domain.eq_ignore_ascii_case(name.trim_end_matches('.')))?,
            None => self.domains.first()?,
        };
        if managed.current().is_some() {
            return None;
        }
        let why = match lock(&managed.standing).clone() {
            Standing::Idle | Standing::Ordering => "the ACME order is in progress".to_string(),
            Standing::Failed { reason, retry_at } => format!(
                "the ACME order failed: {reason}; next attempt in {}",
                human(retry_at.saturating_duration_since(Instant::now()))
            ),
        };
        let domain = &managed.domain;
        Some(match sni {
            Some(_) => format!("no certificate for {domain} yet: {why}"),
            None => format!("no certificate yet (the client sent no SNI; {domain}: {why})"),
        })
    }

    /// The TLS-ALPN-01 challenge certificate pending for `domain`.
    pub(crate) fn tls_alpn_certificate(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.tls_alpn)
            .get(&domain.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }

    /// Makes a TLS-ALPN-01 challenge pending for `domain`, as an order does.
    #[cfg(test)]
    pub(crate) fn pend_tls_alpn(&self, domain: &str, digest: &[u8]) -> anyhow::Result<()> {
        let certified = challenge_certificate(domain, digest)?;
        lock(&self.tls_alpn).insert(domain.to_string(), certified);
        Ok(())
    }

    /// Records that the CA came to validate `domain`.
    pub(crate) fn validated(&self, domain: &str, challenge: &str, peer: Option<SocketAddr>) {
        let from = peer.map(|p| format!(" from {p}")).unwrap_or_default();
        self.emit(
            ACME_VALIDATION,
            domain,
            format!(
                "the ACME CA connected{from} to validate {domain} ({challenge}) and was answered"
            ),
        );
    }

    /// The challenge types this setup can answer, in order of preference: HTTP-01 when a
    /// plain listener is configured (the port the user opened for the CA), then TLS-ALPN-01.
    fn challenge_types(&self) -> Vec<ChallengeType> {
        let mut types = Vec::new();
        if self.config.http_listen.is_some() {
            types.push(ChallengeType::Http01);
        }
        types.push(ChallengeType::TlsAlpn01);
        types
    }

    /// Keeps one domain's certificate: serves the cached one, orders when there is none or
    /// renewal is due, retries failures with backoff. Runs until aborted.
    async fn manage(
        self: Arc<Self>,
        managed: Arc<Managed>,
        setup: Weak<TlsSetup>,
        https_port: u16,
    ) {
        let domain = managed.domain.clone();
        match (&managed.cached, managed.current()) {
            (Cached::Usable, Some(pair)) => self.emit(
                ACME_CACHED,
                &domain,
                format!(
                    "using the cached certificate for {domain} ({}), valid until {}; renewal from {}",
                    managed.cert_path.display(),
                    timestamp(pair.not_after),
                    wall(renewal_time(pair.not_before, pair.not_after)),
                ),
            ),
            (Cached::Expired(when), _) => self.emit(
                ACME_CACHED,
                &domain,
                format!(
                    "the cached certificate for {domain} expired on {}; ordering a new one",
                    timestamp(Some(*when))
                ),
            ),
            (Cached::Unusable(why), _) => self.emit(
                ACME_CACHED,
                &domain,
                format!("the cached certificate for {domain} cannot be used ({why}); ordering a new one"),
            ),
            _ => {}
        }
        let mut failures: usize = 0;
        loop {
            if let Some(due) = managed.renewal_due() {
                sleep_until_wall(due).await;
            }
            let types = self.challenge_types();
            let preferred = types[failures % types.len()].clone();
            let renewing = managed.current().is_some();
            managed.set_standing(Standing::Ordering);
            // Public CAs validate on the standard ports only: say so when we listen elsewhere.
            let (standard, ours, listener) = match preferred {
                ChallengeType::Http01 => (
                    80,
                    self.config.http_listen.map_or(80, |a| a.port()),
                    "the http-01 listener",
                ),
                _ => (443, https_port, "this listener"),
            };
            let port_hint = if ours == standard {
                String::new()
            } else {
                format!(
                    "; the CA connects to port {standard} of {domain}, which must reach {listener} on port {ours}"
                )
            };
            self.emit(
                ACME_ORDERING,
                &domain,
                format!(
                    "{} a certificate for {domain} from {} by {}{port_hint}",
                    if renewing { "renewing" } else { "ordering" },
                    self.config.directory,
                    challenge_name(&preferred),
                ),
            );
            match self.order(&managed, &preferred).await {
                Ok((pair, used)) => {
                    failures = 0;
                    let until = timestamp(pair.not_after);
                    let renew = wall(renewal_time(pair.not_before, pair.not_after));
                    *lock(&managed.current) = Some(pair);
                    managed.set_standing(Standing::Idle);
                    if let Some(setup) = setup.upgrade() {
                        if let Err(e) = setup.reload() {
                            tracing::warn!("serving the new ACME certificate failed: {e:#}");
                        }
                    }
                    self.emit(
                        ACME_ISSUED,
                        &domain,
                        format!(
                            "{} the certificate for {domain} ({used}): valid until {until}, renewal from {renew}; \
                             new connections get it, open ones keep theirs",
                            if renewing { "renewed" } else { "obtained" },
                        ),
                    );
                }
                Err(reason) => {
                    let wait = RETRY_DELAYS[failures.min(RETRY_DELAYS.len() - 1)];
                    failures = failures.saturating_add(1);
                    managed.set_standing(Standing::Failed {
                        reason: reason.clone(),
                        retry_at: Instant::now() + wait,
                    });
                    let serving = if renewing {
                        "; the current certificate stays in use"
                    } else {
                        ""
                    };
                    self.emit(
                        ACME_FAILED,
                        &domain,
                        format!(
                            "the ACME order for {domain} failed: {reason}{serving}; next attempt in {}",
                            human(wait)
                        ),
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The ACME account: the cached one, or a new registration (cached 0600).
    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let path = self.cache.join(ACCOUNT_FILE);
        let account = if path.exists() {
            ca::warn_if_readable_by_others(&path);
            let bytes = files::read_small(&path).map_err(|e| format!("{e:#}"))?;
            let credentials: AccountCredentials = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "the cached ACME account {} cannot be read ({e}); remove it to register a new one",
                    path.display()
                )
            })?;
            Account::builder_with_http(Box::new(self.http.clone()))
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("reaching the ACME server: {}", describe(&e, None, "")))?
        } else {
            let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, credentials) = Account::builder_with_http(Box::new(self.http.clone()))
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    self.config.directory.clone(),
                    None,
                )
                .await
                .map_err(|e| format!("registering the ACME account: {}", describe(&e, None, "")))?;
            let json = serde_json::to_vec_pretty(&credentials)
                .map_err(|e| format!("saving the ACME account: {e}"))?;
            ca::replace_file(&path, &json, 0o600).map_err(|e| format!("{e:#}"))?;
            account
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Forgets the account, so the next order registers again (the CA no longer knows it).
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        let _ = std::fs::remove_file(self.cache.join(ACCOUNT_FILE));
    }

    /// One order for one domain, start to finish; the certificate is cached before it is
    /// returned. The error is a sentence.
    async fn order(
        &self,
        managed: &Managed,
        preferred: &ChallengeType,
    ) -> Result<(LoadedPair, String), String> {
        let account = self.account().await?;
        let domain = managed.domain.as_str();
        let identifiers = [Identifier::Dns(domain.to_string())];
        let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => order,
            Err(e) => {
                if is_problem(&e, "accountDoesNotExist") {
                    self.forget_account().await;
                }
                return Err(format!(
                    "creating the order: {}",
                    describe(&e, None, domain)
                ));
            }
        };
        let mut cleanup = Cleanup {
            acme: self,
            domain: domain.to_string(),
            tokens: Vec::new(),
        };
        let mut used: Option<ChallengeType> = None;
        {
            let mut authorizations = order.authorizations();
            while let Some(result) = authorizations.next().await {
                let mut authorization = result.map_err(|e| {
                    format!("reading the authorization: {}", describe(&e, None, domain))
                })?;
                match authorization.status {
                    // Validated recently (the CA reuses authorizations): nothing to answer.
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(format!(
                            "the CA reports the authorization for {domain} as {}",
                            format!("{other:?}").to_lowercase()
                        ))
                    }
                }
                let offered: Vec<ChallengeType> = authorization
                    .challenges
                    .iter()
                    .map(|c| c.r#type.clone())
                    .collect();
                let answerable = self.challenge_types();
                let chosen = std::iter::once(preferred.clone())
                    .chain(answerable.iter().cloned())
                    .find(|t| answerable.contains(t) && offered.contains(t))
                    .ok_or_else(|| {
                        format!(
                            "the CA offers no challenge mcptap can answer for {domain} (offered: {}; \
                             mcptap answers tls-alpn-01 on the TLS listener, and http-01 with --acme-http-listen)",
                            offered.iter().map(challenge_name).collect::<Vec<_>>().join(", ")
                        )
                    })?;
                let Some(mut challenge) = authorization.challenge(chosen.clone()) else {
                    return Err(format!(
                        "the CA's {} challenge disappeared",
                        challenge_name(&chosen)
                    ));
                };
                let key_authorization = challenge.key_authorization();
                match chosen {
                    ChallengeType::TlsAlpn01 => {
                        let certified =
                            challenge_certificate(domain, key_authorization.digest().as_ref())
                                .map_err(|e| {
                                    format!("making the tls-alpn-01 certificate: {e:#}")
                                })?;
                        lock(&self.tls_alpn).insert(domain.to_string(), certified);
                    }
                    _ => {
                        lock(&self.http01).insert(
                            challenge.token.clone(),
                            Http01 {
                                domain: domain.to_string(),
                                key_authorization: key_authorization.as_str().to_string(),
                            },
                        );
                        cleanup.tokens.push(challenge.token.clone());
                    }
                }
                challenge.set_ready().await.map_err(|e| match e {
                    // A fast CA has validated already, and failed: its verdict is the reason.
                    instant_acme::Error::Api(_) => describe(&e, Some(&chosen), domain),
                    _ => format!(
                        "telling the CA the challenge is ready: {}",
                        describe(&e, Some(&chosen), domain)
                    ),
                })?;
                used = Some(chosen);
            }
        }
        let used_name = used.as_ref().map_or_else(
            || "authorization reused".to_string(),
            |t| format!("validated by {}", challenge_name(t)),
        );

        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(POLL_LIMIT);
        match order.poll_ready(&polling).await {
            Ok(OrderStatus::Ready) => {}
            Ok(OrderStatus::Invalid) => {
                return Err(why_invalid(&mut order, None, used.as_ref(), domain).await)
            }
            Err(e @ instant_acme::Error::Api(_)) => {
                return Err(why_invalid(&mut order, Some(&e), used.as_ref(), domain).await)
            }
            Err(instant_acme::Error::Timeout(_)) => {
                return Err(format!(
                    "the CA did not finish validating {domain} within {}",
                    human(POLL_LIMIT)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "waiting for the validation: {}",
                    describe(&e, used.as_ref(), domain)
                ))
            }
            Ok(other) => {
                return Err(format!(
                    "the order ended {} instead of ready",
                    format!("{other:?}").to_lowercase()
                ))
            }
        }
        drop(cleanup);

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating the certificate key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
            .map_err(|e| format!("making the certificate request: {e}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("making the certificate request: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalizing the order: {}", describe(&e, None, domain)))?;
        let chain = order.poll_certificate(&polling).await.map_err(|e| {
            format!(
                "downloading the certificate: {}",
                describe(&e, None, domain)
            )
        })?;
        let key_pem = key.serialize_pem();
        let pair = files::pair_from_pem(
            chain.as_bytes(),
            key_pem.as_bytes(),
            "the certificate from the CA",
            "its key",
        )
        .map_err(|e| format!("{e:#}"))?;
        if !pair.names.iter().any(|n| n == domain) {
            return Err(format!(
                "the CA issued a certificate that does not name {domain} (it names {})",
                pair.names.join(", ")
            ));
        }
        // Key first: a crash in between leaves a mismatched pair, which the next start
        // reports and replaces, rather than a certificate with a lost key.
        ca::replace_file(&managed.key_path, key_pem.as_bytes(), 0o600)
            .and_then(|()| ca::replace_file(&managed.cert_path, chain.as_bytes(), 0o644))
            .map_err(|e| format!("caching the certificate: {e:#}"))?;
        Ok((pair, used_name))
    }

    /// The answer to an HTTP-01 request for `token`.
    fn http01_answer(&self, token: &str) -> Option<Http01> {
        lock(&self.http01).get(token).cloned()
    }
}

/// Removes an order's challenge answers when the order is done, however it ends.
struct Cleanup<'a> {
    acme: &'a Acme,
    domain: String,
    tokens: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        lock(&self.acme.tls_alpn).remove(&self.domain);
        let mut http01 = lock(&self.acme.http01);
        for token in &self.tokens {
            http01.remove(token);
        }
    }
}

/// Why an order went invalid, from the challenge errors of its authorizations (the CA's
/// own words about what it saw), else from the order's error.
async fn why_invalid(
    order: &mut Order,
    order_error: Option<&instant_acme::Error>,
    used: Option<&ChallengeType>,
    domain: &str,
) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if authorization.refresh().await.is_err() {
            continue;
        }
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(describe_problem(problem, Some(&challenge.r#type), domain));
            }
        }
    }
    if !reasons.is_empty() {
        return reasons.join("; ");
    }
    match order_error {
        Some(e) => describe(e, used, domain),
        None => format!("the CA marked the order for {domain} invalid without saying why"),
    }
}

fn is_problem(err: &instant_acme::Error, kind: &str) -> bool {
    matches!(err, instant_acme::Error::Api(p) if problem_kind(p) == kind)
}

/// `connection` for `urn:ietf:params:acme:error:connection`.
fn problem_kind(problem: &Problem) -> &str {
    let kind = problem.r#type.as_deref().unwrap_or("");
    kind.strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind)
}

/// An ACME client error in words.
fn describe(err: &instant_acme::Error, challenge: Option<&ChallengeType>, domain: &str) -> String {
    use instant_acme::Error as E;
    match err {
        E::Api(problem) => describe_problem(problem, challenge, domain),
        E::Timeout(_) => "the CA did not answer in time".into(),
        E::Other(inner) => crate::upstream::error_chain(inner.as_ref()),
        E::Json(e) => format!("the ACME server sent something that is not ACME ({e})"),
        other => other.to_string(),
    }
}

/// An RFC 8555 §6.7 problem document as the sentence a developer needs: "the CA could not
/// reach us on port 443: connection refused".
fn describe_problem(problem: &Problem, challenge: Option<&ChallengeType>, domain: &str) -> String {
    let detail = problem.detail.clone().unwrap_or_default();
    let kind = problem_kind(problem);
    let domain = if domain.is_empty() {
        "the domain"
    } else {
        domain
    };
    let default_port = match challenge {
        Some(ChallengeType::Http01) => "80",
        _ => "443",
    };
    let unreachable = unreachable(&detail, default_port);
    let mut text = match kind {
        // Some CAs (Pebble) report a failed connection as `unauthorized`: the detail tells.
        "connection" | "unauthorized" | "incorrectResponse" | "tls" if unreachable.is_some() => {
            unreachable.unwrap_or_default()
        }
        "connection" => format!("the CA could not reach us on port {default_port}: {detail}"),
        "dns" => format!(
            "the CA could not look up {domain} in DNS ({detail}): point its A/AAAA records at this machine"
        ),
        "unauthorized" | "incorrectResponse" => format!(
            "the CA reached a server for {domain} that did not give our challenge answer ({detail}): \
             does {domain} resolve to this machine, and does port {default_port} reach mcptap?"
        ),
        "tls" => format!("the CA's TLS connection for the challenge failed ({detail})"),
        "caa" => format!("the CAA records of {domain} do not allow this CA to issue ({detail})"),
        "rejectedIdentifier" => format!("the CA will not issue for {domain} ({detail})"),
        "rateLimited" => format!("the CA's rate limit was reached ({detail}); try --acme-staging while testing"),
        "invalidContact" | "unsupportedContact" => {
            format!("the CA refused the --acme-email address ({detail})")
        }
        "accountDoesNotExist" => format!(
            "the CA no longer knows the cached ACME account ({detail}); the next attempt registers a new one"
        ),
        "userActionRequired" => format!("the CA asks you to act first ({detail})"),
        "externalAccountRequired" => format!(
            "the CA requires an external account binding, which mcptap does not support ({detail})"
        ),
        "serverInternal" => format!("the CA had an internal error ({detail})"),
        "badNonce" => format!("the CA kept rejecting our replay nonces ({detail})"),
        "malformed" => format!("the CA found the request malformed ({detail})"),
        "" => format!("the CA answered: {detail}"),
        other => format!("the CA answered {other}: {detail}"),
    };
    for sub in &problem.subproblems {
        if let Some(detail) = &sub.detail {
            text.push_str("; ");
            text.push_str(detail);
        }
    }
    text
}

/// The port in a problem detail such as `127.0.0.1: Fetching http://x:5002/...` or
/// `dial tcp 127.0.0.1:5001: connect: connection refused`.
fn port_in(detail: &str) -> Option<String> {
    for token in detail.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
        let token = token.trim_end_matches(':');
        if let Ok(addr) = token.parse::<SocketAddr>() {
            return Some(addr.port().to_string());
        }
        if let Ok(uri) = token.parse::<hyper::Uri>() {
            if let (Some(_), Some(port)) = (uri.scheme(), uri.port_u16()) {
                return Some(port.to_string());
            }
        }
    }
    None
}

/// "the CA could not reach us on port 443: connection refused", when a problem's detail
/// says the CA's connection failed.
fn unreachable(detail: &str, default_port: &str) -> Option<String> {
    let lower = detail.to_ascii_lowercase();
    let causes = [
        (
            "connection refused",
            "connection refused (nothing listens there)",
        ),
        (
            "timeout",
            "the connection timed out (a firewall in the way?)",
        ),
        (
            "timed out",
            "the connection timed out (a firewall in the way?)",
        ),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
        ("connection reset", "the connection was reset"),
    ];
    let cause = causes
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map(|(_, words)| (*words).to_string());
    let failed = [
        "failed to connect",
        "could not connect",
        "dial tcp",
        "connect:",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    if cause.is_none() && !failed {
        return None;
    }
    let port = port_in(detail).unwrap_or_else(|| default_port.to_string());
    let cause = cause.unwrap_or_else(|| format!("the connection failed ({detail})"));
    Some(format!("the CA could not reach us on port {port}: {cause}"))
}

fn challenge_name(kind: &ChallengeType) -> String {
    match kind {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::DeviceAttest01 => "device-attest-01".into(),
        ChallengeType::Unknown(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// The RFC 8737 §3 challenge certificate: self-signed, the domain as its only SAN, and the
/// critical id-pe-acmeIdentifier extension holding SHA-256 of the key authorization.
fn challenge_certificate(domain: &str, digest: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    if digest.len() != 32 {
        bail!(
            "the key authorization digest has {} bytes, not 32",
            digest.len()
        );
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    // Not through `files::pair_from_pem`: webpki refuses the critical acmeIdentifier
    // extension, as any client but the CA should.
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| anyhow!("loading the challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

/// The cached certificate for `domain`, when it covers the domain and has not expired.
fn load_cached(domain: &str, cert: &Path, key: &Path) -> (Option<LoadedPair>, Cached) {
    if !cert.exists() && !key.exists() {
        return (None, Cached::Nothing);
    }
    ca::warn_if_readable_by_others(key);
    match files::load_pair(cert, key) {
        Ok(pair) if !pair.names.iter().any(|n| n == domain) => {
            (None, Cached::Unusable(format!("it does not name {domain}")))
        }
        Ok(pair) if pair.not_after.is_some_and(|t| t <= ca::unix_now()) => {
            let when = pair.not_after.unwrap_or(0);
            (None, Cached::Expired(when))
        }
        Ok(pair) => (Some(pair), Cached::Usable),
        Err(e) => (None, Cached::Unusable(format!("{e:#}"))),
    }
}

/// The HTTP client that carries all ACME traffic: HTTPS only, webpki roots plus `--acme-ca`,
/// a time limit per request, and every exchange logged at debug level.
#[derive(Clone)]
struct AcmeHttp {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector>,
        BodyWrapper<Bytes>,
    >,
}

impl AcmeHttp {
    fn new(ca_file: Option<&Path>) -> anyhow::Result<AcmeHttp> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let pem = files::read_small(path).context("reading --acme-ca")?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| anyhow!("--acme-ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow!("--acme-ca {}: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                bail!("--acme-ca {}: no PEM certificate in it", path.display());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS for the ACME client")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(AcmeHttp {
            client: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let what = format!("{} {}", req.method(), req.uri());
        let sent = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_LIMIT, sent).await {
                Ok(Ok(response)) => {
                    tracing::debug!("ACME {what} -> {}", response.status());
                    Ok(BytesResponse::from(response))
                }
                Ok(Err(e)) => {
                    let text = format!("{what}: {}", crate::upstream::error_chain(&e));
                    tracing::debug!("ACME {text}");
                    Err(instant_acme::Error::Other(text.into()))
                }
                Err(_) => Err(instant_acme::Error::Other(
                    format!("{what}: no answer within {}", human(REQUEST_LIMIT)).into(),
                )),
            }
        })
    }
}

impl TlsSetup {
    /// Serves certificates obtained from an ACME CA for `config.domains`: cached ones at
    /// once, the others once [`TlsSetup::spawn_acme`] has obtained them (until then their
    /// handshakes fail with "no certificate for X yet: ..."). The cache folder is created
    /// (0700) now, so that a folder problem is a startup error.
    pub fn acme(config: AcmeConfig) -> anyhow::Result<Arc<TlsSetup>> {
        let acme = Arc::new(Acme::load(config)?);
        let sources = acme
            .domains
            .iter()
            .map(|m| super::Source::Acme(m.clone()))
            .collect();
        Self::build(sources, None, Some(acme))
    }

    /// Starts obtaining and renewing the ACME certificates (one task per domain) and, when
    /// configured, the HTTP-01 listener; `https_port` is the TLS listener's port, for the
    /// redirects the HTTP-01 listener answers other requests with. `on_event` gets each
    /// [`AcmeEvent`]. Aborting the returned task stops all of it. Without ACME the task
    /// ends at once. Call within a Tokio runtime.
    pub async fn spawn_acme(
        self: &Arc<Self>,
        https_port: u16,
        on_event: impl Fn(AcmeEvent) + Send + Sync + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let Some(acme) = self.acme.clone() else {
            return Ok(tokio::spawn(async {}));
        };
        let sink: EventSink = Arc::new(on_event);
        if acme.events.set(sink).is_err() {
            bail!("ACME is already running for this listener");
        }
        let http_listener = match acme.config.http_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("listening on {addr} for ACME http-01 (--acme-http-listen)")
            })?),
            None => None,
        };
        let setup = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            if let Some(listener) = http_listener {
                let local = listener
                    .local_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                acme.emit(
                    ACME_HTTP01,
                    "",
                    format!(
                        "answering ACME http-01 challenges on http://{local} (other requests there are redirected to https)"
                    ),
                );
                tasks.spawn(serve_http01(acme.clone(), listener, https_port));
            }
            for managed in &acme.domains {
                tasks.spawn(
                    acme.clone()
                        .manage(managed.clone(), setup.clone(), https_port),
                );
            }
            while tasks.join_next().await.is_some() {}
        }))
    }
}

/// The plain-HTTP listener: answers `/.well-known/acme-challenge/<token>` and redirects
/// everything else to https (308, so methods and bodies are kept).
async fn serve_http01(acme: Arc<Acme>, listener: tokio::net::TcpListener, https_port: u16) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("ACME http-01 listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acme = acme.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer_http01(&acme, &req, peer, https_port);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(HTTP01_CONNECTION_LIMIT, connection).await;
        });
    }
}

fn answer_http01<B>(
    acme: &Acme,
    req: &Request<B>,
    peer: SocketAddr,
    https_port: u16,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        response
    };
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PATH) {
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "ACME challenges are fetched with GET\n".into(),
            );
        }
        return match acme.http01_answer(token) {
            Some(answer) => {
                acme.validated(&answer.domain, "http-01", Some(peer));
                text(StatusCode::OK, answer.key_authorization)
            }
            None => text(
                StatusCode::NOT_FOUND,
                "no pending ACME challenge has this token\n".into(),
            ),
        };
    }
    // Only to our own domains: the Host header must not turn this into an open redirect.
    let asked = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| host_without_port(h).to_ascii_lowercase());
    let host = asked
        .filter(|h| acme.config.domains.contains(h))
        .or_else(|| acme.config.domains.first().cloned())
        .unwrap_or_default();
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut response = text(StatusCode::PERMANENT_REDIRECT, format!("{location}\n"));
    if let Ok(value) = hyper::header::HeaderValue::from_str(&location) {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, value);
    }
    response
}

/// `example.com` from `example.com:80`; IPv6 literals keep their brackets.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Sleeps until a wall-clock time, in steps of at most an hour, so that a suspended machine
/// or a clock change is noticed.
async fn sleep_until_wall(when: SystemTime) {
    loop {
        match when.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => {
                tokio::time::sleep(left.min(Duration::from_secs(60 * 60))).await
            }
            _ => return,
        }
    }
}

/// `5 s`, `2 min`, `1 h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{} s", s.max(u64::from(d.subsec_millis() > 0 && s == 0)))
    } else if s < 60 * 60 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

fn timestamp(unix: Option<i64>) -> String {
    unix.and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or_else(
            || "?".into(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn wall(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    timestamp(Some(secs))
}

/// A poisoned lock only means a panic elsewhere while holding it; the data is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(domains: &[&str]) -> AcmeConfig {
        AcmeConfig {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            email: Some("ops@example.com".into()),
            directory: LETS_ENCRYPT.into(),
            ca_file: None,
            certs_dir: PathBuf::from("certs"),
            http_listen: None,
        }
    }

    #[test]
    fn names_are_checked_and_normalised() {
        let ok = config(&["MCP.Example.com.", "mcp.example.com", "b.example.com"])
            .checked()
            .expect("valid");
        assert_eq!(ok.domains, ["mcp.example.com", "b.example.com"]);
        for (bad, want) in [
            ("127.0.0.1", "IP address"),
            ("*.example.com", "wildcards"),
            ("localhost", "not a public domain name"),
            ("a b.com", "not a public domain name"),
        ] {
            let err = config(&[bad]).checked().expect_err(bad).to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let mut c = config(&["a.example.com"]);
        c.email = Some("nobody".into());
        assert!(c.checked().is_err());
        let mut c = config(&["a.example.com"]);
        c.directory = "http://acme.test/dir".into();
        assert!(c.checked().unwrap_err().to_string().contains("https://"));
    }

    #[test]
    fn each_ca_gets_its_own_cache_folder() {
        let mut c = config(&["a.example.com"]);
        assert_eq!(
            c.cache_dir(),
            Path::new("certs/acme/acme-v02.api.letsencrypt.org-directory")
        );
        c.directory = "https://127.0.0.1:14000/dir".into();
        assert_eq!(c.cache_dir(), Path::new("certs/acme/127.0.0.1-14000-dir"));
    }

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": 400,
        }))
        .expect("a problem document")
    }

    #[test]
    fn problems_read_as_sentences() {
        let tls = ChallengeType::TlsAlpn01;
        let http = ChallengeType::Http01;
        assert_eq!(
            describe_problem(
                &problem("connection", "Connection refused"),
                Some(&tls),
                "a.example.com"
            ),
            "the CA could not reach us on port 443: connection refused (nothing listens there)"
        );
        assert_eq!(
            describe_problem(
                &problem(
                    "connection",
                    "dial tcp 127.0.0.1:5001: connect: connection refused"
                ),
                Some(&tls),
                "a.example.com"
            ),
            "the CA could not reach us on port 5001: connection refused (nothing listens there)"
        );
        assert!(describe_problem(
            &problem(
                "connection",
                "Timeout during connect (likely firewall problem)"
            ),
            Some(&http),
            "a.example.com"
        )
        .starts_with("the CA could not reach us on port 80: the connection timed out"));
        let dns = describe_problem(
            &problem("dns", "NXDOMAIN looking up A"),
            None,
            "a.example.com",
        );
        assert!(
            dns.contains("could not look up a.example.com in DNS"),
            "{dns}"
        );
        let wrong = describe_problem(
            &problem("unauthorized", "Incorrect validation certificate"),
            Some(&tls),
            "a.example.com",
        );
        assert!(
            wrong.contains("does a.example.com resolve to this machine"),
            "{wrong}"
        );
        // Pebble's words for a port nothing listens on.
        assert_eq!(
            describe_problem(
                &problem(
                    "unauthorized",
                    "Failed to connect to 127.0.0.1:5001 for the tls-alpn-01 challenge"
                ),
                Some(&tls),
                "a.example.com"
            ),
            "the CA could not reach us on port 5001: the connection failed \
             (Failed to connect to 127.0.0.1:5001 for the tls-alpn-01 challenge)"
        );
        let other = describe_problem(&problem("somethingNew", "hm"), None, "a.example.com");
        assert_eq!(other, "the CA answered somethingNew: hm");
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
        let day = 24 * 60 * 60;
        let due = renewal_time(Some(0), Some(90 * day));
        assert_eq!(
            due,
            SystemTime::UNIX_EPOCH + Duration::from_secs(60 * day as u64)
        );
        assert_eq!(renewal_time(None, Some(5)), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn the_challenge_certificate_carries_the_acme_identifier() {
        let digest = [7u8; 32];
        let certified = challenge_certificate("a.example.com", &digest).expect("certificate");
        let (_, cert) =
            x509_parser::parse_x509_certificate(certified.cert[0].as_ref()).expect("parses");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("id-pe-acmeIdentifier");
        assert!(ext.critical);
        // An OCTET STRING of 32 bytes: tag, length, digest.
        assert_eq!(ext.value, [&[0x04, 32][..], &digest[..]].concat());
        assert!(challenge_certificate("a.example.com", &[1, 2]).is_err());
    }

    #[test]
    fn missing_certificates_say_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(&["a.example.com"]);
        c.certs_dir = dir.path().to_path_buf();
        let acme = Acme::load(c).expect("load");
        assert_eq!(
            acme.missing_reason(Some("a.example.com")).as_deref(),
            Some("no certificate for a.example.com yet: the ACME order is in progress")
        );
        acme.domains[0].set_standing(Standing::Failed {
            reason: "the CA could not reach us on port 443: connection refused".into(),
            retry_at: Instant::now() + Duration::from_secs(30),
        });
        let reason = acme
            .missing_reason(Some("A.example.com"))
            .expect("a reason");
        assert!(
            reason.starts_with(
                "no certificate for a.example.com yet: the ACME order failed: the CA could not reach us"
            ),
            "{reason}"
        );
        assert!(acme.missing_reason(Some("other.example.com")).is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(acme.cache)
                .expect("cache")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn the_http01_listener_redirects_to_our_own_domains_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(&["a.example.com", "b.example.com"]);
        c.certs_dir = dir.path().to_path_buf();
        let acme = Acme::load(c).expect("load");
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let get = |host: &str, path: &str| {
            let req = Request::get(path)
                .header("host", host)
                .body(())
                .expect("request");
            answer_http01(&acme, &req, peer, 8443)
        };
        let r = get("b.example.com:80", "/mcp?x=1");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()["location"],
            "https://b.example.com:8443/mcp?x=1"
        );
        let r = get("evil.example", "/");
        assert_eq!(r.headers()["location"], "https://a.example.com:8443/");
        assert_eq!(
            get("a.example.com", "/.well-known/acme-challenge/nope").status(),
            404
        );
        lock(&acme.http01).insert(
            "tok".into(),
            Http01 {
                domain: "a.example.com".into(),
                key_authorization: "tok.thumb".into(),
            },
        );
        assert_eq!(
            get("a.example.com", "/.well-known/acme-challenge/tok").status(),
            200
        );
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(5)), "5 s");
        assert_eq!(human(Duration::from_secs(30 * 60)), "30 min");
        assert_eq!(human(Duration::from_secs(3600)), "1 h");
        assert_eq!(human(Duration::from_secs(3 * 3600)), "3 h");
        assert_eq!(human(Duration::from_millis(300)), "1 s");
    }
}
