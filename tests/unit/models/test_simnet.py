"""Tests for SimNet / SimPerception: output contract on random weights, target encoding that
decodes back to the ground truth, weights resolution, and the shipped weights on held-out video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import weights as weights_registry
from models.coco17 import FLIP_INDEX
from models.ops import letterbox
from models.results import Detections, Masks, Poses
from models.simnet.infer import (
    DEFAULT_WEIGHTS,
    SHIPPED_SHA256,
    SimPerception,
    decode,
    file_sha256,
    load_metadata,
)
from models.simnet.net import CLASS_NAMES, STRIDE
from models.simnet.train import MAX_OBJECTS, encode_targets, flip_targets_input, simnet_loss
from models.weights import WeightsError
from stream.sim.datasets import HELDOUT_SEED_BASE, render_annotated, to_canvas
from stream.sim.scenes import make_scene

# A held-out clip: training uses seeds 100_000 + ..., evaluation 900_000 + k for small k.
TEST_SEED = HELDOUT_SEED_BASE + 5_000


@pytest.fixture(scope="module")
def random_model() -> SimPerception:
    return SimPerception(weights="none", score_threshold=0.0, max_detections=20)


@pytest.fixture(scope="module")
def shipped() -> SimPerception:
    return SimPerception()


def test_random_weights_give_well_formed_outputs_for_odd_frame_sizes(
    random_model: SimPerception,
) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
              ((97, 55), (361, 643), (240, 31), (33, 400))]  # fmt: skip
    results = random_model(frames)
    assert len(results) == len(frames)
    for frame, (det, poses, masks) in zip(frames, results):
        h, w = frame.shape[:2]
        assert isinstance(det, Detections) and isinstance(poses, Poses)
        assert isinstance(masks, Masks)
        assert 0 < len(det) <= 20
        assert (det.xyxy[:, 0::2] >= 0).all() and (det.xyxy[:, 0::2] <= w).all()
        assert (det.xyxy[:, 1::2] >= 0).all() and (det.xyxy[:, 1::2] <= h).all()
        assert (np.diff(det.score) <= 0).all()
        assert set(np.unique(det.class_id)) <= set(range(len(CLASS_NAMES)))
        assert len(poses) == int((det.class_id == 0).sum())
        assert np.isfinite(poses.keypoints).all()
        assert ((poses.keypoints[..., 2] >= 0) & (poses.keypoints[..., 2] <= 1)).all()
        assert masks.semantic.shape == (h, w) and masks.semantic.dtype == np.uint8
        assert set(np.unique(masks.semantic)) <= {0, 1}
    assert random_model([]) == []
    assert random_model.class_names == ("person", "ball", "box", "car")


def test_bad_input_and_arguments_are_rejected(random_model: SimPerception) -> None:
    with pytest.raises(ValueError, match="uint8"):
        random_model([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        random_model([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="unknown classes"):
        SimPerception(weights="none", classes=["dog"])
    with pytest.raises(ValueError, match="score_threshold"):
        SimPerception(weights="none", score_threshold=2.0)


def test_missing_weights_file_names_the_path_and_the_script(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(weights_registry.PACKS, "sim", tmp_path)
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match=r"simnet\.pt.*scripts/train_sim\.py"):
        SimPerception(weights="auto")
    with pytest.raises(WeightsError, match="not found"):
        SimPerception(weights=str(tmp_path / "nope.pt"))


def test_registry_entry_matches_the_shipped_file() -> None:
    entry = weights_registry.get("simnet")
    assert entry.task == "detection" and entry.categories == CLASS_NAMES
    assert entry.url == ""  # shipped in the repo
    assert DEFAULT_WEIGHTS.is_file(), "run scripts/train_sim.py to make the sim pack"
    assert len(SHIPPED_SHA256) == 64 and entry.sha256 == SHIPPED_SHA256
    assert file_sha256(DEFAULT_WEIGHTS) == SHIPPED_SHA256
    assert DEFAULT_WEIGHTS.stat().st_size < 20e6
    meta = load_metadata()
    assert meta["classes"] == list(CLASS_NAMES) and meta["sha256"] == SHIPPED_SHA256


def _ideal_outputs(t: dict[str, np.ndarray], h: int, w: int) -> dict[str, torch.Tensor]:
    """Network outputs that say exactly what the targets say."""

    def logit(p: np.ndarray) -> torch.Tensor:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return torch.from_numpy(np.log(p / (1 - p)))[None]

    out = {"heat": logit(t["heat"]), "kp_heat": logit(t["kp_heat"]), "mask": logit(t["mask"])}
    for name, c in (("offset", 2), ("size", 2), ("kp_reg", 34), ("kp_off", 34)):
        out[name] = torch.zeros(1, c, h, w)
    for m in np.flatnonzero(t["obj"]):
        y, x = divmod(int(t["ind"][m]), w)
        for name in ("offset", "size", "kp_reg"):
            out[name][0, :, y, x] = torch.from_numpy(t[name][m])
    for q in np.flatnonzero(t["kp_obj"]):
        y, x = divmod(int(t["kp_ind"][q]), w)
        j = q % 17
        out["kp_off"][0, 2 * j : 2 * j + 2, y, x] = torch.from_numpy(t["kp_off"][q])
    return out


def test_targets_decode_back_to_the_ground_truth() -> None:
    scene = make_scene(TEST_SEED, n_people=3, n_objects=2)
    frame = to_canvas(render_annotated(scene, 20), (320, 192))
    half = frame.person_mask[::2, ::2].astype(np.float32)
    t = encode_targets(frame.boxes, frame.labels, frame.keypoints, half, (192, 320))
    assert t["heat"].shape == (4, 192 // STRIDE, 320 // STRIDE)
    assert t["obj"].sum() == len(frame) <= MAX_OBJECTS
    out = _ideal_outputs(t, 192 // STRIDE, 320 // STRIDE)
    det, kps = decode(out)
    det, kps = det[det.score > 0.5], kps[det.score > 0.5]
    assert len(det) == len(frame)
    for g in range(len(frame)):
        p = int(np.abs(det.xyxy - frame.boxes[g]).sum(1).argmin())
        np.testing.assert_allclose(det.xyxy[p], frame.boxes[g], atol=1e-3)
        assert det.class_id[p] == frame.labels[g]
        if frame.labels[g] == 0:
            np.testing.assert_allclose(kps[p, :, :2], frame.keypoints[g, :, :2], atol=1e-3)
    terms = simnet_loss(out, {k: torch.from_numpy(v)[None] for k, v in t.items()})
    for name in ("offset", "size", "kp_reg", "kp_off"):
        assert float(terms[name]) < 1e-5, name


def test_flip_mirrors_joints_and_is_an_involution() -> None:
    assert all(FLIP_INDEX[FLIP_INDEX[j]] == j for j in range(17))
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)
    boxes = np.array([[1.0, 2.0, 5.0, 7.0]], np.float32)
    kps = rng.uniform(0, 8, (1, 17, 3)).astype(np.float32)
    mask = rng.random((4, 6)).astype(np.float32)
    once = flip_targets_input(img, boxes, kps, mask)
    np.testing.assert_allclose(once[1], [[7.0, 2.0, 11.0, 7.0]])
    np.testing.assert_allclose(once[2][0, 1, 0], 12 - kps[0, 2, 0])  # left eye <- right eye
    twice = flip_targets_input(*once)
    for a, b in zip((img, boxes, kps, mask), twice):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_letterbox_keeps_aspect_and_pads_to_32() -> None:
    canvas, (sx, sy) = letterbox(np.full((360, 640, 3), 7, np.uint8), 320)
    assert canvas.shape == (192, 320, 3) and (sx, sy) == (0.5, 0.5)
    assert (canvas[:180] == 7).all() and (canvas[180:] == 0).all()
    canvas, _ = letterbox(np.zeros((97, 55, 3), np.uint8), 320)
    assert canvas.shape[0] % 32 == 0 and canvas.shape[1] % 32 == 0


def test_shipped_weights_find_people_on_a_held_out_clip(shipped: SimPerception) -> None:
    """The end-to-end correctness check: a fresh clip the model never saw (seed not used in
    training), person recall >= 0.9 at IoU 0.5 and keypoints mostly within 0.1 box."""
    from torchvision.ops import box_iou

    assert "sim pack" in shipped.description and "train_sim.py" in shipped.description
    scene = make_scene(TEST_SEED, n_people=3, n_objects=2)
    frames = [render_annotated(scene, i) for i in range(0, 100, 10)]
    results = shipped([f.image for f in frames])
    n_gt = n_hit = kp_total = kp_hit = 0
    ious = []
    for frame, (det, poses, masks) in zip(frames, results):
        gt_boxes = frame.boxes[frame.labels == 0]
        gt_kps = frame.keypoints[frame.labels == 0]
        pboxes = det.xyxy[det.class_id == 0]
        assert len(poses) == len(pboxes)
        iou = box_iou(torch.from_numpy(gt_boxes), torch.from_numpy(pboxes)).numpy()
        for g in range(len(gt_boxes)):
            n_gt += 1
            vis = gt_kps[g, :, 2] == 2
            kp_total += int(vis.sum())
            if iou.shape[1] == 0 or iou[g].max() < 0.5:
                continue
            n_hit += 1
            p = int(iou[g].argmax())
            size = max(gt_boxes[g, 2] - gt_boxes[g, 0], gt_boxes[g, 3] - gt_boxes[g, 1])
            d = np.hypot(*(poses.keypoints[p, :, :2] - gt_kps[g, :, :2]).T)
            kp_hit += int(((d <= 0.1 * size) & vis).sum())
        pm, gm = masks.semantic == 1, frame.person_mask
        ious.append((pm & gm).sum() / max((pm | gm).sum(), 1))
    assert n_gt >= 25
    assert n_hit / n_gt >= 0.9
    assert kp_hit / kp_total >= 0.75
    assert np.mean(ious) >= 0.7
