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

/// `data` in a content coding, as a server would send it.
fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        "zstd" => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
        // Not a coding mcptap decodes: the bytes as they are.
        _ => data.to_vec(),
    }
}

/// Every base64 field of a capture, decoded, with the raw text: where a secret could hide.
fn readable(cap: &Capture) -> String {
    use base64::Engine as _;
    let mut all = String::from_utf8_lossy(&cap.raw).into_owned();
    for e in &cap.events {
        if let Some(b64) = e["b64"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    all
}

/// A token endpoint and an MCP endpoint that answer in `coding` and take a coded request body.
async fn coded_upstream(coding: &'static str) -> Upstream {
    Upstream::start(move |req| async move {
        let path = req.uri().path().to_string();
        let _ = req.into_body().collect().await;
        let body = if path == "/token" {
            format!("{{\"access_token\":\"{TOKEN}\",\"token_type\":\"Bearer\",\"refresh_token\":\"{REFRESH}\"}}")
        } else {
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_string()
        };
        Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(full(encode(coding, body.as_bytes())))
            .unwrap()
    })
    .await
}

/// Each coding, each data path and HTTP/2: a coded token response and a coded request body
/// carrying a client secret are recorded decoded and redacted; the client gets the coded
/// bytes untouched; the token's lineage holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_recorded_decoded_and_redacted() {
    for coding in ["gzip", "deflate", "br", "zstd"] {
        for (path_args, http2) in [
            (&[][..], false),
            (&["--no-fast-path"][..], false),
            (&[][..], true),
        ] {
            let what = format!("{coding}, {path_args:?}, http2={http2}");
            let up = coded_upstream(coding).await;
            let proxy = TestProxy::to(&up.url()).args(path_args).start();
            let client = if http2 { h2_client() } else { h1_client() };
            let form =
                format!("grant_type=authorization_code&code={CODE}&client_secret={VERIFIER}");
            let resp = client
                .request(
                    Request::post(proxy.url("/token"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("content-encoding", coding)
                        .body(full(encode(coding, form.as_bytes())))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.headers()["content-encoding"], coding, "{what}");
            let got = read_all(resp).await;
            // The client got the coded bytes as the server sent them.
            let sent = format!("{{\"access_token\":\"{TOKEN}\",\"token_type\":\"Bearer\",\"refresh_token\":\"{REFRESH}\"}}");
            assert_eq!(&got[..], &encode(coding, sent.as_bytes())[..], "{what}");
            let resp = client
                .request(
                    Request::post(proxy.url("/mcp"))
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .body(full(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#))
                        .unwrap(),
                )
                .await
                .unwrap();
            read_all(resp).await;
            let cap = proxy.finish();
            let all = readable(&cap);
            for secret in [TOKEN, REFRESH, CODE, VERIFIER] {
                assert!(!all.contains(secret), "{what}: {secret} in the capture");
            }
            let token_ex = cap.exchanges()[0];
            let body = cap.body_text(token_ex, "response");
            let issued = fp_after(&body, "access_token");
            let bodies: Vec<&serde_json::Value> = cap
                .kind("body")
                .into_iter()
                .filter(|b| b["ex"] == token_ex)
                .collect();
            assert!(
                !bodies.is_empty() && bodies.iter().all(|b| b["encoding"] == coding),
                "{what}: {bodies:#?}"
            );
            assert!(
                cap.body_text(token_ex, "request")
                    .contains("grant_type=authorization_code"),
                "{what}"
            );
            let presented = fp_after(
                cap.one(cap.exchanges()[1], "request")["headers"]
                    .to_string()
                    .as_str(),
                "Bearer",
            );
            assert_eq!(issued, presented, "{what}: one token, one fingerprint");
            if coding == "gzip" && !http2 {
                // explain follows the token from its compressed issue to its use.
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), &cap.raw).unwrap();
                let report = crate::explain::explain_json(file.path());
                assert_eq!(
                    report["tokens"][0]["fp"],
                    issued.as_str(),
                    "{:#}",
                    report["tokens"]
                );
                assert_eq!(
                    report["tokens"][0]["accepted"], true,
                    "{:#}",
                    report["tokens"]
                );
            }
        }
    }
}

/// A coding mcptap does not decode: the bytes are left out (they could hide anything), with
/// the reason; the client still gets them.
#[tokio::test]
async fn a_body_in_an_unknown_coding_is_left_out() {
    let up = coded_upstream("compress").await;
    let proxy = TestProxy::to(&up.url()).start();
    let resp = h1_client()
        .request(
            Request::post(proxy.url("/token"))
                .body(full("grant_type=x"))
                .unwrap(),
        )
        .await
        .unwrap();
    let got = read_all(resp).await;
    assert!(
        String::from_utf8_lossy(&got).contains(TOKEN),
        "the client gets the body"
    );
    let cap = proxy.finish();
    assert!(!readable(&cap).contains(TOKEN));
    let body = cap
        .kind("body")
        .into_iter()
        .find(|b| b["dir"] == "response")
        .unwrap()
        .clone();
    assert!(
        body["omitted"]
            .as_str()
            .unwrap()
            .contains("Content-Encoding"),
        "{body:#}"
    );
    assert_eq!(body["len"], got.len());
}

/// An upstream that answers a POST with the request's own body and type (so each form is
/// recorded twice, request and response), and `/events` with an event stream whose `id:`
/// line and split `data:` lines carry secrets.
async fn echo_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let path = req.uri().path().to_string();
        let content_type = req.headers().get("content-type").cloned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if path == "/events" {
            return event_stream(full(format!(
                "id: {TOKEN}\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"x\"}}\n\ndata: {{\"access_token\":\ndata: \"{REFRESH}-split\"}}\n\n"
            )));
        }
        let mut resp = Response::builder();
        if let Some(ct) = content_type {
            resp = resp.header("content-type", ct);
        }
        resp.body(full(body)).unwrap()
    })
    .await
}

