//! Command-line flags (definitions only) and their validation into configurations.

use std::path::PathBuf;
use std::time::Duration;

use crate::args::{parse_size, resolve_listen};
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::capture::writer::OnFull;
use crate::proxy::upstream::UpstreamTls;
use crate::proxy::{CaptureTarget, ListenTls, ProxyConfig, RouteSpec};

/// See exactly what an MCP client does to your remote MCP server.
///
/// mcptap is a recording reverse proxy for remote MCP (Model Context Protocol) servers and
/// their OAuth endpoints. Put it in front of your server, point the connector at it, and
/// every request, response, body frame and server-sent event is written to a JSONL capture.
#[derive(Debug, Parser)]
#[command(name = "mcptap", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Forward to an upstream MCP server and record every exchange.
    #[command(after_help = PROXY_EXAMPLES)]
    Proxy(ProxyArgs),
    /// The whole story in one command: a built-in MCP server with OAuth behind the proxy, a
    /// connector-like client walking the flow against a correct server and a faulty one,
    /// and what `mcptap explain` says about the failing session.
    Demo(crate::demo::DemoArgs),
    /// Manage the local certificate authority for TLS on your own machine.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Read a capture the way an MCP and OAuth expert would: the protocol era (2026-07-28 or
    /// 2025), the stages reached, where the client went silent, which tokens were issued and
    /// presented, which rules were broken.
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(ExplainArgs),
    /// Compare two captures exchange by exchange: aligned side by side, noise (dates, ids,
    /// tokens, ports) suppressed, the first meaningful divergence first.
    Diff(crate::diff::DiffArgs),
    /// Re-send the client requests of a capture to a server and record the new session;
    /// OAuth flows are re-run live, redacted secrets are filled in or reported.
    Replay(crate::replay::ReplayArgs),
    /// Serve the recorded responses of a capture to a client, SSE timing included.
    Mock(crate::mock::MockArgs),
    /// Render a capture as one self-contained HTML page: a sequence diagram of the session,
    /// the stages, where the client went silent, the findings, every exchange on click.
    Report(crate::report::ReportArgs),
    /// Export a capture as an HTTP Archive (HAR 1.2) or as one curl command per request.
    Export(crate::export::ExportArgs),
    /// The connection doctor: walk a hosted connector's path to an MCP server from outside
    /// (DNS, TCP, TLS, the 401, metadata discovery, registration, and with --login or --token
    /// the MCP session), judge each answer with explain's checks, and record it all.
    Probe(crate::probe::ProbeArgs),
}

const EXPLAIN_EXAMPLES: &str = "\
Examples:
  mcptap explain captures/20261126T224832Z-3e9b4017.jsonl
  mcptap explain capture.jsonl --json | jq '.findings[] | select(.severity==\"error\")'
  mcptap explain capture.jsonl --flow 2      a flow other than the one chosen
  mcptap explain capture.jsonl --all         every flow in full

A capture with several clients (retries, reconnects, other users, scanners) is split into
client flows by token lineage, client id, Mcp-Session-Id, connection, and address with
User-Agent and time (docs/explain.md, \"Flows\"). explain lists them, one line each, then explains
the latest that went silent or failed (else the latest), saying why it chose it. Requests that
belong to no MCP flow are counted as other traffic.

Exit status: 0 when the capture was read (whatever it shows; with --exit-code, 1 when a
finding of severity error was reported), 2 when it could not be read.";

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the local CA (once) and a certificate it signs for the given names, and say how
    /// to make clients trust the CA.
    #[command(
        after_help = "Example:\n  mcptap certs init --host localhost --host mcp.test\n  mcptap proxy --upstream http://127.0.0.1:8000 --cert certs/localhost.pem --key certs/localhost-key.pem"
    )]
    Init(CertsInitArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// A DNS name or IP address the certificate covers (repeatable; default localhost,
    /// 127.0.0.1 and ::1).
    #[arg(long, value_name = "NAME")]
    pub host: Vec<String>,

    /// Where the CA and the certificates go (the CA key is written 0600).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The capture file (JSONL) written by `mcptap proxy`.
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,

    /// Print one JSON object (era, negotiation, stages, silence, tokens, round_trips, findings)
    /// instead of the report.
    #[arg(long)]
    pub json: bool,

    /// Exit with status 1 when an error-severity finding is reported (in the flows shown).
    #[arg(long)]
    pub exit_code: bool,

    /// Explain client flow N (numbered from 1 in the flow table) instead of the one chosen.
    /// With --json: that flow's explanation alone.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub flow: Option<usize>,

    /// Explain every client flow in full, one after another.
    #[arg(long)]
    pub all: bool,
}

