//! Reachability as a hosted connector meets it from the network outside: the name resolved
//! (A and AAAA), a TCP connection to the port, the TLS handshake verified against the webpki
//! roots (and `--ca`), each timed and each failure in words.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::capture::model::TlsFacts;

/// A duration in words for a message: `10 s`, `0.5 s`.
pub fn seconds_words(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// What kind of network an address is on, as a connector in the cloud sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrKind {
    Public,
    /// 127.0.0.0/8, ::1: only this machine reaches it.
    Loopback,
    /// RFC 1918, RFC 4193 (fc00::/7): a private network.
    Private,
    /// RFC 6598 100.64.0.0/10: carrier-grade NAT, not reachable from the internet.
    Cgnat,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 0.0.0.0, ::, multicast, documentation and other ranges nothing routes to.
    Unroutable,
}

impl AddrKind {
    pub fn of(ip: IpAddr) -> AddrKind {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                if v4.is_loopback() {
                    AddrKind::Loopback
                } else if v4.is_private() {
                    AddrKind::Private
                } else if a == 100 && (64..128).contains(&b) {
                    AddrKind::Cgnat
                } else if v4.is_link_local() {
                    AddrKind::LinkLocal
                } else if v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_documentation()
                {
                    AddrKind::Unroutable
                } else {
                    AddrKind::Public
                }
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return AddrKind::of(IpAddr::V4(v4));
                }
                let first = v6.segments()[0];
                if v6.is_loopback() {
                    AddrKind::Loopback
                } else if first & 0xfe00 == 0xfc00 {
                    AddrKind::Private
                } else if first & 0xffc0 == 0xfe80 {
                    AddrKind::LinkLocal
                } else if v6.is_unspecified() || v6.is_multicast() {
                    AddrKind::Unroutable
                } else {
                    AddrKind::Public
                }
            }
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            AddrKind::Public => "a public address",
            AddrKind::Loopback => "a loopback address",
            AddrKind::Private => "a private-network address",
            AddrKind::Cgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            AddrKind::LinkLocal => "a link-local address",
            AddrKind::Unroutable => "an address nothing routes to",
        }
    }
}

/// Where a failure happened on the way to an HTTP exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Dns,
    Tcp,
    Tls,
}

/// A failure to reach a host, in words.
#[derive(Debug, Clone)]
pub struct NetError {
    pub layer: Layer,
    pub message: String,
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A byte stream to a server, TLS or not.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open connection and what was learned opening it.
pub struct Conn {
    pub io: Pin<Box<dyn Io>>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub tls: Option<TlsFacts>,
    /// The server's certificate chain, leaf first (TLS only).
    pub chain: Vec<CertificateDer<'static>>,
    pub tcp_time: Duration,
}

impl Conn {
    pub fn h2(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.alpn.as_deref() == Some("h2"))
    }
}

/// Opens connections the way the connector would, remembering what names resolved to.
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
    resolved: Mutex<HashMap<String, Vec<IpAddr>>>,
    pub connect_timeout: Duration,
}

impl Connector {
    /// Trusts the webpki roots and every certificate in `ca_files`.
    pub fn new(ca_files: &[PathBuf], connect_timeout: Duration) -> anyhow::Result<Connector> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in ca_files {
            let pem =
                std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.with_context(|| format!("parsing --ca {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("adding the CA in {}", path.display()))?;
                added += 1;
            }
            anyhow::ensure!(
                added > 0,
                "--ca {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Connector {
            tls: Arc::new(config),
            resolved: Mutex::new(HashMap::new()),
            connect_timeout,
        })
    }

