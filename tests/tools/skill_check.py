"""Checks an OpenClaw skill folder the way OpenClaw and ClawHub read it: SKILL.md with YAML
frontmatter (name = the folder's name, 1-64 lowercase letters, digits or hyphens; a
description), and the runtime gate under metadata.openclaw.requires.

Usage: skill_check.py SKILL_DIR BIN ENV[,ENV...]  -- prints what it found, exits 1 on a problem.
"""
import pathlib
import re
import sys

import yaml

folder, binary, env = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
text = (folder / "SKILL.md").read_text()
m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
problems = []
if not m:
    sys.exit("SKILL.md has no YAML frontmatter between --- lines")
front, body = yaml.safe_load(m.group(1)), m.group(2)
name = front.get("name", "")
if name != folder.name or not re.fullmatch(r"[a-z0-9-]{1,64}", name):
    problems.append(f"name {name!r} must be the folder's name, 1-64 of [a-z0-9-]")
if not isinstance(front.get("description"), str) or len(front["description"]) < 20:
    problems.append("description must say what the skill does and when to use it")
if any(c in front.get("description", "") for c in "<>"):
    problems.append("description must not contain angle brackets")
oc = (front.get("metadata") or {}).get("openclaw") or {}
req = oc.get("requires") or {}
if binary not in (req.get("bins") or []):
    problems.append(f"metadata.openclaw.requires.bins must list {binary}")
for var in env:
    if var not in (req.get("env") or []):
        problems.append(f"metadata.openclaw.requires.env must list {var}")
if oc.get("primaryEnv") not in env:
    problems.append("metadata.openclaw.primaryEnv must be one of the required variables")
if f"{binary} send" not in body:
    problems.append(f"the instructions must show `{binary} send`")
print("name:", name, "| bins:", req.get("bins"), "| env:", req.get("env"))
if problems:
    sys.exit("\n".join(problems))
