"""The in-process runner of one file (`pipeline.runner.process_file`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from models.results import Detections, Masks, Poses
from pipeline.config import load_config
from pipeline.runner import process_file
from stream.sources import SourceError
from tests.integration.test_end_to_end import FAST as FAST_FLAGS
from tests.support.videos import write_moving_box_video

FAST = {
    "detect.model": "fasterrcnn_mobilenet_v3_large_320_fpn",
    "detect.weights": "none",
    "detect.score_threshold": 0.0,
    "detect.input_size": 96,
}


def _pts(video: Path) -> list[float]:
    with av.open(str(video)) as c:
        return [round(float(f.pts * f.time_base), 4) for f in c.decode(video=0)]


class CountingPerceiver:
    """A stand-in perceiver: one fixed 'person' box per frame; counts its calls."""

    class_names = ("__background__", "person")
    description = "counting stub"

    def __init__(self) -> None:
        self.calls = 0
        self.frames = 0

    def __call__(self, frames: list[np.ndarray]) -> list[tuple[Detections, Poses, Masks]]:
        self.calls += 1
        self.frames += len(frames)
        det = Detections(
            xyxy=np.array([[10, 10, 40, 60]], np.float32),
            score=np.array([0.9], np.float32),
            class_id=np.array([1]),
        )
        return [(det, Poses.empty(), Masks.empty()) for _ in frames]


def test_process_file_matches_the_graph_byte_for_byte(tmp_path: Path) -> None:
    """Same input and config: the runner's events.jsonl equals `vigil process`'s (the graph's)
    byte for byte, and its annotated video has the same frame count and pts."""
    clip = write_moving_box_video(tmp_path / "clip.mp4", n_frames=10)
    graph_out = tmp_path / "graph"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "process", str(clip), "--out", str(graph_out)]
        + FAST_FLAGS,
        capture_output=True,
        text=True,
        timeout=150,
        env={**os.environ, "VIGIL__DETECT__INPUT_SIZE": "96"},
    )
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(None, FAST)
    result = process_file(cfg, clip, tmp_path / "runner")
    graph_events = (graph_out / "events.jsonl").read_bytes()
    assert (tmp_path / "runner" / "events.jsonl").read_bytes() == graph_events
    assert len(graph_events.splitlines()) == result.events >= 3  # online, counts..., offline
    runner_pts = _pts(tmp_path / "runner" / "annotated.mp4")
    assert runner_pts == _pts(graph_out / "annotated.mp4") == _pts(clip)
    assert result.frames == len(runner_pts) == 10
    assert result.end_reason == "eof" and result.duration_s == pytest.approx(1.0)


def test_process_file_reuses_the_given_perceiver_and_reports_progress(tmp_path: Path) -> None:
    cfg = load_config(None, {"detect.batch_size": 4})
    perceiver = CountingPerceiver()
    seen: list[tuple[int, int]] = []
    results = []
    for name, n in (("a.mp4", 6), ("b.mkv", 5)):
        clip = write_moving_box_video(tmp_path / name, n_frames=n)
        results.append(
            process_file(
                cfg,
                clip,
                tmp_path / f"out-{name}",
                perceiver=perceiver,
                progress_cb=lambda d, e: seen.append((d, e)),
            )
        )
    assert perceiver.frames == 11 and perceiver.calls == 2 + 2  # batches of 4, then the rest
    assert [d for d, _ in seen] == [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5]
    for res, n in zip(results, (6, 5)):
        lines = [json.loads(x) for x in res.events_file.read_text().splitlines()]
        assert res.frames == n and res.events == len(lines)
        assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))  # each file from 1
        assert lines[0]["type"] == "stream.online" and lines[-1]["type"] == "stream.offline"
        assert any(e["type"] == "track.start" for e in lines)  # fresh tracker per file
        assert res.detector == "counting stub"


def test_process_file_rejects_a_non_video_before_writing_anything(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(SourceError, match="not a readable video"):
        process_file(load_config(), bad, tmp_path / "out", perceiver=CountingPerceiver())
    assert not (tmp_path / "out").exists()
