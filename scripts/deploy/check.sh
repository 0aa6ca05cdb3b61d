#!/usr/bin/env bash
# Validates the deployment assets in scripts/deploy with the tools operators
# run: systemd-analyze (unit), ansible-playbook (playbook), promtool
# (Prometheus config, rules and rule unit tests, the Grafana dashboard's
# queries), dpkg-deb and mmdebstrap
# (the Debian package, built and installed into a fresh root). Installs
# nothing on this machine. A missing
# tool is skipped with the reason printed, or is a failure when
# PORTCALL_REQUIRE_TOOLS=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
require="${PORTCALL_REQUIRE_TOOLS:-0}"
failed=0
passed=0
skipped=0

have() {
  if command -v "$1" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$require" = "1" ]; then
    echo "FAIL: $1 not found (PORTCALL_REQUIRE_TOOLS=1; install $2)" >&2
    failed=$((failed + 1))
  else
    echo "skipped: $1 not found (install $2 to check this)"
    skipped=$((skipped + 1))
  fi
  return 1
}

run() {
  local what="$1"
  shift
  echo "== $what"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAIL: $what" >&2
    failed=$((failed + 1))
  fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if have systemd-analyze systemd; then
  # `verify` insists that ExecStart's binary exists, so check a copy of the
  # unit whose ExecStart points at a stand-in executable.
  mkdir -p "$tmp/unit"
  printf '#!/bin/sh\nexit 0\n' >"$tmp/unit/portcall"
  chmod +x "$tmp/unit/portcall"
  sed "s#/usr/local/bin/portcall#$tmp/unit/portcall#" \
    "$here/systemd/portcall-agent.service" >"$tmp/unit/portcall-agent.service"
  # A clean verify prints nothing; any warning is a failure.
  verify_unit() {
    local out
    out="$(systemd-analyze verify "$tmp/unit/portcall-agent.service" 2>&1)" || {
      echo "$out"
      return 1
    }
    if [ -n "$out" ]; then
      echo "$out"
      return 1
    fi
  }
  run "systemd-analyze verify portcall-agent.service" verify_unit
  # The backstop for trace tables a killed agent leaves behind.
  stop_post_cleans() {
    grep -qx 'ExecStopPost=/usr/local/bin/portcall agent --cleanup' \
      "$here/systemd/portcall-agent.service"
  }
  run "ExecStopPost runs portcall agent --cleanup" stop_post_cleans
  if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    # Print only the overall exposure line; the exit status carries the
    # verdict against the threshold.
    exposure() {
      systemd-analyze security --offline=yes --threshold=20 --no-pager \
        "$tmp/unit/portcall-agent.service" | tail -n 1
    }
    run "systemd-analyze security (exposure at most 2.0)" exposure
  fi
fi

if have ansible-playbook "ansible-core (Debian) or ansible-core (PyPI)"; then
  run "ansible-playbook --syntax-check site.yml" \
    env ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$tmp/ansible" ANSIBLE_HOME="$tmp/ansible" \
    ansible-playbook -i "$here/ansible/inventory.example.ini" \
    -e "@$here/ansible/group_vars.example.yml" --syntax-check "$here/ansible/site.yml"
  run "ansible-playbook --syntax-check check-ssh.yml" \
    env ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$tmp/ansible" ANSIBLE_HOME="$tmp/ansible" \
    ansible-playbook -i "$here/ansible/inventory.example.ini" \
    -e "@$here/ansible/group_vars.example.yml" --syntax-check "$here/ansible/check-ssh.yml"
  # Render the ssh_config for the example inventory (on this machine only,
  # no host is contacted) and ask ssh what it would do with it.
  ssh_config_renders() {
    env ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$tmp/ansible" ANSIBLE_HOME="$tmp/ansible" \
      ansible-playbook -i "$here/ansible/inventory.example.ini" \
      -e "@$here/ansible/group_vars.example.yml" \
      -e "portcall_ssh_config=$tmp/ssh_config" --tags ssh_config \
      "$here/ansible/check-ssh.yml" >"$tmp/ssh_config.log" 2>&1 || {
      cat "$tmp/ssh_config.log"
      return 1
    }
    if ! command -v ssh >/dev/null 2>&1; then
      echo "ssh not found: rendered, not interpreted"
      return 0
    fi
    local g
    g="$(ssh -G -F "$tmp/ssh_config" 198.18.10.21)" || return 1
    grep -qx 'user deploy' <<<"$g" && grep -qx 'hostname 198.18.10.21' <<<"$g" || {
      echo "unexpected ssh -G output:"
      echo "$g" | grep -E '^(user|hostname|port) '
      return 1
    }
  }
  run "check-ssh.yml renders an ssh_config that ssh reads" ssh_config_renders
