//! Client flows: a capture's exchanges grouped by the client that made them.
//!
//! A proxy on a public domain records more than one tidy client: a connector that retries, a
//! user who reconnects, other users, scanners. Each client's flow is found from the evidence
//! the traffic carries, strongest first:
//!
//! 1. **Identity.** Exchanges that share a credential or a session are one flow: an access
//!    token issued by `/token` and the requests that present it (or any bearer credential the
//!    requests share), a refresh token and the refresh that spends it, an authorization code in
//!    `/authorize`'s redirect and the token request that redeems it, a client id issued by
//!    dynamic registration and the authorization requests that use it, an `Mcp-Session-Id`
//!    and the requests that carry it, a legacy SSE stream's session and its message posts.
//! 2. **Place and time**, only for an exchange that carries no identity (a 401 challenge,
//!    metadata fetches, a registration nobody used): it joins the flow of the nearest
//!    exchange with an identity on its own connection, else the nearest flow from the same
//!    client address and User-Agent within [`NEARBY`]; an authorization request with no other
//!    tie (a client id shared by every user of a client, as with a client ID metadata
//!    document) joins the latest flow that had not yet reached authorization.
//! 3. Exchanges left over that share an address and User-Agent, each within [`NEARBY`] of the
//!    last, are one flow.
//!
//! A group in which no exchange is part of MCP or its authorization (a favicon, a health
//! check, a scanner's probe of `/wp-login.php`) is *other traffic*: counted, never a flow.
//!
//! Limits: two users behind one address with one User-Agent (the same hosted connector) who
//! run their unauthenticated discovery within [`NEARBY`] of each other may have those steps
//! put in the wrong one's flow; their authenticated steps never mix. A client that opens a
//! new connection, changes address and presents no credential it used before starts a new flow.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::session::{form_value, token_key, Role, Session, Step};
use mcptap_capture::reader::Capture;

/// How far apart in time two exchanges of one client may be and still be tied by place alone.
pub const NEARBY_US: u64 = 60_000_000;
/// [`NEARBY_US`], for the docs.
pub const NEARBY: &str = "60 s";
/// How long after a flow's last step a browser's authorization request may still be its.
const AUTHORIZE_WAIT_US: u64 = 600_000_000;

/// One client's flow.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    /// 1, 2, … in the order the flows began.
    pub number: usize,
    /// Its exchanges, in order.
    pub exchanges: Vec<u64>,
    /// The client as the capture shows it: address and User-Agent of its first MCP request
    /// (or of its first request).
    pub client: String,
    /// µs since the session start: its first request, and the end of its last exchange.
    pub first_t: u64,
    pub last_t: u64,
}

/// A capture split into flows and other traffic.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub flows: Vec<Flow>,
    /// Exchanges in no flow.
    pub other: Vec<u64>,
}

