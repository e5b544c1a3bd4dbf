"""Tests for the synthetic world: determinism, exact ground truth, video output, motion."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from stream.sim.motion import pose_at, torso_angle
from stream.sim.render import background, render_frame
from stream.sim.sample import demo_sample, motion_dataset, write_sample_video
from stream.sim.scenes import make_scene
from stream.sim.world import (
    ACTIONS,
    CLASSES,
    FigureScript,
    Scene,
    SceneObject,
    Segment,
    action_at,
    random_script,
)

W, H = 320, 180


def _script(*actions: tuple[str, float], **kw) -> FigureScript:
    """A hand-made script from ``(action, seconds)`` pairs."""
    segs, t = [], 0.0
    for action, dur in actions:
        segs.append(Segment(action, t, t + dur))
        t += dur
    args = dict(
        figure_id=1,
        segments=tuple(segs),
        x0=W / 2,
        ground_y=0.85 * H,
        height_px=0.5 * H,
        speed_px_s=40.0,
        color=(200, 40, 40),
        walk_bounds=(0.02 * W, 0.98 * W),
    )
    args.update(kw)
    return FigureScript(**args)


def _scene(figures=(), objects=(), duration_s: float = 4.0, seed: int = 1) -> Scene:
    return Scene(seed, W, H, 10.0, duration_s, tuple(figures), tuple(objects))


def _drawn_pixels(scene: Scene, frame_idx: int) -> tuple[np.ndarray, dict]:
    """Pixels that differ from the empty scene's frame (the known background)."""
    empty, _ = render_frame(replace(scene, figures=(), objects=()), frame_idx)
    frame, gt = render_frame(scene, frame_idx)
    return np.any(frame != empty, axis=2), gt


def _assert_box_holds_pixels(diff: np.ndarray, box: list[float]) -> None:
    x1, y1, x2, y2 = (int(v) for v in box)
    ys, xs = np.nonzero(diff)
    assert ys.size > 0, "nothing was drawn"
    assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2, (
        f"drawn pixels span x {xs.min()}..{xs.max()} y {ys.min()}..{ys.max()}, box {box}"
    )
    # Tight: the drawn pixels reach every side of the box (anti-aliased edges may fade to
    # invisible by a pixel).
    assert xs.min() - x1 <= 1 and x2 - 1 - xs.max() <= 1
    assert ys.min() - y1 <= 1 and y2 - 1 - ys.max() <= 1


def test_same_seed_gives_identical_frames_and_ground_truth() -> None:
    a = make_scene(5, width=W, height=H, duration_s=2.0)
    b = make_scene(5, width=W, height=H, duration_s=2.0)
    assert a == b
    for i in (0, 7, 19):
        fa, ga = render_frame(a, i)
        background.cache_clear()  # the background is rebuilt, not just reused
        fb, gb = render_frame(b, i)
        assert fa.dtype == np.uint8 and fa.shape == (H, W, 3)
        assert np.array_equal(fa, fb)
        assert ga == gb


def test_different_seeds_give_different_frames() -> None:
    fa, _ = render_frame(make_scene(1, width=W, height=H, duration_s=1.0), 3)
    fb, _ = render_frame(make_scene(2, width=W, height=H, duration_s=1.0), 3)
    assert np.mean(fa != fb) > 0.5


@pytest.mark.parametrize(
    ("script", "times"),
    [
        (_script(("walk", 3.0), ("wave", 1.0)), (0.0, 0.55, 1.3, 3.6)),
        (_script(("stand", 0.5), ("fall", 0.7), ("lie", 1.0)), (0.8, 1.0, 1.2, 2.0)),
        (_script(("sit_down", 1.0), ("sit", 1.0), ("stand_up", 1.0)), (0.5, 1.5, 2.5)),
        # Walks off the left edge: the box is clipped to the frame.
        (_script(("walk", 4.0), x0=15.0, speed_px_s=-30.0, walk_bounds=None), (0.0, 0.6)),
    ],
)
def test_person_box_holds_exactly_the_drawn_pixels(script: FigureScript, times) -> None:
    scene = _scene([script])
    for t in times:
        diff, gt = _drawn_pixels(scene, round(t * scene.fps))
        (person,) = gt["objects"]
        assert person["class"] == "person" and person["id"] == 1
        _assert_box_holds_pixels(diff, person["box"])
        x1, y1, x2, y2 = person["box"]
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        for x, y, v in person["keypoints"]:
            assert v in (0, 1)
            inside = 0 <= x < W and 0 <= y < H
            assert v == int(inside)
            if v:
                assert x1 <= x <= x2 and y1 <= y <= y2


