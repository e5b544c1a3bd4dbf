"""Generated hostile input for every endpoint of a live vigil, and the checks that it is still
whole afterwards (issue 14). Used by tests/integration/test_fuzz_endpoints.py and
scripts/bench_hostile.py, so the bench measures exactly what CI runs.

Cases come from a seeded :class:`random.Random` (the same cases on every run, a bounded
number): random bytes, random multipart shapes, boundary integers, deep and huge JSON, wrong
types, oversized messages (sent from a child process: libzmq 4.3.5 can crash a sender that
its peer cuts off mid-message, and that sender must not be the test), slow readers and
abandoned connections. Every attack function returns the number of cases it sent.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import zmq

BOUNDARY_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1,
                 2**64, 10**100, -(10**100)]  # fmt: skip
WRONG_TYPES: list[Any] = [None, True, False, "", "x" * 300, [], [1, 2], {}, {"a": {"b": 1}},
                          1.5, float("1e308"), -0.0]  # fmt: skip

#: Growth of all vigil processes' RSS that the harness tolerates over a whole attack.
MEMORY_BOUND_BYTES = 300 * 1024 * 1024


@dataclass(frozen=True)
class Endpoints:
    """Where a live vigil listens."""

    events: str
    replay: str
    frames: str
    control: str
    http_port: int


# -- generated values -------------------------------------------------------------------------


def deep_json(depth: int, rng: random.Random) -> bytes:
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    return opener * depth + b"1" + closer * depth


def json_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: scalars, boundary integers, wrong types, small containers."""
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        return rng.choice(BOUNDARY_INTS + WRONG_TYPES)
    if roll < 0.6:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 40)))
    if roll < 0.8:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {str(json_value(rng, 4))[:20]: json_value(rng, depth + 1) for _ in range(3)}


def json_bodies(rng: random.Random, keys: list[str]) -> Iterator[bytes]:
    """Endless request bodies: objects with the protocol's keys set to hostile values, deep
    nesting, huge strings, invalid UTF-8, not JSON at all. Each stays under 64 KiB: a bigger
    one makes ZeroMQ drop the sender's connection, and with it the replies to all the cases
    sent before it on that connection (oversized messages go on their own connections)."""
    while True:
        roll = rng.random()
        if roll < 0.45:
            body = {k: json_value(rng) for k in rng.sample(keys, rng.randrange(0, len(keys) + 1))}
            try:
                yield json.dumps(body).encode()
            except ValueError:  # nan/inf never reach here; keep the generator total anyway
                yield b"{}"
        elif roll < 0.55:
            yield deep_json(rng.choice([20, 1_000, 10_000]), rng)  # all under 64 KiB
        elif roll < 0.65:
            yield json.dumps({keys[0]: "y" * rng.choice([5_000, 60_000])}).encode()
        elif roll < 0.75:
            yield b'{"' + bytes(rng.randrange(0x80, 0x100) for _ in range(20)) + b'": 1}'
        elif roll < 0.85:
            yield json.dumps({keys[0]: rng.choice(BOUNDARY_INTS)}).encode()
        else:
            yield rng.randbytes(rng.randrange(0, 300))


def random_frames(rng: random.Random, max_frames: int = 5) -> list[bytes]:
    return [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, max_frames + 1))]


# -- oversized messages, from a child process -------------------------------------------------

_OVERSIZED = """
import sys, time, zmq
kind, endpoint, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = zmq.Context()
sock = ctx.socket({"xsub": zmq.XSUB, "dealer": zmq.DEALER, "req": zmq.REQ}[kind])
sock.setsockopt(zmq.LINGER, 1000)
sock.connect(endpoint)
if kind == "xsub":
    sock.send(b"\\x01" + b"s" * size)
elif kind == "dealer":
    sock.send_multipart([b"REPLAY", b'{"after": 0, "x": "' + b"y" * size + b'"}'])
else:
    sock.send(b'{"op": "list", "x": "' + b"y" * size + b'"}')
time.sleep(0.5)
sock.close()
ctx.term()
"""


def send_oversized(kind: str, endpoint: str, size: int) -> None:
    """One message of ``size`` bytes from a child process (``xsub``: a SUBSCRIBE; ``dealer``:
    a REPLAY; ``req``: a control request). The child may crash; that is the attacker's loss."""
    subprocess.run(
        [sys.executable, "-c", _OVERSIZED, kind, endpoint, str(size)],
        timeout=60,
        capture_output=True,
    )


# -- attacks, one per endpoint ----------------------------------------------------------------


