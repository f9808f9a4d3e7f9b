//! What a replay sends, read off the capture before anything is sent: which exchanges
//! (`--only`/`--skip`, and what cannot be re-sent), after what (the response
//! that issued a code, a token or a session id comes before the request that presents it),
//! and which PKCE verifiers must be made up because the recorded ones were redacted.

use std::collections::HashMap;
use std::time::Duration;

use super::fill::{self, url_params, whole_placeholder};
use crate::capture::model::Outcome;
use crate::capture::reader::{Capture, Exchange};
use crate::mcp::jsonrpc;

/// How far a step has got; later steps wait for one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    /// Response headers arrived (or the request failed).
    Answered,
    /// The response is over (or the step will never be sent).
    Done,
}

/// One recorded exchange to re-send.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index into `Capture::exchanges`.
    pub index: usize,
    pub ex: u64,
    /// `POST /mcp tools/call`.
    pub label: String,
    /// The recorded request time, from the first selected request.
    pub offset: Duration,
    /// Steps (by index in [`Plan::steps`]) whose values this one uses, and how far they must be.
    pub waits: Vec<(usize, Phase)>,
    /// Whole-value rewrites for this request only (a PKCE challenge made afresh).
    pub scoped: Vec<(String, String)>,
    /// The recorded client left the response (or the proxy cut it) after this long.
    pub left_after: Option<Duration>,
    /// The recorded connection (`--concurrent` keeps each one's order).
    pub conn: u64,
}

/// The whole replay, decided up front.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Recorded exchanges that cannot be re-sent, with why.
    pub unsendable: Vec<String>,
    /// Exchanges left out by `--only`/`--skip`.
    pub deselected: usize,
    /// fp → the recorded exchange whose response first carried it (selected or not).
    pub sources: HashMap<String, u64>,
    /// fp → a value made up for this replay (PKCE verifiers).
    pub generated: HashMap<String, String>,
}

/// `--only` / `--skip` patterns.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl Selection {
    /// Whether an exchange is selected: the patterns match "METHOD PATH" or a JSON-RPC method.
    pub fn selects(&self, subjects: &[String]) -> bool {
        let hit =
            |patterns: &[String]| patterns.iter().any(|p| subjects.iter().any(|s| glob(p, s)));
        (self.only.is_empty() || hit(&self.only)) && !hit(&self.skip)
    }
}

/// A simple glob: `*` matches any run of characters (`/` included); case-insensitive.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point: linear for patterns without many stars.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The JSON-RPC methods a recorded request carries.
pub fn rpc_methods(x: &Exchange) -> Vec<String> {
    jsonrpc::decode_bytes(&x.request_body.bytes)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.method().map(str::to_string))
        .collect()
}

/// `POST /mcp tools/call`.
pub fn label(x: &Exchange) -> String {
    let methods = rpc_methods(x);
    if methods.is_empty() {
        format!("{} {}", x.method(), x.path())
    } else {
        format!("{} {} {}", x.method(), x.path(), methods.join(","))
    }
}

/// Why a recorded exchange cannot be re-sent, if it cannot.
fn unsendable(x: &Exchange) -> Option<&'static str> {
    let upgrade =
        x.upgrade.is_some() || x.status() == Some(101) || x.request_header("upgrade").is_some();
    if x.method().eq_ignore_ascii_case("CONNECT") {
        Some("CONNECT is never forwarded")
    } else if upgrade {
        Some("upgraded connections (WebSocket) are not replayed")
    } else if x.request_body.truncated {
        Some("its request body was recorded only up to --max-body")
    } else if http::Method::from_bytes(x.method().as_bytes()).is_err() {
        Some("its method is not a valid HTTP method")
    } else {
        None
    }
}