@pytest.mark.parametrize("kind", ["ball", "box", "car"])
def test_object_box_holds_exactly_the_drawn_pixels(kind: str) -> None:
    obj = SceneObject(7, kind, W / 2, 0.8 * H, 40.0, 25.0, (30, 160, 90))
    scene = _scene(objects=[obj])
    for i in (0, 13):
        diff, gt = _drawn_pixels(scene, i)
        (entry,) = gt["objects"]
        assert entry == {"id": 7, "class": kind, "box": entry["box"]}
        _assert_box_holds_pixels(diff, entry["box"])


def test_object_entirely_outside_the_frame_is_left_out() -> None:
    car = SceneObject(9, "car", W + 50.0, 0.8 * H, 80.0, 0.0, (30, 160, 90))  # parked off-frame
    _, gt = render_frame(_scene(objects=[car]), 0)
    assert gt["objects"] == []


def test_keypoint_hidden_behind_a_nearer_figure_is_not_visible() -> None:
    far = _script(("stand", 2.0), figure_id=1, ground_y=0.7 * H, height_px=0.35 * H)
    near = _script(("stand", 2.0), figure_id=2, ground_y=0.95 * H, height_px=0.7 * H)
    _, gt = render_frame(_scene([far, near]), 0)
    far_gt = next(o for o in gt["objects"] if o["id"] == 1)
    assert far_gt["keypoints"][11][2] == 0  # left hip, behind the near figure's body
    assert [o["id"] for o in gt["objects"]] == [1, 2]


def test_scene_ground_truth_keypoints_lie_in_their_boxes() -> None:
    scene = make_scene(3, width=W, height=H, duration_s=3.0, n_people=4, n_objects=3)
    classes = set()
    for i in range(0, scene.n_frames, 3):
        _, gt = render_frame(scene, i)
        assert gt["frame"] == i and gt["pts"] == pytest.approx(i / scene.fps)
        for obj in gt["objects"]:
            classes.add(obj["class"])
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            if obj["class"] != "person":
                continue
            assert obj["action"] in ACTIONS and len(obj["keypoints"]) == 17
            for x, y, v in obj["keypoints"]:
                if v:
                    assert x1 <= x <= x2 and y1 <= y <= y2
    assert classes <= set(CLASSES) and "person" in classes


def test_write_sample_video_decodes_with_right_frames_size_and_pts(tmp_path: Path) -> None:
    scene = make_scene(4, width=160, height=96, fps=12.5, duration_s=1.2, n_people=2)
    video, gt_path = tmp_path / "s.mp4", tmp_path / "s.gt.json"
    gt = write_sample_video(scene, video, gt_path)
    assert json.loads(gt_path.read_text()) == gt
    assert gt["n_frames"] == scene.n_frames == 15 == len(gt["frames"])
    assert gt["classes"] == list(CLASSES) and gt["version"] == 1
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert len(frames) == 15
    assert all((f.width, f.height, f.format.name) == (160, 96, "yuv420p") for f in frames)
    for i, f in enumerate(frames):
        assert f.time == pytest.approx(i / 12.5, abs=1e-6)
        assert gt["frames"][i]["pts"] == pytest.approx(i / 12.5)
    # What was encoded is what was rendered (lossy, but close).
    decoded = frames[5].to_ndarray(format="rgb24").astype(np.int16)
    assert np.abs(decoded - render_frame(scene, 5)[0]).mean() < 6


def test_write_sample_video_rejects_odd_frame_size(tmp_path: Path) -> None:
    scene = make_scene(0, width=161, height=96, duration_s=0.2)
    with pytest.raises(ValueError, match="even"):
        write_sample_video(scene, tmp_path / "odd.mp4")


def test_demo_sample_is_made_once(tmp_path: Path) -> None:
    video, gt = demo_sample(tmp_path)
    assert (video, gt) == (tmp_path / "sample.mp4", tmp_path / "sample.gt.json")
    stamp = video.stat().st_mtime_ns, gt.stat().st_mtime_ns
    assert demo_sample(tmp_path) == (video, gt)
    assert (video.stat().st_mtime_ns, gt.stat().st_mtime_ns) == stamp
    header = json.loads(gt.read_text())
    assert (header["seed"], header["width"], header["height"], header["n_frames"]) == (
        0,
        640,
        360,
        120,
    )
    gt.unlink()  # a missing file is made again
    demo_sample(tmp_path)
    assert gt.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.gt.json", "sample.mp4"]
    stale = json.loads(gt.read_text())  # made by another version of vigil: made again
    stale["sample_fingerprint"] = "0" * 16
    gt.write_text(json.dumps(stale))
    demo_sample(tmp_path)
    assert json.loads(gt.read_text())["sample_fingerprint"] != "0" * 16
    assert json.loads(gt.read_text())["frames"] == header["frames"]


