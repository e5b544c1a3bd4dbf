"""Files and data sets made from the synthetic world: sample videos with ground truth, the
cached demo sample, and pose sequences for training the action forecaster.

Ground-truth JSON (:func:`write_sample_video`)::

    {"version": 1, "seed": 0, "width": 640, "height": 360, "fps": 15.0, "n_frames": 120,
     "classes": ["person", "ball", "box", "car"],
     "frames": [{"frame": 0, "pts": 0.0, "objects": [
         {"id": 1, "class": "person", "box": [x1, y1, x2, y2],
          "keypoints": [[x, y, v], ...17], "action": "walk"},
         {"id": 4, "class": "ball", "box": [x1, y1, x2, y2]}]}, ...]}

In the ground truth a keypoint's ``v`` is 1 when it lies inside the frame and is not covered by a
nearer figure or object, else 0; :func:`~stream.sim.motion.pose_at` (no frame, no other figures)
gives ``v = 1`` for every keypoint, since every keypoint is a joint of the figure's own drawn body.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stream.sim.motion import pose_at
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene
from stream.sim.world import ACTIONS, CLASSES, GT_VERSION, Scene, action_at, random_script

_HERE = Path(__file__).parent
#: The modules whose code makes the demo sample's frames (its cache fingerprint hashes them).
_WORLD_CODE = ("world.py", "motion.py", "render.py", "scenes.py", "sample.py")


def scene_ground_truth_header(scene: Scene) -> dict:
    """The ground-truth dict without frames: version, seed, size, fps, n_frames, classes."""
    return {
        "version": GT_VERSION,
        "seed": scene.seed,
        "width": scene.width,
        "height": scene.height,
        "fps": scene.fps,
        "n_frames": scene.n_frames,
        "classes": list(CLASSES),
    }


def write_sample_video(
    scene: Scene,
    video_path: str | Path,
    gt_path: str | Path | None = None,
    *,
    crf: int = 18,
    progress: bool = False,
) -> dict:
    """Render the scene to an H.264 video (libx264, yuv420p) and its ground-truth JSON.

    Frame ``i`` has ``pts = i`` in a ``1/fps`` time base, i.e. it is shown at ``i / fps``
    seconds. The container follows ``video_path``'s suffix (``.mp4`` intended). Width and height
    must be even (yuv420p). ``progress`` shows a tqdm bar. Returns the ground-truth dict.
    """
    import av

    if scene.width % 2 or scene.height % 2:
        raise ValueError(
            f"H.264 yuv420p needs an even frame size, got {scene.width}x{scene.height}"
        )
    rate = Fraction(scene.fps).limit_denominator(1001)
    gt = scene_ground_truth_header(scene)
    frames_gt = []
    indices: Any = range(scene.n_frames)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=Path(video_path).name, unit="frame")
    with av.open(str(video_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.options = {"crf": str(int(crf))}
        # Frame pts count frames (time base 1/fps); the muxer picks its own finer time base.
        # (Setting stream.time_base here too makes PyAV 18 hand the muxer a bad packet.)
        time_base = 1 / rate
        for i in indices:
            img, fgt = render_frame(scene, i)
            frames_gt.append(fgt)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    gt["frames"] = frames_gt
    if gt_path is not None:
        Path(gt_path).write_text(json.dumps(gt, separators=(",", ":")))
    return gt


def demo_sample(cache_dir: Path) -> tuple[Path, Path]:
    """The default demo video and ground truth, made once under ``cache_dir``.

    Returns ``(cache_dir / "sample.mp4", cache_dir / "sample.gt.json")`` for
    ``make_scene(seed=0)``. They are (re)written when either is missing, or when the ground
    truth's ``sample_fingerprint`` (the synthetic world's code and the scene's script) differs, so a
    newer vigil never plays a stale sample. Each goes through a temporary file and an atomic
    rename, so a concurrent reader never sees half a file.
    """
    cache_dir = Path(cache_dir)
    video, gt = cache_dir / "sample.mp4", cache_dir / "sample.gt.json"
    scene = make_scene(seed=0)
    made_by = b"".join((_HERE / f).read_bytes() for f in _WORLD_CODE) + repr(scene).encode()
    fingerprint = hashlib.sha256(made_by).hexdigest()[:16]
    if video.is_file() and gt.is_file():
        try:
            if json.loads(gt.read_text()).get("sample_fingerprint") == fingerprint:
                return video, gt
        except (OSError, ValueError):
            pass  # unreadable: made again
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_video = cache_dir / f".sample.{os.getpid()}.tmp.mp4"
    tmp_gt = cache_dir / f".sample.{os.getpid()}.tmp.json"
    try:
        truth = write_sample_video(scene, tmp_video)
        truth["sample_fingerprint"] = fingerprint
        tmp_gt.write_text(json.dumps(truth, separators=(",", ":")))
        os.replace(tmp_video, video)
        os.replace(tmp_gt, gt)
    finally:
        for p in (tmp_video, tmp_gt):
            p.unlink(missing_ok=True)
    return video, gt


# ---------------------------------------------------------------------------------------------
# Training data for the action forecaster
# ---------------------------------------------------------------------------------------------


def motion_dataset(
    rng: np.random.Generator,
    n_sequences: int,
    *,
    rate_hz: float = 10.0,
    window_s: float = 2.0,
    horizons_s: Sequence[float] = (0.5, 1.0),
    width: int = 640,
    height: int = 360,
    transition_frac: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose windows from random scripts, labelled with the action now and at future horizons.

    Each sequence is a fresh :func:`random_script`; a window of ``T = round(window_s *
    rate_hz)`` poses sampled every ``1 / rate_hz`` s ends at a random time ``t``. With
    ``transition_frac`` > 0, that fraction of the windows (on average) is placed so that an
    action change falls within ``(t, t + max(horizons_s)]``, which the uniform placement makes
    rare (a fall is ~1% of the time); the rest stay uniform.

    Returns:
        ``X (n, T, 17, 3) float32``: keypoints x, y in pixels (a ``width`` x ``height`` frame)
        and visibility; ``y_now (n,) int64``: index into :data:`ACTIONS` at ``t``;
        ``y_h (n, len(horizons_s)) int64``: index into :data:`ACTIONS` at ``t + h``.
    """
    T = int(round(window_s * rate_hz))
    if T < 1 or n_sequences < 0:
        raise ValueError(f"need T >= 1 and n_sequences >= 0, got T={T}, n={n_sequences}")
    horizons = tuple(float(h) for h in horizons_s)
    max_h = max(horizons, default=0.0)
    span = (T - 1) / rate_hz
    duration = span + max_h + 8.0
    index = {a: i for i, a in enumerate(ACTIONS)}
    X = np.zeros((n_sequences, T, 17, 3), np.float32)
    y_now = np.zeros(n_sequences, np.int64)
    y_h = np.zeros((n_sequences, len(horizons)), np.int64)
    for n in range(n_sequences):
        script = random_script(
            rng, duration_s=duration, width=width, height=height, figure_id=n + 1
        )
        t_end = float(rng.uniform(span, duration - max_h))
        if transition_frac > 0 and rng.random() < transition_frac:
            changes = [g.start_s for g in script.segments[1:] if span < g.start_s <= duration]
            if changes and max_h > 0:
                change = changes[int(rng.integers(len(changes)))]
                t_end = min(max(change - float(rng.uniform(0.0, max_h)), span), duration - max_h)
        for k in range(T):
            X[n, k] = pose_at(script, t_end - (T - 1 - k) / rate_hz)
        y_now[n] = index[action_at(script, t_end)]
        y_h[n] = [index[action_at(script, t_end + h)] for h in horizons]
    return X, y_now, y_h
