#!/usr/bin/env python3
"""The agent behind the A2A TCK's route: acts on the messageId prefix the TCK sends
(a2aproject/a2a-tck `scenarios/*.feature`), read from $INBOX_SENDER_MESSAGE_ID.

Each reply's payload is `{"parts": [...]}` of A2A parts, which the inbox turns into the
artifact's parts as they are. A prefix it does not know completes the task, as the TCK's own
reference agents do.
"""
import json
import os
import time
import urllib.request

mid = os.environ.get("INBOX_SENDER_MESSAGE_ID", "")

REPLIES = [  # longest prefix first
    ("tck-artifact-file-url", "ANSWER", [{"url": "https://example.com/output.txt",
                                          "filename": "output.txt", "mediaType": "text/plain"}]),
    ("tck-artifact-file", "ANSWER", [{"raw": "dGNr", "filename": "output.txt",
                                      "mediaType": "text/plain"}]),
    ("tck-artifact-text", "ANSWER", [{"text": "Generated text content"}]),
    ("tck-artifact-data", "ANSWER", [{"data": {"key": "value", "count": 42}}]),
    ("tck-input-required", "QUESTION", [{"text": "Please provide more input"}]),
    ("tck-complete-task", "ANSWER", [{"text": "Hello from TCK"}]),
    ("tck-message-response", "ANSWER", [{"text": "Direct message response"}]),
    ("tck-stream-ordering-001", "ANSWER", [{"text": "Ordered output"}]),
    ("tck-stream-001", "ANSWER", [{"text": "Stream hello from TCK"}]),
    ("tck-stream-003", "ANSWER", [{"text": "Stream task lifecycle"}]),
    ("test-resubscribe-message-id", "ANSWER", [{"text": "Resubscribed"}]),
]

reply_type, parts = "ANSWER", [{"text": f"Unhandled messageId prefix: {mid}"}]
for prefix, t, p in REPLIES:
    if mid.startswith(prefix):
        reply_type, parts = t, p
        break
if mid.startswith("tck-stream") or mid.startswith("test-resubscribe"):
    # Long enough for a stream to see the task working first.
    time.sleep(4 if mid.startswith("test-resubscribe") else 0.5)
if mid.startswith("tck-reject-task"):
    raise SystemExit("rejected")

req = urllib.request.Request(
    os.environ["INBOX_REPLY_URL"],
    data=json.dumps({"type": reply_type, "payload": {"parts": parts}}).encode(),
    method="POST",
    headers={"Authorization": "Bearer " + os.environ["INBOX_REPLY_TOKEN"],
             "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    print("replied", reply_type, r.status)
