#!/usr/bin/env bash
# Replay speed and peak memory beside tcpdump, measured side by side in one
# run, on the project's bench capture and on synthetic ones, then the targets
# checked as ratios (nothing here is a timed test: a busy machine slows every
# command of a round alike).
#
#   scripts/bench-replay.sh [CAPTURE]
#
# Captures (BENCH_ONLY=nginx,short,syn,keepalive chooses; all by default),
# kept in $BENCH_DIR (default /tmp/conntrace-bench) and made when missing:
#   nginx      CAPTURE, or large.pcap recorded (as root): nginx on loopback,
#              ApacheBench making a new connection per request and h2load
#              keeping connections alive, all under tcpdump.
#   short      200,000 connections of one HTTP/1.1 request each (BENCH_SHORT_CONNS)
#   syn        1,000,000 unanswered SYNs (BENCH_SYNS)
#   keepalive  200 connections (BENCH_KA_CONNS) of 1,000 requests each
#              (BENCH_KA_REQUESTS)
# The synthetic ones come from scripts/synth-capture.py (deterministic).
#
# Per capture, in interleaved rounds (every command once per round, the
# starting command rotating), BENCH_RUNS rounds (default 5):
#   conntrace replay -f summary, --no-http -f summary, -f jsonl (when the
#   build has it), -f json; tcpdump -r F -w /dev/null; tshark -q -z conv,tcp
#   on the nginx capture when BENCH_TSHARK=1 (it is slow).
# Reports go to /dev/null. Wall and CPU (user+sys) are the best of the rounds,
# each taken separately; peak memory is the largest of the rounds, as
# `/usr/bin/time -f %M` gives it. The binary is $CONNTRACE_BIN, else
# target/release/conntrace (built when missing).
#
# Targets:
#   -f summary: wall <= 1.0x and CPU <= 1.5x tcpdump's, on every capture;
#   -f summary and -f jsonl: peak <= 64 MiB on the short and syn captures;
#   -f json: peak above the base (the peak replaying a 10-connection
#   capture) <= 200 B per connection + 100 B per request; the target is for
#   the short capture, the others are printed alike (the nginx capture with
#   the counts conntrace reports, the synthetic ones with those written).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${BENCH_DIR:-/tmp/conntrace-bench}
mkdir -p "$dir"
runs=${BENCH_RUNS:-5}
only=${BENCH_ONLY:-nginx,short,syn,keepalive}
bin=${CONNTRACE_BIN:-target/release/conntrace}
nginx_cap=${1:-$dir/large.pcap}
short_n=${BENCH_SHORT_CONNS:-200000}
syn_n=${BENCH_SYNS:-1000000}
ka_m=${BENCH_KA_CONNS:-200}
ka_k=${BENCH_KA_REQUESTS:-1000}
mem_limit_mib=64

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need /usr/bin/time time
need tcpdump tcpdump
need python3 python3
[ "${BENCH_TSHARK:-0}" = 1 ] && need tshark tshark

for c in ${only//,/ }; do
  case $c in nginx | short | syn | keepalive) ;;
    *) echo "bench: BENCH_ONLY: unknown capture '$c' (nginx, short, syn, keepalive)" >&2; exit 1 ;;
  esac
done
want() { [[ ",$only," == *",$1,"* ]]; }

# --- the nginx capture -------------------------------------------------------

# tcpdump's counts from the recording, shown with the results: a capture with
# kernel drops has gaps, and is a different benchmark input.
nginx_log=$dir/$(basename "$nginx_cap").tcpdump.log
if want nginx && [ ! -s "$nginx_cap" ]; then
  need ab apache2-utils
  need h2load nghttp2-client
  need nginx nginx-light
  port=18480
  www=$dir/www
  mkdir -p "$www"
  head -c 4096 /dev/urandom | base64 -w 0 > "$www/small.txt"
  head -c 16384 /dev/urandom | base64 -w 0 > "$www/medium.txt"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100;
  server { listen 127.0.0.1:$port; root $www; }
}
CONF
  # Server and clients share one core, tcpdump has the other: a capture
  # without kernel drops is a fair benchmark input.
  taskset -c 0 nginx -c "$dir/nginx.conf"
  trap 'kill $(cat "$dir/nginx.pid") 2>/dev/null || true' EXIT
  taskset -c 1 tcpdump -i lo -B 1048576 -s 0 -w "$nginx_cap" "tcp port $port" 2> "$dir/tcpdump.log" &
  tcpdump_pid=$!
  until grep -q "listening on" "$dir/tcpdump.log"; do sleep 0.1; done
  taskset -c 0 ab -q -n 60000 -c 16 "http://127.0.0.1:$port/small.txt" > "$dir/ab.log"
  taskset -c 0 h2load --h1 -n 200000 -c 32 "http://127.0.0.1:$port/medium.txt" > "$dir/h2load.log"
  # tcpdump can be far behind in its 1 GiB kernel buffer, and stops without
  # writing what is still there: wait until the file has stopped growing.
  prev=-1
  while size=$(stat -c %s "$nginx_cap"); [ "$size" != "$prev" ]; do prev=$size; sleep 1; done
  kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" || true
  grep -E "captured|dropped" "$dir/tcpdump.log" >&2 || true
  { cat "$dir/tcpdump.log"
    grep -E "^(Complete|Failed) requests" "$dir/ab.log" | sed 's/^/ab: /'
    grep -E "^requests:" "$dir/h2load.log" | sed 's/^/h2load: /'
  } > "$nginx_log" || true
  kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  trap - EXIT
