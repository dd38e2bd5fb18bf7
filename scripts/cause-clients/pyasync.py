#!/usr/bin/env python3
"""The httpx and aiohttp clients of scripts/cause-scenarios.sh:

  pyasync.py SCENARIO TRUTH_FILE BASE_URL

As in pyclients.py, each scenario writes TRUTH_FILE: every TCP connection the
client opened, named by its socket's local port as the client read it, with
the cause the scenario built, checked against the client's own view:

- httpx (httpcore): the request's "trace" extension gives each
  `connection.connect_tcp.complete` (the new socket) and each request's
  socket (`http11.send_request_headers.started`, through the stream of the
  connection); httpcore's DEBUG log "close.started" is each connection it
  closes itself.
- aiohttp: a TraceConfig says for each request whether the connector created
  a connection (`on_connection_create_end`) or reused one
  (`on_connection_reuseconn`); the connector's connect() gives the socket of
  the connection each request got.
"""
import asyncio
import contextvars
import logging
import sys
import threading
import time

import aiohttp
import httpcore
import httpx

from pyclients import Truth, check, in_rounds

EVENTS = []
LOCK = threading.Lock()


def record(kind, **fields):
    with LOCK:
        EVENTS.append(dict(kind=kind, thread=threading.current_thread().name, t=time.monotonic(), **fields))


def mark():
    with LOCK:
        return len(EVENTS)


def since(m, kind):
    with LOCK:
        return [e for e in EVENTS[m:] if e["kind"] == kind]


# ------------------------------------------------------------ httpx
class CloseLog(logging.Handler):
    def emit(self, rec):
        if rec.getMessage().startswith("close.started"):
            record("close")


logging.getLogger("httpcore.connection").addHandler(CloseLog())
logging.getLogger("httpcore.connection").setLevel(logging.DEBUG)


def port_of_stream(stream):
    return stream.get_extra_info("socket").getsockname()[1]


def trace(event, info):
    if event == "connection.connect_tcp.complete":
        record("connect", port=port_of_stream(info["return_value"]))


HTTPX = f"python httpx {httpx.__version__} (httpcore {httpcore.__version__})"
HTTPX_VIEW = ("httpcore's trace extension (connection.connect_tcp.complete: each new socket, its local port by "
              "getsockname()) and its DEBUG log 'close.started' (each connection it closed itself)")


def hx_get(client_or_module, url):
    r = client_or_module.get(url, extensions={"trace": trace})
    r.raise_for_status()
    return r


def httpx_no_client(truth_file, base):
    t = Truth("httpx-no-client", HTTPX + ", a new Client per request (as httpx.get() makes)", "nginx keepalive_timeout 30s",
              "one short-lived Client per request (each makes and closes its own pool); " + HTTPX_VIEW)
    for i, path in enumerate(("/a.txt", "/b.txt", "/c.txt", "/a.txt")):
        m = mark()
        with httpx.Client() as one:  # what httpx.get() does, with a trace
            hx_get(one, base + path)
        new = since(m, "connect")
        check(len(new) == 1, f"request {i}: {new}")
        check(len(since(m, "close")) == 1, f"request {i}: not closed")
        t.add(new[0]["port"], "first" if i == 0 else "no_pool",
              None if i == 0 else "the previous request's Client closed its pool and its connection")
    t.write(truth_file)


def httpx_keepalive_limit(truth_file, base):
    threads, rounds, stagger = 8, 3, 0.01
    t = Truth("httpx-keepalive-limit", HTTPX + f", one Client(limits=Limits(max_keepalive_connections=2)), "
              f"{threads} threads x {rounds} rounds", "python http.server, 0.2 s per response, keep-alive",
              HTTPX_VIEW + f"; thread i starts {int(stagger * 1000)}*i ms after each round's barrier")
    client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=2, max_connections=100))
    in_rounds(threads, rounds, stagger, lambda: hx_get(client, base + "/a.txt"))
    with LOCK:
        events = list(EVENTS)
    client.close()
    closes = 0
    n = 0
    for e in events:
        if e["kind"] == "close":
            closes += 1
        elif e["kind"] == "connect":
            if n == 0:
                t.add(e["port"], "first")
            elif closes == 0:
                t.add(e["port"], "concurrency", f"{e['thread']}: every open connection had a request in flight")
            else:
                t.add(e["port"], "pool_limit", f"{e['thread']}: opened after the pool had closed {closes} idle "
                      "connection(s) of its own (max_keepalive_connections 2)")
            n += 1
    check(n > threads and closes > 0, f"{n} connections, {closes} closes")
    t.write(truth_file)


