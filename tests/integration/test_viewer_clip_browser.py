"""The viewer's alerts and counts in a real browser: an alert with its thumbnail, its clip played
from the output folder, zone and line counts. The HTTP server is vigil's own
(:class:`pipeline.http.HttpService`), fed through its tap socket the events a run publishes:
``zone.count``, ``line.cross``, ``alert``, then ``alert.clip`` once the clip is written (a real
H.264 clip from :func:`stream.clips.encode_mp4`). Skipped where Chromium or its driver is
missing."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.http import HttpService, LiveTap
from stream.clips import _Frame, encode_mp4
from stream.sinks import encode_jpeg
from tests.integration.test_viewer_browser import CHROMEDRIVER, CHROMIUM, chromium

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()), reason="needs chromium and chromedriver"
)

CLIP = "clips/cam1/20261204T072903.976Z-fall.mp4"
SNAP = "clips/cam1/20261204T072903.976Z-fall-1.jpg"


def event(seq: int, kind: str, **fields) -> dict:
    base = {"v": 1, "seq": seq, "type": kind, "stream": "cam1", "frame": seq, "pts": seq / 10}
    return {**base, "ts": "2026-12-04T07:29:03.976Z", **fields}


def test_viewer_lists_alert_with_thumbnail_and_plays_its_clip(tmp_path: Path) -> None:
    pytest.importorskip("selenium", reason="selenium not installed (dev extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    frames = []
    for i in range(30):  # 3 s at 10 fps, a bar moving across
        rgb = np.full((180, 320, 3), 40, np.uint8)
        rgb[:, (i * 10) % 320 : (i * 10) % 320 + 20] = (230, 60, 60)
        frames.append(_Frame(i / 10, i, i, rgb))
    encode_mp4(tmp_path / CLIP, frames, Fraction(1, 10), 10.0, "libx264", 23)
    (tmp_path / SNAP).write_bytes(encode_jpeg(frames[10].rgb))
    zctx = zmq.Context()
    endpoint = f"inproc://tap-{id(tmp_path)}"
    tap = LiveTap(zctx, endpoint)
    status = {"ready": True, "reasons": [], "uptime_s": 1.0, "streams": [], "stages": []}
    svc = HttpService(
        "127.0.0.1", 0, tap=tap, status=lambda: status, metrics=lambda: (b"", "text/plain"),
        alive=lambda: True, out_dir=tmp_path,
    )  # fmt: skip
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoint)

    def publish(e: dict) -> None:
        push.send_multipart([b"event", json.dumps(e).encode()], flags=zmq.NOBLOCK)

    driver = None
    try:
        driver = chromium()
        driver.get(svc.url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script(
            "return document.querySelector('#events-conn').dataset.state === 'open'"))  # fmt: skip
        publish(event(1, "zone.count", zone="door", label="person", count=2))
        publish(event(2, "line.cross", track=3, label="person", line="gate", direction="in",
                      count_in=1, count_out=0))  # fmt: skip
        publish(event(3, "alert", name="fall", severity="high", track=1, zone=None,
                      reason={"action": "fall", "horizon_s": 0.5, "p": 0.9, "p_min": 0.6},
                      clip=CLIP, snapshot=SNAP, clip_start=0.0, clip_end=2.9))  # fmt: skip
        alert = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#alerts li.alert"))
        assert alert.get_attribute("data-state") == "pending"
        assert alert.find_element(By.CSS_SELECTOR, "button.play").get_attribute("disabled")
        publish(event(4, "alert.clip", name="fall", track=1, clip=CLIP, snapshot=SNAP,
                      clip_start=0.0, clip_end=2.9, status="written", frames=30,
                      alerts=[{"name": "fall", "track": 1, "snapshot": SNAP}]))  # fmt: skip
        wait.until(lambda d: alert.get_attribute("data-state") == "ready")
        # The thumbnail is the snapshot, loaded from the output folder.
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#alerts img.thumb');"
            "return i.complete && i.naturalWidth === 320"))  # fmt: skip
        counts = {
            r.get_attribute("data-kind") + ":" + r.get_attribute("data-name"): r.find_element(
                By.CSS_SELECTOR, ".value").text
            for r in driver.find_elements(By.CSS_SELECTOR, "#counts .count-row")
        }  # fmt: skip
        assert counts == {"zone:door": "person 2", "line:gate": "in 1 · out 0"}
        alert.find_element(By.CSS_SELECTOR, "button.play").click()
        # The clip plays: decoded (a real frame size), time advancing.
        wait.until(lambda d: d.execute_script(
            "const v = document.querySelector('#clip-player');"
            "return v.videoWidth === 320 && (v.currentTime > 0.3 || v.ended)"))  # fmt: skip
        player = driver.find_element(By.ID, "clip-player")
        assert player.get_attribute("data-clip") == CLIP
        assert not driver.execute_script("return document.querySelector('#clip-player').error")
    finally:
        if driver is not None:
            driver.quit()
        push.close()
        svc.close()
        tap.close()
        zctx.term()