fi

# --- synthetic captures --------------------------------------------------------

synth() { # path kind args...
  local path=$1; shift
  [ -s "$path" ] || python3 "$root/scripts/synth-capture.py" "$1" "$path" "${@:2}" >&2
}
short_cap=$dir/synth-short-$short_n.pcap
syn_cap=$dir/synth-syn-$syn_n.pcap
ka_cap=$dir/synth-keepalive-${ka_m}x$ka_k.pcap
tiny_cap=$dir/synth-short-10.pcap
synth "$tiny_cap" short -n 10
want short && synth "$short_cap" short -n "$short_n"
want syn && synth "$syn_cap" syn -n "$syn_n"
want keepalive && synth "$ka_cap" keepalive -m "$ka_m" -k "$ka_k"

# --- the binary ------------------------------------------------------------------

if [ ! -x "$bin" ]; then
  if [ -n "${CONNTRACE_BIN:-}" ]; then echo "bench: $bin is not executable" >&2; exit 1; fi
  cargo build --release --locked
fi

# -f jsonl is newer than some builds: clap rejects the value (exit status 2).
jsonl=1
if ! "$bin" replay -f jsonl "$tiny_cap" > /dev/null 2> "$dir/jsonl.err"; then
  if grep -q "invalid value 'jsonl'" "$dir/jsonl.err"; then
    jsonl=0
  else
    echo "bench: -f jsonl fails on a 10-connection capture: $(tail -1 "$dir/jsonl.err")" >&2
  fi
fi

# --- measuring -------------------------------------------------------------------

# One run: wall time from just before the spawn to the exit, user+sys from
# wait4 (which counts /usr/bin/time and the command under it, to the
# microsecond; /usr/bin/time prints only hundredths), peak RSS as
# /usr/bin/time -f %M reports it for the command alone (measuring it from here
# would count the forking Python's own memory). Prints "STATUS WALL CPU KIB".
run_py='
import os, sys, time
mem, err, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
actions = [(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
           (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
argv = ["/usr/bin/time", "-f", "%M", "-o", mem] + argv
t0 = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
lines = open(mem).read().split()
kib = lines[-1] if lines else "0"
print(os.waitstatus_to_exitcode(status), "%.6f" % wall, "%.6f" % (ru.ru_utime + ru.ru_stime), kib)
'
run1() { python3 -c "$run_py" "$dir/mem.out" "$dir/err.out" "$@"; }

argv_for() { # label capture -> argv
  case $1 in
    "conntrace replay -f summary") argv=("$bin" replay -f summary "$2") ;;
    "conntrace replay --no-http -f summary") argv=("$bin" replay --no-http -f summary "$2") ;;
    "conntrace replay -f jsonl") argv=("$bin" replay -f jsonl "$2") ;;
    "conntrace replay -f json") argv=("$bin" replay -f json "$2") ;;
    "tcpdump -r F -w /dev/null") argv=(tcpdump -r "$2" -w /dev/null) ;;
    "tshark -q -z conv,tcp") argv=(tshark -r "$2" -q -z conv,tcp) ;;
  esac
}

