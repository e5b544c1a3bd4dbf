"""The HTTP server's alert clip route (`/clips/...`): files from the output folder's clips/ only."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import pytest
import zmq

from pipeline.http import HttpService, LiveTap


@pytest.fixture
def server(tmp_path: Path):
    clips = tmp_path / "clips" / "cam1"
    clips.mkdir(parents=True)
    (clips / "a.mp4").write_bytes(b"0123456789")
    (clips / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    (clips / "notes.txt").write_text("not a clip")
    (tmp_path / "secret.mp4").write_bytes(b"outside the clips folder")
    (tmp_path / "events.jsonl").write_text("{}\n")
    os.symlink(tmp_path / "secret.mp4", clips / "link.mp4")
    zctx = zmq.Context()
    tap = LiveTap(zctx, f"inproc://tap-{id(tmp_path)}")
    svc = HttpService(
        "127.0.0.1",
        0,
        tap=tap,
        status=lambda: {},
        metrics=lambda: (b"", "text/plain"),
        alive=lambda: True,
        out_dir=tmp_path,
    )
    try:
        yield svc
    finally:
        svc.close()
        tap.close()
        zctx.term()


def get(svc: HttpService, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)  # the raw path, not normalised
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        res = conn.getresponse()
        return res.status, res.read(), dict(res.getheaders())
    finally:
        conn.close()


def test_serves_clips_and_snapshots(server) -> None:
    status, body, headers = get(server, "/clips/cam1/a.mp4")
    assert (status, body, headers["Content-Type"]) == (200, b"0123456789", "video/mp4")
    assert headers["Accept-Ranges"] == "bytes"
    assert get(server, "/clips/cam1/a.jpg")[:2] == (200, b"\xff\xd8jpeg")


def test_byte_ranges_for_seeking(server) -> None:
    status, body, headers = get(server, "/clips/cam1/a.mp4", {"Range": "bytes=2-5"})
    assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
    assert get(server, "/clips/cam1/a.mp4", {"Range": "bytes=-3"})[:2] == (206, b"789")
    assert get(server, "/clips/cam1/a.mp4", {"Range": "bytes=20-"})[0] == 416


@pytest.mark.parametrize(
    "path",
    [
        "/clips/../secret.mp4",
        "/clips/cam1/../../secret.mp4",
        "/clips/%2e%2e/secret.mp4",
        "/clips/..%2fsecret.mp4",
        "/clips/cam1/..%2f..%2fevents.jsonl",
        "/clips/%2fetc%2fpasswd",
        "/clips//etc/passwd",
        "/clips/cam1/link.mp4",  # a link inside that points outside
        "/clips/cam1/notes.txt",  # inside, but not a clip or snapshot
        "/clips/cam1/%00a.mp4",
        "/clips/",
    ],
)
def test_nothing_outside_the_clips_folder(server, path: str) -> None:
    """Fault: a crafted path must not read files outside OUT/clips (path traversal)."""
    status, body, _ = get(server, path)
    assert status == 404, (path, body)
    assert b"outside" not in body and b"root:" not in body
