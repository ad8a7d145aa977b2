#!/usr/bin/env bash
# Profiles a fresh release broker under one workload with perf's software
# cpu-clock event (hardware counters are not needed) and renders a
# flamegraph with inferno. Installs perf and inferno when missing.
#
#   scripts/profile.sh W1        # produce: 1 producer, 1 partition, acks=1
#   scripts/profile.sh W5        # consume what a W1-sized produce wrote
#   OUT=/tmp/w1.svg scripts/profile.sh W1
#
# Besides the SVG it prints the broker's top symbols, per thread.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/broker.sh
workload=${1:-W1}
OUT=${OUT:-flamegraph-$workload.svg}

if ! command -v perf >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  cargo install inferno --locked >&2
fi
cargo build --release -p rill-broker -p rill-bench -p rill-client >&2

work=$(mktemp -d)
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_broker "$work"
bench() { target/release/rill-bench "$@" --bootstrap "$addr"; }

# Warm-up, as in bench.sh: page cache the machine has touched before.
bench produce --topic warm-up --topic-config fsync=false --acks 1 --messages 3000000 >/dev/null
target/release/rill --bootstrap "$addr" topic delete warm-up >/dev/null

case "$workload" in
  W1) run() { bench produce --topic w1 --topic-config fsync=false --acks 1 --messages 2000000; } ;;
  W5)
    bench produce --topic w5 --topic-config fsync=false --acks 1 --messages 2000000 >/dev/null
    run() { bench consume --topic w5 --messages 2000000; }
    ;;
  *) echo "unknown workload $workload (W1 or W5)" >&2; exit 2 ;;
esac

perf record -e cpu-clock -F 2000 -g -p "$broker_pid" -o "$work/perf.data" 2>/dev/null &
perf_pid=$!
sleep 0.5
run
kill -INT "$perf_pid"
wait "$perf_pid" 2>/dev/null || true

perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$OUT"
echo "wrote $OUT" >&2
perf report -i "$work/perf.data" --no-children --sort comm,sym --stdio -g none --percent-limit 1 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -30
