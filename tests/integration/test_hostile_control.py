"""Hostile peers against the control endpoint (issue 14): each test injects one request a
network can send and checks that it gets an error reply and the endpoint (and run) go on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.control import ControlError, ControlServer, Deferred, request, source_allowed
from pipeline.graph.supervisor import GraphRun
from pipeline.protocol import Endpoints
from stream.zsocket import CurveServerKeys, load_client_keys
from tests.support.feed import free_ports


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


class _Serving:
    """A ControlServer served from a thread, as the supervisor's loop does."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self._stop = threading.Event()
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.server.serve(50)
        except BaseException as exc:  # what the unguarded supervisor loop died of
            self.crashed = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.server.close()


def _req(zctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = zctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _echo(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("op") == "boom":
        raise OSError(36, "File name too long")  # Path.is_dir on a 5,000-character uri
    return {"ok": True, "echo": req.get("op")}


@pytest.mark.parametrize(
    "frames",
    [
        [b'{"op": "list"}', b"second frame"],  # a REP state error on send, before the fix
        [b"[" * 30_000 + b"]" * 30_000],  # RecursionError in json
        [b'{"op": "boom"}'],  # the handler's OSError
        [b"\xff\xfe not json"],
        [b"[1, 2, 3]"],
        [b""],
    ],
    ids=["multipart", "deep-json", "handler-oserror", "bytes", "not-object", "empty"],
)
def test_a_bad_control_request_gets_an_error_reply_and_the_endpoint_goes_on(
    zctx: zmq.Context, frames: list[bytes]
) -> None:
    """Fault: a 2-frame request, nested JSON or a request whose handling raises OSError ended
    the whole run (serve() unguarded in the supervisor loop, traceback, exit 1)."""
    (endpoint,) = free_ports(1)
    serving = _Serving(ControlServer(zctx, endpoint, _echo))
    try:
        bad = _req(zctx, endpoint)
        bad.send_multipart(frames)
        assert bad.poll(10_000), "no reply to a bad request"
        reply = json.loads(bad.recv())
        assert reply["ok"] is False and reply["error"]
        good = request(endpoint, {"op": "list"}, timeout_s=10)
        assert good == {"ok": True, "echo": "list"}
        assert serving.crashed is None
        bad.close()
    finally:
        serving.close()


def test_a_400_kib_control_request_drops_the_peer_not_the_run(zctx: zmq.Context) -> None:
    """Fault: a 400 MiB request left 900 MB resident in the supervisor. The REP now has
    MAXMSGSIZE (runtime.control_max_message_bytes, 64 KiB): the sender is dropped unread."""
    (endpoint,) = free_ports(1)
    serving = _Serving(ControlServer(zctx, endpoint, _echo, max_message_bytes=64 * 1024))
    try:
        subprocess.run(  # another process: libzmq may crash a sender cut off mid-message
            [sys.executable, "-c", _BIG_REQUEST, endpoint, str(400 * 1024)],
            timeout=60,
            capture_output=True,
        )
        assert serving.server.answered == 0  # never read, never answered
        assert request(endpoint, {"op": "list"}, timeout_s=10)["ok"]
    finally:
        serving.close()


_BIG_REQUEST = """
import sys, zmq
ctx = zmq.Context()
sock = ctx.socket(zmq.REQ)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(sys.argv[1])
sock.send(b'{"op": "list", "x": "' + b"x" * int(sys.argv[2]) + b'"}')
print(sock.poll(2000))
sock.close()
ctx.term()
"""


def test_a_slow_probe_does_not_hold_the_loop(zctx: zmq.Context) -> None:
    """Fault: the source probe ran synchronously in the supervisor's loop (a slow camera or
    file stopped every report, restart and /healthz). Now serve() returns at once while the
    probe runs in a thread; the reply goes out when it is done."""
    (endpoint,) = free_ports(1)
    release = threading.Event()

    def handler(req: dict[str, Any]) -> Any:
        return Deferred(
            lambda: release.wait(30),
            lambda result: {"ok": True, "probed": result},
            timeout_s=60,
            timeout_reply={"ok": False, "error": "late"},
        )

    server = ControlServer(zctx, endpoint, handler)
    try:
        client = _req(zctx, endpoint)
        client.send(b'{"op": "add"}')
        turns = 0
        while turns < 20:  # the loop keeps turning while the probe is blocked
            assert server.serve(50) is False
            turns += 1
        assert not client.poll(0)
        release.set()
        deadline = time.monotonic() + 10
        while not client.poll(0) and time.monotonic() < deadline:
            server.serve(50)
        assert json.loads(client.recv()) == {"ok": True, "probed": True}
        client.close()
    finally:
        server.close()


# -- the supervisor's handler -----------------------------------------------------------------


class _FakeProc:
    exitcode: int | None = None
    pid = 0


@pytest.fixture
def run(tmp_path: Path) -> Iterator[GraphRun]:
    allowed = tmp_path / "videos"
    allowed.mkdir()
    cfg = load_config(
        overrides={
            "runtime.control": "tcp://127.0.0.1:1",
            "runtime.max_streams": 2,
            "runtime.allowed_sources": ["rtsp://", str(allowed)],
            "output.dir": str(tmp_path / "out"),
        },
        env={},
    )
    plain = cfg.model_dump(mode="json")
    plain["runtime"]["mode"] = "live"
    r = GraphRun(cfg, plain, Endpoints.in_dir(tmp_path), None)

    def fake_start(src: dict[str, Any]) -> None:  # no process: the handler's bookkeeping only
        sid = src["stream_id"]
        r.source_stops[sid] = threading.Event()
        r.source_uris[sid] = src["uri"]
        r.started_streams.append(sid)
        r.procs[f"source:{sid}"] = _FakeProc()

    r._start_source = fake_start  # noqa: SLF001
    yield r


def _answer(run: GraphRun, req: dict[str, Any]) -> dict[str, Any]:
    reply = run.handle(req)
    deadline = time.monotonic() + 30
    while isinstance(reply, Deferred):
        done = reply.reply()
        if done is not None:
            return done
        assert time.monotonic() < deadline, "probe never finished"
        time.sleep(0.05)
    return reply


def test_a_5000_character_uri_is_refused_in_one_line(run: GraphRun) -> None:
    """Fault: an add with a 5,000-character uri raised OSError (File name too long)."""
    root = run.cfg.runtime.allowed_sources[1]
    for uri in ("/" + "a" * 5000, "rtsp://" + "h" * 5000, f"{root}/{'a' * 5000}.mp4"):
        reply = _answer(run, {"op": "add", "uri": uri, "stream_id": "long"})
        assert reply["ok"] is False and "uri" in reply["error"]


def test_control_sources_outside_the_allow_list_are_refused_alike(
    run: GraphRun, tmp_path: Path
) -> None:
    """Fault: control accepted any local file, folder or device, and its errors said whether
    a path exists. Outside runtime.allowed_sources: one refusal for all; inside: one refusal
    for missing and unreadable alike."""
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    outside = [str(secret), str(tmp_path / "missing.mp4"), "/dev/video0", "/etc/passwd",
               str(tmp_path / "videos" / ".." / "secret.txt"), "file:///etc/passwd",
               "http://127.0.0.1/x", "v4l2:///dev/video0", "relative.mp4"]  # fmt: skip
    errors = {_answer(run, {"op": "add", "uri": u, "stream_id": "s1"})["error"] for u in outside}
    assert errors == {"uri: not allowed by runtime.allowed_sources"}
    junk = tmp_path / "videos" / "junk.mp4"
    junk.write_bytes(b"not a video")
    inside = [str(junk), str(tmp_path / "videos" / "missing.mp4")]
    errors = {_answer(run, {"op": "add", "uri": u, "stream_id": "s1"})["error"] for u in inside}
    assert errors == {"uri: cannot be opened as a video source"}
    assert not run.started_streams


def test_source_allowed_resolves_symlinks_out_of_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    assert not source_allowed(str(root / "escape" / "passwd"), [str(root)])
    assert source_allowed(str(root / "a.mp4"), [str(root)])
    assert not source_allowed(str(tmp_path / "rootx" / "a.mp4"), [str(root)])
    assert source_allowed("rtsp://cam/x", ["rtsp://"]) and not source_allowed("rtsp://cam", [])


def test_per_request_knobs_cannot_make_a_reconnect_storm(run: GraphRun) -> None:
    """Fault: min_restart_interval_s 0 and a tiny backoff gave 800 reconnect events in 10 s."""
    for value in (0, 0.001, 0.99):
        req = {"op": "add", "uri": "rtsp://127.0.0.1:9/x", "min_restart_interval_s": value}
        reply = _answer(run, req)
        assert reply["ok"] is False and "min_restart_interval_s" in reply["error"]
    assert not run.started_streams


def test_max_streams_counts_running_streams_a_remove_frees_a_place(run: GraphRun) -> None:
    """Fault: max_streams counted every stream ever started, so a remove never freed one."""
    for sid in ("a", "b"):
        added = _answer(run, {"op": "add", "uri": f"rtsp://127.0.0.1:9/{sid}", "stream_id": sid})
        assert added["ok"]
    full = _answer(run, {"op": "add", "uri": "rtsp://127.0.0.1:9/c", "stream_id": "c"})
    assert full["ok"] is False and "max_streams" in full["error"]
    assert _answer(run, {"op": "remove", "stream_id": "a"})["ok"]
    run.procs["source:a"].exitcode = 0  # the removed source process ends
    assert _answer(run, {"op": "add", "uri": "rtsp://127.0.0.1:9/c", "stream_id": "c"})["ok"]
    weird = _answer(run, {"op": "remove", "stream_id": {"x": [1] * 1000}})
    assert weird["ok"] is False and len(weird["error"]) < 200


def test_control_takes_curve_clients_only_when_keys_are_set(
    zctx: zmq.Context, tmp_path: Path
) -> None:
    """Fault: the control endpoint took plain clients even with curve keys configured."""
    server_pub, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    clients = tmp_path / "clients"
    clients.mkdir()
    client_pub, client_secret = zmq.auth.create_certificates(clients, "client")
    (tmp_path / "client.key_secret").write_bytes(Path(client_secret).read_bytes())
    Path(client_secret).unlink()  # the allow-list folder holds public certificates only
    (endpoint,) = free_ports(1)
    keys = CurveServerKeys.load(server_secret, clients)
    serving = _Serving(ControlServer(zctx, endpoint, _echo, curve=keys))
    try:
        with pytest.raises(ControlError):
            request(endpoint, {"op": "list"}, timeout_s=1.5)  # plain: no answer
        stranger = load_client_keys(server_pub)  # knows the server key, not on the list
        with pytest.raises(ControlError):
            request(endpoint, {"op": "list"}, timeout_s=1.5, curve=stranger)
        admitted = load_client_keys(server_pub, tmp_path / "client.key_secret")
        assert request(endpoint, {"op": "list"}, timeout_s=10, curve=admitted)["ok"]
    finally:
        serving.close()
        from stream.zsocket import release_authenticator

        release_authenticator(zctx)


def test_readyz_says_when_the_event_feed_server_is_down(run: GraphRun) -> None:
    """Fault: the feed server died and /readyz still said 200. The publish stage reports
    vigil_feed_server_down while it restarts the thread; the supervisor names it."""
    from pipeline.metrics import StageMetrics
    from pipeline.stages.publish_sinks import feed_health

    class _DeadPublisher:
        feed_restarts = 0
        feed_up = False

        def check_feed(self) -> bool:
            self.feed_restarts += 1
            return True

    run.procs["publish"] = _FakeProc()
    run.stats_seen.add("publish")
    metrics = StageMetrics()
    feed_health(_DeadPublisher(), metrics)
    run.metrics.update("publish", metrics.snapshot())
    run._refresh_status()  # noqa: SLF001
    assert "stage publish: feed server down, restarting" in run.status["reasons"]
    assert run.metrics.value("vigil_feed_server_restarts") == 1


def test_frame_feed_takes_curve_clients_only_when_keys_are_set(
    zctx: zmq.Context, tmp_path: Path
) -> None:
    """Fault: the JPEG frame feed took plain subscribers even with CURVE keys configured."""
    import numpy as np

    from stream.sinks import JpegFrameFeed
    from stream.zsocket import client_socket

    server_pub, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    (endpoint,) = free_ports(1)
    feed = JpegFrameFeed(zctx, endpoint, curve=CurveServerKeys.load(server_secret))
    plain = client_socket(zctx, zmq.SUB, endpoint)
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    keyed = client_socket(zctx, zmq.SUB, endpoint, curve=load_client_keys(server_pub))
    keyed.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        frame = np.zeros((16, 16, 3), np.uint8)
        got = None
        deadline = time.monotonic() + 15
        while got is None and time.monotonic() < deadline:  # until the keyed one has joined
            feed.send("cam1", frame, {"frame": 0})
            if keyed.poll(200):
                got = keyed.recv_multipart()
        assert got is not None and got[0] == b"cam1"
        assert not plain.poll(500), "a plain subscriber got a CURVE feed's frame"
    finally:
        plain.close()
        keyed.close()
        feed.close()


def test_a_hanging_probe_times_out_and_hanging_probes_are_capped(
    run: GraphRun, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Fault: a source whose probe never returns (a FIFO, a device that hangs). The reply
    says so after runtime.probe_timeout_s; probes still hanging are capped, so requests
    cannot pile up threads."""
    import stream.sources

    hang = threading.Event()
    monkeypatch.setattr(stream.sources, "probe_source", lambda uri, **_: hang.wait(60))
    run.cfg.runtime.probe_timeout_s = 0.2
    video = tmp_path / "videos" / "fifo.mp4"
    try:
        for i in range(Deferred.MAX_THREADS):
            reply = _answer(run, {"op": "add", "uri": str(video), "stream_id": f"h{i}"})
            assert reply == {"ok": False, "error": "uri: no answer from the source in 0.2 s"}
        refused = _answer(run, {"op": "add", "uri": str(video), "stream_id": "h9"})
        assert refused["ok"] is False and "too many source probes" in refused["error"]
    finally:
        hang.set()
    assert not run.started_streams


_control_frames = st.one_of(
    st.dictionaries(
        st.sampled_from(["op", "uri", "stream_id", "min_restart_interval_s"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers())),
        max_size=4,
    ).map(lambda d: [json.dumps(d).encode()]),
    st.integers(1, 5_000).map(lambda n: [b'{"op":' * n + b"1" + b"}" * n]),
    st.lists(st.binary(max_size=80), min_size=1, max_size=4),
)


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests=st.lists(_control_frames, min_size=1, max_size=6))
def test_generated_control_requests_each_get_one_reply(zctx: zmq.Context, requests) -> None:
    """Generated requests (hypothesis, derandomized, 100 examples): every one, whatever its
    shape, gets exactly one reply and the endpoint stays in step."""
    (endpoint,) = free_ports(1)
    server = ControlServer(zctx, endpoint, _echo)
    dealer = zctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        for frames in requests:
            dealer.send_multipart([b"", *frames])
        replies = 0
        deadline = time.monotonic() + 20
        while replies < len(requests) and time.monotonic() < deadline:
            server.serve(20)
            if dealer.poll(0):
                envelope, body = dealer.recv_multipart()
                assert envelope == b"" and "ok" in json.loads(body)
                replies += 1
        assert replies == len(requests)
    finally:
        dealer.close()
        server.close()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg")
def test_control_add_probes_with_the_request_pixel_cap(
    run: GraphRun, zctx: zmq.Context, tmp_path: Path
) -> None:
    """Fault: the add probe used the default cap, not the request's max_pixels: an 8192x8192
    file under a smaller cap was accepted (then refused in the source stage, its offline
    event lost), and one with max_pixels null was refused."""
    def make(name: str, size: str) -> Path:
        path = tmp_path / "videos" / name
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=5",
             "-frames:v", "2", "-c:v", "mjpeg", "-q:v", "31", str(path)],
            check=True, timeout=120,
        )  # fmt: skip
        return path

    huge, hd = make("huge.mkv", "8192x8192"), make("hd.mkv", "1280x720")
    (endpoint,) = free_ports(1)
    serving = _Serving(ControlServer(zctx, endpoint, run.handle))
    try:
        for cap in ({}, {"max_pixels": 1920 * 1080}):
            reply = request(endpoint, {"op": "add", "uri": str(huge), "stream_id": "h", **cap},
                            timeout_s=60)  # fmt: skip
            assert reply["ok"] is False, reply
            error = reply["error"]
            assert "8192x8192" in error and "max_pixels" in error and "\n" not in error
            assert str(tmp_path) not in error
        reply = request(endpoint, {"op": "add", "uri": str(hd), "stream_id": "hd",
                                   "max_pixels": 640 * 360}, timeout_s=60)  # fmt: skip
        assert reply["ok"] is False and "1280x720" in reply["error"], reply
        assert not run.started_streams
        reply = request(endpoint, {"op": "add", "uri": str(huge), "stream_id": "h",
                                   "max_pixels": None}, timeout_s=60)  # fmt: skip
        assert reply == {"ok": True, "stream_id": "h"}
        assert run.started_streams == ["h"]
        assert serving.crashed is None
    finally:
        serving.close()
