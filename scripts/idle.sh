#!/usr/bin/env bash
# What a cluster costs at rest: starts 3 release brokers (scripts/cluster.sh,
# in a temporary directory), creates a topic of PARTITIONS (default 1000)
# partitions with 3 replicas, waits until every partition has a leader and
# leaderships are balanced, then measures each broker for SECS (default
# 30) with no client traffic: CPU (utime + stime from /proc, % of one core)
# and RSS per broker, the bytes all three sent over loopback (/proc/net/dev:
# peer traffic, as no client is connected), and whether any term changed
# (the sum of all replicas' terms before and after).
#
#   scripts/idle.sh
#   PARTITIONS=300 SECS=60 scripts/idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITIONS=${PARTITIONS:-1000}
SECS=${SECS:-30}
BIN=${RILL_BIN:-target/release}
export RILL_CLUSTER_DIR
RILL_CLUSTER_DIR=$(mktemp -d /tmp/rill-idle.XXXXXX)
export RILL_CLUSTER_PORT=${RILL_CLUSTER_PORT:-29090}
trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$RILL_CLUSTER_DIR"' EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p rill-broker -p rill-client >&2
scripts/cluster.sh start 3 >/dev/null
BOOT=127.0.0.1:$((RILL_CLUSTER_PORT + 1)),127.0.0.1:$((RILL_CLUSTER_PORT + 2)),127.0.0.1:$((RILL_CLUSTER_PORT + 3))
"$BIN/rill" --bootstrap "$BOOT" topic create idle --partitions "$PARTITIONS" --replication-factor 3 >/dev/null

# Every partition led, by three different brokers in equal shares (±1).
summary() {
  "$BIN/rill" --bootstrap "$BOOT" cluster status --format json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
parts = [p for p in s["partitions"] if p.get("topic") == "idle"]
leaders = [p.get("leader") for p in parts]
terms = sum(p.get("term") or 0 for p in parts)
led = [leaders.count(b) for b in (1, 2, 3)]
print(len(parts), sum(l is None for l in leaders), max(led) - min(led), terms)
'
}
start=$(date +%s)
while :; do
  read -r n leaderless spread terms < <(summary || echo "0 1 99 0")
  if [ "$n" -eq "$PARTITIONS" ] && [ "$leaderless" -eq 0 ] && [ "$spread" -le 1 ]; then break; fi
  if [ $(($(date +%s) - start)) -gt 120 ]; then echo "not settled after 120 s" >&2; exit 1; fi
  sleep 1
done
echo "$PARTITIONS partitions x 3 replicas: led and balanced after $(($(date +%s) - start)) s"
sleep 15 # let preferred-leader balancing and catch-up finish

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
loopback() { awk '$1 == "lo:" {print $10}' /proc/net/dev; }
declare -A c0
for i in 1 2 3; do
  c0[$i]=$(cpu "$(cat "$RILL_CLUSTER_DIR/b$i.pid")")
done
lo0=$(loopback)
read -r _ _ _ terms0 < <(summary)
sleep "$SECS"
lo1=$(loopback)
read -r _ leaderless _ terms1 < <(summary)
for i in 1 2 3; do
  pid=$(cat "$RILL_CLUSTER_DIR/b$i.pid")
  c1=$(cpu "$pid")
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  awk -v c="$((c1 - c0[$i]))" -v t="$ticks" -v s="$SECS" -v b="$i" -v r="$rss" \
    'BEGIN { printf "broker %d: cpu %.2f%% of a core, rss %d MiB\n", b, 100 * c / t / s, r / 1024 }'
done
awk -v d="$((lo1 - lo0))" -v s="$SECS" 'BEGIN { printf "loopback: %.0f KiB/s sent by the cluster\n", d / 1024 / s }'
echo "over ${SECS} s: sum of terms ${terms0} -> ${terms1}, leaderless ${leaderless}"
