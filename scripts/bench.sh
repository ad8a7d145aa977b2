#!/usr/bin/env bash
# Runs rill's standard workloads against fresh release brokers: W1-W6 and W8 on a
# single node (every partition a one-voter Raft group), W7 on a 3-broker
# cluster on this machine (replication factor 3); measures this machine's
# ceilings in the same run (single-stream
# loopback TCP with iperf3; fio appending with an fdatasync after each
# write), and writes BENCHMARKS.md. Installs iperf3 and fio when missing.
#
#   scripts/bench.sh            # 3 runs of each workload, medians reported
#   RUNS=5 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/broker.sh
RUNS=${RUNS:-3}
OUT=${OUT:-BENCHMARKS.md}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need iperf3 || ! need fio; then
  echo "installing iperf3 and fio" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iperf3 fio >/dev/null
fi

cargo build --release -p rill-broker -p rill-bench >&2
work=$(mktemp -d)
broker_pid=
iperf_pid=
cluster_up=
cleanup() {
  [ -n "$cluster_up" ] && scripts/cluster.sh stop >/dev/null 2>&1 || true
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  [ -n "$iperf_pid" ] && kill "$iperf_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# What each workload cost, measured around it: bytes the disk holding the
# data wrote (from /sys/class/block, so writeback of earlier runs counts
# too), and CPU seconds of the brokers (user + system). Added to each
# summary line as disk_bytes and broker_cpu_s.
disk=$(basename "$(df --output=source "$work" | tail -n 1)")
hz=$(getconf CLK_TCK)
disk_written() { local f; read -r -a f <"/sys/class/block/$disk/stat"; echo $((f[6] * 512)); }
cpu_ticks() {
  local t=0 p f
  for p in "$@"; do read -r -a f <"/proc/$p/stat"; t=$((t + f[13] + f[14])); done
  echo "$t"
}
# Page cache as in service. A broker in service runs with its page cache
# full: its writes take pages the kernel reclaims from older data. On this
# kind of virtual machine, free memory is instead handed back to the host
# (free page reporting) a few seconds after it is freed, and a page costs
# about five times more to touch again (`dd` of 1 GB into new files: 0.37 s
# of CPU for the first GB, 1.5-2.1 s for each after it). A workload that ran
# on free memory would measure the host, and the more so the more it writes
# (W7b writes 6 GB, W1 1 GB). So before each measured workload, free memory
# is filled with clean page cache, the holes of sparse files read once (no
# disk I/O), which the workload's writes then reclaim like older data.
fill_dir="$work/page-cache"
mem_free_kib() { awk '/^MemFree:/ {print $2}' /proc/meminfo; }
fill_page_cache() {
  local gib i f
  gib=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1048576))
  mkdir -p "$fill_dir"
  # Stops once free memory is down to about 1 GiB (a file is read whole,
  # so it may end a little lower): what a workload left cached (W5 reads
  # W1's records, which used up the free memory) is not pushed out by the
  # fill itself. A file partly reclaimed is made anew before it is read,
  # so that fill pages are read once and never made active: the kernel
  # reclaims them rather than what a workload wrote and reads back.
  for i in $(seq "$gib"); do
    [ "$(mem_free_kib)" -gt $((1 << 20)) ] || return 0
    f="$fill_dir/$i"
    if [ -e "$f" ]; then
      [ "$(fincore --bytes --noheadings --output RES "$f")" -lt $((1 << 30)) ] || continue
      rm "$f"
    fi
    truncate -s 1G "$f"
    cat "$f" >/dev/null
  done
}
# measured PIDS COMMAND...: fills the page cache, runs the command, prints
# its last line with the costs added.
measured() {
  local pids=$1 d0 c0 line
  shift
  fill_page_cache
  d0=$(disk_written); c0=$(cpu_ticks $pids)
  line=$("$@" | tail -n 1)
  python3 -c 'import json, sys
r = json.loads(sys.argv[1]); r["disk_bytes"] = int(sys.argv[2]); r["broker_cpu_s"] = int(sys.argv[3]) / int(sys.argv[4])
print(json.dumps(r))' "$line" $(($(disk_written) - d0)) $(($(cpu_ticks $pids) - c0)) "$hz"
}

