#!/usr/bin/env bash
# Cross-check against a real server: nginx on loopback (keepalive_requests 3,
# so connections are reused and also closed), `conntrace run -w F` against it,
# then our connection count against `tshark -r F -q -z conv,tcp`. Exits non-zero
# when they differ. Needs root (capture), nginx and tshark.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CHECK_DIR:-/tmp/conntrace-nginx-check}
rm -rf "$dir" && mkdir -p "$dir/www"
target=${CARGO_TARGET_DIR:-target}
bin=${BIN:-$target/debug/conntrace}
need() { command -v "$1" >/dev/null || { echo "nginx-check: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need nginx nginx-light
need tshark tshark
[ "$(id -u)" = 0 ] || { echo "nginx-check: live capture needs root (sudo $0)" >&2; exit 1; }
[ -x "$bin" ] || cargo build --quiet

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo hello > "$dir/www/index.html"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
  access_log off;
  keepalive_requests 3;
  keepalive_timeout 10s;
  server { listen 127.0.0.1:$port; root $dir/www; }
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir"
trap 'kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true' EXIT

"$bin" run "http://127.0.0.1:$port/" -n 20 -c 2 -w "$dir/run.pcap" -f json -o "$dir/report.json"
ours=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["connections"])' "$dir/report.json")
theirs=$(tshark -r "$dir/run.pcap" -q -z conv,tcp | grep -c '<->' || true)
echo "connections: conntrace $ours, tshark conv,tcp $theirs"
[ "$ours" = "$theirs" ] || { echo "nginx-check: MISMATCH" >&2; exit 1; }
"$bin" replay "$dir/run.pcap" | head -1
