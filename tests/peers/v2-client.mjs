// An MCP client built with the v2 TypeScript SDK (@modelcontextprotocol/client 2.x: Client +
// StreamableHTTPClientTransport), in one of its three version-negotiation modes.
//
// Usage:  node v2-client.mjs MCP_URL [--mode auto|legacy|modern] [--message TEXT]
//                            [--call echo|confirm] [--action TEXT] [--listen]
//   --mode auto    (default) versionNegotiation { mode: 'auto' }: probe with server/discover
//                  (protocol 2026-07-28); on definitive modern evidence use it, on a legacy
//                  signal fall back to the 2025 initialize handshake; an HTTP 5xx, a network
//                  error or a timeout of the probe fails the connect (no fallback);
//   --mode legacy  versionNegotiation { mode: 'legacy' } (the SDK's default): the plain 2025
//                  sequence, initialize + notifications/initialized, no probe;
//   --mode modern  versionNegotiation { mode: { pin: '2026-07-28' } }: server/discover must
//                  offer 2026-07-28; no fallback.
//   --call echo    (default) tools/call echo { message }.
//   --call confirm tools/call confirm { action } (--action, default "deploy"), a multi round-trip
//                  call: the client declares the elicitation capability (form mode) and answers
//                  every elicitation/create with { action: 'accept', content: { confirm: true } }.
//                  On 2026-07-28 the SDK's own driver does the rounds (an input_required result
//                  → the handler → a retry with a new id, params.inputResponses and the echoed
//                  params.requestState), capped with `inputRequired: { maxRounds: 5 }`: a sixth
//                  input_required stops the call; on a 2025 session the server sends the
//                  elicitation/create itself, and the handler refuses a sixth. Either way the
//                  run fails with stage "confirm", error.code "ROUND_LIMIT" (the summary keeps
//                  `confirm`). A tool result with isError (the stateless 2025 fallback of
//                  `v2-server.mjs --era both` cannot elicit) is a result: ok stays true.
//   --listen       after the call, `client.listen({ toolsListChanged: true })` (a POST
//                  subscriptions/listen answered with an SSE stream), kept open 300 ms after the
//                  server acknowledged it, then `subscription.close()`.
//
// connect, tools/list, the call, the listen, then DELETE of the session when there is one, and
// close. Prints one JSON line on stdout:
//   { ok, mode, era, protocol_version, server, discover, tools, echo | confirm, listen, requests }
// or, on failure, { ok: false, mode, stage, error: { name, code, message, data }, requests }.
// `era` is the SDK's getProtocolEra() ('modern' | 'legacy'), `protocol_version` its
// getNegotiatedProtocolVersion(), `discover` the DiscoverResult of the probe (modern only).
// `confirm` is { result, rounds, elicitations }: the final CallToolResult; how many times the
// server asked for input (input_required results on 2026-07-28, elicitation/create requests on
// 2025), the one that hit the limit included; the message of each elicitation the handler got.
// `listen` is { honored, notifications, closed }: the filter the server acknowledged, each change
// notification the SDK dispatched (method, params), and how the subscription ended.
// `requests` is every HTTP request the client made, in order: method, path, status, the MCP
// headers it sent (MCP-Protocol-Version, Mcp-Method, Mcp-Name, Mcp-Session-Id) and the
// Mcp-Session-Id the server answered with; for a POST of tools/call also `rpc_method` and
// `result_type` (the answer's `resultType`, or "error"), and for subscriptions/listen
// `rpc_method` and `events` (each SSE event's JSON-RPC message, as read off the wire).
// Exits 1 on failure, and by itself after 45 s.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const argv = process.argv.slice(2);
const opt = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const mcpUrl = new URL(argv[0] ?? '');
const mode = opt('--mode', 'auto');
const message = opt('--message', 'through mcptap ✓');
const call = opt('--call', 'echo');
const action = opt('--action', 'deploy');
const listen = argv.includes('--listen');
const MAX_ROUNDS = 5;
if (!['echo', 'confirm'].includes(call)) {
    console.error(`v2-client: --call must be echo or confirm, not ${call}`);
    process.exit(2);
}
const negotiation = { auto: 'auto', legacy: 'legacy', modern: { pin: '2026-07-28' } }[mode];
if (negotiation === undefined) {
    console.error(`v2-client: --mode must be auto, legacy or modern, not ${mode}`);
    process.exit(2);
}

const requests = [];
const fail = async (stage, error, code) => {
    console.error(`v2-client: failed at ${stage}:`, error);
    await settle();
    const detail = {
        name: error?.name ?? null,
        code: code ?? error?.code ?? null,
        message: String(error?.message ?? error),
        data: error?.data ?? null
    };
    const partial = stage === 'confirm' ? { confirm } : {};
    console.log(JSON.stringify({ ok: false, mode, stage, error: detail, ...partial, requests }));
    process.exit(1);
};
setTimeout(() => fail('deadline', new Error('did not finish within 45 s')), 45_000).unref();

