"""A stand-in OpenClaw gateway: POST /hooks/agent as OpenClaw's docs/gateway/config-hooks.md
(2026.9.6) describes it, with an "agent" that follows the reply instructions in the message.

Usage: gateway_standin.py TOKEN LOG_FILE  -- prints its port on the first line of stdout.

It checks what a real gateway would (the bearer token, a nonempty message, the agent id, the
session key prefix with sessionMode "persistent", waitForCompletion) and replays a known
idempotency key's completion. The message steers it: GATEWAY_BUSY_ONCE answers 409 (session
busy) to the first try of a run, GATEWAY_NOT_ADMITTED_ONCE 503 and GATEWAY_RATE_ONCE 429 likewise,
GATEWAY_BAD 400, GATEWAY_SLOW holds a first attempt's run for 30 s, GATEWAY_ERROR completes with
status error, GATEWAY_SKIP with status skipped. Every request body is appended to LOG_FILE as one JSON line.
"""
import http.server
import json
import re
import sys
import time
import urllib.request

TOKEN, LOG = sys.argv[1], sys.argv[2]
AGENTS = {"main"}
PREFIXES = ("hook:inbox:",)
completions = {}
tries = {}


class Gateway(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/hooks/agent":
            return self.answer(404, {"ok": False, "error": "no hook action"})
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.answer(401, {"ok": False, "error": "unauthorized"})
        try:
            body = json.loads(raw)
        except ValueError:
            return self.answer(400, {"ok": False, "error": "invalid JSON"})
        with open(LOG, "a") as f:
            f.write(json.dumps(body) + "\n")
        message = body.get("message")
        if not isinstance(message, str) or not message:
            return self.answer(400, {"ok": False, "error": "message required"})
        if body.get("agentId") not in AGENTS:
            return self.answer(400, {"ok": False, "error": "agentId not allowed"})
        key = body.get("sessionKey", "")
        if body.get("sessionMode") == "persistent" and not key.lower().startswith(PREFIXES):
            return self.answer(400, {"ok": False, "error": "sessionKey prefix not allowed"})
        run = self.headers.get("idempotency-key") or body.get("idempotencyKey")
        if run in completions:
            return self.answer(200, completions[run])
        tries[run] = tries.get(run, 0) + 1
        if "GATEWAY_BUSY_ONCE" in message and tries[run] == 1:
            return self.answer(409, {"ok": False, "error": "session busy"})
        if "GATEWAY_NOT_ADMITTED_ONCE" in message and tries[run] == 1:
            return self.answer(503, {"ok": False, "error": "not admitted"})
        if "GATEWAY_RATE_ONCE" in message and tries[run] == 1:
            return self.answer(429, {"ok": False, "error": "rate limited"})
        if "GATEWAY_BAD" in message:
            return self.answer(400, {"ok": False, "error": "bad request"})
        if "GATEWAY_SLOW" in message and run.endswith(":1"):
            # The first attempt's run outlasts the inbox that started it.
            time.sleep(30)
        if "GATEWAY_ERROR" in message:
            status = "error"
        elif "GATEWAY_SKIP" in message:
            status = "skipped"
        else:
            status = "ok"
            reply(message, key)
        result = {"ok": True, "runId": f"run-{len(completions) + 1}",
                  "completion": {"status": status, "replyDisposition": "silent"}}
        completions[run] = result
        self.answer(200, result)

    def log_message(self, *args):
        pass


def reply(prompt, session):
    """The agent's part: reply as the instructions in the prompt say."""
    url = re.search(r"curl -s -X POST '?([^'\s]+)'?", prompt)
    token = re.search(r"Authorization: Bearer ([^'\"\s]+)", prompt)
    types = re.search(r"Valid types: ([^\n]+?)\.\n", prompt)
    if not (url and token and types):
        return
    kind = types.group(1).split(",")[0].strip()
    req = urllib.request.Request(url.group(1), method="POST", data=json.dumps(
        {"type": kind, "payload": {"via": "gateway", "session": session}}).encode(), headers={
        "Authorization": "Bearer " + token.group(1), "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
print(server.server_address[1], flush=True)
server.serve_forever()
