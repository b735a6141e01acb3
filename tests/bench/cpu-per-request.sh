#!/bin/sh
# CPU per request (issue 14): the server pinned to core 1, wrk pinned to core 0, 10 s; CPU is the
# server process's utime + stime (clock ticks) over the requests wrk counted.
#
#   tests/bench/cpu-per-request.sh target/release/bench inbox|bare
#
# Needs wrk, taskset and bc. Loopback only; stops by itself.
set -eu
SELF=$(realpath "$0")
B=$(realpath "$1"); KIND=$2
LUA=$(realpath "$(dirname "$0")/post-note.lua")
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"
sed s/PORT/8797/ "$(dirname "$SELF")/mailbox.toml" > "cpu.toml"
if [ "$KIND" = inbox ]; then
  taskset -c 1 $B serve --config cpu.toml 2>/dev/null & P=$!
else
  taskset -c 1 $B bare 127.0.0.1:8797 & P=$!
fi
sleep 1
t0=$(awk '{print $14+$15}' /proc/$P/stat)
R=$(taskset -c 0 wrk -t1 -c64 -d10s -s "$LUA" http://127.0.0.1:8797/message | awk '/requests in/ {print $1}')
t1=$(awk '{print $14+$15}' /proc/$P/stat)
kill $P; wait $P 2>/dev/null || true
TCK=$(getconf CLK_TCK)
echo "$KIND $B: $R requests, $(( (t1-t0) )) ticks, $(echo "scale=2; ($t1-$t0)*1000000/$TCK/$R" | bc) us CPU per request"