def httpx_client_idle_timeout(truth_file, base):
    t = Truth("httpx-client-idle-timeout", HTTPX + ", one Client(limits=Limits(keepalive_expiry=1)), 2 s pauses",
              "nginx keepalive_timeout 30s",
              HTTPX_VIEW + "; the close comes as the next request finds its connection expired")
    client = httpx.Client(limits=httpx.Limits(keepalive_expiry=1))
    prev = None
    for i, step in enumerate(("/a.txt", "/b.txt", "pause", "/c.txt", "pause", "/a.txt")):
        if step == "pause":
            time.sleep(2)
            continue
        m = mark()
        hx_get(client, base + step)
        new = since(m, "connect")
        if i == 0:
            check(len(new) == 1, new)
            t.add(new[0]["port"], "first")
        elif new:
            check(len(new) == 1 and len(since(m, "close")) == 1, (new, since(m, "close")))
            t.add(new[0]["port"], "client_idle_timeout",
                  f"port {prev}: past keepalive_expiry 1 s after a 2 s pause; httpcore closed it, then connected")
        prev = new[0]["port"] if new else prev
    client.close()
    check(len([e for e in EVENTS if e["kind"] == "connect"]) == 3, EVENTS)
    t.write(truth_file)


def httpx_server_request_limit(truth_file, base):
    t = Truth("httpx-server-request-limit", HTTPX + ", one Client, 8 sequential GETs", "nginx keepalive_requests 3",
              HTTPX_VIEW + "; the response headers (Connection: close on every 3rd response of a connection)")
    client = httpx.Client()
    on_conn, last_close = 0, False
    for i in range(8):
        m = mark()
        r = hx_get(client, base + "/a.txt")
        new = since(m, "connect")
        if i == 0:
            t.add(new[0]["port"], "first")
        elif new:
            check(len(new) == 1 and last_close and on_conn == 3, (new, last_close, on_conn))
            t.add(new[0]["port"], "server_request_limit", "the 3rd response on the previous connection had "
                  "Connection: close")
        on_conn = 1 if new else on_conn + 1
        last_close = r.headers.get("connection", "").lower() == "close"
        check(last_close == (on_conn == 3), f"request {i}: {r.headers.get('connection')}")
    client.close()
    t.write(truth_file)


def httpx_h2_goaway(truth_file, base):
    t = Truth("httpx-h2-goaway", HTTPX + ", one Client(http1=False, http2=True) (h2c with prior knowledge), "
              "6 sequential GETs", "python h2 server: GOAWAY after the 2nd stream of each connection, then close",
              HTTPX_VIEW + "; the server was built to end every connection with GOAWAY after two streams")
    client = httpx.Client(http1=False, http2=True)
    on_conn = 0
    for i in range(6):
        m = mark()
        r = hx_get(client, base + "/a.txt")
        check(r.http_version == "HTTP/2", r.http_version)
        new = since(m, "connect")
        if i == 0:
            t.add(new[0]["port"], "first")
        elif new:
            check(len(new) == 1 and on_conn == 2, (new, on_conn))
            t.add(new[0]["port"], "goaway", "the server sent GOAWAY after the 2nd stream of the previous connection")
        on_conn = 1 if new else on_conn + 1
        check(on_conn <= 2, f"request {i}: {on_conn} streams on one connection")
    client.close()
    t.write(truth_file)


# ------------------------------------------------------------ aiohttp
AIOHTTP = f"python aiohttp {aiohttp.__version__}"
AIOHTTP_VIEW = ("aiohttp's TraceConfig: on_connection_create_end (a new connection) or on_connection_reuseconn "
                "(a pooled one) for each request, and the local port of the connection the connector's connect() "
                "handed it")


# Where the connector notes the port of the connection a request got: one
# dict per task (tasks run in their own context).
PORT_BOX = contextvars.ContextVar("port_box")


def aio_session(**connector):
    state = {}

    async def created(session, ctx, params):
        state["new"] = True

    async def reused(session, ctx, params):
        state["new"] = False

    class Recording(aiohttp.TCPConnector):
        """Notes the local port of the connection each request gets."""

        async def connect(self, req, traces, timeout):
            conn = await super().connect(req, traces, timeout)
            PORT_BOX.get(state)["port"] = conn.transport.get_extra_info("sockname")[1]
            return conn

    tc = aiohttp.TraceConfig()
    tc.on_connection_create_end.append(created)
    tc.on_connection_reuseconn.append(reused)
    session = aiohttp.ClientSession(connector=Recording(**connector), trace_configs=[tc])
    return session, state


