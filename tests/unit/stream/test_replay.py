"""The feed server: chunked replay, snapshot, heartbeats, bad requests, CURVE."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import zmq
import zmq.auth

from stream.journal import EventJournal
from stream.sinks import EventPublisher
from tests.support.feed import dealer, event, free_ports, request, start_publisher


def test_replay_answers_in_bounded_chunks_in_order(feed, ctx) -> None:
    pub, _, replay_ep = feed
    for i in range(2500):
        pub.publish(event(count=i, total=i))
    sock = dealer(ctx, replay_ep)
    got, after, chunks = [], 0, 0
    while True:
        reply = request(sock, b"REPLAY", {"after": after, "limit": 5000, "id": chunks})
        assert reply[0] == b"EVENTS"
        header = json.loads(reply[1])
        assert header["id"] == chunks and len(reply) - 2 <= 1000  # capped at max_chunk
        got += [json.loads(x)["seq"] for x in reply[2:]]
        after, chunks = header["last"], chunks + 1
        if not header["more"]:
            break
    assert got == list(range(1, 2501)) and chunks == 3
    assert header["head"] == 2500 and header["first"] == 1
    # a REQ client works too (its envelope has an empty delimiter)
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(replay_ep)
    reply = request(req, b"HEAD", {})
    assert reply[0] == b"HEAD" and json.loads(reply[1])["head"] == 2500


def test_garbage_and_oversized_requests_are_ignored_logged_and_endpoint_serves(
    feed, ctx, caplog
) -> None:
    """Fault: a broken or hostile client sends junk to the replay endpoint."""
    pub, _, replay_ep = feed
    pub.publish(event())
    sock = dealer(ctx, replay_ep)
    caplog.set_level(logging.WARNING, logger="stream.replay")
    junk = [
        [b"\x00\xff garbage"],
        [b"REPLAY", b"{}", b"extra"],
        [b"DELETE", b"{}"],
        [b"REPLAY", b"x" * 100_000],  # oversized
        [b"REPLAY", b"not json"],
        [b"REPLAY", b'{"after": -5}'],
        [b"REPLAY", b'{"after": 0, "limit": "all"}'],
        [b"REPLAY", b"[1, 2]"],
    ]
    for frames in junk:
        sock.send_multipart(frames)
    errors = []
    deadline = time.monotonic() + 5
    while len(errors) < 4 and time.monotonic() < deadline:  # the 4 well-framed bad bodies
        if sock.poll(200):
            reply = sock.recv_multipart()
            assert reply[0] == b"ERROR"
            errors.append(json.loads(reply[1])["error"])
    assert len(errors) == 4
    big = dealer(ctx, replay_ep)  # over MAXMSGSIZE: ZeroMQ drops that peer, the server stays
    big.send_multipart([b"REPLAY", b"y" * 2_000_000])
    reply = request(sock, b"REPLAY", {"after": 0, "id": "ok"})
    assert reply[0] == b"EVENTS" and json.loads(reply[2])["seq"] == 1
    assert pub.feed.rejected == 8
    text = caplog.text
    assert "ignored a malformed request" in text and "bad REPLAY request" in text
    big.close()


def test_snapshot_gives_open_state_at_a_head(feed, ctx) -> None:
    pub, _, replay_ep = feed
    pub.publish(event("stream.online", source="x", width=1, height=1, fps=1.0))
    pub.publish(event("track.start", track=1, label="person"))
    pub.publish(event("track.start", track=2, label="person"))
    pub.publish(event("track.end", track=1, label="person", frames=3, duration_s=0.1))
    pub.publish(event(count=1, total=1))
    deadline = time.monotonic() + 5
    while pub.feed.head < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    reply = request(dealer(ctx, replay_ep), b"SNAPSHOT", {"id": 1})
    assert reply[0] == b"SNAPSHOT" and json.loads(reply[1])["head"] == 5
    state = [(e["type"], e.get("track")) for e in map(json.loads, reply[2:])]
    assert state == [("stream.online", None), ("track.start", 2)]


def test_snapshot_survives_a_restart_from_the_journal(tmp_path: Path, ctx) -> None:
    events_ep, replay_ep = free_ports(2)
    journal = tmp_path / "j.sqlite"
    pub = EventPublisher(ctx=ctx, endpoint=events_ep, journal=EventJournal(journal))
    pub.publish(event("track.start", track=7, label="person"))
    pub.close()
    pub = EventPublisher(
        ctx=ctx, endpoint=events_ep, replay_endpoint=replay_ep, journal=EventJournal(journal)
    )
    try:
        reply = request(dealer(ctx, replay_ep), b"SNAPSHOT", {})
        assert [json.loads(x)["track"] for x in reply[2:]] == [7]
        assert json.loads(reply[1])["head"] == 1
    finally:
        pub.close()


def test_heartbeats_carry_the_head_and_only_go_to_who_asks(feed, ctx) -> None:
    pub, events_ep, _ = feed
    plain = ctx.socket(zmq.SUB)
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    plain.connect(events_ep)
    time.sleep(0.5)  # longer than heartbeat_s: a plain subscriber gets no heartbeat
    assert not plain.poll(0)
    hb = ctx.socket(zmq.SUB)
    hb.setsockopt(zmq.SUBSCRIBE, b"HEARTBEAT")
    hb.connect(events_ep)
    assert hb.poll(3000)
    topic, body = hb.recv_multipart()
    assert topic == b"HEARTBEAT" and json.loads(body)["head"] == 0
    pub.publish(event())
    deadline = time.monotonic() + 3
    head = 0
    while head < 1 and time.monotonic() < deadline:
        if hb.poll(500):
            head = json.loads(hb.recv_multipart()[1])["head"]
    assert head == 1
    plain.close()
    hb.close()


def test_curve_subscriber_without_the_server_key_gets_nothing(tmp_path: Path, ctx) -> None:
    """Security: events on a CURVE endpoint reach only clients that hold the server's key."""
    from stream.client import EventClient

    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "server")
    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx, curve_secret_key_file=secret_file)
    intruder = ctx.socket(zmq.SUB)
    intruder.setsockopt(zmq.SUBSCRIBE, b"")
    intruder.setsockopt(zmq.LINGER, 0)
    intruder.connect(events_ep)
    try:
        with EventClient(
            events_ep, replay_ep, curve_server_key=public_file, heartbeat_timeout_s=5
        ) as client:
            for i in range(5):
                pub.publish(event(count=i, total=i))
            got = [client.recv(timeout_s=5) for _ in range(5)]
            assert [e["seq"] for e in got if e] == [1, 2, 3, 4, 5]
        assert not intruder.poll(500)
    finally:
        intruder.close()
        pub.close()
