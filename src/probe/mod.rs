//! `mcptap probe URL`: the connection doctor. It walks the path a hosted connector takes to a
//! remote MCP server, from the network outside — DNS, TCP, TLS, the unauthenticated
//! initialize and its 401, protected-resource and authorization-server discovery in the
//! order the MCP specification gives, registration, and with `--login` or `--token` the MCP
//! session itself — records every exchange as a normal capture, and judges each response
//! with the same checks as `mcptap explain` (the capture is read back and explained; each
//! finding is shown at the step whose exchange it concerns).

pub mod checklist;
pub mod http;
pub mod login;
pub mod net;
pub mod profile;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::header::{HeaderName, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use ::http::Method;
use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::capture::file::CaptureTarget;
use crate::capture::model;
use crate::capture::reader::Capture;
use crate::mcp::oauth::{insert_well_known, origin_of};
// `own`: a finding of the probe's own (reachability and flow), in the shape explain's have.
use crate::mcp::checks::{self, auth::challenge_params, finding as own, Severity};
use crate::mcp::era::{is_modern_error, META_PROTOCOL_VERSION, MODERN_VERSIONS};
use crate::mcp::jsonrpc::Message;
use crate::mcp::session::Session;
use crate::proxy::record::standalone::{self as recording, Recording, RecordingSetup};
use crate::proxy::upstream::UpstreamTls;
use checklist::{Checklist, Step};
use http::{Http, Outgoing, Until};
use net::{AddrKind, Connector};
use profile::{Profile, ProfileName};

const PROBE_EXAMPLES: &str = "\
Examples:
  mcptap probe https://mcp.example.com/mcp
      reachability and discovery, no account needed, nothing created on the server
  mcptap probe https://mcp.example.com/mcp --register
      also registers a client (RFC 7591): that creates a client on the server
  mcptap probe https://mcp.example.com/mcp --login
      also logs in through your browser and opens an MCP session (initialize,
      notifications/initialized, GET stream, tools/list) with the token
  mcptap probe https://mcp.example.com/mcp --token \"$TOKEN\"
      skips OAuth: the MCP session with a token you already have
  mcptap probe https://localhost:8443/mcp --ca certs/ca.pem --as claude --json

Every exchange is recorded as a capture (captures/<time>-<id>.jsonl unless --capture), so
`mcptap explain`, `diff` and `report` work on it; secrets are redacted unless --no-redact.
A loopback address (127.0.0.1, ::1) is a warning, not an error: the probe works against a
local server, but a hosted connector cannot reach it. Private and CGNAT addresses are errors.

Every step has a deadline (DNS, TCP and TLS: --timeout up to 10 s each; HTTP: --timeout;
initialize: --init-timeout; the browser: --login-timeout) and says in words when it passed.
Secrets go only over https (or to this machine): the token only to the MCP URL.

Exit status: 0 when nothing at error severity was found, 1 when something was, 2 when the
probe could not run (bad flags, unwritable capture).";

/// Flags of `mcptap probe`.
#[derive(Debug, Args)]
#[command(after_help = PROBE_EXAMPLES)]
pub struct ProbeArgs {
    /// The MCP endpoint URL, as a user would paste it into the connector (https://…/mcp).
    #[arg(value_name = "URL")]
    pub url: String,

    /// Also trust the CA certificates in this PEM file (repeatable), e.g. certs/ca.pem
    /// from `mcptap certs init`.
    #[arg(long, value_name = "PEM")]
    pub ca: Vec<PathBuf>,

    /// Behave like this connector: `generic` (the MCP specification, strictly) or `claude`
    /// (Claude's documented habits; see docs/probe.md).
    #[arg(
        long = "as",
        value_enum,
        default_value = "generic",
        value_name = "PROFILE"
    )]
    pub profile: ProfileName,

    /// Register a client with dynamic client registration (this creates a client on the
    /// server).
    #[arg(long)]
    pub register: bool,

    /// Complete the OAuth flow as a desktop client does: a redirect listener on 127.0.0.1,
    /// the authorize URL printed (and opened with --open), the code exchanged with PKCE and
    /// `resource`, then the MCP session with the token. Registers a client (like --register)
    /// unless --client-id is given.
    #[arg(long, conflicts_with = "token")]
    pub login: bool,

    /// A pre-registered client id to log in with (instead of dynamic registration).
    #[arg(long, value_name = "ID", requires = "login")]
    pub client_id: Option<String>,

    /// Open the authorize URL in the default browser (xdg-open / open).
    #[arg(long, requires = "login")]
    pub open: bool,

    /// Port of the login redirect listener on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "PORT", default_value = "0", requires = "login")]
    pub callback_port: u16,

    /// Seconds to wait for the browser to come back with the code.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "300",
        requires = "login"
    )]
    pub login_timeout: f64,

    /// An access token: skip OAuth and probe the MCP session with it. Prefer MCPTAP_TOKEN:
    /// a flag is visible to other users of the machine (ps).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Seconds the connector gives initialize to answer.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub init_timeout: f64,

    /// Seconds for any other request (connection, headers and body).
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    pub timeout: f64,

    /// Send this User-Agent instead of the profile's.
    #[arg(long, value_name = "UA")]
    pub user_agent: Option<String>,

    /// Print one JSON object (steps, findings, capture) instead of the checklist.
    #[arg(long)]
    pub json: bool,

    /// Write the capture to this file (never overwritten).
    #[arg(long, value_name = "FILE", conflicts_with = "captures_dir")]
    pub capture: Option<PathBuf>,

    /// Folder for captures named <UTC time>-<id>.jsonl.
    #[arg(long, value_name = "DIR", default_value = "captures")]
    pub captures_dir: PathBuf,

    /// Record secrets (tokens, codes, client secrets) in clear text.
    #[arg(long)]
    pub no_redact: bool,
}

