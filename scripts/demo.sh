#!/usr/bin/env bash
# The demo: replays the recorded fixtures and prints each report.
set -euo pipefail
bin=${1:-target/release/conntrace}
cd "$(dirname "$0")/.."
for f in fixtures/*.pcap fixtures/*.pcapng; do
  [ -e "$f" ] || continue
  echo "== $f"
  "$bin" replay "$f"
  echo
done
