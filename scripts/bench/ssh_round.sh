#!/usr/bin/env bash
# The WSO2 round in the netns lab through both transports (root, iproute2,
# nftables, openssh-server, openssh-client): mutual TLS to agents already
# running on the control port, then `check --ssh` (sshd in every host's
# namespace, the agent started per round over ssh, with --remote-path),
# then `check --ssh --push` (the binary copied to every host per round).
# Alternates them RUNS times and prints each run and the medians; the goal
# is ssh within 1 s of mTLS.
#
#   scripts/bench/ssh_round.sh [RUNS]       # default 5
#
# Uses target/release (build it first: cargo build --release -p portcall
# -p integration); PROFILE=debug measures the debug build instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
PLAN=${PLAN_FILE:-examples/wso2-distributed.toml}
COORD=${COORDINATOR:-operator}
PROFILE=${PROFILE:-release}
lab=target/$PROFILE/portcall-lab
export PORTCALL_BIN=${PORTCALL_BIN:-target/$PROFILE/portcall}
for f in "$lab" "$PORTCALL_BIN"; do
    [[ -x $f ]] || { echo "ssh_round.sh: build first ($f missing)" >&2; exit 2; }
done
PORTCALL_BIN=$(realpath "$PORTCALL_BIN")
exec "$lab" ssh-bench "$PLAN" "$COORD" "$RUNS"
