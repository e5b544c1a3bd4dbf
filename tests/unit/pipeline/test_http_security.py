"""Hostile HTTP clients (issue 14): the viewer's server in-process, attacked over loopback.

Each test names the fault it injects: `/video/` of an unknown, ended or abandoned stream
(slots held forever), a connection flood and slowloris (a thread each, forever), DNS
rebinding (a foreign ``Host``), and access without the token. All waits are bounded; no
assertion is about time.
"""

from __future__ import annotations

import http.client
import itertools
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from pipeline.access import HttpAccess
from pipeline.http import HttpService, LiveTap
from pipeline.http_routes import MAX_STREAM_CLIENTS

TOKEN = "t0ken-for-tests-0123456789"
BOUND_S = 30.0  # the most any wait below may take on a loaded machine
_taps = itertools.count()


class Server:
    """An :class:`HttpService` with a fake run: ``streams`` as the supervisor would list them."""

    def __init__(self, **kwargs: Any) -> None:
        self.zctx = zmq.Context()
        self.tap = LiveTap(self.zctx, f"inproc://test-tap-{next(_taps)}")
        self.streams: list[dict[str, Any]] = []
        self.svc = HttpService(
            "127.0.0.1",
            0,
            tap=self.tap,
            status=lambda: {"ready": True, "reasons": [], "streams": list(self.streams)},
            metrics=lambda: (b"vigil_up 1\n", "text/plain"),
            alive=lambda: True,
            **kwargs,
        )
        self.port = self.svc.port

    def close(self) -> None:
        self.svc.close()
        self.tap.close()
        self.zctx.destroy(linger=0)

    def frame(self, stream: str, jpeg: bytes = b"\xff\xd8jpeg\xff\xd9") -> None:
        with self.tap.changed:
            count = self.tap.frames.get(stream, (0, b""))[0] + 1
            self.tap.frames[stream] = (count, jpeg)
            self.tap.changed.notify_all()

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a plain GET."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=BOUND_S)
        try:
            conn.request("GET", path, headers=headers or {})
            res = conn.getresponse()
            return res.status, dict(res.getheaders()), res.read()
        finally:
            conn.close()

    def open_stream(self, path: str) -> tuple[socket.socket, bytes]:
        """A streaming GET whose response head has arrived: (socket, the head)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=BOUND_S)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        return sock, head


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def wait_until(what: str, condition: Callable[[], Any], timeout: float = BOUND_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def events_answer(srv: Server) -> bool:
    """Whether /events starts an event stream now (not the 503 of a full house)."""
    sock, head = srv.open_stream("/events")
    sock.close()
    return head.startswith(b"HTTP/1.1 200")


# --- streaming slots ------------------------------------------------------------------------


def test_video_of_an_unknown_stream_is_404_and_holds_no_slot(server: Server):
    """Fault: /video/<never seen> held one of the 32 streaming slots forever; after 32 such
    requests /events answered 503 for the rest of the run."""
    for i in range(MAX_STREAM_CLIENTS + 8):
        status, _, body = server.get(f"/video/nope{i}")
        assert status == 404, body
    assert events_answer(server)


def test_a_video_client_that_goes_away_frees_its_slot(server: Server):
    """Fault: a gone client was noticed only when a frame was written, so a stream without new
    frames (a camera down) kept every abandoned viewer's slot."""
    server.streams = [{"stream_id": "cam1", "running": True}]
    clients = [server.open_stream("/video/cam1") for _ in range(MAX_STREAM_CLIENTS)]
    assert all(head.startswith(b"HTTP/1.1 200") for _, head in clients)
    assert not events_answer(server)  # the house is full: the slots are really held
    for sock, _ in clients:
        sock.close()
    wait_until("/events answers once the viewers' slots are free", lambda: events_answer(server))


def test_an_ended_stream_gets_its_last_frame_and_the_end(server: Server):
    """Fault: /video/<ended stream> waited forever for a frame that never comes."""
    server.frame("cam1", b"\xff\xd8last\xff\xd9")
    server.streams = [{"stream_id": "cam1", "running": False}]
    sock, head = server.open_stream("/video/cam1")
    body = b""
    while chunk := sock.recv(65536):  # the server ends the response: recv returns b""
        body += chunk
    sock.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\xff\xd8last\xff\xd9" in head + body


def test_live_video_still_streams_new_frames(server: Server):
    server.streams = [{"stream_id": "cam1", "running": True}]
    server.frame("cam1", b"\xff\xd8one\xff\xd9")
    sock, data = server.open_stream("/video/cam1")
    for frame in (b"one", b"two"):
        if frame == b"two":
            server.frame("cam1", b"\xff\xd8two\xff\xd9")
        while frame not in data:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended while its source runs"
            data += chunk
    sock.close()


# --- connections: cap and timeouts --------------------------------------------------------------


