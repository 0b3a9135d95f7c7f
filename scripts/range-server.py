#!/usr/bin/env python3
"""A static file server for the QEMU scenarios and the benchmarks: HTTP/1.1
with persistent connections and `Range: bytes=A-B` / `bytes=A-` answered
206 with Content-Range, on 127.0.0.1 only.

Usage: range-server.py PORT DIR [LOG]

Every request is appended to LOG (default: standard error) as one line:
`GET /path range=A-B status=206 body=N conn=C`, where N is the body bytes
sent and C the connection's number, so a scenario can count the bytes a
client downloaded (sum of body=) and the connections it opened.
"""
import http.server
import itertools
import os
import re
import socket
import sys
import threading

PORT, ROOT = int(sys.argv[1]), os.path.realpath(sys.argv[2])
LOG = open(sys.argv[3], "a", buffering=1) if len(sys.argv) > 3 else sys.stderr
LOCK = threading.Lock()
CONNS = itertools.count(1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out as separate writes: without TCP_NODELAY,
        # Nagle holds the body's last segment for the client's delayed ACK
        # (40 ms per request here), which no real server does.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn_no = next(CONNS)

    def log_message(self, *args):
        pass

    def record(self, rng, status, body):
        with LOCK:
            LOG.write(f"{self.command} {self.path} range={rng} status={status} body={body} conn={self.conn_no}\n")

    def fail(self, status, rng="-"):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.record(rng, status, 0)

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = os.path.realpath(os.path.join(ROOT, rel))
        if not path.startswith(ROOT + os.sep) or not os.path.isfile(path):
            return self.fail(404)
        size = os.path.getsize(path)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return self.record(rng, 416, 0)
            start = int(m.group(1))
            end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        sent = 0
        if not head:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start
                try:
                    while left:
                        b = f.read(min(left, 1 << 20))
                        if not b:
                            break
                        self.wfile.write(b)
                        sent += len(b)
                        left -= len(b)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
        self.record(rng or "-", status, sent)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
