#!/usr/bin/env python3
"""Write a deterministic synthetic capture (classic pcap, Ethernet, IPv4/TCP)
for benchmarking conntrace replay. The same arguments always give the same
bytes.

  scripts/synth-capture.py short     OUT [-n 200000]          # one request per connection
  scripts/synth-capture.py syn       OUT [-n 1000000]         # unanswered SYNs
  scripts/synth-capture.py keepalive OUT [-m 200] [-k 1000]   # K requests on each of M connections

short:     each connection is SYN, SYN+ACK, ACK, GET (with Host and
           x-conntrace-id), ACK, 200 with Content-Length and a 16-byte body,
           ACK, client FIN, server FIN+ACK, ACK; a new connection every 50 us
           (20,000/s, --rate), each lasting about 1 ms, so about 20 are open
           at any time and their frames interleave.
syn:       one SYN from a new 4-tuple every 20 us (50,000/s, --rate), none
           answered.
keepalive: M connections open together, then K rounds; in each round every
           connection sends one GET, then every connection gets its 200, then
           every client ACKs it; then every connection closes with FINs.
           Frames are 5 us apart.

Clients are 10.128.0.1 + (i mod 4096), ports from 10000 (the port moves on
every 4096 connections), so a 4-tuple repeats only after 4096 * 55000
connections; the server is 10.0.0.80:80. IPv4 header checksums are right, TCP
checksums are zero (as with checksum offload). Prints one summary line.
"""

import argparse
import os
import struct
import sys
import time

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
SERVER_IP = (10 << 24) | 80  # 10.0.0.80
SERVER_PORT = 80
CLIENT_NET = (10 << 24) | (128 << 16)  # 10.128.0.0
N_CLIENT_IPS = 4096
FIRST_PORT = 10000
N_PORTS = 55000

SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET
REC = struct.Struct("<IIII")
# Ethernet (14) + IPv4 without options (20) + TCP without options (20).
HDR = struct.Struct(">6s6sH BBHHHBBHII HHIIBBHHH")
HDR_LEN = HDR.size  # 54
assert HDR_LEN == 54
# Constant 16-bit words of the IPv4 header for the checksum: 0x4500,
# flags DF 0x4000, TTL 64 / protocol 6.
IP_CONST = 0x4500 + 0x4000 + ((64 << 8) | 6)

BASE_SECS = 1_700_000_000  # 2023-11-14T22:13:20Z

RESPONSE_BODY = b"hello, conntrace"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: synth\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(RESPONSE_BODY)
) + RESPONSE_BODY


