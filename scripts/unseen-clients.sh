#!/usr/bin/env bash
# Holds `conntrace replay` to tshark on captures it has never seen: makes fresh
# loopback captures of wget, python requests and urllib, node fetch, java
# HttpClient, curl, nghttp and h2load against nginx (keep-alive, the
# keepalive_requests and keepalive_timeout limits, h2c, TLS, IPv6) into a
# temporary folder, then runs the tshark cross-check on them
# (`CONNTRACE_EXTRA_CAPTURES=DIR cargo test --test integration tshark_crosscheck::`) and
# prints one line per capture: file, streams ours/tshark, agreement; then the
# HTTP cross-check (requests per stream, TLS hellos) on the same captures.
#
#   sudo scripts/unseen-clients.sh
#
# Run as root (tcpdump on lo). The captures are kept (the folder is printed)
# for a closer look at any disagreement. Exit status: that of the cross-check.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d /tmp/conntrace-unseen.XXXXXX)
EXTRA_TOOLS="wget node java h2load cargo"
# shellcheck source=lib/loopback.sh
source "$ROOT/scripts/lib/loopback.sh"

U6=http://[::1]:$PORT
R=http://127.0.0.1:$REQS_PORT
I=http://127.0.0.1:$IDLE_PORT
H=http://127.0.0.1:$H2C_PORT
T=https://127.0.0.1:$TLS_PORT

cat >"$WORK/Client.java" <<'EOF'
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.cert.X509Certificate;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509TrustManager;

// Client VERSION URL...: GETs each URL in turn with one java.net.http.HttpClient.
public class Client {
    public static void main(String[] args) throws Exception {
        TrustManager trustAll = new X509TrustManager() {
            public void checkClientTrusted(X509Certificate[] c, String a) {}
            public void checkServerTrusted(X509Certificate[] c, String a) {}
            public X509Certificate[] getAcceptedIssuers() { return new X509Certificate[0]; }
        };
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, new TrustManager[] {trustAll}, null);
        HttpClient client = HttpClient.newBuilder()
                .version(args[0].equals("h2") ? HttpClient.Version.HTTP_2 : HttpClient.Version.HTTP_1_1)
                .sslContext(tls)
                .build();
        for (int i = 1; i < args.length; i++) {
            HttpResponse<String> r = client.send(
                    HttpRequest.newBuilder(URI.create(args[i])).build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) throw new IllegalStateException(args[i] + ": " + r.statusCode());
        }
    }
}
EOF

# GETs each URL in turn with node's global fetch (undici), reading every body;
# FETCH_PAUSE_MS waits between requests.
NODE_FETCH='
const pause = Number(process.env.FETCH_PAUSE_MS || 0);
(async () => {
  for (const [i, url] of process.argv.slice(1).entries()) {
    if (i && pause) await new Promise((r) => setTimeout(r, pause));
    const res = await fetch(url);
    await res.text();
    if (res.status !== 200) throw new Error(url + ": " + res.status);
  }
})();'

scenario() { # NAME PORTS -- COMMAND...
    local name=$1 ports=$2
    shift 2
    capture "$name.pcap" lo "$ports"
    "$@" >/dev/null 2>"$WORK/client.err" || { cat "$WORK/client.err" >&2; die "$name: the client failed"; }
    finish
}

echo "captures in $OUT"
scenario wget-keepalive "$PORT" wget -q -O /dev/null "$U/a.txt" "$U/big.txt" "$U/b.txt"
scenario wget-keepalive-requests "$REQS_PORT" wget -q -O /dev/null \
    "$R/a.txt" "$R/b.txt" "$R/c.txt" "$R/a.txt" "$R/b.txt" "$R/c.txt" "$R/a.txt"
scenario wget-ipv6 "$PORT" wget -q -O /dev/null "$U6/a.txt" "$U6/b.txt"
scenario wget-tls "$TLS_PORT" wget -q -O /dev/null --no-check-certificate "$T/a.txt" "$T/b.txt"

scenario python-requests-session "$PORT" python3 -c '
import sys, requests
with requests.Session() as s:
    for p in ("/a.txt", "/big.txt", "/b.txt"):
        s.get(sys.argv[1] + p).raise_for_status()' "$U"
