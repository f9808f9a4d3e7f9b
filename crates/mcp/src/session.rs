//! A capture read as an MCP + OAuth session: what role each exchange plays, the JSON-RPC
//! messages it carried (paired by id across streams), the stages reached, where the client
//! went quiet, and which tokens were issued and presented.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

pub use super::era::{Era, Negotiation};
use super::jsonrpc::{self, Message};
use mcptap_capture::reader::{media_type, Capture, Exchange};

/// What an exchange is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// RFC 9728 protected-resource metadata.
    ResourceMetadata,
    /// RFC 8414 authorization-server metadata, or OpenID Connect discovery.
    AuthServerMetadata,
    /// RFC 7591 dynamic client registration.
    Registration,
    /// The authorization request (RFC 6749 §4.1.1).
    Authorize,
    /// The token endpoint (RFC 6749 §3.2).
    Token,
    /// The Streamable HTTP MCP endpoint (POST, GET stream, DELETE).
    Mcp,
    /// The legacy HTTP+SSE transport's event stream (2024-11-05).
    LegacySse,
    /// The legacy transport's message endpoint.
    LegacyMessages,
    /// A CORS preflight.
    Preflight,
    Other,
}

/// One exchange with what the analyzer learned about it.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    pub x: &'a Exchange,
    pub role: Role,
    /// JSON-RPC messages in the request body.
    pub sent: Vec<Message>,
    /// JSON-RPC messages in the response (JSON body or SSE events), with their time.
    pub received: Vec<(u64, Message)>,
    /// The bearer credential presented, as a token key (see [`token_key`]).
    pub bearer: Option<String>,
}

/// One JSON-RPC request and its answer, wherever it came.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub method: String,
    /// The exchange that carried the request.
    pub ex: u64,
    pub t: u64,
    /// The exchange that carried the answer, its time, and the answer.
    pub answer: Option<(u64, u64, Message)>,
    /// The answer came on another exchange (a GET stream, a legacy stream) and another
    /// request with the same id was sent between this call and it: ids restart with every
    /// session and answers elsewhere pair by id alone, so it may be that request's answer.
    pub answer_contested: bool,
}

/// Stage ids, in the order a connector goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageId {
    Reach,
    Challenge,
    ResourceMetadata,
    AuthServerMetadata,
    Registration,
    Authorize,
    Token,
    /// 2026-07-28: `server/discover` answered.
    Discover,
    /// 2025: the `initialize` handshake.
    Initialize,
    Initialized,
    GetStream,
    /// 2026-07-28: a `subscriptions/listen` stream opened (optional: shown when it happens).
    Listen,
    List,
    Call,
}

impl StageId {
    pub const ALL: [StageId; 14] = [
        StageId::Reach,
        StageId::Challenge,
        StageId::ResourceMetadata,
        StageId::AuthServerMetadata,
        StageId::Registration,
        StageId::Authorize,
        StageId::Token,
        StageId::Discover,
        StageId::Initialize,
        StageId::Initialized,
        StageId::GetStream,
        StageId::Listen,
        StageId::List,
        StageId::Call,
    ];

    pub fn id(self) -> &'static str {
        match self {
            StageId::Reach => "reach",
            StageId::Challenge => "challenge",
            StageId::ResourceMetadata => "resource_metadata",
            StageId::AuthServerMetadata => "auth_server_metadata",
            StageId::Registration => "registration",
            StageId::Authorize => "authorize",
            StageId::Token => "token",
            StageId::Discover => "discover",
            StageId::Initialize => "initialize",
            StageId::Initialized => "initialized",
            StageId::GetStream => "get_stream",
            StageId::Listen => "listen",
            StageId::List => "list",
            StageId::Call => "call",
        }
    }

    /// Human words for the stage.
    pub fn title(self) -> &'static str {
        match self {
            StageId::Reach => "a request reached the proxy",
            StageId::Challenge => "401 challenge to an unauthenticated MCP request",
            StageId::ResourceMetadata => "protected-resource metadata fetched (RFC 9728)",
            StageId::AuthServerMetadata => "authorization-server metadata fetched (RFC 8414)",
            StageId::Registration => "client registered (RFC 7591 or client ID metadata document)",
            StageId::Authorize => "authorize redirect with a code (PKCE)",
            StageId::Token => "token issued (authorization_code grant)",
            StageId::Discover => "server/discover answered with a DiscoverResult (2026-07-28)",
            StageId::Initialize => "initialize answered with InitializeResult",
            StageId::Initialized => "notifications/initialized accepted",
            StageId::GetStream => "GET stream opened (or 405)",
            StageId::Listen => "subscriptions/listen stream opened (2026-07-28)",
            StageId::List => "tools/resources/prompts listed",
            StageId::Call => "tools/call and later traffic",
        }
    }

    /// The OAuth stages, which a proxy may not see when the authorization server is elsewhere.
    pub fn is_auth(self) -> bool {
        (StageId::Challenge..=StageId::Token).contains(&self)
    }

    /// Whether the stage exists in a flow of `era` (a stage of the other era is "not
    /// applicable", never missing). With no MCP request seen, both eras' openings stay open.
    pub fn in_era(self, era: Era) -> bool {
        match self {
            StageId::Discover | StageId::Listen => !era.is_legacy(),
            StageId::Initialize | StageId::Initialized | StageId::GetStream => {
                era.is_legacy() || era == Era::Unknown
            }
            _ => true,
        }
    }
}

