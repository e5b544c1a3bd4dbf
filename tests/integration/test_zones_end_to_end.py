"""Zones, lines and alert clips through the whole graph (`vigil run`) and the in-process runner:
the same events byte for byte, the same clip bytes, pre-roll in the clip, and the clip written
before the event that announces it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from models.simnet.infer import DEFAULT_WEIGHTS
from pipeline.config import load_config
from pipeline.runner import process_file
from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")

CONFIG = """
sources: [{{uri: {video}, stream_id: cam1}}]
detect: {{model: simnet, score_threshold: 0.4, batch_size: 1}}  # batches as the runner
runtime: {{progress: false}}
zones:
  - {{name: floor, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], classes: [person],
     inertia_frames: 2, dwell_s: 0.5}}
lines:
  - {{name: gate, points: [[0.5, 0.0], [0.5, 1.0]]}}
alerts:
  - {{name: linger, when: {{dwell_s: 0.5, zone: floor}}, severity: low, cooldown_s: 30,
     clip: {{pre_s: 0.5, post_s: 0.4}}}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("zones")
    scene = make_scene(seed=3, width=320, height=192, fps=10.0, duration_s=2.4, n_people=2)
    write_sample_video(scene, folder / "scene.mp4")
    cfg_path = folder / "vigil.yaml"
    cfg_path.write_text(CONFIG.format(video=folder / "scene.mp4"))
    graph = folder / "graph"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(cfg_path), "--out", str(graph)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    process_file(load_config(cfg_path), folder / "scene.mp4", folder / "runner")
    return graph, folder / "runner"


def events(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]


def test_runner_matches_graph_events_and_clips_byte_for_byte(runs) -> None:
    graph, runner = runs
    assert (graph / "events.jsonl").read_bytes() == (runner / "events.jsonl").read_bytes()
    kinds = [e["type"] for e in events(graph)]
    for kind in ("zone.count", "zone.enter", "zone.dwell", "alert", "alert.clip", "zone.exit"):
        assert kind in kinds, kinds
    clips = sorted(p.relative_to(graph) for p in (graph / "clips").rglob("*.*"))
    assert clips and clips == sorted(p.relative_to(runner) for p in (runner / "clips").rglob("*.*"))
    for rel in clips:  # a batch rerun (runner or graph) writes the same clip bytes
        assert (graph / rel).read_bytes() == (runner / rel).read_bytes()


def test_clip_has_pre_roll_and_is_announced_after_its_alert(runs) -> None:
    graph, _ = runs
    evs = events(graph)
    alerts = [e for e in evs if e["type"] == "alert"]
    done = [e for e in evs if e["type"] == "alert.clip"]
    assert alerts and len(done) == 1  # one clip for the alerts of overlapping windows
    first = alerts[0]
    assert done[0]["clip"] == first["clip"] and done[0]["status"] == "written"
    assert done[0]["seq"] > max(a["seq"] for a in alerts if a["clip"] == first["clip"])
    assert first["clip_start"] == pytest.approx(first["pts"] - 0.5)
    with av.open(str(graph / first["clip"])) as c:
        n = sum(1 for _ in c.decode(video=0))
    # Pre-roll: the clip starts 0.5 s (5 frames at 10 fps) before the trigger.
    assert n == done[0]["frames"] == round((done[0]["clip_end"] - done[0]["clip_start"]) * 10) + 1
    assert done[0]["clip_start"] <= first["pts"] - 0.5 + 1e-6
    assert (graph / first["snapshot"]).stat().st_size > 0
    assert not list(graph.rglob(".*partial*"))
