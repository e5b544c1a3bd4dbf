"""Slowloris flood against the viewer's HTTP server (pipeline/http.py) with its defaults.

    PYTHONPATH=$PWD .venv/bin/python scripts/flood_http.py [--connections 2000] [--seconds 15]

Opens N connections over loopback, each sending a request line and then one byte every 2 s
(a head that never ends), against an in-process :class:`pipeline.http.HttpService` with the
default limits (``runtime.http_max_connections`` 100, ``runtime.http_timeout_s`` 10). Prints one
JSON line: connections opened, the most server threads at once, connections refused with a
503, connections still served after ``--seconds`` (the head deadline must have cut them all),
and whether ``/healthz`` answers afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import threading
import time

import zmq

from pipeline.http import HttpService, LiveTap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=15.0, help="how long to keep dribbling")
    args = p.parse_args()
    zctx = zmq.Context()
    tap = LiveTap(zctx, "inproc://flood-tap")
    svc = HttpService(
        "127.0.0.1",
        0,
        tap=tap,
        status=lambda: {"streams": []},
        metrics=lambda: (b"", "text/plain"),
        alive=lambda: True,
    )
    base = threading.active_count()
    peak = 0
    socks: list[socket.socket] = []
    try:
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", svc.port), timeout=30)
            s.setblocking(False)
            try:
                s.send(b"GET / HTTP/1.1\r\n")
            except OSError:
                pass
            socks.append(s)
            peak = max(peak, threading.active_count() - base)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            peak = max(peak, threading.active_count() - base)
            time.sleep(2.0)
        served = svc.connections
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
        conn.request("GET", "/healthz")
        healthz = conn.getresponse().status
        conn.close()
        print(
            json.dumps(
                {
                    "connections_opened": len(socks),
                    "peak_server_threads": peak,
                    "refused_503": svc.refused,
                    "still_served_after_s": args.seconds,
                    "still_served": served,
                    "healthz_after": healthz,
                }
            )
        )
    finally:
        for s in socks:
            s.close()
        svc.close()
        tap.close()
        zctx.destroy(linger=0)


if __name__ == "__main__":
    main()
