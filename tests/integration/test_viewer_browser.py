"""The live viewer (issue #9) in a real browser, against a real `vigil process --http`.

vigil runs a looping synthetic video in live mode with the shipped `simnet` detector and serves
its viewer; Debian's headless Chromium (packages `chromium` and `chromium-driver`, installed by
`.ci/run`) opens it through Selenium and must show the stream's tile with moving, annotated
frames (real pixels, not a blank image) and the live event list. A full-page screenshot goes to
`test-artifacts/viewer.png` (or `$VIGIL_TEST_ARTIFACTS/viewer.png`). Then the publish stage,
which feeds the viewer, is SIGKILLed: the page must show the `stage.restart` event and moving
frames again by itself (screenshot `viewer-after-restart.png`). Then SIGTERM must stop vigil with
exit status 0. Skipped where Chromium or its driver is missing.
"""

from __future__ import annotations

import base64
import io
import os
import signal
from pathlib import Path

import pytest

from models.simnet.infer import DEFAULT_WEIGHTS
from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene
from tests.support.live_vigil import REPO, STARTUP_TIMEOUT_S, LiveVigil, log_tail

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FRAME_TIMEOUT_S = 120  # the tile showing its first frame
EVENTS_TIMEOUT_S = 90
EXIT_TIMEOUT_S = 60  # SIGTERM to exit: finish frames in flight, flush events and video
KNOWN_TYPES = {
    "stream.online", "stream.offline", "stream.reconnect", "objects.count", "track.start",
    "track.end", "action.forecast", "frame.dropped", "stage.restart",
}  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, "
        "chromium-driver; .ci/run installs them when it runs as root)",
    ),
    pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained"),
]


def artifacts_dir() -> Path:
    """Where screenshots go: $VIGIL_TEST_ARTIFACTS, else test-artifacts/ (git-ignored)."""
    env = os.environ.get("VIGIL_TEST_ARTIFACTS")
    folder = Path(env) if env else REPO / "test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium():
    """Headless Debian Chromium with its own driver: Selenium Manager downloads nothing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
    ):  # fmt: skip
        options.add_argument(arg)
    options.page_load_strategy = "eager"  # MJPEG <img>s never finish loading
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's JS errors
    driver = webdriver.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER)), options=options
    )  # fmt: skip
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    return driver


def pixels(png: bytes):
    """Grey levels (numpy array) of a PNG screenshot."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def full_page_png(driver) -> bytes:
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    return base64.b64decode(shot["data"])


