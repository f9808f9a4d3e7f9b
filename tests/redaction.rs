//! Secrets never reach the capture bytes, and one secret keeps one fingerprint.

use http_body_util::BodyExt;
use hyper::{Request, Response};

use crate::util::*;

const TOKEN: &str = "tok_9f8e7d6c5b4a39281706";
const REFRESH: &str = "refresh_0a1b2c3d4e5f6071";
const CODE: &str = "authcode_5566778899aabb";
const VERIFIER: &str = "verifier_dGhpcyBpcyBhIHRlc3Q";

/// An OAuth-shaped upstream: /authorize redirects with a code, /token issues a token, /mcp
/// answers over SSE with a token echoed in a tool result.
async fn oauth_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let path = req.uri().path().to_string();
        let _ = req.into_body().collect().await;
        match path.as_str() {
            "/authorize" => Response::builder()
                .status(302)
                .header("location", format!("http://127.0.0.1:1/cb?code={CODE}&state=xyz"))
                .body(full(""))
                .unwrap(),
            "/token" => Response::builder()
                .header("content-type", "application/json")
                .header("set-cookie", format!("sid={TOKEN}; Path=/; HttpOnly"))
                .body(full(format!(
                    "{{\"access_token\":\"{TOKEN}\",\"token_type\":\"Bearer\",\"expires_in\":3600,\"refresh_token\":\"{REFRESH}\"}}"
                )))
                .unwrap(),
            _ => Response::builder()
                .header("content-type", "text/event-stream")
                .body(full(format!(
                    "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"access_token\":\"{TOKEN}\"}}}}\n\n"
                )))
                .unwrap(),
        }
    })
    .await
}

/// The fp of the first `<redacted fp=..>` after `marker` in `text`.
fn fp_after(text: &str, marker: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in {text}"));
    let rest = &text[at..];
    let start = rest.find("fp=").unwrap() + 3;
    rest[start..start + 8].to_string()
}

#[tokio::test]
async fn tokens_codes_and_cookies_are_fingerprinted_not_recorded() {
    let up = oauth_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    let send = |req: Request<UpBody>| {
        let client = client.clone();
        async move { read_all(client.request(req).await.unwrap()).await }
    };
    send(
        Request::get(proxy.url("/authorize?response_type=code&code_challenge=abc&state=xyz"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let token_body = send(
        Request::post(proxy.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(format!(
                "grant_type=authorization_code&code={CODE}&code_verifier={VERIFIER}&client_id=demo"
            )))
            .unwrap(),
    )
    .await;
    // The client gets the real token: redaction never touches the traffic.
    assert!(String::from_utf8_lossy(&token_body).contains(TOKEN));
    let sse = send(
        Request::post(proxy.url(&format!("/mcp?access_token={TOKEN}")))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("cookie", format!("sid={TOKEN}; theme=dark"))
            .header("content-type", "application/json")
            .body(full(format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"password\":\"{VERIFIER}\"}}}}")))
            .unwrap(),
    )
    .await;
    assert!(String::from_utf8_lossy(&sse).contains(TOKEN));

    let cap = proxy.finish();
    for secret in [TOKEN, REFRESH, CODE, VERIFIER] {
        assert!(!cap.contains_bytes(secret), "{secret} is in the capture");
    }
    let text = String::from_utf8(cap.raw.clone()).unwrap();
    // One token, one fingerprint: issued by /token, presented as Bearer, in a cookie, a query, SSE data.
    let issued = fp_after(&text, "access_token\\\":\\\"<redacted");
    assert_eq!(fp_after(&text, "Bearer <redacted"), issued);
    assert_eq!(fp_after(&text, "sid=<redacted"), issued);
    assert_eq!(fp_after(&text, "/mcp?access_token=<redacted"), issued);
    let sse_event = cap.kind("sse")[0]["data"].as_str().unwrap().to_string();
    assert_eq!(fp_after(&sse_event, "access_token"), issued);
    // The code in the redirect and in the token request is one code.
    assert_eq!(
        fp_after(&text, "cb?code=<redacted"),
        fp_after(&text, "authorization_code&code=<redacted")
    );
    assert_ne!(fp_after(&text, "refresh_token"), issued);
    // What is not secret stays readable.
    assert!(
        text.contains("theme=<redacted fp="),
        "cookie names stay, values go"
    );
    assert!(text.contains("token_type\\\":\\\"Bearer"));
    assert_eq!(cap.events[0]["redaction"], "fingerprint");
}

#[tokio::test]
async fn no_redact_records_secrets_and_says_so() {
    let up = oauth_upstream().await;
    let proxy = TestProxy::to(&up.url()).arg("--no-redact").start();
    let resp = h1_client()
        .request(
            Request::get(proxy.url("/mcp"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    read_all(resp).await;
    let cap = proxy.finish();
    assert_eq!(cap.events[0]["redaction"], "off");
    assert!(cap.contains_bytes(&format!("Bearer {TOKEN}")));
}
