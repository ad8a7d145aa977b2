#!/usr/bin/env bash
# What parked fetches cost a broker: starts one release broker (in a
# temporary directory), creates a topic of PARTITIONS (default 1000)
# partitions, keeps a fetch parked on every one of them (spread over
# CONNECTIONS, default 10, each fetching its share in one request with a
# 30 s max wait), writes one partition at RATE (default 200) records/s for
# SECS (default 20) and prints the broker's CPU time over the writing
# phase (utime + stime from /proc/<pid>/stat): one line, then one JSON
# object. BROKER picks the broker binary (to compare two builds with the
# same load generator); RILL_BIN the directory of rill-bench.
#
#   scripts/parked-fetch-cpu.sh
#   BROKER=/tmp/base/target/release/rill-broker SECS=30 scripts/parked-fetch-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITIONS=${PARTITIONS:-1000}
CONNECTIONS=${CONNECTIONS:-10}
RATE=${RATE:-200}
SECS=${SECS:-20}
BIN=${RILL_BIN:-${CARGO_TARGET_DIR:-target}/release}
BROKER=${BROKER:-$BIN/rill-broker}
dir=$(mktemp -d /tmp/rill-parked.XXXXXX)
broker_pid=
trap '[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Its own metrics port: never the default one another broker may hold.
http=()
"$BROKER" --help | grep -q -- --http-listen && http=(--http-listen 127.0.0.1:0)
"$BROKER" --listen 127.0.0.1:0 "${http[@]}" --data-dir "$dir/data" 2>"$dir/broker.log" &
broker_pid=$!
for _ in $(seq 300); do
  grep -q "listening on" "$dir/broker.log" 2>/dev/null && break
  sleep 0.1
done
addr=$(grep -o "listening on [0-9.:]*" "$dir/broker.log" | awk '{print $3}')
[ -n "$addr" ] || { echo "the broker did not start" >&2; cat "$dir/broker.log" >&2; exit 1; }
"$BIN/rill-bench" parked-fetch --bootstrap "$addr" --topic parked \
  --partitions "$PARTITIONS" --connections "$CONNECTIONS" --rate "$RATE" \
  --duration-s "$SECS" --broker-pid "$broker_pid"
