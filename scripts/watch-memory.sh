#!/usr/bin/env bash
# `watch -f jsonl` for a long time against a steady load, in bounded memory:
# starts `conntrace serve` on loopback, a load of keep-alive and one-shot
# connections (python3, about 40 requests and 15 new connections a second),
# and `conntrace watch -i lo -f jsonl` on the server's port, then prints the
# watcher's resident memory (VmRSS) every minute with the records it has
# streamed so far, and the ratio of the last sample to the one at 1 minute.
# A benchmark, not a test: run it as root.
#
#   scripts/watch-memory.sh                (10 minutes)
#   MINUTES=3 scripts/watch-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${MINUTES:-10}
bin=${CONNTRACE_BIN:-${CARGO_TARGET_DIR:-target}/debug/conntrace}
[ -x "$bin" ] || cargo build --quiet
work=$(mktemp -d /tmp/conntrace-watch-memory.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

"$bin" serve --listen 127.0.0.1:0 --max-requests 5 >"$work/serve.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q 127.0.0.1: "$work/serve.out" && break; sleep 0.1; done
addr=$(grep -o '127.0.0.1:[0-9]*' "$work/serve.out" | head -1)
port=${addr##*:}

"$bin" watch -i lo -f jsonl -- tcp port "$port" >"$work/records.jsonl" 2>"$work/watch.err" &
watcher=$!
pids+=($watcher)
for _ in $(seq 100); do grep -q capturing "$work/watch.err" && break; sleep 0.1; done

python3 - "$addr" "$minutes" >"$work/load.out" 2>&1 <<'PY' &
import http.client, sys, time
host, port = sys.argv[1].split(":")
end = time.time() + 60 * float(sys.argv[2]) + 5
keep = None
n = 0
while time.time() < end:
    # A keep-alive connection the server closes after 5 requests, and a
    # one-shot connection every third round.
    if keep is None:
        keep = http.client.HTTPConnection(host, int(port))
    try:
        keep.request("GET", "/k")
        r = keep.getresponse(); r.read()
        if r.getheader("Connection", "").lower() == "close":
            keep.close(); keep = None
    except Exception:
        keep = None
    if n % 3 == 0:
        c = http.client.HTTPConnection(host, int(port))
        c.request("GET", "/once", headers={"Connection": "close"})
        c.getresponse().read(); c.close()
    n += 1
    time.sleep(0.025)
print(n, "rounds")
PY
pids+=($!)

rss() { awk '/VmRSS/ {print $2}' "/proc/$watcher/status"; }
echo "minute  VmRSS_KiB  records"
first=
for m in $(seq "$minutes"); do
    sleep 60
    r=$(rss)
    [ -n "$first" ] || first=$r
    printf '%6d  %9d  %7d\n' "$m" "$r" "$(wc -l <"$work/records.jsonl")"
done
awk -v a="$first" -v b="$r" 'BEGIN { printf "RSS at minute %d / at minute 1: %.2f\n", '"$minutes"', b / a }'
kill -INT "$watcher"; wait "$watcher" || true
echo "records: $(wc -l <"$work/records.jsonl") (last line is the summary); files in $work"
