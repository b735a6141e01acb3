#!/usr/bin/env python3
"""The demo agent: a stand-in for `openclaw agent ... -m "<prompt>"` that follows its reply instructions.

It reads the prompt the inbox gives it, finds the curl command and the valid reply types in the
instructions, and sends a BREAKDOWN of the task back through /send, the way an LLM agent would.
"""
import argparse
import json
import re
import sys
import urllib.request

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--session-id", default="")
p.add_argument("-m", "--message", required=True, help="the prompt")
args = p.parse_args()
prompt = args.message

url = re.search(r"curl -s -X POST (\S+)", prompt)
# The credential: a header file the curl reads (`-H '@file'`), so no token is on a command line.
auth_file = re.search(r"-H '@([^']+)'", prompt)
types = re.search(r"Valid types: ([^\n]+?)\.\n", prompt)
if not (url and auth_file and types):
    print("no reply instructions in the prompt; nothing to do")
    sys.exit(0)
valid = [t.strip() for t in types.group(1).split(",")]
reply_type = "BREAKDOWN" if "BREAKDOWN" in valid else valid[0]

payload_text = prompt.split("Payload (JSON):\n", 1)[1].split("\n===== END OF MESSAGE ", 1)[0]
try:
    task = json.loads(payload_text)
except ValueError:
    task = {}
title = (task.get("title") or task.get("text")) if isinstance(task, dict) else None
title = title or "the task"
steps = [f"Understand {title}", f"Do {title}", f"Check {title}"]

body = json.dumps({"type": reply_type, "payload": {"task": title, "steps": steps,
                                                   "session": args.session_id}}).encode()
with open(auth_file.group(1), encoding="utf-8") as f:
    name, value = f.read().strip().split(": ", 1)
req = urllib.request.Request(url.group(1), data=body, method="POST", headers={
    name: value,
    "Content-Type": "application/json",
})
with urllib.request.urlopen(req, timeout=30) as r:
    print("replied", reply_type, r.status, r.read().decode())