def _sock(ctx: zmq.Context, kind: int, endpoint: str, **opts: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in opts.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(endpoint)
    return sock


def attack_event_xpub(ctx: zmq.Context, endpoint: str, seed: int, n: int = 150) -> int:
    """Random (un)subscriptions and raw frames on the event endpoint, a 5 MiB SUBSCRIBE, a
    slow reader subscribed to everything, abandoned subscribers."""
    rng = random.Random(seed)
    cases = 0
    xsub = _sock(ctx, zmq.XSUB, endpoint)
    for _ in range(n):
        roll = rng.random()
        if roll < 0.4:
            msg = rng.choice([b"\x01", b"\x00"]) + rng.randbytes(rng.randrange(0, 900))
        elif roll < 0.6:
            msg = rng.randbytes(rng.randrange(0, 600))
        else:
            msg = b"\x01" + rng.choice([b"HEARTBEAT", b"", b"stream.", b"\xff" * 40])
        xsub.send(msg)
        cases += 1
    xsub.close()
    slow = _sock(ctx, zmq.SUB, endpoint, RCVHWM=1, RCVBUF=4096)
    slow.setsockopt(zmq.SUBSCRIBE, b"")  # never reads: the server's HWM drops for it
    for _ in range(20):  # abandoned: join, subscribe, go, without a word
        gone = _sock(ctx, zmq.SUB, endpoint)
        gone.setsockopt(zmq.SUBSCRIBE, rng.randbytes(8))
        gone.close()
        cases += 1
    send_oversized("xsub", endpoint, 5 * 1024 * 1024)
    cases += 1
    slow.close()
    return cases + 1


def attack_replay(ctx: zmq.Context, endpoint: str, seed: int, n: int = 200) -> int:
    """Random multipart shapes and hostile bodies for REPLAY/SNAPSHOT/HEAD, REQ-style
    envelopes, 40 client identities (over the cap), a client that asks and never reads, a
    2 MiB request."""
    rng = random.Random(seed)
    bodies = json_bodies(rng, ["after", "limit", "id"])
    cases = 0
    dealer = _sock(ctx, zmq.DEALER, endpoint, SNDHWM=10_000)
    for _ in range(n):
        roll = rng.random()
        if roll < 0.6:
            frames = [rng.choice([b"REPLAY", b"SNAPSHOT", b"HEAD"]), next(bodies)]
        elif roll < 0.7:
            frames = [b"", b"REPLAY", next(bodies)]  # as a REQ socket sends it
        else:
            frames = random_frames(rng)
        dealer.send_multipart(frames)
        cases += 1
    stubborn = _sock(ctx, zmq.DEALER, endpoint, RCVHWM=1, RCVBUF=4096)
    for _ in range(50):  # asks for everything, never reads: at most replay_hwm answers wait
        stubborn.send_multipart([b"REPLAY", b'{"after": 0}'])
        cases += 1
    many = [_sock(ctx, zmq.DEALER, endpoint) for _ in range(40)]
    for sock in many:  # 40 clients: those past replay_max_clients are refused, politely
        sock.send_multipart([b"REPLAY", b'{"after": 0, "limit": 1}'])
        cases += 1
    send_oversized("dealer", endpoint, 2 * 1024 * 1024)
    cases += 1
    _drain(dealer, 2.0)
    for sock in (dealer, stubborn, *many):
        sock.close()
    return cases


def attack_control(
    ctx: zmq.Context, endpoint: str, seed: int, allowed_dir: str, n: int = 120
) -> int:
    """Random multipart shapes and hostile JSON to the REP (through a DEALER, so no reply is
    awaited in between), adds with 5,000-character uris, paths outside and inside the
    allow-list, storm knobs; a 400 KiB request."""
    rng = random.Random(seed)
    bodies = json_bodies(rng, ["op", "uri", "stream_id", "min_restart_interval_s"])
    specials = [
        {"op": "add", "uri": "/" + "a" * 5000},
        {"op": "add", "uri": f"{allowed_dir}/{'a' * 5000}.mp4"},
        {"op": "add", "uri": "/etc/passwd"},
        {"op": "add", "uri": f"{allowed_dir}/../../etc/passwd"},
        {"op": "add", "uri": f"{allowed_dir}/junk.mp4"},
        {"op": "add", "uri": "/dev/video0"},
        {"op": "add", "uri": "rtsp://127.0.0.1:9/x", "min_restart_interval_s": 0},
        {"op": "add", "uri": "rtsp://127.0.0.1:9/x", "stream_id": "bad id!"},
        {"op": "add", "uri": ["rtsp://x"]},
        {"op": "remove", "stream_id": {"a": [1] * 100}},
        {"op": ["list"]},
        {"op": "x" * 10_000},
    ]
    dealer = _sock(ctx, zmq.DEALER, endpoint, SNDHWM=10_000)
    cases = 0
    for i in range(n):
        if i < len(specials):
            frames = [json.dumps(specials[i]).encode()]
        elif rng.random() < 0.7:
            frames = [next(bodies)]
        else:
            frames = random_frames(rng, 4)
        dealer.send_multipart([b"", *frames])
        cases += 1
    send_oversized("req", endpoint, 400 * 1024)
    cases += 1
    replies = _drain(dealer, 10.0, want=n)
    dealer.close()
    if replies < n:
        raise AssertionError(f"control answered {replies} of {n} requests")
    return cases


def attack_frames(ctx: zmq.Context, endpoint: str, seed: int, n: int = 100) -> int:
    """Random subscriptions on the JPEG frame feed, a slow reader, abandoned subscribers and
    a 5 MiB SUBSCRIBE."""
    rng = random.Random(seed)
    xsub = _sock(ctx, zmq.XSUB, endpoint)
    for _ in range(n):
        xsub.send(rng.choice([b"\x01", b"\x00", b""]) + rng.randbytes(rng.randrange(0, 900)))
    xsub.close()
    slow = _sock(ctx, zmq.SUB, endpoint, RCVHWM=1, RCVBUF=4096)
    slow.setsockopt(zmq.SUBSCRIBE, b"")
    for _ in range(10):
        gone = _sock(ctx, zmq.SUB, endpoint)
        gone.setsockopt(zmq.SUBSCRIBE, b"")
        gone.close()
    send_oversized("xsub", endpoint, 5 * 1024 * 1024)
    slow.close()
    return n + 12


def attack_http(port: int, seed: int, n: int = 60) -> int:
    """Raw TCP: random request lines, bad methods, huge headers, binary garbage, HTTP/0.9,
    requests cut short and closed (not slowloris: each connection is closed at once)."""
    rng = random.Random(seed)
    paths = ["/", "/healthz", "/readyz", "/metrics", "/api/status", "/video/nope",
             "/snapshot/cam1.jpg", "/%00", "/" + "a" * 8000, "/../../etc/passwd"]  # fmt: skip
    cases = 0
    for _ in range(n):
        roll = rng.random()
        if roll < 0.3:
            method = rng.choice([b"GET", b"POST", b"DELETE", b"BREW", b"\xff\xfe", b"G" * 500])
            req = method + b" " + rng.choice(paths).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        elif roll < 0.5:
            big = b"X-Junk: " + b"j" * rng.choice([1_000, 70_000]) + b"\r\n"
            req = b"GET /healthz HTTP/1.1\r\n" + big * rng.randrange(1, 3) + b"\r\n"
        elif roll < 0.65:
            req = b"GET /healthz\r\n"  # HTTP/0.9
        elif roll < 0.8:
            req = b"POST /api/status HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
        else:
            req = rng.randbytes(rng.randrange(1, 2000))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            try:
                conn.sendall(req)
                conn.shutdown(socket.SHUT_WR)  # a request cut short ends here
                conn.recv(4096)  # an answer or a close; either is fine
            except OSError:
                pass
        cases += 1
    return cases


def _drain(sock: zmq.Socket, quiet_s: float, want: int | None = None) -> int:
    """Read replies until ``want`` arrived or none came for ``quiet_s``; how many came."""
    got = 0
    while want is None or got < want:
        if not sock.poll(int(quiet_s * 1000)):
            break
        sock.recv_multipart()
        got += 1
    return got


# -- is it still whole? -----------------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as res:
            return res.status, res.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except OSError:
        return 0, ""


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def restarts(port: int) -> int:
    """Stage restarts so far plus event feed thread restarts (from /api/status, /metrics)."""
    code, body = http_get(port, "/api/status")
    stages = json.loads(body)["stages"] if code == 200 else []
    code, text = http_get(port, "/metrics")
    feed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vigil_feed_server_restarts_total")
    )
    return sum(s["restarts"] for s in stages) + int(feed)


