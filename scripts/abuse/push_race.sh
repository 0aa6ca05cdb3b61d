#!/usr/bin/env bash
# The audit's `--push` race, rerun: a hostile local user (nobody) swaps
# every pushed directory in a shared TMPDIR for one holding their own
# binary, in a tight loop, while root runs `check --ssh --push` TRIES times
# (the remote command runs through a stand-in ssh with a local shell, as
# in agent/tests/ssh_cli.rs). Two shared directories: world-writable and
# not sticky (the audit's: every try must be refused), then sticky like
# /tmp (every try must run the genuine agent). The hostile binary never
# runs: it would create a marker file, and the script fails if it exists.
#
#   scripts/abuse/push_race.sh [TRIES]     # default 100; needs root
#
# Uses target/debug/portcall (PROFILE=release for the release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
TRIES=${1:-100}
PROFILE=${PROFILE:-debug}
BIN=$(realpath "target/$PROFILE/portcall")
[[ -x $BIN ]] || { echo "push_race.sh: build first (target/$PROFILE/portcall)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "push_race.sh: needs root (the victim is root, the attacker nobody)" >&2; exit 2; }

work=$(mktemp -d /tmp/portcall-race.XXXXXXXX)
chmod 0755 "$work"
attacker=
cleanup() {
    [[ -n $attacker ]] && kill "$attacker" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

marker=$work/owned
printf '#!/bin/sh\ntouch %s\ncat >/dev/null\n' "$marker" >"$work/evil"
chmod 0755 "$work/evil"
cat >"$work/ssh" <<'SSH'
#!/bin/sh
for last; do :; done
exec sh -c "$last"
SSH
chmod 0755 "$work/ssh"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2", 0)); print(s.getsockname()[1])')
cat >"$work/plan.toml" <<PLAN
name = "push-race"
[defaults]
timeout_ms = 300
retries = 0
[[hosts]]
name = "a"
address = "127.0.0.1"
[[hosts]]
name = "b"
address = "127.0.0.2"
ssh = "root@127.0.0.2"
roles = ["svc"]
[roles.svc]
ports = [{ name = "svc", port = $port }]
[[flows]]
from = "host:a"
to = "host:b"
ports = ["svc"]
PLAN

# phase MODE EXPECT: TRIES pushes into a shared directory of MODE under
# the attacker's loop; EXPECT is "refused" or "ran".
phase() {
    local mode=$1 expect=$2 shared=$work/shared-$1 refused=0 ran=0 other=0 i
    mkdir "$shared"
    chmod "$mode" "$shared"
    setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c '
        end=$(( $(date +%s) + 900 ))
        while [ "$(date +%s)" -lt "$end" ]; do
            for d in "$1"/portcall-push.*; do
                case $d in *.moved) continue;; esac
                [ -d "$d" ] || continue
                mv "$d" "$d.moved" 2>/dev/null && mkdir "$d" && cp "$2" "$d/portcall" && chmod 0755 "$d/portcall"
            done
        done' race "$shared" "$work/evil" &
    attacker=$!
    for ((i = 1; i <= TRIES; i++)); do
        TMPDIR=$shared timeout 60 "$BIN" check --plan "$work/plan.toml" --ssh --ssh-program "$work/ssh" \
            --push --format json --out "$work/report.json" >/dev/null 2>"$work/stderr" || true
        if [[ -e $marker ]]; then
            echo "push_race.sh: try $i in mode $mode ran the attacker's binary" >&2
            exit 1
        fi
        if grep -q 'not sticky' "$work/report.json" "$work/stderr" 2>/dev/null; then
            refused=$((refused + 1))
        elif grep -q '"verdict"' "$work/report.json" && ! grep -q 'not run' "$work/report.json"; then
            ran=$((ran + 1))
        else
            other=$((other + 1))
        fi
    done
    kill "$attacker" 2>/dev/null || true
    wait "$attacker" 2>/dev/null || true
    attacker=
    printf 'shared TMPDIR mode %-5s tries %d: refused %d, ran the genuine agent %d, other %d, ran the attacker'"'"'s 0\n' \
        "$mode" "$TRIES" "$refused" "$ran" "$other"
    case $expect in
        refused) [[ $refused == "$TRIES" ]] ;;
        ran) [[ $ran == "$TRIES" ]] ;;
    esac || { echo "push_race.sh: expected every try to be $expect" >&2; tail -n 3 "$work/stderr" >&2; exit 1; }
}

phase 0777 refused
phase 1777 ran
echo "push_race.sh: OK, the attacker's binary never ran"