# A fresh broker. Sync rounds are logged at debug level: W3's mean sync size sizes the fio ceiling.
RUST_LOG=info,raft=warn,rill_broker::raft=debug start_broker "$work"
bench() { measured "$broker_pid" target/release/rill-bench "$@" --bootstrap "$addr" --json; }
drop_topic() {
  target/release/rill --bootstrap "$addr" topic delete "$1" >/dev/null
  settle_deletions "$work/data/*.deleted"
}

# Warm-up, not counted: the broker's own buffers and heap are touched once
# before anything is measured. Each measured topic is deleted once
# measured, so no workload's files fill the disk or are written back under
# the next one.
echo "warm-up" >&2
bench produce --topic warm-up --topic-config fsync=false --acks 1 --messages 2000000 >/dev/null
drop_topic warm-up

for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  bench produce --topic "w1-$run" --topic-config fsync=false --acks 1 --messages 1000000 >>"$work/W1.jsonl"
  bench consume --topic "w1-$run" --messages 1000000 >>"$work/W5.jsonl"
  drop_topic "w1-$run"
  # W1 on text values (log-line-like), plain and with each codec; the
  # disk each takes is noted for the compression ratio.
  for codec in none lz4 zstd; do
    # The data directory is measured once the run is over (a command
    # substitution in the same pipeline would run before it).
    bench produce --topic "w1$codec-$run" --topic-config fsync=false --acks 1 --messages 1000000 \
      --values text --compression "$codec" >"$work/codec-run.json"
    python3 -c 'import json, sys
r = json.loads(open(sys.argv[1]).read()); r["data_bytes"] = int(sys.argv[2]); print(json.dumps(r))' \
      "$work/codec-run.json" "$(du -sb "$work/data" | cut -f1)" >>"$work/W1-$codec.jsonl"
    drop_topic "w1$codec-$run"
  done
  # The idempotent producer's cost: W1 at acks=all (idempotence needs it;
  # on one broker it commits on the append, as acks=1 answers), with
  # idempotence (the default) and without, one right after the other.
  bench produce --topic "w1i-$run" --topic-config fsync=false --acks all --messages 1000000 >>"$work/W1-idempotent.jsonl"
  drop_topic "w1i-$run"
  bench produce --topic "w1n-$run" --topic-config fsync=false --acks all --no-idempotence --messages 1000000 >>"$work/W1-plain.jsonl"
  drop_topic "w1n-$run"
  bench produce --topic "w2-$run" --topic-config fsync=false --acks 1 --message-size 100 --messages 5000000 >>"$work/W2.jsonl"
  drop_topic "w2-$run"
  bench produce --topic "w3-$run" --acks all --messages 300000 >>"$work/W3.jsonl"
  drop_topic "w3-$run"
  bench produce --topic "w4-$run" --partitions 8 --producers 4 --topic-config fsync=false --acks 1 --messages 2000000 >>"$work/W4.jsonl"
  # W8a: what W4 wrote, read by a consumer group of 4 (each member
  # committing what it read), against W5's one consumer of one partition.
  bench consume --topic "w4-$run" --group "w8-$run" --consumers 4 --messages 2000000 >>"$work/W8a.jsonl"
  drop_topic "w4-$run"
  # Latency: no linger, so a record waits only for the request ahead of it.
  bench e2e --topic "w6-$run" --topic-config fsync=false --acks 1 --linger-ms 0 --rate 20000 --duration-s 10 >>"$work/W6.jsonl"
  drop_topic "w6-$run"
done
# W8b: a group of 4 members reading 8 partitions while producers write
# 20,000 records/s; once it has been stable a while, a fifth member joins:
# the time until the coordinator calls the group stable again. Median of
# W8B_RUNS (5) runs.
for run in $(seq "${W8B_RUNS:-5}"); do
  echo "W8b run $run" >&2
  bench group-join --topic "w8b-$run" --partitions 8 --topic-config fsync=false --acks 1 \
    --consumers 4 --rate 20000 --duration-s 30 >>"$work/W8b.jsonl"
  drop_topic "w8b-$run"
