#!/usr/bin/env python3
"""A test agent that follows its reply instructions to the letter: it takes the curl command
from the prompt (on stdin), fills in the payload, runs it with sh, and exits with curl's status.

So a test that uses it shows that the instructions an agent is given work as written.
"""
import os
import subprocess
import sys
import time

prompt = sys.stdin.read()
# `--wait-for PATH`: block until PATH exists before replying (at most 120 s).
if len(sys.argv) == 3 and sys.argv[1] == "--wait-for":
    deadline = time.time() + 120
    while not os.path.exists(sys.argv[2]) and time.time() < deadline:
        time.sleep(0.02)
    # Says when the reply is about to go (for a test that must know it went).
    open(sys.argv[2] + ".replying", "w").close()
lines = prompt.splitlines()
start = next(i for i, l in enumerate(lines) if l.strip().startswith("curl "))
command = []
for line in lines[start:]:
    if not line.strip():
        break
    command.append(line)
text = "\n".join(command).replace("{...}", '{"followed": "the instructions"}')
# -f: an HTTP error fails the agent, so the test sees it.
text = text.replace("curl -s ", "curl -s -f ", 1)
done = subprocess.run(["sh", "-c", text], capture_output=True, text=True)
print(text)
print(done.stdout)
print(done.stderr, file=sys.stderr)
sys.exit(done.returncode)
