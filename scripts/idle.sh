#!/usr/bin/env bash
# What a cluster costs at rest: starts 3 release brokers (scripts/cluster.sh,
# in a temporary directory), creates a topic of PARTITIONS (default 1000)
# partitions with 3 replicas, waits until every partition has a leader and
# leaderships are balanced, then measures each broker for SECS (default
# 30) with no client traffic: CPU (utime + stime from /proc, % of one core)
# and RSS per broker, the bytes all three sent over loopback (/proc/net/dev:
# peer traffic, as no client is connected), and whether any term changed
# (the sum of all replicas' terms before and after). Per broker also its
# anonymous memory (RssAnon: the heap, without the page cache the segment
# mappings share), open files and memory mappings.
#
# Before measuring, RECORDS (default 20) records of 1 KiB are written to
# each partition, so every replica holds data. After measuring, broker 1 is
# stopped and started again, cleanly (SIGTERM) and then after SIGKILL, and
# the time from its start to /health/ready answering 200 is printed.
#
#   scripts/idle.sh
#   PARTITIONS=300 SECS=60 scripts/idle.sh
#   PARTITIONS=5000 RECORDS=100 scripts/idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITIONS=${PARTITIONS:-1000}
SECS=${SECS:-30}
RECORDS=${RECORDS:-20}
BIN=${RILL_BIN:-target/release}
export RILL_CLUSTER_DIR
RILL_CLUSTER_DIR=$(mktemp -d /tmp/rill-idle.XXXXXX)
export RILL_CLUSTER_PORT=${RILL_CLUSTER_PORT:-29090}
trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$RILL_CLUSTER_DIR"' EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p rill-broker -p rill-client -p rill-bench >&2
scripts/cluster.sh start 3 >/dev/null
BOOT=127.0.0.1:$((RILL_CLUSTER_PORT + 1)),127.0.0.1:$((RILL_CLUSTER_PORT + 2)),127.0.0.1:$((RILL_CLUSTER_PORT + 3))
# A creation of thousands of partitions can outlast the CLI's wait, whose
# retry then finds the topic there: the wait below is what counts.
"$BIN/rill" --bootstrap "$BOOT" topic create idle --partitions "$PARTITIONS" --replication-factor 3 >/dev/null || true

# Every partition led, by three different brokers in equal shares (±1).
summary() {
  "$BIN/rill" --bootstrap "$BOOT" cluster status --format json --raft 2>/dev/null | python3 -c '
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
  if [ $(($(date +%s) - start)) -gt 600 ]; then echo "not settled after 600 s" >&2; exit 1; fi
  sleep 1
done
echo "$PARTITIONS partitions x 3 replicas: led and balanced after $(($(date +%s) - start)) s"
if [ "$RECORDS" -gt 0 ]; then
  "$BIN/rill-bench" produce --bootstrap "$BOOT" --topic idle --acks all --message-size 1024 \
    --messages $((PARTITIONS * RECORDS)) --json 2>/dev/null | tail -n 1 >/dev/null
  echo "wrote $RECORDS records of 1 KiB to each partition"
fi
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
  anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  maps=$(wc -l <"/proc/$pid/maps")
  awk -v c="$((c1 - c0[$i]))" -v t="$ticks" -v s="$SECS" -v b="$i" -v r="$rss" -v a="$anon" -v f="$fds" -v m="$maps" \
    'BEGIN { printf "broker %d: cpu %.2f%% of a core, rss %d MiB, RssAnon %d MiB, %d open files, %d mappings\n", b, 100 * c / t / s, r / 1024, a / 1024, f, m }'
done
awk -v d="$((lo1 - lo0))" -v s="$SECS" 'BEGIN { printf "loopback: %.0f KiB/s sent by the cluster\n", d / 1024 / s }'
echo "over ${SECS} s: sum of terms ${terms0} -> ${terms1}, leaderless ${leaderless}"

# Time from broker 1's start to /health/ready answering 200.
ready_after() {
  local t0 url=http://127.0.0.1:$((RILL_CLUSTER_PORT + 201))/health/ready
  t0=$(date +%s%N)
  scripts/cluster.sh restart 1 >/dev/null
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" = 200 ]; do
    if [ $(( ($(date +%s%N) - t0) / 1000000000 )) -gt 300 ]; then echo "not ready after 300 s" >&2; return 1; fi
    sleep 0.05
  done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
pid=$(cat "$RILL_CLUSTER_DIR/b1.pid")
kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
echo "broker 1 ready $(ready_after) ms after a start that followed a clean stop"
sleep 5
scripts/cluster.sh kill 1 >/dev/null
echo "broker 1 ready $(ready_after) ms after a start that followed SIGKILL"
