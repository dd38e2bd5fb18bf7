# Shared by fixtures/make.sh and scripts/unseen-clients.sh (sourced, not run):
# checks the tools, starts nginx on loopback with a temporary configuration
# and content on seven free ports, and provides `capture NAME IFACE "PORTS"`
# and `finish`, which capture one scenario with tcpdump (dumpcap for .pcapng)
# and move the file into $OUT. The caller sets OUT (and EXTRA_TOOLS, a list of
# further commands it needs) before sourcing, and `set -euo pipefail`.
#
# nginx: $PORT is HTTP/1.1 with keep-alive on 127.0.0.1 and [::1] (with SSI
# under /ssi/); $H2C_PORT h2c with prior knowledge; $TLS_PORT TLS 1.2/1.3 with
# ALPN h2 and http/1.1 for conntrace.test (self-signed); $REQS_PORT
# keepalive_requests 3; $IDLE_PORT keepalive_timeout 1s. $CLOSED_PORT has no
# listener; $REUSE_PORT is free for a client to bind.

: "${OUT:?set OUT before sourcing loopback.sh}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (tcpdump needs to capture on lo)"
for tool in nginx tcpdump dumpcap curl nghttp python3 openssl ss tshark ${EXTRA_TOOLS:-}; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
python3 -c 'import requests' 2>/dev/null || die "python3 requests is not installed"

WORK=$(mktemp -d /tmp/conntrace-loopback.XXXXXX)
NGINX_PID=
CAP_PID=

cleanup() {
    if [[ -n $CAP_PID ]]; then kill -INT "$CAP_PID" 2>/dev/null || true; wait "$CAP_PID" 2>/dev/null || true; fi
    if [[ -n $NGINX_PID ]]; then kill -QUIT "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Seven distinct TCP ports, free on both 127.0.0.1 and ::1 (all bound at once
# so that none is handed out twice).
read -r PORT H2C_PORT TLS_PORT REQS_PORT IDLE_PORT CLOSED_PORT REUSE_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(7):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
# PORT: HTTP/1.1 with keep-alive, on 127.0.0.1 and [::1]; H2C_PORT: h2c with
# prior knowledge; TLS_PORT: TLS with ALPN h2 and http/1.1; REQS_PORT:
# keepalive_requests 3; IDLE_PORT: keepalive_timeout 1s; CLOSED_PORT: nothing
# listens; REUSE_PORT: the client port that port-reuse binds twice.

# ---------------------------------------------------------------- content
WWW=$WORK/www
mkdir -p "$WWW/ssi"
printf 'alpha\n' >"$WWW/a.txt"
printf 'bravo bravo\n' >"$WWW/b.txt"
printf 'charlie charlie charlie\n' >"$WWW/c.txt"
# 48 KiB of text: with `output_buffers 1 4k` and sendfile off, nginx writes it
# in 4 KiB pieces, so the response spans a dozen segments even on loopback.
python3 -c '
import sys
line = "".join(chr(33 + (i % 94)) for i in range(63)) + "\n"
sys.stdout.write(line * 768)' >"$WWW/big.txt"
# Server-side includes make the length unknown up front: nginx answers with
# Transfer-Encoding: chunked.
printf '<p>before</p>\n<!--# include file="/b.txt" -->\n<p>after</p>\n' >"$WWW/ssi/page.html"

openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=conntrace.test \
    -addext subjectAltName=DNS:conntrace.test \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# ---------------------------------------------------------------- nginx
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    types { text/plain txt; text/html html; }
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    sendfile off;
    output_buffers 1 4k;
    keepalive_timeout 30s;
    keepalive_requests 1000;
    root $WWW;
    server {
        listen 127.0.0.1:$PORT;
        listen [::1]:$PORT;
        location /ssi/ { ssi on; }
    }
    server { listen 127.0.0.1:$H2C_PORT http2; }
    server {
        listen 127.0.0.1:$TLS_PORT ssl http2;
        server_name conntrace.test;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
    }
    server { listen 127.0.0.1:$REQS_PORT; keepalive_requests 3; }
    server { listen 127.0.0.1:$IDLE_PORT; keepalive_timeout 1s; }
}
EOF

