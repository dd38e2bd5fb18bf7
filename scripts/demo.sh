#!/usr/bin/env bash
# The demo: the live reuse experiments against the built-in server (captured
# on loopback, so as root or with sudo), then the recorded fixtures replayed.
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
for f in fixtures/*.pcap fixtures/*.pcapng; do
  [ -e "$f" ] || continue
  echo "== $f"
  "$bin" replay "$f"
  echo
done