done
kill "$broker_pid"
wait "$broker_pid" 2>/dev/null || true
broker_pid=

# W7: three brokers on this machine, replication factor 3, acks=all, in
# both durability modes, with 1 and 4 producers. Measured as the single
# node is: after a warm-up, each topic deleted once measured (so the runs
# recycle the same memory, and no workload's dirty pages are still being
# written back under the next one's syncs).
export RILL_CLUSTER_DIR="$work/cluster" RILL_CLUSTER_PORT=${W7_PORT:-19790} RILL_BIN=target/release
RUST_LOG=warn scripts/cluster.sh start 3 >&2
cluster_up=1
boot=$(for i in 1 2 3; do printf '127.0.0.1:%s,' $((RILL_CLUSTER_PORT + i)); done)
boot=${boot%,}
pids=$(cat "$RILL_CLUSTER_DIR"/b*.pid)
w7() { measured "$pids" target/release/rill-bench "$@" --bootstrap "$boot" --replication-factor 3 --acks all --json; }
w7_drop() {
  target/release/rill --bootstrap "$boot" topic delete "$1" >/dev/null
  settle_deletions "$RILL_CLUSTER_DIR/b*/*.deleted"
}
# The warm-up writes as much as the largest W7 workload (W7b: 2 GB, three
# copies), as the single node's warm-up matches W4.
echo "W7 warm-up" >&2
w7 produce --topic w7-warm-up --topic-config fsync=false --partitions 8 --producers 4 --messages 2000000 >/dev/null
w7_drop w7-warm-up
for run in $(seq "$RUNS"); do
  echo "W7 run $run of $RUNS" >&2
  w7 produce --topic "w7a-$run" --topic-config fsync=false --messages 1000000 >>"$work/W7a.jsonl"
  w7_drop "w7a-$run"
  w7 produce --topic "w7b-$run" --topic-config fsync=false --partitions 8 --producers 4 --messages 2000000 >>"$work/W7b.jsonl"
  w7_drop "w7b-$run"
  w7 produce --topic "w7c-$run" --messages 300000 >>"$work/W7c.jsonl"
  w7_drop "w7c-$run"
  w7 produce --topic "w7d-$run" --partitions 8 --producers 4 --messages 600000 >>"$work/W7d.jsonl"
  w7_drop "w7d-$run"
done
scripts/cluster.sh stop >&2
cluster_up=

# W3's mean sync size: the write size of the fio ceiling (4 KiB multiple).
sync_bytes=$(grep 'sync round' "$work/broker.log" | grep -o 'bytes=[0-9]*' | awk -F= '{s+=$2; n++} END {if (n) printf "%d", s/n; else print 0}')
sync_rounds=$(grep -c 'sync round' "$work/broker.log" || true)
write_bytes=$(( (sync_bytes + 4095) / 4096 * 4096 ))
[ "$write_bytes" -gt 0 ] || write_bytes=$((256 * 1024))
echo "W3 synced $sync_rounds times, $sync_bytes bytes on average" >&2

# Ceilings, measured now, on this machine.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iperf3 -s -1 -p "$port" -B 127.0.0.1 >/dev/null 2>&1 &
iperf_pid=$!
sleep 0.5
iperf3 -c 127.0.0.1 -p "$port" -t 5 -J >"$work/iperf.json"
iperf_pid=
mkdir -p "$work/fio"
fio --name=append --directory="$work/fio" --rw=write --bs="$write_bytes" --size=1G \
    --fdatasync=1 --ioengine=sync --output-format=json >"$work/fio.json"
rm -rf "$work/fio"

python3 - "$work" "$OUT" "$RUNS" "$write_bytes" "$sync_rounds" <<'PY'
import json, platform, statistics, subprocess, sys, datetime
work, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
write_bytes, sync_rounds = int(sys.argv[4]), int(sys.argv[5])
def load(w):
    return [json.loads(l) for l in open(f"{work}/{w}.jsonl") if l.strip()]
