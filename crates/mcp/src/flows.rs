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

use super::session::{bearer_of, classify, form_value, token_key, Role, ServerFacts, Traits};
use mcptap_capture::reader::{Capture, Connection, Exchange};

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

/// What the flow rules need of one exchange: small enough to keep for every exchange of a
/// day's capture while it streams by.
#[derive(Debug, Clone, Copy)]
struct Mark {
    ex: u64,
    conn: u64,
    t: u64,
    end_t: u64,
    /// Interned path, and client (address and User-Agent).
    path: u32,
    client: u32,
    traits: Traits,
}

/// When an identity an exchange carries counts: some only in the role that issues or spends
/// them (a `code` in a token request's form, say), which is known once the whole capture has
/// told what its server's endpoints are.
#[derive(Debug, Clone, Copy)]
enum When {
    Always,
    In(Role),
    NotIn(Role),
    /// On the MCP endpoint or either legacy endpoint.
    Mcp,
}

impl When {
    fn holds(self, role: Role) -> bool {
        match self {
            When::Always => true,
            When::In(r) => role == r,
            When::NotIn(r) => role != r,
            When::Mcp => matches!(role, Role::Mcp | Role::LegacySse | Role::LegacyMessages),
        }
    }
}

/// Strings met again and again (paths, clients), each kept once.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }
}

/// Gathers the flow evidence of a capture's exchanges, one at a time, in any order; then
/// [`Marker::split`] groups them.
#[derive(Debug, Default)]
pub struct Marker {
    marks: Vec<Mark>,
    /// (identity, exchange, when it counts)
    keys: Vec<(u64, u64, When)>,
    /// Client ids issued by registration: (client id, exchange).
    issued: Vec<(u64, u64)>,
    /// Client ids used to authorize or get a token: (client id, exchange, in which role).
    used: Vec<(u64, u64, Role)>,
    paths: Interner,
    clients: Interner,
    /// The label of each client: address · User-Agent (shortened).
    labels: Vec<String>,
}

