#!/usr/bin/env python3
"""The python clients of scripts/cause-scenarios.sh, one function per scenario:

  pyclients.py SCENARIO TRUTH_FILE BASE_URL

Each one runs its HTTP exchanges and writes TRUTH_FILE (JSON): one entry per
TCP connection it opened, identified by the local port of the client's own
socket (getsockname() right after connect), with the cause of that connection
as the scenario built it. The causes are checked against what the client saw
(urllib3's DEBUG log, response headers, exceptions); a scenario whose run does
not go as built raises instead of writing a truth file.

Clients: requests (with its urllib3) and http.client.
"""
import http.client
import json
import logging
import sys
import threading
import time
import urllib.parse

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter

# ------------------------------------------------------------ the client's view
# One ordered list of what the client did and logged, shared by all threads:
#   {"kind": "connect", "port": P, "thread": T}    a socket was connected
#   {"kind": "log", "msg": M, "thread": T}         a urllib3 DEBUG/WARNING line
EVENTS = []
LOCK = threading.Lock()


def record(kind, **fields):
    with LOCK:
        EVENTS.append(dict(kind=kind, thread=threading.current_thread().name, t=time.monotonic(), **fields))


_connect = urllib3.connection.HTTPConnection.connect


# Seconds a connect waits once connected, before the request goes out (a
# slow handshake, as TLS would be); set by python-slow-handshake.
SLOW_CONNECT = 0.0


def connect_and_record(self):
    _connect(self)
    record("connect", port=self.sock.getsockname()[1])
    if SLOW_CONNECT:
        time.sleep(SLOW_CONNECT)


urllib3.connection.HTTPConnection.connect = connect_and_record


class UrllibLog(logging.Handler):
    KEEP = ("Starting new HTTP connection", "Connection pool is full", "Resetting dropped connection")

    def emit(self, rec):
        msg = rec.getMessage()
        if any(k in msg for k in self.KEEP):
            record("log", msg=msg)


logging.getLogger("urllib3").addHandler(UrllibLog())
logging.getLogger("urllib3").setLevel(logging.DEBUG)


def connects(since=0):
    with LOCK:
        return [e["port"] for e in EVENTS[since:] if e["kind"] == "connect"]


def mark():
    with LOCK:
        return len(EVENTS)


def logs(since=0, needle=""):
    with LOCK:
        return [e["msg"] for e in EVENTS[since:] if e["kind"] == "log" and needle in e["msg"]]


def check(cond, what):
    if not cond:
        raise SystemExit(f"the scenario did not run as built: {what}\nevents: {json.dumps(EVENTS, indent=1)}")


# ------------------------------------------------------------ truth file
class Truth:
    def __init__(self, scenario, client, server, truth_from):
        self.head = {"scenario": scenario, "client": client, "server": server, "truth_from": truth_from}
        self.connections = []

    def add(self, port, code, note=None):
        check(all(c["client_port"] != port for c in self.connections), f"port {port} twice")
        entry = {"client_port": port, "code": code}
        if note:
            entry["note"] = note
        self.connections.append(entry)

    def write(self, path):
        lines = [json.dumps(self.head)[:-1] + ', "connections": [']
        lines += ["  " + json.dumps(c) + ("," if i + 1 < len(self.connections) else "")
                  for i, c in enumerate(self.connections)]
        lines.append("]}")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


REQUESTS = f"python requests {requests.__version__} (urllib3 {urllib3.__version__})"
HTTP_CLIENT = f"python {sys.version.split()[0]} http.client"
PORTS_FROM = "each socket's local port read by getsockname() right after connect"


def get(session, url, **kw):
    r = session.get(url, **kw)
    r.raise_for_status()
    return r


