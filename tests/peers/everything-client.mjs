// A plain MCP client (the TypeScript SDK's Client + StreamableHTTPClientTransport) for
// @modelcontextprotocol/server-everything.
//
// Usage:  node everything-client.mjs MCP_URL [--sse]
//
// With --sse it speaks the legacy HTTP+SSE transport (protocol 2024-11-05) with the SDK's
// SSEClientTransport: MCP_URL is the server's GET stream (server-everything `sse`: /sse), the
// answers come as events on it, and each message is POSTed to the endpoint it announces.
//
// initialize, tools/list, tools/call echo, tools/call trigger-long-running-operation with a
// progress token (the server sends notifications/progress on the call's SSE stream),
// resources/list, resources/read of the first static document, then DELETE of the session
// (Streamable HTTP) or the end of the stream (--sse).
// Prints one JSON line: what the server answered (`results`, comparable between a direct run
// and one through a proxy), what the client sent (`requests`: method, path, status of each
// HTTP request, in order) and when the progress notifications arrived (`timing.progress_ms`).
// Exits 1 on any failure, and by itself after 45 s.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';

const mcpUrl = new URL(process.argv[2] ?? '');
const legacySse = process.argv.includes('--sse');
const fail = (stage, error) => {
    console.error(`everything-client: failed at ${stage}:`, error);
    console.log(JSON.stringify({ ok: false, stage, error: String(error?.stack ?? error) }));
    process.exit(1);
};
setTimeout(() => fail('deadline', new Error('did not finish within 45 s')), 45_000).unref();

const requests = [];
// Requests whose response has not fully arrived. Over the legacy transport an answer comes
// on the SSE stream and can beat its own POST's 202 (which the SDK never reads), so the client
// may be done before the last POST is: the summary waits for them, bodies included, so that
// exiting does not cut a response short.
const inflight = new Set();
const track = promise => {
    inflight.add(promise);
    promise.then(() => inflight.delete(promise), () => inflight.delete(promise));
};
const recordingFetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
    const entry = { method, path: url.pathname + url.search, status: null };
    requests.push(entry);
    const pending = fetch(input, init);
    track(pending);
    const res = await pending;
    entry.status = res.status;
    entry.content_type = res.headers.get('content-type')?.split(';')[0] ?? null;
    if (entry.content_type !== 'text/event-stream') track(res.clone().arrayBuffer());
    return res;
};

const client = new Client({ name: 'mcptap-everything-client', version: '1.0.0' });
const transport = legacySse
    ? new SSEClientTransport(mcpUrl, { fetch: recordingFetch })
    : new StreamableHTTPClientTransport(mcpUrl, { fetch: recordingFetch });
const results = {};
// When things arrived (ms after the call was sent), kept apart from `results` so that these
// still compare equal between runs.
const timing = {};
let stage = 'connect';
try {
    await client.connect(transport);
    results.server = client.getServerVersion();
    results.capabilities = client.getServerCapabilities();
    results.instructions_length = client.getInstructions()?.length ?? 0;
    results.protocol_version = transport.protocolVersion;

    stage = 'tools/list';
    const tools = await client.listTools();
    results.tools = tools.tools.map(t => ({ name: t.name, inputSchema: t.inputSchema })).sort((a, b) => a.name.localeCompare(b.name));

    stage = 'tools/call echo';
    results.echo = await client.callTool({ name: 'echo', arguments: { message: 'through mcptap ✓' } });

    stage = 'tools/call trigger-long-running-operation';
    const progress = [];
    const progressAt = [];
    const callStart = performance.now();
    const long = await client.callTool(
        { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 4 } },
        undefined,
        {
            onprogress: p => {
                progress.push({ progress: p.progress, total: p.total });
                progressAt.push(Math.round(performance.now() - callStart));
            },
        }
    );
    results.long_running = long;
    results.progress = progress;
    timing.progress_ms = progressAt;

    stage = 'resources/list';
    const resources = await client.listResources();
    results.resources = resources.resources;
    const doc = resources.resources
        .map(r => r.uri)
        .filter(u => u.startsWith('demo://resource/static/document/'))
        .sort()[0];
    if (!doc) throw new Error('no static document among the resources');

    stage = 'resources/read';
    results.read = await client.readResource({ uri: doc });

    stage = 'close';
    await Promise.allSettled([...inflight]);
    if (!legacySse) await transport.terminateSession();
    await client.close();
} catch (error) {
    fail(stage, error);
}
console.log(JSON.stringify({ ok: true, results, requests, timing }));
process.exit(0);