const PROXY_EXAMPLES: &str = "\
Examples:
  mcptap proxy --upstream http://127.0.0.1:8000
      listen on 127.0.0.1:8080, capture to captures/<time>-<id>.jsonl
  mcptap proxy --upstream https://mcp.internal:8443 --upstream-ca ca.pem --listen 0.0.0.0:8080
  mcptap proxy --upstream http://127.0.0.1:8000 --capture /dev/null --quiet

Without --cert, --self-signed or --acme the proxy speaks plain HTTP on --listen (HTTP/1.1 and
HTTP/2 prior knowledge), for use behind another TLS terminator. With them it serves TLS 1.2/1.3
with ALPN h2 and http/1.1, and records every handshake, failed ones included.

  mcptap proxy --upstream http://127.0.0.1:8000 --listen 0.0.0.0:443 \\
      --cert /etc/letsencrypt/live/mcp.example.com/fullchain.pem \\
      --key /etc/letsencrypt/live/mcp.example.com/privkey.pem
  mcptap proxy --upstream http://127.0.0.1:8000 --self-signed --host mcp.test
  mcptap proxy --upstream http://127.0.0.1:8000 --listen 0.0.0.0:443 \\
      --acme mcp.example.com --acme-email ops@example.com --acme-http-listen 0.0.0.0:80