def in_rounds(threads, rounds, stagger, fetch):
    """Runs fetch() in `threads` threads for `rounds` rounds; in each round
    thread i starts stagger*i seconds after a barrier, and the round ends when
    every thread is done. A failure in any thread fails the scenario."""
    barrier = threading.Barrier(threads)
    errors = []

    def worker(i):
        try:
            for _ in range(rounds):
                barrier.wait()
                time.sleep(i * stagger)
                fetch()
                barrier.wait()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
            barrier.abort()

    ts = [threading.Thread(target=worker, args=(i,), name=f"t{i}") for i in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    check(not errors, errors)


# ------------------------------------------------------------ scenarios
def python_no_pool(truth_file, base):
    t = Truth("python-no-pool", REQUESTS + ", requests.get() without a Session", "nginx keepalive_timeout 30s",
              "one requests.get() per request (each builds and closes its own pool); urllib3 DEBUG log "
              f"'Starting new HTTP connection' once per request; {PORTS_FROM}")
    for i, path in enumerate(("/a.txt", "/b.txt", "/c.txt", "/a.txt")):
        m = mark()
        requests.get(base + path).raise_for_status()
        new = connects(m)
        check(len(new) == 1, f"request {i} opened {new}")
        t.add(new[0], "first" if i == 0 else "no_pool",
              None if i == 0 else "the previous requests.get() closed its connection after its response")
    t.write(truth_file)


def python_pool_limit(truth_file, base):
    threads, rounds, stagger = 8, 3, 0.01
    t = Truth("python-pool-limit", REQUESTS + f", one Session, HTTPAdapter(pool_maxsize=2), {threads} threads",
              "python http.server, 0.2 s per response, keep-alive, no idle timeout",
              f"urllib3 DEBUG/WARNING log in order: 'Starting new HTTP connection' and 'Connection pool is full, "
              f"discarding connection'; {PORTS_FROM}; {threads} threads x {rounds} rounds, thread i starts "
              f"{int(stagger * 1000)}*i ms after each round's barrier")
    s = requests.Session()
    s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=2))
    in_rounds(threads, rounds, stagger, lambda: get(s, base + "/a.txt"))
    discards = 0
    n = 0
    with LOCK:
        events = list(EVENTS)
    for e in events:
        if e["kind"] == "log" and "Connection pool is full" in e["msg"]:
            discards += 1
        elif e["kind"] == "connect":
            if n == 0:
                t.add(e["port"], "first")
            elif discards == 0:
                t.add(e["port"], "concurrency", f"{e['thread']}: every open connection had a request in flight")
            else:
                t.add(e["port"], "pool_limit",
                      f"{e['thread']}: opened after the client had discarded {discards} connection(s) "
                      "because its pool (maxsize 2) was full")
            n += 1
    check(n == threads + (rounds - 1) * (threads - 2), f"{n} connections")
    t.write(truth_file)


def python_unread_body(truth_file, base):
    t = Truth("python-unread-body", REQUESTS + ", one Session",
              "python http.server, keep-alive, no idle timeout; /big is 1 MiB",
              "the script: GET /big with stream=True then r.close() without reading the body (urllib3 closes "
              f"that connection), then the next request's 'Starting new HTTP connection'; {PORTS_FROM}")
    s = requests.Session()
    prev = None
    for i in range(3):
        m = mark()
        get(s, base + "/a.txt")
        new = connects(m)
        if i == 0:
            check(len(new) == 1, new)
            t.add(new[0], "first")
        else:
            check(len(new) == 1, f"round {i}: {new}")
            t.add(new[0], "unread_body",
                  f"port {prev} was closed by the client with most of a 1 MiB response unread (stream=True, r.close())")
        prev = new[0]
        if i < 2:
            m = mark()
            r = s.get(base + "/big", stream=True)
            r.raise_for_status()
            check(connects(m) == [], "the /big request did not reuse the connection")
            check(int(r.headers["Content-Length"]) == 1 << 20, r.headers)
            r.close()
    t.write(truth_file)


def python_server_idle_timeout(truth_file, base):
    t = Truth("python-server-idle-timeout", REQUESTS + ", one Session, 2 s pause between requests",
              "nginx keepalive_timeout 1s",
              "urllib3 DEBUG log: 'Resetting dropped connection' (the pooled socket had been closed by the "
              f"server, found at checkout) before each reconnect; {PORTS_FROM}")
    s = requests.Session()
    for i, path in enumerate(("/a.txt", "/b.txt", "/c.txt")):
        if i:
            time.sleep(2)
        m = mark()
        get(s, base + path)
        new = connects(m)
        check(len(new) == 1, new)
        if i == 0:
            t.add(new[0], "first")
        else:
            check(logs(m, "Resetting dropped connection"), "no 'Resetting dropped connection'")
            t.add(new[0], "server_idle_timeout",
                  "urllib3: 'Resetting dropped connection' after 2 s idle (server keepalive_timeout 1s)")
    t.write(truth_file)


def python_server_request_limit(truth_file, base):
    t = Truth("python-server-request-limit", REQUESTS + ", one Session, 10 sequential GETs",
              "nginx keepalive_requests 3",
              "response headers seen by the client: 'Connection: close' on every 3rd response of a connection; "
              f"urllib3 DEBUG log: 'Resetting dropped connection' before the reconnect; {PORTS_FROM}")
    s = requests.Session()
    on_conn = 0
    last_close = False
    for i in range(10):
        m = mark()
        r = get(s, base + "/a.txt")
        new = connects(m)
        if i == 0:
            check(len(new) == 1, new)
            t.add(new[0], "first")
        elif new:
            check(len(new) == 1 and last_close and on_conn == 3, (new, last_close, on_conn))
            t.add(new[0], "server_request_limit", "the 3rd response on the previous connection had Connection: close")
        else:
            check(not last_close, "kept using a connection after Connection: close")
        on_conn = 1 if new else on_conn + 1
        last_close = r.headers.get("Connection", "").lower() == "close"
        check(last_close == (on_conn == 3), f"request {i}: Connection {r.headers.get('Connection')}")
    t.write(truth_file)