/// The validated flags.
struct Config {
    url: String,
    https: bool,
    host: String,
    port: u16,
    ca: Vec<PathBuf>,
    profile: Profile,
    register: bool,
    login: bool,
    client_id: Option<String>,
    open: bool,
    callback_port: u16,
    login_timeout: Duration,
    token: Option<String>,
    init_timeout: Duration,
    timeout: Duration,
    json: bool,
    capture: CaptureTarget,
    redact: bool,
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v <= 0.0 {
        bail!("--{flag} must be a number of seconds > 0, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

impl ProbeArgs {
    fn validate(&self) -> anyhow::Result<Config> {
        let url = self.url.trim().to_string();
        if url.contains('#') {
            bail!("{url}: a URL with a #fragment is not an MCP endpoint");
        }
        let uri: ::http::Uri = url.parse().with_context(|| {
            format!("'{url}' is not a URL (example: https://mcp.example.com/mcp)")
        })?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            bail!(
                "{url}: user:password in the URL is not how MCP authorizes; use --token or --login"
            );
        }
        if let Some(port) = uri
            .authority()
            .and_then(|a| http::port_text(a.as_str()))
            .filter(|p| !p.is_empty())
        {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                bail!("{url}: port {port} is not a TCP port (1 to 65535)");
            }
        }
        let Some((https, host, port, _)) = http::parts(&url) else {
            bail!(
                "'{url}' must start with https:// (or http:// for a local server) and name a host"
            );
        };
        for ca in &self.ca {
            if !ca.is_file() {
                bail!("--ca {}: no such file", ca.display());
            }
        }
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("MCPTAP_TOKEN").ok().filter(|t| !t.is_empty()));
        if token.is_some() && self.login {
            bail!("--login and a token (--token or MCPTAP_TOKEN) exclude each other");
        }
        if let Some(token) = &token {
            if token.trim().is_empty() || token.contains(char::is_whitespace) {
                bail!("--token must be the bare access token (no spaces, no \"Bearer \")");
            }
        }
        let capture = match &self.capture {
            Some(file) => {
                if std::fs::metadata(file).is_ok_and(|m| !m.is_file()) {
                    bail!(
                        "--capture {}: the probe reads its capture back to explain it, so it must be a regular file",
                        file.display()
                    );
                }
                CaptureTarget::File(file.clone())
            }
            None => CaptureTarget::Dir(self.captures_dir.clone()),
        };
        let mut profile = Profile::new(self.profile);
        if let Some(ua) = &self.user_agent {
            profile.user_agent = ua.clone();
        }
        Ok(Config {
            url,
            https,
            host,
            port,
            ca: self.ca.clone(),
            profile,
            register: self.register,
            login: self.login,
            client_id: self.client_id.clone(),
            open: self.open,
            callback_port: self.callback_port,
            login_timeout: seconds("login-timeout", self.login_timeout)?,
            token,
            init_timeout: seconds("init-timeout", self.init_timeout)?,
            timeout: seconds("timeout", self.timeout)?,
            json: self.json,
            capture,
            redact: !self.no_redact,
        })
    }
}

/// Runs `mcptap probe`.
pub fn run(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let config = args.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(probe(&config));
    // A name lookup that outlived its deadline runs on a blocking thread; dropping the
    // runtime would wait for it, so the probe would hang after saying it gave up.
    runtime.shutdown_background();
    let report = report?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", checklist::render(&report, color));
    }
    Ok(if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

const MAX_BODY: u64 = 10 << 20;

const SPEC_REACH: &str =
    "MCP 2025-06-18 Authorization §Communication Security (HTTPS); hosted connectors connect from the public internet";
const SPEC_FLOW: &str = "MCP 2025-06-18 / 2025-11-25 Authorization §Authorization Flow Steps";
const SPEC_LIFECYCLE: &str =
    "MCP 2025-06-18 Lifecycle §Initialization; Transports §Streamable HTTP";

async fn probe(config: &Config) -> anyhow::Result<Checklist> {
    let connector = Connector::new(&config.ca, config.timeout.min(Duration::from_secs(10)))?;
    let recording = Recording::start(RecordingSetup {
        target: config.capture.clone(),
        route: model::Route {
            listen: model::LISTEN_PROBE.into(),
            upstream: config.url.clone(),
        },
        options: recording::options(
            MAX_BODY,
            Some(config.timeout),
            &UpstreamTls {
                ca_file: config.ca.first().cloned(),
                insecure: false,
            },
        ),
        redact: config.redact,
    })?;
    let path = recording.path.clone();
    let http = Arc::new(Http {
        connector,
        shared: recording.shared.clone(),
        user_agent: config.profile.user_agent.clone(),
    });
    let mut walk = Walk {
        config,
        http,
        recording: &recording,
        steps: Vec::new(),
    };
    walk.run().await;
    let mut steps = walk.steps;
    recording.finish(true).await?;

    // Judge every recorded response with explain's checks, at the step that made it (the
    // latest step that looked at it: the 401 belongs to `challenge` more than to `reach`).
    let capture = Capture::open(&path)
        .with_context(|| format!("reading back the capture {}", path.display()))?;
    let session = Session::analyze(&capture);
    let mut leftovers = Vec::new();
    for finding in checks::run(&session) {
        let step = finding
            .exchange
            .and_then(|ex| steps.iter_mut().rev().find(|s| s.exchanges.contains(&ex)));
        match step {
            Some(step) => step.findings.push(finding),
            None => leftovers.push(finding),
        }
    }
    if !leftovers.is_empty() {
        let mut step = Step::new("session");
        step.summary = "findings about the session as a whole".into();
        step.findings = leftovers;
        steps.push(step);
    }
    for step in &mut steps {
        step.settle();
    }
    let mut report = Checklist {
        url: config.url.clone(),
        profile: config.profile.name,
        capture: path.display().to_string(),
        steps,
        errors: 0,
        warnings: 0,
    };
    report.count();
    Ok(report)
}

/// What discovery learned, for the steps after it.
#[derive(Default)]
struct Learned {
    challenge_scope: Option<String>,
    resource_metadata_url: Option<String>,
    prm: Option<Value>,
    issuer: Option<String>,
    asm: Option<Value>,
    client_id: Option<String>,
    token: Option<String>,
    session_id: Option<String>,
    protocol_version: Option<String>,
    /// The server answered the unauthenticated initialize: no authorization needed.
    open_server: bool,
    /// The unauthenticated `server/discover` met the authorization gate: ask again with the
    /// token before initialize.
    discover_needs_token: bool,
}

struct Walk<'a> {
    config: &'a Config,
    http: Arc<Http>,
    recording: &'a Recording,
    steps: Vec<Step>,
}

/// Milliseconds of a duration.
fn ms(d: Duration) -> Option<f64> {
    Some(d.as_secs_f64() * 1000.0)
}

fn initialize_body(id: u64, version: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "mcptap-probe", "version": env!("CARGO_PKG_VERSION")}
        }
    })
}

