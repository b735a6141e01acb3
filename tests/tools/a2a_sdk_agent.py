"""A small scripted A2A v1.0 agent served with the official Python SDK (a2a-sdk==1.3.0).

Usage: a2a_agent.py PORT TOKEN LOGFILE [--no-streaming] [--sdk-context-ids] [--lifetime SECONDS]

  PORT      TCP port on 127.0.0.1 (0 = let the OS pick one)
  TOKEN     every request except the agent card needs `Authorization: Bearer TOKEN` (401 otherwise)
  LOGFILE   each JSON-RPC request received is appended as one JSON line:
            {"ts", "authorized", "id", "method", "params"}

The first stdout line is the port, printed (flushed) once the server listens. The card is at
/.well-known/agent-card.json, the JSON-RPC endpoint at /a2a (A2A-Version: 1.0 required by the SDK).
With --no-streaming the card says capabilities.streaming = false and the SDK's handler refuses
SendStreamingMessage / SubscribeToTask (UnsupportedOperationError, code -32004).
--lifetime N makes the process exit by itself after N seconds (a bound for tests).
A follow-up naming only a taskId inherits that task's contextId (an SDK 1.3.0 workaround, see
TaskContextBuilder); --sdk-context-ids turns the workaround off.

Behaviour, chosen by keywords (at a word start, case-insensitive) in the incoming message's first
text part, checked in this order:
  a follow-up to a task in INPUT_REQUIRED: a colour in the text -> artifact "c1", COMPLETED
                                           (no colour: asks again)
  "complete": artifact "a1" = data {"type":"ANSWER","payload":{"text":"done: <text[:40]>"}} + text
  "stream":   artifacts s1, s2 (two chunks: append/lastChunk), s3 over ~1.5 s, WORKING in between
  "ask":      INPUT_REQUIRED, status message "Which colour?"
  "fail":     FAILED, status message "the model is down"
  "reject":   REJECTED, status message "not my job"
  "slow [N]": WORKING for N s (default 20), then one artifact and COMPLETED; CancelTask -> CANCELED
  "plain":    artifact with only a text part
  otherwise:  like "complete"
"""

import argparse
import asyncio
import contextlib
import json
import re
import socket
import sys
import time

import uvicorn
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_data_part, new_text_part
from a2a.server.agent_execution import (
    AgentExecutor,
    RequestContext,
    SimpleRequestContextBuilder,
)
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH

RPC_PATH = "/a2a"
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black",
           "white", "grey", "gray", "violet", "indigo", "cyan", "magenta"]


def now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def first_text(message) -> str:
    if message is None:
        return ""
    for part in message.parts:
        if part.HasField("text"):
            return part.text
    return ""


def answer_parts(text: str, with_data: bool = True, **extra):
    parts = []
    if with_data:
        parts.append(new_data_part({"type": "ANSWER", "payload": {"text": text, **extra}}))
    parts.append(new_text_part(text))
    return parts


class ScriptedAgent(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = first_text(context.message)
        lower = text.lower()

        def has(word: str) -> bool:  # at a word start: "completed" counts, "task" is not "ask"
            return re.search(rf"\b{word}", lower) is not None

        task = context.current_task
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)

        def say(s: str):
            return updater.new_agent_message([new_text_part(s)])

        if task is None:
            # The SDK wants a Task before any status/artifact event; the user's message is its history.
            await event_queue.enqueue_event(Task(
                id=context.task_id, context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED, timestamp=now()),
                history=[context.message]))
        elif task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
            colour = next((c for c in COLOURS if re.search(rf"\b{c}\b", lower)), None)
            if colour is None:
                await updater.requires_input(say("Which colour?"))
                return
            await updater.start_work()
            await updater.add_artifact(answer_parts(f"colour: {colour}", colour=colour),
                                       artifact_id="c1", name="colour")
            await updater.complete()
            return

        if has("complete"):
            await updater.start_work()
            await updater.add_artifact(answer_parts(f"done: {text[:40]}"), artifact_id="a1",
                                       name="answer")
            await updater.complete()
        elif has("stream"):
            await updater.start_work()
            await updater.add_artifact([new_text_part("first artifact")], artifact_id="s1",
                                       name="s1")
            await asyncio.sleep(0.5)
            await updater.start_work()
            await updater.add_artifact([new_text_part("second artifact, part one; ")],
                                       artifact_id="s2", name="s2", append=False, last_chunk=False)
            await asyncio.sleep(0.25)
            await updater.add_artifact([new_text_part("part two")], artifact_id="s2",
                                       append=True, last_chunk=True)
            await asyncio.sleep(0.25)
            await updater.start_work()
            await updater.add_artifact(answer_parts("third artifact"), artifact_id="s3", name="s3")
            await asyncio.sleep(0.5)
            await updater.complete()
        elif has("ask"):
            await updater.requires_input(say("Which colour?"))
        elif has("fail"):
            await updater.start_work()
            await updater.failed(say("the model is down"))
        elif has("reject"):
            await updater.reject(say("not my job"))
        elif has("slow"):
            m = re.search(r"slow\s+(\d+(?:\.\d+)?)", lower)
            seconds = float(m.group(1)) if m else 20.0
            await updater.start_work(say(f"working for {seconds:g} s"))
            await asyncio.sleep(seconds)  # CancelTask cancels this coroutine
            await updater.add_artifact(answer_parts(f"slept {seconds:g} s"), artifact_id="w1",
                                       name="slow")
            await updater.complete()
        elif has("plain"):
            await updater.start_work()
            await updater.add_artifact([new_text_part(f"plain: {text[:40]}")], artifact_id="p1",
                                       name="plain")
            await updater.complete()
        else:
            await updater.start_work()
            await updater.add_artifact(answer_parts(f"done: {text[:40]}"), artifact_id="a1",
                                       name="answer")
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # Called before the SDK cancels the running execute(); the CANCELED status is ours to write.
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel(updater.new_agent_message([new_text_part("canceled")]))


