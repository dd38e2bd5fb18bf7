#!/usr/bin/env bash
# Live capture under load: N requests (default 20,000) at concurrency C (default
# 64) from `conntrace run` against `conntrace serve` on loopback, captured on lo.
# Prints requests per second, packets the capture dropped, requests attributed
# to a connection (by tag in the packets, by local port) against the total, and
# peak memory. A benchmark, not a test: run it as root.
#
#   scripts/bench-live.sh            (N=20000 C=64 by default)
#   N=100000 C=128 scripts/bench-live.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-20000}
c=${C:-64}
dir=${BENCH_DIR:-/tmp/conntrace-bench-live}
mkdir -p "$dir"
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/conntrace

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need /usr/bin/time time
need python3 python3
[ "$(id -u)" = 0 ] || { echo "bench: live capture needs root (sudo $0)" >&2; exit 1; }

cargo build --release --locked --quiet

rm -f "$dir/serve.out"
"$bin" serve --body-size 1k > "$dir/serve.out" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$dir/serve.out" ] && break; sleep 0.05; done
url=$(awk '{print $3}' "$dir/serve.out")

/usr/bin/time -v -o "$dir/time.txt" \
  "$bin" run "$url" -n "$n" -c "$c" -f json -o "$dir/report.json" -w "$dir/run.pcap"

python3 - "$dir/report.json" "$dir/time.txt" <<'PY'
import json, re, sys
report = json.load(open(sys.argv[1]))
times = open(sys.argv[2]).read()
client = report["client"]
reqs = client["requests"]
ok = [r for r in reqs if r["error"] is None]
span = max(r["finished"] for r in reqs) - min(r["started"] for r in reqs)
by_port = sum(1 for r in reqs if r["stream_by_port"] is not None)
by_tag = sum(1 for r in reqs if r["stream_by_tag"] is not None)
rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", times).group(1))
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", times).group(1)
rows = [
    ("requests", f"{len(reqs)} ({len(reqs) - len(ok)} failed)"),
    ("concurrency", client["settings"]["concurrency"]),
    ("requests/second", f"{len(reqs) / span:,.0f} (first start to last end: {span:.2f} s)"),
    ("wall clock, whole run", wall),
    ("connections", report["summary"]["connections"]),
    ("packets captured", report["source"]["packets"]),
    ("capture drops", report["source"]["dropped"]),
    ("attributed by local port", f"{by_port} / {len(reqs)}"),
    ("attributed by tag in packets", f"{by_tag} / {len(reqs)}"),
    ("disagreements", client["disagreements"]),
    ("peak RSS", f"{rss_kib / 1024:.1f} MiB"),
]
for k, v in rows:
    print(f"{k:<30} {v}")
PY
