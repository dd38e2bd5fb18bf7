#!/usr/bin/env bash
# Replay speed and peak memory on one large capture, side by side in one run:
# conntrace (with and without HTTP parsing; printing the summary only, and the
# whole JSON report; the native and the libpcap reader), tcpdump -r F -w
# /dev/null, and tshark -q -z conv,tcp.
#
#   scripts/bench-replay.sh [CAPTURE]
#
# Without CAPTURE it records one (as root): nginx on loopback, ApacheBench
# making a new connection per request, and h2load keeping connections alive,
# all under tcpdump. The file is kept in $BENCH_DIR (default /tmp/conntrace-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-/tmp/conntrace-bench}
mkdir -p "$dir"
cap=${1:-$dir/large.pcap}
bin=target/release/conntrace

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need /usr/bin/time time
need tshark tshark
need tcpdump tcpdump

if [ ! -s "$cap" ]; then
  need ab apache2-utils
  need h2load nghttp2-client
  need nginx nginx-light
  port=18480
  root=$dir/www
  mkdir -p "$root"
  head -c 4096 /dev/urandom | base64 -w 0 > "$root/small.txt"
  head -c 16384 /dev/urandom | base64 -w 0 > "$root/medium.txt"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100;
  server { listen 127.0.0.1:$port; root $root; }
}
CONF
  # Server and clients share one core, tcpdump has the other: a capture
  # without kernel drops is a fair benchmark input.
  taskset -c 0 nginx -c "$dir/nginx.conf"
  trap 'kill $(cat "$dir/nginx.pid") 2>/dev/null || true' EXIT
  taskset -c 1 tcpdump -i lo -B 1048576 -s 0 -w "$cap" "tcp port $port" 2> "$dir/tcpdump.log" &
  tcpdump_pid=$!
  until grep -q "listening on" "$dir/tcpdump.log"; do sleep 0.1; done
  taskset -c 0 ab -q -n 60000 -c 16 "http://127.0.0.1:$port/small.txt" > /dev/null
  taskset -c 0 h2load --h1 -n 200000 -c 32 "http://127.0.0.1:$port/medium.txt" > /dev/null
  kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" || true
  grep -E "captured|dropped" "$dir/tcpdump.log" >&2 || true
fi

[ -x "$bin" ] || cargo build --release --locked

size=$(stat -c %s "$cap")
frames=$(capinfos -c -M "$cap" 2>/dev/null | awk -F': *' '/Number of packets/ {print $2}')
echo "capture: $cap, $((size / 1048576)) MiB, $frames frames"
echo

# Each command runs five times; the median time and the largest peak memory
# count (a virtual machine's page cache and neighbours make single runs noisy).
measure() { # name, command...
  local name=$1; shift
  # Warm the page cache once so every reader starts from the same place.
  cat "$cap" > /dev/null
  : > "$dir/runs.out"
  for _ in 1 2 3 4 5; do
    /usr/bin/time -f "%e %M" -o "$dir/time.out" "$@" > /dev/null 2> "$dir/err.out" || {
      echo "$name failed: $(tail -1 "$dir/err.out")" >&2; return; }
    cat "$dir/time.out" >> "$dir/runs.out"
  done
  local secs kib
  secs=$(sort -n "$dir/runs.out" | awk 'NR==3 {print $1}')
  kib=$(sort -k2 -n "$dir/runs.out" | awk 'END {print $2}')
  printf '%s\t%s\t%s\n' "$name" "$secs" "$kib"
}

{
  measure "conntrace replay -f summary" "$bin" replay -f summary "$cap"
  measure "conntrace replay --no-http -f summary" "$bin" replay --no-http -f summary "$cap"
  measure "conntrace replay -f json" "$bin" replay -f json "$cap"
  measure "conntrace replay --no-http -f json" "$bin" replay --no-http -f json "$cap"
  measure "conntrace replay --reader libpcap -f summary" "$bin" replay --reader libpcap -f summary "$cap"
  measure "tcpdump -r F -w /dev/null" tcpdump -r "$cap" -w /dev/null
  measure "tshark -q -z conv,tcp" tshark -r "$cap" -q -z conv,tcp
} > "$dir/results.tsv"

# Ratios against the first two rows: the whole analysis with HTTP parsing, and
# without it (both printing only the summary, so output size does not count).
base=$(awk -F'\t' 'NR==1 {print $2}' "$dir/results.tsv")
nohttp=$(awk -F'\t' 'NR==2 {print $2}' "$dir/results.tsv")
printf '%-46s %10s %12s %14s %12s\n' "command" "seconds" "peak MiB" "÷ replay" "÷ --no-http"
awk -F'\t' -v b="$base" -v n="$nohttp" '{
  printf "%-46s %10.2f %12.1f %14.2f %12.2f\n", $1, $2, $3/1024, $2/b, $2/n }' "$dir/results.tsv"
