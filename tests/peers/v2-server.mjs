// An MCP server over Streamable HTTP built with the v2 TypeScript SDK (@modelcontextprotocol/server
// 2.x + @modelcontextprotocol/node), with two tools: `echo` ({ message: string } → "Echo: <message>")
// and `confirm` ({ action: string } → "confirmed: <action>" once the client confirms it).
//
// Usage:  node v2-server.mjs [--era modern|legacy|both] [--fault discover-500|strip-mcp-method|input-loop]
//   --era both    (default) `createMcpHandler(factory)`: protocol 2026-07-28 (server/discover,
//                 no initialize, no sessions, a `_meta` envelope on every request) and, for
//                 2025-era traffic, the SDK's stateless legacy fallback (initialize answered by a
//                 fresh instance per request, no Mcp-Session-Id; GET/DELETE answered 405);
//   --era modern  `createMcpHandler(factory, { legacy: 'reject' })`: 2026-07-28 only; a 2025-era
//                 request (initialize, …) is answered with the -32022 unsupported-protocol-version
//                 error naming the supported revisions;
//   --era legacy  the classic 2025 wiring: a sessionful `NodeStreamableHTTPServerTransport` per
//                 session (Mcp-Session-Id issued on initialize, GET stream, DELETE), an McpServer
//                 with the default 2025-era `supportedProtocolVersions`, so no server/discover
//                 handler: the probe is answered like any request without a session;
//   --fault discover-500  a planted fault: a POST whose JSON-RPC method is `server/discover` is
//                 answered `500` with a JSON-RPC error body, before the SDK sees it (any era).
//   --fault strip-mcp-method  a planted fault: the Mcp-Method header is removed before the SDK
//                 sees the request, as a gateway or middleware that drops unknown headers does.
//   --fault input-loop  a planted fault: `confirm` never completes — every round, the retry
//                 with an accepted confirmation included, is answered input_required again.
//
// `confirm` is a multi round-trip (MRTR) tool written once with the SDK's builder: it returns
// `inputRequired({ inputRequests: { confirm: inputRequired.elicit(…) }, requestState })` until the
// retried call carries an accepted `{ confirm: true }` in `inputResponses.confirm`. On 2026-07-28
// that is the `resultType: "input_required"` result and the client's retry (new id,
// `params.inputResponses`, `params.requestState`); on a 2025-era session (`--era legacy`) the
// SDK's legacy shim turns it into a classic server→client `elicitation/create` request on the
// call's SSE stream. The stateless legacy fallback of `--era both` cannot send one: there the
// call answers an `isError` result. `requestState` is `v1.<base64url JSON {tool, action,
// round}>.<base64url HMAC-SHA256>` under a fixed key (deterministic across runs); it is checked by
// the SDK's `requestState.verify` hook (a bad MAC is answered -32602 "Invalid or expired
// requestState"), and state minted for another action gets an `isError` result.
//
// `subscriptions/listen` (eras modern and both) is served by the SDK's listen router; the server
// publishes one `notifications/tools/list_changed` (`handler.notify.toolsChanged()`) 100 ms after
// each listen stream subscribes, so a listening client sees one change event.
//
// Listens on 127.0.0.1 on a port the OS picks, at path /mcp, and prints one line on stdout:
//   mcptap-peer: listening mcp=http://127.0.0.1:PORT/mcp era=ERA fault=FAULT
// Exits 0 on SIGTERM/SIGINT.
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import * as z from 'zod/v4';
import {
    createMcpHandler,
    InMemoryServerEventBus,
    inputRequired,
    inputResponse,
    isInitializeRequest,
    McpServer
} from '@modelcontextprotocol/server';
import {
    localhostHostValidation,
    localhostOriginValidation,
    NodeStreamableHTTPServerTransport,
    toNodeHandler
} from '@modelcontextprotocol/node';

