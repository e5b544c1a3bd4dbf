"""PeopleAnalytics on rendered synthetic ground truth (a perfect detector and pose model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.people.action import DEFAULT_WEIGHTS, ActionForecaster
from models.people.analytics import PeopleAnalytics, match_poses_to_boxes
from models.results import Detections, FrameResult, Poses

render = pytest.importorskip("stream.sim.render")
scenes = pytest.importorskip("stream.sim.scenes")
world = pytest.importorskip("stream.sim.world")
torch.set_num_threads(1)

FPS = 15.0
DURATION = 6.0


def gt_frames(scene: world.Scene) -> list[FrameResult]:
    """FrameResults from the rendered ground truth: boxes for every object (class ids from
    world.CLASSES), keypoints for people, in a shuffled order unrelated to identity."""
    out = []
    rng = np.random.default_rng(0)
    for i in range(scene.n_frames):
        _, gt = render.render_frame(scene, i)
        objs = list(gt["objects"])
        rng.shuffle(objs)
        boxes = np.asarray([o["box"] for o in objs], np.float32).reshape(-1, 4)
        cls = np.asarray([world.CLASSES.index(o["class"]) for o in objs], np.int64)
        det = Detections(boxes, np.full(len(objs), 0.95, np.float32), cls)
        people = [o for o in objs if o["class"] == "person"]
        rng.shuffle(people)
        kps = np.asarray([o["keypoints"] for o in people], np.float32).reshape(-1, 17, 3)
        out.append(
            FrameResult(
                "cam",
                i,
                gt["pts"],
                1.7e9 + gt["pts"],
                640,
                360,
                det,
                Poses(kps),
                class_names=world.CLASSES,
            )
        )
    return out


def run(analytics: PeopleAnalytics, frames: list[FrameResult]) -> list[tuple[int, str, dict]]:
    events = []
    for fr in frames:
        events += [(fr.frame_idx, t, f) for t, f in analytics.update(fr)]
    events += [(-1, t, f) for t, f in analytics.finish()]
    return events


@pytest.fixture(scope="module")
def frames() -> list[FrameResult]:
    return gt_frames(scenes.fall_and_walk_scene(FPS, DURATION))


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="shipped action weights missing")
def test_events_on_synthetic_ground_truth(frames: list[FrameResult]) -> None:
    fc = ActionForecaster(weights="auto", horizons_s=(0.0, 0.5, 1.0))
    analytics = PeopleAnalytics(person_class_ids={0}, forecaster=fc)
    events = run(analytics, frames)
    starts = [(f["track"], f["label"]) for _, t, f in events if t == "track.start"]
    assert sorted(starts) == [(1, "person"), (2, "person")]
    ends = {f["track"]: f for _, t, f in events if t == "track.end"}
    assert sorted(ends) == [1, 2]
    assert all(
        f["frames"] >= scene_frames - 2 for f in ends.values() for scene_frames in [len(frames)]
    )
    # Which track is which figure: the one whose box starts on the left is the faller.
    first = frames[2]
    faller = int(
        first.detections.track_id[
            np.argmin(np.where(first.detections.track_id > 0, first.detections.xyxy[:, 0], 1e9))
        ]
    )
    walker = 3 - faller
    fc_events = [(i, f) for i, t, f in events if t == "action.forecast"]
    assert fc_events, "no action.forecast events"
    for _, f in fc_events:
        assert f["p"] >= 0.6 and set(f["probs"]) == set(fc.vocabulary)

    def actions(track: int, horizon: float) -> list[tuple[float, str]]:
        return [
            (frames[i].pts, f["action"])
            for i, f in fc_events
            if f["track"] == track and f["horizon_s"] == horizon
        ]

    # The faller: standing, then "fall" recognised during the fall, "lie" after it; the 0.5 s
    # forecast announces lying before the figure is down (the fall ends at 3.2 s). (No confident
    # 0.5 s "stand": a standing figure may start anything within 0.5 s in the synthetic world.)
    now = actions(faller, 0.0)
    assert [a for _, a in now] == ["stand", "fall", "lie"], now
    t_fall = next(t for t, a in now if a == "fall")
    assert 2.5 <= t_fall <= 3.0
    ahead = actions(faller, 0.5)
    assert ahead and ahead[-1][1] == "lie" and "fall" not in [a for _, a in ahead[1:]], ahead
    assert next(t for t, a in ahead if a == "lie") < 3.2
    assert not any(a == "fall" for _, a in actions(walker, 0.0))
    assert [a for _, a in actions(walker, 0.0)] == ["walk"]
    # Forecasts ride on the frame result too.
    last = frames[-1]
    assert {f.track_id for f in last.forecasts} == {1, 2}
    assert len(last.forecasts) == 6


def test_track_ids_filled_and_deterministic(frames: list[FrameResult]) -> None:
    fc = ActionForecaster(weights="none", horizons_s=(0.5,))

    def once() -> list:
        copies = gt_frames(scenes.fall_and_walk_scene(FPS, DURATION))
        return run(
            PeopleAnalytics(person_class_ids={0}, forecaster=fc, min_confidence=0.0), copies
        ), copies

    ev1, fr1 = once()
    ev2, _ = once()
    assert ev1 == ev2
    for fr in fr1[2:]:
        det, poses = fr.detections, fr.poses
        assert np.all(det.track_id[det.class_id != 0] == -1)
        assert np.all(det.track_id[det.class_id == 0] > 0)
        # Each pose carries the track of the person box that contains it.
        for k in range(len(poses)):
            row = int(np.flatnonzero(det.track_id == poses.track_id[k])[0])
            vis = poses.keypoints[k, :, 2] > 0
            x, y = poses.keypoints[k, vis, 0], poses.keypoints[k, vis, 1]
            b = det.xyxy[row]
            assert (
                np.mean((x >= b[0] - 2) & (x <= b[2] + 2) & (y >= b[1] - 2) & (y <= b[3] + 2)) > 0.9
            )


def test_hysteresis_and_reset() -> None:
    pa = PeopleAnalytics(person_class_ids={0}, forecaster=None, min_confidence=0.6, min_persist=2)
    seq = [
        ("walk", 0.9),
        ("walk", 0.9),
        ("walk", 0.95),
        ("fall", 0.9),
        ("walk", 0.9),
        ("fall", 0.7),
        ("fall", 0.5),
        ("fall", 0.7),
        ("fall", 0.8),
        ("fall", 0.9),
    ]
    emitted = [i for i, (a, p) in enumerate(seq) if pa._hysteresis(1, 0.5, a, p)]
    assert emitted == [1, 8]  # walk once stable; fall only after two confident in a row
    assert pa._hysteresis(1, 1.0, "walk", 0.9) is False  # horizons are independent
    # A track ending mid-stream: track.end with its frame count, buffers dropped.
    box = np.array([[100, 100, 140, 200]], np.float32)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :, 0], kp[0, :, 1], kp[0, :, 2] = 120, np.linspace(105, 195, 17), 1.0
    events = []
    for i in range(40):
        det = Detections(box, [0.9], [0]) if i < 5 else Detections.empty()
        poses = Poses(kp) if i < 5 else Poses.empty()
        events += pa.update(FrameResult("c", i, i / 10, 0.0, 640, 360, det, poses))
    assert events[0] == ("track.start", {"track": 1, "label": "person"})
    assert events[1] == (
        "track.end",
        {"track": 1, "label": "person", "frames": 4, "duration_s": 0.3},
    )
    assert len(pa.buffers) == 0 and pa.finish() == []
    pa.update(FrameResult("c", 0, 0.0, 0.0, 640, 360, Detections(box, [0.9], [0]), Poses(kp)))
    pa.reset()
    assert pa.finish() == [] and len(pa.buffers) == 0


def test_match_poses_to_boxes() -> None:
    boxes = np.array([[0, 0, 50, 100], [40, 0, 90, 100]], np.float32)
    kps = np.zeros((3, 17, 3), np.float32)
    kps[0, :, 0], kps[0, :, 1], kps[0, :, 2] = 65, np.linspace(5, 95, 17), 1
    kps[1, :, 0], kps[1, :, 1], kps[1, :, 2] = 20, np.linspace(5, 95, 17), 1
    kps[2, :, 0], kps[2, :, 1], kps[2, :, 2] = 500, 500, 1  # nowhere near a box
    assert sorted(match_poses_to_boxes(kps, boxes)) == [(0, 1), (1, 0)]
    assert match_poses_to_boxes(kps[:0], boxes) == []