SIGHUP re-reads the certificate files (they are also watched for changes). Stop it with Ctrl-C (SIGINT) or SIGTERM: exchanges in
flight get --grace seconds to finish, then the capture is closed with a session_end line.";

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The MCP server to forward to (http:// or https://, with an optional path prefix).
    #[arg(long, value_name = "URL", required_unless_present = "route")]
    pub upstream: Option<String>,

    /// Address to listen on for --upstream (port 0 picks a free port; the chosen one is
    /// printed) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", requires = "upstream")]
    pub listen: Option<String>,

    /// One more listener and the upstream it forwards to, e.g.
    /// `127.0.0.1:9001=http://127.0.0.1:9000` (repeatable): one process fronts several
    /// origins (an MCP server and its authorization server) and writes one capture, each
    /// exchange labelled with its route. TLS options apply to every listener.
    #[arg(long, value_name = "LISTEN=UPSTREAM")]
    pub route: Vec<String>,

    /// Rewrite each upstream's origin to the proxy's in response headers (Location,
    /// WWW-Authenticate, Link, Content-Location, Access-Control-Allow-Origin) and in JSON,
    /// form and event-stream bodies, and back in requests, so that a client that starts at
    /// the proxy stays at the proxy. Off by default: recording is faithful. Each rewrite is
    /// a note in the capture.
    #[arg(long)]
    pub rewrite_origins: bool,

    /// Serve TLS with this certificate file (PEM, full chain, leaf first: certbot's
    /// fullchain.pem). Repeat with --key for several names; the client's SNI picks one.
    /// Files are re-read when they change, and on SIGHUP.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Vec<PathBuf>,

    /// The private key for the --cert at the same position (PEM: PKCS#8, PKCS#1 or SEC1;
    /// RSA, ECDSA or Ed25519).
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Vec<PathBuf>,

    /// Serve TLS with a certificate from the local CA under --certs-dir (created if needed),
    /// for the listen address, localhost and every --host.
    #[arg(long, conflicts_with = "cert")]
    pub self_signed: bool,

    /// A name the --self-signed certificate also covers (repeatable).
    #[arg(long, value_name = "NAME", requires = "self_signed")]
    pub host: Vec<String>,

    /// Folder of the local CA (see `mcptap certs init`), and of ACME accounts and
    /// certificates (under acme/).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub certs_dir: PathBuf,

    /// Serve TLS with a certificate for this domain that mcptap obtains from an ACME CA
    /// (Let's Encrypt unless --acme-directory) and renews by itself (repeatable). The
    /// domain's DNS must point here, and the CA must reach --listen on port 443 (tls-alpn-01)
    /// or --acme-http-listen on port 80 (http-01). Using it accepts the CA's terms of service.
    #[arg(long, value_name = "DOMAIN", conflicts_with_all = ["cert", "self_signed"])]
    pub acme: Vec<String>,

    /// Contact address for the ACME account.
    #[arg(long, value_name = "EMAIL", requires = "acme")]
    pub acme_email: Option<String>,

    /// The ACME directory URL [default: Let's Encrypt production].
    #[arg(
        long,
        value_name = "URL",
        requires = "acme",
        conflicts_with = "acme_staging"
    )]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, for trying things out).
    #[arg(long, requires = "acme")]
    pub acme_staging: bool,

    /// Also trust the CA certificates in this PEM file for the ACME server's HTTPS (a private
    /// ACME server such as Pebble).
    #[arg(long, value_name = "PEM", requires = "acme")]
    pub acme_ca: Option<PathBuf>,

    /// Also answer ACME http-01 challenges on this plain-HTTP address (usually 0.0.0.0:80);
    /// every other request there is redirected to https.
    #[arg(long, value_name = "ADDR", requires = "acme")]
    pub acme_http_listen: Option<String>,

    /// Write the capture to this file (never overwritten; /dev/null records nothing).
    #[arg(long, value_name = "FILE", conflicts_with = "captures_dir")]
    pub capture: Option<PathBuf>,

    /// Folder for captures named <UTC time>-<id>.jsonl.
    #[arg(long, value_name = "DIR", default_value = "captures")]
    pub captures_dir: PathBuf,

    /// Go on in a new file when the capture file reaches this size: capture.jsonl, then
    /// capture.1.jsonl, capture.2.jsonl… Every reading command reads the parts as one
    /// capture (name the first file, or their folder). Accepts a KiB/MiB/GiB suffix.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub rotate_size: Option<u64>,

    /// Go on in a new file after this long in one (90s, 30m, 6h, 1d), as --rotate-size does.
    #[arg(long, value_name = "DURATION", value_parser = crate::args::parse_duration)]
    pub rotate_every: Option<Duration>,

    /// Record at most this much of each message body (forwarded whole regardless).
    /// Accepts plain bytes or a KiB/MiB/GiB suffix.
    #[arg(long, value_name = "BYTES", default_value = "10MiB", value_parser = parse_size)]
    pub max_body: u64,

    /// When the capture queue is full: `wait` slows the traffic and loses nothing;
    /// `drop` keeps the traffic fast and records how many events were dropped.
    #[arg(long, value_enum, default_value = "wait")]
    pub on_full: OnFullArg,

    /// Record secrets (Authorization, cookies, OAuth tokens and codes) in clear text.
    #[arg(long)]
    pub no_redact: bool,

    /// Send the client's Host header upstream instead of the upstream's authority.
    #[arg(long)]
    pub preserve_host: bool,

    /// Also trust the CA certificates in this PEM file for an https upstream.
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Option<PathBuf>,

    /// Do not verify the upstream's TLS certificate (recorded in the capture).
    #[arg(long)]
    pub upstream_insecure: bool,

    /// Seconds to wait for the upstream's response headers before answering 504 (0: no limit).
    /// Streams that have started are never timed out.
    #[arg(long, value_name = "SECONDS", default_value = "60")]
    pub upstream_timeout: f64,

    /// Seconds that exchanges in flight get to finish after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value = "5")]
    pub grace: f64,

    /// Seconds a client may take to send its request headers before the connection is
    /// closed (slowloris protection; 0: no limit).
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    pub header_timeout: f64,

    /// Largest request head (request line and headers) accepted; larger is answered 431.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_size)]
    pub max_header_bytes: u64,

    /// Serve every exchange through the general HTTP stack. By default a plain HTTP/1.1
    /// exchange (whole request in hand, no upgrade, an HTTP/1.1 upstream) is forwarded as
    /// bytes on a fast path that records the same events; this turns it off, for
    /// comparison or if the fast path misbehaves.
    #[arg(long)]
    pub no_fast_path: bool,

    /// Open client connections at most; more are refused (503 on plain HTTP) and counted
    /// in the capture.
    #[arg(long, value_name = "N", default_value = "10000")]
    pub max_connections: usize,

    /// Print no line per exchange (the silence notice is still printed).
    #[arg(long, short)]
    pub quiet: bool,

    /// Print a notice (with the explain summary) when a token was issued and no request with
    /// a Bearer token followed within this many seconds (0: never).
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    pub silence_after: f64,

    /// Body bytes that may wait between the data path and the capture writer before
    /// --on-full applies.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub queue_bytes: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnFullArg {
    Wait,
    Drop,
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Option<Duration>> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{flag} must be a number of seconds ≥ 0, not {v}");
    }
    Ok((v > 0.0).then(|| Duration::from_secs_f64(v)))
}