def test_a_connection_flood_gets_503s_not_a_thread_each():
    """Fault: no connection cap; 2,000 idle connections made 2,000 threads."""
    srv = Server(max_connections=5, timeout_s=60.0)
    socks: list[socket.socket] = []
    try:
        before = threading.active_count()
        for _ in range(40):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=BOUND_S))
        wait_until("35 connections refused", lambda: srv.svc.refused >= 35)
        assert srv.svc.connections <= 5
        assert threading.active_count() - before <= 5
        refused = [s for s in socks if _read_all(s, 1.0).startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 35
    finally:
        for s in socks:
            s.close()
        srv.close()


def test_a_slowloris_client_is_cut_off_at_the_head_deadline():
    """Fault: no per-connection timeout; a client sending a byte every few seconds held its
    thread forever. Here it sends one every 0.2 s: each read is quick, the whole head never
    comes, and the server must close the connection (timeout_s = 1 s for the head)."""
    srv = Server(timeout_s=1.0)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=BOUND_S)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        for _ in range(int(BOUND_S / 0.2)):
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            if _closed_by_peer(sock):
                closed = True
                break
            time.sleep(0.2)
        assert closed, "the server kept reading a head that never ends"
        wait_until("its thread is gone", lambda: srv.svc.connections == 0)
    finally:
        sock.close()
        srv.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """What arrives until the peer closes, or nothing more comes for ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except OSError:
        pass
    return data


# --- Host check (DNS rebinding) ---------------------------------------------------------------


def test_a_foreign_host_header_is_refused_except_on_healthz():
    """Fault: no Host check, so a page on a rebound name could read the run from a browser."""
    srv = Server(access=HttpAccess(bound_host="127.0.0.1", allowed_hosts=["vigil.example.org"]))
    try:
        for path in ("/", "/api/status", "/metrics", "/readyz", "/snapshot/cam1.jpg", "/events"):
            status, _, body = srv.get(path, {"Host": f"attacker.example:{srv.port}"})
            assert status == 403, (path, body)
        assert srv.get("/healthz", {"Host": "attacker.example"})[0] == 200
        for host in (
            f"localhost:{srv.port}",
            f"127.0.0.1:{srv.port}",
            f"[::1]:{srv.port}",
            "192.168.1.20:8080",  # an IP literal cannot be rebound
            "VIGIL.example.org",
        ):
            assert srv.get("/api/status", {"Host": host})[0] == 200, host
    finally:
        srv.close()


# --- token ------------------------------------------------------------------------------------


@pytest.fixture
def guarded() -> Iterator[Server]:
    srv = Server(access=HttpAccess(bound_host="127.0.0.1", token=TOKEN))
    srv.streams = [{"stream_id": "cam1", "running": True}]
    yield srv
    srv.close()


def test_without_the_token_everything_but_healthz_is_401(guarded: Server):
    for path in ("/", "/api/status", "/metrics", "/readyz", "/video/cam1", "/events"):
        status, headers, _ = guarded.get(path)
        assert status == 401, path
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert guarded.get("/api/status", {"Authorization": "Bearer wrong"})[0] == 401
    assert guarded.get("/api/status?token=wrong")[0] == 401
    assert guarded.get("/healthz")[0] == 200


def test_bearer_header_and_query_token_are_accepted(guarded: Server):
    assert guarded.get("/api/status", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert guarded.get(f"/metrics?token={TOKEN}")[0] == 200


def test_the_viewer_opened_with_the_token_gets_a_cookie_for_its_img_and_eventsource(
    guarded: Server,
):
    status, headers, _ = guarded.get(f"/?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/"  # the token leaves the address bar
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = {"Cookie": cookie.split(";", 1)[0]}
    assert guarded.get("/", session)[0] == 200
    assert guarded.get("/api/status", session)[0] == 200
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=BOUND_S)
    sock.sendall(
        f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {session['Cookie']}\r\n\r\n".encode()
    )
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    sock.close()
    assert guarded.get("/api/status", {"Cookie": "vigil_session=forged"})[0] == 401


def test_a_bad_tap_message_does_not_freeze_the_viewer():
    """Fault: only ZMQError was caught in the tap thread; one event that was not JSON (or not
    UTF-8) ended it silently, and the viewer froze for the rest of the run."""
    zctx = zmq.Context()
    endpoint = f"inproc://bad-tap-{next(_taps)}"
    tap = LiveTap(zctx, endpoint)
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoint)
    try:
        push.send_multipart([b"event", b"{not json"])
        push.send_multipart([b"event", b"\xff\xfe"])
        push.send_multipart([b"event", b'{"seq": 7, "type": "track.start"}'])
        deadline = time.monotonic() + 10
        while not tap.events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [seq for seq, _ in tap.events] == [7]
    finally:
        push.close()
        tap.close()
        zctx.term()