def test_random_script_reaches_every_action_with_valid_segments() -> None:
    seen: set[str] = set()
    for seed in range(150):
        script = random_script(
            np.random.default_rng(seed), duration_s=20.0, width=W, height=H, figure_id=1
        )
        segs = script.segments
        assert segs[0].start_s == 0.0 and segs[-1].end_s == 20.0
        for a, b in zip(segs, segs[1:], strict=False):
            assert a.end_s == b.start_s and (a.action, b.action) != ("fall", "stand")
            assert a.end_s - a.start_s <= 4.0
            if a.action == "fall":
                assert b.action == "lie" and 0.6 <= a.end_s - a.start_s <= 0.8
            if a.action == "sit_down":
                assert b.action == "sit"
        seen.update(s.action for s in segs)
    assert seen == set(ACTIONS)


def test_random_script_is_a_pure_function_of_the_rng() -> None:
    def make(seed: int) -> FigureScript:
        rng = np.random.default_rng(seed)
        return random_script(rng, duration_s=8.0, width=W, height=H, figure_id=2)

    assert make(11) == make(11)
    assert make(11) != make(12)


def test_action_at_follows_segments() -> None:
    script = _script(("stand", 1.0), ("walk", 2.0))
    assert [action_at(script, t) for t in (0.0, 0.99, 1.0, 2.9, 3.0, 9.0)] == [
        "stand",
        "stand",
        "walk",
        "walk",
        "walk",
        "walk",
    ]


def test_fall_ends_near_horizontal_and_stand_is_upright() -> None:
    script = _script(("stand", 1.0), ("fall", 0.7), ("lie", 1.5))
    standing, fallen, lying = pose_at(script, 0.5), pose_at(script, 1.7), pose_at(script, 3.0)
    assert standing.shape == (17, 3) and standing.dtype == np.float32
    assert np.all(standing[:, 2] == 1)
    assert torso_angle(standing) < 10
    assert torso_angle(pose_at(script, 1.35)) > 15  # mid-fall: toppling
    assert torso_angle(fallen) > 75 and torso_angle(lying) > 75
    # Lying on the floor: the whole body is near the ground line.
    assert lying[:, 1].max() <= script.ground_y + 1
    assert lying[:, 1].min() > script.ground_y - 0.25 * script.height_px


def test_sit_has_hips_lower_than_stand() -> None:
    script = _script(("stand", 1.0), ("sit_down", 1.0), ("sit", 1.0), ("stand_up", 1.0))
    hip_y = {t: float(pose_at(script, t)[11:13, 1].mean()) for t in (0.5, 1.5, 2.5, 3.99)}
    assert hip_y[2.5] - hip_y[0.5] > 0.15 * script.height_px  # y grows downward
    assert hip_y[0.5] < hip_y[1.5] < hip_y[2.5]  # lowering during sit_down
    assert abs(hip_y[3.99] - hip_y[0.5]) < 0.03 * script.height_px  # back up


def test_walk_swings_legs_translates_and_turns_at_the_bounds() -> None:
    script = _script(("walk", 12.0), x0=0.9 * W, speed_px_s=60.0)
    lo, hi = script.walk_bounds
    hips = [float(pose_at(script, t)[11:13, 0].mean()) for t in np.arange(0, 12, 0.25)]
    assert all(lo - 5 <= x <= hi + 5 for x in hips)
    steps = np.diff(hips)
    assert (steps > 0).any() and (steps < 0).any()  # it turned round
    knee_gap = [abs(float(pose_at(script, t)[13, 0] - pose_at(script, t)[14, 0])) for t in (0, 0.4)]
    assert max(knee_gap) > 0.1 * script.height_px  # legs swing apart


def test_wave_raises_the_wrist_above_the_head() -> None:
    script = _script(("wave", 3.0))
    wrist_y = [float(pose_at(script, t)[10, 1]) for t in np.arange(0.5, 2.5, 0.1)]
    head_y = float(pose_at(script, 1.0)[0, 1])
    assert max(wrist_y) < head_y
    wrist_x = [float(pose_at(script, t)[10, 0]) for t in np.arange(0.5, 2.5, 0.05)]
    assert np.ptp(wrist_x) > 0.05 * script.height_px  # it oscillates


def test_pose_is_continuous_across_segment_changes() -> None:
    """Actions blend into each other: no joint jumps between closely spaced times."""
    scripts = [_script(("walk", 1.5), ("stand", 1.0), ("wave", 1.0), ("sit_down", 1.0), ("sit", 1))]
    for seed in range(12):  # without walk bounds, so no turning round (an instant mirror)
        rng = np.random.default_rng(seed)
        script = random_script(rng, duration_s=10.0, width=W, height=H, figure_id=1)
        scripts.append(replace(script, walk_bounds=None))
    for script in scripts:
        times = np.arange(0.0, script.duration_s, 0.02)
        poses = np.stack([pose_at(script, t) for t in times])
        step = np.abs(np.diff(poses[:, :, :2], axis=0)).max()
        # Under 0.1 height per 20 ms (5 heights/s): the fastest motion is the end of a fall.
        assert step < 0.1 * script.height_px, [s.action for s in script.segments]