# Interleaved rounds over the labels; one row per run to $dir/runs.tsv:
# label, status, wall, cpu, kib. A command that fails is reported once and
# left out of the later rounds.
rounds() { # capture labels...
  local cap=$1; shift
  local labels=("$@") n=$# r i label status wall cpu kib
  declare -A failed=()
  : > "$dir/runs.tsv"
  cat "$cap" > /dev/null # the page cache, warm for every reader alike
  for ((r = 0; r < runs; r++)); do
    for ((i = 0; i < n; i++)); do
      label=${labels[(r + i) % n]}
      [ -n "${failed[$label]:-}" ] && continue
      argv_for "$label" "$cap"
      read -r status wall cpu kib < <(run1 "${argv[@]}")
      if [ "$status" != 0 ]; then
        failed[$label]=1
        echo "bench: $label failed (status $status): $(tail -1 "$dir/err.out")" >&2
        continue
      fi
      printf '%s\t%s\t%s\t%s\n' "$label" "$wall" "$cpu" "$kib" >> "$dir/runs.tsv"
    done
  done
}

# Best wall, best CPU, largest peak per label, in the labels' order.
best() { # labels...
  local label
  for label in "$@"; do
    awk -F'\t' -v l="$label" '$1 == l {
        n++; if (n == 1 || $2 < w) w = $2; if (n == 1 || $3 < c) c = $3; if ($4 > k) k = $4 }
      END { if (n) printf "%s\t%.6f\t%.6f\t%d\n", l, w, c, k }' "$dir/runs.tsv"
  done
}

# --- per capture -----------------------------------------------------------------

: > "$dir/best.tsv"   # capture, label, wall, cpu, kib
: > "$dir/counts.tsv" # capture, connections, requests (what the capture holds)
echo "conntrace: $bin ($("$bin" --version))"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start; $runs interleaved rounds"
[ "$jsonl" = 1 ] || echo "jsonl: not available in this build"

# The base of the per-connection figure: -f json on 10 connections.
rounds "$tiny_cap" "conntrace replay -f json"
base_kib=$(best "conntrace replay -f json" | cut -f4)
echo "base: peak $((base_kib / 1024)).$(((base_kib % 1024) * 10 / 1024)) MiB replaying 10 connections with -f json ($base_kib KiB)"

bench_capture() { # name path expected-connections expected-requests (empty: take conntrace's)
  local name=$1 cap=$2 exp_c=$3 exp_r=$4 size frames="" counts conns reqs
  local labels=("conntrace replay -f summary" "conntrace replay --no-http -f summary")
  [ "$jsonl" = 1 ] && labels+=("conntrace replay -f jsonl")
  labels+=("conntrace replay -f json" "tcpdump -r F -w /dev/null")
  [ "$name" = nginx ] && [ "${BENCH_TSHARK:-0}" = 1 ] && labels+=("tshark -q -z conv,tcp")

  size=$(stat -c %s "$cap")
  command -v capinfos >/dev/null &&
    frames=$(capinfos -c -M "$cap" 2>/dev/null | awk -F': *' '/Number of packets/ {print $2}')
  # What conntrace finds, from its summary (also a check of the generator).
  counts=$("$bin" replay -f summary "$cap" 2> /dev/null |
    sed -nE 's/^([0-9]+) connections, ([0-9]+) requests.*/\1 \2/p' | head -1)
  read -r conns reqs <<< "${counts:-? ?}"
  echo
  echo "== $name: $cap, $(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB, ${frames:-?} frames"
  if [ "$name" = nginx ] && [ -s "$nginx_log" ]; then
    local dropped
    dropped=$(awk '/dropped by kernel/ { print $1 }' "$nginx_log")
    if [ "${dropped:-0}" != 0 ]; then
      echo "note: recorded with $dropped packets dropped by the kernel ($nginx_log); remove $cap to record again"
    fi
  fi
  if [ -n "$exp_c" ]; then
    printf 'written: %s connections, %s requests; conntrace reports %s connections, %s requests%s\n' \
      "$exp_c" "$exp_r" "$conns" "$reqs" \
      "$([ "$conns $reqs" = "$exp_c $exp_r" ] || echo '  (MISMATCH)')"
    printf '%s\t%s\t%s\n' "$name" "$exp_c" "$exp_r" >> "$dir/counts.tsv"
  else
    echo "conntrace reports $conns connections, $reqs requests"
    if [ "$conns" != "?" ]; then printf '%s\t%s\t%s\n' "$name" "$conns" "$reqs" >> "$dir/counts.tsv"; fi
  fi

  rounds "$cap" "${labels[@]}"
  best "${labels[@]}" > "$dir/best-$name.tsv"
  awk -F'\t' -v c="$name" '{ print c "\t" $0 }' "$dir/best-$name.tsv" >> "$dir/best.tsv"

  printf '%-40s %9s %9s %9s %10s %10s\n' "command (best of $runs)" "wall s" "CPU s" "peak MiB" "wall ÷ td" "CPU ÷ td"
  awk -F'\t' '
    { l[NR] = $1; w[NR] = $2; c[NR] = $3; k[NR] = $4 }
    $1 == "tcpdump -r F -w /dev/null" { tw = $2; tc = $3 }
    END { for (i = 1; i <= NR; i++) {
      if (tw > 0) printf "%-40s %9.3f %9.3f %9.1f %10.2f %10.2f\n", l[i], w[i], c[i], k[i] / 1024, w[i] / tw, c[i] / tc
      else printf "%-40s %9.3f %9.3f %9.1f %10s %10s\n", l[i], w[i], c[i], k[i] / 1024, "n/a", "n/a" } }' \
    "$dir/best-$name.tsv"
}