def python_client_close(truth_file, base):
    t = Truth("python-client-close", REQUESTS + ", one Session; some requests with headers={'Connection': 'close'}",
              "nginx keepalive_timeout 30s",
              "the script's own request headers (Connection: close on the 2nd and 4th request) and the next "
              f"request's reconnect (urllib3 DEBUG log); {PORTS_FROM}")
    s = requests.Session()
    plan = [("/a.txt", False), ("/b.txt", True), ("/c.txt", False), ("/a.txt", True), ("/b.txt", False),
            ("/c.txt", False)]
    sent_close = False
    for i, (path, close) in enumerate(plan):
        m = mark()
        get(s, base + path, headers={"Connection": "close"} if close else None)
        new = connects(m)
        if i == 0:
            check(len(new) == 1, new)
            t.add(new[0], "first")
        elif sent_close:
            check(len(new) == 1, new)
            t.add(new[0], "client_close", "the previous request on the last connection sent Connection: close")
        else:
            check(not new, f"request {i} opened {new}")
        sent_close = close
    t.write(truth_file)


def python_server_close(truth_file, base):
    t = Truth("python-server-close", REQUESTS + ", one Session, 7 sequential GETs",
              "python http.server, keep-alive, except 'Connection: close' on the response to /close",
              "response headers seen by the client: 'Connection: close' on the responses to /close (the 2nd and "
              f"6th request; connections carry 2, 4 and 1 requests); {PORTS_FROM}")
    s = requests.Session()
    last_close = False
    for i, path in enumerate(("/a", "/close", "/b", "/c", "/d", "/close", "/e")):
        m = mark()
        r = get(s, base + path)
        new = connects(m)
        if i == 0:
            check(len(new) == 1, new)
            t.add(new[0], "first")
        elif last_close:
            check(len(new) == 1, new)
            t.add(new[0], "server_close", "the previous response (to /close) had Connection: close")
        else:
            check(not new, f"request {i} opened {new}")
        last_close = r.headers.get("Connection", "").lower() == "close"
        check(last_close == (path == "/close"), r.headers)
    t.write(truth_file)


def python_reset(truth_file, base):
    t = Truth("python-reset", REQUESTS + ", one Session, retrying a request once after a connection error",
              "python raw-socket server: answers the 1st request on a connection, resets (SO_LINGER 0) on the 2nd",
              "the exception requests raised (ConnectionError: connection reset) and the retry's reconnect "
              f"(urllib3 DEBUG log); {PORTS_FROM}")
    s = requests.Session()
    reset_seen = None
    for i, path in enumerate(("/a", "/b", "/c")):
        for attempt in range(2):
            m = mark()
            try:
                get(s, base + path)
            except requests.exceptions.ConnectionError as e:
                check(attempt == 0 and not connects(m), f"{path}: {e!r}")
                reset_seen = repr(e.args[0] if e.args else e)
                check("reset" in reset_seen.lower(), reset_seen)
                continue
            new = connects(m)
            if i == 0:
                check(len(new) == 1, new)
                t.add(new[0], "first")
            elif attempt == 1:
                check(len(new) == 1, new)
                t.add(new[0], "reset", f"retry of {path}: the previous connection was reset before answering it "
                                       f"({reset_seen[:120]})")
            else:
                check(False, f"{path} was answered on the first try")
            break
    t.write(truth_file)


def python_idle_available(truth_file, base):
    t = Truth("python-idle-available", REQUESTS + ", three Sessions in one process, used in turn, two rounds",
              "nginx keepalive_timeout 30s",
              "each Session has its own pool: the urllib3 DEBUG log shows 'Starting new HTTP connection' for sessions "
              "2 and 3 while session 1's connection sat idle in its pool (all three are reused in round 2, so none "
              f"had closed); {PORTS_FROM}")
    sessions = [requests.Session() for _ in range(3)]
    ports = []
    for rnd in range(2):
        for k, s in enumerate(sessions):
            m = mark()
            get(s, base + "/a.txt")
            new = connects(m)
            if rnd == 0:
                check(len(new) == 1, new)
                if k == 0:
                    t.add(new[0], "first")
                else:
                    t.add(new[0], "idle_available",
                          f"session {k + 1}'s own pool was empty; idle: " +
                          ", ".join(f"port {p} (session {j + 1})" for j, p in enumerate(ports)))
                ports.append(new[0])
            else:
                check(not new, f"round 2 session {k + 1} opened {new}")
    t.write(truth_file)


