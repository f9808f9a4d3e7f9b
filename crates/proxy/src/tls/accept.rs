//! Accepting one TLS connection (RFC 8446, and TLS 1.2 per RFC 5246) while keeping what the
//! client offered (SNI, RFC 6066; ALPN, RFC 7301) and saying in words why a handshake failed.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{Acceptor, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, HandshakeKind, PeerIncompatible, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::resolver::Pinned;
use super::{acme, TlsSetup};
use mcptap_capture::model::TlsFacts;

/// TLS record content type of a handshake message: the first byte of every ClientHello.
const HANDSHAKE_RECORD: u8 = 0x16;

/// A fatal `unrecognized_name` alert record (RFC 6066 §3; RFC 8446 §6), sent in the clear
/// as the first server record when no certificate covers the name the client asked for.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// A fatal `no_application_protocol` alert record (RFC 7301 §3.2), for an ACME validation
/// that finds no pending challenge (RFC 8737 §4).
const NO_APPLICATION_PROTOCOL_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 120];

/// The body of the answer to plain HTTP on the TLS port.
pub const PLAIN_HTTP_BODY: &str = "This port speaks TLS: use https:// (mcptap)\n";

/// What the proxy offers in ALPN, in preference order, for error messages.
const ALPN_SERVED: &str = "h2, http/1.1";

/// A connection whose TLS handshake succeeded.
#[derive(Debug)]
pub struct Accepted {
    /// The decrypted stream, ready for HTTP (`facts.alpn` says which version).
    pub stream: TlsStream<TcpStream>,
    /// What was negotiated, for the capture.
    pub facts: TlsFacts,
}

/// A connection refused during the handshake, with what the client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The server name the client asked for, when its ClientHello got that far.
    pub sni: Option<String>,
    /// The ALPN protocols the client offered, in its order.
    pub alpn_offered: Vec<String>,
    /// Why, in a sentence for a developer (no trailing period).
    pub reason: String,
    /// The kind of failure, for code that treats some (e.g. port probes) differently.
    pub kind: RejectKind,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejected {}

/// Why a handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectKind {
    /// The client sent plain HTTP; it was answered with a 400.
    PlainHttp,
    /// The client sent something that is neither TLS nor HTTP.
    NotTls,
    /// The handshake did not finish within the time limit.
    Timeout,
    /// The client closed or reset the connection.
    ClientClosed,
    /// The client refused our certificate (a certificate alert).
    CertificateRejected,
    /// The client sent another alert.
    ClientAlert,
    /// No certificate covers the SNI name the client asked for.
    NoCertificate,
    /// No protocol version, cipher suite, key exchange group, signature scheme or ALPN
    /// protocol in common.
    NoCommonParameters,
    /// The client broke the protocol (malformed or unexpected messages).
    ProtocolError,
    /// The connection failed (an I/O error other than the client closing).
    Io,
    /// Not a client: an ACME CA validating a TLS-ALPN-01 challenge (RFC 8737), answered with
    /// the challenge certificate and closed. Nothing failed; the ACME side notes it.
    AcmeChallenge,
}

/// What the client offered, kept while the handshake runs so that a timeout can still
/// report it.
#[derive(Default)]
struct Progress {
    sni: Option<String>,
    alpn_offered: Vec<String>,
    got_bytes: bool,
    plain_http: bool,
}

fn plain_http(progress: &Progress) -> Rejected {
    progress.reject(
        RejectKind::PlainHttp,
        "client spoke plain HTTP to the TLS port",
    )
}

impl Progress {
    fn reject(&self, kind: RejectKind, reason: impl Into<String>) -> Rejected {
        Rejected {
            sni: self.sni.clone(),
            alpn_offered: self.alpn_offered.clone(),
            reason: reason.into(),
            kind,
        }
    }
}

