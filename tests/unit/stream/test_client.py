"""The subscriber SDK under faults: every event arrives, in order, once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from stream.client import EventClient, PublisherDead
from stream.journal import EventJournal
from tests.support.feed import event, free_ports, start_publisher

ROOT = Path(__file__).resolve().parents[3]


def drain(client: EventClient, until_seq: int, timeout_s: float = 20.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while client.last < until_seq and time.monotonic() < deadline:
        try:
            e = client.recv(timeout_s=0.5)
        except PublisherDead:
            continue
        if e is not None:
            got.append(e)
    return got


def test_subscriber_down_for_a_while_then_back_gets_everything_once(tmp_path: Path, ctx) -> None:
    """Fault: the subscriber process goes away and comes back with its last seq."""
    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx)
    try:
        with EventClient(events_ep, replay_ep, heartbeat_timeout_s=5) as client:
            for i in range(50):
                pub.publish(event(count=i, total=i))
            first = drain(client, 50)
            last = client.last
        for i in range(50, 3000):  # published while nobody listens
            pub.publish(event(count=i, total=i))
        with EventClient(events_ep, replay_ep, from_seq=last, heartbeat_timeout_s=5) as client:
            for i in range(3000, 3100):  # and live after it is back
                pub.publish(event(count=i, total=i))
            second = drain(client, 3100)
            assert client.replayed >= 2950 and client.lost == []
        seqs = [e["seq"] for e in first + second]
        assert seqs == list(range(1, 3101))
    finally:
        pub.close()


def test_slow_subscriber_does_not_slow_the_publisher_and_still_gets_all(
    tmp_path: Path, ctx
) -> None:
    """Fault: a subscriber stops reading while 20 MB of events go by."""
    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx, sndhwm=500)
    stalled = ctx.socket(zmq.SUB)  # never reads
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.connect(events_ep)
    pad = "x" * 1000
    n = 20_000
    try:
        with EventClient(events_ep, replay_ep, rcvhwm=100, heartbeat_timeout_s=30) as client:
            pub.publish(event(count=0, total=0, pad=pad))
            assert drain(client, 1)[0]["seq"] == 1
            started = time.monotonic()
            for i in range(1, n):
                pub.publish(event(count=i, total=i, pad=pad))
            publish_s = time.monotonic() - started
            assert pub.live_dropped == 0
            assert publish_s < 30, f"publisher blocked: {publish_s:.1f} s for {n} events"
            got = drain(client, n, timeout_s=40)
            assert [e["seq"] for e in got] == list(range(2, n + 1))
            assert client.replayed > 0  # the live feed did drop for it; replay filled in
    finally:
        stalled.close()
        pub.close()


def test_late_joiner_gets_snapshot_then_live_with_no_gap(tmp_path: Path, ctx) -> None:
    """Fault: a subscriber joins after tracks opened (the PUB/SUB slow-joiner problem)."""
    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx)
    try:
        pub.publish(event("stream.online", source="x", width=1, height=1, fps=1.0))
        pub.publish(event("track.start", track=1, label="person"))
        pub.publish(event("track.start", track=2, label="person"))
        pub.publish(event("track.end", track=1, label="person", frames=3, duration_s=0.1))
        for i in range(100):
            pub.publish(event(count=i, total=i))
        with EventClient(events_ep, replay_ep, from_seq=None, heartbeat_timeout_s=5) as client:
            snapshot = [client.recv(timeout_s=5) for _ in range(2)]
            assert [(e["type"], e.get("track")) for e in snapshot] == [
                ("stream.online", None),
                ("track.start", 2),
            ]
            snap_head = client.last
            assert snap_head == 104
            for i in range(200):
                pub.publish(event(count=i, total=i))
            live = drain(client, 304)
        assert [e["seq"] for e in live] == list(range(105, 305))
    finally:
        pub.close()


def test_filters_apply_locally_and_dead_publisher_is_flagged(tmp_path: Path, ctx) -> None:
    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx, heartbeat_s=0.1)
    client = EventClient(
        events_ep, replay_ep, types=["track."], streams=["b"], heartbeat_timeout_s=0.6
    )
    try:
        pub.publish(event("track.start", "a", track=1, label="p"))
        pub.publish(event("track.start", "b", track=2, label="p"))
        pub.publish(event(stream="b", count=1, total=1))
        got = drain(client, 3, timeout_s=5)
        assert [(e["stream"], e["track"]) for e in got] == [("b", 2)]
    finally:
        pub.close()
    with pytest.raises(PublisherDead, match="no heartbeat"):
        client.recv(timeout_s=5)
    assert not client.alive
    client.close()


PUBLISHER = r"""
import sys, time, zmq
from stream.journal import EventJournal
from stream.sinks import EventPublisher
path, events_ep, replay_ep, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pub = EventPublisher(ctx=zmq.Context(), endpoint=events_ep, replay_endpoint=replay_ep,
                     journal=EventJournal(path), heartbeat_s=0.1)
print("ready", pub.next_seq, flush=True)
for i in range(n):
    pub.publish({"v": 1, "seq": None, "type": "frame.dropped", "stream": "cam1", "frame": i,
                 "pts": None, "ts": "2026-01-01T00:00:00.000Z", "count": 1, "total": i})
    time.sleep(0.001)