/// Whether a stage was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reached {
    Reached,
    /// Not seen, and nothing later was either.
    Missing,
    /// Not seen here, but later stages were: it happened elsewhere (another host, a cached token).
    NotObserved,
    /// An authorization stage in a session that used no authorization at all, or `call` in a
    /// probe's capture (a probe calls no tools).
    NotApplicable,
}

/// One stage's result.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub id: StageId,
    pub reached: Reached,
    /// The exchange that first reached it.
    pub first_exchange: Option<u64>,
    /// When (µs since session start; the end of that exchange).
    pub t: Option<u64>,
    /// When not reached: the first exchange that tried it and was refused (an HTTP error, a
    /// JSON-RPC error, an OAuth error redirect).
    pub refused: Option<u64>,
}

/// Where the client went quiet.
#[derive(Debug, Clone, Serialize)]
pub struct Silence {
    pub after_stage: StageId,
    pub at_t: u64,
    pub expected_next: String,
    pub quiet_for_s: f64,
    /// Requests after that point that did not advance the flow.
    pub other_requests: Vec<u64>,
}

/// A token issued by a token endpoint, and where it was presented.
#[derive(Debug, Clone, Serialize)]
pub struct TokenLine {
    /// The redaction fingerprint (or a short form of the token in an unredacted capture).
    pub fp: String,
    pub issued_by: u64,
    pub issued_t: u64,
    pub grant_type: String,
    /// Exchanges that presented it, with their status.
    pub presented: Vec<(u64, Option<u16>)>,
    /// True when a request carrying it got a non-401 answer; null when never presented.
    pub accepted: Option<bool>,
}

/// A capture analyzed as a session.
pub struct Session<'a> {
    pub capture: &'a Capture,
    pub steps: Vec<Step<'a>>,
    pub calls: Vec<Call>,
    pub stages: Vec<Stage>,
    pub silence: Option<Silence>,
    pub tokens: Vec<TokenLine>,
    /// The protocol era and how it was negotiated.
    pub negotiation: Negotiation,
    /// Calls answered `input_required`, with their rounds (2026-07-28).
    pub round_trips: Vec<super::rounds::RoundTrip>,
    /// Paths of the MCP endpoint(s).
    pub mcp_paths: BTreeSet<String>,
    /// Endpoint paths learned from authorization-server metadata.
    pub as_endpoints: AsEndpoints,
}

/// Endpoint paths named by authorization-server metadata.
#[derive(Debug, Clone, Default)]
pub struct AsEndpoints {
    pub authorization: Option<String>,
    pub token: Option<String>,
    pub registration: Option<String>,
}

/// A credential as a comparable key: the `fp` of a redacted value, or a keyed-free short hash
/// of a raw one (unredacted captures), so tokens can be followed either way.
pub fn token_key(value: &str) -> String {
    let value = value.trim();
    if let Some(start) = value.find("<redacted fp=") {
        let rest = &value[start + "<redacted fp=".len()..];
        return rest.chars().take_while(|c| *c != '>').collect();
    }
    let hash = blake3::hash(value.as_bytes()).to_hex();
    format!("raw:{}", &hash[..8])
}

/// The bearer credential of an `Authorization` value.
pub fn bearer_of(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token_key(rest))
}

/// The first 120 characters of a body, on one line, for quoting in a finding.
pub fn snippet(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}…", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}

/// The path of a URL or path string.
pub fn url_path(url: &str) -> String {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map(|j| &after[j..]).unwrap_or("/")
        }
        None => url,
    };
    rest.split(['?', '#']).next().unwrap_or("/").to_string()
}

fn is_json(x: &Exchange, response: bool) -> bool {
    let mt = if response {
        x.response_media_type()
    } else {
        x.request_media_type()
    };
    mt.is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// What a capture says of its server, whichever client flow learned it: the authorization
/// server's endpoints, the MCP paths, the legacy transport's message paths. A flow analysed
/// on its own is analysed with the facts of the whole capture: a client that kept the
/// metadata from an earlier visit fetches none.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub as_endpoints: AsEndpoints,
    pub mcp_paths: BTreeSet<String>,
    pub legacy_post_paths: BTreeSet<String>,
}

impl ServerFacts {
    pub fn of(capture: &Capture) -> ServerFacts {
        let mut facts = FactsBuilder::default();
        for x in &capture.exchanges {
            facts.add(x);
        }
        facts.finish()
    }
}

/// [`ServerFacts`] gathered one exchange at a time, as a capture streams by.
#[derive(Debug, Default)]
pub struct FactsBuilder {
    as_endpoints: AsEndpoints,
    legacy_post_paths: BTreeSet<String>,
    /// Paths JSON-RPC was POSTed to.
    rpc_paths: BTreeSet<String>,
    /// The first `resource` a protected-resource metadata document named.
    resource: Option<String>,
}

