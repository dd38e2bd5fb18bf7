#!/usr/bin/env bash
# The demo: the live reuse experiments against the built-in server (captured
# on loopback, so as root or with sudo), then a recorded capture replayed.
set -euo pipefail
bin=${1:-target/release/conntrace}
cd "$(dirname "$0")/.."
echo "== conntrace demo (live experiments on loopback)"
if [ "$(id -u)" = 0 ]; then
  "$bin" demo
elif command -v sudo >/dev/null; then
  sudo "$bin" demo
else
  echo "(skipped: live capture needs root; run: sudo $bin demo)"
fi
echo
# Offline, on a recorded capture: nginx allowing 3 requests per connection.
f=fixtures/nginx-limits-requests.pcap
echo "== conntrace replay $f (a saved capture: curl against nginx, keepalive_requests 3)"
"$bin" replay "$f"
echo
echo "Every fixture replays the same way: conntrace replay fixtures/*.pcap*"
