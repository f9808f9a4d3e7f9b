//! Which protocol era a session ran in, and how client and server got there.
//!
//! MCP 2026-07-28 ("modern") has no `initialize`: each request carries its protocol version in
//! `params._meta` and in the `MCP-Protocol-Version` header, and a client that also speaks the
//! 2025 revisions ("legacy", with the `initialize` handshake) probes with a modern request,
//! usually `server/discover`, and falls back to `initialize` when a `400` carries no modern
//! JSON-RPC error (2026-07-28 basic/versioning "Backward Compatibility with
//! Initialization-Based Versions"; basic/transports/streamable-http "Backward Compatibility").
//! Everything here is read from the traffic alone.

use serde::Serialize;
use serde_json::Value;

use super::jsonrpc::Message;
use super::session::{snippet, Call, Role, Step};

/// The protocol revisions of the modern era that mcptap knows.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// The `_meta` key of a modern request that names its protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The JSON-RPC errors 2026-07-28 defines for a modern request it will not serve as sent:
/// HeaderMismatch, MissingRequiredClientCapability, UnsupportedProtocolVersion. A client
/// that gets one of these is talking to a modern server and must not fall back.
pub const MODERN_ERRORS: &[i64] = &[-32020, -32021, -32022];

/// A refusal of a modern request that only a 2026-07-28 server gives: one of
/// [`MODERN_ERRORS`], or -32601 (method not found) on a 404. A client must not fall back on
/// it; any other 4xx refusal identifies a legacy server.
pub fn is_modern_error(status: u16, code: i64) -> bool {
    MODERN_ERRORS.contains(&code) || (status == 404 && code == -32601)
}

/// The era a client flow ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Era {
    /// 2026-07-28: per-request metadata, `server/discover`, no sessions.
    Modern,
    /// The 2025 revisions (or 2024-11-05), opened with `initialize`; no modern attempt.
    Legacy,
    /// A modern request was refused, then the client opened with `initialize`.
    Fallback,
    /// The client tried the modern era and reached neither: its probe failed and no
    /// `initialize` followed (or the client would not fall back).
    FailedNegotiation,
    /// No MCP request in the capture: the era cannot be told.
    Unknown,
}

impl Era {
    pub fn id(self) -> &'static str {
        match self {
            Era::Modern => "modern",
            Era::Legacy => "legacy",
            Era::Fallback => "fallback",
            Era::FailedNegotiation => "failed_negotiation",
            Era::Unknown => "unknown",
        }
    }

    /// Words for the era, as the explanation's header line gives it.
    pub fn label(self) -> &'static str {
        match self {
            Era::Modern => "2026-07-28",
            Era::Legacy => "2025 (initialize)",
            Era::Fallback => "2025 after fallback from 2026-07-28",
            Era::FailedNegotiation => "none: negotiation failed",
            Era::Unknown => "unknown (no MCP request)",
        }
    }

    /// The era in a table's column: `2026-07-28`, `2025`, `fallback`, `failed`, `–`.
    pub fn short(self) -> &'static str {
        match self {
            Era::Modern => "2026-07-28",
            Era::Legacy => "2025",
            Era::Fallback => "fallback",
            Era::FailedNegotiation => "failed",
            Era::Unknown => "–",
        }
    }

    /// The flow runs, or tried to run, the 2025 lifecycle.
    pub fn is_legacy(self) -> bool {
        matches!(self, Era::Legacy | Era::Fallback)
    }
}

/// How the client's probe (its first modern request past the authorization gate) was answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeAnswer {
    /// A JSON-RPC result.
    Result { status: u16 },
    /// A JSON-RPC error that 2026-07-28 defines ([`MODERN_ERRORS`], or -32601 on a 404): the
    /// server speaks the modern era.
    ModernError {
        status: u16,
        code: i64,
        message: String,
    },
    /// Another JSON-RPC error on a 4xx: what a server that does not speak 2026-07-28 answers,
    /// and what a dual-era client falls back on.
    LegacyError {
        status: u16,
        code: i64,
        message: String,
    },
    /// A 4xx with no JSON-RPC error in it.
    Refused { status: u16, body: String },
    /// A 5xx: the SDK clients do not fall back on it. `detail`: its JSON-RPC error in words,
    /// or its body.
    ServerError { status: u16, detail: String },
    /// A 2xx, 1xx or 3xx with no JSON-RPC answer to the request.
    NoAnswer { status: u16, body: String },
    /// No response at all.
    Nothing,
}

impl ProbeAnswer {
    /// A refusal that a dual-era client reads as "legacy server, fall back".
    pub fn allows_fallback(&self) -> bool {
        matches!(
            self,
            ProbeAnswer::LegacyError { .. } | ProbeAnswer::Refused { .. }
        )
    }

