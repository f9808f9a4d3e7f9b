//! OAuth and URL helpers that clients of an MCP server need: PKCE values (RFC 7636), the
//! well-known metadata URLs (RFC 8414 §3, RFC 9728 §3) and Location resolution (RFC 3986 §5).
//! Shared by `probe` and the test fixtures, so each rule is written once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Uri;
use serde_json::Value;

/// The scope to ask for (MCP Authorization, scope selection): the 401 challenge's `scope`,
/// else every `scopes_supported` of the protected-resource metadata; `None` when neither names
/// one.
pub fn scope_to_request(challenge_scope: Option<String>, prm: Option<&Value>) -> Option<String> {
    challenge_scope.or_else(|| {
        prm.and_then(|p| p.get("scopes_supported"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|s| !s.is_empty())
    })
}

/// `n` random bytes as base64url without padding (ids, codes, tokens, PKCE verifiers).
pub fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (not seen on the systems mcptap runs on): unlikely to repeat,
        // though not unpredictable.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32);
        let digest = ring::digest::digest(&ring::digest::SHA256, &seed.to_le_bytes());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = digest.as_ref()[i % 32] ^ (i as u8);
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RFC 7636 S256 code challenge of a verifier: BASE64URL(SHA256(ASCII(verifier))).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// Whether `s` is 43 to 128 characters of the RFC 7636 unreserved set.
pub fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `url` parsed when it is absolute (scheme and authority).
pub fn absolute(url: &str) -> Option<Uri> {
    let uri: Uri = url.parse().ok()?;
    (uri.scheme().is_some() && uri.authority().is_some()).then_some(uri)
}

/// `scheme://authority` of an absolute URL.
pub fn origin_of(url: &str) -> Option<String> {
    let uri = absolute(url)?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// RFC 8414 §3 / RFC 9728 §3: `https://h/p` → `https://h/.well-known/<name>/p`
/// (a terminating "/" of the path is removed first).
pub fn insert_well_known(url: &str, name: &str) -> Option<String> {
    let uri = absolute(url)?;
    let origin = origin_of(url)?;
    let path = uri.path().strip_suffix('/').unwrap_or(uri.path());
    Some(format!("{origin}/.well-known/{name}{path}"))
}

/// Resolves a Location against the URL that answered (RFC 3986 §5, the common cases).
pub fn resolve(base: &str, location: &str) -> Option<String> {
    if absolute(location).is_some() {
        return Some(location.to_string());
    }
    let uri = absolute(base)?;
    let scheme = uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let origin = origin_of(base)?;
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let dir = uri.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    Some(format!("{origin}{dir}/{location}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn random_values_are_fresh_and_pkce_shaped() {
        let a = random_b64(32);
        assert_ne!(a, random_b64(32));
        assert!(is_pkce_string(&a));
    }

    #[test]
    fn builds_well_known_urls() {
        assert_eq!(
            insert_well_known("http://h:1/mcp", "oauth-protected-resource").unwrap(),
            "http://h:1/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            insert_well_known("http://h:1", "oauth-authorization-server").unwrap(),
            "http://h:1/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            insert_well_known("http://h:1/t/", "oauth-authorization-server").unwrap(),
            "http://h:1/.well-known/oauth-authorization-server/t"
        );
        assert!(insert_well_known("/relative", "x").is_none());
    }

    #[test]
    fn resolves_locations() {
        assert_eq!(resolve("http://h/mcp", "/mcp/").unwrap(), "http://h/mcp/");
        assert_eq!(resolve("http://h/a/b", "c").unwrap(), "http://h/a/c");
        assert_eq!(resolve("http://h/a", "http://x/y").unwrap(), "http://x/y");
        assert_eq!(resolve("http://h/a", "//x/y").unwrap(), "http://x/y");
    }

    #[test]
    fn the_challenge_scope_wins_over_the_metadata_scopes() {
        let prm = serde_json::json!({"scopes_supported": ["read", "write"]});
        assert_eq!(
            scope_to_request(Some("mcp".into()), Some(&prm)).as_deref(),
            Some("mcp")
        );
        assert_eq!(
            scope_to_request(None, Some(&prm)).as_deref(),
            Some("read write")
        );
        let empty = serde_json::json!({"scopes_supported": []});
        assert_eq!(scope_to_request(None, Some(&empty)), None);
        assert_eq!(scope_to_request(None, None), None);
    }
}
