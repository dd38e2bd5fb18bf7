#!/usr/bin/env bash
# Holds `conntrace audit -- CMD` to tcpdump and tshark on real clients:
# each client below runs under `conntrace audit -f json` against nginx on
# loopback while tcpdump captures the same port and a neighbour (python3,
# a new connection every 20 ms, counting its own) talks to the same server
# and port. For each client it prints the connections and requests audit
# reported, tshark's count of the same on the tcpdump capture restricted to
# the client ports audit named, and the streams tshark saw that audit did not
# against the neighbour's own count of its connections. Every column pair
# must agree; the exit status is 1 if one does not.
#
#   sudo scripts/audit-vs-tshark.sh
#
# Run as root. Clients: curl, wget, python3 urllib and requests, node fetch,
# java HttpClient (Go is used when `go` is installed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d /tmp/conntrace-audit-check.XXXXXX)
EXTRA_TOOLS="wget node java cargo"
# shellcheck source=lib/loopback.sh
source "$ROOT/scripts/lib/loopback.sh"

cd "$ROOT"
cargo build --quiet
BIN=$WORK/conntrace
cp "${CARGO_TARGET_DIR:-$ROOT/target}/debug/conntrace" "$BIN"

cat >"$WORK/Client.java" <<'JAVA'
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
public class Client {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        for (String url : args) {
            HttpResponse<String> r = client.send(HttpRequest.newBuilder(URI.create(url)).build(),
                    HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) throw new IllegalStateException(url + ": " + r.statusCode());
        }
    }
}
JAVA
NODE_FETCH='
(async () => {
  for (const url of process.argv.slice(1)) {
    const res = await fetch(url);
    await res.text();
    if (res.status !== 200) throw new Error(url + ": " + res.status);
  }
})();'

status=0
printf '%-26s %-17s %-17s %-15s\n' client "conns audit/tshark" "reqs audit/tshark" "other: ts/own"
check() { # NAME -- COMMAND...
    local name=$1
    shift
    capture "$name.pcap" lo "$PORT"
    python3 - "$PORT" "$WORK/neighbour.count" <<'PY' &
import socket, sys, time, os
port, out = int(sys.argv[1]), sys.argv[2]
n = 0
stop = out + ".stop"
while not os.path.exists(stop):
    s = socket.create_connection(("127.0.0.1", port)); n += 1
    s.sendall(b"GET /b.txt HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    time.sleep(0.02)
open(out, "w").write(str(n))
PY
    local neighbour=$!
    sleep 0.2
    "$BIN" audit -f json -o "$OUT/$name.json" -- "$@" >/dev/null 2>"$WORK/audit.err" ||
        { cat "$WORK/audit.err" >&2; die "$name: audit or the client failed"; }
    touch "$WORK/neighbour.count.stop"
    wait "$neighbour"
    rm -f "$WORK/neighbour.count.stop"
    finish
    python3 - "$OUT/$name.json" "$OUT/$name.pcap" "$(cat "$WORK/neighbour.count")" "$name" <<'PY' || status=1
import json, subprocess, sys
report, pcap, neighbour, name = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ports = {c["client"].rsplit(":", 1)[1] for c in report["connections"]}
def tshark(display, field):
    out = subprocess.run(["tshark", "-r", pcap, "-Y", display, "-T", "fields", "-e", field],
                         capture_output=True, text=True, check=True).stdout.split()
    return out
syn_ports = tshark("tcp.flags.syn == 1 && tcp.flags.ack == 0", "tcp.srcport")
req_ports = tshark("http.request", "tcp.srcport")
conns = (report["summary"]["connections"], len([p for p in set(syn_ports) if p in ports]))
reqs = (report["summary"]["requests"], len([p for p in req_ports if p in ports]))
other = (len(set(syn_ports) - ports), neighbour)
ok = conns[0] == conns[1] and reqs[0] == reqs[1] and other[0] == other[1] and conns[0] > 0
print(f"{name:<26} {conns[0]:>4}/{conns[1]:<12} {reqs[0]:>4}/{reqs[1]:<12} {other[0]:>4}/{other[1]:<10} {'ok' if ok else 'DISAGREE'}")
sys.exit(0 if ok else 1)
PY
}

check curl-5-urls curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
    "$U/a.txt" "$U/b.txt" "$U/c.txt" "$U/a.txt" "$U/b.txt"
check curl-children sh -c "curl -s -o /dev/null $U/a.txt; curl -s -o /dev/null $U/b.txt $U/c.txt"
check wget wget -q -O /dev/null "$U/a.txt" "$U/big.txt" "$U/b.txt"
check python-urllib-5 python3 -c '
import sys, urllib.request
for p in ("/a.txt", "/b.txt", "/c.txt", "/a.txt", "/b.txt"):
    with urllib.request.urlopen(sys.argv[1] + p) as r:
        r.read()' "$U"
check python-requests python3 -c '
import sys, requests
with requests.Session() as s:
    for p in ("/a.txt", "/big.txt", "/b.txt"):
        s.get(sys.argv[1] + p).raise_for_status()' "$U"
check node-fetch node -e "$NODE_FETCH" "$U/a.txt" "$U/big.txt" "$U/b.txt"
check java-httpclient java "$WORK/Client.java" "$U/a.txt" "$U/big.txt" "$U/b.txt"
if command -v go >/dev/null; then
    mkdir -p "$WORK/goclient"
    cat >"$WORK/goclient/main.go" <<'GO'
package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	for _, url := range os.Args[1:] {
		r, err := http.Get(url)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
}
GO
    (cd "$WORK/goclient" && go mod init goclient >/dev/null 2>&1 && go build -o client .)
    check go-net-http "$WORK/goclient/client" "$U/a.txt" "$U/big.txt" "$U/b.txt"
else
    echo "go: not installed (apt-get install golang-go), not checked"
fi
echo "reports and captures in $OUT"
exit $status