    /// The answer in words: `HTTP 400, JSON-RPC error -32000 "Bad Request: …"`.
    pub fn describe(&self) -> String {
        match self {
            ProbeAnswer::Result { status } => format!("HTTP {status} with a JSON-RPC result"),
            ProbeAnswer::ModernError {
                status,
                code,
                message,
            }
            | ProbeAnswer::LegacyError {
                status,
                code,
                message,
            } => format!("HTTP {status}, JSON-RPC error {code} \"{message}\""),
            ProbeAnswer::ServerError { status, detail } => format!("HTTP {status}, {detail}"),
            ProbeAnswer::Refused { status, body } | ProbeAnswer::NoAnswer { status, body } => {
                if body.is_empty() {
                    format!("HTTP {status} with an empty body")
                } else {
                    format!("HTTP {status} with no JSON-RPC answer (body: {body})")
                }
            }
            ProbeAnswer::Nothing => "no response at all".into(),
        }
    }
}

/// The era of a client flow and the evidence for it.
#[derive(Debug, Clone, Serialize)]
pub struct Negotiation {
    pub era: Era,
    /// The protocol version the flow ran on, as the traffic shows it.
    pub protocol_version: Option<String>,
    /// The client's first modern request past the authorization gate: its exchange and method.
    pub probe: Option<u64>,
    pub probe_method: Option<String>,
    pub probe_answer: Option<ProbeAnswer>,
    /// The first `initialize` request: the legacy opening, or the fallback after the probe.
    pub initialize: Option<u64>,
    /// How that `initialize` was answered.
    pub initialize_answer: Option<ProbeAnswer>,
    /// The versions the server named: a DiscoverResult's `supportedVersions`, an
    /// UnsupportedProtocolVersion error's `data.supported`, or an InitializeResult's version.
    pub server_versions: Vec<String>,
}

