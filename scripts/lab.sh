#!/usr/bin/env bash
# Try portcall by hand in the netns lab (root, iproute2, nftables):
#
#   scripts/lab.sh rules PLAN COORDINATOR RULES_DIR  # write each host's correct firewall
#   scripts/lab.sh up PLAN RULES_DIR                 # namespaces, firewalls, agents
#   ROUTED=1 scripts/lab.sh up PLAN RULES_DIR        # a bridge per zone behind a router
#                                                    # (RULES_DIR/router.nft for the router)
#   scripts/lab.sh check [HOST] [portcall check args] # run check from HOST (default operator)
#   scripts/lab.sh exec HOST CMD...                  # run a command in HOST's namespace
#   scripts/lab.sh down                              # tear everything down
#
# RULES_DIR holds HOST.nft files (nft -f syntax); a host without one has no
# firewall. Everything lives in namespaces on 198.18.0.0/15 with nothing in
# the root namespace; state is kept in $PORTCALL_LAB_STATE (/run/portcall-lab).
# PROFILE=release uses optimised builds.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${PORTCALL_LAB_STATE:-/run/portcall-lab}"
# PROFILE=release builds and runs optimised binaries (benchmarks do).
profile="${PROFILE:-debug}"
target="${CARGO_TARGET_DIR:-target}/$profile"

build() {
  if [ "$profile" = release ]; then
    cargo build -q --release -p portcall -p integration
  else
    cargo build -q -p portcall -p integration
  fi
}

netns_of() {
  [ -f "$state/hosts" ] || { echo "lab.sh: no lab is up (run: scripts/lab.sh up PLAN RULES_DIR)" >&2; exit 2; }
  local ns
  ns=$(awk -v h="$1" '$1 == h { print $2 }' "$state/hosts")
  [ -n "$ns" ] || { echo "lab.sh: no host $1 in the lab; hosts: $(cut -d' ' -f1 "$state/hosts" | tr '\n' ' ')" >&2; exit 2; }
  echo "$ns"
}

case "${1:-}" in
  rules)
    [ $# -eq 4 ] || { echo "usage: scripts/lab.sh rules PLAN COORDINATOR RULES_DIR" >&2; exit 2; }
    build
    "$target/portcall-lab" rules "$2" "$3" "$4"
    ;;
  up)
    [ $# -eq 3 ] || { echo "usage: scripts/lab.sh up PLAN RULES_DIR" >&2; exit 2; }
    [ ! -f "$state/hosts" ] || { echo "lab.sh: a lab is already up; run scripts/lab.sh down first" >&2; exit 2; }
    build
    mkdir -p "$state"
    mode=up; [ "${ROUTED:-}" != 1 ] || mode=up-routed
    nohup "$target/portcall-lab" "$mode" "$2" "$3" "$state" >"$state/lab.log" 2>&1 &
    echo $! >"$state/pid"
    for _ in $(seq 1 300); do
      if grep -q '^ready$' "$state/lab.log" 2>/dev/null; then
        echo "lab up:"; column -t "$state/hosts"; exit 0
      fi
      kill -0 "$(cat "$state/pid")" 2>/dev/null || { cat "$state/lab.log" >&2; exit 1; }
      sleep 0.2
    done
    echo "lab.sh: the lab did not come up within 60 s; see $state/lab.log" >&2; exit 1
    ;;
  check)
    shift
    host="${1:-operator}"; [ $# -eq 0 ] || shift
    ns=$(netns_of "$host")
    # shellcheck disable=SC1091
    . "$state/env"
    exec ip netns exec "$ns" "$PORTCALL" check --plan "$PLAN" --pki "$PKI" "$@"
    ;;
  exec)
    [ $# -ge 3 ] || { echo "usage: scripts/lab.sh exec HOST CMD..." >&2; exit 2; }
    ns=$(netns_of "$2"); shift 2
    exec ip netns exec "$ns" "$@"
    ;;
  down)
    [ -f "$state/pid" ] || { echo "lab.sh: no lab is up"; exit 0; }
    pid=$(cat "$state/pid")
    touch "$state/down"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$state/pid"
    echo "lab down"
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