def _knee_flex(kp: np.ndarray) -> float:
    """Mean knee flexion in degrees (0 = straight legs)."""
    out = []
    for hip, knee, ankle in ((11, 13, 15), (12, 14, 16)):
        a, b = kp[hip, :2] - kp[knee, :2], kp[ankle, :2] - kp[knee, :2]
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        out.append(180.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return float(np.mean(out))


def test_anticipation_cue_before_sit_down() -> None:
    """The last ~0.75 s of a stand before a sit_down shows the prelude (knees bend, hips drop,
    torso leans) while the label is still stand; earlier the figure stands as usual."""
    cued = _script(("stand", 2.0), ("sit_down", 1.0), ("sit", 1.0))
    steady = _script(("stand", 4.0))
    for t in (0.5, 1.0):  # before the cue: exactly the steady stand
        np.testing.assert_allclose(pose_at(cued, t), pose_at(steady, t))
    t = 1.95
    assert action_at(cued, t) == "stand"
    before, still = pose_at(cued, t), pose_at(steady, t)
    assert _knee_flex(before) > _knee_flex(still) + 15
    hip_drop = float(before[11:13, 1].mean() - still[11:13, 1].mean())
    assert hip_drop > 0.01 * cued.height_px  # y grows downward
    assert torso_angle(before) > torso_angle(still) + 8


def test_anticipation_cues_differ_by_next_action() -> None:
    """Just before a change, the pose says which action comes next: stand before walk / wave /
    sit_down / fall gives clearly different poses; a walker slows down before stopping."""
    nexts = ("walk", "wave", "sit_down", "fall")
    poses = {}
    for nxt in nexts:
        script = _script(("stand", 2.0), (nxt, 1.0), walk_bounds=None)
        assert action_at(script, 1.95) == "stand"
        kp = pose_at(script, 1.95)[:, :2]
        poses[nxt] = (kp - kp[11:13].mean(axis=0)) / script.height_px
    steady = _script(("stand", 4.0))
    base = pose_at(steady, 1.95)[:, :2]
    base = (base - base[11:13].mean(axis=0)) / steady.height_px
    for i, a in enumerate(nexts):
        assert np.abs(poses[a] - base).max() > 0.05, a
        for b in nexts[i + 1 :]:
            assert np.abs(poses[a] - poses[b]).max() > 0.05, (a, b)
    # A raised hand before a wave: the right wrist rises to the shoulders (y grows downward).
    assert poses["wave"][10, 1] < base[6, 1] + 0.05 < base[10, 1] - 0.2

    walker = _script(("walk", 3.0), ("stand", 1.0), walk_bounds=None)
    hip_x = [float(pose_at(walker, t)[11:13, 0].mean()) for t in (1.0, 1.1, 2.85, 2.95)]
    assert abs(hip_x[3] - hip_x[2]) < 0.5 * abs(hip_x[1] - hip_x[0])
    assert action_at(walker, 2.95) == "walk"


def test_motion_dataset_shapes_labels_and_determinism() -> None:
    X, y_now, y_h = motion_dataset(np.random.default_rng(0), 6, rate_hz=5.0, window_s=2.0)
    assert X.shape == (6, 10, 17, 3) and X.dtype == np.float32
    assert y_now.shape == (6,) and y_h.shape == (6, 2)
    assert y_now.dtype == np.int64 and y_h.dtype == np.int64
    assert 0 <= y_now.min() and y_now.max() < len(ACTIONS)
    assert 0 <= y_h.min() and y_h.max() < len(ACTIONS)
    assert np.all(X[..., 2] == 1) and np.isfinite(X).all()
    X2, y2, yh2 = motion_dataset(np.random.default_rng(0), 6, rate_hz=5.0, window_s=2.0)
    assert np.array_equal(X, X2) and np.array_equal(y_now, y2) and np.array_equal(y_h, yh2)


def test_motion_dataset_transition_frac_places_windows_before_action_changes() -> None:
    rng = np.random.default_rng(1)
    _, y_now, y_h = motion_dataset(rng, 40, rate_hz=5.0, horizons_s=(1.0,), transition_frac=1.0)
    assert np.mean(y_h[:, 0] != y_now) > 0.9


def test_segments_and_scripts_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        Segment("jump", 0.0, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        _script(("stand", 1.0)).__class__(
            1, (Segment("stand", 0, 1), Segment("walk", 1.5, 2)), 0, 100, 50, 1, (0, 0, 0)
        )
    assert math.isclose(_script(("stand", 1.0), ("walk", 2.5)).duration_s, 3.5)
