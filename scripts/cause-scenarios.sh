#!/usr/bin/env bash
# Makes the real-client cause scenarios of fixtures/causes/: each one a client
# (python requests, http.client, httpx and aiohttp, Go net/http, node http and
# fetch, curl) built to open
# its new connections for one known reason, against nginx or a small python
# server on loopback, captured by tcpdump. Beside each capture NAME.pcap goes
# NAME.truth.json: every TCP connection the client opened, named by its local
# port as the client itself read it, with the cause the scenario built and the
# client's own view confirmed (urllib3's log, httptrace, socket events,
# exceptions, curl's num_connects). A client whose run does not go as built
# fails the script instead of writing a truth file. The causes are never read
# from the capture.
#
#   sudo scripts/cause-scenarios.sh                  # every scenario into fixtures/causes/
#   sudo scripts/cause-scenarios.sh go-pool-limit    # only the named ones
#   CAUSES_OUT=/tmp/x sudo scripts/cause-scenarios.sh   # fresh captures, judged
#
# With CAUSES_OUT, the script then judges the fresh scenarios as the test suite
# judges fixtures/causes/ (`CONNTRACE_EXTRA_CAUSES=DIR cargo test --test
# integration causes:: -- --ignored`) and prints the tally per client.
# Needs root, nginx, tcpdump, python3 with requests, httpx, h2 and aiohttp, go,
# node and curl; takes
# about a minute.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${CAUSES_OUT:-$ROOT/fixtures/causes}
mkdir -p "$OUT"
EXTRA_TOOLS="go node"
# shellcheck source=lib/loopback.sh
source "$ROOT/scripts/lib/loopback.sh"