/// The protocol version a modern request names (its `_meta`, else its header).
pub fn modern_version(step: &Step<'_>, message: &Message) -> Option<String> {
    let from_meta = match message {
        Message::Request {
            params: Some(params),
            ..
        } => params
            .get("_meta")
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    from_meta.or_else(|| {
        step.x
            .request_header("mcp-protocol-version")
            .filter(|v| MODERN_VERSIONS.contains(&v.trim()))
            .map(|v| v.trim().to_string())
    })
}

/// A request of the modern era: `server/discover`, or one that names a modern version.
pub fn is_modern_request(step: &Step<'_>, message: &Message) -> bool {
    message.method() == Some("server/discover") || modern_version(step, message).is_some()
}

/// The first request of a step, with its method.
fn first_request<'s>(step: &'s Step<'_>) -> Option<&'s Message> {
    step.sent.iter().find(|m| m.is_request())
}

fn auth_gate(step: &Step<'_>) -> bool {
    matches!(step.x.status(), Some(401 | 403))
}

/// How the probe `step` was answered, from its status and the answer paired with it.
fn probe_answer(step: &Step<'_>, calls: &[Call]) -> ProbeAnswer {
    let Some(status) = step.x.status() else {
        return ProbeAnswer::Nothing;
    };
    let request_id = first_request(step).and_then(Message::id);
    let answer = calls
        .iter()
        .find(|c| c.ex == step.x.ex && Some(c.id.as_str()) == request_id)
        .and_then(|c| c.answer.as_ref().map(|(_, _, m)| m.clone()))
        // An error with a null id (the SDKs' "Bad Request" answers) answers the request too.
        .or_else(|| {
            step.received
                .iter()
                .map(|(_, m)| m)
                .find(|m| matches!(m, Message::Error { .. }))
                .cloned()
        });
    let body = snippet(&step.x.response_body.text());
    match (answer, status) {
        (Some(Message::Result { .. }), _) => ProbeAnswer::Result { status },
        (Some(Message::Error { code, message, .. }), _) if is_modern_error(status, code) => {
            ProbeAnswer::ModernError {
                status,
                code,
                message,
            }
        }
        (Some(Message::Error { code, message, .. }), 400..=499) => ProbeAnswer::LegacyError {
            status,
            code,
            message,
        },
        (Some(Message::Error { code, message, .. }), 500..=599) => ProbeAnswer::ServerError {
            status,
            detail: format!("JSON-RPC error {code} \"{message}\""),
        },
        (_, 500..=599) => ProbeAnswer::ServerError {
            status,
            detail: if body.is_empty() {
                "an empty body".into()
            } else {
                format!("no JSON-RPC answer (body: {body})")
            },
        },
        (_, 400..=499) => ProbeAnswer::Refused { status, body },
        _ => ProbeAnswer::NoAnswer { status, body },
    }
}

/// Versions named in a JSON-RPC error's data (`supported`) or a result's `supportedVersions`.
fn versions_in(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The versions an UnsupportedProtocolVersion error names (`data.supported`) in `step`'s answer.
fn error_versions(step: &Step<'_>) -> Vec<String> {
    step.received
        .iter()
        .find_map(|(_, m)| match m {
            Message::Error { data, .. } => {
                Some(versions_in(data.as_ref().and_then(|d| d.get("supported"))))
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// Reads the era of the flow in `steps` (in time order) from its MCP requests;
/// `probe_capture`: the capture is `mcptap probe`'s.
pub fn negotiate(steps: &[Step<'_>], calls: &[Call], probe_capture: bool) -> Negotiation {
    let mcp = || {
        steps
            .iter()
            .filter(|s| matches!(s.role, Role::Mcp | Role::LegacyMessages))
    };
    let modern_step = |s: &&Step<'_>| first_request(s).is_some_and(|m| is_modern_request(s, m));
    let is_init = |s: &&Step<'_>| first_request(s).and_then(Message::method) == Some("initialize");
    // The initialize the server answered past its authorization gate (else the first one).
    let initialize = mcp()
        .filter(is_init)
        .find(|s| !auth_gate(s))
        .or_else(|| mcp().find(is_init));
    let mut negotiation = Negotiation {
        era: Era::Unknown,
        protocol_version: None,
        probe: None,
        probe_method: None,
        probe_answer: None,
        initialize: initialize.map(|s| s.x.ex),
        initialize_answer: initialize
            .filter(|s| !auth_gate(s))
            .map(|s| probe_answer(s, calls)),
        server_versions: Vec::new(),
    };
    let init_result = initialize.and_then(|s| {
        calls
            .iter()
            .find(|c| c.ex == s.x.ex && c.method == "initialize")
            .and_then(|c| match &c.answer {
                Some((_, _, Message::Result { result, .. })) => Some(result.clone()),
                _ => None,
            })
    });
    let init_version = init_result
        .as_ref()
        .and_then(|r| r.get("protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_string);

    let first_modern = mcp().find(modern_step);
    let Some(first_modern) = first_modern else {
        negotiation.era = if mcp().next().is_some() {
            Era::Legacy
        } else {
            Era::Unknown
        };
        negotiation.protocol_version = init_version.clone().or_else(|| {
            mcp()
                .find_map(|s| s.x.request_header("mcp-protocol-version"))
                .map(str::to_string)
        });
        negotiation.server_versions.extend(init_version);
        if let Some(init) = initialize {
            negotiation.server_versions.extend(error_versions(init));
        }
        return negotiation;
    };
    // The modern request the server answered past its authorization gate, if any.
    let probe = mcp()
        .filter(modern_step)
        .find(|s| !auth_gate(s) && s.x.t >= first_modern.x.t);
    let Some(probe) = probe else {
        // Every modern request met the authorization gate: the client speaks 2026-07-28 and
        // the server has not answered it yet.
        negotiation.era = Era::Modern;
        negotiation.protocol_version = first_request(first_modern)
            .and_then(|m| modern_version(first_modern, m))
            .or_else(|| Some(MODERN_VERSIONS[0].to_string()));
        return negotiation;
    };
    let request = first_request(probe).expect("a modern step has a request");
    negotiation.probe = Some(probe.x.ex);
    negotiation.probe_method = request.method().map(str::to_string);
    let answer = probe_answer(probe, calls);
    negotiation.server_versions.extend(error_versions(probe));
    let answered_modern = |from: u64| {
        mcp().filter(modern_step).find(|s| {
            s.x.t >= from
                && !auth_gate(s)
                && matches!(probe_answer(s, calls), ProbeAnswer::Result { .. })
        })
    };
    // `mcptap probe` speaks both eras and asks both, in its own order: for its capture, any
    // initialize counts as the fallback.
    let fallback = if probe_capture {
        mcp().find(is_init)
    } else {
        mcp().filter(is_init).find(|s| s.x.t >= probe.x.t)
    };
    negotiation.era = if let Some(ok) = answered_modern(probe.x.t) {
        // The probe, or a retry with a version the server named, was served.
        if let Some(result) = calls
            .iter()
            .find(|c| c.ex == ok.x.ex && c.method == "server/discover")
            .and_then(|c| match &c.answer {
                Some((_, _, Message::Result { result, .. })) => Some(result),
                _ => None,
            })
        {
            negotiation
                .server_versions
                .extend(versions_in(result.get("supportedVersions")));
        }
        negotiation.protocol_version = first_request(ok).and_then(|m| modern_version(ok, m));
        Era::Modern
    } else if fallback.is_some() {
        negotiation.protocol_version = init_version.clone();
        negotiation.server_versions.extend(init_version);
        Era::Fallback
    } else {
        negotiation.protocol_version = modern_version(probe, request);
        Era::FailedNegotiation
    };
    let mut seen = std::collections::HashSet::new();
    negotiation
        .server_versions
        .retain(|v| seen.insert(v.clone()));
    negotiation.probe_answer = Some(answer);
    negotiation
}