/// Splits a capture analysed as a whole into its client flows.
pub fn split(session: &Session<'_>) -> Split {
    let steps = &session.steps;
    let n = steps.len();
    let mut sets = UnionFind::new(n);
    let mut anchored = vec![false; n];

    // 1. Identity: every key names the steps that share it.
    let mut keys: HashMap<String, Vec<usize>> = HashMap::new();
    let mut key = |k: String, i: usize| keys.entry(k).or_default().push(i);
    let mut dcr_clients: HashMap<String, usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        let x = s.x;
        if let Some(bearer) = &s.bearer {
            key(format!("bearer {bearer}"), i);
        }
        if let Some(id) = x.request_header("mcp-session-id") {
            key(format!("session {id}"), i);
        }
        if s.role == Role::Mcp || s.role == Role::LegacySse || s.role == Role::LegacyMessages {
            if let Some(id) = x.response_header("mcp-session-id") {
                key(format!("session {id}"), i);
            }
        }
        // The redirect back to the client (`/callback?code=…`), where it reaches the capture.
        if s.role != Role::Token {
            if let Some((_, code)) = x.query().into_iter().find(|(k, _)| k == "code") {
                key(format!("code {}", token_key(&code)), i);
            }
        }
        match s.role {
            Role::Token => {
                let form = x.request_body.text();
                if let Some(body) = x.response_body.json() {
                    for (field, prefix) in
                        [("access_token", "bearer"), ("refresh_token", "refresh")]
                    {
                        if let Some(t) = body.get(field).and_then(Value::as_str) {
                            key(format!("{prefix} {}", token_key(t)), i);
                        }
                    }
                }
                if let Some(code) = form_value(&form, "code") {
                    key(format!("code {}", token_key(&code)), i);
                }
                if let Some(refresh) = form_value(&form, "refresh_token") {
                    key(format!("refresh {}", token_key(&refresh)), i);
                }
            }
            Role::Authorize => {
                if let Some(code) = redirect_param(s, "code") {
                    key(format!("code {}", token_key(&code)), i);
                }
            }
            Role::Registration => {
                if let Some(id) = x
                    .response_body
                    .json()
                    .and_then(|b| b.get("client_id").and_then(Value::as_str).map(String::from))
                {
                    dcr_clients.insert(id, i);
                }
            }
            Role::LegacySse => {
                for (_, e) in &x.sse {
                    if e.event.as_deref() == Some("endpoint") {
                        if let Some(id) =
                            e.data.as_deref().and_then(|d| query_value(d, "sessionId"))
                        {
                            key(format!("legacy {id}"), i);
                        }
                    }
                }
            }
            Role::LegacyMessages => {
                if let Some((_, id)) = x.query().into_iter().find(|(k, _)| k == "sessionId") {
                    key(format!("legacy {id}"), i);
                }
            }
            _ => {}
        }
    }
    // A client id issued by registration here is that registration's (one per client, as
    // dynamic registration gives them); a client id metadata document's URL is every user's.
    for (i, s) in steps.iter().enumerate() {
        if matches!(s.role, Role::Authorize | Role::Token) {
            let id = if s.role == Role::Authorize {
                s.x.query()
                    .into_iter()
                    .find(|(k, _)| k == "client_id")
                    .map(|(_, v)| v)
            } else {
                form_value(&s.x.request_body.text(), "client_id")
            };
            if let Some(&reg) = id.as_ref().and_then(|id| dcr_clients.get(id)) {
                anchored[reg] = true;
                anchored[i] = true;
                sets.union(reg, i);
            }
        }
    }
    for members in keys.values() {
        for &m in members {
            anchored[m] = true;
        }
        for w in members.windows(2) {
            sets.union(w[0], w[1]);
        }
    }

    // 2. Place and time, for the steps without an identity.
    let clients: Vec<String> = steps
        .iter()
        .map(|s| client_key(session.capture, s.x.conn, s.x))
        .collect();
    let mut by_conn: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut by_client: HashMap<&str, Vec<usize>> = HashMap::new();
    for i in (0..n).filter(|&i| anchored[i]) {
        by_conn.entry(steps[i].x.conn).or_default().push(i);
        by_client.entry(clients[i].as_str()).or_default().push(i);
    }
    for list in by_client.values_mut() {
        list.sort_by_key(|&i| steps[i].x.t);
    }
    let authorized: HashSet<usize> = (0..n)
        .filter(|&i| anchored[i] && steps[i].role == Role::Authorize)
        .map(|i| sets.find_ro(i))
        .collect();
    let mut joined: Vec<Option<usize>> = vec![None; n];
    for i in (0..n).filter(|&i| !anchored[i]) {
        let s = &steps[i];
        let same_conn = by_conn.get(&s.x.conn).and_then(|list| {
            list.iter()
                .copied()
                .min_by_key(|&j| steps[j].x.t.abs_diff(s.x.t))
        });
        let near_client = || {
            let list = by_client.get(clients[i].as_str())?;
            let at = list.partition_point(|&j| steps[j].x.t < s.x.t);
            // The flow the step leads into (discovery comes first), else the one it follows.
            let next = list
                .get(at)
                .copied()
                .filter(|&j| gap(steps, i, j) <= NEARBY_US);
            let before = at
                .checked_sub(1)
                .map(|b| list[b])
                .filter(|&j| gap(steps, i, j) <= NEARBY_US);
            next.or(before)
        };
        let awaiting_authorize = || {
            if s.role != Role::Authorize {
                return None;
            }
            (0..i)
                .rev()
                .take_while(|&j| s.x.t.saturating_sub(steps[j].x.t) <= AUTHORIZE_WAIT_US)
                .find(|&j| anchored[j] && !authorized.contains(&sets.find_ro(j)))
        };
        joined[i] = same_conn.or_else(near_client).or_else(awaiting_authorize);
    }
    for (i, j) in joined.iter().enumerate() {
        if let Some(j) = j {
            sets.union(i, *j);
        }
    }
    // 3. The rest, by client and time.
    let mut last_of_client: HashMap<&str, usize> = HashMap::new();
    for i in (0..n).filter(|&i| !anchored[i] && joined[i].is_none()) {
        let me = clients[i].as_str();
        if let Some(&j) = last_of_client.get(me) {
            if gap(steps, i, j) <= NEARBY_US {
                sets.union(i, j);
            }
        }
        last_of_client.insert(me, i);
    }

    // The groups, as flows or other traffic.
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        groups.entry(sets.find(i)).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort_by_key(|g| steps[g[0]].x.t);
    let mut out = Split::default();
    for group in groups {
        let exs: Vec<u64> = group.iter().map(|&i| steps[i].x.ex).collect();
        if group
            .iter()
            .all(|&i| matches!(steps[i].role, Role::Other | Role::Preflight))
        {
            out.other.extend(exs);
            continue;
        }
        let lead = group
            .iter()
            .copied()
            .find(|&i| steps[i].role == Role::Mcp)
            .unwrap_or(group[0]);
        out.flows.push(Flow {
            number: out.flows.len() + 1,
            client: client_label(session.capture, steps[lead].x.conn, steps[lead].x),
            first_t: steps[group[0]].x.t,
            last_t: group.iter().map(|&i| steps[i].x.end_t()).max().unwrap_or(0),
            exchanges: exs,
        });
    }
    out.other.sort_unstable();
    out
}