/// One way to send a secret: what it is, the target, the headers, the body.
type Hostile = (&'static str, String, Vec<(&'static str, String)>, Vec<u8>);

/// Every unusual form of a secret the redaction rules must still catch, each with its own
/// secret value.
fn hostile_requests() -> Vec<Hostile> {
    let s = |n: u32| format!("S3CR3T-{n:02}-a9f8e7d6c5");
    let utf16: Vec<u8> = format!("{{\"access_token\":\"{}\"}}", s(8))
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut binary = vec![0xff, 0xfe, 0x00];
    binary.extend_from_slice(s(7).as_bytes());
    let form = (
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    );
    let json = ("content-type", "application/json".to_string());
    vec![
        ("JSON labelled a form", "/echo".into(), vec![form.clone()], format!("{{\"access_token\":\"{}\"}}", s(1)).into_bytes()),
        ("a form with no content type", "/echo".into(), vec![], format!("grant_type=x&code={}", s(2)).into_bytes()),
        ("a form labelled JSON", "/echo".into(), vec![json.clone()], format!("grant_type=x&refresh_token={}", s(24)).into_bytes()),
        ("a form with ; separators", "/echo".into(), vec![form.clone()], format!("a=1;client_secret={}", s(3)).into_bytes()),
        ("a query with ; separators", format!("/echo?x=1;access_token={}", s(4)), vec![], Vec::new()),
        (
            "a multipart field",
            "/echo".into(),
            vec![("content-type", "multipart/form-data; boundary=B0und".into())],
            format!("--B0und\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{}\r\n--B0und--\r\n", s(5)).into_bytes(),
        ),
        ("a path parameter", format!("/p;access_token={}/echo", s(6)), vec![], Vec::new()),
        ("bytes that are not UTF-8", "/echo".into(), vec![("content-type", "application/octet-stream".into())], binary),
        ("UTF-16 JSON", "/echo".into(), vec![json.clone()], utf16),
        ("a DPoP proof", "/echo".into(), vec![("dpop", s(9))], Vec::new()),
        ("an Apikey header", "/echo".into(), vec![("apikey", s(10))], Vec::new()),
        ("an X-Goog-Api-Key header", "/echo".into(), vec![("x-goog-api-key", s(11))], Vec::new()),
        ("a Private-Token header", "/echo".into(), vec![("private-token", s(12))], Vec::new()),
        ("an X-Amz-Security-Token header", "/echo".into(), vec![("x-amz-security-token", s(13))], Vec::new()),
        ("an Ocp-Apim-Subscription-Key header", "/echo".into(), vec![("ocp-apim-subscription-key", s(14))], Vec::new()),
        ("an X-Vault-Token header", "/echo".into(), vec![("x-vault-token", s(15))], Vec::new()),
        (
            "camelCase and other spellings",
            "/echo".into(),
            vec![json.clone()],
            format!(
                "{{\"accessToken\":\"{}\",\"refreshToken\":\"{}\",\"clientSecret\":\"{}\",\"apiKey\":\"{}\",\"api_key\":\"{}\",\"token\":\"{}\",\"secret\":\"{}\"}}",
                s(16), s(17), s(18), s(19), s(20), s(21), s(22)
            )
            .into_bytes(),
        ),
        ("a secret key with a number", "/echo".into(), vec![json.clone()], b"{\"password\": 982374619283746}".to_vec()),
        (
            "JSON escaped three levels deep",
            "/echo".into(),
            vec![json],
            format!(
                "{{\"a\":\"{{\\\"b\\\":\\\"{{\\\\\\\"access_token\\\\\\\":\\\\\\\"{}\\\\\\\"}}\\\"}}\"}}",
                s(23)
            )
            .into_bytes(),
        ),
    ]
}

