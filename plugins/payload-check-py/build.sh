#!/bin/sh
# Builds dist/payload_check_py.wasm from app.py with componentize-py, set up in a venv of its own
# (.venv here; the first run makes it and installs requirements.txt into it). Needs python3.
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
mkdir -p dist
.venv/bin/componentize-py --wit-path ../../wit --world plugin componentize app --output dist/payload_check_py.wasm
