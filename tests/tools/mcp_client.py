"""Drives an MCP server with the official MCP Python SDK (`mcp` on PyPI), over stdio or HTTP.

Usage: mcp_client.py PLAN_JSON -- COMMAND [ARGS...]   (stdio)
       mcp_client.py PLAN_JSON --http URL              (Streamable HTTP)

Over stdio the server is started as COMMAND with this process's environment. Over HTTP each
request carries `Authorization: Bearer $INBOX_AGENT_TOKEN`. PLAN_JSON is a list of steps:
  {"op": "list_tools"}
  {"op": "call", "tool": NAME, "args": {...}}
  {"op": "wait_list_changed", "secs": N}   (a notifications/tools/list_changed within N s)
  {"op": "raw", "line": "..."}             (not supported over the SDK; see the Rust test)
  {"op": "sleep", "secs": N}
Each step prints one JSON line: what the server answered (tools with their schemas; a call's
text, structured content, isError and the progress messages it sent), or the error it raised.
"""
import asyncio
import contextlib
import json
import os
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

PLAN = json.loads(sys.argv[1])
if sys.argv[2] == "--http":
    URL, COMMAND = sys.argv[3], None
else:
    URL, COMMAND = None, sys.argv[sys.argv.index("--") + 1:]

list_changed = anyio.Event()


async def on_message(message):
    if isinstance(message, types.ServerNotification):
        message = message.root if hasattr(message, "root") else message
    name = getattr(message, "method", None) or type(message).__name__
    if "list_changed" in str(name) or "ToolListChanged" in str(name):
        list_changed.set()


def dump(result):
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


@contextlib.asynccontextmanager
async def transport():
    if URL is None:
        params = StdioServerParameters(command=COMMAND[0], args=COMMAND[1:],
                                       env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            yield read, write
    else:
        token = os.environ["INBOX_AGENT_TOKEN"]
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http, streamable_http_client(URL, http_client=http) as streams:
            yield streams[0], streams[1]


async def main():
    async with transport() as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            init = await session.initialize()
            print(json.dumps({"op": "initialize", "server": dump(init.server_info),
                              "protocol": init.protocol_version,
                              "tools_list_changed": bool(init.capabilities.tools and
                                                         init.capabilities.tools.list_changed)}),
                  flush=True)
            for step in PLAN:
                op = step["op"]
                started = time.monotonic()
                try:
                    if op == "list_tools":
                        r = await session.list_tools()
                        out = {"tools": [dump(t) for t in r.tools]}
                    elif op == "call":
                        progress = []

                        async def on_progress(p, total, message, progress=progress):
                            progress.append(message)

                        r = await session.call_tool(step["tool"], step.get("args") or {},
                                                    progress_callback=on_progress)
                        out = {"tool": step["tool"], "result": dump(r), "progress": progress}
                    elif op == "wait_list_changed":
                        with anyio.fail_after(step.get("secs", 20)):
                            await list_changed.wait()
                        out = {"list_changed": True}
                    elif op == "sleep":
                        await anyio.sleep(step["secs"])
                        out = {}
                    else:
                        out = {"error": f"unknown op {op}"}
                except Exception as e:  # the step's failure is its answer
                    out = {"raised": type(e).__name__, "message": str(e), "tool": step.get("tool")}
                out["secs"] = round(time.monotonic() - started, 3)
                print(json.dumps(dict(op=op, **out)), flush=True)


asyncio.run(main())