def med(rows, key, sub=None):
    vals = [(r[key][sub] if sub else r[key]) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
tcp = json.load(open(f"{work}/iperf.json"))["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
fio = json.load(open(f"{work}/fio.json"))["jobs"][0]["write"]["bw_bytes"] / 1e6
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
rows = [
  ("W1", "produce, 1 producer, 1 partition, acks=1, 1,000 B", "page cache", tcp, "loopback TCP"),
  ("W2", "produce, 1 producer, 1 partition, acks=1, 100 B", "page cache", tcp, "loopback TCP"),
  ("W3", "produce, 1 producer, 1 partition, acks=all, 1,000 B", "fdatasync before ack", fio, "fio append + fdatasync"),
  ("W4", "produce, 4 producers, 8 partitions, acks=1, 1,000 B", "page cache", tcp, "loopback TCP"),
  ("W5", "consume from earliest, 1 consumer, what W1 wrote", "page cache", tcp, "loopback TCP"),
  ("W8a", "consumer group of 4 reading 8 partitions, what W4 wrote", "page cache", tcp, "loopback TCP"),
  ("W6", "e2e at 20,000 records/s, acks=1, 1,000 B, linger 0", "page cache", None, None),
  ("W7a", "3 brokers, RF=3, 1 producer, 1 partition, acks=all, 1,000 B", "page cache on a majority", None, None),
  ("W7b", "3 brokers, RF=3, 4 producers, 8 partitions, acks=all, 1,000 B", "page cache on a majority", None, None),
  ("W7c", "3 brokers, RF=3, 1 producer, 1 partition, acks=all, 1,000 B", "fdatasync on a majority", None, None),
  ("W7d", "3 brokers, RF=3, 4 producers, 8 partitions, acks=all, 1,000 B", "fdatasync on a majority", None, None),
]
lines = [
  "# rill benchmarks", "",
  f"Written by `scripts/bench.sh` on {datetime.date.today()}: {runs} runs of each workload, medians.",
  f"Machine: {cores} cores ({cpu}), Linux {platform.release()}; the load generator shares the cores with the broker.",
  f"Ceilings measured in the same run: single-stream loopback TCP {tcp:.0f} MB/s (iperf3); "
  f"append of {write_bytes / 1024:.0f} KiB writes (W3's mean sync size over {sync_rounds} sync rounds) "
  f"with an fdatasync after each {fio:.0f} MB/s (fio).",
  "MB = 10^6 bytes of record values. Latency in microseconds, per record: send to acknowledgement "
  "(produce), send to arrival at the consumer (e2e).", "",
  "Disk MB/s: what the data's disk wrote during the run (all brokers, writeback included); "
  "broker CPU: CPU time of the broker(s), ms per MB of record values.", "",
  "Each workload starts with the page cache full, as a broker in service runs: its writes reclaim "
  "older cached pages instead of taking free memory, which this virtual machine hands back to its "
  "host and charges about five times more to touch again (scripts/bench.sh, `fill_page_cache`).", "",
  "| workload | what | durability | records/s | MB/s | ratio to ceiling | disk MB/s | broker CPU ms/MB | p50 | p99 | p99.9 | max |",
  "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
]
def disk_rate(w):
    return statistics.median(x["disk_bytes"] / x["seconds"] / 1e6 for x in load(w))
def cpu_per_mb(w):
    return statistics.median(x["broker_cpu_s"] * 1e3 / (x["bytes"] / 1e6) for x in load(w))
for w, what, dur, ceiling, cname in rows:
    r = load(w)
    mbps = med(r, "mb_per_sec")
    ratio = f"{mbps / ceiling:.0%} of {cname}" if ceiling else "-"
    lat = [med(r, "latency_us", k) for k in ("p50", "p99", "p999", "max")]
    fmt = lambda v: "-" if v is None else f"{v:.0f}"
    disk, cpu = disk_rate(w), cpu_per_mb(w)
    lines.append(f"| {w} | {what} | {dur} | {med(r, 'msgs_per_sec'):.0f} | {mbps:.1f} | {ratio} | "
                 f"{disk:.0f} | {cpu:.2f} | " + " | ".join(fmt(v) for v in lat) + " |")
w1, w3 = med(load("W1"), "mb_per_sec"), med(load("W3"), "mb_per_sec")
w7 = {w: med(load(w), "mb_per_sec") for w in ("W7a", "W7b", "W7c", "W7d")}
lines += ["",
  "Replication (W7, three brokers sharing this machine's cores and disk) against the single node, same run:",
  f"fsync=false: W7a {w7['W7a']:.0f} MB/s is {w7['W7a'] / w1:.0%} of W1, W7b {w7['W7b']:.0f} MB/s is {w7['W7b'] / w1:.0%} of W1 (target 40%); "
  f"fsync=true: W7c {w7['W7c']:.0f} MB/s is {w7['W7c'] / w3:.0%} of W3, W7d {w7['W7d']:.0f} MB/s is {w7['W7d'] / w3:.0%} of W3 (target 60%).",
  "",
  "Where the time goes: with fsync=true every replica writes each record to this machine's one disk, so "
  + ", ".join(f"{w} wrote {disk_rate(w):.0f} MB/s to it ({disk_rate(w) / med(load(w), 'mb_per_sec'):.1f} bytes per byte of values)"
              for w in ("W3", "W7c", "W7d"))
  + "; with fsync=false the brokers spent "
  + ", ".join(f"{cpu_per_mb(w):.2f} ms of CPU per MB in {w}" for w in ("W1", "W7a", "W7b"))
  + f", on {cores} cores shared with the load generator."]
codec = {c: load(f"W1-{c}") for c in ("none", "lz4", "zstd")}
size = {c: statistics.median(r["data_bytes"] for r in codec[c]) for c in codec}
lines += ["",
  "Compression (W1 on text values, words from a small vocabulary, the same every run; 1,000,000 records of "
  "1,000 B): " + ", ".join(
      f"{c} {med(codec[c], 'mb_per_sec'):.0f} MB/s of values, data directory {size[c] / 1e6:.0f} MB"
      + ("" if c == "none" else f" ({size['none'] / max(size[c], 1):.1f}x smaller)")
      for c in ("none", "lz4", "zstd")) + "."]
idem, plain = med(load("W1-idempotent"), "mb_per_sec"), med(load("W1-plain"), "mb_per_sec")
lines += ["",
  f"Idempotence (W1 at acks=all, the producer's default, against the same with --no-idempotence, run after it each time): "
  f"{idem:.0f} MB/s against {plain:.0f} MB/s, {idem / plain:.0%}. W7a-W7d run idempotent (the default)."]
w5, w8a = med(load("W5"), "mb_per_sec"), med(load("W8a"), "mb_per_sec")
settle = sorted(r["seconds"] for r in load("W8b"))
lines += ["",
  f"Consumer groups (W8): a group of 4 reads what W4 wrote at {w8a:.0f} MB/s, {w8a / w5:.0%} of W5's one consumer "
  f"({w5:.0f} MB/s); a group of 4 on 8 partitions under 20,000 records/s settles "
  f"{statistics.median(settle):.2f} s (median of {len(settle)}; min {settle[0]:.2f}, max {settle[-1]:.2f}) after a fifth member "
  "joins: the member giving up a partition hears of it at its next heartbeat (every 5 s in a stable group, "
  "`--group-heartbeat-interval-ms`), then the hand-over takes 200 ms heartbeats."]
lines += ["", "Every run's summary line, as `rill-bench --json` printed it:", "", "```"]
for w in [r[0] for r in rows] + ["W8b", "W1-none", "W1-lz4", "W1-zstd", "W1-idempotent", "W1-plain"]:
    for r in load(w):
        lines.append(f"{w} {json.dumps(r)}")
lines += ["```", ""]
# Sections other scripts measured (scripts/idle.sh) are kept as they are.
kept_marker = "## Capacity at rest"
try:
    previous = open(out).read()
except FileNotFoundError:
    previous = ""
if kept_marker in previous:
    lines += [previous[previous.index(kept_marker):].rstrip("\n"), ""]
open(out, "w").write("\n".join(lines))
print(f"wrote {out}", file=sys.stderr)
PY
