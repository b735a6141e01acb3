"""A stand-in for an OpenAI-compatible model server, so a real OpenClaw gateway runs its agent turns
offline: every chat completion answers with the fixed text given on the command line (streamed as
server-sent events when the request asks for a stream), and each request's user messages are
appended to a log as one JSON line, so a test can see what reached the model.

Usage: model_standin.py PORT ANSWER LOG
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, ANSWER, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]


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
            log.write(json.dumps({"path": self.path, "user": user_text(body)}) + "\n")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.send(404, b"{}")
        created = int(time.time())
        base = {"id": "chatcmpl-standin", "created": created, "model": body.get("model", "standin-model")}
        if not body.get("stream"):
            answer = dict(base, object="chat.completion", choices=[{
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }], usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
            return self.send(200, json.dumps(answer).encode())
        chunks = [
            {"index": 0, "delta": {"role": "assistant", "content": ANSWER}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        ]
        events = b"".join(
            b"data: " + json.dumps(dict(base, object="chat.completion.chunk", choices=[c])).encode() + b"\n\n"
            for c in chunks
        )
        usage = dict(base, object="chat.completion.chunk", choices=[],
                     usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
        events += b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"
        self.send(200, events, "text/event-stream")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