nginx -t -q -c "$WORK/nginx.conf" -g 'daemon off;' || die "nginx rejected the config"
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!

wait_listening() {
    local port=$1 i
    for i in $(seq 100); do
        if ss -Hltn "( sport = :$port )" | grep -q .; then return 0; fi
        sleep 0.05
    done
    die "nothing listens on port $port"
}
for p in $PORT $H2C_PORT $TLS_PORT $REQS_PORT $IDLE_PORT; do wait_listening "$p"; done

# ---------------------------------------------------------------- capture
# capture NAME IFACE FILTER [capture options...]: starts tcpdump (or dumpcap for
# .pcapng) and returns once it reports that it is listening.
CAP_FILE=
CAP_FILTER_PORTS=
capture() {
    local name=$1 iface=$2 ports=$3
    shift 3
    local filter="" p
    for p in $ports; do filter+="${filter:+ or }tcp port $p"; done
    CAP_FILE=$WORK/$name
    CAP_FILTER_PORTS=$ports
    local ready
    : >"$CAP_FILE.err"
    if [[ $name == *.pcapng ]]; then
        dumpcap -q -i "$iface" -f "$filter" -w "$CAP_FILE" "$@" 2>"$CAP_FILE.err" &
        ready="Capturing on"
    else
        tcpdump -Z root -i "$iface" -U --immediate-mode -B 8192 -w "$CAP_FILE" "$@" "$filter" \
            2>"$CAP_FILE.err" &
        ready="listening on"
    fi
    CAP_PID=$!
    local i
    for i in $(seq 200); do
        if grep -q "$ready" "$CAP_FILE.err"; then return 0; fi
        kill -0 "$CAP_PID" 2>/dev/null || { cat "$CAP_FILE.err" >&2; die "capture of $name failed"; }
        sleep 0.05
    done
    die "capture of $name did not start"
}

# finish: waits until no connection on the captured ports is still open (only
# TIME-WAIT left) and the file has stopped growing, then stops the capture
# with SIGINT so that it writes everything out, and moves the file into place.
finish() {
    local filter="" p i size last=-1 stable=0
    for p in $CAP_FILTER_PORTS; do filter+="${filter:+ or }sport = :$p or dport = :$p"; done
    for i in $(seq 100); do
        if ! ss -Htan state connected exclude time-wait "( $filter )" | grep -q .; then break; fi
        sleep 0.05
    done
    for i in $(seq 100); do
        size=$(stat -c %s "$CAP_FILE" 2>/dev/null || echo 0)
        if [[ $size == "$last" ]]; then
            stable=$((stable + 1))
            [[ $stable -ge 4 ]] && break
        else
            stable=0
            last=$size
        fi
        sleep 0.05
    done
    kill -INT "$CAP_PID"
    wait "$CAP_PID" || true
    CAP_PID=
    grep -q "^0 packets dropped by kernel" "$CAP_FILE.err" || ! grep -q "dropped by kernel" "$CAP_FILE.err" ||
        die "$(basename "$CAP_FILE"): the kernel dropped packets: $(cat "$CAP_FILE.err")"
    chmod 644 "$CAP_FILE"
    mv "$CAP_FILE" "$OUT/$(basename "$CAP_FILE")"
    local packets streams
    packets=$(tshark -r "$OUT/$(basename "$CAP_FILE")" 2>/dev/null | wc -l)
    streams=$(tshark -r "$OUT/$(basename "$CAP_FILE")" -T fields -e tcp.stream 2>/dev/null | sort -u | grep -c .)
    printf '%-34s %4d frames %3d tcp streams %7d bytes\n' "$(basename "$CAP_FILE")" \
        "$packets" "$streams" "$(stat -c %s "$OUT/$(basename "$CAP_FILE")")"
}

U=http://127.0.0.1:$PORT
