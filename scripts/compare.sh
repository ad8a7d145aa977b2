#!/usr/bin/env bash
# Side-by-side single-node comparison of this tree's broker with the broker
# of another revision: W1 (1,000 B, acks=1, page cache), W5 (consuming what
# W1 wrote), W2 (100 B, acks=1), W3 (1,000 B, acks=all, fdatasync), W4 (4
# producers, 8 partitions, acks=1) and W6 (end to end at a fixed 20,000
# records/s: its p50 and p99 latency are compared, not MB/s), alternating
# old and new broker RUNS times (default 3) with this tree's rill-bench,
# then the medians and the ratio new/old. The workloads' flags are
# scripts/bench.sh's. On a shared, noisy machine only such side-by-side
# figures are worth comparing. With W7=1, each run also starts three
# brokers of each build (scripts/cluster.sh) and runs W7a (RF=3, acks=all,
# fsync=false), W7b (the same with 4 producers and 8 partitions) and W7c
# (W7a with fsync=true).
#
#   scripts/compare.sh e9cd823        # against that revision
#   RUNS=5 scripts/compare.sh HEAD~3
#   W7=1 scripts/compare.sh HEAD~1
#   OLD_TARGET=/tmp/old/target scripts/compare.sh e9cd823   # its release build, made already
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/broker.sh
rev=${1:?usage: scripts/compare.sh REVISION}
RUNS=${RUNS:-3}
W7=${W7:-0}
old=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  [ -n "${cluster_bin:-}" ] && RILL_BIN=$cluster_bin scripts/cluster.sh stop >/dev/null 2>&1 || true
  git worktree remove --force "$old/src" >/dev/null 2>&1 || true
  rm -rf "$old"
}
trap cleanup EXIT
if [ -n "${OLD_TARGET:-}" ]; then
  old_bin=$OLD_TARGET/release/rill-broker
else
  git worktree add --detach "$old/src" "$rev" >/dev/null
  (cd "$old/src" && CARGO_TARGET_DIR="$old/target" cargo build --release -p rill-broker -p rill-client >&2)
  old_bin=$old/target/release/rill-broker
fi
cargo build --release -p rill-broker -p rill-client -p rill-bench >&2

