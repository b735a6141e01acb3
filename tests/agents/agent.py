#!/usr/bin/env python3
"""A test agent: does what its flags say, then (optionally) replies through /send.

Reads INBOX_REPLY_URL and INBOX_REPLY_TOKEN like a real agent integration would.
"""
import argparse
import os
import sys

p = argparse.ArgumentParser()
p.add_argument("--prompt-file", help="read the prompt from this file")
p.add_argument("--prompt", help="the prompt itself")
p.add_argument("--record", help="directory: write the prompt, env and token there")
p.add_argument("--wait-for", help="block until this file exists")
p.add_argument("--sleep", type=float, default=0)
p.add_argument("--running-dir", help="directory: mark this turn running there, record how many run")
p.add_argument("--fork-sleeper", help="fork a long sleep and write its pid to this file")
p.add_argument("--setsid-sleeper", help="start a long sleep in a session of its own (setsid, out of the agent's process group) that ignores SIGTERM, and write its pid to this file")
p.add_argument("--reply", action="append", default=[], help="reply with this type (repeatable)")
p.add_argument("--exit", type=int, default=0)
p.add_argument("--payload", help="reply with this JSON payload instead of the default object")
p.add_argument("--session-id", help="ignored: a session key, as `openclaw agent` takes one")
p.add_argument("--print-bytes", type=int, default=0, help="first print this many bytes to stdout and to stderr")
p.add_argument("--stderr", action="append", default=[], help="write this line to stderr before exiting (repeatable)")
p.add_argument("--ticks", type=int, default=0, help="print `tick N` to stdout and `tock N` to stderr this many times, 0.2 s apart, before anything else ends")
p.add_argument("--status-dir", help="directory: write this process's pid, then each reply's HTTP status, to a file named by the pid")
args = p.parse_args()

# First thing, before the slower imports: a turn with a short timeout must not be killed before the
# sleeper exists (its pid is what the test checks).
if args.fork_sleeper:
    pid = os.fork()
    if pid == 0:
        os.execvp("sleep", ["sleep", "300"])
    with open(args.fork_sleeper, "w") as f:
        f.write(str(pid))

if args.setsid_sleeper:
    import signal
    import subprocess
    sleeper = subprocess.Popen(
        ["sleep", "300"],
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    with open(args.setsid_sleeper, "w") as f:
        f.write(str(sleeper.pid))

import json  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

mid = os.environ.get("INBOX_MESSAGE_ID", "unknown")


def note_status(line):
    """Appends a line to this process's status file (kept even when stdout's reader is gone)."""
    if args.status_dir:
        os.makedirs(args.status_dir, exist_ok=True)
        with open(os.path.join(args.status_dir, str(os.getpid())), "a") as f:
            f.write(line + "\n")


note_status("started")

prompt = args.prompt
if args.prompt_file:
    with open(args.prompt_file, encoding="utf-8") as f:
        prompt = f.read()
if prompt is None and not sys.stdin.isatty():
    prompt = sys.stdin.read()

if args.record:
    os.makedirs(args.record, exist_ok=True)
    with open(os.path.join(args.record, mid + ".json"), "w", encoding="utf-8") as f:
        json.dump({
            "prompt": prompt,
            "argv": sys.argv,
            "env": {k: v for k, v in os.environ.items() if k.startswith("INBOX_") or k.endswith("_SECRET")},
            "environ": dict(os.environ),
            "cwd": os.getcwd(),
        }, f)

if args.print_bytes:
    # A head and a tail that can be told apart, so a test sees which end was kept.
    body = "H" * (args.print_bytes - 4) + "TAIL"
    sys.stdout.write(body)
    sys.stdout.flush()
    sys.stderr.write(body)
    sys.stderr.flush()

for i in range(args.ticks):
    print("tick", i, flush=True)
    print("tock", i, file=sys.stderr, flush=True)
    time.sleep(0.2)

if args.running_dir:
    os.makedirs(args.running_dir, exist_ok=True)
    mine = os.path.join(args.running_dir, "running-" + mid)
    open(mine, "w").close()
    seen = len([n for n in os.listdir(args.running_dir) if n.startswith("running-")])
    with open(os.path.join(args.running_dir, "seen-" + mid), "w") as f:
        f.write(str(seen))

if args.wait_for:
    deadline = time.time() + 60
    while not os.path.exists(args.wait_for) and time.time() < deadline:
        time.sleep(0.02)

if args.sleep:
    time.sleep(args.sleep)

for t in args.reply:
    payload = json.loads(args.payload) if args.payload else {"from_message": mid, "note": "reply " + t}
    body = json.dumps({"type": t, "payload": payload}).encode()
    req = urllib.request.Request(
        os.environ["INBOX_REPLY_URL"],
        data=body,
        method="POST",
        headers={
            "Authorization": "Bearer " + os.environ["INBOX_REPLY_TOKEN"],
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            note_status(str(r.status))
            print("sent", t, r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        note_status(str(e.code))
        print("send failed", t, e.code, e.read().decode())
        sys.exit(4)

if args.running_dir:
    os.remove(mine)

for line in args.stderr:
    print(line, file=sys.stderr, flush=True)

sys.exit(args.exit)
