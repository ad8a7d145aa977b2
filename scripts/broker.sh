# http_listen BROKER_BIN: `--http-listen 127.0.0.1:0` when that binary
# knows the flag (an older revision's, as compare.sh runs, does not), so
# brokers started here never share the default metrics port.
http_listen() {
  if "$1" --help 2>/dev/null | grep -q -- --http-listen; then
    echo "--http-listen 127.0.0.1:0"
  fi
}

# Sourced by the scripts here. start_broker DIR starts a release broker on
# 127.0.0.1 with a free port, data in DIR/data and its log in
# DIR/broker.log, waits until it listens, and sets broker_pid and addr.
# The environment passes through (RUST_LOG, for one).
start_broker() {
  local dir=$1
  target/release/rill-broker --listen 127.0.0.1:0 $(http_listen target/release/rill-broker) \
    --data-dir "$dir/data" 2>"$dir/broker.log" &
  broker_pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$dir/broker.log" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(grep -o "listening on [0-9.:]*" "$dir/broker.log" | awk '{print $3}')
  [ -n "$addr" ] || { echo "the broker did not start" >&2; cat "$dir/broker.log" >&2; exit 1; }
}

# settle_deletions 'GLOB'...: after a topic delete, waits (half a second at
# least, 30 s at most) until no directory matching any GLOB (the brokers'
# `*.deleted` replica directories) is left, so that unlinking one
# workload's files does not run under the next workload.
settle_deletions() {
  local g left
  sleep 0.5
  for _ in $(seq 300); do
    left=
    for g in "$@"; do compgen -G "$g" >/dev/null && left=1; done
    [ -n "$left" ] || return 0
    sleep 0.1
  done
}
