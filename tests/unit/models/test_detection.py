"""Tests for the detection stage: class-aware NMS on hand-made boxes, and the Detector on tiny
random frames with random weights (CPU, no downloads).

Random-init torchvision detectors are degenerate in eval mode: BatchNorm running stats sit at
their defaults, backbone features collapse and every box gets the same score, so order among
ties is arbitrary. The ``calibrated_weights`` fixture sets BatchNorm statistics from two random
frames, which gives distinct scores and makes order-sensitive checks meaningful.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import weights as W
from models.detection import Detector, nms_detections
from models.results import Detections
from models.weights import WeightsError

MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
SIZE = 96  # detector input (shorter side), pixels: keeps every forward pass well under 1 s


@pytest.fixture(autouse=True)
def no_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cached pretrained files and no packs, whatever the machine has."""
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path_factory.getbasetemp() / "empty-cache"))
    monkeypatch.setattr(W, "PACKS", {})


@pytest.fixture(scope="module")
def calibrated_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict of the random-init model with BatchNorm stats set from two random frames."""
    model = W.get(MODEL).build(seed=0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    model.backbone.train()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.backbone((torch.rand(2, 3, SIZE, 128, generator=generator) - 0.45) / 0.225)
    path = tmp_path_factory.mktemp("weights") / f"{MODEL}.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def detector(calibrated_weights: Path) -> Detector:
    return Detector(model=MODEL, weights=str(calibrated_weights), score_threshold=0.0,
                    input_size=SIZE, max_detections=50)  # fmt: skip


def frame(seed: int, height: int = SIZE, width: int = 128) -> np.ndarray:
    """A ``(height, width, 3) uint8`` RGB noise frame."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.array(boxes, np.float32), np.array(scores), np.array(classes))


# --- nms_detections ------------------------------------------------------------------------


def test_nms_suppresses_overlapping_boxes_of_the_same_class() -> None:
    det = dets([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.8, 0.9, 0.7], [1, 1, 1])
    out = nms_detections(det, 0.5)
    np.testing.assert_array_equal(out.xyxy, [[1, 1, 11, 11], [50, 50, 60, 60]])
    np.testing.assert_allclose(out.score, [0.9, 0.7])


def test_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    det = dets([[0, 0, 10, 10], [1, 1, 11, 11]], [0.8, 0.9], [1, 2])
    out = nms_detections(det, 0.5)
    np.testing.assert_array_equal(out.class_id, [2, 1])  # both kept, sorted by score
    np.testing.assert_allclose(out.score, [0.9, 0.8])


def test_nms_threshold_is_an_iou_bound() -> None:
    # IoU of these two boxes is 81 / 119 = 0.68: kept at 0.7, suppressed at 0.6
    det = dets([[0, 0, 10, 10], [1, 1, 11, 11]], [0.8, 0.9], [3, 3])
    assert len(nms_detections(det, 0.7)) == 2
    assert len(nms_detections(det, 0.6)) == 1


def test_nms_empty_and_track_ids() -> None:
    out = nms_detections(Detections.empty(), 0.5)
    assert len(out) == 0 and out.xyxy.shape == (0, 4)
    tracked = dets([[0, 0, 10, 10], [1, 1, 11, 11]], [0.5, 0.6], [1, 1])
    tracked.track_id = np.array([4, 9])
    np.testing.assert_array_equal(nms_detections(tracked, 0.5).track_id, [9])


# --- Detector ------------------------------------------------------------------------------


def test_detector_returns_well_formed_detections(detector: Detector) -> None:
    frames = [frame(0), frame(1, height=64, width=160)]  # different sizes in one batch
    out = detector(frames)
    assert len(out) == 2
    for det, f in zip(out, frames, strict=True):
        assert isinstance(det, Detections) and 0 < len(det) <= 50
        assert det.xyxy.dtype == np.float32 and det.class_id.dtype == np.int64
        height, width = f.shape[:2]  # boxes are in each input frame's own pixels
        assert (det.xyxy >= 0).all()
        assert (det.xyxy[:, [0, 2]] <= width).all() and (det.xyxy[:, [1, 3]] <= height).all()
        assert (np.diff(det.score) <= 0).all()  # sorted by score, descending
        assert ((det.class_id >= 1) & (det.class_id < len(detector.class_names))).all()
        # already NMS'd: running it again removes nothing
        assert len(nms_detections(det, detector.iou_threshold)) == len(det)
    assert detector.class_names[1] == "person"
    assert detector.description.startswith(f"{MODEL} weights from ")


def test_detector_empty_batch_and_nothing_found(calibrated_weights: Path) -> None:
    strict = Detector(model=MODEL, weights=str(calibrated_weights), score_threshold=1.0,
                      input_size=SIZE)  # fmt: skip
    assert strict([]) == []
    (det,) = strict([frame(0)])
    assert len(det) == 0 and det.xyxy.shape == (0, 4)