impl FactsBuilder {
    pub fn add(&mut self, x: &Exchange) {
        let path = x.path();
        if path.starts_with("/.well-known/oauth-authorization-server")
            || path.starts_with("/.well-known/openid-configuration")
        {
            if let Some(doc) = x.response_body.json() {
                let get = |k: &str| doc.get(k).and_then(Value::as_str).map(url_path);
                let eps = &mut self.as_endpoints;
                eps.authorization = eps
                    .authorization
                    .take()
                    .or_else(|| get("authorization_endpoint"));
                eps.token = eps.token.take().or_else(|| get("token_endpoint"));
                eps.registration = eps
                    .registration
                    .take()
                    .or_else(|| get("registration_endpoint"));
            }
        }
        if path.starts_with("/.well-known/oauth-protected-resource") && self.resource.is_none() {
            self.resource = x
                .response_body
                .json()
                .and_then(|j| j.get("resource").and_then(Value::as_str).map(url_path));
        }
        if x.method() == "GET" {
            self.legacy_post_paths.extend(
                x.sse
                    .iter()
                    .filter(|(_, e)| e.event.as_deref() == Some("endpoint"))
                    .filter_map(|(_, e)| e.data.as_deref().map(url_path)),
            );
        }
        if x.method() == "POST"
            && !self.rpc_paths.contains(path)
            && jsonrpc::decode_bytes(&x.request_body.bytes)
                .is_some_and(|m| m.iter().any(|m| !matches!(m, Message::Invalid { .. })))
        {
            self.rpc_paths.insert(path.to_string());
        }
    }

    pub fn finish(self) -> ServerFacts {
        let mut mcp_paths: BTreeSet<String> = self
            .rpc_paths
            .into_iter()
            .filter(|p| !self.legacy_post_paths.contains(p))
            .collect();
        // The resource named in a 401 challenge's metadata is the MCP endpoint too.
        if mcp_paths.is_empty() {
            mcp_paths.extend(self.resource.filter(|r| r != "/"));
        }
        ServerFacts {
            as_endpoints: self.as_endpoints,
            mcp_paths,
            legacy_post_paths: self.legacy_post_paths,
        }
    }
}

