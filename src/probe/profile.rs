//! `--as`: the observable habits of a known connector, each with its public source. A habit
//! nobody has documented is not invented: the profile falls back to the strict spec for it.
//!
//! Claude (claude.ai, Claude Desktop's custom connectors), from Anthropic's help-centre
//! article "Building Custom Connectors via Remote MCP Servers"
//! (<https://support.anthropic.com/en/articles/11503834-building-custom-connectors-via-remote-mcp-servers>):
//! - the OAuth callback URL is `https://claude.ai/api/mcp/auth_callback` (the redirect URI
//!   `--register` registers under `--as claude`);
//! - it supports the 2025-03-26 and 2025-06-18 authorization specs and dynamic client
//!   registration (the protocol version offered in initialize is 2025-06-18);
//! - it connects from Anthropic's cloud, not from the user's machine: servers on private
//!   networks or behind a VPN do not connect (so private addresses are errors, as in
//!   `generic`).
//!
//! - Claude's requests made for a user carry the `Claude-User` agent token (Anthropic's
//!   help-centre article "Does Anthropic crawl data from the web, and how can site owners
//!   block the crawler?",
//!   <https://support.anthropic.com/en/articles/8896518-does-anthropic-crawl-data-from-the-web-and-how-can-site-owners-block-the-crawler>),
//!   the token CDN and WAF "AI bot" rules match: `--as claude` sends it, followed by the
//!   probe's own name, so such a rule answers the probe as it answers the connector.
//!
//! Not sourced, therefore not modelled: the rest of Claude's User-Agent string, its exact
//! timeouts (the 10 s initialize deadline is the common connector figure used by every
//! profile; change it with `--init-timeout`), and whether it sends HEAD or other probe
//! requests first.

use clap::ValueEnum;

/// The connector whose habits the probe copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileName {
    /// The MCP specification, strictly (2025-06-18 and 2025-11-25 discovery order).
    Generic,
    /// Claude's custom connectors, as far as Anthropic documents them.
    Claude,
}

/// What the probe does differently per profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub user_agent: String,
    /// The redirect URI to register with `--register` (without `--login`, which needs its
    /// own loopback listener); `None`: the loopback shape desktop clients use.
    pub redirect_uri: Option<&'static str>,
    /// The MCP protocol version offered in initialize.
    pub protocol_version: &'static str,
}

/// Claude's OAuth callback (Anthropic help centre, see the module comment).
pub const CLAUDE_CALLBACK: &str = "https://claude.ai/api/mcp/auth_callback";

impl Profile {
    pub fn new(name: ProfileName) -> Profile {
        let generic_ua = format!("mcptap-probe/{}", env!("CARGO_PKG_VERSION"));
        match name {
            ProfileName::Generic => Profile {
                name: "generic",
                user_agent: generic_ua,
                redirect_uri: None,
                protocol_version: "2025-06-18",
            },
            ProfileName::Claude => Profile {
                name: "claude",
                // The published agent token, then who is really asking.
                user_agent: format!("Claude-User ({generic_ua})"),
                redirect_uri: Some(CLAUDE_CALLBACK),
                protocol_version: "2025-06-18",
            },
        }
    }
}