scenario python-requests-idle-timeout "$IDLE_PORT" python3 -c '
import sys, time, requests
with requests.Session() as s:
    for i, p in enumerate(("/a.txt", "/b.txt")):
        if i:
            time.sleep(1.5)
        s.get(sys.argv[1] + p).raise_for_status()' "$I"
scenario python-urllib "$PORT" python3 -c '
import sys, urllib.request
for p in ("/a.txt", "/b.txt", "/c.txt"):
    with urllib.request.urlopen(sys.argv[1] + p) as r:
        r.read()' "$U"
scenario python-urllib-ipv6 "$PORT" python3 -c '
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/a.txt") as r:
    r.read()' "$U6"

scenario node-fetch "$PORT" node -e "$NODE_FETCH" "$U/a.txt" "$U/big.txt" "$U/b.txt"
scenario node-fetch-keepalive-requests "$REQS_PORT" node -e "$NODE_FETCH" \
    "$R/a.txt" "$R/b.txt" "$R/c.txt" "$R/a.txt" "$R/b.txt"
FETCH_PAUSE_MS=1500 scenario node-fetch-idle-timeout "$IDLE_PORT" node -e "$NODE_FETCH" "$I/a.txt" "$I/b.txt"
scenario node-fetch-ipv6 "$PORT" node -e "$NODE_FETCH" "$U6/a.txt" "$U6/b.txt"
NODE_TLS_REJECT_UNAUTHORIZED=0 scenario node-fetch-tls "$TLS_PORT" node -e "$NODE_FETCH" "$T/a.txt" "$T/b.txt"

scenario java-httpclient "$PORT" java "$WORK/Client.java" http1 "$U/a.txt" "$U/big.txt" "$U/b.txt"
scenario java-httpclient-tls-h2 "$TLS_PORT" java -Djdk.internal.httpclient.disableHostnameVerification=true \
    "$WORK/Client.java" h2 "$T/a.txt" "$T/b.txt" "$T/c.txt"

scenario curl-parallel "$PORT" curl -s -Z --parallel-max 3 -o /dev/null -o /dev/null -o /dev/null \
    "$U/a.txt" "$U/b.txt" "$U/c.txt"
scenario curl-h2c-prior-knowledge "$H2C_PORT" curl -s --http2-prior-knowledge "$H/a.txt"
scenario curl-tls-http1 "$TLS_PORT" curl -sk --http1.1 --resolve "conntrace.test:$TLS_PORT:127.0.0.1" \
    "https://conntrace.test:$TLS_PORT/a.txt" "https://conntrace.test:$TLS_PORT/b.txt"
scenario curl-ipv6-close "$PORT" curl -s -g -H 'Connection: close' "$U6/a.txt" "$U6/b.txt"
scenario nghttp-h2c "$H2C_PORT" nghttp -n "$H/a.txt" "$H/big.txt" "$H/b.txt"
scenario h2load-h2c "$H2C_PORT" h2load -n 6 -c 2 -m 3 "$H/a.txt"

cd "$ROOT"
log=$OUT/crosscheck.log
# Build, and pin the binary under test with a copy: with a target directory
# shared between checkouts, target/debug/conntrace is whichever built last.
cargo build --quiet
cp "${CARGO_TARGET_DIR:-$ROOT/target}/debug/conntrace" "$WORK/conntrace"
status=0
CONNTRACE_BIN=$WORK/conntrace CONNTRACE_EXTRA_CAPTURES=$OUT cargo test --test integration tshark_crosscheck::extra_captures_agree_with_tshark \
    -- --exact --nocapture >"$log" 2>&1 || status=$?
echo
sed -n '/^cross-check of the captures/,/^$/p' "$log"
if [[ $status -ne 0 ]]; then
    grep -E '^(extra/|thread|[0-9]+ disagreement)' "$log" || tail -20 "$log"
fi
# The same captures, request by request (HTTP/1 and HTTP/2) and TLS hello by hello.
http_log=$OUT/http-crosscheck.log
CONNTRACE_BIN=$WORK/conntrace CONNTRACE_EXTRA_CAPTURES=$OUT cargo test --test integration http_crosscheck:: \
    -- --nocapture >"$http_log" 2>&1 || status=$?
echo
echo "HTTP requests per stream against tshark:"
grep -E "^$OUT/" "$http_log" | sed "s|^$OUT/||" || true
grep -E "^test result" "$http_log" || tail -20 "$http_log"
echo "log: $log, $http_log"
exit "$status"
