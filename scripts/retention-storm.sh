#!/usr/bin/env bash
# Retention of every partition at once, under writeback: does a pass that
# moves the log start of PARTITIONS (default 1000) partitions together,
# with their state syncs queued behind a dirty page cache, cost any
# leadership? Starts 3 release brokers (scripts/cluster.sh, in a temporary
# directory) with retention every RETENTION_MS (default 5000) ms, a topic
# of PARTITIONS x 3 replicas with 16 KiB segments and 16 KiB retention,
# and fills it; then for SECS (default 40) seconds keeps adding to it at a
# paced rate (so each pass deletes segments in every partition) while an
# fsync=false producer on another topic keeps the page cache dirty.
# Reports the elections in that window (the sum of all replicas' terms
# before and after: heartbeats that stopped for longer than the election
# timeout, 1 s, start elections), leaderless partitions at the end, and
# the brokers' slow-round warnings.
#
#   scripts/retention-storm.sh
#   PARTITIONS=300 SECS=60 scripts/retention-storm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITIONS=${PARTITIONS:-1000}
SECS=${SECS:-40}
RETENTION_MS=${RETENTION_MS:-5000}
BIN=${RILL_BIN:-target/release}
export RILL_CLUSTER_DIR
RILL_CLUSTER_DIR=$(mktemp -d /tmp/rill-storm.XXXXXX)
export RILL_CLUSTER_PORT=${RILL_CLUSTER_PORT:-39090}
trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$RILL_CLUSTER_DIR"' EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p rill-broker -p rill-client -p rill-bench >&2
echo "retention_check_ms = $RETENTION_MS" >"$RILL_CLUSTER_DIR/broker.toml"
export RILL_BROKER_ARGS="--config $RILL_CLUSTER_DIR/broker.toml"
RUST_LOG=warn scripts/cluster.sh start 3 >/dev/null
BOOT=127.0.0.1:$((RILL_CLUSTER_PORT + 1)),127.0.0.1:$((RILL_CLUSTER_PORT + 2)),127.0.0.1:$((RILL_CLUSTER_PORT + 3))
STORM=(--bootstrap "$BOOT" --topic storm --partitions "$PARTITIONS" --replication-factor 3
  --topic-config segment.bytes=16384 --topic-config retention.bytes=16384
  --topic-config max.message.bytes=4096 --batch-size 3072 --message-size 500)

# Led and every replica open before anything is measured.
summary() {
  "$BIN/rill" --bootstrap "$BOOT" cluster status --format json --raft 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
parts = [p for p in s["partitions"] if p.get("topic") == "storm"]
print(len(parts), sum(p.get("leader") is None for p in parts), sum(p.get("term") or 0 for p in parts))
'
}
"$BIN/rill-bench" produce "${STORM[@]}" --messages $((PARTITIONS * 100)) >/dev/null
start=$(date +%s)
while :; do
  read -r n leaderless terms < <(summary || echo "0 1 0")
  if [ "$n" -eq "$PARTITIONS" ] && [ "$leaderless" -eq 0 ]; then break; fi
  if [ $(($(date +%s) - start)) -gt 120 ]; then echo "not settled after 120 s" >&2; exit 1; fi
  sleep 1
done
sleep 15 # preferred-leader balancing settles
read -r _ _ terms0 < <(summary)
# Partitions whose log start has moved, and the sum of their log starts.
starts() {
  "$BIN/rill" --bootstrap "$BOOT" topic describe storm --format json | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitions"]
print(sum(x["log_start_offset"] > 0 for x in p), sum(x["log_start_offset"] for x in p))
'
}
read -r moved0 sum0 < <(starts)
# Each broker's log lines so far: only what the storm adds is counted.
declare -A lines0
for i in 1 2 3; do lines0[$i]=$(wc -l <"$RILL_CLUSTER_DIR/b$i.log"); done

# The storm: paced adds to every partition, and a bulk fsync=false writer.
"$BIN/rill-bench" produce "${STORM[@]}" --duration-s "$SECS" --rate $((PARTITIONS * 4)) >/dev/null &
paced=$!
"$BIN/rill-bench" produce --bootstrap "$BOOT" --topic bulk --partitions 3 --replication-factor 3 \
  --topic-config fsync=false --duration-s "$SECS" --message-size 1000 >/dev/null &
bulk=$!
wait "$paced" "$bulk"

read -r n leaderless terms1 < <(summary)
read -r moved1 sum1 < <(starts)
storm_log() { for i in 1 2 3; do tail -n +$((lines0[$i] + 1)) "$RILL_CLUSTER_DIR/b$i.log"; done; }
slow=$(storm_log | grep -c "slow command handling" || true)
longest=$( (storm_log | grep "slow command handling" || true) |
  sed -n 's/.*ms=\([0-9]*\).*/\1/p' | sort -n | tail -1)
echo "partitions $n x 3 replicas; retention every $RETENTION_MS ms over $SECS s of load"
echo "elections (sum of terms) during the storm: $((terms1 - terms0)) (terms $terms0 -> $terms1)"
echo "leaderless at the end: $leaderless"
echo "partitions whose log start moved: $moved0 before the storm, $moved1 after (log starts summed: $sum0 -> $sum1)"
echo "slow-round warnings during the storm: $slow (longest ${longest:-0} ms)"
