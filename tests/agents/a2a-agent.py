#!/usr/bin/env python3
"""A test agent for A2A tasks: acts on the words of the client's text.

  "sleep N"  sleeps N seconds first (a long turn, to cancel or stream);
  "fail"     exits 3 without replying;
  "ask"      replies QUESTION (the task goes to INPUT_REQUIRED);
  otherwise  replies ANSWER {"text": "echo: <text>"}.

The prompt's payload is read from the prompt the inbox renders ("Payload (JSON):" ... the line
that ends the message); the reply goes to $INBOX_REPLY_URL with $INBOX_REPLY_TOKEN, as the instructions say.
"""
import json
import os
import re
import sys
import time
import urllib.request

prompt = sys.argv[sys.argv.index("-m") + 1] if "-m" in sys.argv else sys.stdin.read()
try:
    payload = json.loads(prompt.split("Payload (JSON):\n", 1)[1].split("\n===== END OF MESSAGE ", 1)[0])
except (IndexError, ValueError):
    payload = {}
text = payload.get("text", "") if isinstance(payload, dict) else ""

m = re.search(r"\bsleep (\d+(?:\.\d+)?)", text)
if m:
    time.sleep(float(m.group(1)))
if re.search(r"\bfail\b", text):
    print("failing as asked", file=sys.stderr)
    sys.exit(3)
if re.search(r"\bask\b", text):
    reply = {"type": "QUESTION", "payload": {"text": "Which colour do you want?"}}
else:
    reply = {"type": "ANSWER", "payload": {"text": "echo: " + text,
                                           "message_id": os.environ.get("INBOX_SENDER_MESSAGE_ID", ""),
                                           "thread": os.environ.get("INBOX_THREAD_ID", "")}}
req = urllib.request.Request(os.environ["INBOX_REPLY_URL"], data=json.dumps(reply).encode(),
                             method="POST", headers={
                                 "Authorization": "Bearer " + os.environ["INBOX_REPLY_TOKEN"],
                                 "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    print("replied", reply["type"], r.status)
