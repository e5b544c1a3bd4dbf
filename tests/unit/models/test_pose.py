"""Tests for the pose stage: Keypoint R-CNN and OpenPifPaf give COCO-17 Poses on synthetic
frames with random weights; OpenPifPaf's decoder turns known fields into the known pose; a
missing openpifpaf gives a clear error or the fallback, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import weights as W
from models.pose import (
    KEYPOINT_RCNN,
    PERSON_CLASS_NAMES,
    PoseEstimator,
    PoseUnavailable,
)
from models.results import Poses
from models.runtime import optional as optional_mod
from models.runtime.optional import openpifpaf_status
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene

torch.set_num_threads(1)
needs_openpifpaf = pytest.mark.skipif(
    openpifpaf_status() is not None, reason=f"openpifpaf unusable: {openpifpaf_status()}"
)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    scene = make_scene(3, width=160, height=96, n_people=2)
    return [render_frame(scene, i)[0] for i in range(2)]


def _check(result, frame: np.ndarray) -> None:
    poses, boxes = result.poses, result.boxes
    assert isinstance(poses, Poses) and poses.keypoints.shape == (len(poses), 17, 3)
    assert poses.keypoints.dtype == np.float32 and len(boxes) == len(poses)
    assert np.all(boxes.class_id == 1) and PERSON_CLASS_NAMES[1] == "person"
    conf = poses.keypoints[:, :, 2]
    assert np.all((conf >= 0) & (conf <= 1))
    assert np.all(np.diff(poses.score) <= 0), "poses sorted by score"


def test_keypoint_rcnn_gives_coco17_poses_with_boxes(frames: list[np.ndarray]) -> None:
    est = PoseEstimator(model=KEYPOINT_RCNN, weights="none", input_size=96,
                        score_threshold=0.0, max_poses=4)  # fmt: skip
    results = est.estimate(frames)
    assert len(results) == 2 and est.family == "keypointrcnn"
    for r, f in zip(results, frames):
        _check(r, f)
        assert 0 < len(r.poses) <= 4  # random weights still score some boxes above 0
    assert [len(p) for p in est(frames)] == [len(r.poses) for r in results]


@needs_openpifpaf
def test_openpifpaf_runs_on_a_synthetic_frame(frames: list[np.ndarray]) -> None:
    est = PoseEstimator(model="openpifpaf", weights="none", input_size=129, score_threshold=0.0)
    assert est.family == "openpifpaf" and "random weights" in est.description
    for r, f in zip(est.estimate(frames), frames):
        _check(r, f)  # random fields decode to few or no poses; shape and flow must hold


@needs_openpifpaf
def test_openpifpaf_decoder_recovers_a_known_pose() -> None:
    """Known CIF/CAF fields go through vigil's decode path (decoder + rescale to the frame)."""
    est = PoseEstimator(model="openpifpaf", weights="none", input_size=129, score_threshold=0.0)
    impl = est._impl
    cif_meta, caf_meta = impl.head_metas
    stride = cif_meta.stride
    h, w = 129, 225
    fh, fw = (h - 1) // stride + 1, (w - 1) // stride + 1
    rng = np.random.default_rng(0)
    joints = np.stack([rng.uniform(40, 180, 17), rng.uniform(20, 110, 17)], axis=1)
    cif = torch.zeros(cif_meta.n_fields, 5, fh, fw)
    caf = torch.zeros(caf_meta.n_fields, 8, fh, fw)
    for k, (x, y) in enumerate(joints / stride):
        for cy in range(max(0, round(y) - 1), min(fh, round(y) + 2)):
            for cx in range(max(0, round(x) - 1), min(fw, round(x) + 2)):
                cif[k, :, cy, cx] = torch.tensor([1.0, 0.9, x, y, 1.0])
    for j, (a, b) in enumerate(caf_meta.skeleton):
        pa, pb = joints[a - 1] / stride, joints[b - 1] / stride
        for t in np.linspace(0.0, 1.0, 7):
            cx, cy = (round(v) for v in pa + t * (pb - pa))
            if 0 <= cy < fh and 0 <= cx < fw:
                caf[j, :, cy, cx] = torch.tensor([1.0, 0.9, *pa, *pb, 1.0, 1.0])
    # frame twice the network input: keypoints come back scaled by 2
    kp, score, boxes = impl.decode([cif, caf], scale=(0.5, 0.5))
    assert boxes is None and kp.shape[1:] == (17, 3) and len(kp) >= 1
    best = kp[np.argmax(score)]
    found = best[:, 2] > 0
    assert found.sum() >= 12, "most joints connected through the CAF skeleton"
    err = np.linalg.norm(best[found, :2] - 2 * joints[found], axis=1)
    assert np.median(err) < 2 * stride, f"keypoints off by {err}"


def test_missing_openpifpaf_is_a_clear_error_or_the_fallback(monkeypatch) -> None:
    reason = "openpifpaf does not import (ImportError: test)"
    monkeypatch.setattr(optional_mod, "_OPENPIFPAF", (None, reason))
    assert openpifpaf_status() == reason
    with pytest.raises(PoseUnavailable, match="ImportError: test.*keypointrcnn"):
        PoseEstimator(model="shufflenetv2k16", weights="none")
    est = PoseEstimator(model="openpifpaf", weights="none", input_size=64, fallback=KEYPOINT_RCNN)
    assert est.family == "keypointrcnn" and "fell back" in est.description
    with pytest.raises(PoseUnavailable, match="test"):
        W.get("openpifpaf_shufflenetv2k16").build(seed=0)


def test_openpifpaf_entries_are_registered() -> None:
    for name in ("shufflenetv2k16", "shufflenetv2k30", "resnet50"):
        e = W.get(f"openpifpaf_{name}")
        assert e.task == "keypoints" and e.url.startswith("http://github.com/openpifpaf/")
        assert e.url.endswith(e.file_name) and f"-{e.sha256}.pkl" in e.file_name
    assert W.get("openpifpaf_shufflenetv2k16").sha256 == "7189450a"


def test_unknown_pose_model_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="keypointrcnn_resnet50_fpn"):
        PoseEstimator(model="posenet")


def test_pose_stride_reuses_the_last_poses(frames: list[np.ndarray]) -> None:
    est = PoseEstimator(model=KEYPOINT_RCNN, weights="none", input_size=64, stride=2,
                        score_threshold=0.0, max_poses=2)  # fmt: skip
    out = est.estimate(frames + frames[:1], stream_ids=["a", "a", "a"])
    assert est.schedule.runs == 2 and out[1] is out[0] and out[2] is not out[0]


@needs_openpifpaf
def test_openpifpaf_fields_agree_on_onnxruntime(frames: list[np.ndarray], tmp_path) -> None:
    """Eager vs ONNX Runtime CIF/CAF fields on the same padded canvas, within 1e-3."""
    pytest.importorskip("onnxruntime")
    from models.runtime.options import BackendOptions

    kw = dict(model="openpifpaf", weights="none", input_size=97, score_threshold=0.0)
    eager = PoseEstimator(**kw)
    ort = PoseEstimator(**kw, backend=BackendOptions("onnxruntime", cache_dir=tmp_path))
    x = torch.rand(2, 3, *ort._impl.canvas)
    with torch.inference_mode():
        a, b = eager._impl.core(x), ort._impl.core(x)
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):
        assert fa.shape == fb.shape and torch.allclose(fa, fb, atol=1e-3)
    for r in ort.estimate(frames):
        assert r.poses.keypoints.shape[1:] == (17, 3)
