"""Secrets in a live run (issue 14), end to end: one real `vigil process --http --control` run
whose source URI carries credentials in its query string and whose HTTP endpoint needs a token.

Fault injected: ``...?token=...&password=...`` in the source's URI, which leaked into logs,
events, the journal, ``/api/status``, ``vigil streams list`` and the SSE feed (only
``user:pw@`` was hidden). Each of those places is read and must show ``***`` instead. The same
run checks the token through the supervisor: 401 without it, the bearer header, and the
viewer's cookie for ``/events``; with Chromium present, the viewer opened as ``/?token=``
must show frames and events (EventSource and ``<img>`` cannot send headers).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from models.simnet.infer import DEFAULT_WEIGHTS
from pipeline.control import request as control_request
from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene
from tests.support.live_vigil import STARTUP_TIMEOUT_S, LiveVigil, log_tail

SECRETS = ("tokSECRET1", "pwSECRET2", "adminSECRET3")
TOKEN = "http-token-for-the-live-test"
URI_TAIL = f"?token={SECRETS[0]}&password={SECRETS[1]}&user={SECRETS[2]}"

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as res:
            return res.status, dict(res.headers), res.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, {}, ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - stdlib's signature
        return None


def sse_until(port: int, cookie: str, needle: bytes, timeout: float = 60) -> bytes:
    """Read /events (with the viewer's cookie) until ``needle`` shows up; all that was read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while needle not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return data


def test_query_string_credentials_never_show_and_the_token_guards_http(
    tmp_path: Path, free_port: int
):
    plain = tmp_path / "cam.mp4"
    write_sample_video(make_scene(seed=5, duration_s=3.0, n_people=2), plain)
    video = tmp_path / f"cam.mp4{URI_TAIL}"
    plain.rename(video)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        control = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "out"
    run = LiveVigil(
        video, out, free_port, ["--control", control],
        env={"VIGIL__RUNTIME__HTTP_TOKEN_FILE": str(token_file)}, duration_s=300,
    )  # fmt: skip
    run.cmd[3:3] = ["--log-level", "debug"]  # before the subcommand: a global flag
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with run:

        def status() -> dict | None:
            code, _, body = fetch(run.base + "/api/status", bearer)
            return json.loads(body) if code == 200 and '"streaming"' in body else None

        st = run.wait_for("a streaming stream in /api/status", status, STARTUP_TIMEOUT_S)
        shown = st["streams"][0]["uri"]
        assert shown.endswith("cam.mp4?token=***&password=***&user=***"), shown

        # The token, through the supervisor: nothing without it but /healthz.
        assert fetch(run.base + "/api/status")[0] == 401
        assert fetch(run.base + f"/api/status?token={TOKEN}")[0] == 200
        assert fetch(run.base + "/healthz")[0] == 200
        code, headers, _ = fetch(run.base + f"/?token={TOKEN}")
        assert code == 303, headers
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert fetch(run.base + "/", {"Cookie": cookie})[0] == 200

        sse = sse_until(free_port, cookie, b"stream.online")
        assert b"stream.online" in sse and b"token=***" in sse, sse[:2000]

        listed = control_request(control, {"op": "list"}, timeout_s=10)
        assert listed["ok"] and listed["streams"][0]["uri"] == shown

        browser_check(run.base, run.log)
        assert run.stop() == 0

    places = {
        "/api/status": json.dumps(st),
        "SSE": sse.decode(errors="replace"),
        "streams list": json.dumps(listed),
        "logs (debug)": run.log.read_text(errors="replace"),
        "events.jsonl": (out / "events.jsonl").read_text(),
        "journal": b"".join(
            p.read_bytes() for p in out.glob("events.journal.sqlite*")
        ).decode("latin-1"),
    }
    assert "token=***" in places["events.jsonl"] and "token=***" in places["logs (debug)"]
    for place, text in places.items():
        for secret in (*SECRETS, TOKEN):
            assert secret not in text, f"{secret} shows in {place}"


def browser_check(base: str, log: Path) -> None:
    """The viewer, opened once as /?token=TOKEN, shows frames and events (when Chromium and
    selenium are here; the HTTP checks above do not need them)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return
    try:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return
    from tests.integration.test_viewer_browser import chromium

    driver = chromium()
    try:
        driver.get(f"{base}/?token={TOKEN}")
        assert TOKEN not in driver.current_url  # redirected to / with the cookie

        def shows(d) -> bool:
            return d.execute_script(
                "const img = document.querySelector('div.tile[data-stream=\"cam1\"] img.frame');"
                "return !!img && img.naturalWidth > 0 &&"
                " document.querySelectorAll('#events li.event').length > 0;"
            )

        try:
            WebDriverWait(driver, 120, poll_frequency=0.5).until(shows)
        except TimeoutException:
            pytest.fail(f"viewer with the token: no frame or no event\n{log_tail(log)}")
    finally:
        driver.quit()
