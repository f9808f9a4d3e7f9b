// The TypeScript SDK's OAuth example server (examples/server/simpleStreamableHttp.js --oauth),
// re-wired so that it can run behind mcptap on free ports.
//
// Why not run the example itself: it names its resource `http://localhost:${MCP_PORT}/mcp`,
// its own port, in the protected-resource metadata, and a conforming client that talks to the
// proxy's URL refuses that (RFC 9728 §3.3: the `resource` must be the URL the client used).
// Its authorization server also listens on a fixed port (MCP_AUTH_PORT). So this driver uses
// the same SDK pieces as the example — createMcpExpressApp, StreamableHTTPServerTransport,
// the example's DemoInMemoryAuthProvider and InMemoryEventStore, mcpAuthRouter /
// mcpAuthMetadataRouter, requireBearerAuth — and the example's `greet` and `multi-greet`
// tools, but takes the public URL (the proxy's) at run time.
//
// Usage:  node oauth-server.mjs [--as same|separate] [--no-strict]
//   --as same      (default) the authorization server is mounted on the MCP server's own
//                  origin, so a proxy in front of the MCP server sees the whole OAuth flow;
//   --as separate  it listens on its own port, as in the SDK example: clients reach it directly.
//   --no-strict    accept tokens issued for any resource (the example without --oauth-strict).
//
// Protocol with the test:
//   1. stdout: `mcptap-peer: listening mcp=http://127.0.0.1:Q/mcp as=http://127.0.0.1:R`
//      (as= is the MCP origin itself with --as same);
//   2. stdin:  one line, the public URL of the MCP endpoint (e.g. http://127.0.0.1:P/mcp);
//   3. stdout: `mcptap-peer: ready resource=<that URL> issuer=<issuer>`.
// It exits when stdin closes or on SIGTERM/SIGINT.
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import express from 'express';
import * as z from 'zod/v4';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
    createOAuthMetadata,
    getOAuthProtectedResourceMetadataUrl,
    mcpAuthMetadataRouter,
    mcpAuthRouter
} from '@modelcontextprotocol/sdk/server/auth/router.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { resourceUrlFromServerUrl } from '@modelcontextprotocol/sdk/shared/auth-utils.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { DemoInMemoryAuthProvider } from '@modelcontextprotocol/sdk/examples/server/demoInMemoryOAuthProvider.js';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';

const argv = process.argv.slice(2);
const asMode = argv.includes('--as') ? argv[argv.indexOf('--as') + 1] : 'same';
if (asMode !== 'same' && asMode !== 'separate') {
    console.error(`oauth-server: --as must be same or separate, not ${asMode}`);
    process.exit(2);
}
const strict = !argv.includes('--no-strict');
const SCOPES = ['mcp:tools'];

// The example's `greet` and `multi-greet` (its pauses shortened from 1 s to 200 ms).
const getServer = () => {
    const server = new McpServer(
        { name: 'simple-streamable-http-server', version: '1.0.0' },
        { capabilities: { logging: {} } }
    );
    server.registerTool(
        'greet',
        {
            title: 'Greeting Tool',
            description: 'A simple greeting tool',
            inputSchema: { name: z.string().describe('Name to greet') }
        },
        async ({ name }) => ({ content: [{ type: 'text', text: `Hello, ${name}!` }] })
    );
    server.registerTool(
        'multi-greet',
        {
            description: 'A tool that sends different greetings with delays between them',
            inputSchema: { name: z.string().describe('Name to greet') },
            annotations: { title: 'Multiple Greeting Tool', readOnlyHint: true, openWorldHint: false }
        },
        async ({ name }, extra) => {
            const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
            await server.sendLoggingMessage({ level: 'debug', data: `Starting multi-greet for ${name}` }, extra.sessionId);
            await sleep(200);
            await server.sendLoggingMessage({ level: 'info', data: `Sending first greeting to ${name}` }, extra.sessionId);
            await sleep(200);
            await server.sendLoggingMessage({ level: 'info', data: `Sending second greeting to ${name}` }, extra.sessionId);
            return { content: [{ type: 'text', text: `Good morning, ${name}!` }] };
        }
    );
    return server;
};

const listen = (app) =>
    new Promise((resolve, reject) => {
        const srv = app.listen(0, '127.0.0.1', err => (err ? reject(err) : resolve(srv)));
    });