const argv = process.argv.slice(2);
const opt = (name, fallback, allowed) => {
    const i = argv.indexOf(name);
    const value = i >= 0 ? argv[i + 1] : fallback;
    if (!allowed.includes(value)) {
        console.error(`v2-server: ${name} must be one of ${allowed.join('|')}, not ${value}`);
        process.exit(2);
    }
    return value;
};
const era = opt('--era', 'both', ['modern', 'legacy', 'both']);
const fault = opt('--fault', 'none', ['none', 'discover-500', 'strip-mcp-method', 'input-loop']);

// requestState for `confirm`: signed, not encrypted, and deterministic (no expiry, fixed key) so
// that two runs put the same bytes on the wire. The key is not a secret: this is a test peer.
const STATE_KEY = 'mcptap-v2-server requestState key, 32+ bytes long';
const b64url = buf => Buffer.from(buf).toString('base64url');
const mac = body => createHmac('sha256', STATE_KEY).update(body).digest();
const mintState = payload => {
    const body = b64url(JSON.stringify(payload));
    return `v1.${body}.${b64url(mac(body))}`;
};
// ServerOptions.requestState.verify: throws on anything not minted here (the SDK answers -32602),
// resolves with the payload, which the handler reads as ctx.mcpReq.requestState().
const verifyState = state => {
    const [version, body, tag, ...rest] = String(state).split('.');
    const got = Buffer.from(tag ?? '', 'base64url');
    const want = mac(body ?? '');
    if (version !== 'v1' || rest.length > 0 || got.length !== want.length || !timingSafeEqual(got, want)) {
        throw new Error('requestState: bad MAC');
    }
    return JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
};
const CONFIRM_SCHEMA = {
    type: 'object',
    properties: { confirm: { type: 'boolean', title: 'Confirm', description: 'Go ahead with the action' } },
    required: ['confirm']
};

// One factory for every era (the SDK's advice: the same tool surface on both legs).
const makeServer = () => {
    const server = new McpServer(
        { name: 'mcptap-v2-server', version: '1.0.0' },
        { requestState: { verify: verifyState } }
    );
    server.registerTool(
        'echo',
        {
            description: 'Echoes back the input',
            inputSchema: z.object({ message: z.string().describe('Message to echo') })
        },
        async ({ message }) => ({ content: [{ type: 'text', text: `Echo: ${message}` }] })
    );
    server.registerTool(
        'confirm',
        {
            description: 'Does an action once the user confirms it (multi round-trip elicitation)',
            inputSchema: z.object({ action: z.string().describe('What to do') })
        },
        async ({ action }, ctx) => {
            const state = ctx.mcpReq.requestState(); // the verified payload, or undefined
            if (state !== undefined && (state?.tool !== 'confirm' || state?.action !== action)) {
                return { content: [{ type: 'text', text: 'requestState was minted for another call' }], isError: true };
            }
            const answer = inputResponse(ctx.mcpReq.inputResponses, 'confirm');
            if (fault !== 'input-loop' && state !== undefined && answer.kind === 'elicit') {
                if (answer.action === 'accept' && answer.content?.confirm === true) {
                    return { content: [{ type: 'text', text: `confirmed: ${action}` }] };
                }
                return { content: [{ type: 'text', text: `not confirmed: ${action} (${answer.action})` }] };
            }
            const round = (state?.round ?? 0) + 1;
            return inputRequired({
                inputRequests: {
                    confirm: inputRequired.elicit({
                        message: `Confirm: ${action}? (round ${round})`,
                        requestedSchema: CONFIRM_SCHEMA
                    })
                },
                requestState: mintState({ tool: 'confirm', action, round })
            });
        }
    );
    return server;
};
const onerror = error => console.error(`v2-server: ${error?.message ?? error}`);