    /// A (lookup) of `host`: the addresses, A and AAAA, in the resolver's order.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, NetError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(ips) = self.lock().get(host) {
            return Ok(ips.clone());
        }
        let found = tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((bare, 0)))
            .await
            .map_err(|_| NetError {
                layer: Layer::Dns,
                message: format!(
                    "resolving {host} took longer than {}",
                    seconds_words(self.connect_timeout)
                ),
            })?
            .map_err(|e| NetError {
                layer: Layer::Dns,
                message: format!("{host} does not resolve: {e}"),
            })?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for addr in found {
            if !ips.contains(&addr.ip()) {
                ips.push(addr.ip());
            }
        }
        if ips.is_empty() {
            return Err(NetError {
                layer: Layer::Dns,
                message: format!("{host} has no A or AAAA record"),
            });
        }
        self.lock().insert(host.to_string(), ips.clone());
        Ok(ips)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<IpAddr>>> {
        self.resolved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects to the first address that accepts, IPv4 first (what an IPv4-only connector
    /// would do).
    pub async fn tcp(
        &self,
        ips: &[IpAddr],
        port: u16,
    ) -> Result<(TcpStream, SocketAddr, Duration), NetError> {
        let mut order: Vec<IpAddr> = ips.iter().copied().filter(IpAddr::is_ipv4).collect();
        order.extend(ips.iter().copied().filter(IpAddr::is_ipv6));
        let mut errors = Vec::new();
        for ip in order {
            let addr = SocketAddr::new(ip, port);
            let started = Instant::now();
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr, started.elapsed()));
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {}", tcp_words(&e))),
                Err(_) => errors.push(format!(
                    "{addr}: no answer within {} (a firewall dropping packets, or nothing routes there)",
                    seconds_words(self.connect_timeout)
                )),
            }
        }
        Err(NetError {
            layer: Layer::Tcp,
            message: format!("TCP connect failed: {}", errors.join("; ")),
        })
    }

    /// The TLS handshake for `host` over `tcp`.
    pub async fn tls(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> Result<
        (
            tokio_rustls::client::TlsStream<TcpStream>,
            TlsFacts,
            Vec<CertificateDer<'static>>,
        ),
        NetError,
    > {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string()).map_err(|_| NetError {
            layer: Layer::Tls,
            message: format!("{host} is not a name TLS can verify"),
        })?;
        let started = Instant::now();
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let stream = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| NetError {
                layer: Layer::Tls,
                message: format!(
                    "the server accepted the connection but did not finish the TLS handshake within {}: check that this port serves TLS (a stalled TLS terminator stays silent)",
                    seconds_words(self.connect_timeout)
                ),
            })?
            .map_err(|e| NetError {
                layer: Layer::Tls,
                message: tls_words(&e, host),
            })?;
        let (_, conn) = stream.get_ref();
        let facts = TlsFacts {
            sni: bare.parse::<IpAddr>().is_err().then(|| bare.to_string()),
            alpn_offered: vec!["h2".into(), "http/1.1".into()],
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                other => format!("{other:?}"),
            }),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
            group: conn
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name())),
            handshake_us: Some(started.elapsed().as_micros() as u64),
            resumed: false,
        };
        let chain = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        Ok((stream, facts, chain))
    }

    /// DNS (cached), TCP and, for https, TLS: a connection ready for HTTP.
    pub async fn open(&self, https: bool, host: &str, port: u16) -> Result<Conn, NetError> {
        let ips = self.resolve(host).await?;
        let (tcp, remote, tcp_time) = self.tcp(&ips, port).await?;
        let local = tcp.local_addr().unwrap_or(remote);
        if !https {
            return Ok(Conn {
                io: Box::pin(tcp),
                local,
                remote,
                tls: None,
                chain: Vec::new(),
                tcp_time,
            });
        }
        let (stream, facts, chain) = self.tls(tcp, host).await?;
        Ok(Conn {
            io: Box::pin(stream),
            local,
            remote,
            tls: Some(facts),
            chain,
            tcp_time,
        })
    }
}

fn tcp_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port, or a firewall rejects it)".into()
        }
        ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// A failed handshake in words, with what to do.
fn tls_words(e: &std::io::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("the TLS handshake failed: {e}");
    };
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => "the certificate chain does not lead to a trusted root (unknown issuer): serve the full chain (fullchain.pem, not cert.pem) from a public CA, or pass --ca for a private one".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the certificate is not valid for {host}: get one whose subjectAltName lists {host}"
            ),
            C::Expired | C::ExpiredContext { .. } => "the certificate has expired: renew it (connectors refuse expired certificates)".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "the certificate is not valid yet (check the server's clock)".into(),
            C::Revoked => "the certificate is revoked".into(),
            C::BadSignature => "the certificate's signature does not verify".into(),
            other => format!("the certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => format!(
            "the server ended the handshake with alert {alert:?} (it may not serve {host}, or need a TLS version or cipher connectors do not offer)"
        ),
        rustls::Error::NoApplicationProtocol => "the server accepts neither h2 nor http/1.1 (ALPN)".into(),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer with TLS: is it plain HTTP on this port? (use http://, or put TLS in front)".into()
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// Days until the leaf certificate expires (negative once expired), and the names it covers.
pub fn leaf_validity(chain: &[CertificateDer<'_>]) -> Option<(i64, Vec<String>)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => names.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(((not_after - now).div_euclid(86_400), names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_kinds_are_named() {
        let k = |s: &str| AddrKind::of(s.parse().unwrap());
        assert_eq!(k("127.0.0.1"), AddrKind::Loopback);
        assert_eq!(k("::1"), AddrKind::Loopback);
        assert_eq!(k("10.1.2.3"), AddrKind::Private);
        assert_eq!(k("192.168.0.10"), AddrKind::Private);
        assert_eq!(k("172.20.0.1"), AddrKind::Private);
        assert_eq!(k("100.64.0.1"), AddrKind::Cgnat);
        assert_eq!(k("100.127.255.255"), AddrKind::Cgnat);
        assert_eq!(k("100.128.0.1"), AddrKind::Public);
        assert_eq!(k("169.254.1.1"), AddrKind::LinkLocal);
        assert_eq!(k("fd00::1"), AddrKind::Private);
        assert_eq!(k("fe80::1"), AddrKind::LinkLocal);
        assert_eq!(k("::ffff:10.0.0.1"), AddrKind::Private);
        assert_eq!(k("93.184.215.14"), AddrKind::Public);
        assert_eq!(
            k("2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
            AddrKind::Public
        );
    }
}
