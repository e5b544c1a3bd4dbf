"""The offline model pack through the whole graph, checked against the synthetic ground truth.

A scene never used in training goes through `vigil process --model simnet` (shipped weights);
the per-frame records (`detections.jsonl`) must find the figures (recall >= 0.9 at IoU 0.5), the
tracks must follow them, and the forecaster fed by the graph's own poses must forecast their
scripted actions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.simnet import DEFAULT_WEIGHTS
from models.tracking import box_iou
from stream.synthetic import make_scene, write_sample_video

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")

# Known gap (issue 3 stays open): with the shipped sim pack's own detections and poses (person
# AP50 0.916 on held-out video, scripts/eval_sim.py) figures that cross or fall switch identity
# (falling and lying figures score ~0.4-0.5, and a fall turns a tall box into a wide one) and
# the 0.5 s forecast matches the script on ~0.67 of frames (fall 6/19: anticipating a fall from
# detected poses is the hard part; the forecaster scores 0.99 on clean poses).
# strict=True: the test fails loudly once a better pack passes, so the marker must then go.
SIM_PACK_GAP = pytest.mark.xfail(
    strict=True, reason="sim-pack poses not yet good enough; retrain (scripts/train_sim.py)"
)

HELD_OUT_SEED = 11  # scripts/train_sim.py and train_action.py use other seeds


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], list[dict]]:
    folder = tmp_path_factory.mktemp("sim")
    scene = make_scene(seed=HELD_OUT_SEED, duration_s=6.0, n_people=3)
    gt = write_sample_video(scene, folder / "scene.mp4", folder / "scene.gt.json")
    out = folder / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "process", str(folder / "scene.mp4"), "--out",
         str(out), "--model", "simnet", "--score-threshold", "0.4", "--no-progress"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "VIGIL__OUTPUT__DETECTIONS": "true"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sim pack" in proc.stderr  # the CLI says which weights it used
    records = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    return gt, records, events


def _people(frame_gt: dict, min_area: float = 400.0) -> list[dict]:
    """Ground-truth people big enough to count (tiny slivers at the frame edge are not)."""
    out = []
    for obj in frame_gt["objects"]:
        x1, y1, x2, y2 = obj["box"]
        if obj["class"] == "person" and (x2 - x1) * (y2 - y1) >= min_area:
            out.append(obj)
    return out


def _match(record: dict, gt_box: list[float]) -> int | None:
    """Index of the record's person box that best overlaps ``gt_box`` at IoU >= 0.5."""
    rows = [i for i, c in enumerate(record["classes"]) if c == "person"]
    if not rows:
        return None
    boxes = np.asarray([record["boxes"][i] for i in rows], np.float32)
    ious = box_iou(np.asarray([gt_box], np.float32), boxes)[0]
    best = int(np.argmax(ious))
    return rows[best] if ious[best] >= 0.5 else None


def test_sim_pack_finds_every_figure(sim_run) -> None:
    gt, records, _ = sim_run
    assert len(records) == gt["n_frames"]
    found = total = 0
    for frame_gt, record in zip(gt["frames"], records):
        for person in _people(frame_gt):
            total += 1
            found += _match(record, person["box"]) is not None
    recall = found / total
    assert total > 100 and recall >= 0.9, f"person recall {recall:.3f} over {total} boxes"


@SIM_PACK_GAP
def test_tracks_follow_figures_and_forecasts_match_scripted_actions(sim_run) -> None:
    gt, records, events = sim_run
    fps = gt["fps"]
    horizon_frames = int(round(0.5 * fps))
    track_of: dict[int, list[int]] = {}
    correct = scored = 0
    for i, (frame_gt, record) in enumerate(zip(gt["frames"], records)):
        forecasts = {
            (f["track"], f["horizon_s"]): f["action"] for f in record["forecasts"]
        }  # fmt: skip
        future = gt["frames"][min(i + horizon_frames, len(records) - 1)]
        future_action = {o["id"]: o.get("action") for o in future["objects"]}
        for person in _people(frame_gt):
            row = _match(record, person["box"])
            if row is None or record["tracks"][row] < 0:
                continue
            track = record["tracks"][row]
            track_of.setdefault(person["id"], []).append(track)
            if (track, 0.5) in forecasts and person["id"] in future_action:
                scored += 1
                correct += forecasts[(track, 0.5)] == future_action[person["id"]]
    # Each figure is followed mostly by one track.
    for figure, tracks in track_of.items():
        main = max(set(tracks), key=tracks.count)
        assert tracks.count(main) / len(tracks) >= 0.8, f"figure {figure} tracks {set(tracks)}"
    # The forecaster, fed by the graph's own detections and poses, mostly gets the future right.
    assert scored > 50, f"only {scored} forecasts matched to figures"
    assert correct / scored >= 0.75, f"0.5 s forecast accuracy {correct / scored:.3f}"
    types = [e["type"] for e in events]
    assert types.count("track.start") >= len(track_of)
    assert "action.forecast" in types