async def aio_get(session, state, url):
    """GETs url, reads the body; returns (new connection?, local port)."""
    async with session.get(url) as r:
        r.raise_for_status()
        new, port = state.pop("new"), state.pop("port")
        await r.read()
    return new, port


def aio_sequence(truth, base, steps, pause, code, note, **connector):
    async def run():
        session, state = aio_session(**connector)
        prev = None
        first = True
        for step in steps:
            if step == "pause":
                await asyncio.sleep(pause)
                continue
            new, port = await aio_get(session, state, base + step)
            if first:
                check(new, "first request reused")
                truth.add(port, "first")
                first = False
            elif new:
                check(port != prev, "a new connection on the old port")
                truth.add(port, code, note.format(prev=prev))
            else:
                check(port == prev, f"reused {port}, not {prev}")
            prev = port
        await session.close()

    asyncio.run(run())


def aiohttp_force_close(truth_file, base):
    t = Truth("aiohttp-force-close", AIOHTTP + ", TCPConnector(force_close=True), 4 sequential GETs",
              "nginx keepalive_timeout 30s", AIOHTTP_VIEW + "; force_close closes each connection after its response")
    aio_sequence(t, base, ["/a.txt", "/b.txt", "/c.txt", "/a.txt"], 0, "no_pool",
                 "port {prev}: closed by the connector after its one response (force_close=True)", force_close=True)
    t.write(truth_file)


def aiohttp_client_idle_timeout(truth_file, base):
    t = Truth("aiohttp-client-idle-timeout", AIOHTTP + ", TCPConnector(keepalive_timeout=1), 3 s pauses",
              "nginx keepalive_timeout 30s", AIOHTTP_VIEW + "; the connector's keepalive_timeout 1 s during each pause")
    aio_sequence(t, base, ["/a.txt", "/b.txt", "pause", "/c.txt", "pause", "/a.txt"], 3, "client_idle_timeout",
                 "port {prev}: the connector closed it after keepalive_timeout 1 s during a 3 s pause",
                 keepalive_timeout=1)
    t.write(truth_file)


def aiohttp_server_idle_timeout(truth_file, base):
    t = Truth("aiohttp-server-idle-timeout", AIOHTTP + ", default TCPConnector, 1.5 s pauses",
              "nginx keepalive_timeout 1s", AIOHTTP_VIEW + "; the server's keepalive_timeout 1 s, shorter than "
              "the connector's 15 s")
    aio_sequence(t, base, ["/a.txt", "pause", "/b.txt", "pause", "/c.txt"], 1.5, "server_idle_timeout",
                 "port {prev}: the server closed it after 1 s idle, during a 1.5 s pause")
    t.write(truth_file)


def aiohttp_concurrency(truth_file, base):
    tasks, stagger = 5, 0.02
    t = Truth("aiohttp-concurrency", AIOHTTP + f", one session, {tasks} tasks started {int(stagger * 1000)} ms apart, "
              "two rounds", "python http.server, 0.2 s per response, keep-alive",
              AIOHTTP_VIEW + "; round 2 reuses every connection")

    async def run():
        session, state = aio_session()
        ports = []

        async def one(i, rnd):
            box = {}
            PORT_BOX.set(box)
            await asyncio.sleep(i * stagger)
            async with session.get(base + "/a.txt") as r:
                port = box["port"]
                r.raise_for_status()
                await r.read()
            if rnd == 0:
                ports.append((i, port))
            else:
                check(port in [p for _, p in ports], f"round 2 task {i} on a new port {port}")

        for rnd in range(2):
            await asyncio.gather(*(one(i, rnd) for i in range(tasks)))
        await session.close()
        ports.sort()
        check(len({p for _, p in ports}) == tasks, ports)
        for i, port in ports:
            t.add(port, "first" if i == 0 else "concurrency",
                  None if i == 0 else f"task {i}: the {i} earlier task(s) each waited for a 0.2 s response")

    asyncio.run(run())
    t.write(truth_file)


if __name__ == "__main__":
    scenario, truth_file, base = sys.argv[1:4]
    globals()[scenario.replace("-", "_")](truth_file, base)