impl Walk<'_> {
    fn push(&mut self, step: Step) -> bool {
        let ok = !step.failed;
        self.steps.push(step);
        ok
    }

    fn skip_rest(&mut self, ids: &[&'static str], why: &str) {
        for id in ids {
            self.steps.push(Step::skipped(id, why));
        }
    }

    fn mcp_post(&self, body: &Value) -> Outgoing {
        Outgoing {
            method: Method::POST,
            url: self.config.url.clone(),
            headers: Vec::new(),
            body: Vec::new(),
        }
        .json(Method::POST, body)
        .header(ACCEPT, "application/json, text/event-stream")
    }

    async fn run(&mut self) {
        if !self.reachability().await {
            self.skip_rest(
                &[
                    "reach",
                    "challenge",
                    "resource_metadata",
                    "auth_server_metadata",
                    "registration",
                    "initialize",
                ],
                "not reached",
            );
            return;
        }
        let mut learned = Learned::default();
        if let Some(token) = self.config.token.clone() {
            learned.token = Some(token);
            self.discover(&mut learned).await;
            self.mcp_session(&mut learned).await;
            return;
        }
        if !self.reach(&mut learned).await {
            return;
        }
        self.discover(&mut learned).await;
        if learned.open_server {
            self.mcp_session(&mut learned).await;
            return;
        }
        let prm_ok = self.resource_metadata(&mut learned).await;
        if !prm_ok {
            self.skip_rest(
                &["auth_server_metadata", "registration"],
                "no protected-resource metadata, so no authorization server to ask",
            );
            return;
        }
        if !self.auth_server_metadata(&mut learned).await {
            self.skip_rest(&["registration"], "no authorization-server metadata");
            return;
        }
        if self.config.login {
            self.login(&mut learned).await;
            if learned.token.is_some() {
                self.mcp_session(&mut learned).await;
            }
        } else {
            self.registration(&mut learned, None).await;
            self.skip_rest(
                &["authorize", "token", "initialize"],
                "not tried: --login logs in through the browser, --token uses a token you have",
            );
        }
    }

    /// DNS, TCP and TLS: each a step, each failure in words.
    async fn reachability(&mut self) -> bool {
        let config = self.config;
        let http = self.http.clone();
        // DNS
        let mut dns = Step::new("dns");
        let started = Instant::now();
        let ips = match http.connector.resolve(&config.host).await {
            Ok(ips) => ips,
            Err(e) => {
                dns.failed = true;
                dns.summary = e.message.clone();
                dns.findings.push(own(
                    "dns-resolve",
                    SPEC_REACH,
                    Severity::Error,
                    None,
                    format!(
                        "{}: publish an A (and AAAA) record for {} that points at the server.",
                        e.message, config.host
                    ),
                    vec![],
                ));
                self.push(dns);
                self.skip_rest(&["tcp", "tls"], "the name did not resolve");
                return false;
            }
        };
        dns.took_ms = ms(started.elapsed());
        let literal = config
            .host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok();
        dns.summary = ips
            .iter()
            .map(|ip| format!("{ip} ({})", if ip.is_ipv4() { "A" } else { "AAAA" }))
            .collect::<Vec<_>>()
            .join(", ");
        if literal {
            dns.summary.push_str(" (an IP address: no DNS lookup)");
        }
        for ip in &ips {
            let kind = AddrKind::of(*ip);
            match kind {
                AddrKind::Public => {}
                AddrKind::Loopback => dns.findings.push(own(
                    "dns-address",
                    SPEC_REACH,
                    Severity::Warning,
                    None,
                    format!("{}{ip} is {}: fine for a local test, but a hosted connector connects from the internet and cannot reach it. Probe the public URL before adding the connector.", if literal { String::new() } else { format!("{} resolves to ", config.host) }, kind.words()),
                    vec![format!("{ip}: {}", kind.words())],
                )),
                _ => dns.findings.push(own(
                    "dns-address",
                    SPEC_REACH,
                    Severity::Error,
                    None,
                    format!("{} resolves to {ip}, {}: a hosted connector connects from the public internet and cannot reach it. Publish a public address (or a tunnel) for the name.", config.host, kind.words()),
                    vec![format!("{ip}: {}", kind.words())],
                )),
            }
        }
        if ips.iter().all(|ip| ip.is_ipv6()) {
            let what = if literal {
                format!("The URL names the IPv6 address {}", config.host)
            } else {
                format!("{} has only AAAA records", config.host)
            };
            dns.findings.push(own(
                "dns-ipv6-only",
                SPEC_REACH,
                Severity::Warning,
                None,
                format!(
                    "{what}: a connector on an IPv4-only network cannot connect. Add an A record."
                ),
                vec![],
            ));
        }
        self.recording.note(
            "probe_dns",
            format!("{} resolved to {}", config.host, dns.summary),
        );
        self.push(dns);

        // TCP
        let mut tcp = Step::new("tcp");
        let (stream, addr, took) = match http.connector.tcp(&ips, config.port).await {
            Ok(ok) => ok,
            Err(e) => {
                tcp.failed = true;
                tcp.summary = e.message.clone();
                tcp.findings.push(own(
                    "tcp-connect",
                    SPEC_REACH,
                    Severity::Error,
                    None,
                    format!("{}. Check that the server listens on port {} on a public interface and that the firewall admits it.", e.message, config.port),
                    vec![],
                ));
                self.push(tcp);
                self.skip_rest(&["tls"], "no TCP connection");
                return false;
            }
        };
        tcp.took_ms = ms(took);
        tcp.summary = format!("connected to {addr}");
        if config.https && config.port != 443 {
            tcp.findings.push(own(
                "tcp-port",
                SPEC_REACH,
                Severity::Warning,
                None,
                format!("The URL uses port {}, not 443: corporate networks and some connectors only reach 443. Serve the MCP endpoint on 443 if you can.", config.port),
                vec![format!("port: {}", config.port)],
            ));
        }
        self.recording.note(
            "probe_tcp",
            format!(
                "connected to {addr} in {:.1} ms",
                took.as_secs_f64() * 1000.0
            ),
        );
        self.push(tcp);

        // TLS
        let mut tls = Step::new("tls");
        if !config.https {
            let loopback = ips.iter().all(|ip| AddrKind::of(*ip) == AddrKind::Loopback);
            tls.summary = "plain http:// (no TLS)".into();
            tls.findings.push(own(
                "tls-required",
                SPEC_REACH,
                if loopback { Severity::Warning } else { Severity::Error },
                None,
                "The URL is plain http://: connectors require https:// (MCP authorization and OAuth 2.1 demand TLS). Serve it over TLS (mcptap proxy --acme can).",
                vec![format!("url: {}", config.url)],
            ));
            self.push(tls);
            return true;
        }
        match http.connector.tls(stream, &config.host).await {
            Err(e) => {
                tls.failed = true;
                tls.summary = e.message.clone();
                tls.findings.push(own(
                    "tls-handshake",
                    SPEC_REACH,
                    Severity::Error,
                    None,
                    e.message.clone(),
                    vec![],
                ));
                self.push(tls);
                false
            }
            Ok((_, facts, chain)) => {
                tls.took_ms = facts.handshake_us.map(|us| us as f64 / 1000.0);
                let mut parts = vec![facts.version.clone().unwrap_or_else(|| "TLS".into())];
                parts.push(match &facts.alpn {
                    Some(p) => format!("ALPN {p}"),
                    None => "no ALPN (HTTP/1.1)".into(),
                });
                if let Some((days, names)) = net::leaf_validity(&chain) {
                    parts.push(format!(
                        "certificate for {} valid {days} more days",
                        names.join(", ")
                    ));
                    if days < 14 {
                        tls.findings.push(own(
                            "tls-expiry",
                            SPEC_REACH,
                            Severity::Warning,
                            None,
                            format!("The certificate expires in {days} days: renew it before connectors start refusing it."),
                            vec![format!("days left: {days}")],
                        ));
                    }
                }
                parts.push(format!(
                    "chain verified ({} certificate{})",
                    chain.len(),
                    if chain.len() == 1 { "" } else { "s" }
                ));
                tls.summary = parts.join(", ");
                self.recording.note("probe_tls", tls.summary.clone());
                self.push(tls);
                true
            }
        }
    }

    /// `server/discover`, the opening of a 2026-07-28 connector (with the token when there is
    /// one): whether the server speaks 2026-07-28, or refuses it the way a 2025-only server
    /// must for the connector to fall back to initialize (`reach` and `initialize` show
    /// whether that works). Asked again with the token when the first answer was the
    /// authorization gate; the step then holds both exchanges. Whatever else the answer is,
    /// explain's era checks judge it at this step.
    async fn discover(&mut self, learned: &mut Learned) {
        let config = self.config;
        let id = 1;
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "server/discover",
            "params": {"_meta": {
                META_PROTOCOL_VERSION: MODERN_VERSIONS[0],
                "io.modelcontextprotocol/clientInfo": {"name": "mcptap-probe", "version": env!("CARGO_PKG_VERSION")},
                "io.modelcontextprotocol/clientCapabilities": {}
            }}
        });
        let mut out = self
            .mcp_post(&body)
            .header(
                HeaderName::from_static("mcp-protocol-version"),
                MODERN_VERSIONS[0].to_string(),
            )
            .header(
                HeaderName::from_static("mcp-method"),
                "server/discover".to_string(),
            );
        let with_token = learned.token.is_some() && may_carry_secrets(&config.url);
        if with_token {
            if let Some(token) = &learned.token {
                out = out.header(AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        let answer = self.http.send(out, config.timeout, Until::Answer(id)).await;
        let mut step = Step::new("discover");
        // The earlier, unauthenticated attempt stays on the record of this step.
        if let Some(i) = self.steps.iter().position(|s| s.id == "discover") {
            step.exchanges = self.steps.remove(i).exchanges;
        }
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        let head = format!(
            "POST {} server/discover{} → {} #{}",
            path_of(&config.url),
            if with_token { " with the token" } else { "" },
            answer.status_words(),
            answer.ex
        );
        let error = answer
            .json()
            .and_then(|j| j.get("error").cloned())
            .map(|e| {
                (
                    e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            });
        step.summary = match (answer.status, answer.rpc_answer(id), error) {
            (Some(401 | 403), _, _) if !with_token => {
                learned.discover_needs_token = true;
                format!("{head}: authorization first; the era is asked again with the token")
            }
            (Some(401 | 403), _, _) => {
                step.failed = true;
                format!("{head}: the token was refused")
            }
            (Some(200), Some(Message::Result { result, .. }), _)
                if result.get("supportedVersions").is_some() =>
            {
                format!(
                    "{head}: speaks 2026-07-28 (supportedVersions {})",
                    result["supportedVersions"]
                )
            }
            (Some(status @ 400..=499), _, Some((code, message)))
                if !is_modern_error(status, code) =>
            {
                format!(
                    "{head}: does not speak 2026-07-28 (JSON-RPC error {code} \"{message}\"); a 2026-07-28 connector falls back to initialize"
                )
            }
            _ => {
                step.failed = true;
                format!("{head}: neither a DiscoverResult nor a refusal a 2026-07-28 connector can fall back on")
            }
        };
        self.push(step);
    }

    /// The unauthenticated initialize, as a connector sends it first.
    async fn reach(&mut self, learned: &mut Learned) -> bool {
        let config = self.config;
        let body = initialize_body(1, config.profile.protocol_version);
        let answer = self
            .http
            .send(
                self.mcp_post(&body),
                config.init_timeout.max(config.timeout),
                Until::Answer(1),
            )
            .await;
        let mut step = Step::new("reach");
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        step.summary = format!(
            "POST {} initialize → {} #{}",
            path_of(&config.url),
            answer.status_words(),
            answer.ex
        );
        match answer.status {
            Some(401) => {
                self.push(step);
                let mut challenge = Step::new("challenge");
                challenge.exchanges.push(answer.ex);
                match answer.challenge() {
                    Some(value) => {
                        challenge.summary = format!("WWW-Authenticate: {value}");
                        let params = challenge_params(&value);
                        let get =
                            |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        learned.challenge_scope = get("scope");
                        learned.resource_metadata_url = get("resource_metadata");
                    }
                    None => {
                        challenge.summary =
                            "401 without WWW-Authenticate: trying the well-known URLs".into();
                    }
                }
                self.push(challenge);
                true
            }
            Some(200)
                if answer
                    .rpc_answer(1)
                    .is_some_and(|m| matches!(m, Message::Result { .. })) =>
            {
                step.summary
                    .push_str(": the server asks for no authorization");
                learned.open_server = true;
                if let Some(Message::Result { result, .. }) = answer.rpc_answer(1) {
                    learned.protocol_version = result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                learned.session_id = answer.header("mcp-session-id").map(str::to_string);
                self.push(step);
                self.skip_rest(
                    &[
                        "challenge",
                        "resource_metadata",
                        "auth_server_metadata",
                        "registration",
                    ],
                    "no authorization required",
                );
                true
            }
            _ => {
                step.failed = true;
                let what = match (&answer.net, answer.status) {
                    (Some(net), _) => format!("got no answer ({net})"),
                    (None, Some(s)) => format!(
                        "answered {s}{}",
                        answer
                            .media_type()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ),
                    (None, None) => format!(
                        "got no answer ({})",
                        answer.error.as_deref().unwrap_or("the connection closed")
                    ),
                };
                step.findings.push(own(
                    "reach-initialize",
                    SPEC_FLOW,
                    Severity::Error,
                    Some(answer.ex),
                    format!("The unauthenticated POST initialize {what}: a connector expects 401 with WWW-Authenticate (authorization required) or 200 with the InitializeResult, and stops here."),
                    vec![format!("status: {}", answer.status_words())],
                ));
                self.push(step);
                self.skip_rest(
                    &[
                        "challenge",
                        "resource_metadata",
                        "auth_server_metadata",
                        "registration",
                        "initialize",
                    ],
                    "the MCP endpoint did not answer as an MCP server",
                );
                false
            }
        }
    }

    /// RFC 9728: the URL from the challenge, then the path-suffixed and root well-known URLs.
    async fn resource_metadata(&mut self, learned: &mut Learned) -> bool {
        let config = self.config;
        let urls = resource_metadata_urls(&config.url, learned.resource_metadata_url.as_deref());
        let mut step = Step::new("resource_metadata");
        let started = Instant::now();
        let mut tried = Vec::new();
        // The challenge's URL, when it did not serve the metadata: (exchange, what it answered).
        let mut challenge_miss: Option<(u64, String)> = None;
        for url in urls {
            if tried.contains(&url) {
                continue;
            }
            let from_challenge = learned.resource_metadata_url.as_deref() == Some(url.as_str());
            let answer = self
                .http
                .send(
                    Outgoing::get(&url).header(ACCEPT, "application/json"),
                    config.timeout,
                    Until::End,
                )
                .await;
            step.exchanges.push(answer.ex);
            tried.push(url.clone());
            if let (Some(200), Some(doc @ Value::Object(_))) = (answer.status, answer.json()) {
                step.summary = format!(
                    "GET {} → 200 #{}: resource {}, authorization_servers {}",
                    path_of(&url),
                    answer.ex,
                    doc.get("resource").unwrap_or(&Value::Null),
                    doc.get("authorization_servers").unwrap_or(&Value::Null)
                );
                learned.prm = Some(doc);
                break;
            }
            if from_challenge {
                challenge_miss = Some((answer.ex, answer.status_words()));
            }
            step.summary = format!(
                "GET {} → {} #{}",
                path_of(&url),
                answer.status_words(),
                answer.ex
            );
        }
        step.took_ms = ms(started.elapsed());
        // A client uses the challenge's URL when there is one and does not guess further
        // (MCP 2025-11-25 §Protected Resource Metadata Discovery; RFC 9728 §5.1): metadata
        // found only at a well-known URI is not found by a connector. (Found nowhere, explain's
        // prm-fetch-ok says so for each URL.)
        if let (Some((ex, status)), Some(url), Some(_)) = (
            &challenge_miss,
            &learned.resource_metadata_url,
            &learned.prm,
        ) {
            let found_at = tried.last().map(String::as_str).unwrap_or("");
            step.findings.push(own(
                "prm-challenge-url",
                "MCP Authorization (2025-11-25) §Protected Resource Metadata Discovery Requirements; RFC 9728 §5.1",
                Severity::Error,
                Some(*ex),
                format!("The 401's resource_metadata URL {url} answered {status}: a client uses that URL and does not fall back to the well-known URIs, so it stops here. The metadata is served at {found_at}: name that URL in the challenge."),
                vec![format!("resource_metadata: {url}"), format!("status: {status}")],
            ));
        }
        let issuer = learned
            .prm
            .as_ref()
            .and_then(|d| d.get("authorization_servers"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string);
        if learned.prm.is_none() {
            step.failed = true;
            step.summary = format!(
                "no metadata at {}",
                tried
                    .iter()
                    .map(|u| path_of(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else if issuer.is_none() {
            step.failed = true;
        }
        learned.issuer = issuer;
        self.push(step)
    }

    /// RFC 8414 with path insertion, then OpenID Connect discovery, in the 2025-11-25 order.
    async fn auth_server_metadata(&mut self, learned: &mut Learned) -> bool {
        let config = self.config;
        let Some(issuer) = learned.issuer.clone() else {
            return false;
        };
        let urls = auth_server_metadata_urls(&issuer);
        let mut step = Step::new("auth_server_metadata");
        let started = Instant::now();
        for url in &urls {
            let answer = self
                .http
                .send(
                    Outgoing::get(url).header(ACCEPT, "application/json"),
                    config.timeout,
                    Until::End,
                )
                .await;
            step.exchanges.push(answer.ex);
            if let (Some(200), Some(doc @ Value::Object(_))) = (answer.status, answer.json()) {
                step.summary = format!(
                    "GET {} → 200 #{}: issuer {}, code_challenge_methods_supported {}",
                    url,
                    answer.ex,
                    doc.get("issuer").unwrap_or(&Value::Null),
                    doc.get("code_challenge_methods_supported")
                        .unwrap_or(&Value::Null)
                );
                learned.asm = Some(doc);
                break;
            }
            step.summary = format!("GET {url} → {} #{}", answer.status_words(), answer.ex);
        }
        step.took_ms = ms(started.elapsed());
        if urls.is_empty() {
            step.failed = true;
            step.summary = format!("the authorization server {issuer:?} is not an https URL");
            step.findings.push(own(
                "as-metadata-found",
                "RFC 8414 §2 (issuer); RFC 9728 §2 (authorization_servers)",
                Severity::Error,
                None,
                format!("The protected-resource metadata names the authorization server {issuer:?}, which is not an absolute https URL: a client cannot build a metadata URL from it. List the issuer URL, e.g. \"https://auth.example.com\"."),
                vec![format!("authorization_servers[0]: {issuer:?}")],
            ));
        } else if learned.asm.is_none() {
            step.failed = true;
            step.findings.push(own(
                "as-metadata-found",
                "RFC 8414 §3; OpenID Connect Discovery 1.0 §4; MCP Authorization (2025-11-25) §Authorization Server Metadata Discovery",
                Severity::Error,
                step.exchanges.last().copied(),
                format!("No authorization-server metadata for issuer {issuer} at any URL a client tries ({}). Serve RFC 8414 metadata at the first of them.", urls.join(", ")),
                urls.iter().map(|u| format!("tried: {u}")).collect(),
            ));
        }
        self.push(step)
    }

    /// What registration the server offers; registers with `--register` (or `--login`).
    async fn registration(&mut self, learned: &mut Learned, redirect_uri: Option<&str>) -> bool {
        let config = self.config;
        let Some(asm) = learned.asm.clone() else {
            return false;
        };
        let mut step = Step::new("registration");
        let endpoint = asm
            .get("registration_endpoint")
            .and_then(Value::as_str)
            .map(str::to_string);
        let cimd = asm
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut offered = Vec::new();
        if let Some(e) = &endpoint {
            offered.push(format!("dynamic registration at {e}"));
        }
        if cimd {
            offered.push("client ID metadata documents".into());
        }
        offered.push("pre-registered clients (not discoverable)".into());
        step.summary = format!("offers {}", offered.join(", "));
        if let Some(client_id) = &config.client_id {
            learned.client_id = Some(client_id.clone());
            step.summary
                .push_str(&format!("; using --client-id {client_id}"));
            return self.push(step);
        }
        let registering = config.register || config.login;
        let Some(endpoint) = endpoint.filter(|_| registering) else {
            if registering {
                step.failed = true;
                step.findings.push(own(
                    "registration-offered",
                    "MCP Authorization §Client Registration; RFC 7591 §3",
                    Severity::Error,
                    None,
                    "The authorization server offers no registration_endpoint: pass a pre-registered --client-id, or enable dynamic client registration.",
                    vec!["registration_endpoint = (absent)".into()],
                ));
            } else {
                step.summary.push_str(
                    " · not registering: --register does (it creates a client on the server)",
                );
            }
            return self.push(step);
        };
        let redirect = redirect_uri
            .map(str::to_string)
            .or(config.profile.redirect_uri.map(str::to_string))
            .unwrap_or_else(|| "http://127.0.0.1/callback".into());
        let body = json!({
            "client_name": "mcptap probe",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        let answer = self
            .http
            .send(
                Outgoing::get(&endpoint)
                    .json(Method::POST, &body)
                    .header(ACCEPT, "application/json"),
                config.timeout,
                Until::End,
            )
            .await;
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        let client_id = answer.json().and_then(|d| {
            d.get("client_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        match &client_id {
            Some(id) if answer.status.is_some_and(|s| (200..300).contains(&s)) => {
                step.summary = format!(
                    "POST {} → {} #{}: client_id {id} (redirect_uri {redirect})",
                    path_of(&endpoint),
                    answer.status_words(),
                    answer.ex
                );
            }
            _ => {
                step.failed = true;
                step.summary = format!(
                    "POST {} → {} #{}",
                    path_of(&endpoint),
                    answer.status_words(),
                    answer.ex
                );
            }
        }
        learned.client_id = client_id;
        self.push(step)
    }

    /// `--login`: registration, the browser's authorize leg, the token exchange.
    async fn login(&mut self, learned: &mut Learned) {
        let config = self.config;
        let callback = match login::Callback::bind(config.callback_port).await {
            Ok(c) => c,
            Err(e) => {
                self.steps.push(Step::skipped(
                    "registration",
                    "no redirect listener, so no redirect URI to register",
                ));
                let mut step = Step::new("authorize");
                step.failed = true;
                step.summary = format!(
                    "{e:#} (another program holds the port? try another --callback-port, or 0)"
                );
                self.push(step);
                self.skip_rest(&["token", "initialize"], "no authorization code");
                return;
            }
        };
        let redirect_uri = callback.redirect_uri();
        if !self.registration(learned, Some(&redirect_uri)).await {
            self.skip_rest(
                &["authorize", "token", "initialize"],
                "no client id to log in with",
            );
            return;
        }
        let (Some(asm), Some(client_id)) = (learned.asm.clone(), learned.client_id.clone()) else {
            return;
        };
        let mut step = Step::new("authorize");
        let Some(authorize) = asm.get("authorization_endpoint").and_then(Value::as_str) else {
            step.failed = true;
            step.summary = "the metadata names no authorization_endpoint".into();
            self.push(step);
            self.skip_rest(&["token", "initialize"], "no authorization code");
            return;
        };
        // The URL goes to the user's browser (and to xdg-open with --open): only an http(s)
        // endpoint, and TLS unless it is on this machine (RFC 6749 §3.1).
        if !may_carry_secrets(authorize) {
            step.failed = true;
            step.summary = format!(
                "the authorization_endpoint {:?} is not an https URL: a client does not send a user there (RFC 6749 §3.1); the probe neither prints nor opens it",
                authorize
            );
            self.push(step);
            self.skip_rest(&["token", "initialize"], "no authorization code");
            return;
        }
        let verifier = crate::mcp::oauth::random_b64(32);
        let state = crate::mcp::oauth::random_b64(16);
        let scope = crate::mcp::oauth::scope_to_request(
            learned.challenge_scope.clone(),
            learned.prm.as_ref(),
        );
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("code_challenge", &crate::mcp::oauth::s256(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("resource", &config.url);
        if let Some(scope) = &scope {
            query.append_pair("scope", scope);
        }
        let sep = if authorize.contains('?') { '&' } else { '?' };
        let url = format!("{authorize}{sep}{}", query.finish());
        eprintln!("mcptap: log in: open this URL in a browser (the redirect comes back to {redirect_uri}):");
        eprintln!("mcptap: authorize URL: {url}");
        if config.open && !login::open_browser(&url) {
            eprintln!("mcptap: could not open a browser; open the URL yourself");
        }
        let started = Instant::now();
        let redirect = callback
            .wait(self.http.shared.clone(), config.login_timeout)
            .await;
        step.took_ms = ms(started.elapsed());
        let code = match redirect {
            Err(e) => {
                step.failed = true;
                step.summary = e;
                self.push(step);
                self.skip_rest(&["token", "initialize"], "no authorization code");
                return;
            }
            Ok(r) => {
                step.exchanges.push(r.ex);
                if let Some(error) = &r.error {
                    step.failed = true;
                    step.summary = format!(
                        "the authorization server redirected back with error={error} #{}",
                        r.ex
                    );
                    None
                } else if r.state.as_deref() != Some(state.as_str()) {
                    step.failed = true;
                    step.summary = format!("the redirect #{} came back without our state; a client rejects it (RFC 6749 §10.12)", r.ex);
                    None
                } else if let Some(code) = r.code {
                    step.summary = format!(
                        "redirected back to {} with a code and our state #{}",
                        redirect_uri, r.ex
                    );
                    Some(code)
                } else {
                    step.failed = true;
                    step.summary = format!("the redirect #{} carried no code", r.ex);
                    None
                }
            }
        };
        self.push(step);
        let Some(code) = code else {
            self.skip_rest(&["token", "initialize"], "no authorization code");
            return;
        };

        let mut step = Step::new("token");
        let Some(token_url) = asm.get("token_endpoint").and_then(Value::as_str) else {
            step.failed = true;
            step.summary = "the metadata names no token_endpoint".into();
            self.push(step);
            self.skip_rest(&["initialize"], "no access token");
            return;
        };
        if !may_carry_secrets(token_url) {
            step.failed = true;
            step.summary = format!(
                "the token_endpoint {token_url:?} is not an https URL: the code and the token would cross the network in clear (RFC 6749 §3.2); not sent"
            );
            self.push(step);
            self.skip_rest(&["initialize"], "no access token");
            return;
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("client_id", &client_id)
            .append_pair("code_verifier", &verifier)
            .append_pair("resource", &config.url)
            .finish();
        let answer = self
            .http
            .send(
                Outgoing {
                    method: Method::POST,
                    url: token_url.to_string(),
                    headers: vec![
                        (CONTENT_TYPE, "application/x-www-form-urlencoded".into()),
                        (ACCEPT, "application/json".into()),
                    ],
                    body: form.into_bytes(),
                },
                config.timeout,
                Until::End,
            )
            .await;
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        let doc = answer.json();
        let token = doc
            .as_ref()
            .and_then(|d| d.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match &token {
            Some(_) if answer.status == Some(200) => {
                step.summary = format!(
                    "POST {} → 200 #{}: token_type {}, expires_in {}",
                    path_of(token_url),
                    answer.ex,
                    doc.as_ref()
                        .and_then(|d| d.get("token_type"))
                        .unwrap_or(&Value::Null),
                    doc.as_ref()
                        .and_then(|d| d.get("expires_in"))
                        .unwrap_or(&Value::Null)
                );
            }
            _ => {
                step.failed = true;
                step.summary = format!(
                    "POST {} → {} #{}",
                    path_of(token_url),
                    answer.status_words(),
                    answer.ex
                );
            }
        }
        learned.token = token;
        if !self.push(step) {
            self.skip_rest(&["initialize"], "no access token");
        }
    }

    fn session_headers(&self, out: Outgoing, learned: &Learned) -> Outgoing {
        let mut out = out;
        if let Some(token) = &learned.token {
            out = out.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(sid) = &learned.session_id {
            out = out.header(HeaderName::from_static("mcp-session-id"), sid.clone());
        }
        if let Some(v) = &learned.protocol_version {
            out = out.header(HeaderName::from_static("mcp-protocol-version"), v.clone());
        }
        out
    }

    /// initialize → notifications/initialized → GET stream → tools/list, with the
    /// connector's deadlines.
    async fn mcp_session(&mut self, learned: &mut Learned) {
        let config = self.config;
        if learned.discover_needs_token && learned.token.is_some() {
            self.discover(learned).await;
        }
        // initialize (already answered when the server needs no authorization)
        let mut step = Step::new("initialize");
        if learned.open_server {
            let reach = self
                .steps
                .iter()
                .find(|s| s.id == "reach")
                .and_then(|s| s.exchanges.first().copied());
            step.summary = format!("answered without authorization #{}", reach.unwrap_or(0));
        }
        let id = 1;
        if learned.token.is_some() && !may_carry_secrets(&config.url) {
            step.failed = true;
            step.summary = format!(
                "not sent: {} is plain http:// to another machine, and a bearer token must not cross the network in clear (RFC 6750 §5.3)",
                config.url
            );
            self.push(step);
            self.skip_rest(&["initialized", "get_stream", "list"], "initialize failed");
            return;
        }
        let answer = if learned.open_server {
            None
        } else {
            let body = initialize_body(id, config.profile.protocol_version);
            let out = self.session_headers(self.mcp_post(&body), learned);
            Some(
                self.http
                    .send(out, config.init_timeout, Until::Answer(id))
                    .await,
            )
        };
        if let Some(answer) = &answer {
            step.exchanges.push(answer.ex);
            step.took_ms = ms(answer.took);
            match answer.rpc_answer(id) {
                Some(Message::Result { result, .. }) => {
                    learned.protocol_version = result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    learned.session_id = answer.header("mcp-session-id").map(str::to_string);
                    step.summary = format!(
                        "POST initialize → {} #{}: protocolVersion {}, server {}{}",
                        answer.status_words(),
                        answer.ex,
                        learned.protocol_version.as_deref().unwrap_or("(none)"),
                        result
                            .pointer("/serverInfo/name")
                            .and_then(Value::as_str)
                            .unwrap_or("(unnamed)"),
                        if learned.session_id.is_some() {
                            ", Mcp-Session-Id set"
                        } else {
                            ""
                        }
                    );
                }
                Some(Message::Error { code, message, .. }) => {
                    step.failed = true;
                    step.summary = format!(
                        "POST initialize → JSON-RPC error {code}: {message} #{}",
                        answer.ex
                    );
                }
                _ if answer.timed_out => {
                    step.failed = true;
                    step.summary = format!(
                        "no InitializeResult within {:.1} s #{}",
                        config.init_timeout.as_secs_f64(),
                        answer.ex
                    );
                    step.findings.push(own(
                        "init-deadline",
                        SPEC_LIFECYCLE,
                        Severity::Error,
                        Some(answer.ex),
                        format!("initialize was not answered within the connector's {:.1} s (--init-timeout): the connector gives up and shows the server as failed. Answer initialize at once (no cold start or upstream calls before it).", config.init_timeout.as_secs_f64()),
                        vec![format!("waited: {:.1} s", answer.took.as_secs_f64())],
                    ));
                }
                _ if answer.status == Some(401) => {
                    step.failed = true;
                    step.summary = format!(
                        "POST initialize → 401 #{}: the token was refused ({})",
                        answer.ex,
                        answer
                            .challenge()
                            .unwrap_or_else(|| "no WWW-Authenticate".into())
                    );
                }
                _ => {
                    step.failed = true;
                    step.summary = format!(
                        "POST initialize → {} #{}: no InitializeResult",
                        answer.status_words(),
                        answer.ex
                    );
                }
            }
        }
        if !self.push(step) {
            self.skip_rest(&["initialized", "get_stream", "list"], "initialize failed");
            return;
        }

        // notifications/initialized
        let mut step = Step::new("initialized");
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let out = self.session_headers(self.mcp_post(&note), learned);
        let answer = self.http.send(out, config.timeout, Until::End).await;
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        step.summary = format!(
            "POST notifications/initialized → {} #{}",
            answer.status_words(),
            answer.ex
        );
        if !answer.status.is_some_and(|s| (200..300).contains(&s)) {
            step.failed = true;
        }
        self.push(step);

        // GET stream, kept open while tools/list goes
        let stop = CancellationToken::new();
        let get = self.session_headers(
            Outgoing::get(&config.url).header(ACCEPT, "text/event-stream"),
            learned,
        );
        let http = self.http.clone();
        let get_until = Until::Cancelled(stop.clone());
        let get_deadline = config.timeout;
        let get_task = tokio::spawn(async move { http.send(get, get_deadline, get_until).await });

        let mut step = Step::new("list");
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let out = self.session_headers(self.mcp_post(&list), learned);
        let answer = self.http.send(out, config.timeout, Until::Answer(2)).await;
        stop.cancel();
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        match answer.rpc_answer(2) {
            Some(Message::Result { result, .. }) => {
                let names: Vec<&str> = result
                    .get("tools")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.get("name").and_then(Value::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                step.summary = format!(
                    "POST tools/list → {} #{}: {} tool{}{}",
                    answer.status_words(),
                    answer.ex,
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", names.join(", "))
                    }
                );
            }
            Some(Message::Error { code, message, .. }) => {
                step.failed = true;
                step.summary = format!(
                    "POST tools/list → JSON-RPC error {code}: {message} #{}",
                    answer.ex
                );
            }
            _ => {
                step.failed = true;
                step.summary = format!(
                    "POST tools/list → {} #{}: no answer to tools/list",
                    answer.status_words(),
                    answer.ex
                );
            }
        }

        let mut get_step = Step::new("get_stream");
        match get_task.await {
            Ok(get) => {
                get_step.exchanges.push(get.ex);
                let stream = get.media_type().as_deref() == Some("text/event-stream");
                get_step.summary = format!(
                    "GET {} → {}{} #{}",
                    path_of(&config.url),
                    get.status_words(),
                    if stream { " event stream" } else { "" },
                    get.ex
                );
                match get.status {
                    Some(200) if stream => {}
                    Some(405) => get_step.summary.push_str(" (no server stream: allowed)"),
                    _ => get_step.failed = true,
                }
            }
            Err(e) => {
                get_step.failed = true;
                get_step.summary = format!("the GET stream task failed: {e}");
            }
        }
        self.push(get_step);
        self.push(step);
        self.close_session(learned).await;
    }

    /// DELETE the session the probe opened: "clients that no longer need a particular session
    /// SHOULD send an HTTP DELETE" (Transports §Session Management); 405 is the server's
    /// right.
    async fn close_session(&mut self, learned: &Learned) {
        if learned.session_id.is_none() {
            self.steps.push(Step::skipped(
                "close",
                "the server issued no Mcp-Session-Id: no session to end",
            ));
            return;
        }
        let mut step = Step::new("close");
        let out = self.session_headers(
            Outgoing {
                method: Method::DELETE,
                url: self.config.url.clone(),
                headers: Vec::new(),
                body: Vec::new(),
            },
            learned,
        );
        let answer = self.http.send(out, self.config.timeout, Until::End).await;
        step.exchanges.push(answer.ex);
        step.took_ms = ms(answer.took);
        step.summary = format!(
            "DELETE {} with Mcp-Session-Id → {} #{}",
            path_of(&self.config.url),
            answer.status_words(),
            answer.ex
        );
        match answer.status {
            Some(s) if (200..300).contains(&s) => step.summary.push_str(": session ended"),
            Some(405) => step
                .summary
                .push_str(" (the server does not let clients end sessions: allowed)"),
            _ => step.findings.push(own(
                "session-delete",
                "MCP 2025-06-18 Transports §Session Management",
                Severity::Warning,
                Some(answer.ex),
                format!("DELETE with the session id answered {}: a server ends the session (2xx) or says it does not allow that (405). Sessions that clients cannot end pile up until they expire.", answer.status_words()),
                vec![format!("status: {}", answer.status_words())],
            )),
        }
        self.push(step);
    }
}

/// Where a client looks for protected-resource metadata, in order (MCP Authorization
/// 2025-06-18 and 2025-11-25, RFC 9728 §3.1 and §5.1): the `resource_metadata` URL of the
/// challenge, then the well-known URI with the endpoint's path, then at the root.
pub fn resource_metadata_urls(mcp_url: &str, from_challenge: Option<&str>) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    if let Some(u) = from_challenge.filter(|u| http::parts(u).is_some()) {
        urls.push(u.to_string());
    }
    if let Some(u) = insert_well_known(mcp_url, "oauth-protected-resource") {
        urls.push(u);
    }
    if let Some(o) = origin_of(mcp_url) {
        urls.push(format!("{o}/.well-known/oauth-protected-resource"));
    }
    let mut seen = Vec::new();
    urls.retain(|u| {
        let new = !seen.contains(u);
        seen.push(u.clone());
        new
    });
    urls
}

/// Where a client looks for authorization-server metadata, in order (MCP Authorization
/// 2025-11-25 §Authorization Server Metadata Discovery): RFC 8414 with the well-known part
/// inserted before the issuer's path, OpenID Connect discovery inserted the same way, and,
/// for an issuer with a path, OpenID Connect discovery appended to it.
pub fn auth_server_metadata_urls(issuer: &str) -> Vec<String> {
    let mut urls = Vec::new();
    if http::parts(issuer).is_none() {
        return urls;
    }
    let has_path = ::http::Uri::try_from(issuer)
        .map(|u| !matches!(u.path(), "" | "/"))
        .unwrap_or(false);
    if let Some(u) = insert_well_known(issuer, "oauth-authorization-server") {
        urls.push(u);
    }
    if let Some(u) = insert_well_known(issuer, "openid-configuration") {
        urls.push(u);
    }
    if has_path {
        urls.push(format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ));
    }
    urls
}

/// Whether a request to `url` may carry a secret (a code, a token): https, or plain http to
/// this machine (RFC 6749 §3.1 and §3.2 demand TLS; RFC 8252 §8.3 allows loopback).
fn may_carry_secrets(url: &str) -> bool {
    match http::parts(url) {
        Some((true, ..)) => true,
        Some((false, host, ..)) => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// The path (and query) of a URL, for short lines.
fn path_of(url: &str) -> String {
    http::parts(url)
        .map(|(_, _, _, pq)| pq)
        .unwrap_or_else(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_metadata_is_looked_for_in_the_spec_order() {
        assert_eq!(
            resource_metadata_urls(
                "https://h.example/mcp",
                Some("https://h.example/.well-known/oauth-protected-resource/x")
            ),
            [
                "https://h.example/.well-known/oauth-protected-resource/x",
                "https://h.example/.well-known/oauth-protected-resource/mcp",
                "https://h.example/.well-known/oauth-protected-resource",
            ]
        );
        // A relative challenge URL is not followed; the well-known URIs come once each.
        assert_eq!(
            resource_metadata_urls("https://h.example/", Some("/relative")),
            ["https://h.example/.well-known/oauth-protected-resource"]
        );
    }

    #[test]
    fn auth_server_metadata_is_looked_for_in_the_spec_order() {
        assert_eq!(
            auth_server_metadata_urls("https://auth.example/tenant1"),
            [
                "https://auth.example/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example/.well-known/openid-configuration/tenant1",
                "https://auth.example/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            auth_server_metadata_urls("https://auth.example/"),
            [
                "https://auth.example/.well-known/oauth-authorization-server",
                "https://auth.example/.well-known/openid-configuration",
            ]
        );
        // Not a URL a client can build on: nothing to fetch (and a finding says so).
        assert!(auth_server_metadata_urls("auth.example").is_empty());
        assert!(auth_server_metadata_urls("ftp://auth.example/").is_empty());
    }

    #[test]
    fn secrets_go_only_over_tls_or_to_this_machine() {
        assert!(may_carry_secrets("https://mcp.example.com/mcp"));
        assert!(may_carry_secrets("http://127.0.0.1:8080/token"));
        assert!(may_carry_secrets("http://[::1]:8080/mcp"));
        assert!(may_carry_secrets("http://localhost:3000/mcp"));
        assert!(!may_carry_secrets("http://mcp.example.com/mcp"));
        assert!(!may_carry_secrets("http://10.0.0.5/token"));
        assert!(!may_carry_secrets("javascript:alert(1)"));
        assert!(!may_carry_secrets("file:///etc/passwd"));
    }

    #[test]
    fn urls_are_split_as_a_connector_dials_them() {
        let p = |u: &str| http::parts(u);
        assert_eq!(
            p("https://[::1]:8443/mcp"),
            Some((true, "::1".into(), 8443, "/mcp".into()))
        );
        assert_eq!(
            p("https://mcp.example.com"),
            Some((true, "mcp.example.com".into(), 443, "/".into()))
        );
        assert_eq!(p("https://mcp.example.com:99999/mcp"), None);
        assert_eq!(p("https://mcp.example.com:0/mcp"), None);
    }

    #[test]
    fn flags_are_checked_before_anything_runs() {
        use clap::Parser as _;
        let parse = |argv: &[&str]| {
            let mut all = vec!["mcptap", "probe"];
            all.extend(argv);
            match crate::cli::Cli::try_parse_from(all).map(|c| c.command) {
                Ok(crate::cli::Command::Probe(args)) => args.validate().map(|_| ()),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(anyhow::anyhow!(e.to_string())),
            }
        };
        assert!(parse(&["https://h.example/mcp"]).is_ok());
        assert!(parse(&["http://127.0.0.1:8080/mcp"]).is_ok());
        assert!(parse(&["h.example/mcp"]).is_err());
        assert!(parse(&["https://h.example/mcp#x"]).is_err());
        assert!(parse(&["https://h.example/mcp", "--token", "Bearer abc"]).is_err());
        assert!(parse(&["https://h.example/mcp", "--login", "--token", "abc"]).is_err());
        assert!(parse(&["https://h.example/mcp", "--client-id", "abc"]).is_err());
        // A port out of range was once dialled as 443.
        let e = parse(&["https://h.example:99999/mcp"]).unwrap_err();
        assert!(e.to_string().contains("not a TCP port"), "{e}");
    }
}
