// An MCP client built with the v2 TypeScript SDK (@modelcontextprotocol/client 2.x: Client +
// StreamableHTTPClientTransport), in one of its three version-negotiation modes.
//
// Usage:  node v2-client.mjs MCP_URL [--mode auto|legacy|modern] [--message TEXT]
//   --mode auto    (default) versionNegotiation { mode: 'auto' }: probe with server/discover
//                  (protocol 2026-07-28); on definitive modern evidence use it, on a legacy
//                  signal fall back to the 2025 initialize handshake; an HTTP 5xx, a network
//                  error or a timeout of the probe fails the connect (no fallback);
//   --mode legacy  versionNegotiation { mode: 'legacy' } (the SDK's default): the plain 2025
//                  sequence, initialize + notifications/initialized, no probe;
//   --mode modern  versionNegotiation { mode: { pin: '2026-07-28' } }: server/discover must
//                  offer 2026-07-28; no fallback.
//
// connect, tools/list, tools/call echo { message }, then DELETE of the session when there is
// one, and close. Prints one JSON line on stdout:
//   { ok, mode, era, protocol_version, server, discover, tools, echo, requests }
// or, on failure, { ok: false, mode, stage, error: { name, code, message, data }, requests }.
// `era` is the SDK's getProtocolEra() ('modern' | 'legacy'), `protocol_version` its
// getNegotiatedProtocolVersion(), `discover` the DiscoverResult of the probe (modern only).
// `requests` is every HTTP request the client made, in order: method, path, status, the MCP
// headers it sent (MCP-Protocol-Version, Mcp-Method, Mcp-Name, Mcp-Session-Id) and the
// Mcp-Session-Id the server answered with.
// Exits 1 on failure, and by itself after 45 s.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const argv = process.argv.slice(2);
const opt = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const mcpUrl = new URL(argv[0] ?? '');
const mode = opt('--mode', 'auto');
const message = opt('--message', 'through mcptap ✓');
const negotiation = { auto: 'auto', legacy: 'legacy', modern: { pin: '2026-07-28' } }[mode];
if (negotiation === undefined) {
    console.error(`v2-client: --mode must be auto, legacy or modern, not ${mode}`);
    process.exit(2);
}

const requests = [];
const fail = (stage, error) => {
    console.error(`v2-client: failed at ${stage}:`, error);
    const detail = {
        name: error?.name ?? null,
        code: error?.code ?? null,
        message: String(error?.message ?? error),
        data: error?.data ?? null
    };
    console.log(JSON.stringify({ ok: false, mode, stage, error: detail, requests }));
    process.exit(1);
};
setTimeout(() => fail('deadline', new Error('did not finish within 45 s')), 45_000).unref();

const MCP_HEADERS = ['mcp-protocol-version', 'mcp-method', 'mcp-name', 'mcp-session-id'];
const recordingFetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
    const sent = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    const entry = { method, path: url.pathname + url.search, status: null, headers: {} };
    for (const h of MCP_HEADERS) if (sent.has(h)) entry.headers[h] = sent.get(h);
    requests.push(entry);
    const res = await fetch(input, init);
    entry.status = res.status;
    entry.content_type = res.headers.get('content-type')?.split(';')[0] ?? null;
    const sid = res.headers.get('mcp-session-id');
    if (sid !== null) entry.session_id = sid;
    return res;
};

const client = new Client(
    { name: 'mcptap-v2-client', version: '1.0.0' },
    { versionNegotiation: { mode: negotiation } }
);
const transport = new StreamableHTTPClientTransport(mcpUrl, { fetch: recordingFetch });
const out = { ok: true, mode };
let stage = 'connect';
try {
    await client.connect(transport);
    out.era = client.getProtocolEra() ?? null;
    out.protocol_version = client.getNegotiatedProtocolVersion() ?? null;
    out.server = client.getServerVersion() ?? null;
    out.discover = client.getDiscoverResult() ?? null;

    stage = 'tools/list';
    const tools = await client.listTools();
    out.tools = tools.tools.map(t => t.name).sort();

    stage = 'tools/call echo';
    out.echo = await client.callTool({ name: 'echo', arguments: { message } });

    stage = 'close';
    if (transport.sessionId !== undefined) await transport.terminateSession();
    await client.close();
} catch (error) {
    fail(stage, error);
}
out.requests = requests;
console.log(JSON.stringify(out));
process.exit(0);
