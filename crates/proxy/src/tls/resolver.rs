//! Choosing the certificate for a connection from the server name the client sent (SNI,
//! RFC 6066 §3), with the first certificate as the default for clients that send none.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::files::LoadedPair;

/// How many names a "no certificate for SNI" message lists before it says "and N more".
const NAMES_IN_MESSAGES: usize = 10;

/// One served certificate and where it came from.
#[derive(Clone, Debug)]
pub(crate) struct ServedPair {
    pub(crate) pair: LoadedPair,
    /// The certificate and key files, or `None` for a certificate made in memory.
    pub(crate) files: Option<(PathBuf, PathBuf)>,
}

/// The certificates served at one moment; reloads replace the whole set at once.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) pairs: Vec<ServedPair>,
}

impl Snapshot {
    /// Every name of every certificate, first appearance first.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.pairs.iter().flat_map(|p| p.pair.names.iter()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The certificate for `sni`: the first whose leaf is valid for that name (as webpki
    /// checks it for clients: case-insensitive, `*.` wildcards over one label), or the first
    /// certificate when the client sent no name, as clients connecting to an IP address do.
    /// The error is the sentence the accept path reports.
    pub(crate) fn lookup(&self, sni: Option<&str>) -> Result<Arc<CertifiedKey>, String> {
        let Some(name) = sni else {
            return self
                .pairs
                .first()
                .map(|p| p.pair.certified.clone())
                .ok_or_else(|| "no certificate is loaded".to_string());
        };
        // RFC 6066 allows only DNS names in SNI, but an IP literal is matched against IP SANs
        // rather than refused, for clients that send one anyway.
        let subject = match DnsName::try_from(name) {
            Ok(dns) => ServerName::DnsName(dns),
            Err(_) => match name.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => {
                    return Err(format!(
                        "no certificate for SNI {name}: not a valid host name"
                    ))
                }
            },
        };
        for served in &self.pairs {
            let Some(leaf) = served.pair.certified.cert.first() else {
                continue;
            };
            let Ok(end_entity) = webpki::EndEntityCert::try_from(leaf) else {
                continue;
            };
            if end_entity
                .verify_is_valid_for_subject_name(&subject)
                .is_ok()
            {
                return Ok(served.pair.certified.clone());
            }
        }
        Err(format!(
            "no certificate for SNI {name} (have: {})",
            list_names(&self.names())
        ))
    }
}

/// `a, b, c`, cut after [`NAMES_IN_MESSAGES`] names.
pub(crate) fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        return "no names".into();
    }
    let mut text = names
        .iter()
        .take(NAMES_IN_MESSAGES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_IN_MESSAGES {
        text.push_str(&format!(" and {} more", names.len() - NAMES_IN_MESSAGES));
    }
    text
}

/// The SNI certificate resolver of [`super::TlsSetup`]: holds the current [`Snapshot`] and
/// swaps it whole on reload, so that a handshake sees either the old set or the new one.
/// Established connections keep the `Arc<CertifiedKey>` they were given and never notice.
#[derive(Debug, Default)]
pub struct SniResolver {
    current: RwLock<Arc<Snapshot>>,
}

impl SniResolver {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        SniResolver {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// The certificates served now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock only means a panic elsewhere while holding it; the Arc inside
        // is still a complete snapshot.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn replace(&self, snapshot: Snapshot) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
    }

    /// The certificate for a client that sent `sni` (see [`Snapshot::lookup`]); the error
    /// says why there is none, e.g. "no certificate for SNI x (have: a, b)".
    pub fn lookup(&self, sni: Option<&str>) -> Result<Arc<CertifiedKey>, String> {
        self.snapshot().lookup(sni)
    }
}

impl ResolvesServerCert for SniResolver {
    /// Used when the server config is driven by something other than
    /// [`super::TlsSetup::accept`] (which looks the name up itself to keep the reason).
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.lookup(client_hello.server_name()) {
            Ok(key) => Some(key),
            Err(reason) => {
                tracing::debug!("{reason}");
                None
            }
        }
    }
}

/// A resolver that answers with the one certificate `accept` already chose, so that the
/// choice and the reason reported for it cannot disagree across a concurrent reload.
#[derive(Debug)]
pub(crate) struct Pinned(pub(crate) Arc<CertifiedKey>);

impl ResolvesServerCert for Pinned {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
