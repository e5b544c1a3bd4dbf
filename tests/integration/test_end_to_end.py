"""The whole graph as a user runs it: `vigil process` in a subprocess on synthetic video."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
import zmq

from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene
from tests.support.videos import write_moving_box_video

# Small and fast on 2 cores: the 320 px detector with random weights and a low score threshold,
# so that frames do carry detections.
FAST = [
    "--model",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "--weights",
    "none",
    "--score-threshold",
    "0.0",
    "--no-progress",
]


def vigil(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(autouse=True)
def _few_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights at threshold 0 give 100 boxes a frame; 8 keep every stage busy but quick."""
    monkeypatch.setenv("VIGIL__DETECT__MAX_DETECTIONS", "8")


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    scene = make_scene(seed=3, width=320, height=192, fps=10.0, duration_s=2.4, n_people=2)
    write_sample_video(scene, folder / "scene.mp4", folder / "scene.gt.json")
    return folder / "scene.mp4"


def _pts(video: Path) -> list[float]:
    with av.open(str(video)) as c:
        return [round(float(f.pts * f.time_base), 4) for f in c.decode(video=0)]


def _collect(endpoint: str, into: list[dict], stop: threading.Event) -> None:
    """Subscribe and collect events until the stream's ``stream.offline`` (or ``stop``)."""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    while not stop.is_set():
        if sub.poll(100):
            topic, payload = sub.recv_multipart()
            event = json.loads(payload)
            assert topic.decode() == event["type"]
            into.append(event)
            if event["type"] == "stream.offline":
                break
    sub.close()


def test_process_writes_video_and_events_and_subscriber_gets_the_same(
    synthetic_video: Path, tmp_path: Path, free_port: int
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port}"
    received: list[dict] = []
    stop = threading.Event()
    sub = threading.Thread(target=_collect, args=(endpoint, received, stop), daemon=True)
    sub.start()
    out = tmp_path / "run1"
    proc = vigil(
        "process",
        str(synthetic_video),
        "--out",
        str(out),
        "--events",
        endpoint,
        "--wait-subscribers",
        "1",
        *FAST,
    )
    sub.join(30)  # the events still queued for the subscriber, up to stream.offline
    stop.set()
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert received == events
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "stream.online" and types[-1] == "stream.offline"
    assert "objects.count" in types
    assert events[-1]["frames_read"] == 24 and events[-1]["reason"] == "eof"
    # Same frame count and timestamps as the input.
    assert _pts(out / "annotated.mp4") == _pts(synthetic_video)
    assert "24 frames" in proc.stderr

    # A second run gives byte-identical events (timestamps come from the container, not the clock).
    again = vigil("process", str(synthetic_video), "--out", str(tmp_path / "run2"), *FAST)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "run2" / "events.jsonl").read_bytes() == (out / "events.jsonl").read_bytes()


def test_frames_endpoint_publishes_jpeg_per_stream(
    synthetic_video: Path, tmp_path: Path, free_port: int
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port}"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"cam9")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "process",
            str(synthetic_video),
            "--out",
            str(tmp_path),
            "--frames",
            endpoint,
            "--stream-id",
            "cam9",
            "--no-video",
            *FAST,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.poll(120_000), "no frame arrived"
        topic, header, jpeg = sub.recv_multipart()
        assert topic == b"cam9" and jpeg[:2] == b"\xff\xd8"
        assert json.loads(header)["stream"] == "cam9"
    finally:
        assert proc.wait(120) == 0, proc.stderr.read()
        sub.close()
    assert not (tmp_path / "annotated.mp4").exists()


def test_sigterm_drains_flushes_and_exits_zero(tmp_path: Path) -> None:
    video = write_moving_box_video(tmp_path / "long.mp4", n_frames=300)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "process", str(video), "--out", str(out), *FAST],
        stderr=subprocess.PIPE,
        text=True,
    )
    events = out / "events.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (events.exists() and events.read_text()):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    stderr = proc.stderr.read()
    assert rc == 0, stderr
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert lines[-1]["type"] == "stream.offline" and lines[-1]["reason"] == "stopped"
    read = lines[-1]["frames_read"]
    assert 0 < read < 300
    assert len(_pts(out / "annotated.mp4")) == read  # every frame read was finished
    assert "stopped on request" in stderr


@pytest.mark.parametrize("stage", ["infer", "analytics", "publish"])
def test_stage_exception_reaches_the_user_with_its_traceback(tmp_path: Path, stage: str) -> None:
    video = write_moving_box_video(tmp_path / "v.mp4", n_frames=10)
    proc = vigil(
        "process",
        str(video),
        "--out",
        str(tmp_path / "o"),
        *FAST,
        env={"VIGIL_INJECT_FAULT": f"{stage}:3:raise"},
    )
    assert proc.returncode == 1
    assert f"stage '{stage}' failed: RuntimeError: injected fault" in proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert not (tmp_path / "o" / "annotated.mp4").exists()  # no complete-looking output


@pytest.mark.parametrize(
    ("env", "said"),
    [
        # noticed from its exit, not from missed heartbeats: those would take 10 minutes
        (
            {"VIGIL_INJECT_FAULT": "analytics:2:kill", "VIGIL__RUNTIME__STAGE_TIMEOUT_S": "600"},
            ["stage 'analytics' failed: process killed by SIGKILL"],
        ),
        # its model load hangs (600 s here): not forever, and not taken for a stall of frames
        # (on a busy machine another stage may be the one still starting after 20 s)
        (
            {
                "VIGIL_INJECT_FAULT": "infer:load:sleep600",
                "VIGIL__RUNTIME__STARTUP_TIMEOUT_S": "20",
            },
            ["' failed: hung: no report", "s after it started"],
        ),
    ],
    ids=["killed-without-a-word", "never-comes-up"],
)
def test_a_stage_that_dies_or_never_comes_up_is_noticed(
    env: dict[str, str], said: list[str], tmp_path: Path
) -> None:
    video = write_moving_box_video(tmp_path / "v.mp4", n_frames=10)
    proc = vigil("process", str(video), "--out", str(tmp_path / "o"), *FAST, env=env)
    assert proc.returncode == 1, proc.stderr
    for text in said:
        assert text in proc.stderr


def test_truncated_video_processes_every_frame_before_the_break(tmp_path: Path) -> None:
    full = write_moving_box_video(tmp_path / "full.mp4", n_frames=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "o"
    proc = vigil("process", str(cut), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    last = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "stream.offline"
    n = last["frames_read"]
    assert 0 < n < 60 and len(_pts(out / "annotated.mp4")) == n
    assert f"read {n} frames before the break" in proc.stderr
