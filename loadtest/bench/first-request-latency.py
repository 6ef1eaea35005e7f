#!/usr/bin/env python3
"""Latency of the first request on fresh connections: the cost of handing a connection to
the shard that owns its client key.

Usage: first-request-latency.py HOST:PORT CLIENT_KEY [COUNT]

Opens COUNT (default 1000) connections one after another, sends one request with
`Connection: close` on each, and prints latency percentiles in microseconds. Run it against
a gateway with `workers = 1` (never a handoff) and `workers = 2` (about half the connections
land on the shard that does not own the key and are handed over); the difference is the
handoff. See docs/limits.md.
"""
import socket
import sys
import time


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key = sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    request = (
        f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    latencies = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(request)
        while sock.recv(65536):
            pass
        latencies.append((time.perf_counter() - start) * 1e6)
        sock.close()
    latencies.sort()
    marks = " ".join(
        f"p{int(q * 100)} {latencies[int(len(latencies) * q)]:.0f}" for q in (0.1, 0.25, 0.5, 0.75, 0.9)
    )
    print(f"n {len(latencies)} {marks} us")


if __name__ == "__main__":
    main()
