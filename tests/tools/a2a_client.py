"""Drives an inbox with the official A2A Python SDK (a2a-sdk), as an outside user would.

Usage: a2a_client.py BASE_URL TOKEN OTHER_TOKEN

The inbox's A2A route runs tests/agents/a2a-agent.py: "sleep N" sleeps, "ask" asks a QUESTION
(input required), anything else is answered "echo: <text>". Each scenario prints one line; the
first failure raises, so the exit status says whether all passed.
"""
import asyncio
import re
import http.server
import json
import socket
import sys
import threading
import uuid

import httpx
from a2a.client import (
    A2ACardResolver,
    AuthInterceptor,
    ClientCallContext,
    ClientConfig,
    ClientFactory,
    InMemoryContextCredentialStore,
)
from a2a.types.a2a_pb2 import (
    AuthenticationInfo,
    CancelTaskRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import TaskNotFoundError

BASE, TOKEN, OTHER, ADMIN = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
SESSION = "session-1"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def message(text, context_id=None, task_id=None):
    m = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if context_id:
        m.context_id = context_id
    if task_id:
        m.task_id = task_id
    return m


def texts(task):
    return [p.text for a in task.artifacts for p in a.parts if p.text]


async def client_for(card, token, *, streaming, polling):
    # The official way to attach a credential: a credential service the auth interceptor asks
    # for each scheme the card requires.
    store = InMemoryContextCredentialStore()
    for scheme in card.security_schemes:
        await store.set_credentials(SESSION, scheme, token)
    factory = ClientFactory(ClientConfig(streaming=streaming, polling=polling,
                                         httpx_client=httpx.AsyncClient(timeout=5.0)))
    return factory.create(card, interceptors=[AuthInterceptor(store)])


CTX = ClientCallContext(state={"sessionId": SESSION})


async def send_one(client, msg):
    """The first (non-streaming: only) response of send_message."""
    async for event in client.send_message(SendMessageRequest(message=msg), context=CTX):
        return event
    raise AssertionError("no response")


async def until(client, task_id, states, limit=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while True:
        task = await client.get_task(GetTaskRequest(id=task_id), context=CTX)
        if task.status.state in states:
            return task
        check(loop.time() < end, f"task {task_id} stuck in {TaskState.Name(task.status.state)}")
        await asyncio.sleep(0.2)


async def _first_config_id(client, task_id):
    from a2a.types.a2a_pb2 import ListTaskPushNotificationConfigsRequest
    listed = await client.list_task_push_notification_configs(
        ListTaskPushNotificationConfigsRequest(task_id=task_id), context=CTX)
    return listed.configs[0].id


async def main():
    async with httpx.AsyncClient() as session:
        card = await A2ACardResolver(session, BASE).get_agent_card()
    check(card.supported_interfaces[0].protocol_version == "1.0", "the card speaks 1.0")
    check(card.capabilities.streaming, "the card offers streaming")
    check(len(card.skills) >= 1, "the card lists the skill")
    print("card:", card.name, [s.id for s in card.skills])

    polling = await client_for(card, TOKEN, streaming=False, polling=True)
    blocking = await client_for(card, TOKEN, streaming=False, polling=False)
    streaming = await client_for(card, TOKEN, streaming=True, polling=False)
    other = await client_for(card, OTHER, streaming=False, polling=True)

    # returnImmediately, then GetTask until COMPLETED with the reply as an artifact.
    first = await send_one(polling, message("hello there"))
    task = first.task
    check(task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING),
          f"returnImmediately answers at once: {TaskState.Name(task.status.state)}")
    done = await until(polling, task.id, {TaskState.TASK_STATE_COMPLETED})
    check("echo: hello there" in texts(done), f"the reply is an artifact: {texts(done)}")
    print("returnImmediately + GetTask: COMPLETED", texts(done))

    # A blocking SendMessage on a short turn answers with the finished task.
    blocked = (await send_one(blocking, message("quick one"))).task
    check(blocked.status.state == TaskState.TASK_STATE_COMPLETED,
          f"blocking: {TaskState.Name(blocked.status.state)}")
    print("blocking SendMessage: COMPLETED")

    # A follow-up in the same context continues the thread (the agent sees the same thread id).
    follow = (await send_one(blocking, message("and again", context_id=task.context_id))).task
    check(follow.context_id == task.context_id and follow.id != task.id, "same context, new task")
    # The agent reports its INBOX_THREAD_ID (the inbox's own thread id, not the context id): the
    # same for both tasks, the only UUID their artifacts share.
    uuid_re = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    shared = set(re.findall(uuid_re, str(done.artifacts))) & set(
        re.findall(uuid_re, str(follow.artifacts)))
    check(len(shared) == 1, f"the agent ran in the same thread: {shared}")
    print("follow-up in the same contextId: new task, same thread")

    # INPUT_REQUIRED, then the answer with the task's id runs a new turn in the same task.
    asked = (await send_one(blocking, message("please ask me"))).task
    check(asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED,
          f"asks: {TaskState.Name(asked.status.state)}")
    check("Which colour" in asked.status.message.parts[0].text, "the question is the status message")
    answered = (await send_one(blocking, message("blue", task_id=asked.id))).task
    check(answered.id == asked.id and answered.status.state == TaskState.TASK_STATE_COMPLETED,
          f"answered: {TaskState.Name(answered.status.state)}")
    check("echo: blue" in texts(answered), "the answer's turn replied")
    print("INPUT_REQUIRED and its answer: COMPLETED")

    # Cancel a long turn.
    long = (await send_one(polling, message("sleep 30 then answer"))).task
    await until(polling, long.id, {TaskState.TASK_STATE_WORKING})
    canceled = await polling.cancel_task(CancelTaskRequest(id=long.id), context=CTX)
    check(canceled.status.state == TaskState.TASK_STATE_CANCELED,
          f"cancel: {TaskState.Name(canceled.status.state)}")
    print("CancelTask on a running turn: CANCELED")

    # Streaming (the client's default): the task, then its updates, until COMPLETED.
    states, artifacts = [], []
    async for event in streaming.send_message(SendMessageRequest(message=message("sleep 1 streamed")),
                                              context=CTX):
        if event.HasField("task"):
            states.append(event.task.status.state)
        elif event.HasField("status_update"):
            states.append(event.status_update.status.state)
        elif event.HasField("artifact_update"):
            artifacts.append(event.artifact_update.artifact.parts[0].text)
    check(states[-1] == TaskState.TASK_STATE_COMPLETED, f"stream ends COMPLETED: {states}")
    order = [TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING,
             TaskState.TASK_STATE_COMPLETED]
    check([order.index(s) for s in states] == sorted(order.index(s) for s in states),
          f"states only move forward: {states}")
    check(artifacts == ["echo: sleep 1 streamed"], f"the reply streams as an artifact: {artifacts}")
    print("streaming:", [TaskState.Name(s) for s in states], artifacts)

    # A push to a receiver that is down at first: the relay retries, and it arrives once the
    # receiver is back.
    # The port is held from here on: bound, not yet listening (so a connection is refused),
    # and listened on by the receiver later; nothing else can take it meanwhile.
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            received.append((self.headers.get("authorization"),
                             self.headers.get("x-a2a-notification-token"), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    config = TaskPushNotificationConfig(
        url=f"http://127.0.0.1:{port}/hook", token="push-token",
        authentication=AuthenticationInfo(scheme="Bearer", credentials="push-secret"))
    request = SendMessageRequest(
        message=message("pushed"),
        configuration=SendMessageConfiguration(return_immediately=True,
                                               task_push_notification_config=config))
    pushed = None
    async for event in polling.send_message(request, context=CTX):
        pushed = event.task
    await until(polling, pushed.id, {TaskState.TASK_STATE_COMPLETED})
    # The inbox tried once and failed (the receiver is down): wait for that attempt itself.
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    async with httpx.AsyncClient() as admin:
        while True:
            outbox = (await admin.get(f"{BASE}/admin/outbox",
                                      headers={"authorization": f"Bearer {ADMIN}"})).json()
            tried = [i for i in outbox["outbox"] if i["reply"]["type"] == "A2A_PUSH"
                     and (i["delivery"]["attempts"] or 0) >= 1]
            if tried:
                break
            check(loop.time() < end, f"the push was never tried: {outbox}")
            await asyncio.sleep(0.1)
    check(not received, "nothing can arrive while the receiver is down")
    server = http.server.HTTPServer(("127.0.0.1", port), Receiver, bind_and_activate=False)
    server.socket.close()
    server.socket = held
    held.listen(16)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    end = loop.time() + 30
    while not any(b["task"]["status"]["state"] == "TASK_STATE_COMPLETED" for _, _, b in received):
        check(loop.time() < end, f"the push never arrived: {received}")
        await asyncio.sleep(0.1)
    server.shutdown()
    auth, token, body = received[-1]
    check(auth == "Bearer push-secret" and token == "push-token", f"push headers: {auth} {token}")
    check(body["task"]["id"] == pushed.id, "the push names its task")
    config_id = await _first_config_id(polling, pushed.id)
    shown = await polling.get_task_push_notification_config(
        GetTaskPushNotificationConfigRequest(task_id=pushed.id, id=config_id), context=CTX)
    check("push-secret" not in str(shown) and "push-token" not in str(shown),
          f"a push config's secrets are never shown: {shown}")
    print("push after the receiver came back:", len(received), "push(es), COMPLETED last")

    # Another peer cannot see the task.
    try:
        await other.get_task(GetTaskRequest(id=task.id), context=CTX)
        raise AssertionError("another peer read the task")
    except TaskNotFoundError:
        print("another peer's GetTask: TaskNotFoundError")


asyncio.run(main())