impl TlsSetup {
    /// Runs the TLS handshake on an accepted TCP connection, within the handshake time limit
    /// (10 s unless [`TlsSetup::set_handshake_timeout`] changed it). Plain HTTP gets a 400
    /// that says to use https://. On success the facts carry the SNI and ALPN offer, the
    /// chosen ALPN protocol, version, cipher suite, key exchange group, whether the session
    /// was resumed, and the handshake time from the client's first byte.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, Rejected> {
        let limit = self.handshake_timeout();
        let deadline = Instant::now() + limit;
        let mut progress = Progress::default();
        match tokio::time::timeout_at(deadline, self.accept_within(tcp, &mut progress)).await {
            Ok(result) => result,
            Err(_elapsed) if progress.plain_http => Err(plain_http(&progress)),
            Err(_elapsed) => {
                let detail = if progress.got_bytes {
                    ""
                } else {
                    " (the client sent nothing)"
                };
                Err(progress.reject(
                    RejectKind::Timeout,
                    format!(
                        "the TLS handshake did not finish within {}{detail}",
                        seconds(limit)
                    ),
                ))
            }
        }
    }

    async fn accept_within(
        &self,
        tcp: TcpStream,
        progress: &mut Progress,
    ) -> Result<Accepted, Rejected> {
        let mut head = [0u8; 8];
        let n = tcp.peek(&mut head).await.map_err(|e| {
            progress.reject(
                RejectKind::Io,
                format!("reading from the client failed: {e}"),
            )
        })?;
        if n == 0 {
            return Err(progress.reject(
                RejectKind::ClientClosed,
                "the client closed the connection before sending anything",
            ));
        }
        progress.got_bytes = true;
        let started = Instant::now();
        let peer = tcp.peer_addr().ok();
        let head = &head[..n];
        if head[0] != HANDSHAKE_RECORD {
            if looks_like_http(head) {
                // Noted first: if the time limit cuts the answer short, the verdict stands.
                progress.plain_http = true;
                answer_plain_http(tcp).await;
                return Err(plain_http(progress));
            }
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            return Err(progress.reject(
                RejectKind::NotTls,
                format!(
                    "the client did not speak TLS (first bytes: {})",
                    hex.join(" ")
                ),
            ));
        }

        // Read the ClientHello first: its SNI picks the certificate, and its SNI and ALPN
        // offer are worth recording even when the handshake then fails.
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp)
            .await
            .map_err(|e| {
                let (kind, reason) = describe(&e, &[]);
                progress.reject(kind, reason)
            })?;
        let hello = start.client_hello();
        progress.sni = hello.server_name().map(str::to_owned);
        progress.alpn_offered = hello
            .alpn()
            .map(|offered| {
                offered
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default();

        // RFC 8737 §3: the CA offers exactly `acme-tls/1` and the name being validated.
        if let Some(acme) = &self.acme {
            if progress.alpn_offered == [acme::ACME_TLS_ALPN] {
                return Err(self
                    .answer_acme_challenge(start, progress, acme, peer)
                    .await);
            }
        }

        let certified = match self.resolver.lookup(progress.sni.as_deref()) {
            Ok(certified) => certified,
            Err(reason) => {
                // A name ACME keeps but has no certificate for yet: say where its order is.
                let reason = self
                    .acme
                    .as_ref()
                    .and_then(|acme| acme.missing_reason(progress.sni.as_deref()))
                    .unwrap_or(reason);
                // rustls would answer a missing certificate with access_denied; RFC 6066
                // names unrecognized_name for this, which clients explain better.
                let mut tcp = start.io;
                let _ = tcp.write_all(&UNRECOGNIZED_NAME_ALERT).await;
                let _ = tcp.shutdown().await;
                return Err(progress.reject(RejectKind::NoCertificate, reason));
            }
        };
        let stream = start
            .into_stream(self.connection_config(certified))
            .await
            .map_err(|e| {
                let (kind, reason) = describe(&e, &progress.alpn_offered);
                progress.reject(kind, reason)
            })?;
        let handshake_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let facts = facts(
            stream.get_ref().1,
            progress.sni.take(),
            std::mem::take(&mut progress.alpn_offered),
            handshake_us,
        );
        Ok(Accepted { stream, facts })
    }

    /// Completes a TLS-ALPN-01 validation handshake with the challenge certificate pending
    /// for the SNI name, then closes (RFC 8737 §3). Without a pending challenge the CA gets
    /// a `no_application_protocol` alert, as §4 asks.
    async fn answer_acme_challenge(
        &self,
        start: tokio_rustls::StartHandshake<TcpStream>,
        progress: &mut Progress,
        acme: &acme::Acme,
        peer: Option<std::net::SocketAddr>,
    ) -> Rejected {
        let name = progress.sni.clone().unwrap_or_default();
        let Some(challenge) = acme.tls_alpn_certificate(&name) else {
            let mut tcp = start.io;
            let _ = tcp.write_all(&NO_APPLICATION_PROTOCOL_ALERT).await;
            let _ = tcp.shutdown().await;
            let name = if name.is_empty() { "no name" } else { &name };
            return progress.reject(
                RejectKind::NoCommonParameters,
                format!(
                    "an ACME tls-alpn-01 validation for {name} arrived, but no challenge is pending \
                     for that name (a late retry from the CA, or another ACME client's order)"
                ),
            );
        };
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![acme::ACME_TLS_ALPN.as_bytes().to_vec()];
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(Pinned(challenge));
        config.cert_resolver = resolver;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        match start.into_stream(Arc::new(config)).await {
            Ok(mut stream) => {
                let _ = stream.shutdown().await;
                acme.validated(&name, "tls-alpn-01", peer);
                progress.reject(
                    RejectKind::AcmeChallenge,
                    format!("answered the ACME CA's tls-alpn-01 validation for {name}"),
                )
            }
            Err(e) => {
                let (kind, reason) = describe(&e, &progress.alpn_offered);
                progress.reject(
                    kind,
                    format!("the ACME CA's tls-alpn-01 validation for {name} failed: {reason}"),
                )
            }
        }
    }

    /// The shared config with the certificate chosen for this connection pinned in; the
    /// session cache and ticket keys stay shared, so resumption works across connections.
    fn connection_config(&self, certified: Arc<CertifiedKey>) -> Arc<ServerConfig> {
        let mut config = (*self.config).clone();
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(Pinned(certified));
        config.cert_resolver = resolver;
        Arc::new(config)
    }
}

