"""A stand-in for an OpenAI-compatible model server, so a real OpenClaw gateway runs its agent turns
offline: every chat completion answers with the fixed text given on the command line (streamed as
server-sent events when the request asks for a stream), and each request's user messages are
appended to a log as one JSON line, so a test can see what reached the model.

Usage: model_standin.py PORT ANSWER LOG [--call-tool SUFFIX TYPE]

With --call-tool, a request that offers a tool whose name ends with SUFFIX (e.g. `reply`, which
OpenClaw names `inbox__reply`) and holds no tool result yet is answered with a call of that tool:
the `message_id` its prompt names, reply type TYPE, and a small payload. Once the tool's result is
in the conversation, the answer is ANSWER. The log line then also has the tools offered and the
tool results seen.
"""

import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, ANSWER, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
CALL = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 and sys.argv[4] == "--call-tool" else None


def tool_names(body):
    return [t.get("function", {}).get("name", "") for t in body.get("tools") or []]


def tool_results(body):
    out = []
    for message in body.get("messages") or []:
        if message.get("role") == "tool":
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            out.append(content)
    return out


def tool_call(body):
    """The call this request gets instead of text, if any: (name, arguments as JSON)."""
    if CALL is None or tool_results(body):
        return None
    name = next((n for n in tool_names(body) if n.endswith(CALL[0])), None)
    found = re.search(r"message_id: (\S+)", user_text(body))
    if name is None or found is None:
        return None
    args = {"message_id": found.group(1), "type": CALL[1],
            "payload": {"answered_by": "openclaw", "via": "mcp"}}
    return name, json.dumps(args)


def user_text(body):
    texts = []
    for message in body.get("messages") or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(texts)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            models = {"object": "list", "data": [{"id": "standin-model", "object": "model"}]}
            return self.send(200, json.dumps(models).encode())
        self.send(404, b"{}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with open(LOG, "a") as log:
            log.write(json.dumps({"path": self.path, "user": user_text(body),
                                  "tools": tool_names(body),
                                  "tool_results": tool_results(body)}) + "\n")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.send(404, b"{}")
        created = int(time.time())
        base = {"id": "chatcmpl-standin", "created": created, "model": body.get("model", "standin-model")}
        call = tool_call(body)
        if call is None:
            message, finish = {"role": "assistant", "content": ANSWER}, "stop"
        else:
            calls = [{"index": 0, "id": "call_standin_1", "type": "function",
                      "function": {"name": call[0], "arguments": call[1]}}]
            message, finish = {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not body.get("stream"):
            answer = dict(base, object="chat.completion", usage=usage, choices=[{
                "index": 0, "message": message, "finish_reason": finish}])
            return self.send(200, json.dumps(answer).encode())
        delta = {k: v for k, v in message.items() if v is not None}
        chunks = [
            {"index": 0, "delta": delta, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": finish},
        ]
        events = b"".join(
            b"data: " + json.dumps(dict(base, object="chat.completion.chunk", choices=[c])).encode() + b"\n\n"
            for c in chunks
        )
        tail = dict(base, object="chat.completion.chunk", choices=[], usage=usage)
        events += b"data: " + json.dumps(tail).encode() + b"\n\ndata: [DONE]\n\n"
        self.send(200, events, "text/event-stream")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
