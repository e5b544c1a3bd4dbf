"""Benchmark the event feed: publish rate with the journal off / on (NORMAL, FULL), and replay.

    .venv/bin/python scripts/bench_events.py [--events 20000] [--full-events 2000]

Each configuration publishes ``--events`` events (a 200-byte ``objects.count``-like payload)
through :class:`stream.sinks.EventPublisher` with a live subscriber attached; replay throughput
is an :class:`stream.client.EventClient` reading the whole journal from seq 0 over the replay
endpoint. Prints a table, then ONE JSON line (ratios are to journal-off, same run).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

import zmq

from stream.client import EventClient
from stream.journal import EventJournal
from stream.sinks import EventPublisher


def _endpoints() -> tuple[str, str]:
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    eps = [f"tcp://127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()
    return eps[0], eps[1]


def _event(i: int) -> dict:
    return {
        "v": 1,
        "seq": None,
        "type": "objects.count",
        "stream": f"cam{i % 4}",
        "frame": i,
        "pts": i / 30,
        "ts": "2026-11-27T06:01:02.345Z",
        "counts": {"person": i % 7, "car": i % 3, "bicycle": 1, "dog": 0, "truck": 2},
    }


def publish_rate(n: int, journal: EventJournal | None) -> tuple[float, list[float]]:
    """events/s and per-event publish() latencies (µs) with one live subscriber."""
    ctx = zmq.Context()
    events_ep, replay_ep = _endpoints()
    pub = EventPublisher(
        ctx=ctx,
        endpoint=events_ep,
        replay_endpoint=replay_ep if journal is not None else None,
        journal=journal,
    )
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(events_ep)
    lat = []
    try:
        time.sleep(0.3)  # let the subscription reach the publisher
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            pub.publish(_event(i))
            lat.append((time.perf_counter() - t0) * 1e6)
        elapsed = time.perf_counter() - started
    finally:
        pub.close()
        sub.close()
        ctx.term()
    return n / elapsed, lat


def replay_rate(path: Path, n: int) -> float:
    """events/s of an EventClient catching up on ``n`` journaled events from seq 0."""
    ctx = zmq.Context()
    events_ep, replay_ep = _endpoints()
    pub = EventPublisher(
        ctx=ctx,
        endpoint=events_ep,
        replay_endpoint=replay_ep,
        journal=EventJournal(path),
        heartbeat_s=0.2,
    )
    try:
        with EventClient(events_ep, replay_ep, from_seq=0, heartbeat_timeout_s=10) as client:
            started = time.perf_counter()
            got = 0
            while client.last < n and time.perf_counter() - started < 120:
                if client.recv(timeout_s=1.0) is not None:
                    got += 1
            elapsed = time.perf_counter() - started
            if got != n:
                raise SystemExit(f"replay returned {got} of {n} events")
    finally:
        pub.close()
        ctx.term()
    return n / elapsed


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000, help="events per configuration")
    ap.add_argument("--full-events", type=int, default=2_000, help="events with synchronous=FULL")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        off, lat_off = publish_rate(args.events, None)
        rows.append(("journal off", args.events, off, lat_off))
        normal_path = Path(tmp) / "normal.sqlite"
        normal, lat_normal = publish_rate(args.events, EventJournal(normal_path))
        rows.append(("journal NORMAL", args.events, normal, lat_normal))
        full, lat_full = publish_rate(
            args.full_events, EventJournal(Path(tmp) / "full.sqlite", synchronous="full")
        )
        rows.append(("journal FULL", args.full_events, full, lat_full))
        replay = replay_rate(normal_path, args.events)
    print(f"{'configuration':<16} {'events':>7} {'events/s':>10} {'p50 µs':>8} {'p99 µs':>8}")
    for name, n, rate, lat in rows:
        print(f"{name:<16} {n:>7} {rate:>10.0f} {_pct(lat, 0.5):>8.1f} {_pct(lat, 0.99):>8.1f}")
    print(f"{'replay (client)':<16} {args.events:>7} {replay:>10.0f}")
    print(
        json.dumps(
            {
                "bench": "events",
                "events": args.events,
                "publish_eps_journal_off": round(off),
                "publish_eps_journal_normal": round(normal),
                "publish_eps_journal_full": round(full),
                "ratio_normal_to_off": round(normal / off, 3),
                "ratio_full_to_off": round(full / off, 3),
                "p50_us_off": round(_pct(lat_off, 0.5), 1),
                "p99_us_off": round(_pct(lat_off, 0.99), 1),
                "p50_us_normal": round(_pct(lat_normal, 0.5), 1),
                "p99_us_normal": round(_pct(lat_normal, 0.99), 1),
                "p50_us_full": round(_pct(lat_full, 0.5), 1),
                "p99_us_full": round(_pct(lat_full, 0.99), 1),
                "replay_eps": round(replay),
            }
        )
    )


if __name__ == "__main__":
    main()