/// Decides the replay. `supplied`: the fingerprints `--secrets` fills (their PKCE verifiers
/// are kept as they are).
pub fn plan(capture: &Capture, selection: &Selection, supplied: &HashMap<String, String>) -> Plan {
    let mut plan = Plan::default();
    for x in &capture.exchanges {
        for fp in fill::response_fps(x) {
            plan.sources.entry(fp).or_insert(x.ex);
        }
    }
    let mut first_t = None;
    for (index, x) in capture.exchanges.iter().enumerate() {
        let mut subjects = vec![format!("{} {}", x.method(), x.path())];
        subjects.extend(rpc_methods(x));
        if !selection.selects(&subjects) {
            plan.deselected += 1;
            continue;
        }
        if let Some(why) = unsendable(x) {
            plan.unsendable
                .push(format!("exchange {} ({}): {why}", x.ex, label(x)));
            continue;
        }
        let t0 = *first_t.get_or_insert(x.t);
        let left_after = match (x.outcome(), x.response_t) {
            (Some(Outcome::Complete | Outcome::UpstreamAborted), _) | (_, None) => None,
            (_, Some(rt)) => Some(Duration::from_micros(x.end_t().saturating_sub(rt))),
        };
        plan.steps.push(Step {
            index,
            ex: x.ex,
            label: label(x),
            offset: Duration::from_micros(x.t.saturating_sub(t0)),
            waits: Vec::new(),
            scoped: Vec::new(),
            left_after,
            conn: x.conn,
        });
    }

    // Which selected step first hands out each secret and each identifier.
    let mut fp_source: HashMap<String, usize> = HashMap::new();
    let mut literal_source: Vec<(String, usize)> = Vec::new();
    for (k, step) in plan.steps.iter().enumerate() {
        let x = &capture.exchanges[step.index];
        for fp in fill::response_fps(x) {
            fp_source.entry(fp).or_insert(k);
        }
        for lit in fill::response_literals(x) {
            if !literal_source.iter().any(|(l, _)| *l == lit) {
                literal_source.push((lit, k));
            }
        }
    }
    let ends: Vec<u64> = plan
        .steps
        .iter()
        .map(|s| capture.exchanges[s.index].end_t())
        .collect();
    for k in 0..plan.steps.len() {
        let x = &capture.exchanges[plan.steps[k].index];
        let mut waits: Vec<(usize, Phase)> = Vec::new();
        let mut wait = |p: usize| {
            // A response still streaming when the request went out is waited for only
            // until it answered; the rest of it may hold nothing this request needs.
            let phase = if ends[p] <= x.t {
                Phase::Done
            } else {
                Phase::Answered
            };
            if !waits.contains(&(p, phase)) {
                waits.push((p, phase));
            }
        };
        for fp in fill::request_fps(x) {
            if let Some(&p) = fp_source.get(&fp).filter(|&&p| p < k) {
                wait(p);
            }
        }
        for (lit, p) in &literal_source {
            if *p < k && fill::request_uses(x, lit) {
                wait(*p);
            }
        }
        plan.steps[k].waits = waits;
    }

    // PKCE: a redacted code_verifier cannot be sent again, but the authorization request
    // that issued the code is replayed too, so it gets a challenge for a fresh verifier.
    for k in 0..plan.steps.len() {
        let x = &capture.exchanges[plan.steps[k].index];
        let params: Vec<(String, String)> =
            if x.request_media_type().as_deref() == Some("application/x-www-form-urlencoded") {
                form_urlencoded::parse(&x.request_body.bytes)
                    .map(|(a, b)| (a.into_owned(), b.into_owned()))
                    .collect()
            } else {
                url_params(&x.request.target)
            };
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let Some(verifier_fp) = param("code_verifier")
            .as_deref()
            .and_then(whole_placeholder)
            .map(str::to_string)
        else {
            continue;
        };
        if supplied.contains_key(&verifier_fp) || plan.generated.contains_key(&verifier_fp) {
            continue;
        }
        let Some(&a) = param("code")
            .as_deref()
            .and_then(whole_placeholder)
            .and_then(|code| fp_source.get(code))
            .filter(|&&a| a < k)
        else {
            continue;
        };
        let authorize = url_params(&capture.exchanges[plan.steps[a].index].request.target);
        let get = |name: &str| {
            authorize
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let Some(challenge) = get("code_challenge").filter(|c| whole_placeholder(c).is_none())
        else {
            continue;
        };
        // RFC 7636 §4.3: without a method the challenge is the verifier itself.
        let method = get("code_challenge_method").unwrap_or_else(|| "plain".into());
        let (verifier, new_challenge) = fill::pkce_pair(&method);
        plan.generated.insert(verifier_fp, verifier);
        plan.steps[a].scoped.push((challenge, new_challenge));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_methods_paths_and_rpc_methods() {
        assert!(glob("POST /mcp", "post /mcp"));
        assert!(glob("tools/*", "tools/call"));
        assert!(glob(
            "GET /.well-known/*",
            "GET /.well-known/oauth-protected-resource/mcp"
        ));
        assert!(glob("*", ""));
        assert!(glob("*list*", "resources/templates/list"));
        assert!(!glob("tools/*", "initialize"));
        assert!(!glob("a*b", "acbc"));
    }

    #[test]
    fn only_and_skip_combine() {
        let s = Selection {
            only: vec!["tools/*".into()],
            skip: vec!["tools/list".into()],
        };
        let subjects = |m: &str| vec!["POST /mcp".to_string(), m.to_string()];
        assert!(s.selects(&subjects("tools/call")));
        assert!(!s.selects(&subjects("tools/list")));
        assert!(!s.selects(&subjects("initialize")));
    }
}