/// The secrets planted by [`hostile_requests`] and the event stream.
fn planted() -> Vec<String> {
    let mut all: Vec<String> = (1..=23)
        .map(|n| format!("S3CR3T-{n:02}-a9f8e7d6c5"))
        .collect();
    all.push("982374619283746".into());
    all.push(format!("{REFRESH}-split"));
    all.push(TOKEN.into());
    all
}

/// Each unusual form of a secret, on both HTTP/1.1 paths and over HTTP/2: none reaches the
/// capture, in clear or in any base64 field once decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_every_unusual_form_never_reach_the_capture() {
    for (args, http2) in [
        (&[][..], false),
        (&["--no-fast-path"][..], false),
        (&[][..], true),
    ] {
        let up = echo_upstream().await;
        let proxy = TestProxy::to(&up.url()).args(args).start();
        let client = if http2 { h2_client() } else { h1_client() };
        // The token is issued first: the stream's `id:` line presents it later.
        let issued = client
            .request(
                Request::post(proxy.url("/echo"))
                    .header("content-type", "application/json")
                    .body(full(format!("{{\"access_token\":\"{TOKEN}\"}}")))
                    .unwrap(),
            )
            .await
            .unwrap();
        read_all(issued).await;
        for (what, target, headers, body) in hostile_requests() {
            let mut req = Request::post(proxy.url(&target));
            for (name, value) in &headers {
                req = req.header(*name, value.as_str());
            }
            let resp = client.request(req.body(full(body.clone())).unwrap()).await;
            let resp = resp.unwrap_or_else(|e| panic!("{what}: {e}"));
            let got = read_all(resp).await;
            assert_eq!(
                got, body,
                "{what}: the client gets the upstream's answer whole"
            );
        }
        let resp = client
            .request(Request::get(proxy.url("/events")).body(full("")).unwrap())
            .await
            .unwrap();
        read_all(resp).await;
        let cap = proxy.finish();
        let all = readable(&cap);
        let mut leaked: Vec<String> = planted()
            .into_iter()
            .filter(|secret| all.contains(secret.as_str()))
            .collect();
        // UTF-16 text holds each character followed by a NUL.
        let utf16: String = "S3CR3T-08-a9f8e7d6c5"
            .chars()
            .flat_map(|c| [c, '\0'])
            .collect();
        if all.contains(&utf16) || all.contains("S\\u0000") {
            leaked.push("the UTF-16 body".into());
        }
        assert!(
            leaked.is_empty(),
            "{args:?} http2={http2}: leaked {leaked:?}"
        );
        // Bodies that cannot be shown free of secrets are there as their length and reason.
        assert!(
            cap.kind("body").iter().any(|b| b["omitted"]
                .as_str()
                .is_some_and(|o| o.contains("not UTF-8"))),
            "the binary body is recorded as its length and hash"
        );
    }
}
