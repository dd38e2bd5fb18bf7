#!/usr/bin/env bash
# Remakes docs/html-report.png: the HTML report of a capture as headless
# Chromium (Debian's `chromium`) renders it.
#   scripts/html-screenshot.sh [CAPTURE] [PNG]
set -euo pipefail
cd "$(dirname "$0")/.."
capture=${1:-fixtures/causes/go-pool-limit.pcap}
png=${2:-docs/html-report.png}
bin=${CONNTRACE:-target/release/conntrace}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The capture as given (a relative path) heads the page.
"$bin" replay -f html -o "$work/report.html" "$capture"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=1280,1500 \
  --screenshot="$PWD/$png" "file://$work/report.html" 2>/dev/null
echo "wrote $png"