/// The negotiated parameters of a finished handshake.
fn facts(
    conn: &ServerConnection,
    sni: Option<String>,
    alpn_offered: Vec<String>,
    handshake_us: u64,
) -> TlsFacts {
    TlsFacts {
        sni,
        alpn_offered,
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        version: conn.protocol_version().map(version_name),
        cipher: conn.negotiated_cipher_suite().map(|suite| {
            let suite = suite.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_owned)
        }),
        group: conn.negotiated_key_exchange_group().map(|group| {
            let name = group.name();
            name.as_str()
                .map_or_else(|| format!("{name:?}"), str::to_owned)
        }),
        handshake_us: Some(handshake_us),
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    }
}

/// `TLSv1.3`, `TLSv1.2`, as OpenSSL and most logs spell them.
fn version_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => other
            .as_str()
            .map_or_else(|| format!("{other:?}"), str::to_owned),
    }
}

/// ASCII letters then a space (or the end of what arrived): the start of an HTTP/1 request
/// line, or of the HTTP/2 preface `PRI * HTTP/2.0`. No TLS record starts with a letter.
fn looks_like_http(head: &[u8]) -> bool {
    let letters = head.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    letters > 0 && (letters == head.len() || head[letters] == b' ')
}

/// Answers plain HTTP with a 400 that says what to do, then closes politely.
async fn answer_plain_http(mut tcp: TcpStream) {
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    if tcp.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    // Closing a socket with unread request bytes makes the kernel send a reset, which can
    // destroy the answer before the client reads it: read what the client sends until it
    // closes, within bounds.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 1 << 20 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// A handshake error in words: (kind, reason).
fn describe(err: &io::Error, alpn_offered: &[String]) -> (RejectKind, String) {
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return describe_tls(tls, alpn_offered);
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => (
            RejectKind::ClientClosed,
            "the client closed the connection during the handshake".into(),
        ),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => (
            RejectKind::ClientClosed,
            "the client reset the connection during the handshake".into(),
        ),
        _ => (
            RejectKind::Io,
            format!("the connection failed during the handshake: {err}"),
        ),
    }
}

fn describe_tls(err: &rustls::Error, alpn_offered: &[String]) -> (RejectKind, String) {
    use rustls::Error;
    match err {
        Error::AlertReceived(alert) => {
            let name = alert_name(*alert);
            if is_certificate_alert(*alert) {
                let hint = match alert {
                    AlertDescription::UnknownCA => ": it does not trust the CA that issued it",
                    AlertDescription::CertificateExpired => {
                        ": it finds it expired or not yet valid (check both clocks)"
                    }
                    AlertDescription::BadCertificate => {
                        ": often the name it connected to is not in the certificate"
                    }
                    _ => "",
                };
                (
                    RejectKind::CertificateRejected,
                    format!("the client rejected our certificate (alert: {name}){hint}"),
                )
            } else {
                (
                    RejectKind::ClientAlert,
                    format!("the client ended the handshake (alert: {name})"),
                )
            }
        }
        Error::PeerIncompatible(why) => (RejectKind::NoCommonParameters, incompatible(why)),
        Error::NoApplicationProtocol => (
            RejectKind::NoCommonParameters,
            format!(
                "no ALPN protocol in common: the client offered {}, mcptap speaks {ALPN_SERVED}",
                if alpn_offered.is_empty() {
                    "none".to_string()
                } else {
                    alpn_offered.join(", ")
                }
            ),
        ),
        Error::InvalidMessage(what) => (
            RejectKind::ProtocolError,
            format!("the client sent a malformed TLS message ({what:?})"),
        ),
        Error::PeerMisbehaved(what) => (
            RejectKind::ProtocolError,
            format!("the client broke the TLS protocol ({what:?})"),
        ),
        Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => (
            RejectKind::ProtocolError,
            format!("the client sent an unexpected TLS message ({err})"),
        ),
        Error::DecryptError => (
            RejectKind::ProtocolError,
            "a record from the client did not decrypt (a corrupted connection or a client bug)"
                .into(),
        ),
        other => (
            RejectKind::ProtocolError,
            format!("the TLS handshake failed: {other}"),
        ),
    }
}