want nginx && bench_capture nginx "$nginx_cap" "" ""
want short && bench_capture short "$short_cap" "$short_n" "$short_n"
want syn && bench_capture syn "$syn_cap" "$syn_n" 0
want keepalive && bench_capture keepalive "$ka_cap" "$ka_m" "$((ka_m * ka_k))"

# --- targets -----------------------------------------------------------------------

echo
echo "== targets"
awk -F'\t' -v only="$only" -v jsonl="$jsonl" -v limit="$mem_limit_mib" -v base="$base_kib" '
  FILENAME == ARGV[1] { conns[$1] = $2; reqs[$1] = $3; next }
  { w[$1, $2] = $3; c[$1, $2] = $4; k[$1, $2] = $5; seen[$1, $2] = 1 }
  function verdict(ok) { if (ok) { pass++; return "PASS" } fail++; return "FAIL" }
  function line(ok, cap, what, measured) { printf "%s  %-10s %-52s %s\n", verdict(ok), cap, what, measured }
  function missing(cap, what, why) { printf "n/a   %-10s %-52s %s\n", cap, what, why }
  END {
    S = "conntrace replay -f summary"; J = "conntrace replay -f json"; L = "conntrace replay -f jsonl"
    T = "tcpdump -r F -w /dev/null"
    n = split(only, caps, ",")
    for (i = 1; i <= n; i++) {
      cap = caps[i]
      if (seen[cap, S] && seen[cap, T]) {
        line(w[cap, S] <= 1.0 * w[cap, T], cap, "-f summary wall <= 1.0x tcpdump", sprintf("%.2fx", w[cap, S] / w[cap, T]))
        line(c[cap, S] <= 1.5 * c[cap, T], cap, "-f summary CPU <= 1.5x tcpdump", sprintf("%.2fx", c[cap, S] / c[cap, T]))
      } else missing(cap, "-f summary against tcpdump", "a command failed")
    }
    for (i = 1; i <= n; i++) {
      cap = caps[i]
      if (cap != "short" && cap != "syn") continue
      if (seen[cap, S]) line(k[cap, S] <= limit * 1024, cap, "-f summary peak <= " limit " MiB", sprintf("%.1f MiB", k[cap, S] / 1024))
      else missing(cap, "-f summary peak <= " limit " MiB", "failed")
      if (jsonl != 1) missing(cap, "-f jsonl peak <= " limit " MiB", "jsonl: not available in this build")
      else if (seen[cap, L]) line(k[cap, L] <= limit * 1024, cap, "-f jsonl peak <= " limit " MiB", sprintf("%.1f MiB", k[cap, L] / 1024))
      else missing(cap, "-f jsonl peak <= " limit " MiB", "failed")
    }
    for (i = 1; i <= n; i++) {
      cap = caps[i]
      if (!seen[cap, J] || !(cap in conns) || conns[cap] == 0) continue
      above = (k[cap, J] - base) * 1024
      budget = 200 * conns[cap] + 100 * reqs[cap]
      line(above <= budget, cap, sprintf("-f json (peak - base) / connections <= %.0f B", budget / conns[cap]),
        sprintf("%.0f B ((%.1f - %.1f MiB) / %d connections; %d requests)",
          above / conns[cap], k[cap, J] / 1024, base / 1024, conns[cap], reqs[cap]))
    }
    printf "%d passed, %d failed (budget: 200 B per connection + 100 B per request)\n", pass, fail
  }' "$dir/counts.tsv" "$dir/best.tsv"
