#!/usr/bin/env bash
# The audit's same-address churn, rerun: three mTLS agents on loopback,
# 64 idle connections per agent from the coordinator's own source address
# (127.0.0.1), each reopened 1 ms after the agent sheds it, during 5
# rounds; every round must keep every agent and every verdict (0 lost
# agents). The load and the assertions live in the test
# probe-core/tests/abuse_loopback.rs (idle_strangers_on_the_coordinators_address_lose_no_agent_in_5_rounds); this runs it RUNS times.
#
#   scripts/abuse/same_address.sh [RUNS]     # default 3; no root needed
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
export CARGO_INCREMENTAL=0
cargo test -q -p probe-core --test abuse_loopback --no-run
pass=0
for ((i = 1; i <= RUNS; i++)); do
    if cargo test -q -p probe-core --test abuse_loopback idle_strangers_on_the_coordinators_address >/tmp/same_address.$$ 2>&1; then
        pass=$((pass + 1))
    else
        grep -E 'round [0-9]|panicked' /tmp/same_address.$$ >&2 || true
    fi
done
rm -f /tmp/same_address.$$
echo "same_address.sh: $pass of $RUNS runs (5 rounds each under churn) lost no agent"
[[ $pass == "$RUNS" ]]