/// An upstream URL from `flag`: http(s), a host, no credentials, no query.
fn upstream_url(flag: &str, text: &str) -> anyhow::Result<hyper::Uri> {
    let upstream: hyper::Uri = text
        .parse()
        .with_context(|| format!("{flag} '{text}' is not a URL"))?;
    match upstream.scheme_str() {
        Some("http") | Some("https") => {}
        _ => bail!("{flag} '{text}' must start with http:// or https://"),
    }
    if upstream.host().is_none() {
        bail!("{flag} '{text}' has no host");
    }
    if upstream
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        bail!(
            "{flag} '{text}' has user:password in it; mcptap does not turn that into a header (and would record it): send credentials from the client instead"
        );
    }
    if upstream.query().is_some() {
        bail!("{flag} '{text}' must not have a query string");
    }
    Ok(upstream)
}

/// `--route LISTEN=UPSTREAM`.
fn parse_route(text: &str) -> anyhow::Result<RouteSpec> {
    let Some((listen, upstream)) = text.split_once('=') else {
        bail!(
            "--route '{text}' must be LISTEN=UPSTREAM, e.g. 127.0.0.1:9001=http://127.0.0.1:9000"
        );
    };
    let listen = resolve_listen(listen.trim()).with_context(|| format!("in --route '{text}'"))?;
    let upstream = upstream_url("--route", upstream.trim())?;
    Ok(RouteSpec { listen, upstream })
}

