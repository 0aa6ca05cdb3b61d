#!/usr/bin/env bash
# How loudly real servers log portcall's service probes, and the other ways
# a client without credentials could leave: MariaDB (Aborted_connects and
# its warnings log) and RabbitMQ (its log, by level), each in a network
# namespace of its own with only loopback, test-generated data dirs and
# cookie, all removed on exit. Needs root, mariadb-server, rabbitmq-server.
#
# usage: scripts/abuse/service_close.sh [N]   (N connections per way, default 1000;
#        the AMQP Connection.Close way costs the broker's ~2 s handshake-error
#        delay per connection, so it runs N/50 times)
set -euo pipefail
n=${1:-1000}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/portcall-service-close.XXXXXX)
ns="pcclose-$$"
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  sleep 1
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
run() { ip netns exec "$ns" "$@"; }

# MariaDB, logging every aborted connection and why.
mkdir -p "$work/db"
mariadb-install-db --no-defaults --user=root --skip-test-db \
  --datadir="$work/db/data" >/dev/null
run mariadbd --no-defaults --user=root --datadir="$work/db/data" \
  --bind-address=127.0.0.1 --port=3306 --socket="$work/db/sock" \
  --pid-file="$work/db/pid" --skip-log-bin --log-warnings=4 \
  --log-error="$work/db/err.log" &
# RabbitMQ with its own node name, cookie, dirs and no plugins.
mkdir -p "$work/rmq/home" "$work/rmq/mnesia" "$work/rmq/log"
printf 'portcall-service-close' >"$work/rmq/home/.erlang.cookie"
chmod 400 "$work/rmq/home/.erlang.cookie"
echo '[].' >"$work/rmq/plugins"
run env HOME="$work/rmq/home" RABBITMQ_NODENAME=rabbit@localhost \
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_MNESIA_BASE="$work/rmq/mnesia" RABBITMQ_LOG_BASE="$work/rmq/log" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$work/rmq/plugins" RABBITMQ_CONFIG_FILE="$work/rmq/rabbitmq" \
  RABBITMQ_PID_FILE="$work/rmq/pid" /usr/lib/rabbitmq/bin/rabbitmq-server >"$work/rmq/out.log" 2>&1 &
for port in 3306 5672; do
  for _ in $(seq 60); do
    run ss -ltnH "sport = :$port" | grep -q . && break
    sleep 0.5
  done
done

aborted() {
  run mariadb --no-defaults --socket="$work/db/sock" -uroot -N -e \
    "SHOW GLOBAL STATUS LIKE 'Aborted_connects'" | awk '{print $2}'
}
# `portcall`: the engine's own proof (integration/src/bin/service-proof.rs,
# built with `cargo build -p integration --bin service-proof`), when built.
proof=${SERVICE_PROOF:-$here/../../target/debug/service-proof}
ways="fin rst"
[ -x "$proof" ] && ways="portcall $ways"
leave() { # PROTOCOL WAY PORT N
  if [ "$2" = portcall ]; then
    run "$proof" "$1" "127.0.0.1:$3" "$4"
  else
    run /usr/bin/python3 "$here/service_close.py" "$1" "$2" 127.0.0.1 "$3" "$4"
  fi
}
for way in $ways; do
  a=$(aborted); l=$(wc -l <"$work/db/err.log")
  leave mysql "$way" 3306 "$n"
  sleep 1
  echo "mysql $way: Aborted_connects +$(($(aborted) - a)); log lines:"
  tail -n +$((l + 1)) "$work/db/err.log" | sed -E 's/^.*\[(Warning|Note|ERROR)\]/[\1]/; s/[0-9]+/N/g' \
    | sort | uniq -c | sort -rn | head -5
done
log="$work/rmq/log/rabbit@localhost.log"
# The broker logs asynchronously: wait until its log stops growing.
settle() {
  local last=-1 now
  for _ in $(seq 30); do
    now=$(wc -l <"$log")
    [ "$now" = "$last" ] && return
    last=$now
    sleep 2
  done
}
settle
for way in $ways close; do
  m=$n
  [ "$way" = close ] && m=$((n / 50 > 0 ? n / 50 : 1))
  l=$(wc -l <"$log")
  leave amqp "$way" 5672 "$m"
  settle
  echo "amqp $way ($m connections): log lines by level:"
  tail -n +$((l + 1)) "$log" | grep -o '^[0-9-]* [0-9:.+-]* \[[a-z]*\]' | grep -o '\[[a-z]*\]' | sort | uniq -c
  tail -n +$((l + 1)) "$log" | grep -v 'accepting AMQP' | sed -E 's/<[0-9.]+>//g; s/^[0-9-]+ [0-9:.+-]+ //; s/[0-9]+/N/g' \
    | sort | uniq -c | sort -rn | head -3
done
