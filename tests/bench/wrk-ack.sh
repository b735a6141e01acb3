#!/bin/sh
# The ack path under wrk on a big database (issue 14), beside bare hyper in the same sitting.
#
#   cargo build --release -p agent-inbox-tests --bin bench
#   tests/bench/wrk-ack.sh [target/release/bench] [fill seconds, default 30]
#
# Starts `bench serve` on a mailbox route in a temp dir, fills the database with a wrk run (about
# 1.8M messages in 30 s here), then alternates three 10 s runs of the inbox and of `bench bare`
# with `wrk -t2 -c64 --latency`, printing req/s and percentiles. Loopback only; stops by itself.
# Needs wrk (`apt-get install wrk`). The server logs to a file at the default level.
set -eu
SELF=$(realpath "$0")
BENCH=$(realpath "${1:-target/release/bench}")
FILL=${2:-30}
LUA=$(realpath "$(dirname "$0")/post-note.lua")
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
DIR=$(mktemp -d)
trap 'kill $INBOX 2>/dev/null; rm -rf "$DIR"' EXIT
sed s/PORT/8795/ "$(dirname "$SELF")/mailbox.toml" > "$DIR/routes.toml"
"$BENCH" serve --config "$DIR/routes.toml" 2>"$DIR/inbox.log" &
INBOX=$!
sleep 1
echo "== fill ($FILL s)"
wrk -t2 -c64 -d"${FILL}s" -s "$LUA" http://127.0.0.1:8795/message | grep -E "requests in|Requests/sec"
for i in 1 2 3; do
  echo "== inbox, run $i"
  wrk -t2 -c64 -d10s --latency -s "$LUA" http://127.0.0.1:8795/message | grep -E "Requests/sec|  50%|  99%|Latency  "
  "$BENCH" bare 127.0.0.1:8796 & BARE=$!
  sleep 0.5
  echo "== bare hyper, run $i"
  wrk -t2 -c64 -d10s --latency -s "$LUA" http://127.0.0.1:8796/message | grep -E "Requests/sec|  50%|  99%|Latency  "
  kill $BARE; wait $BARE 2>/dev/null || true
done
echo "== the inbox's WAL rewinds (RESTART checkpoints, writes waiting), over the whole script"
curl -s -H "authorization: Bearer bench-admin" http://127.0.0.1:8795/metrics |
  awk '/^inbox_store_wal_restart_seconds_(sum|count)/ {v[$1]=$2}
       END {n=v["inbox_store_wal_restart_seconds_count"]; s=v["inbox_store_wal_restart_seconds_sum"];
            if (n > 0) printf "  %d rewinds, %.2f ms each on average\n", n, 1000*s/n; else print "  none"}'
curl -s -H "authorization: Bearer bench-admin" http://127.0.0.1:8795/metrics |
  grep '^inbox_store_wal_restart_seconds_bucket' | sed -n 's/^inbox_store_wal_restart_seconds_bucket/  cumulative /p' | sed -n '3,12p'