def events_published(port: int) -> float:
    _, text = http_get(port, "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vigil_events_published_total{")
    )


def check_whole(ctx: zmq.Context, ep: Endpoints, timeout_s: float = 60.0) -> list[str]:
    """What is broken (empty: nothing): heartbeats and events flow on the event endpoint,
    replay HEAD and control ``list`` answer, /healthz is 200. Waits are bounded by
    ``timeout_s`` each; nothing is timed."""
    problems: list[str] = []
    sub = _sock(ctx, zmq.SUB, ep.events)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.SUBSCRIBE, b"HEARTBEAT")  # heartbeats go out only when someone asks
    heartbeats: list[int] = []
    events = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (len(heartbeats) < 2 or not events):
        if sub.poll(500):
            topic, body = sub.recv_multipart()[:2]
            if topic == b"HEARTBEAT":
                heartbeats.append(json.loads(body)["head"])
            else:
                events += 1
        if len(heartbeats) >= 2 and heartbeats[-1] > heartbeats[0]:
            events = events or 1  # the head moved: events are being published
    sub.close()
    if len(heartbeats) < 2:
        problems.append(f"event endpoint: {len(heartbeats)} heartbeats in {timeout_s:.0f} s")
    if not events:
        problems.append(f"event endpoint: no event in {timeout_s:.0f} s")
    dealer = _sock(ctx, zmq.DEALER, ep.replay)
    dealer.send_multipart([b"HEAD", b'{"id": "check"}'])
    if not dealer.poll(int(timeout_s * 1000)) or dealer.recv_multipart()[0] != b"HEAD":
        problems.append("replay: no HEAD answer")
    dealer.close()
    req = _sock(ctx, zmq.REQ, ep.control)
    req.send(b'{"op": "list"}')
    if not req.poll(int(timeout_s * 1000)) or not json.loads(req.recv()).get("ok"):
        problems.append("control: no list answer")
    req.close()
    if http_get(ep.http_port, "/healthz")[0] != 200:
        problems.append("http: /healthz is not 200")
    return problems