impl<'a> Session<'a> {
    /// Analyzes a capture.
    pub fn analyze(capture: &'a Capture) -> Session<'a> {
        Session::analyze_with(capture, ServerFacts::of(capture))
    }

    /// Analyzes a capture (one client flow of a larger one, say) with what is known of its
    /// server.
    pub fn analyze_with(capture: &'a Capture, facts: ServerFacts) -> Session<'a> {
        let steps: Vec<Step<'a>> = capture
            .exchanges
            .iter()
            .map(|x| {
                let role = classify(x.path(), Traits::of(x), &facts);
                let sent = if is_json(x, false) || matches!(role, Role::Mcp | Role::LegacyMessages)
                {
                    jsonrpc::decode_bytes(&x.request_body.bytes).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let mut received = Vec::new();
                if matches!(role, Role::Mcp | Role::LegacySse | Role::LegacyMessages) {
                    if x.response_media_type().as_deref() == Some("text/event-stream") {
                        // Only what a client would dispatch counts as a message.
                        for (t, e) in x.sse.iter().filter(|(_, e)| e.dispatched) {
                            if let Some(data) = &e.data {
                                if let Some(msgs) = jsonrpc::decode_bytes(data.as_bytes()) {
                                    received.extend(msgs.into_iter().map(|m| (*t, m)));
                                }
                            }
                        }
                    } else if let Some(msgs) = jsonrpc::decode_bytes(&x.response_body.bytes) {
                        received.extend(msgs.into_iter().map(|m| (x.end_t(), m)));
                    }
                }
                let bearer = x.request_header("authorization").and_then(bearer_of);
                Step {
                    x,
                    role,
                    sent,
                    received,
                    bearer,
                }
            })
            .collect();

        let calls = pair_calls(&steps);
        let tokens = token_lines(&steps);
        // A probe (`mcptap probe`) stops at tools/list on purpose: a tool call could change
        // something on the server.
        let probe = capture
            .session
            .routes
            .iter()
            .any(|r| r.listen == mcptap_capture::model::LISTEN_PROBE);
        let negotiation = super::era::negotiate(&steps, &calls, probe);
        let round_trips = super::rounds::round_trips(&steps, &calls);
        let stages = stages(&steps, &calls, probe, negotiation.era);
        let mut session = Session {
            capture,
            steps,
            calls,
            stages,
            silence: None,
            tokens,
            negotiation,
            round_trips,
            mcp_paths: facts.mcp_paths,
            as_endpoints: facts.as_endpoints,
        };
        session.silence = session.find_silence();
        session
    }

    pub fn stage(&self, id: StageId) -> &Stage {
        &self.stages[id as usize]
    }

    /// The step of exchange `ex` (steps are in exchange order, as the reader sorts them).
    pub fn step(&self, ex: u64) -> Option<&Step<'a>> {
        self.steps
            .binary_search_by_key(&ex, |s| s.x.ex)
            .ok()
            .map(|i| &self.steps[i])
    }

    pub fn steps_with(&self, role: Role) -> impl Iterator<Item = &Step<'a>> {
        self.steps.iter().filter(move |s| s.role == role)
    }

    /// The MCP URL path the client uses (the most used MCP path).
    pub fn mcp_path(&self) -> Option<&str> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in self.steps_with(Role::Mcp) {
            *counts.entry(s.x.path()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(p, _)| p)
            .or_else(|| self.mcp_paths.iter().next().map(String::as_str))
    }

    /// Whether the server asked for authorization at all.
    pub fn uses_oauth(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.role,
                Role::ResourceMetadata | Role::AuthServerMetadata | Role::Token | Role::Authorize
            ) || (s.role == Role::Mcp && s.x.status() == Some(401))
                || s.bearer.is_some()
        })
    }

    /// How exchange `ex` was refused (see [`refusal`]).
    pub fn refusal_of(&self, ex: u64) -> String {
        let Some(step) = self.step(ex) else {
            return String::new();
        };
        let answer = self
            .calls
            .iter()
            .filter(|c| c.ex == ex)
            .find_map(|c| match &c.answer {
                Some((_, _, m @ Message::Error { .. })) => Some(m),
                _ => None,
            });
        refusal(step, answer)
    }

    fn find_silence(&self) -> Option<Silence> {
        let last = self
            .stages
            .iter()
            .filter(|s| s.reached == Reached::Reached)
            .max_by_key(|s| s.id)?;
        // Nothing was left to do: every later stage does not apply (a probe stops at list).
        if self
            .stages
            .iter()
            .filter(|s| s.id > last.id)
            .all(|s| s.reached == Reached::NotApplicable)
        {
            return None;
        }
        let at_t = last.t.unwrap_or(0);
        let mcp = self.mcp_path().unwrap_or("/mcp").to_string();
        let era = self.negotiation.era;
        // The era's opening request: what a client sends first on the MCP endpoint.
        let opening = match era {
            Era::Modern | Era::FailedNegotiation => format!("POST {mcp} server/discover"),
            Era::Legacy | Era::Fallback => format!("POST {mcp} initialize"),
            Era::Unknown => {
                format!("POST {mcp} server/discover (a 2026-07-28 client) or initialize (2025)")
            }
        };
        let expected_next = match last.id {
            // The opening was sent and refused: say so rather than name it as missing.
            StageId::Reach | StageId::Token if era == Era::FailedNegotiation => {
                let n = &self.negotiation;
                format!(
                    "{opening}, answered with a DiscoverResult — tried at #{} and refused: {}",
                    n.probe.unwrap_or_default(),
                    n.probe_answer
                        .as_ref()
                        .map(|a| a.describe())
                        .unwrap_or_default()
                )
            }
            StageId::Reach | StageId::Token
                if era.is_legacy()
                    && self
                        .negotiation
                        .initialize_answer
                        .as_ref()
                        .is_some_and(|a| !matches!(a, super::era::ProbeAnswer::Result { .. })) =>
            {
                format!(
                    "POST {mcp} initialize, answered with an InitializeResult — tried at #{} and refused: {}",
                    self.negotiation.initialize.unwrap_or_default(),
                    self.negotiation
                        .initialize_answer
                        .as_ref()
                        .map(|a| a.describe())
                        .unwrap_or_default()
                )
            }
            StageId::Reach => format!("an MCP request: {opening}"),
            StageId::Challenge => {
                "GET of the protected-resource metadata named in WWW-Authenticate (RFC 9728 §5.1)"
                    .into()
            }
            StageId::ResourceMetadata => {
                "GET of the authorization server's metadata (RFC 8414 §3)".into()
            }
            StageId::AuthServerMetadata => {
                "client registration (RFC 7591) or the browser's authorize request".into()
            }
            StageId::Registration => format!(
                "the browser's authorize request (GET {})",
                self.as_endpoints
                    .authorization
                    .as_deref()
                    .unwrap_or("/authorize")
            ),
            StageId::Authorize => format!(
                "the token request (POST {})",
                self.as_endpoints.token.as_deref().unwrap_or("/token")
            ),
            StageId::Token => {
                format!("{opening} with Authorization: Bearer and the token just issued")
            }
            StageId::Initialize => format!("POST {mcp} notifications/initialized"),
            StageId::Initialized => format!("GET {mcp} (the server's SSE stream) or tools/list"),
            StageId::Discover | StageId::GetStream | StageId::Listen => {
                "tools/list (or resources/list, prompts/list)".into()
            }
            StageId::List => "tools/call".into(),
            StageId::Call => unreachable!("returned above"),
        };
        // The next step was tried and refused: say so, never name it as if it were not sent.
        let refused = self
            .stages
            .iter()
            .filter(|s| s.id > last.id)
            .filter(|s| !matches!(s.reached, Reached::Reached | Reached::NotApplicable))
            .find_map(|s| s.refused);
        let expected_next = match refused {
            Some(ex) if !expected_next.contains("tried at") => {
                format!(
                    "{expected_next} — tried at #{ex} and refused: {}",
                    self.refusal_of(ex)
                )
            }
            _ => expected_next,
        };
        let other_requests = self
            .steps
            .iter()
            .filter(|s| s.x.t > at_t)
            .map(|s| s.x.ex)
            .collect();
        let quiet_for_s = self.capture.end_t().saturating_sub(at_t) as f64 / 1e6;
        Some(Silence {
            after_stage: last.id,
            at_t,
            expected_next,
            quiet_for_s,
            other_requests,
        })
    }
}

/// What an exchange's role depends on besides its path and what is known of the server:
/// small enough to keep for every exchange of a day's capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traits {
    pub options: bool,
    pub get: bool,
    pub post: bool,
    /// The query names a `response_type` (an authorization request).
    pub response_type: bool,
    /// The request body is JSON with `redirect_uris` (a registration).
    pub redirect_uris: bool,
    /// A form POST naming a grant type (a token request).
    pub grant: bool,
    /// The first event of its stream is `endpoint` (the legacy transport's stream).
    pub endpoint_event: bool,
    /// It asks for an event stream.
    pub accepts_sse: bool,
}

