#!/usr/bin/env bash
# Renders an HTML report in headless Chromium and saves a PNG screenshot, so
# the page can be looked at (and attached to a review) without a desktop.
#
# usage: scripts/report-screenshot.sh [REPORT.html] [OUT.png] [WIDTH,HEIGHT]
#   REPORT.html  default: a fresh `portcall demo --format html` (built with cargo)
#   OUT.png      default: target/report-screenshot.png
#   WIDTH,HEIGHT default: 1400,2000
# Needs Debian's chromium. Runs as root, hence --no-sandbox; no network use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
html="${1:-}"
out="${2:-$root/target/report-screenshot.png}"
size="${3:-1400,2000}"

browser="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$browser" ]]; then
    echo "report-screenshot: chromium not found (apt-get install chromium)" >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -z "$html" ]]; then
    html="$work/report.html"
    # The demo exits 0 when its only violations are the must-be-blocked paths
    # loopback cannot block; anything else still renders a page worth seeing.
    (cd "$root" && cargo run -q -p portcall -- demo --format html --out "$html") || true
    [[ -s "$html" ]] || { echo "report-screenshot: the demo wrote no report" >&2; exit 1; }
fi
[[ -r "$html" ]] || { echo "report-screenshot: cannot read $html" >&2; exit 2; }
html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run \
    --user-data-dir="$work/profile" --hide-scrollbars \
    --window-size="$size" --screenshot="$out" "file://$html" \
    >"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }
[[ -s "$out" ]] || { cat "$work/chromium.log" >&2; echo "report-screenshot: no screenshot written" >&2; exit 1; }
echo "$out"