fn incompatible(why: &PeerIncompatible) -> String {
    use PeerIncompatible as P;
    match why {
        P::SupportedVersionsExtensionRequired
        | P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled
        | P::ServerDoesNotSupportTls12Or13 => {
            "no TLS version in common: the client offers neither TLS 1.3 nor TLS 1.2, \
             the only versions mcptap serves"
                .into()
        }
        P::NoCipherSuitesInCommon => {
            "no cipher suite in common: the client offers none of the AES-GCM and \
             ChaCha20-Poly1305 suites mcptap serves"
                .into()
        }
        P::NoKxGroupsInCommon | P::KeyShareExtensionRequired | P::NamedGroupsExtensionRequired => {
            "no key exchange group in common: the client offers none of X25519, P-256 and \
             P-384 (ECDHE), which mcptap needs"
                .into()
        }
        P::SignatureAlgorithmsExtensionRequired => {
            "no TLS version in common: the client sent no signature_algorithms extension, \
             as TLS 1.1 or older clients do; mcptap serves TLS 1.3 and 1.2"
                .into()
        }
        P::NoSignatureSchemesInCommon => {
            "no signature algorithm in common: the client accepts none our certificate's key can make"
                .into()
        }
        other => format!("the client's TLS offer is incompatible with mcptap's ({other:?})"),
    }
}

/// Alerts by which a client says it does not accept the server's certificate.
fn is_certificate_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
    )
}

/// The alert's name as RFC 8446 §6 (and RFC 6066, RFC 7301) spell it.
pub(crate) fn alert_name(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let name = match alert {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::DecryptionFailed => "decryption_failed",
        A::RecordOverflow => "record_overflow",
        A::DecompressionFailure => "decompression_failure",
        A::HandshakeFailure => "handshake_failure",
        A::NoCertificate => "no_certificate",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ExportRestriction => "export_restriction",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::CertificateUnobtainable => "certificate_unobtainable",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::BadCertificateHashValue => "bad_certificate_hash_value",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        A::EncryptedClientHelloRequired => "ech_required",
        A::Unknown(code) => return format!("unknown alert {code}"),
        #[allow(unreachable_patterns)]
        other => return format!("{other:?}"),
    };
    name.into()
}

/// `10 s`, `0.25 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_tls() {
        for yes in [
            &b"GET / HT"[..],
            b"POST /mc",
            b"OPTIONS ",
            b"PRI * HT",
            b"G",
            b"get /",
        ] {
            assert!(looks_like_http(yes), "{yes:?}");
        }
        for no in [&[0x16u8, 3, 1][..], b"GET/", b" GET", b"\x80\x2c", b"123 "] {
            assert!(!looks_like_http(no), "{no:?}");
        }
    }

    #[test]
    fn alerts_and_errors_read_as_sentences() {
        let alert = |a| describe_tls(&rustls::Error::AlertReceived(a), &[]);
        let (kind, reason) = alert(AlertDescription::UnknownCA);
        assert_eq!(kind, RejectKind::CertificateRejected);
        assert!(reason.starts_with("the client rejected our certificate (alert: unknown_ca)"));
        for a in [
            AlertDescription::BadCertificate,
            AlertDescription::UnsupportedCertificate,
            AlertDescription::CertificateRevoked,
            AlertDescription::CertificateExpired,
            AlertDescription::CertificateUnknown,
            AlertDescription::AccessDenied,
        ] {
            assert_eq!(alert(a).0, RejectKind::CertificateRejected, "{a:?}");
        }
        assert_eq!(
            alert(AlertDescription::HandshakeFailure).1,
            "the client ended the handshake (alert: handshake_failure)"
        );
        assert_eq!(
            alert_name(AlertDescription::Unknown(200)),
            "unknown alert 200"
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(
            describe(&eof, &[]).1,
            "the client closed the connection during the handshake"
        );
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
        );
        assert!(describe(&wrapped, &[])
            .1
            .starts_with("no cipher suite in common"));
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25 s");
    }
}