const app = createMcpExpressApp(); // DNS-rebinding protection: Host must be 127.0.0.1/localhost
// Behind a reverse proxy that adds X-Forwarded-For (mcptap does), express-rate-limit in the SDK's
// auth handlers logs ERR_ERL_UNEXPECTED_X_FORWARDED_FOR on every request unless Express is told
// to trust the proxy; a deployment behind a proxy sets this.
app.set('trust proxy', 'loopback');
const mcpHttp = await listen(app);
const mcpOrigin = `http://127.0.0.1:${mcpHttp.address().port}`;
let authApp = null;
let authHttp = null;
let asOrigin = mcpOrigin;
if (asMode === 'separate') {
    authApp = express();
    authApp.use(express.json());
    authHttp = await listen(authApp);
    asOrigin = `http://127.0.0.1:${authHttp.address().port}`;
}
console.log(`mcptap-peer: listening mcp=${mcpOrigin}/mcp as=${asOrigin}`);

const sessions = new Map();
const shutdown = () => {
    for (const { transport } of sessions.values()) transport.close().catch(() => {});
    mcpHttp.closeAllConnections?.();
    mcpHttp.close();
    authHttp?.closeAllConnections?.();
    authHttp?.close();
    process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const rl = createInterface({ input: process.stdin });
rl.on('close', shutdown);
const publicUrl = await new Promise(resolve => rl.once('line', line => resolve(line.trim())));

const mcpServerUrl = new URL(publicUrl);
// In `same` mode the issuer is the public origin: every OAuth URL the client learns is the proxy's.
const issuerUrl = asMode === 'same' ? new URL(mcpServerUrl.origin) : new URL(asOrigin);
const validateResource = strict
    ? resource => !!resource && resource.toString() === resourceUrlFromServerUrl(mcpServerUrl).toString()
    : undefined;
const provider = new DemoInMemoryAuthProvider(validateResource);

if (asMode === 'same') {
    // Authorization endpoints, AS metadata and the protected-resource metadata, on one origin.
    app.use(
        mcpAuthRouter({
            provider,
            issuerUrl,
            resourceServerUrl: mcpServerUrl,
            scopesSupported: SCOPES,
            resourceName: 'MCP Demo Server'
        })
    );
} else {
    // As in the example: the AS on its own origin, the MCP server serving only metadata.
    authApp.use(mcpAuthRouter({ provider, issuerUrl, scopesSupported: SCOPES }));
    app.use(
        mcpAuthMetadataRouter({
            oauthMetadata: createOAuthMetadata({ provider, issuerUrl, scopesSupported: SCOPES }),
            resourceServerUrl: mcpServerUrl,
            scopesSupported: SCOPES,
            resourceName: 'MCP Demo Server'
        })
    );
}

const authMiddleware = requireBearerAuth({
    // The example verifies through the AS's introspection endpoint; in one process the
    // provider answers the same question directly.
    verifier: provider,
    requiredScopes: [],
    resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(mcpServerUrl),
    expectedResource: strict ? mcpServerUrl : undefined
});

app.post('/mcp', authMiddleware, async (req, res) => {
    const sessionId = req.headers['mcp-session-id'];
    try {
        const session = sessionId ? sessions.get(sessionId) : undefined;
        if (session) {
            await session.transport.handleRequest(req, res, req.body);
        } else if (!sessionId && isInitializeRequest(req.body)) {
            const transport = new StreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                eventStore: new InMemoryEventStore(),
                onsessioninitialized: sid => sessions.set(sid, { transport })
            });
            transport.onclose = () => {
                if (transport.sessionId) sessions.delete(transport.sessionId);
            };
            await getServer().connect(transport);
            await transport.handleRequest(req, res, req.body);
        } else if (sessionId) {
            res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        } else {
            res.status(400).json({
                jsonrpc: '2.0',
                error: { code: -32000, message: 'Bad Request: No valid session ID provided' },
                id: null
            });
        }
    } catch (error) {
        console.error('oauth-server: error handling MCP request:', error);
        if (!res.headersSent) {
            res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null });
        }
    }
});
const withSession = async (req, res) => {
    const session = sessions.get(req.headers['mcp-session-id']);
    if (!session) {
        res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        return;
    }
    await session.transport.handleRequest(req, res);
};
app.get('/mcp', authMiddleware, withSession);
app.delete('/mcp', authMiddleware, withSession);

console.log(`mcptap-peer: ready resource=${mcpServerUrl.href} issuer=${issuerUrl.href}`);