const MCP_HEADERS = ['mcp-protocol-version', 'mcp-method', 'mcp-name', 'mcp-session-id'];
// The JSON-RPC messages of a response body: one JSON body, or the `data` of each SSE event.
const messagesOf = (text, sse) => {
    const parse = t => {
        try {
            return JSON.parse(t);
        } catch {
            return { unparsed: t };
        }
    };
    if (!sse) return text.trim() === '' ? [] : [parse(text)];
    const out = [];
    for (const block of text.split(/\r?\n\r?\n/)) {
        const data = block
            .split(/\r?\n/)
            .filter(line => line.startsWith('data:'))
            .map(line => line.slice(5).replace(/^ /, ''));
        if (data.length > 0) out.push(parse(data.join('\n')));
    }
    return out;
};
// Reads a copy of a response body without holding up the SDK; a stream the SDK aborts (the
// listen stream on close) keeps what arrived before the abort.
const pending = [];
const readCopy = async (res, sse) => {
    let text = '';
    const reader = res.body?.getReader();
    const decoder = new TextDecoder();
    try {
        for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
        }
    } catch {
        // aborted: keep what was read
    }
    return messagesOf(text, sse);
};
const settle = () => Promise.race([Promise.allSettled(pending), new Promise(r => setTimeout(r, 2000).unref())]);
const recordingFetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
    const sent = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    const entry = { method, path: url.pathname + url.search, status: null, headers: {} };
    for (const h of MCP_HEADERS) if (sent.has(h)) entry.headers[h] = sent.get(h);
    let rpcMethod;
    if (method === 'POST' && typeof init?.body === 'string') {
        try {
            rpcMethod = JSON.parse(init.body)?.method;
        } catch {}
    }
    requests.push(entry);
    const res = await fetch(input, init);
    entry.status = res.status;
    entry.content_type = res.headers.get('content-type')?.split(';')[0] ?? null;
    const sid = res.headers.get('mcp-session-id');
    if (sid !== null) entry.session_id = sid;
    if (rpcMethod === 'tools/call' || rpcMethod === 'subscriptions/listen') {
        entry.rpc_method = rpcMethod;
        const sse = entry.content_type === 'text/event-stream';
        pending.push(
            readCopy(res.clone(), sse).then(messages => {
                if (rpcMethod === 'subscriptions/listen') {
                    entry.events = messages;
                } else {
                    const answer = messages.find(m => m && 'id' in m && ('result' in m || 'error' in m));
                    entry.result_type =
                        answer === undefined ? null : answer.error ? 'error' : (answer.result?.resultType ?? null);
                }
            })
        );
    }
    return res;
};

const client = new Client(
    { name: 'mcptap-v2-client', version: '1.0.0' },
    {
        versionNegotiation: { mode: negotiation },
        ...(call === 'confirm' && {
            capabilities: { elicitation: { form: {} } },
            inputRequired: { maxRounds: MAX_ROUNDS }
        })
    }
);
let confirm;
let roundLimit = false;
if (call === 'confirm') {
    confirm = { result: null, rounds: 0, elicitations: [] };
    // One handler for both eras: the SDK's MRTR driver dispatches each embedded elicitation/create
    // of an input_required result here (2026-07-28); a 2025 server sends it as a request.
    client.setRequestHandler('elicitation/create', async request => {
        confirm.rounds += 1;
        confirm.elicitations.push(request.params?.message ?? null);
        if (confirm.rounds > MAX_ROUNDS) {
            roundLimit = true;
            throw new Error(`more than ${MAX_ROUNDS} input rounds`);
        }
        return { action: 'accept', content: { confirm: true } };
    });
}
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

    if (call === 'echo') {
        stage = 'tools/call echo';
        out.echo = await client.callTool({ name: 'echo', arguments: { message } });
    } else {
        stage = 'confirm';
        try {
            confirm.result = await client.callTool({ name: 'confirm', arguments: { action } });
        } catch (error) {
            if (error?.code === 'INPUT_REQUIRED_ROUNDS_EXCEEDED') {
                // The SDK stopped before dispatching the sixth round's elicitation.
                confirm.rounds += 1;
                roundLimit = true;
            }
            if (roundLimit) await fail(stage, error, 'ROUND_LIMIT');
            throw error;
        }
        if (roundLimit) await fail(stage, new Error(`more than ${MAX_ROUNDS} input rounds`), 'ROUND_LIMIT');
        out.confirm = confirm;
    }

    if (listen) {
        stage = 'listen';
        const notifications = [];
        client.setNotificationHandler('notifications/tools/list_changed', n =>
            notifications.push({ method: n.method, params: n.params ?? null })
        );
        const subscription = await client.listen({ toolsListChanged: true });
        await new Promise(r => setTimeout(r, 300));
        await subscription.close();
        const closed = await Promise.race([
            subscription.closed,
            new Promise(r => setTimeout(() => r('timeout'), 2000))
        ]);
        out.listen = { honored: subscription.honoredFilter, notifications, closed };
    }

    stage = 'close';
    if (transport.sessionId !== undefined) await transport.terminateSession();
    await client.close();
} catch (error) {
    await fail(stage, error);
}
await settle();
out.requests = requests;
console.log(JSON.stringify(out));
process.exit(0);
