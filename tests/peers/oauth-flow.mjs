// A connector driven by the TypeScript SDK's own client code: StreamableHTTPClientTransport
// with an OAuthClientProvider, through the whole MCP authorization flow, without a browser.
//
// Usage:  node oauth-flow.mjs MCP_URL [--stop-after-token]
//
// The SDK does the discovery (401 → RFC 9728 protected-resource metadata → RFC 8414 metadata),
// dynamic client registration, PKCE and the token exchange. The one step a browser would do,
// following the authorization URL, is done here by a fetch that follows redirects by hand until
// the Location is the redirect URI, whose `code` is handed to transport.finishAuth(). The
// redirect URI itself is never contacted. Then: initialize, tools/list, tools/call greet and
// multi-greet (which sends logging notifications), DELETE of the session.
//
// Prints one JSON summary line on stdout; exits 0 on success, 1 (with the error on stderr and
// {"ok":false,...} on stdout) otherwise, and by itself after 45 s.
import { randomUUID } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const mcpUrl = new URL(process.argv[2] ?? '');
// --stop-after-token: the connector of ../../shared/CASE.md, which gets its token and then
// sends nothing more (prints {"ok":true,"stopped_after_token":true,...}).
const stopAfterToken = process.argv.includes('--stop-after-token');
const REDIRECT_URL = 'http://127.0.0.1:1/callback'; // never contacted: the code is read off the Location

const fail = (stage, error) => {
    console.error(`oauth-flow: failed at ${stage}:`, error);
    console.log(JSON.stringify({ ok: false, stage, error: String(error?.stack ?? error) }));
    process.exit(1);
};
setTimeout(() => fail('deadline', new Error('did not finish within 45 s')), 45_000).unref();

// Every URL the client contacted (the SDK's fetches and the authorize fetch), in order.
const contacted = [];
const recordingFetch = (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    contacted.push(`${init?.method ?? (input instanceof Request ? input.method : 'GET')} ${url}`);
    return fetch(input, init);
};

/** An in-memory OAuthClientProvider whose "browser" is a redirect-following fetch. */
class HeadlessProvider {
    constructor() {
        this.redirects = [];
        this.authorizationCode = undefined;
    }
    get redirectUrl() {
        return REDIRECT_URL;
    }
    get clientMetadata() {
        return {
            client_name: 'mcptap oauth-flow',
            redirect_uris: [REDIRECT_URL],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'client_secret_post'
        };
    }
    state() {
        this._state = randomUUID();
        return this._state;
    }
    clientInformation() {
        return this._client;
    }
    saveClientInformation(info) {
        this._client = info;
    }
    tokens() {
        return this._tokens;
    }
    saveTokens(tokens) {
        this._tokens = tokens;
    }
    saveCodeVerifier(v) {
        this._verifier = v;
    }
    codeVerifier() {
        if (!this._verifier) throw new Error('no code verifier saved');
        return this._verifier;
    }
    async redirectToAuthorization(authorizationUrl) {
        this.authorizationUrl = authorizationUrl.href;
        let url = authorizationUrl.href;
        for (let hop = 0; hop < 10; hop++) {
            const res = await recordingFetch(url, { redirect: 'manual' });
            const location = res.headers.get('location');
            await res.arrayBuffer();
            if (res.status < 300 || res.status >= 400 || !location) {
                throw new Error(`the authorization request ended with ${res.status} at ${url}, not a redirect to the client`);
            }
            const next = new URL(location, url);
            this.redirects.push({ status: res.status, location: next.origin + next.pathname });
            if (next.href.startsWith(REDIRECT_URL)) {
                const error = next.searchParams.get('error');
                if (error) throw new Error(`authorization refused: ${error} ${next.searchParams.get('error_description') ?? ''}`);
                this.authorizationCode = next.searchParams.get('code');
                this.returnedState = next.searchParams.get('state');
                return;
            }
            url = next.href;
        }
        throw new Error('more than 10 redirects from the authorization endpoint');
    }
}

const provider = new HeadlessProvider();
const logs = [];
let allLogged;
const logsDone = new Promise(resolve => (allLogged = resolve));
const newClient = () => {
    const client = new Client({ name: 'mcptap-oauth-flow', version: '1.0.0' });
    client.setNotificationHandler(LoggingMessageNotificationSchema, n => {
        logs.push(n.params);
        if (logs.length >= 3) allLogged();
    });
    return client;
};
const newTransport = () => new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: recordingFetch });

let client = newClient();
let transport = newTransport();
let challenged = false;
try {
    await client.connect(transport);
} catch (error) {
    if (!(error instanceof UnauthorizedError)) fail('connect', error);
    challenged = true;
}
if (challenged) {
    if (!provider.authorizationCode) fail('authorize', new Error('no authorization code came back'));
    try {
        await transport.finishAuth(provider.authorizationCode);
    } catch (error) {
        fail('token', error);
    }
    await transport.close().catch(() => {});
    if (stopAfterToken) {
        console.log(JSON.stringify({ ok: true, stopped_after_token: true, challenged, token_type: provider.tokens()?.token_type, contacted }));
        process.exit(0);
    }
    client = newClient();
    transport = newTransport();
    try {
        await client.connect(transport);
    } catch (error) {
        fail('connect after authorization', error);
    }
}

const summary = {
    ok: false,
    challenged,
    client_id_registered: !!provider.clientInformation()?.client_id,
    authorization_redirects: provider.redirects,
    state_round_trip: provider._state !== undefined && provider.returnedState === provider._state,
    token_type: provider.tokens()?.token_type,
    scope: provider.tokens()?.scope,
    server: client.getServerVersion(),
    protocol_version: transport.protocolVersion,
    session_id_assigned: !!transport.sessionId
};
try {
    const tools = await client.listTools();
    summary.tools = tools.tools.map(t => t.name).sort();
    const greet = await client.callTool({ name: 'greet', arguments: { name: 'mcptap' } });
    summary.greet = greet.content.map(c => c.text).join('');
    const multi = await client.callTool({ name: 'multi-greet', arguments: { name: 'mcptap' } });
    summary.multi_greet = multi.content.map(c => c.text).join('');
    // The notifications may come on another stream than the result: wait for them, bounded.
    await Promise.race([logsDone, new Promise(resolve => setTimeout(resolve, 2000).unref())]);
    summary.logging = logs.map(l => `${l.level}: ${l.data}`);
    await transport.terminateSession();
    summary.session_terminated = transport.sessionId === undefined;
    await client.close();
} catch (error) {
    fail('mcp', error);
}
summary.contacted = contacted;
summary.ok = true;
console.log(JSON.stringify(summary));
process.exit(0);
