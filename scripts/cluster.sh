#!/usr/bin/env bash
# A local rill cluster on 127.0.0.1, for trying things and for fault tests.
#
#   scripts/cluster.sh start 3     # 3 brokers; data, logs and pids in $DIR
#   scripts/cluster.sh status      # who is up, and `rill cluster status`
#   scripts/cluster.sh kill 2      # SIGKILL broker 2
#   scripts/cluster.sh restart 2   # start broker 2 again
#   scripts/cluster.sh join        # a new broker (the next id) joins (--join)
#   scripts/cluster.sh rolling-restart   # each broker in turn, see below
#   scripts/cluster.sh stop        # SIGTERM every broker (controlled shutdown)
#
# rolling-restart waits until `rill cluster health` passes (every broker
# up, a controller, every partition led and fully replicated), then for
# each broker: SIGTERM (it hands its leaderships over first), start it
# again, and wait for health again before the next, so clients (producers
# with acks=all, consumers) keep working throughout. Each wait is bounded
# by RILL_HEALTH_TIMEOUT_S (default 120); a broker that does not come back
# healthy stops the roll with exit code 1.
#
# Broker i listens for clients on 127.0.0.1:$((PORT + i)) and for peers on
# 127.0.0.1:$((PORT + 100 + i)). `start` writes a fresh cluster secret to
# $DIR/cluster.secret (mode 600), which every broker authenticates its
# peers with. Environment: RILL_CLUSTER_DIR (default
# ./cluster), RILL_CLUSTER_PORT (default 19090), RILL_BIN (default
# target/release, built first when missing), RILL_BROKER_ARGS (more flags
# for every broker, e.g. "--config FILE.toml"), RUST_LOG.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${RILL_CLUSTER_DIR:-cluster}
PORT=${RILL_CLUSTER_PORT:-19090}
BIN=${RILL_BIN:-target/release}

usage() { sed -n '2,28p' "$0" >&2; exit 2; }

ensure_built() {
  if [ ! -x "$BIN/rill-broker" ] || [ ! -x "$BIN/rill" ]; then
    cargo build --release -p rill-broker -p rill-client >&2
  fi
}

count() { cat "$DIR/size" 2>/dev/null || echo 0; }

# The brokers the cluster started with (named in --peers); those after
# them joined it.
founders() { cat "$DIR/founders" 2>/dev/null || count; }