impl ProxyArgs {
    /// Checks the flags and derives the proxy configuration.
    pub fn validate(&self) -> anyhow::Result<ProxyConfig> {
        let mut routes = Vec::new();
        if let Some(upstream) = &self.upstream {
            routes.push(RouteSpec {
                listen: resolve_listen(self.listen.as_deref().unwrap_or("127.0.0.1:8080"))?,
                upstream: upstream_url("--upstream", upstream)?,
            });
        }
        for route in &self.route {
            routes.push(parse_route(route)?);
        }
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i]
                .iter()
                .find(|b| b.listen == a.listen && a.listen.port() != 0)
            {
                bail!(
                    "two routes listen on {}: one forwards to {}, the other to {}; give each its own address",
                    a.listen,
                    b.upstream,
                    a.upstream
                );
            }
        }
        let mut routes = routes.into_iter();
        let Some(first) = routes.next() else {
            bail!("give --upstream URL or at least one --route LISTEN=UPSTREAM");
        };
        let extra_routes: Vec<RouteSpec> = routes.collect();
        let listen = first.listen;
        if let Some(ca) = &self.upstream_ca {
            if !ca.is_file() {
                bail!("--upstream-ca {}: no such file", ca.display());
            }
        }
        if self.cert.len() != self.key.len() {
            bail!(
                "--cert and --key come in pairs: got {} certificates and {} keys",
                self.cert.len(),
                self.key.len()
            );
        }
        let tls = if !self.cert.is_empty() {
            ListenTls::Files(
                self.cert
                    .iter()
                    .cloned()
                    .zip(self.key.iter().cloned())
                    .collect(),
            )
        } else if self.self_signed {
            let mut names = vec!["localhost".to_string()];
            for ip in std::iter::once(listen.ip()).chain(extra_routes.iter().map(|r| r.listen.ip()))
            {
                let name = if ip.is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    ip.to_string()
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            for host in &self.host {
                if !names.contains(host) {
                    names.push(host.clone());
                }
            }
            ListenTls::SelfSigned {
                certs_dir: self.certs_dir.clone(),
                names,
            }
        } else if !self.acme.is_empty() {
            let directory = match (&self.acme_directory, self.acme_staging) {
                (Some(url), _) => url.clone(),
                (None, true) => crate::tls::acme::LETS_ENCRYPT_STAGING.into(),
                (None, false) => crate::tls::acme::LETS_ENCRYPT.into(),
            };
            let http_listen = match &self.acme_http_listen {
                Some(addr) => Some(addr.parse().with_context(|| {
                    format!("--acme-http-listen '{addr}' is not an address like 0.0.0.0:80")
                })?),
                None => None,
            };
            let config = crate::tls::AcmeConfig {
                domains: self.acme.clone(),
                email: self.acme_email.clone(),
                directory,
                ca_file: self.acme_ca.clone(),
                certs_dir: self.certs_dir.clone(),
                http_listen,
            };
            ListenTls::Acme(config.checked()?)
        } else {
            ListenTls::Off
        };
        Ok(ProxyConfig {
            listen,
            tls,
            upstream: first.upstream,
            extra_routes,
            rewrite_origins: self.rewrite_origins,
            capture: match &self.capture {
                Some(file) => CaptureTarget::File(file.clone()),
                None => CaptureTarget::Dir(self.captures_dir.clone()),
            },
            max_body: self.max_body,
            rotate_size: self.rotate_size,
            rotate_every: self.rotate_every,
            on_full: match self.on_full {
                OnFullArg::Wait => OnFull::Wait,
                OnFullArg::Drop => OnFull::Drop,
            },
            queue_bytes: self.queue_bytes.clamp(64 << 10, u32::MAX as u64) as u32,
            redact: !self.no_redact,
            preserve_host: self.preserve_host,
            upstream_tls: UpstreamTls {
                ca_file: self.upstream_ca.clone(),
                insecure: self.upstream_insecure,
            },
            upstream_timeout: seconds("upstream-timeout", self.upstream_timeout)?,
            grace: seconds("grace", self.grace)?.unwrap_or(Duration::ZERO),
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            max_header_bytes: self.max_header_bytes.clamp(8192, 16 << 20) as usize,
            fast_path: !self.no_fast_path,
            max_connections: self.max_connections.max(1),
        })
    }

    /// The terminal's live lines and silence watchdog, as observers of the session.
    pub fn terminal(&self) -> anyhow::Result<crate::capture::Observers> {
        let silence_after = seconds("silence-after", self.silence_after)?;
        Ok(crate::terminal::observers(!self.quiet, silence_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_must_be_http_with_a_host() {
        let args = |u: &str| match Cli::parse_from(["mcptap", "proxy", "--upstream", u]).command {
            Command::Proxy(a) => a,
            other => panic!("parsed as {other:?}"),
        };
        assert!(args("ftp://x")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http://"));
        assert_eq!(
            args("http://127.0.0.1:9/base")
                .validate()
                .unwrap()
                .upstream
                .path(),
            "/base"
        );
        let err = args("http://u:p@127.0.0.1:9").validate().unwrap_err();
        assert!(err.to_string().contains("user:password"));
    }

    #[test]
    fn routes_come_after_the_upstream_in_order() {
        let parse = |argv: &[&str]| {
            let mut all = vec!["mcptap", "proxy"];
            all.extend(argv);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Proxy(a)) => a.validate(),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(anyhow::anyhow!("{e}")),
            }
        };
        let config = parse(&[
            "--upstream",
            "http://127.0.0.1:9000/base",
            "--listen",
            "127.0.0.1:0",
            "--route",
            "127.0.0.1:0 = https://auth.example:8443",
        ])
        .unwrap();
        let routes = config.routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].upstream.path(), "/base");
        assert_eq!(routes[1].upstream.authority().unwrap(), "auth.example:8443");
        // Only routes: the first is the first --route, and --listen's default does not apply.
        let config = parse(&[
            "--route",
            "127.0.0.1:7001=http://127.0.0.1:9001",
            "--route",
            "127.0.0.1:7002=http://127.0.0.1:9002",
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(
            config.extra_routes[0].listen,
            "127.0.0.1:7002".parse().unwrap()
        );
        for bad in [
            &["--route", "http://127.0.0.1:9001"][..],
            &["--route", "127.0.0.1:7001=http://u:p@127.0.0.1:9001"],
            &["--route", "127.0.0.1:7001=http://127.0.0.1:9001/?q=1"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn acme_flags_make_an_acme_configuration() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["mcptap", "proxy", "--upstream", "http://127.0.0.1:9"];
            argv.extend(extra);
            Cli::try_parse_from(argv)
        };
        let flags = [
            "--acme",
            "MCP.example.com",
            "--acme-staging",
            "--acme-http-listen",
            "0.0.0.0:80",
        ];
        let Command::Proxy(args) = parse(&flags).unwrap().command else {
            panic!("not a proxy command");
        };
        match args.validate().unwrap().tls {
            ListenTls::Acme(acme) => {
                assert_eq!(acme.domains, ["mcp.example.com"]);
                assert_eq!(acme.directory, crate::tls::acme::LETS_ENCRYPT_STAGING);
                assert_eq!(acme.http_listen, Some("0.0.0.0:80".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        let cert = ["--cert", "c.pem", "--key", "k.pem"];
        assert!(parse(&[&["--acme", "a.example.com"][..], &cert].concat()).is_err());
        assert!(parse(&["--acme-email", "ops@example.com"]).is_err());
    }
}
