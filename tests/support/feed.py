"""An event feed on free local ports, and the small client-side pieces its tests send.

``start_publisher`` is the one set-up of an :class:`~stream.sinks.EventPublisher` (XPUB events,
ROUTER replay, a journal in the test's folder) that the feed, client and hostile-feed tests
share; the ``ctx`` and ``feed`` fixtures in ``tests/conftest.py`` build on it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import zmq

from stream.journal import EventJournal
from stream.sinks import EventPublisher


def free_ports(n: int) -> list[str]:
    """``n`` ``tcp://127.0.0.1:PORT`` endpoints that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return [f"tcp://127.0.0.1:{p}" for p in ports]


def event(kind: str = "frame.dropped", stream: str = "cam1", **fields: Any) -> dict:
    """A schema-valid event of type ``kind`` (``seq`` left to the publisher)."""
    base = {
        "v": 1,
        "seq": None,
        "type": kind,
        "stream": stream,
        "frame": 0,
        "pts": 0.0,
        "ts": "2026-01-01T00:00:00.000Z",
    }
    return {**base, **fields}


def start_publisher(
    tmp_path: Path, ctx: zmq.Context, *, heartbeat_s: float = 0.2, **options: Any
) -> tuple[EventPublisher, str, str]:
    """A publisher on two free ports with its journal under ``tmp_path``.

    Returns ``(publisher, events_endpoint, replay_endpoint)``; the caller closes the publisher.
    """
    events_ep, replay_ep = free_ports(2)
    pub = EventPublisher(
        ctx=ctx,
        endpoint=events_ep,
        replay_endpoint=replay_ep,
        journal=EventJournal(tmp_path / "j.sqlite"),
        heartbeat_s=heartbeat_s,
        **options,
    )
    return pub, events_ep, replay_ep


def request(sock: zmq.Socket, command: bytes, body: dict, timeout_ms: int = 5000) -> list[bytes]:
    """Send one replay-protocol request and return the answer's frames."""
    sock.send_multipart([command, json.dumps(body).encode()])
    assert sock.poll(timeout_ms), f"no answer to {command!r}"
    return sock.recv_multipart()


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A DEALER connected to ``endpoint`` (the replay side), closing without linger."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock
