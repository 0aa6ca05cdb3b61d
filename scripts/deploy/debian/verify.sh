#!/usr/bin/env bash
# Installs the portcall .deb into a fresh Debian root and checks it as an
# operator would: `portcall --version` runs inside it, the installed unit
# passes `systemd-analyze verify`, the installed bash completion completes,
# the service was not started or enabled, and `dpkg --purge` leaves no file
# of the package behind.
#
#   scripts/deploy/debian/verify.sh [target/debian/portcall_V_A.deb]
#
# The root is built by mmdebstrap (variant essential, plus adduser, which
# the package depends on) from this machine's own apt sources; needs root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

deb="${1:-}"
if [ -z "$deb" ]; then
  deb="$(ls -t "$repo"/target/debian/portcall_*.deb 2>/dev/null | head -n 1 || true)"
fi
[ -f "$deb" ] || {
  echo "verify.sh: no .deb given and none in target/debian (run build.sh)" >&2
  exit 2
}
[ "$(id -u)" -eq 0 ] || {
  echo "verify.sh: needs root (mmdebstrap --mode=root, chroot)" >&2
  exit 2
}
for tool in mmdebstrap chroot systemd-analyze; do
  command -v "$tool" >/dev/null || {
    echo "verify.sh: $tool not found" >&2
    exit 2
  }
done

root="$(mktemp -d /tmp/portcall-deb-root.XXXXXX)"
cleanup() {
  # Nothing may stay mounted below the root before it is removed.
  findmnt -rn -o TARGET | grep -F "$root" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

# This machine's apt sources (the mirror apt already uses), one MIRROR
# argument per file.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && grep -qvE '^\s*(#|$)' "$f" && sources+=("$f")
done
[ "${#sources[@]}" -gt 0 ] || {
  echo "verify.sh: no apt sources on this machine" >&2
  exit 2
}
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-stable}")"

echo "== fresh root: mmdebstrap --variant=essential $suite"
start=$SECONDS
mmdebstrap --quiet --variant=essential --mode=root --include=adduser,systemd,procps \
  "$suite" "$root" "${sources[@]}"
echo "   built in $((SECONDS - start)) s"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
in_root() { chroot "$root" "$@"; }

echo "== dpkg -i $(basename "$deb")"
cp "$deb" "$root/tmp/portcall.deb"
in_root dpkg -i /tmp/portcall.deb
rm -f "$root/tmp/portcall.deb"
mapfile -t files < <(in_root dpkg -L portcall)
conffiles="$(in_root dpkg-query -W -f='${Conffiles}' portcall)"
grep -q '/etc/portcall/agent.env' <<<"$conffiles" || fail "agent.env is not a conffile: $conffiles"

echo "== portcall --version in the root"
v="$(in_root /usr/bin/portcall --version)"
echo "   $v"
grep -Eq '^portcall [0-9.]+ \(commit ([0-9a-f]{7,}|unknown), built [0-9]{4}-[0-9]{2}-[0-9]{2}\)$' <<<"$v" \
  || fail "unexpected --version: $v"
in_root /usr/bin/portcall version --json | grep -q '"control_protocol":' || fail "version --json"

echo "== installed files"
for f in /usr/bin/portcall /lib/systemd/system/portcall-agent.service \
  /etc/portcall/agent.env /usr/share/man/man1/portcall.1.gz \
  /usr/share/man/man1/portcall-check.1.gz \
  /usr/share/bash-completion/completions/portcall \
  /usr/share/zsh/vendor-completions/_portcall \
  /usr/share/fish/vendor_completions.d/portcall.fish \
  /usr/share/doc/portcall/copyright; do
  [ -f "$root$f" ] || fail "$f not installed"
done
zcat "$root/usr/share/man/man1/portcall.1.gz" | grep -q '^\.TH portcall 1 ' || fail "portcall.1.gz is not a man page"
in_root getent passwd portcall >/dev/null || fail "postinst did not create the portcall user"
[ "$(in_root stat -c '%U:%G %a' /etc/portcall)" = "root:portcall 750" ] \
  || fail "/etc/portcall is $(in_root stat -c '%U:%G %a' /etc/portcall)"
# Installing must not enable (nor, with no systemd running, start) the unit.
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/portcall-agent.service" ] \
  || fail "the package enabled portcall-agent.service"

echo "== bash completion in the root completes 'portcall ch'"
got="$(in_root bash --noprofile --norc -c '
  source /usr/share/bash-completion/completions/portcall
  COMP_WORDS=(portcall ch); COMP_CWORD=1; COMP_LINE="portcall ch"; COMP_POINT=11
  _portcall portcall ch portcall; echo "${COMPREPLY[*]}"')"
[ "$got" = "check" ] || fail "completion gave '$got'"

echo "== systemd-analyze verify --root on the installed unit"
out="$(systemd-analyze verify --root="$root" /lib/systemd/system/portcall-agent.service 2>&1)" \
  || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned: $out"

echo "== dpkg --purge portcall"
in_root dpkg --purge portcall
if in_root dpkg-query -W portcall >/dev/null 2>&1; then
  status="$(in_root dpkg-query -W -f='${Status}' portcall 2>/dev/null || true)"
  [ -z "$status" ] || [ "$status" = "unknown ok not-installed" ] || fail "still known to dpkg: $status"
fi
left=0
for f in "${files[@]}"; do
  # Shared directories (/usr, /etc, /usr/share/man/man1, ...) stay; every
  # file and every directory of the package's own is gone.
  if [ -e "$root$f" ] && [ ! -d "$root$f" ]; then
    echo "   left behind: $f" >&2
    left=$((left + 1))
  fi
done
for d in /etc/portcall /usr/share/doc/portcall; do
  [ ! -e "$root$d" ] || {
    echo "   left behind: $d" >&2
    left=$((left + 1))
  }
done
[ "$left" -eq 0 ] || fail "$left paths left after dpkg --purge"
echo "deb verified: installed, ran, unit verified, purged clean"