impl Traits {
    pub fn of(x: &Exchange) -> Traits {
        let method = x.method();
        let form = x.request_media_type().as_deref() == Some("application/x-www-form-urlencoded");
        Traits {
            options: method == "OPTIONS",
            get: method == "GET",
            post: method == "POST",
            response_type: x.query().iter().any(|(k, _)| k == "response_type"),
            redirect_uris: method == "POST"
                && memchr::memmem::find(&x.request_body.bytes, b"redirect_uris").is_some()
                && x.request_body
                    .json()
                    .is_some_and(|j| j.get("redirect_uris").is_some()),
            grant: is_grant_request(method, form, &x.request_body.text()),
            endpoint_event: x
                .sse
                .first()
                .is_some_and(|(_, e)| e.event.as_deref() == Some("endpoint")),
            accepts_sse: x
                .request_header("accept")
                .is_some_and(|a| a.contains("text/event-stream")),
        }
    }
}

/// The role of an exchange to `path` with these traits, given what is known of the server.
pub fn classify(path: &str, t: Traits, facts: &ServerFacts) -> Role {
    if t.options {
        return Role::Preflight;
    }
    if path.starts_with("/.well-known/oauth-protected-resource") {
        return Role::ResourceMetadata;
    }
    if path.starts_with("/.well-known/oauth-authorization-server")
        || path.starts_with("/.well-known/openid-configuration")
        || path.ends_with("/.well-known/openid-configuration")
    {
        return Role::AuthServerMetadata;
    }
    let eps = &facts.as_endpoints;
    let is = |ep: &Option<String>| ep.as_deref() == Some(path);
    if is(&eps.registration) || t.redirect_uris {
        return Role::Registration;
    }
    if is(&eps.authorization) || (t.get && t.response_type) {
        return Role::Authorize;
    }
    if is(&eps.token) || t.grant {
        return Role::Token;
    }
    if t.get && t.endpoint_event {
        return Role::LegacySse;
    }
    if facts.legacy_post_paths.contains(path) {
        return Role::LegacyMessages;
    }
    if facts.mcp_paths.contains(path) {
        return Role::Mcp;
    }
    // A GET asking for an event stream on an unknown path: an MCP client's stream.
    if t.get && t.accepts_sse {
        return Role::LegacySse;
    }
    Role::Other
}

/// Pairs JSON-RPC requests with their answers by id. An answer in the request's own
/// exchange (its JSON body or its SSE stream) wins; otherwise the first later answer with that
/// id on a stream that did not carry requests of its own (a GET stream, the legacy SSE
/// stream). Ids restart with every session, so an answer is never taken from another POST.
fn pair_calls(steps: &[Step<'_>]) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    for s in steps {
        for m in &s.sent {
            if let Message::Request { id, method, .. } = m {
                let own = s
                    .received
                    .iter()
                    .find(|(_, a)| a.is_response() && a.id() == Some(id.as_str()))
                    .map(|(t, a)| (s.x.ex, *t, a.clone()));
                calls.push(Call {
                    id: id.clone(),
                    method: method.clone(),
                    ex: s.x.ex,
                    t: s.x.t,
                    answer: own,
                    answer_contested: false,
                });
            }
        }
    }
    // Answers on exchanges that sent no request (GET and legacy streams), by id, in time order.
    let mut shared: Vec<(u64, u64, &Message)> = steps
        .iter()
        .filter(|s| !s.sent.iter().any(Message::is_request))
        .flat_map(|s| s.received.iter().map(move |(t, m)| (s.x.ex, *t, m)))
        .filter(|(_, _, m)| m.is_response())
        .collect();
    shared.sort_by_key(|(_, t, _)| *t);
    let mut shared_by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, _, m)) in shared.iter().enumerate() {
        if let Some(id) = m.id() {
            shared_by_id.entry(id).or_default().push(i);
        }
    }
    let mut used = vec![false; shared.len()];
    for call in calls.iter_mut().filter(|c| c.answer.is_none()) {
        let Some(candidates) = shared_by_id.get(call.id.as_str()) else {
            continue;
        };
        if let Some(&i) = candidates
            .iter()
            .find(|&&i| !used[i] && shared[i].1 >= call.t)
        {
            used[i] = true;
            let (ex, t, m) = shared[i];
            call.answer = Some((ex, t, m.clone()));
        }
    }
    // Requests by id in time order, to tell whether an answer found elsewhere is contested.
    let mut sent_by_id: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for c in &calls {
        sent_by_id
            .entry(c.id.as_str())
            .or_default()
            .push((c.t, c.ex));
    }
    for list in sent_by_id.values_mut() {
        list.sort_unstable();
    }
    let contested: Vec<bool> = calls
        .iter()
        .map(|call| match &call.answer {
            Some((ex, t, _)) if *ex != call.ex => {
                let sent = &sent_by_id[call.id.as_str()];
                let from = sent.partition_point(|(st, _)| *st < call.t);
                sent[from..]
                    .iter()
                    .take_while(|(st, _)| st <= t)
                    .any(|(_, other)| *other != call.ex)
            }
            _ => false,
        })
        .collect();
    for (call, contested) in calls.iter_mut().zip(contested) {
        call.answer_contested = contested;
    }
    calls
}