/// The time between two steps: from the end of the earlier to the start of the later.
fn gap(steps: &[Step<'_>], a: usize, b: usize) -> u64 {
    let (a, b) = (steps[a].x, steps[b].x);
    if a.t <= b.t {
        b.t.saturating_sub(a.end_t())
    } else {
        a.t.saturating_sub(b.end_t())
    }
}

/// The client's address (without its port) and User-Agent.
fn client_key(capture: &Capture, conn: u64, x: &mcptap_capture::reader::Exchange) -> String {
    format!(
        "{} {}",
        peer_address(capture, conn),
        x.request_header("user-agent").unwrap_or("")
    )
}

fn client_label(capture: &Capture, conn: u64, x: &mcptap_capture::reader::Exchange) -> String {
    let agent = x.request_header("user-agent").unwrap_or("no User-Agent");
    let agent: String = if agent.chars().count() > 40 {
        agent.chars().take(39).chain(['…']).collect()
    } else {
        agent.to_string()
    };
    format!("{} · {agent}", peer_address(capture, conn))
}

fn peer_address(capture: &Capture, conn: u64) -> String {
    capture
        .connections
        .get(&conn)
        .map(|c| c.open.peer_ip())
        .unwrap_or_default()
}

/// A parameter of the URL an authorization response redirects to.
fn redirect_param(s: &Step<'_>, name: &str) -> Option<String> {
    query_value(s.x.response_header("location")?, name)
}

/// A query parameter of a URL or path.
fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_value(query.split('#').next().unwrap_or(""), name)
}

/// Disjoint sets over step indices.
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, i: usize) -> usize {
        let root = self.find_ro(i);
        // Path compression.
        let mut at = i;
        while self.parent[at] != root {
            let next = self.parent[at];
            self.parent[at] = root;
            at = next;
        }
        root
    }

    fn find_ro(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            // The earlier step's root stays the root.
            let (keep, join) = if a < b { (a, b) } else { (b, a) };
            self.parent[join] = keep;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testing::{init_ok, rq, Cap, Ex};

    const S: u64 = 1_000_000;

    fn token(ex: u64, t: u64, code: &str, issued: &str) -> Ex {
        Ex::new(ex, t, "POST", "/token")
            .h("content-type", "application/x-www-form-urlencoded")
            .send(&format!("grant_type=authorization_code&code={code}"))
            .json(&format!(
                r#"{{"access_token":"{issued}","token_type":"Bearer"}}"#
            ))
    }

    fn groups(cap: &Cap) -> (Vec<Vec<u64>>, Vec<u64>) {
        let capture = cap.capture();
        let split = split(&Session::analyze(&capture));
        (
            split.flows.into_iter().map(|f| f.exchanges).collect(),
            split.other,
        )
    }

    #[test]
    fn two_clients_on_one_pooled_connection_stay_apart_by_their_tokens() {
        // Every exchange on one connection (a gateway pooling its users' requests): the
        // tokens tell the clients apart, and the challenge joins the flow it led into.
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 0, &rq(1, "initialize")).status(401))
            .add(token(2, S, "code-a", "token-a"))
            .add(token(3, S + 1_000, "code-b", "token-b"))
            .add(
                Ex::post(4, 2 * S, &rq(1, "initialize"))
                    .h("authorization", "Bearer token-a")
                    .json(&init_ok(1, "2025-06-18")),
            )
            .add(
                Ex::post(5, 2 * S + 1_000, &rq(1, "initialize"))
                    .h("authorization", "Bearer token-b")
                    .json(&init_ok(1, "2025-06-18")),
            )
            .add(
                Ex::post(6, 3 * S, &rq(2, "tools/list"))
                    .h("authorization", "Bearer token-a")
                    .json(r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#),
            );
        let (flows, other) = groups(&cap);
        assert_eq!(flows, [vec![1, 2, 4, 6], vec![3, 5]]);
        assert!(other.is_empty());
    }

    #[test]
    fn a_code_ties_the_redirect_to_the_token_request_and_a_refresh_to_its_token() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 0, "GET", "/authorize?response_type=code&client_id=x")
                .h("user-agent", "Browser/1")
                .status(302)
                .rh(
                    "location",
                    "http://127.0.0.1:9/callback?code=code-a&state=s",
                ),
        )
        .add(token(2, S, "code-a", "token-a").h("user-agent", "connector/2"))
        .add(
            Ex::new(3, 2 * S, "POST", "/token")
                .h("content-type", "application/x-www-form-urlencoded")
                .send("grant_type=refresh_token&refresh_token=refresh-a")
                .json(r#"{"access_token":"token-a2"}"#),
        );
        let (flows, _) = groups(&cap);
        // The refresh is its own flow: nothing in this capture issued refresh-a.
        assert_eq!(flows, [vec![1, 2], vec![3]]);
    }

    #[test]
    fn unrelated_clients_far_apart_in_time_are_separate_flows() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 0, &rq(1, "initialize")).status(401))
            .add(Ex::post(2, 5 * 60 * S, &rq(1, "initialize")).status(401));
        let (flows, _) = groups(&cap);
        assert_eq!(flows, [vec![1], vec![2]]);
    }
}