/// A short hash of an identity, with its kind, for grouping.
fn identity(kind: &str, value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

impl Marker {
    /// Notes one exchange; `connections` are the capture's (their peer addresses).
    pub fn add(&mut self, x: &Exchange, connections: &BTreeMap<u64, Connection>) {
        let address = connections
            .get(&x.conn)
            .map(|c| c.open.peer_ip())
            .unwrap_or_default();
        let agent = x.request_header("user-agent");
        let client = self
            .clients
            .id(&format!("{address} {}", agent.unwrap_or("")));
        if client as usize == self.labels.len() {
            let agent = agent.unwrap_or("no User-Agent");
            let agent: String = if agent.chars().count() > 40 {
                agent.chars().take(39).chain(['…']).collect()
            } else {
                agent.to_string()
            };
            self.labels.push(format!("{address} · {agent}"));
        }
        let ex = x.ex;
        let mut key = |kind: &str, value: &str, when: When| {
            self.keys.push((identity(kind, value), ex, when));
        };
        if let Some(bearer) = x.request_header("authorization").and_then(bearer_of) {
            key("bearer", &bearer, When::Always);
        }
        if let Some(id) = x.request_header("mcp-session-id") {
            key("session", id, When::Always);
        }
        if let Some(id) = x.response_header("mcp-session-id") {
            key("session", id, When::Mcp);
        }
        let query = x.query();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        // The redirect back to the client (`/callback?code=…`), where it reaches the capture.
        if let Some(code) = param("code") {
            key("code", &token_key(code), When::NotIn(Role::Token));
        }
        if let Some(id) = param("sessionId") {
            key("legacy", id, When::In(Role::LegacyMessages));
        }
        if let Some(code) = x
            .response_header("location")
            .and_then(|l| query_value(l, "code"))
        {
            key("code", &token_key(&code), When::In(Role::Authorize));
        }
        // A token request's form and answer.
        if x.request_media_type().as_deref() == Some("application/x-www-form-urlencoded") {
            let form = x.request_body.text();
            for (field, kind) in [("code", "code"), ("refresh_token", "refresh")] {
                if let Some(v) = form_value(&form, field) {
                    key(kind, &token_key(&v), When::In(Role::Token));
                }
            }
            if let Some(id) = form_value(&form, "client_id") {
                self.used.push((identity("client", &id), ex, Role::Token));
            }
        }
        let answer = &x.response_body.bytes;
        let has = |needle: &[u8]| memchr::memmem::find(answer, needle).is_some();
        if has(b"access_token") || has(b"refresh_token") || has(b"client_id") {
            if let Some(body) = x.response_body.json() {
                for (field, kind) in [("access_token", "bearer"), ("refresh_token", "refresh")] {
                    if let Some(t) = body.get(field).and_then(Value::as_str) {
                        self.keys
                            .push((identity(kind, &token_key(t)), ex, When::In(Role::Token)));
                    }
                }
                if let Some(id) = body.get("client_id").and_then(Value::as_str) {
                    self.issued.push((identity("client", id), ex));
                }
            }
        }
        if let Some(id) = param("client_id") {
            self.used
                .push((identity("client", id), ex, Role::Authorize));
        }
        for (_, e) in &x.sse {
            if e.event.as_deref() == Some("endpoint") {
                if let Some(id) = e.data.as_deref().and_then(|d| query_value(d, "sessionId")) {
                    self.keys
                        .push((identity("legacy", &id), ex, When::In(Role::LegacySse)));
                }
            }
        }
        self.marks.push(Mark {
            ex,
            conn: x.conn,
            t: x.t,
            end_t: x.end_t(),
            path: self.paths.id(x.path()),
            client,
            traits: Traits::of(x),
        });
    }

    /// Groups the exchanges noted into client flows and other traffic, each exchange's role
    /// judged with what the whole capture told of its server.
    pub fn split(mut self, facts: &ServerFacts) -> Split {
        self.marks.sort_by_key(|m| m.ex);
        let marks = &self.marks;
        let n = marks.len();
        let index = |ex: u64| marks.binary_search_by_key(&ex, |m| m.ex).ok();
        let roles: Vec<Role> = marks
            .iter()
            .map(|m| classify(&self.paths.names[m.path as usize], m.traits, facts))
            .collect();
        let mut sets = UnionFind::new(n);
        let mut anchored = vec![false; n];

        // 1. Identity: every key names the exchanges that share it.
        let mut keys: HashMap<u64, Vec<usize>> = HashMap::new();
        for &(k, ex, when) in &self.keys {
            if let Some(i) = index(ex).filter(|&i| when.holds(roles[i])) {
                keys.entry(k).or_default().push(i);
            }
        }
        // A client id issued by registration here is that registration's (one per client, as
        // dynamic registration gives them); a client id metadata document's URL is every
        // user's.
        let issued: HashMap<u64, usize> = self
            .issued
            .iter()
            .filter_map(|&(id, ex)| Some((id, index(ex)?)))
            .filter(|&(_, i)| roles[i] == Role::Registration)
            .collect();
        for &(id, ex, role) in &self.used {
            let Some(i) = index(ex).filter(|&i| roles[i] == role) else {
                continue;
            };
            if let Some(&reg) = issued.get(&id) {
                anchored[reg] = true;
                anchored[i] = true;
                sets.union(reg, i);
            }
        }
        for members in keys.values_mut() {
            members.sort_unstable();
            members.dedup();
            for &m in members.iter() {
                anchored[m] = true;
            }
            for w in members.windows(2) {
                sets.union(w[0], w[1]);
            }
        }

        // 2. Place and time, for the exchanges without an identity.
        let mut by_conn: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut by_client: HashMap<u32, Vec<usize>> = HashMap::new();
        for i in (0..n).filter(|&i| anchored[i]) {
            by_conn.entry(marks[i].conn).or_default().push(i);
            by_client.entry(marks[i].client).or_default().push(i);
        }
        for list in by_client.values_mut() {
            list.sort_by_key(|&i| marks[i].t);
        }
        let authorized: HashSet<usize> = (0..n)
            .filter(|&i| anchored[i] && roles[i] == Role::Authorize)
            .map(|i| sets.find_ro(i))
            .collect();
        let mut joined: Vec<Option<usize>> = vec![None; n];
        for i in (0..n).filter(|&i| !anchored[i]) {
            let m = &marks[i];
            let same_conn = by_conn.get(&m.conn).and_then(|list| {
                list.iter()
                    .copied()
                    .min_by_key(|&j| marks[j].t.abs_diff(m.t))
            });
            let near_client = || {
                let list = by_client.get(&m.client)?;
                let at = list.partition_point(|&j| marks[j].t < m.t);
                // The flow the exchange leads into (discovery comes first), else the one it
                // follows.
                let next = list
                    .get(at)
                    .copied()
                    .filter(|&j| gap(marks, i, j) <= NEARBY_US);
                let before = at
                    .checked_sub(1)
                    .map(|b| list[b])
                    .filter(|&j| gap(marks, i, j) <= NEARBY_US);
                next.or(before)
            };
            let awaiting_authorize = || {
                if roles[i] != Role::Authorize {
                    return None;
                }
                (0..i)
                    .rev()
                    .take_while(|&j| m.t.saturating_sub(marks[j].t) <= AUTHORIZE_WAIT_US)
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
        let mut last_of_client: HashMap<u32, usize> = HashMap::new();
        for i in (0..n).filter(|&i| !anchored[i] && joined[i].is_none()) {
            let me = marks[i].client;
            if let Some(&j) = last_of_client.get(&me) {
                if gap(marks, i, j) <= NEARBY_US {
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
        groups.sort_by_key(|g| marks[g[0]].t);
        let mut out = Split::default();
        for group in groups {
            let exs: Vec<u64> = group.iter().map(|&i| marks[i].ex).collect();
            if group
                .iter()
                .all(|&i| matches!(roles[i], Role::Other | Role::Preflight))
            {
                out.other.extend(exs);
                continue;
            }
            let lead = group
                .iter()
                .copied()
                .find(|&i| roles[i] == Role::Mcp)
                .unwrap_or(group[0]);
            out.flows.push(Flow {
                number: out.flows.len() + 1,
                client: self.labels[marks[lead].client as usize].clone(),
                first_t: marks[group[0]].t,
                last_t: group.iter().map(|&i| marks[i].end_t).max().unwrap_or(0),
                exchanges: exs,
            });
        }
        out.other.sort_unstable();
        out
    }
}

/// Splits a capture read whole into its client flows.
pub fn split(capture: &Capture, facts: &ServerFacts) -> Split {
    let mut marker = Marker::default();
    for x in &capture.exchanges {
        marker.add(x, &capture.connections);
    }
    marker.split(facts)
}

/// The time between two exchanges: from the end of the earlier to the start of the later.
fn gap(marks: &[Mark], a: usize, b: usize) -> u64 {
    let (a, b) = (&marks[a], &marks[b]);
    if a.t <= b.t {
        b.t.saturating_sub(a.end_t)
    } else {
        a.t.saturating_sub(b.end_t)
    }
}

/// A query parameter of a URL or path.
pub fn query_value(url: &str, name: &str) -> Option<String> {
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
        let split = split(&capture, &ServerFacts::of(&capture));
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