def test_detector_class_filter(calibrated_weights: Path, detector: Detector) -> None:
    everything = detector([frame(2)])[0]
    wanted = [detector.class_names[int(c)] for c in everything.class_id[:2]]
    only = Detector(model=MODEL, weights=str(calibrated_weights), score_threshold=0.0,
                    input_size=SIZE, max_detections=50, classes=wanted)  # fmt: skip
    det = only([frame(2)])[0]
    assert len(det) > 0
    assert {only.class_names[int(c)] for c in det.class_id} <= set(wanted)


def test_detector_unknown_class_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown classes \['persn'\]; valid classes: person"):
        Detector(model=MODEL, weights="none", classes=["persn"])
    with pytest.raises(ValueError, match="unknown classes"):
        Detector(model=MODEL, weights="none", classes=["N/A"])


def test_two_detectors_with_the_same_seed_agree() -> None:
    a = Detector(model=MODEL, weights="none", score_threshold=0.0, input_size=SIZE, seed=3)
    b = Detector(model=MODEL, weights="none", score_threshold=0.0, input_size=SIZE, seed=3)
    assert "random weights" in a.description
    da, db = a([frame(4)])[0], b([frame(4)])[0]
    assert len(da) > 0
    np.testing.assert_array_equal(da.xyxy, db.xyxy)
    np.testing.assert_array_equal(da.score, db.score)
    np.testing.assert_array_equal(da.class_id, db.class_id)


def test_batch_of_two_equals_two_singles(detector: Detector) -> None:
    frames = [frame(5), frame(6)]
    batched = detector(frames)
    for det, f in zip(batched, frames, strict=True):
        (single,) = detector([f])
        assert len(det) == len(single)
        np.testing.assert_array_equal(det.class_id, single.class_id)
        np.testing.assert_allclose(det.score, single.score, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(det.xyxy, single.xyxy, atol=1e-2)


def test_max_detections_and_input_size(calibrated_weights: Path) -> None:
    few = Detector(model=MODEL, weights=str(calibrated_weights), score_threshold=0.0,
                   input_size=64, max_detections=5)  # fmt: skip
    assert few.model.transform.min_size == (64,) and few.model.transform.max_size == 128
    assert len(few([frame(7)])[0]) == 5


def test_ssd_input_size_is_square() -> None:
    ssd = Detector(model="ssdlite320_mobilenet_v3_large", weights="none", input_size=64)
    assert ssd.model.transform.fixed_size == (64, 64)
    assert len(ssd([frame(8)])) == 1


def test_from_config_accepts_mappings_and_objects(calibrated_weights: Path) -> None:
    cfg = {"model": MODEL, "weights": calibrated_weights, "input_size": SIZE,
           "classes": ("person",), "score_threshold": 0.25, "unrelated": 1}  # fmt: skip
    det = Detector.from_config(cfg)
    assert det.score_threshold == 0.25 and det.model.transform.min_size == (SIZE,)
    det = Detector.from_config(types.SimpleNamespace(model=MODEL, weights="none", seed=1))
    assert det.weights_source == "none"


def test_detector_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="is a segmentation model; detection models: "):
        Detector(model="lraspp_mobilenet_v3_large", weights="none")
    with pytest.raises(WeightsError, match="unknown model 'yolo'"):
        Detector(model="yolo")
    det = Detector(model=MODEL, weights="none", input_size=64)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB.*\(64, 64\)"):
        det([np.zeros((64, 64), np.uint8)])
    with pytest.raises(ValueError, match="must be uint8, got float32"):
        det([np.zeros((64, 64, 3), np.float32)])


def test_weights_for_another_model_are_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(WeightsError, match=f"weights do not fit {MODEL}"):
        Detector(model=MODEL, weights=str(path))


def test_read_only_frames_are_accepted(detector: Detector) -> None:
    """Frames from shared memory are read-only; torch.from_numpy would warn on them."""
    f = frame(9)
    f.flags.writeable = False
    (det,) = detector([f])
    assert len(det) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(calibrated_weights: Path, detector: Detector) -> None:
    gpu = Detector(model=MODEL, weights=str(calibrated_weights), score_threshold=0.0,
                   input_size=SIZE, max_detections=50, device="cuda")  # fmt: skip
    cpu_det, gpu_det = detector([frame(10)])[0], gpu([frame(10)])[0]
    top = min(10, len(cpu_det))  # low-ranked near-ties may swap between devices
    np.testing.assert_allclose(gpu_det.score[:top], cpu_det.score[:top], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu_det.xyxy[:top], cpu_det.xyxy[:top], atol=0.5)