def python_concurrency(truth_file, base):
    threads, stagger = 4, 0.02
    t = Truth("python-concurrency", REQUESTS + f", one Session (pool_maxsize 10), {threads} threads, two rounds",
              "python http.server, 0.2 s per response, keep-alive, no idle timeout",
              f"the script: {threads} threads start their request {int(stagger * 1000)}*i ms after a barrier, so each "
              "new connection is opened while the others wait for their 0.2 s response; round 2 reuses all "
              f"(no 'Starting new HTTP connection'); {PORTS_FROM}")
    s = requests.Session()
    s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=10))
    in_rounds(threads, 2, stagger, lambda: get(s, base + "/a.txt"))
    ports = connects()
    check(len(ports) == threads, ports)
    for n, p in enumerate(ports):
        t.add(p, "first" if n == 0 else "concurrency",
              None if n == 0 else f"{n} other connection(s) open, each with a request in flight")
    t.write(truth_file)


def python_slow_handshake(truth_file, base):
    global SLOW_CONNECT
    busy = 3
    t = Truth("python-slow-handshake", REQUESTS + f", one Session (pool_maxsize 10), {busy} threads busy, then {busy} "
              "more whose connects take 100 ms after the TCP handshake",
              "python http.server, 0.2 s per response, keep-alive, no idle timeout",
              f"the client's own record: each connect (local port by getsockname()) and each response's arrival, in "
              f"order; threads {busy}..{2 * busy - 1} start 150, 160, 170 ms in, connect while every connection waits "
              "for its response, and send 100 ms later, after those responses came")
    s = requests.Session()
    s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=10))
    errors = []

    t0 = time.monotonic()

    def worker(i):
        try:
            start = 0.15 + 0.01 * (i - busy) if i >= busy else 0.01 * i
            time.sleep(max(0.0, t0 + start - time.monotonic()))
            get(s, base + "/a.txt")
            record("done")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(i,), name=f"t{i}") for i in range(2 * busy)]
    for th in ts:
        th.start()
    time.sleep(max(0.0, t0 + 0.1 - time.monotonic()))
    SLOW_CONNECT = 0.1  # after the first three connected, before the others
    for th in ts:
        th.join()
    SLOW_CONNECT = 0.0
    check(not errors, errors)
    with LOCK:
        events = list(EVENTS)
    done = 0
    n = 0
    for e in events:
        if e["kind"] == "done":
            done += 1
        elif e["kind"] == "connect":
            check(done == 0, f"{e['thread']} connected after a response had come: {done}")
            t.add(e["port"], "first" if n == 0 else "concurrency",
                  None if n == 0 else f"{e['thread']}: connected while every connection waited for its response" +
                  (" (its request went out 100 ms later, when they were idle)" if n >= busy else ""))
            n += 1
    check(n == 2 * busy, f"{n} connections")
    t.write(truth_file)


def python_stale_connection(truth_file, base):
    u = urllib.parse.urlsplit(base)
    t = Truth("python-stale-connection", HTTP_CLIENT + ", HTTPConnection reused after a 1.5 s pause, retried once "
              "on a new HTTPConnection", "nginx keepalive_timeout 1s",
              "the exception http.client raised for the request sent on the old connection after the pause "
              "(RemoteDisconnected or ConnectionResetError), then the retry on a new HTTPConnection; each "
              "socket's local port read by getsockname()")

    def fresh():
        c = http.client.HTTPConnection(u.hostname, u.port)
        c.connect()
        return c, c.sock.getsockname()[1]

    def fetch(c, path):
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        check(r.status == 200, r.status)

    c, port = fresh()
    t.add(port, "first")
    fetch(c, "/a.txt")
    for path in ("/b.txt", "/c.txt"):
        time.sleep(1.5)
        try:
            fetch(c, path)
            check(False, f"{path} was answered on the old connection")
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            err = repr(e)
        c.close()
        old = port
        c, port = fresh()
        t.add(port, "stale_connection", f"retry of {path}: sent on port {old} after the server had closed it: {err}")
        fetch(c, path)
    c.close()
    t.write(truth_file)


def curl_truth(truth_file, _base):
    """Reads `label local_port num_connects` lines (curl -w) on stdin; env gives the rest."""
    import os
    t = Truth(os.environ["SCENARIO"], os.environ["CLIENT"], os.environ["SERVER"], os.environ["TRUTH_FROM"])
    code, note = os.environ["CODE"], os.environ.get("NOTE")
    seen = []
    for line in sys.stdin:
        port, num_connects = (int(x) for x in line.split())
        if num_connects == 0:
            check(port in seen, f"reused port {port} never opened")
            continue
        check(num_connects == 1, line)
        t.add(port, "first" if not seen else code, None if not seen else note)
        seen.append(port)
    t.write(truth_file)


if __name__ == "__main__":
    scenario, truth_file, base = sys.argv[1:4]
    globals()[scenario.replace("-", "_")](truth_file, base)