CLIENTS=$ROOT/scripts/cause-clients
SELECTED=("$@")
wanted() {
    [[ ${#SELECTED[@]} -eq 0 ]] && return 0
    local s
    for s in "${SELECTED[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

# The python servers of scripts/cause-clients/server.py, one port each.
read -r SLOW_PORT CLOSE_PORT BIG_PORT RESET_PORT GOAWAY_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
SERVER_PIDS=()
stop_servers() {
    local p
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    cleanup
}
trap stop_servers EXIT
for mode_port in "slow $SLOW_PORT" "close $CLOSE_PORT" "big $BIG_PORT" "reset $RESET_PORT" "goaway $GOAWAY_PORT"; do
    # shellcheck disable=SC2086
    python3 "$CLIENTS/server.py" $mode_port &
    SERVER_PIDS+=($!)
done
for p in $SLOW_PORT $CLOSE_PORT $BIG_PORT $RESET_PORT $GOAWAY_PORT; do wait_listening "$p"; done

(cd "$CLIENTS/go" && GOFLAGS=-mod=mod GOCACHE=$WORK/gocache go build -o "$WORK/goclients" .) ||
    die "the Go clients did not build"

I=http://127.0.0.1:$IDLE_PORT
R=http://127.0.0.1:$REQS_PORT
SLOW=http://127.0.0.1:$SLOW_PORT
CLOSE=http://127.0.0.1:$CLOSE_PORT
BIG=http://127.0.0.1:$BIG_PORT
RESET=http://127.0.0.1:$RESET_PORT
GOAWAY=http://127.0.0.1:$GOAWAY_PORT

# scenario NAME PORT COMMAND...: captures PORT while COMMAND writes the truth
# file ($TRUTH), then moves both into $OUT.
scenario() {
    local name=$1 port=$2
    shift 2
    wanted "$name" || return 0
    TRUTH=$WORK/$name.truth.json
    capture "$name.pcap" lo "$port"
    "$@" 2>"$WORK/client.err" || { cat "$WORK/client.err" >&2; die "$name: the client did not run as built"; }
    finish
    [[ -s $TRUTH ]] || die "$name: the client wrote no truth file"
    mv "$TRUTH" "$OUT/$name.truth.json"
}
py() { python3 "$CLIENTS/pyclients.py" "$1" "$TRUTH" "$2"; }
pya() { python3 "$CLIENTS/pyasync.py" "$1" "$TRUTH" "$2"; }
gocl() { "$WORK/goclients" "$1" "$TRUTH" "$2"; }
nodecl() { node "$CLIENTS/$1.js" "$TRUTH" "$2"; }
nodefetch() { node "$CLIENTS/node-fetch.js" "$1" "$TRUTH" "$2"; }

# curl_scenario NAME PORT CODE CLIENT SERVER TRUTH_FROM NOTE -- CURL ARGS...:
# curl's own `%{local_port} %{num_connects}` per transfer gives the ports and
# which transfers opened a connection; every connection after the first has
# CODE.
curl_scenario() {
    local name=$1 port=$2 code=$3 client=$4 server=$5 truth_from=$6 note=$7
    shift 8
    curl_run() {
        local args=() a
        for a in "$@"; do # every body to /dev/null, not only the first
            args+=("$a")
            [[ $a == http://* ]] && args+=(--output /dev/null)
        done
        curl --silent --show-error --write-out '%{local_port} %{num_connects}\n' "${args[@]}" |
            SCENARIO=$name CLIENT="$(curl --version | head -1 | cut -d' ' -f1-2), $client" SERVER=$server \
                TRUTH_FROM=$truth_from CODE=$code NOTE=$note python3 "$CLIENTS/pyclients.py" curl-truth "$TRUTH" -
    }
    scenario "$name" "$port" curl_run "$@"
}

echo "scenarios into $OUT"
scenario python-no-pool "$PORT" py python-no-pool "$U"
scenario python-pool-limit "$SLOW_PORT" py python-pool-limit "$SLOW"
scenario python-unread-body "$BIG_PORT" py python-unread-body "$BIG"
scenario python-server-idle-timeout "$IDLE_PORT" py python-server-idle-timeout "$I"
scenario python-server-request-limit "$REQS_PORT" py python-server-request-limit "$R"
scenario python-client-close "$PORT" py python-client-close "$U"
scenario python-server-close "$CLOSE_PORT" py python-server-close "$CLOSE"
scenario python-reset "$RESET_PORT" py python-reset "$RESET"
scenario python-idle-available "$PORT" py python-idle-available "$U"
scenario python-concurrency "$SLOW_PORT" py python-concurrency "$SLOW"
scenario python-slow-handshake "$SLOW_PORT" py python-slow-handshake "$SLOW"
scenario python-stale-connection "$IDLE_PORT" py python-stale-connection "$I"

scenario httpx-no-client "$PORT" pya httpx-no-client "$U"
scenario httpx-keepalive-limit "$SLOW_PORT" pya httpx-keepalive-limit "$SLOW"
scenario httpx-client-idle-timeout "$PORT" pya httpx-client-idle-timeout "$U"
scenario httpx-server-request-limit "$REQS_PORT" pya httpx-server-request-limit "$R"
scenario httpx-h2-goaway "$GOAWAY_PORT" pya httpx-h2-goaway "$GOAWAY"
scenario aiohttp-force-close "$PORT" pya aiohttp-force-close "$U"
scenario aiohttp-client-idle-timeout "$PORT" pya aiohttp-client-idle-timeout "$U"
scenario aiohttp-server-idle-timeout "$IDLE_PORT" pya aiohttp-server-idle-timeout "$I"
scenario aiohttp-concurrency "$SLOW_PORT" pya aiohttp-concurrency "$SLOW"

scenario go-pool-limit "$SLOW_PORT" gocl go-pool-limit "$SLOW"
scenario go-raised-pool "$SLOW_PORT" gocl go-raised-pool "$SLOW"
scenario go-dial-race "$SLOW_PORT" gocl go-dial-race "$SLOW"
scenario go-unread-body "$BIG_PORT" gocl go-unread-body "$BIG"
scenario go-client-idle-timeout "$PORT" gocl go-client-idle-timeout "$U"

scenario node-client-idle-timeout "$PORT" nodecl node-idle-timeout "$U"
scenario node-fetch-client-idle-timeout "$PORT" nodefetch node-fetch-client-idle-timeout "$U"
scenario node-fetch-server-idle-timeout "$IDLE_PORT" nodefetch node-fetch-server-idle-timeout "$I"

curl_scenario curl-http10 "$PORT" http10 "--http1.0, three URLs" "nginx keepalive_timeout 30s" \
    "curl's --write-out '%{local_port} %{num_connects}' per transfer; HTTP/1.0 without Connection: keep-alive \
is not persistent" "HTTP/1.0 request without keep-alive: the previous connection ended after its response" -- \
    --http1.0 "$U/a.txt" "$U/b.txt" "$U/c.txt"
curl_scenario curl-close-every-request "$PORT" no_pool "-H 'Connection: close', three URLs" \
    "nginx keepalive_timeout 30s" "curl's --write-out '%{local_port} %{num_connects}' per transfer; the request \
header the script set on every request" "the previous request asked with its first and only request to close" -- \
    -H 'Connection: close' "$U/a.txt" "$U/b.txt" "$U/c.txt"
curl_scenario curl-server-request-limit "$REQS_PORT" server_request_limit "seven URLs" \
    "nginx keepalive_requests 3" "curl's --write-out '%{local_port} %{num_connects}' per transfer; the server's \
configured limit" "the server closed the previous connection after its 3rd response" -- \
    "$R/a.txt" "$R/b.txt" "$R/c.txt" "$R/a.txt" "$R/b.txt" "$R/c.txt" "$R/a.txt"

if [[ -n ${CAUSES_OUT:-} ]]; then
    cd "$ROOT"
    status=0
    CONNTRACE_EXTRA_CAUSES=$OUT cargo test --quiet --test integration \
        causes::fresh_scenarios_get_the_causes_they_were_built_with -- --ignored --nocapture \
        >"$OUT/judge.log" 2>&1 || status=$?
    grep -E '^(/|  )' "$OUT/judge.log" || true
    [[ $status -eq 0 ]] || { tail -20 "$OUT/judge.log"; die "the fresh scenarios were judged wrong"; }
fi
