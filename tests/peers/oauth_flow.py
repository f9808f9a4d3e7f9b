"""A connector driven by the Python MCP SDK's own client code (pinned in requirements.txt):
`mcp.Client` over `streamable_http_client` with an httpx2 client whose auth is the SDK's
`OAuthClientProvider`, through the whole MCP authorization flow, without a browser.

Usage:  .venv/bin/python oauth_flow.py MCP_URL

Like oauth-flow.mjs: the SDK does discovery, registration, PKCE, state and the token
exchange; the "browser" is a fetch of the authorization URL that follows redirects by hand
until the Location is the redirect URI, whose code and state go to the SDK's callback handler.
The redirect URI is never contacted. Then tools/list, tools/call greet and multi-greet.
Prints one JSON summary line; exits 1 on failure, and by itself after 45 s.
"""

import json
import sys
import traceback
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import Implementation

REDIRECT_URL = "http://127.0.0.1:1/callback"  # never contacted


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


async def main(mcp_url: str) -> dict:
    contacted: list[str] = []

    async def record(request: httpx2.Request) -> None:
        contacted.append(f"{request.method} {request.url}")

    redirect: dict = {}

    async def redirect_handler(authorization_url: str) -> None:
        url = authorization_url
        async with httpx2.AsyncClient(follow_redirects=False, event_hooks={"request": [record]}) as browser:
            for _ in range(10):
                response = await browser.get(url)
                location = response.headers.get("location")
                if not (300 <= response.status_code < 400 and location):
                    raise RuntimeError(f"the authorization request ended with {response.status_code} at {url}")
                nxt = urljoin(url, location)
                if nxt.startswith(REDIRECT_URL):
                    redirect.update({k: v[0] for k, v in parse_qs(urlparse(nxt).query).items()})
                    return
                url = nxt
        raise RuntimeError("more than 10 redirects from the authorization endpoint")

    async def callback_handler() -> AuthorizationCodeResult:
        if "error" in redirect:
            raise RuntimeError(f"authorization refused: {redirect}")
        return AuthorizationCodeResult(code=redirect["code"], state=redirect.get("state"), iss=redirect.get("iss"))

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="mcptap oauth_flow.py",
            redirect_uris=[REDIRECT_URL],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    logs: list[str] = []

    async def on_log(params) -> None:
        logs.append(f"{params.level}: {params.data}")

    summary: dict = {"ok": False}
    async with httpx2.AsyncClient(auth=provider, event_hooks={"request": [record]}) as http:
        async with Client(
            streamable_http_client(mcp_url, http_client=http),
            logging_callback=on_log,
            client_info=Implementation(name="mcptap-oauth-flow-py", version="1.0.0"),
        ) as client:
            summary["protocol_version"] = client.protocol_version
            summary["server"] = client.server_info.model_dump(exclude_none=True) if client.server_info else None
            tools = await client.list_tools()
            summary["tools"] = sorted(t.name for t in tools.tools)
            greet = await client.call_tool("greet", {"name": "mcptap"})
            summary["greet"] = "".join(c.text for c in greet.content)
            multi = await client.call_tool("multi-greet", {"name": "mcptap"})
            summary["multi_greet"] = "".join(c.text for c in multi.content)
            with anyio.move_on_after(2):
                while len(logs) < 3:
                    await anyio.sleep(0.02)
            summary["logging"] = logs
    summary["challenged"] = bool(redirect)
    summary["client_id_registered"] = storage.client_info is not None
    summary["token_type"] = storage.tokens.token_type.lower() if storage.tokens else None
    summary["contacted"] = contacted
    summary["ok"] = True
    return summary


async def bounded(mcp_url: str) -> dict:
    with anyio.fail_after(45):
        return await main(mcp_url)


if __name__ == "__main__":
    try:
        result = anyio.run(bounded, sys.argv[1])
    except BaseException as error:  # noqa: BLE001 - report anything, then fail
        traceback.print_exc()
        print(json.dumps({"ok": False, "error": repr(error)}))
        sys.exit(1)
    print(json.dumps(result))
