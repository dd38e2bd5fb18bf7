#!/usr/bin/env python3
"""Small HTTP/1.1 servers for scripts/cause-scenarios.sh, one mode per process:

  server.py slow  PORT   answers every GET after 0.2 s; keeps connections alive
  server.py close PORT   keeps connections alive, except that the response to
                         /close carries `Connection: close` and the server then
                         closes the connection
  server.py big   PORT   /big is 1 MiB (Content-Length, written in one call);
                         any other path is 6 bytes; keeps connections alive
  server.py reset PORT   raw sockets: answers the 1st request on a connection,
                         reads the 2nd one completely and closes with SO_LINGER
                         0 (an RST) instead of answering; keeps alive otherwise
  server.py goaway PORT  HTTP/2 with prior knowledge (the h2 library): answers
                         two streams on a connection, then sends GOAWAY (last
                         stream: the second) and closes it

None of them has an idle timeout: a connection ends when the client closes it
(or as described above). All listen on 127.0.0.1 only.
"""
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG = b"x" * (1 << 20)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "slow"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"alpha\n"
        close = False
        if self.mode == "slow":
            time.sleep(0.2)
        elif self.mode == "close" and self.path == "/close":
            close = True
        elif self.mode == "big" and self.path == "/big":
            body = BIG
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            # The client closed without reading the body (the unread-body case).
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        pass


def serve_reset(port):
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(64)

    def one(conn):
        buf = b""
        served = 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                _, buf = buf.split(b"\r\n\r\n", 1)  # GET requests have no body
                served += 1
                if served == 2:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # close with linger 0: RST, no response
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 6\r\n\r\nalpha\n")

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def serve_goaway(port):
    import h2.config
    import h2.connection
    import h2.events

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(64)

    def one(conn):
        h2c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        answered = 0
        with conn:
            while answered < 2:
                data = conn.recv(65536)
                if not data:
                    return
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        body = b"alpha\n"
                        h2c.send_headers(event.stream_id, [(":status", "200"), ("content-type", "text/plain"),
                                                           ("content-length", str(len(body)))])
                        h2c.send_data(event.stream_id, body, end_stream=True)
                        answered += 1
                        last = event.stream_id
                conn.sendall(h2c.data_to_send())
            h2c.close_connection(last_stream_id=last)
            conn.sendall(h2c.data_to_send())
            try:
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
            except OSError:
                pass  # the client reset it: it is over either way

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "reset":
        serve_reset(port)
        return
    if mode == "goaway":
        serve_goaway(port)
        return
    if mode not in ("slow", "close", "big"):
        sys.exit(f"unknown mode {mode}")
    Handler.mode = mode
    Server(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
