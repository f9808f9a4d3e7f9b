"""A plain MCP client made of the Python SDK's own code (pinned in requirements.txt) for
@modelcontextprotocol/server-everything over Streamable HTTP: everything-client.mjs's session.

Usage:  .venv/bin/python everything_client.py MCP_URL

`mcp.Client` over `streamable_http_client` with an httpx2 client that records every HTTP
request: initialize (the SDK may probe `server/discover` first), tools/list, tools/call echo,
tools/call trigger-long-running-operation with a progress callback (the server sends
notifications/progress on the call's SSE stream), resources/list, resources/read of the first
static document; the session is ended (DELETE) on close.
Prints one JSON line: what the server answered (`results`, comparable between a direct run and
one through a proxy) and what the client sent (`requests`: method, path, status, content type of
each HTTP request, in order). Exits 1 on any failure, and by itself after 45 s.
"""

import json
import sys
import traceback

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(mcp_url: str) -> dict:
    requests: list[dict] = []

    async def on_response(response: httpx2.Response) -> None:
        content_type = response.headers.get("content-type")
        requests.append(
            {
                "method": response.request.method,
                "path": response.request.url.raw_path.decode(),
                "status": response.status_code,
                "content_type": content_type.split(";")[0] if content_type else None,
            }
        )

    results: dict = {}
    async with httpx2.AsyncClient(event_hooks={"response": [on_response]}) as http:
        async with Client(
            streamable_http_client(mcp_url, http_client=http),
            client_info=Implementation(name="mcptap-everything-client-py", version="1.0.0"),
        ) as client:
            results["server"] = dump(client.server_info) if client.server_info else None
            results["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            results["tools"] = sorted(
                ({"name": t.name, "inputSchema": t.input_schema} for t in tools.tools),
                key=lambda t: t["name"],
            )
            results["echo"] = dump(await client.call_tool("echo", {"message": "through mcptap ✓"}))
            progress: list[dict] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append({"progress": value, "total": total})

            long = await client.call_tool(
                "trigger-long-running-operation",
                {"duration": 1, "steps": 4},
                progress_callback=on_progress,
            )
            results["long_running"] = dump(long)
            results["progress"] = progress
            resources = await client.list_resources()
            results["resources"] = [dump(r) for r in resources.resources]
            docs = sorted(
                str(r.uri) for r in resources.resources if str(r.uri).startswith("demo://resource/static/document/")
            )
            if not docs:
                raise RuntimeError("no static document among the resources")
            results["read"] = dump(await client.read_resource(docs[0]))
    return {"ok": True, "results": results, "requests": requests}


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