run() { # BROKER_BIN LABEL
  local dir; dir=$(mktemp -d)
  "$1" --listen 127.0.0.1:0 $(http_listen "$1") --data-dir "$dir/data" 2>"$dir/log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$dir/log" 2>/dev/null && break; sleep 0.1; done
  local addr; addr=$(grep -o "listening on [0-9.:]*" "$dir/log" | head -1 | awk '{print $3}')
  b() { target/release/rill-bench produce --bootstrap "$addr" --json "$@" 2>/dev/null | tail -n 1; }
  # As bench.sh does: each topic deleted once measured, so no workload
  # syncs behind the writeback of the one before.
  drop() {
    target/release/rill --bootstrap "$1" topic delete "$2" >/dev/null 2>&1 || true
    settle_deletions "$dir/data/*.deleted" "${RILL_CLUSTER_DIR:-$dir}/b*/*.deleted"
  }
  b --topic warm --topic-config fsync=false --acks 1 --messages 500000 >/dev/null
  drop "$addr" warm
  echo "$2 W1 $(b --topic w1 --topic-config fsync=false --acks 1 --messages 1000000)"
  echo "$2 W5 $(target/release/rill-bench consume --bootstrap "$addr" --json --topic w1 --messages 1000000 2>/dev/null | tail -n 1)"
  drop "$addr" w1
  echo "$2 W2 $(b --topic w2 --topic-config fsync=false --acks 1 --message-size 100 --messages 3000000)"
  drop "$addr" w2
  echo "$2 W3 $(b --topic w3 --acks all --messages 300000)"
  drop "$addr" w3
  echo "$2 W4 $(b --topic w4 --partitions 8 --producers 4 --topic-config fsync=false --acks 1 --messages 2000000)"
  drop "$addr" w4
  # Latency: no linger, so a record waits only for the request ahead of it.
  echo "$2 W6 $(target/release/rill-bench e2e --bootstrap "$addr" --json --topic w6 --topic-config fsync=false --acks 1 --linger-ms 0 --rate 20000 --duration-s 10 2>/dev/null | tail -n 1)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  rm -rf "$dir"
  [ "$W7" = 1 ] || return 0
  export RILL_CLUSTER_DIR="$old/cluster" RILL_CLUSTER_PORT=${W7_PORT:-19890}
  cluster_bin=$(dirname "$1")
  RILL_BIN=$cluster_bin RUST_LOG=warn scripts/cluster.sh start 3 >&2
  local boot=127.0.0.1:$((RILL_CLUSTER_PORT + 1)),127.0.0.1:$((RILL_CLUSTER_PORT + 2)),127.0.0.1:$((RILL_CLUSTER_PORT + 3))
  w7() { target/release/rill-bench produce --bootstrap "$boot" --replication-factor 3 --acks all --json "$@" 2>/dev/null | tail -n 1; }
  w7 --topic w7-warm --topic-config fsync=false --messages 500000 >/dev/null
  drop "$boot" w7-warm
  echo "$2 W7a $(w7 --topic w7a --topic-config fsync=false --messages 1000000)"
  drop "$boot" w7a
  echo "$2 W7b $(w7 --topic w7b --topic-config fsync=false --partitions 8 --producers 4 --messages 2000000)"
  drop "$boot" w7b
  echo "$2 W7c $(w7 --topic w7c --messages 300000)"
  RILL_BIN=$cluster_bin scripts/cluster.sh stop >&2; cluster_bin=
  rm -rf "$RILL_CLUSTER_DIR"
}
# Each result line is kept as it comes (RESULTS names the file, default a
# temporary one): a workload that fails leaves its line without a figure,
# reported and left out of the medians, and the rest still count.
results_file=${RESULTS:-$old/results}
for i in $(seq "$RUNS"); do
  echo "run $i of $RUNS" >&2
  run "$old_bin" old
  run target/release/rill-broker new
done | tee "$results_file" >&2
python3 -c '
import json, statistics, sys
rows = {}
for line in sys.stdin:
    label, w, js = (line.rstrip("\n").split(" ", 2) + ["", ""])[:3]
    try:
        rows.setdefault((w, label), []).append(json.loads(js))
    except ValueError:
        print(f"{w} ({label}): a run gave no figure", file=sys.stderr)
def med(w, label, value):
    vals = [v for v in map(value, rows.get((w, label), [])) if v is not None]
    return (statistics.median(vals) if vals else None), vals
for w in ("W1", "W5", "W2", "W3", "W4", "W6", "W7a", "W7b", "W7c"):
    if (w, "old") not in rows:
        continue
    if w == "W6":
        # A fixed rate: its latency is the figure, and lower is better.
        for p in ("p50", "p99"):
            (mo, o), (mn, n) = (med(w, label, lambda r: r["latency_us"][p]) for label in ("old", "new"))
            if mo is None or mn is None:
                print(f"W6 {p} latency: none recorded (old {o}, new {n})")
                continue
            print(f"W6 {p} latency: old {mo:.0f} us {o}  new {mn:.0f} us {n}  new/old {mn / mo:.2f} (lower is better)")
        continue
    (mo, o), (mn, n) = (med(w, label, lambda r: r["mb_per_sec"]) for label in ("old", "new"))
    if mo is None or mn is None:
        print(f"{w}: none recorded (old {o}, new {n})")
        continue
    print(f"{w}: old {mo:.0f} MB/s {[round(x) for x in o]}  new {mn:.0f} MB/s {[round(x) for x in n]}  new/old {mn / mo:.2f}")
' <"$results_file"