def test_viewer_shows_live_frames_and_events(tmp_path: Path, free_port: int) -> None:
    pytest.importorskip("selenium", reason="selenium not installed (dev extra)")
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    video = tmp_path / "scene.mp4"
    write_sample_video(make_scene(seed=5, duration_s=4.0, n_people=3), video)
    driver = None
    with LiveVigil(
        video, tmp_path / "out", free_port, ["--score-threshold", "0.4"], None, 120
    ) as run:
        status = run.wait_for("/api/status", run.status, STARTUP_TIMEOUT_S)
        assert {"ready", "reasons", "uptime_s", "streams", "stages"} <= status.keys(), status
        base, log = run.base, run.log
        try:
            driver = chromium()
            driver.get(base + "/")
            assert "vigil" in driver.title

            def wait(what: str, timeout: float, condition):
                try:
                    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(
                        lambda d: condition(d)
                    )
                except TimeoutException:
                    state = driver.execute_script(
                        "return document.querySelector('main') && document.querySelector('main')"
                        ".innerText.slice(0, 2000)"
                    )
                    pytest.fail(
                        f"viewer: no {what} after {timeout} s\npage:\n{state}\n"
                        f"vigil log:\n{log_tail(log)}"
                    )

            # The stream's tile shows a decoded frame of the MJPEG.
            tile = wait(
                "frame in the cam1 tile",
                FRAME_TIMEOUT_S,
                lambda d: d.execute_script(
                    "const t = document.querySelector('div.tile[data-stream=\"cam1\"]');"
                    "const img = t && t.querySelector('img.frame');"
                    "return img && img.naturalWidth > 0 ? t : null;"
                ),
            )
            img = tile.find_element(By.CSS_SELECTOR, "img.frame")
            assert img.get_attribute("src").split("?")[0].endswith("/video/cam1")
            assert driver.execute_script("return arguments[0].naturalWidth", img) == 640
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)

            # Real picture content (figures, boxes, labels), not a uniform or blank image ...
            first = pixels(img.screenshot_as_png)
            assert first.shape[0] > 50 and first.shape[1] > 100, first.shape
            assert first.std() > 12.0, f"tile image nearly uniform (std {first.std():.1f})"
            # ... and it plays: the picture changes while vigil runs.
            wait(
                "change in the cam1 picture",
                30,
                lambda d: abs(pixels(img.screenshot_as_png) - first).mean() > 0.5,
            )

            # Status fields from /api/status, refreshed about once a second.
            wait(
                "streaming state",
                30,
                lambda d: tile.find_element(By.CSS_SELECTOR, ".state").text.lower() == "streaming",
            )
            wait(
                "fps value",
                30,
                lambda d: (
                    tile.find_element(By.CSS_SELECTOR, ".fps").text.replace(".", "").isdigit()
                ),
            )
            wait(
                "readiness",
                60,
                lambda d: d.find_element(By.ID, "ready").get_attribute("data-ready") == "true",
            )

            # The live event list, fed by /events (SSE).
            def event_types(d) -> list[str] | None:
                types = d.execute_script(
                    "return [...document.querySelectorAll('#events li.event')]"
                    ".map(li => li.dataset.type)"
                )
                return types if len(types) >= 3 and "track.start" in types else None

            types = wait("events (3 or more, one track.start)", EVENTS_TIMEOUT_S, event_types)
            assert set(types) <= KNOWN_TYPES, types
            start = driver.find_element(
                By.CSS_SELECTOR, '#events li.event[data-type="track.start"]'
            )
            assert start.get_attribute("data-stream") == "cam1"
            assert "track #" in start.find_element(By.CSS_SELECTOR, ".summary").text

            # No script errors on the page (network messages, e.g. a 404 snapshot, are fine).
            errors = [
                entry
                for entry in driver.get_log("browser")
                if entry.get("level") == "SEVERE" and entry.get("source") == "javascript"
            ]
            assert not errors, errors

            shot = artifacts_dir() / "viewer.png"
            shot.write_bytes(full_page_png(driver))
            print(f"viewer screenshot: {shot}")

            # The viewer recovers by itself from a stage restart: kill the publish stage, which
            # feeds it frames and events, from outside; the supervisor restarts it.
            os.kill(run.pid("publish"), signal.SIGKILL)
            wait(
                "stage.restart event in the list",
                90,
                lambda d: d.find_elements(
                    By.CSS_SELECTOR, '#events li.event[data-type="stage.restart"]'
                ),
            )

            def frame_png() -> bytes:
                tile = driver.find_element(By.CSS_SELECTOR, 'div.tile[data-stream="cam1"]')
                return tile.find_element(By.CSS_SELECTOR, "img.frame").screenshot_as_png

            after_restart = pixels(frame_png())
            wait(
                "moving picture after the restart",
                60,
                lambda d: abs(pixels(frame_png()) - after_restart).mean() > 0.5,
            )
            (artifacts_dir() / "viewer-after-restart.png").write_bytes(full_page_png(driver))

            # SIGTERM: vigil drains and exits 0.
            rc = run.stop(EXIT_TIMEOUT_S)
            assert rc == 0, f"vigil exited with {rc} after SIGTERM:\n{log_tail(log)}"
        finally:
            if driver is not None:
                driver.quit()
