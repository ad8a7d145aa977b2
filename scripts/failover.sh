#!/usr/bin/env bash
# The long failover run: a 3-broker cluster of release brokers, a topic of
# 6 partitions with 3 replicas, an acks=all producer running throughout,
# and KILLS (default 25) partition leaders SIGKILLed and restarted in turn.
# Checks that every acknowledged record is where it was acknowledged and
# that every replica holds the same log, and prints each failover (kill to
# the first acknowledged produce at the new leader) with the median and
# maximum.
#
#   scripts/failover.sh            # 25 kills
#   KILLS=50 scripts/failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${KILLS:-25}
RILL_FAILOVER_KILLS=$KILLS cargo test --release -p rill-broker --test cluster \
  acknowledged_writes_survive_leader_kills_once_each_in_order_and_replicas_agree -- --nocapture 2>&1 |
  grep -E '^(kill|failover|[0-9]+ acknowledged)|test result|panicked'