class TaskContextBuilder(SimpleRequestContextBuilder):
    """Works around a2a-sdk 1.3.0: a follow-up that names a taskId but no contextId gets a freshly
    generated contextId (stamped on the stored message), and the next follow-up to that task then
    fails with -32602 "Context in event doesn't match TaskManager". A2A says the task's contextId
    applies, so take it from the store."""

    def __init__(self, task_store):
        super().__init__()
        self._store = task_store

    async def build(self, context, params=None, task_id=None, context_id=None, task=None):
        if task_id and not context_id:
            stored = await self._store.get(task_id, context)
            if stored is not None:
                context_id = stored.context_id
        return await super().build(context=context, params=params, task_id=task_id,
                                   context_id=context_id, task=task)


class AuthAndLog:
    """ASGI middleware: bearer-token check (the card stays public) and a JSON line per RPC."""

    def __init__(self, app, token: str, log_path: str):
        self.app, self.token, self.log_path = app, token, log_path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorized = headers.get("authorization", "") == f"Bearer {self.token}"
        path = scope.get("path", "")
        if path == AGENT_CARD_WELL_KNOWN_PATH:
            return await self.app(scope, receive, send)

        # Read the whole body, then replay it to the app.
        chunks, more = [], True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)

        if scope["method"] == "POST" and path == RPC_PATH:
            try:
                req = json.loads(body)
            except ValueError:
                req = None
            entry = {"ts": time.time(), "authorized": authorized,
                     "a2aVersion": headers.get("a2a-version")}
            if isinstance(req, dict):
                entry.update(id=req.get("id"), method=req.get("method"), params=req.get("params"))
            else:
                entry.update(raw=body.decode("utf-8", "replace"))
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

        if not authorized:
            payload = json.dumps({"error": "unauthorized"}).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"www-authenticate", b'Bearer realm="a2a-agent"'),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def build_card(port: int, streaming: bool) -> AgentCard:
    return AgentCard(
        name="scripted-agent",
        description="A scripted A2A v1.0 test agent (complete/stream/ask/fail/reject/slow/plain).",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=f"http://127.0.0.1:{port}{RPC_PATH}",
                                             protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=streaming, push_notifications=False),
        security_schemes={"bearer": SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))},
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[AgentSkill(id="scripted", name="Scripted behaviours",
                           description="Behaves by keywords in the message text.",
                           tags=["test"], examples=["complete this", "stream", "ask", "slow 5"])],
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("token")
    ap.add_argument("logfile")
    ap.add_argument("--no-streaming", action="store_true")
    ap.add_argument("--sdk-context-ids", action="store_true",
                    help="keep the SDK's own contextId handling for taskId-only follow-ups")
    ap.add_argument("--lifetime", type=float, default=0, help="exit after this many seconds")
    args = ap.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]

    card = build_card(port, streaming=not args.no_streaming)
    store = InMemoryTaskStore()
    handler = DefaultRequestHandler(
        agent_executor=ScriptedAgent(), task_store=store, agent_card=card,
        request_context_builder=None if args.sdk_context_ids else TaskContextBuilder(store))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await handler.aclose()

    app = Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, RPC_PATH),
                    lifespan=lifespan)
    config = uvicorn.Config(AuthAndLog(app, args.token, args.logfile), log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # surface a startup failure
            sys.exit(1)
        await asyncio.sleep(0.02)
    print(port, flush=True)
    if args.lifetime > 0:
        asyncio.get_running_loop().call_later(args.lifetime,
                                              lambda: setattr(server, "should_exit", True))
    await serving


if __name__ == "__main__":
    asyncio.run(main())