fn token_lines(steps: &[Step<'_>]) -> Vec<TokenLine> {
    let mut lines: Vec<TokenLine> = Vec::new();
    for s in steps.iter().filter(|s| s.role == Role::Token) {
        let Some(body) = s.x.response_body.json() else {
            continue;
        };
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            continue;
        };
        let grant_type = form_value(&s.x.request_body.text(), "grant_type").unwrap_or_default();
        lines.push(TokenLine {
            fp: token_key(token),
            issued_by: s.x.ex,
            issued_t: s.x.end_t(),
            grant_type,
            presented: Vec::new(),
            accepted: None,
        });
    }
    for line in &mut lines {
        for s in steps
            .iter()
            .filter(|s| s.bearer.as_deref() == Some(line.fp.as_str()))
        {
            line.presented.push((s.x.ex, s.x.status()));
        }
        if !line.presented.is_empty() {
            line.accepted = Some(
                line.presented
                    .iter()
                    .any(|(_, st)| st.is_some_and(|c| c != 401 && c != 403)),
            );
        }
    }
    lines
}

/// A value from a form body (decoded).
pub fn form_value(body: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `host/path` of the URL a request asked for (its Host header and path).
fn client_url(x: &Exchange) -> String {
    format!(
        "{}{}",
        x.request_header("host").unwrap_or("").to_ascii_lowercase(),
        x.path()
    )
}

/// `host/path` of every redirect URI a client registered or sent to an authorize endpoint.
fn redirect_uris(steps: &[Step<'_>]) -> BTreeSet<String> {
    let mut uris = Vec::new();
    for s in steps {
        match s.role {
            Role::Registration => {
                if let Some(list) =
                    s.x.request_body
                        .json()
                        .and_then(|j| j.get("redirect_uris").cloned())
                {
                    uris.extend(
                        list.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string),
                    );
                }
            }
            Role::Authorize => uris.extend(
                s.x.query()
                    .into_iter()
                    .filter(|(k, _)| k == "redirect_uri")
                    .map(|(_, v)| v),
            ),
            _ => {}
        }
    }
    uris.iter()
        .filter_map(|u| {
            let rest = &u[u.find("://")? + 3..];
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            Some(format!("{}{}", host.to_ascii_lowercase(), url_path(u)))
        })
        .collect()
}

fn stages(steps: &[Step<'_>], calls: &[Call], probe: bool, era: Era) -> Vec<Stage> {
    let mut first: BTreeMap<StageId, (u64, u64)> = BTreeMap::new();
    // The first refused attempt at each stage.
    let mut refused: BTreeMap<StageId, u64> = BTreeMap::new();
    let mut refuse = |id: StageId, x: &Exchange| {
        refused.entry(id).or_insert(x.ex);
    };
    // A stage is reached when the exchange that shows it ends (a stream: when its headers arrive).
    let mut mark = |id: StageId, x: &Exchange, t: u64| {
        first.entry(id).or_insert((x.ex, t));
    };
    let challenged = steps
        .iter()
        .any(|s| s.role == Role::Mcp && s.x.status() == Some(401));
    let redirects = redirect_uris(steps);
    for s in steps {
        let x = s.x;
        let ok = x.status().is_some_and(|c| (200..300).contains(&c));
        let failed = x.status().is_none_or(|c| c >= 400);
        // An event stream (a legacy GET /sse first of all) reaches when its headers arrive;
        // its end may come long after everything else.
        let shown_at = if x.response_media_type().as_deref() == Some("text/event-stream") {
            x.response_t.unwrap_or(x.t)
        } else {
            x.end_t()
        };
        mark(StageId::Reach, x, shown_at);
        match s.role {
            Role::Mcp | Role::LegacyMessages
                if s.bearer.is_none()
                    && x.request_header("authorization").is_none()
                    && x.status() == Some(401) =>
            {
                mark(StageId::Challenge, x, x.end_t())
            }
            Role::ResourceMetadata if ok => mark(StageId::ResourceMetadata, x, x.end_t()),
            Role::AuthServerMetadata if ok => mark(StageId::AuthServerMetadata, x, x.end_t()),
            Role::Registration if ok => mark(StageId::Registration, x, x.end_t()),
            Role::ResourceMetadata if failed => refuse(StageId::ResourceMetadata, x),
            Role::AuthServerMetadata if failed => refuse(StageId::AuthServerMetadata, x),
            Role::Registration if failed => refuse(StageId::Registration, x),
            Role::Authorize => {
                if failed || oauth_error_redirect(x) {
                    refuse(StageId::Authorize, x);
                }
                if x.query()
                    .iter()
                    .any(|(k, v)| k == "client_id" && v.starts_with("https://"))
                {
                    mark(StageId::Registration, x, x.end_t());
                }
                let redirected_with_code = x.status().is_some_and(|c| (300..400).contains(&c))
                    && x.response_header("location")
                        .is_some_and(|l| l.contains("code=") && !l.contains("error="));
                if redirected_with_code {
                    mark(StageId::Authorize, x, x.end_t());
                }
            }
            // The redirect back to the client, recorded where the client itself listens (a
            // loopback redirect URI, RFC 8252 §7.3): the authorization server sent a code.
            Role::Other
                if x.method() == "GET"
                    && redirects.contains(&client_url(x))
                    && x.query().iter().any(|(k, _)| k == "code")
                    && !x.query().iter().any(|(k, _)| k == "error") =>
            {
                mark(StageId::Authorize, x, x.end_t())
            }
            Role::Token
                if form_value(&x.request_body.text(), "grant_type").as_deref()
                    == Some("authorization_code") =>
            {
                if ok
                    && x.response_body
                        .json()
                        .is_some_and(|j| j.get("access_token").is_some())
                {
                    mark(StageId::Token, x, x.end_t())
                } else {
                    refuse(StageId::Token, x)
                }
            }
            Role::Mcp | Role::LegacySse => {
                let stream = x.response_media_type().as_deref() == Some("text/event-stream");
                if ok
                    && stream
                    && s.sent
                        .iter()
                        .any(|m| m.method() == Some("subscriptions/listen"))
                {
                    // A listen stream is open when its headers arrive; its answer ends it.
                    mark(StageId::Listen, x, x.response_t.unwrap_or(x.t));
                }
                if x.method() == "GET" && ((ok && stream) || x.status() == Some(405)) {
                    // A stream is reached when its headers arrive, not when it ends.
                    mark(StageId::GetStream, x, x.response_t.unwrap_or(x.t));
                } else if x.method() == "GET" && s.role == Role::Mcp && failed {
                    refuse(StageId::GetStream, x);
                }
            }
            _ => {}
        }
        if matches!(s.role, Role::Mcp | Role::LegacyMessages)
            && s.sent
                .iter()
                .any(|m| m.method() == Some("notifications/initialized"))
        {
            if ok {
                mark(StageId::Initialized, x, x.end_t());
            } else if failed {
                refuse(StageId::Initialized, x);
            }
        }
    }
    // A request refused: a JSON-RPC error, or an HTTP error (a 401 is the challenge, not a
    // refusal) with no answer at all.
    for call in calls {
        let Ok(i) = steps.binary_search_by_key(&call.ex, |s| s.x.ex) else {
            continue;
        };
        let x = steps[i].x;
        let refused_here = match &call.answer {
            Some((_, _, Message::Error { .. })) => true,
            Some(_) => false,
            None => x.status().is_some_and(|c| c >= 400 && c != 401),
        };
        if !refused_here {
            continue;
        }
        let stage = match call.method.as_str() {
            "initialize" => Some(StageId::Initialize),
            "server/discover" => Some(StageId::Discover),
            "tools/list" | "resources/list" | "prompts/list" | "resources/templates/list" => {
                Some(StageId::List)
            }
            "subscriptions/listen" | "ping" | "logging/setLevel" => None,
            _ => Some(StageId::Call),
        };
        if let Some(stage) = stage {
            refused.entry(stage).or_insert(call.ex);
        }
    }
    for call in calls {
        let Some((_, t, Message::Result { result, .. })) = &call.answer else {
            continue;
        };
        let Ok(i) = steps.binary_search_by_key(&call.ex, |s| s.x.ex) else {
            continue;
        };
        let step = &steps[i];
        let authed = step.bearer.is_some() || !challenged;
        let stage =
            match call.method.as_str() {
                "initialize" => (authed && result.get("protocolVersion").is_some())
                    .then_some(StageId::Initialize),
                "server/discover" => (authed && result.get("supportedVersions").is_some())
                    .then_some(StageId::Discover),
                "subscriptions/listen" => None,
                "tools/list" | "resources/list" | "prompts/list" | "resources/templates/list" => {
                    Some(StageId::List)
                }
                "ping" | "logging/setLevel" => None,
                _ => Some(StageId::Call),
            };
        if let Some(stage) = stage {
            first.entry(stage).or_insert((call.ex, *t));
        }
    }
    let latest = first.keys().max().copied();
    let oauth = steps.iter().any(|s| {
        s.bearer.is_some()
            || matches!(
                s.role,
                Role::ResourceMetadata
                    | Role::AuthServerMetadata
                    | Role::Registration
                    | Role::Authorize
                    | Role::Token
            )
            || (matches!(s.role, Role::Mcp | Role::LegacyMessages) && s.x.status() == Some(401))
    });
    StageId::ALL
        .iter()
        .map(|&id| {
            let seen = first.get(&id);
            let reached = match (seen, latest) {
                (Some(_), _) => Reached::Reached,
                (None, _) if !id.in_era(era) => Reached::NotApplicable,
                (None, _) if id.is_auth() && !oauth => Reached::NotApplicable,
                (None, _) if id == StageId::Call && probe => Reached::NotApplicable,
                // Listening for notifications is optional in a flow.
                (None, _) if id == StageId::Listen => Reached::NotApplicable,
                (None, Some(l))
                    if l > id
                        && (id.is_auth()
                            || id == StageId::GetStream
                            || id == StageId::Discover) =>
                {
                    Reached::NotObserved
                }
                _ => Reached::Missing,
            };
            Stage {
                id,
                reached,
                first_exchange: seen.map(|(ex, _)| *ex),
                t: seen.map(|(_, t)| *t),
                refused: if seen.is_none() {
                    refused.get(&id).copied()
                } else {
                    None
                },
            }
        })
        .collect()
}

/// The media type of a recorded header list's Content-Type.
pub fn content_type_of(headers: &mcptap_capture::model::Headers) -> Option<String> {
    headers.get("content-type").map(media_type)
}

/// An authorization response that redirects back with an OAuth error (RFC 6749 §4.1.2.1).
pub fn oauth_error_redirect(x: &Exchange) -> bool {
    x.status().is_some_and(|c| (300..400).contains(&c))
        && x.response_header("location")
            .and_then(|l| l.split_once('?'))
            .is_some_and(|(_, q)| form_value(q, "error").is_some())
}

/// How a step was refused, in the server's own words where it gave some: `HTTP 405 (body:
/// …)`, `JSON-RPC error -32600 "Unsupported protocol version"`, `redirected with
/// error=access_denied (…)`.
pub fn refusal(step: &Step<'_>, answer: Option<&Message>) -> String {
    let x = step.x;
    if let Some(Message::Error { code, message, .. }) = answer {
        let status = x
            .status()
            .map(|s| format!("HTTP {s}, "))
            .unwrap_or_default();
        return format!("{status}JSON-RPC error {code} \"{message}\"");
    }
    if oauth_error_redirect(x) {
        let query = x
            .response_header("location")
            .and_then(|l| l.split_once('?'))
            .map(|(_, q)| q.to_string())
            .unwrap_or_default();
        let error = form_value(&query, "error").unwrap_or_default();
        return match form_value(&query, "error_description") {
            Some(d) => format!("redirected with error={error} (\"{d}\")"),
            None => format!("redirected with error={error}"),
        };
    }
    let Some(status) = x.status() else {
        return "no response at all".into();
    };
    let body = x.response_body.text();
    let words = match x.response_body.json() {
        // OAuth's error fields, then a JSON-RPC error object, then the text itself.
        Some(j) if j.get("error").is_some_and(Value::is_string) => {
            let error = j["error"].as_str().unwrap_or_default();
            match j.get("error_description").and_then(Value::as_str) {
                Some(d) => format!("error {error}: \"{d}\""),
                None => format!("error {error}"),
            }
        }
        Some(j) if j.pointer("/error/message").is_some_and(Value::is_string) => format!(
            "JSON-RPC error {} \"{}\"",
            j.pointer("/error/code")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            j.pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        _ if body.trim().is_empty() => "an empty body".into(),
        _ if x.response_media_type().is_some_and(|m| m == "text/html") => {
            format!("an HTML page: \"{}\"", snippet(&html_text(&body)))
        }
        _ => format!("\"{}\"", snippet(&body)),
    };
    format!("HTTP {status}, {words}")
}

/// The words of an HTML page, without its tags, for quoting.
fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut in_tag = false;
    for c in html.chars().take(20_000) {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// A token request as clients make them (RFC 6749 §4.1.3): a POST whose form body names a
/// grant type. A JSON body that quotes `grant_type=` (a tool call's argument) is not one.
pub fn is_grant_request(method: &str, form: bool, body: &str) -> bool {
    method == "POST" && form && body.contains("grant_type=")
}

/// The stage one exchange shows by itself, for the proxy's live lines (the full analysis needs
/// the whole session; this needs only the exchange). `request_form`: the request's body is
/// declared `application/x-www-form-urlencoded`.
pub fn stage_hint(
    method: &str,
    path: &str,
    request_body: &[u8],
    request_form: bool,
    status: Option<u16>,
    authenticated: bool,
    response_type: Option<&str>,
) -> Option<StageId> {
    let ok = status.is_some_and(|c| (200..300).contains(&c));
    if path.starts_with("/.well-known/oauth-protected-resource") {
        return Some(StageId::ResourceMetadata);
    }
    if path.starts_with("/.well-known/oauth-authorization-server")
        || path.contains("/.well-known/openid-configuration")
    {
        return Some(StageId::AuthServerMetadata);
    }
    let text = String::from_utf8_lossy(request_body);
    if is_grant_request(method, request_form, &text) {
        return Some(StageId::Token);
    }
    if method == "POST" && text.contains("\"redirect_uris\"") {
        return Some(StageId::Registration);
    }
    if method == "GET"
        && status.is_some_and(|c| (300..400).contains(&c))
        && path.ends_with("authorize")
    {
        return Some(StageId::Authorize);
    }
    if let Some(messages) = jsonrpc::decode_bytes(request_body) {
        if status == Some(401) && !authenticated {
            return Some(StageId::Challenge);
        }
        if !ok {
            return None;
        }
        let methods: Vec<&str> = messages.iter().filter_map(|m| m.method()).collect();
        return methods.iter().find_map(|m| match *m {
            "server/discover" => Some(StageId::Discover),
            "subscriptions/listen" => Some(StageId::Listen),
            "initialize" => Some(StageId::Initialize),
            "notifications/initialized" => Some(StageId::Initialized),
            "tools/list" | "resources/list" | "prompts/list" | "resources/templates/list" => {
                Some(StageId::List)
            }
            m if m.starts_with("notifications/") || m == "ping" => None,
            _ => Some(StageId::Call),
        });
    }
    if method == "GET"
        && (status == Some(405) || (ok && response_type == Some("text/event-stream")))
    {
        return Some(StageId::GetStream);
    }
    None
}