print("done", pub.next_seq - 1, flush=True)
time.sleep(60)
"""


def _start(journal: Path, events_ep: str, replay_ep: str, n: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(journal), events_ep, replay_ep, str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = proc.stdout.readline().split()
    assert line[0] == "ready", line
    return proc, int(line[1])


def test_publisher_sigkilled_and_restarted_reuses_no_seq_and_loses_nothing(tmp_path: Path) -> None:
    """Fault: the publisher process dies by SIGKILL mid-stream and is started again."""
    events_ep, replay_ep = free_ports(2)
    journal = tmp_path / "j.sqlite"
    first, first_seq = _start(journal, events_ep, replay_ep, 1_000_000)
    assert first_seq == 1
    client = EventClient(events_ep, replay_ep, heartbeat_timeout_s=0.5, request_timeout_s=1.0)
    second = None
    try:
        got = drain(client, 300)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        with EventJournal.open_reader(journal) as r:
            journaled = r.head
        assert journaled >= 300
        with pytest.raises(PublisherDead):  # the client notices the silence
            while True:
                e = client.recv(timeout_s=5)
                assert e is not None
                got.append(e)
        second, second_seq = _start(journal, events_ep, replay_ep, 200)
        assert second_seq == journaled + 1  # no seq reused
        assert second.stdout.readline().split() == ["done", str(journaled + 200)]
        got += drain(client, journaled + 200)
        assert [e["seq"] for e in got] == list(range(1, journaled + 201))
        with EventJournal.open_reader(journal) as r:
            assert [e["seq"] for e in r.events_after(0)] == list(range(1, journaled + 201))
    finally:
        client.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_cli_replay_reads_the_journal_offline(tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    with EventJournal(tmp_path / "j.sqlite") as j:
        j.append(event("track.start", track=1, label="p"))
        j.append(event(count=1, total=1))
        j.append(event("track.end", track=1, label="p", frames=1, duration_s=0.1))
    assert main(["replay", str(tmp_path / "j.sqlite"), "--from-seq", "1", "--type", "track."]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(e["seq"], e["type"]) for e in lines] == [(3, "track.end")]
    assert main(["replay", str(tmp_path / "missing.sqlite")]) == 2


def test_cli_subscribe_resumes_from_seq(tmp_path: Path, ctx, capsys) -> None:
    from pipeline.cli import main

    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx, heartbeat_s=0.1)
    try:
        for i in range(10):
            pub.publish(event(count=i, total=i))
        rc = main(
            [
                "subscribe",
                events_ep,
                "--replay",
                replay_ep,
                "--from-seq",
                "4",
                "--count",
                "3",
                "--timeout",
                "5",
            ]
        )
        assert rc == 0
        assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [5, 6, 7]
    finally:
        pub.close()


def test_deeply_nested_json_from_a_hostile_server_is_dropped_not_fatal(ctx) -> None:
    """Fault: the SDK parsed the server's JSON unbounded; a deeply nested event raised
    RecursionError out of recv() and ended the iterator. Now it is logged and dropped, and
    the next good event arrives."""
    (events_ep,) = free_ports(1)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(events_ep)
    client = EventClient(events_ep, None, heartbeat_timeout_s=None)
    deep = b'{"seq": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    good = json.dumps(event("track.start", "a", seq=1, track=1, label="p")).encode()
    try:
        got = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:  # the slow-joiner window
            pub.send_multipart([b"track.start", deep])
            pub.send_multipart([b"track.start", good])
            got = client.recv(timeout_s=0.2)
        assert got is not None and got["seq"] == 1 and "x" not in got
    finally:
        client.close()
        pub.close()


def test_deeply_nested_json_in_a_replay_answer_is_dropped_not_fatal(ctx) -> None:
    """The same fault on the replay endpoint: a nested reply header, then a nested replayed
    event; the good event replayed after it arrives."""
    events_ep, replay_ep = free_ports(2)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(events_ep)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(replay_ep)
    client = EventClient(events_ep, replay_ep, from_seq=0, heartbeat_timeout_s=None)
    nested = b"[" * 50_000 + b"]" * 50_000
    good = json.dumps(event("track.start", "a", seq=1, track=1, label="p")).encode()
    hb = json.dumps({"head": 1, "epoch": "e", "interval_s": 1, "ts": 0}).encode()

    stop = threading.Event()

    def serve() -> None:  # the fake replay endpoint, in its own thread (recv() waits for it)
        while not stop.is_set():
            if not router.poll(100):
                continue
            peer, command, body = router.recv_multipart()
            rid = json.loads(body)["id"]
            header = {"id": rid, "after": 0, "last": 1, "first": 1, "head": 1, "more": False}
            router.send_multipart([peer, b"EVENTS", nested])  # a header nobody can parse
            router.send_multipart(
                [peer, b"EVENTS", json.dumps(header).encode(), b'{"seq": ' + nested + b"}",
                 good]
            )  # fmt: skip

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        got = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            pub.send_multipart([b"HEARTBEAT", hb])
            got = client.recv(timeout_s=0.2)
        assert got is not None and got["seq"] == 1
        assert client.replayed >= 1 and not client.lost
    finally:
        stop.set()
        server.join(10)
        client.close()
        pub.close()
        router.close()