# A fresh random secret for a new cluster, readable by this user alone.
new_secret() {
  (umask 077; rm -f "$DIR/cluster.secret"
   od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DIR/cluster.secret")
}

peers() {
  local n=$1 list=""
  for i in $(seq "$n"); do list="$list${list:+,}$i=127.0.0.1:$((PORT + 100 + i))"; done
  echo "$list"
}

bootstrap() {
  local n=${1:-$(count)} list=""
  for i in $(seq "$n"); do list="$list${list:+,}127.0.0.1:$((PORT + i))"; done
  echo "$list"
}

alive() { [ -f "$DIR/b$1.pid" ] && kill -0 "$(cat "$DIR/b$1.pid")" 2>/dev/null; }

# Waits until `rill cluster health` passes, at most RILL_HEALTH_TIMEOUT_S.
wait_healthy() {
  local deadline=$((SECONDS + ${RILL_HEALTH_TIMEOUT_S:-120}))
  until "$BIN/rill" --bootstrap "$(bootstrap)" cluster health >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "not healthy after ${RILL_HEALTH_TIMEOUT_S:-120} s:" >&2
      "$BIN/rill" --bootstrap "$(bootstrap)" cluster health >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

# SIGTERM broker $1 and wait until it has exited.
stop_one() {
  if alive "$1"; then kill -TERM "$(cat "$DIR/b$1.pid")"; fi
  while alive "$1"; do sleep 0.1; done
  rm -f "$DIR/b$1.pid"
}

start_one() {
  local i=$1
  alive "$i" && { echo "broker $i is already up" >&2; return 0; }
  mkdir -p "$DIR/b$i"
  # Metrics and health beside the client port (binaries older than the
  # flag, as scripts/compare.sh may run, serve none).
  local http=()
  if "$BIN/rill-broker" --help | grep -q -- --http-listen; then
    http=(--http-listen "127.0.0.1:$((PORT + 200 + i))")
  fi
  local how=(--peers "$(peers "$(founders)")")
  if [ "$i" -gt "$(founders)" ]; then how=(--join "$(bootstrap "$(founders)")"); fi
  "$BIN/rill-broker" --node-id "$i" --data-dir "$DIR/b$i" \
    --listen "127.0.0.1:$((PORT + i))" --peer-listen "127.0.0.1:$((PORT + 100 + i))" \
    "${how[@]}" --cluster-secret-file "$DIR/cluster.secret" \
    "${http[@]}" ${RILL_BROKER_ARGS:-} >>"$DIR/b$i.log" 2>&1 &
  echo $! >"$DIR/b$i.pid"
  for _ in $(seq 100); do
    grep -q "listening on" "$DIR/b$i.log" 2>/dev/null && break
    sleep 0.1
  done
  alive "$i" || { echo "broker $i did not start; see $DIR/b$i.log" >&2; return 1; }
  echo "broker $i: clients 127.0.0.1:$((PORT + i)), peers 127.0.0.1:$((PORT + 100 + i)), pid $(cat "$DIR/b$i.pid")"
}

cmd=${1:-}
case "$cmd" in
  start)
    n=${2:-3}
    ensure_built
    mkdir -p "$DIR"
    up=""
    for i in $(seq "$(count)"); do alive "$i" && up=1; done
    # A new cluster gets a new secret; brokers still up keep theirs.
    [ -n "$up" ] || new_secret
    # A cluster started before keeps its first brokers and those that
    # joined it (started again with --join); a new one starts with n.
    if [ -f "$DIR/founders" ] && [ -f "$DIR/b1/identity.json" ]; then
      [ "$n" -gt "$(count)" ] && echo "$n" >"$DIR/size"
    else
      echo "$n" >"$DIR/size"
      echo "$n" >"$DIR/founders"
    fi
    for i in $(seq "$n"); do start_one "$i"; done
    echo "export RILL_BOOTSTRAP=$(bootstrap)"
    ;;
  stop)
    for i in $(seq "$(count)"); do
      if alive "$i"; then kill -TERM "$(cat "$DIR/b$i.pid")"; fi
    done
    for i in $(seq "$(count)"); do stop_one "$i"; done
    ;;
  rolling-restart)
    ensure_built
    [ "$(count)" -gt 0 ] || { echo "no cluster in $DIR" >&2; exit 2; }
    wait_healthy || exit 1
    for i in $(seq "$(count)"); do
      started=$SECONDS
      stop_one "$i"
      start_one "$i"
      wait_healthy || { echo "broker $i did not come back healthy; roll stopped" >&2; exit 1; }
      echo "broker $i restarted; cluster healthy after $((SECONDS - started)) s"
    done
    ;;
  kill)
    [ -n "${2:-}" ] || usage
    alive "$2" && kill -KILL "$(cat "$DIR/b$2.pid")"
    while alive "$2"; do sleep 0.05; done
    rm -f "$DIR/b$2.pid"
    echo "broker $2 killed"
    ;;
  restart)
    [ -n "${2:-}" ] || usage
    ensure_built
    start_one "$2"
    ;;
  join)
    ensure_built
    [ "$(count)" -gt 0 ] || { echo "no cluster in $DIR" >&2; exit 2; }
    [ -f "$DIR/founders" ] || count >"$DIR/founders"
    i=$(($(count) + 1))
    echo "$i" >"$DIR/size"
    start_one "$i"
    echo "broker $i joined; \`rill cluster balance\` moves replicas onto it"
    echo "export RILL_BOOTSTRAP=$(bootstrap)"
    ;;
  status)
    for i in $(seq "$(count)"); do
      if alive "$i"; then echo "broker $i: up (pid $(cat "$DIR/b$i.pid"))"; else echo "broker $i: down"; fi
    done
    [ "$(count)" -gt 0 ] && "$BIN/rill" --bootstrap "$(bootstrap)" cluster status || true
    ;;
  *) usage ;;
esac