fi

if have promtool "prometheus (Debian)"; then
  run "promtool check config prometheus.yml" \
    promtool check config "$here/prometheus/prometheus.yml"
  run "promtool check rules portcall-rules.yml" \
    promtool check rules "$here/prometheus/portcall-rules.yml"
  run "promtool test rules portcall-rules.test.yml" \
    promtool test rules "$here/prometheus/portcall-rules.test.yml"
  # Every query of the Grafana dashboard, parsed and evaluated against the
  # series of a real exposition (the built binary's demo round).
  bin=""
  for b in "${PORTCALL_BIN:-}" "$here/../../target/debug/portcall" "$here/../../target/release/portcall"; do
    if [ -n "$b" ] && [ -x "$b" ]; then
      bin="$b"
      break
    fi
  done
  if [ -n "$bin" ]; then
    dashboard_queries() {
      local rc=0
      "$bin" demo --format prometheus >"$tmp/demo.prom" 2>"$tmp/demo.err" || rc=$?
      # 0, or 1 when a round has violations; 2 is an error.
      if [ "$rc" -gt 1 ]; then
        cat "$tmp/demo.err"
        return 1
      fi
      python3 "$here/grafana/check-queries.py" "$here/grafana/portcall.json" \
        "$tmp/demo.prom" "$tmp/grafana"
    }
    run "grafana/portcall.json: every query parses and returns series (promtool)" dashboard_queries
  elif [ "$require" = "1" ]; then
    echo "FAIL: no portcall binary in target/ for the dashboard check (cargo build first)" >&2
    failed=$((failed + 1))
  else
    echo "skipped: dashboard queries (no portcall binary in target/; cargo build first)"
    skipped=$((skipped + 1))
  fi
fi

# The Debian package: built from a release binary, installed into a fresh
# root (mmdebstrap, needs root), run, verified and purged. Each step prints
# how long it took; together about 2 minutes plus the release build.
if have dpkg-deb dpkg && have mmdebstrap mmdebstrap; then
  if [ "$(id -u)" -ne 0 ]; then
    if [ "$require" = "1" ]; then
      echo "FAIL: the .deb check needs root (mmdebstrap, chroot)" >&2
      failed=$((failed + 1))
    else
      echo "skipped: the .deb check needs root (mmdebstrap, chroot)"
      skipped=$((skipped + 1))
    fi
  else
    deb_build() {
      local t=$SECONDS
      "$here/debian/build.sh" >"$tmp/deb.log" 2>&1 || {
        cat "$tmp/deb.log"
        return 1
      }
      tail -n 1 "$tmp/deb.log" >"$tmp/deb.path"
      echo "   $(cat "$tmp/deb.path") in $((SECONDS - t)) s"
    }
    deb_verify() {
      local t=$SECONDS
      "$here/debian/verify.sh" "$(cat "$tmp/deb.path")" || return 1
      echo "   verified in $((SECONDS - t)) s"
    }
    run "debian/build.sh (release build, dpkg-deb)" deb_build
    if [ -s "$tmp/deb.path" ]; then
      run "debian/verify.sh (fresh root: install, --version, systemd-analyze verify, purge)" deb_verify
    fi
  fi
fi

echo "deploy checks: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
