//! One integration binary: each module drives the real `mcptap` binary against real servers
//! on 127.0.0.1 and checks what the client got and what the capture says.

mod util;

/// Certificates from an ACME CA (Pebble): issuance, the cache, renewal, failures on the record.
mod acme;
/// `mcptap demo` as a new user runs it.
mod demo;
/// `mcptap diff` on pairs of recorded sessions: alignment, noise suppression, first divergence.
mod diff;
/// The two HTTP/1.1 data paths on a corpus of well-formed and malformed messages.
mod differential;
/// The two protocol eras (2026-07-28 and 2025) with the TypeScript SDK v2 on both sides.
mod eras;
/// `mcptap explain` on sessions recorded through the proxy, one test per rule.
mod explain;
/// `mcptap export`: HAR 1.2 checked against the schema and read back; curl commands re-run.
mod export;
/// The HTTP/1.1 fast path: the same record as the general path, and the hand-over to it.
mod fastpath;
/// Faults from either side, crashes and limits: sensible answers, the record in words.
mod faults;
/// Client flows: several clients in one capture, told apart and explained one by one.
mod flows;
/// `mcptap mock`: recorded sessions served back to an unchanged client, SSE timing included.
mod mock;
/// Real MCP peers (TypeScript and Python SDKs, server-everything) through the proxy; tests/peers/setup installs them.
mod peers;
/// `mcptap probe`: the connection doctor against fixture servers over TLS, one fault each.
mod probe;
/// The data path: transparency, streaming, outcomes, shutdown.
mod proxy;
/// Secrets never reach the capture; fingerprints link them.
mod redaction;
/// `mcptap replay`: recorded sessions re-sent to a live server, OAuth included.
mod replay;
/// `mcptap report`: the page in headless Chromium, its CSP, its escaping, 10,000 exchanges.
mod report;
/// TLS at the edge: certificates, SNI, handshakes on the record, reloads.
mod tls;
