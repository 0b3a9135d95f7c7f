#!/usr/bin/env python3
"""A static file server for bench/delta.sh and the QEMU agent scenario: HTTP/1.1 with keep-alive, single
byte ranges (206 + Content-Range, 416 when unsatisfiable), and counters of
what it serves.

    python3 scripts/range-server.py DIR PORTFILE

Binds 127.0.0.1 on a free port and writes the port to PORTFILE. Serves the
files directly in DIR (no subdirectories). `GET /__stats` answers (not
counted) a JSON object: body_bytes (response body bytes handed to the socket,
every request), requests, range_requests, connections (that asked for a
file). The bench reads it before and after a run; the difference is what that
run downloaded. Body bytes are counted once the kernel took them (64 KiB
writes), so they include what sat in socket buffers when a client closed a
connection early. One line per request on stderr: connection, range, status,
body length and bytes sent.

A request with several ranges (bytes=a-b,c-d) is answered with the whole file
(200), as RFC 9110 allows, and logged on stderr: slotctl asks for one range
per request.
"""

import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
LOCK = threading.Lock()
STATS = {"body_bytes": 0, "requests": 0, "range_requests": 0, "connections": 0}
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def count(key, n=1):
    with LOCK:
        STATS[key] += n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with Content-Length
    # TCP_NODELAY, as web servers set on keep-alive connections (nginx's
    # tcp_nodelay on): the headers and the body go out in separate writes,
    # and with Nagle each small response waited for the client's delayed
    # ACK (about 40 ms a request on this machine's loopback).
    disable_nagle_algorithm = True
    server_version = "slotctl-bench-delta"

    counted = False  # this connection counted yet (one handler per connection)
    conn_id = 0

    def log_message(self, fmt, *args):  # quiet: the bench prints its own figures
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head):
        if self.path == "/__stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        count("requests")
        if not self.counted:  # connections that only asked for /__stats are not counted
            self.counted = True
            count("connections")
            with LOCK:
                self.conn_id = STATS["connections"]
        name = self.path.lstrip("/")
        path = os.path.join(self.server.root, name)
        if "/" in name or not name or not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end, status = 0, size, 200
        header = self.headers.get("Range")
        if header is not None:
            m = RANGE.match(header.strip())
            if m is None or m.group(1) == m.group(2) == "":
                print(f"range-server: {header!r}: not one byte range, answering 200", file=sys.stderr)
            else:
                count("range_requests")
                first, last = m.group(1), m.group(2)
                if first == "":  # suffix: the last N bytes
                    start = max(0, size - int(last))
                else:
                    start = int(first)
                    if last != "":
                        end = min(size, int(last) + 1)
                if start >= size or start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        sent = 0
        try:
            with open(path, "rb") as f:
                f.seek(start)
                while sent < end - start:
                    buf = f.read(min(CHUNK, end - start - sent))
                    if not buf:
                        raise OSError(f"{path}: shorter than {size} bytes")
                    self.wfile.write(buf)
                    # counted once the kernel took it (a write that fails is not counted)
                    count("body_bytes", len(buf))
                    sent += len(buf)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away: usual after a probe
        finally:
            print(f"conn {self.conn_id} {self.command} /{name} range={header} status={status}"
                  f" body={end - start} sent={sent}{'' if sent == end - start else ' (cut short)'}",
                  file=sys.stderr, flush=True)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: range-server.py DIR PORTFILE")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.root = sys.argv[1]
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, sys.argv[2])
    server.serve_forever()


if __name__ == "__main__":
    main()
