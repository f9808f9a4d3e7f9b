//! The one pooled client that talks to upstreams: HTTP/1.1 or HTTP/2 as the upstream
//! offers (ALPN for https), TCP_NODELAY, and connect timing on every response.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// When the upstream connection carrying a response was opened, and how long that took.
#[derive(Debug, Clone, Copy)]
pub struct ConnectFacts {
    pub opened_at: Instant,
    pub connect_us: u64,
}

/// A connector that times each new connection and tags it with [`ConnectFacts`].
#[derive(Clone)]
pub struct TimedConnector<C> {
    inner: C,
}

impl<C> tower_service::Service<Uri> for TimedConnector<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Response: Connection,
{
    type Response = TimedStream<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let started = Instant::now();
        let fut = self.inner.call(uri);
        Box::pin(async move {
            let stream = fut.await?;
            let opened_at = Instant::now();
            Ok(TimedStream {
                inner: stream,
                facts: ConnectFacts {
                    opened_at,
                    connect_us: opened_at.duration_since(started).as_micros() as u64,
                },
            })
        })
    }
}

/// A connection stream carrying its [`ConnectFacts`].
pub struct TimedStream<S> {
    inner: S,
    facts: ConnectFacts,
}

impl<S> TimedStream<S> {
    pub fn facts(&self) -> ConnectFacts {
        self.facts
    }
}

impl<S: Connection> Connection for TimedStream<S> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.facts)
    }
}

impl<S: Read + Unpin> Read for TimedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: Write + Unpin> Write for TimedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

pub type Connector = TimedConnector<hyper_rustls::HttpsConnector<HttpConnector>>;

/// The process's upstream client, generic over the request body type.
pub type UpstreamClient<B> = Client<Connector, B>;

/// How upstream TLS is verified.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// Extra PEM CA certificates trusted besides the webpki roots (`--upstream-ca`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (`--upstream-insecure`).
    pub insecure: bool,
}

/// Builds the pooled client (for `mock` and `replay`; the proxy keeps its own connections,
/// see `pool`).
pub fn client<B>(tls: &UpstreamTls) -> anyhow::Result<UpstreamClient<B>>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector(tls)?))
}

/// Dials upstreams: TCP with TCP_NODELAY and a 10 s connect timeout, then TLS for https
/// (ALPN h2 and http/1.1), each new connection timed.
pub fn connector(tls: &UpstreamTls) -> anyhow::Result<Connector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(tls)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(TimedConnector { inner: https })
}

fn tls_config(tls: &UpstreamTls) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up upstream TLS")?;
    let mut config = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &tls.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --upstream-ca {}", path.display()))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("adding a CA from {}", path.display()))?;
                added += 1;
            }
            anyhow::ensure!(added > 0, "no PEM certificate found in {}", path.display());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // ALPN (h2, http/1.1) is set by the connector builder from enable_http1/enable_http2.
    config.alpn_protocols.clear();
    Ok(config)
}

/// `--upstream-insecure`: the user asked to skip certificate checks (recorded in the session line).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The upstream URL for a request: the upstream's origin and path prefix, then the
/// request's path and query. The request's own authority is never used (no open proxy).
pub fn upstream_uri(base: &Uri, path_and_query: &str) -> anyhow::Result<Uri> {
    let prefix = base.path().trim_end_matches('/');
    let mut pq = String::with_capacity(prefix.len() + path_and_query.len() + 1);
    pq.push_str(prefix);
    if !path_and_query.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(path_and_query);
    // From parts: the base's scheme and authority are already parsed, so only the path is.
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(base.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP));
    parts.authority = Some(
        base.authority()
            .cloned()
            .context("the upstream URL has no host")?,
    );
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq)?);
    Ok(Uri::from_parts(parts)?)
}

/// An error and its causes in one line ("client error (Connect): tcp connect error: Connection refused").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_joins_prefix_and_ignores_client_authority() {
        let base: Uri = "http://127.0.0.1:8000/base/".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, "/mcp?x=1").unwrap().to_string(),
            "http://127.0.0.1:8000/base/mcp?x=1"
        );
        let base: Uri = "https://up.example".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, "/mcp").unwrap().to_string(),
            "https://up.example/mcp"
        );
    }
}