def client_addr(i):
    return CLIENT_NET + 1 + i % N_CLIENT_IPS, FIRST_PORT + (i // N_CLIENT_IPS) % N_PORTS


def isn_client(i):
    return (i * 2654435761 + 0x1234567) & 0xFFFFFFFF


def isn_server(i):
    return (i * 2246822519 + 0x7654321) & 0xFFFFFFFF


class Writer:
    """Frames go into one large bytearray, written out when nearly full."""

    CHUNK = 8 << 20

    def __init__(self, path):
        self.path = path
        self.tmp = path + ".tmp"
        self.f = open(self.tmp, "wb", buffering=0)
        self.f.write(PCAP_HEADER)
        self.buf = bytearray(self.CHUNK)
        self.off = 0
        self.frames = 0
        self.ip_id = 0
        self.first_us = None
        self.last_us = None

    def frame(self, us, c2s, cip, cport, seq, ack, flags, payload=b""):
        """One frame at `us` microseconds from BASE_SECS; c2s: client to server."""
        off = self.off
        plen = len(payload)
        if off + 16 + HDR_LEN + plen > self.CHUNK:
            self.flush()
            off = 0
        tot = 40 + plen
        ip_id = self.ip_id
        self.ip_id = (ip_id + 1) & 0xFFFF
        s = IP_CONST + tot + ip_id + (cip >> 16) + (cip & 0xFFFF) + (SERVER_IP >> 16) + (SERVER_IP & 0xFFFF)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        csum = ~s & 0xFFFF
        buf = self.buf
        REC.pack_into(buf, off, BASE_SECS + us // 1_000_000, us % 1_000_000, HDR_LEN + plen, HDR_LEN + plen)
        if c2s:
            HDR.pack_into(buf, off + 16, SERVER_MAC, CLIENT_MAC, 0x0800,
                          0x45, 0, tot, ip_id, 0x4000, 64, 6, csum, cip, SERVER_IP,
                          cport, SERVER_PORT, seq, ack, 0x50, flags, 64240 if flags == SYN else 65535, 0, 0)
        else:
            HDR.pack_into(buf, off + 16, CLIENT_MAC, SERVER_MAC, 0x0800,
                          0x45, 0, tot, ip_id, 0x4000, 64, 6, csum, SERVER_IP, cip,
                          SERVER_PORT, cport, seq, ack, 0x50, flags, 65535, 0, 0)
        end = off + 16 + HDR_LEN
        if plen:
            buf[end:end + plen] = payload
            end += plen
        self.off = end
        self.frames += 1
        if self.first_us is None:
            self.first_us = us
        self.last_us = us

    def flush(self):
        if self.off:
            self.f.write(memoryview(self.buf)[: self.off])
            self.off = 0

    def close(self):
        self.flush()
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.f.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def request(path, tag):
    return (
        b"GET %s HTTP/1.1\r\n"
        b"Host: bench.example\r\n"
        b"User-Agent: synth-capture\r\n"
        b"Accept: */*\r\n"
        b"x-conntrace-id: %d\r\n"
        b"\r\n" % (path, tag)
    )


# Frame k of a short connection starts this many microseconds after its SYN.
# The remainders modulo 50 differ, so at 20,000 connections/s no two frames
# share a timestamp.
SHORT_OFFSETS = (0, 105, 211, 222, 333, 557, 668, 779, 884, 1001)


def write_short(w, n, rate):
    interval = max(1, round(1_000_000 / rate))
    # A frame at offset o of connection i is at i*interval + o. Walking the
    # time slots of one interval each, with the frames of a slot sorted by
    # their remainder, gives every frame in time order without a heap.
    plan = sorted((o % interval, k, o // interval) for k, o in enumerate(SHORT_OFFSETS))
    last_q = max(q for _, _, q in plan)
    rlen = len(RESPONSE)
    live = {}
    frame = w.frame
    for slot in range(n + last_q):
        t0 = slot * interval
        for r, k, q in plan:
            i = slot - q
            if i < 0 or i >= n:
                continue
            us = t0 + r
            if k == 0:
                cip, cport = client_addr(i)
                c = isn_client(i)
                s = isn_server(i)
                req = request(b"/item/%d" % i, i + 1)
                live[i] = (cip, cport, c, s, req)
                frame(us, True, cip, cport, c, 0, SYN)
                continue
            cip, cport, c, s, req = live[i]
            c1 = (c + 1) & 0xFFFFFFFF
            s1 = (s + 1) & 0xFFFFFFFF
            L = len(req)
            cL = (c1 + L) & 0xFFFFFFFF
            sR = (s1 + rlen) & 0xFFFFFFFF
            if k == 1:
                frame(us, False, cip, cport, s, c1, SYN | ACK)
            elif k == 2:
                frame(us, True, cip, cport, c1, s1, ACK)
            elif k == 3:
                frame(us, True, cip, cport, c1, s1, PSH | ACK, req)
            elif k == 4:
                frame(us, False, cip, cport, s1, cL, ACK)
            elif k == 5:
                frame(us, False, cip, cport, s1, cL, PSH | ACK, RESPONSE)
            elif k == 6:
                frame(us, True, cip, cport, cL, sR, ACK)
            elif k == 7:
                frame(us, True, cip, cport, cL, sR, FIN | ACK)
            elif k == 8:
                frame(us, False, cip, cport, sR, (cL + 1) & 0xFFFFFFFF, FIN | ACK)
            else:
                frame(us, True, cip, cport, (cL + 1) & 0xFFFFFFFF, (sR + 1) & 0xFFFFFFFF, ACK)
                del live[i]
    return n, n


def write_syn(w, n, rate):
    interval = max(1, round(1_000_000 / rate))
    frame = w.frame
    for i in range(n):
        cip, cport = client_addr(i)
        frame(i * interval, True, cip, cport, isn_client(i), 0, SYN)
    return n, 0


def write_keepalive(w, m, k, step=5):
    t = 0
    frame = w.frame
    conns = [client_addr(i) for i in range(m)]
    cseq = [isn_client(i) for i in range(m)]
    sseq = [isn_server(i) for i in range(m)]
    M32 = 0xFFFFFFFF

    def tick():
        nonlocal t
        us = t
        t += step
        return us

    for i, (cip, cport) in enumerate(conns):
        frame(tick(), True, cip, cport, cseq[i], 0, SYN)
    for i, (cip, cport) in enumerate(conns):
        cseq[i] = (cseq[i] + 1) & M32
        frame(tick(), False, cip, cport, sseq[i], cseq[i], SYN | ACK)
    for i, (cip, cport) in enumerate(conns):
        sseq[i] = (sseq[i] + 1) & M32
        frame(tick(), True, cip, cport, cseq[i], sseq[i], ACK)
    rlen = len(RESPONSE)
    for r in range(k):
        reqs = []
        for i, (cip, cport) in enumerate(conns):
            req = request(b"/ka/%d/%d" % (i, r), i * k + r + 1)
            reqs.append(req)
            frame(tick(), True, cip, cport, cseq[i], sseq[i], PSH | ACK, req)
            cseq[i] = (cseq[i] + len(req)) & M32
        for i, (cip, cport) in enumerate(conns):
            frame(tick(), False, cip, cport, sseq[i], cseq[i], PSH | ACK, RESPONSE)
            sseq[i] = (sseq[i] + rlen) & M32
        for i, (cip, cport) in enumerate(conns):
            frame(tick(), True, cip, cport, cseq[i], sseq[i], ACK)
    for i, (cip, cport) in enumerate(conns):
        frame(tick(), True, cip, cport, cseq[i], sseq[i], FIN | ACK)
        cseq[i] = (cseq[i] + 1) & M32
    for i, (cip, cport) in enumerate(conns):
        frame(tick(), False, cip, cport, sseq[i], cseq[i], FIN | ACK)
        sseq[i] = (sseq[i] + 1) & M32
    for i, (cip, cport) in enumerate(conns):
        frame(tick(), True, cip, cport, cseq[i], sseq[i], ACK)
    return m, m * k


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("short", "syn", "keepalive"))
    p.add_argument("out", help="output .pcap path (written via OUT.tmp, then renamed)")
    p.add_argument("-n", type=int, help="connections (short, default 200000) or SYNs (syn, default 1000000)")
    p.add_argument("-m", type=int, default=200, help="keepalive: connections (default 200)")
    p.add_argument("-k", type=int, default=1000, help="keepalive: requests per connection (default 1000)")
    p.add_argument("--rate", type=float,
                   help="new connections per second (short, default 20000) or SYNs per second (syn, default 50000)")
    a = p.parse_args()

    started = time.monotonic()
    w = Writer(a.out)
    try:
        if a.kind == "short":
            conns, reqs = write_short(w, a.n if a.n is not None else 200_000, a.rate or 20_000)
        elif a.kind == "syn":
            conns, reqs = write_syn(w, a.n if a.n is not None else 1_000_000, a.rate or 50_000)
        else:
            conns, reqs = write_keepalive(w, a.m, a.k)
        w.close()
    except BaseException:
        w.abort()
        raise
    span = ((w.last_us or 0) - (w.first_us or 0)) / 1e6
    print(f"{a.out}: {a.kind}, {w.frames} frames, {conns} connections, {reqs} requests, "
          f"{os.path.getsize(a.out)} bytes, {span:.3f} s of traffic "
          f"(written in {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