// The request handler for the chosen era: (req, res, raw) => Promise<void>, where raw is the POST
// body already read off req (a Buffer), or undefined when it was left for the SDK to read.
let serve;
let closeAll = async () => {};
if (era === 'legacy') {
    const sessions = new Map(); // Mcp-Session-Id → transport
    serve = async (req, res, raw) => {
        const body = parseJson(raw);
        if (raw !== undefined && body === undefined) {
            // The transport's own answer to a body that is not JSON.
            return answer(res, 400, { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error: Invalid JSON' }, id: null });
        }
        const sid = req.headers['mcp-session-id'];
        let transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
        if (!transport && req.method === 'POST' && sid === undefined && isInitializeRequest(body)) {
            transport = new NodeStreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                onsessioninitialized: id => sessions.set(id, transport)
            });
            transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
            await makeServer().connect(transport);
        }
        // Outside a session, the answers of the SDK's sessionful example server (and of
        // oauth-server.mjs): a server/discover probe, which carries no session, gets the 400.
        if (!transport && sid !== undefined) {
            return answer(res, 404, { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        }
        if (!transport) {
            return answer(res, 400, {
                jsonrpc: '2.0',
                error: { code: -32000, message: 'Bad Request: No valid session ID provided' },
                id: null
            });
        }
        await transport.handleRequest(req, res, body);
    };
    closeAll = async () => Promise.allSettled([...sessions.values()].map(t => t.close()));
} else {
    // The SDK's in-process bus, with one addition: each subscriptions/listen stream that
    // subscribes is followed, 100 ms later, by one tools/list_changed published through the
    // handler's own `notify` facade (to every open stream that asked for it).
    const inner = new InMemoryServerEventBus(onerror);
    const bus = {
        publish: event => inner.publish(event),
        subscribe: listener => {
            const unsubscribe = inner.subscribe(listener);
            const timer = setTimeout(() => handler.notify.toolsChanged(), 100);
            return () => {
                clearTimeout(timer);
                unsubscribe();
            };
        }
    };
    const handler = createMcpHandler(() => makeServer(), {
        ...(era === 'modern' && { legacy: 'reject' }),
        bus,
        onerror
    });
    const node = toNodeHandler(handler, { onerror });
    // The handler reads the body itself: when this script already read it (for --fault), it gets
    // a request that replays the same bytes, so the SDK parses exactly what came in.
    serve = (req, res, raw) =>
        node(
            raw === undefined
                ? req
                : {
                      method: req.method,
                      url: req.url,
                      headers: req.headers,
                      async *[Symbol.asyncIterator]() {
                          yield raw;
                      }
                  },
            res
        );
    closeAll = () => handler.close();
}

const validateHost = localhostHostValidation();
const validateOrigin = localhostOriginValidation();
const parseJson = raw => {
    if (raw === undefined || raw.length === 0) return undefined;
    try {
        return JSON.parse(raw.toString('utf8'));
    } catch {
        return undefined;
    }
};
const readBody = async req => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    return Buffer.concat(chunks);
};
const answer = (res, status, json) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json));
};
const isDiscover = body =>
    Array.isArray(body) ? body.some(isDiscover) : body?.method === 'server/discover';

const http = createServer(async (req, res) => {
    try {
        if (!validateHost(req, res) || !validateOrigin(req, res)) return;
        if (new URL(req.url, 'http://x').pathname !== '/mcp') {
            res.writeHead(404).end();
            return;
        }
        if (fault === 'strip-mcp-method') {
            delete req.headers['mcp-method'];
            const raw = req.rawHeaders;
            for (let i = raw.length - 2; i >= 0; i -= 2) {
                if (raw[i].toLowerCase() === 'mcp-method') raw.splice(i, 2);
            }
        }
        const needBody = req.method === 'POST' && (era === 'legacy' || fault === 'discover-500');
        const raw = needBody ? await readBody(req) : undefined;
        if (fault === 'discover-500' && raw !== undefined) {
            const body = parseJson(raw);
            if (isDiscover(body)) {
                return answer(res, 500, {
                    jsonrpc: '2.0',
                    id: Array.isArray(body) ? null : (body.id ?? null),
                    error: { code: -32603, message: 'planted fault: server/discover answers 500' }
                });
            }
        }
        await serve(req, res, raw);
    } catch (error) {
        onerror(error);
        if (!res.headersSent) res.writeHead(500).end();
    }
});

http.listen(0, '127.0.0.1', () => {
    const { port } = http.address();
    console.log(`mcptap-peer: listening mcp=http://127.0.0.1:${port}/mcp era=${era} fault=${fault}`);
});
const stop = async () => {
    await closeAll().catch(() => {});
    http.closeAllConnections();
    http.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
