"""Device-agnostic GPU-path operations, checked on CPU tensors (and on CUDA where present)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from models import gpu_ops
from models.detection import Detector, nms_detections
from models.gpu_ops import batch_chunks, downscale_for_output, encode_jpeg, nms_keep
from models.results import Detections


def _raw_output(seed: int, n: int = 60, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A detector's raw output with clusters of overlapping boxes of several classes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=g) * 200 + 20
    pick = torch.randint(0, 6, (n,), generator=g)
    xy = centres[pick] + torch.randn(n, 2, generator=g) * 4
    wh = torch.rand(n, 2, generator=g) * 10 + 30
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    return {
        "boxes": boxes.to(device),
        "scores": torch.rand(n, generator=g).to(device),
        "labels": torch.randint(1, 4, (n,), generator=g).to(device),
    }


def _host_reference(out: dict[str, torch.Tensor], score: float, iou: float,
                    class_ids: np.ndarray | None, cap: int) -> Detections:  # fmt: skip
    """The former per-frame host path: copy everything, then threshold, filter, NMS, cap."""
    det = Detections(
        xyxy=out["boxes"].float().cpu().numpy(),
        score=out["scores"].float().cpu().numpy(),
        class_id=out["labels"].cpu().numpy(),
    )
    keep = det.score >= score
    if class_ids is not None:
        keep &= np.isin(det.class_id, class_ids)
    det = nms_detections(det[keep], iou)
    return det[:cap] if len(det) else Detections.empty()


def _fake_detector(class_ids: np.ndarray | None, cap: int = 100) -> SimpleNamespace:
    return SimpleNamespace(score_threshold=0.3, iou_threshold=0.5, max_detections=cap,
                           _class_ids=class_ids)  # fmt: skip


@pytest.mark.parametrize("class_ids,cap", [(None, 100), (np.array([2]), 100), (None, 3)])
def test_batched_device_postprocess_equals_host_path(class_ids, cap) -> None:
    outputs = [_raw_output(s) for s in range(4)] + [_raw_output(9, n=0)]
    got = Detector._postprocess_batch(_fake_detector(class_ids, cap), outputs)
    assert len(got) == 5
    for out, det in zip(outputs, got):
        want = _host_reference(out, 0.3, 0.5, class_ids, cap)
        assert len(det) == len(want)
        np.testing.assert_array_equal(det.class_id, want.class_id)
        np.testing.assert_allclose(det.xyxy, want.xyxy)
        np.testing.assert_allclose(det.score, want.score)
    assert sum(len(d) for d in got[:4]) > 4  # NMS kept several boxes, not just one


def test_batched_postprocess_nothing_above_threshold() -> None:
    out = _raw_output(1)
    out["scores"] = out["scores"] * 0.1
    got = Detector._postprocess_batch(_fake_detector(None), [out, out])
    assert [len(d) for d in got] == [0, 0]


def test_nms_keep_is_class_aware_and_sorted() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 2])
    keep = nms_keep(boxes, scores, labels, score_threshold=0.1, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # box 1 suppressed by box 0; box 2 is another class
    keep = nms_keep(boxes, scores, labels, score_threshold=0.1, iou_threshold=0.5,
                    class_ids=torch.tensor([2]))  # fmt: skip
    assert keep.tolist() == [2]
    empty = nms_keep(boxes, scores, labels, score_threshold=0.95, iou_threshold=0.5)
    assert empty.numel() == 0 and empty.dtype == torch.int64


def test_detector_end_to_end_unchanged_on_cpu() -> None:
    """A real detector through the batched path gives per-frame results of the right type."""
    det = Detector(model="fasterrcnn_mobilenet_v3_large_320_fpn", weights="none",
                   score_threshold=0.0, input_size=96)  # fmt: skip
    frames = [np.random.default_rng(i).integers(0, 255, (96, 128, 3), np.uint8) for i in range(2)]
    out = det(frames)
    assert len(out) == 2
    for d in out:
        assert d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int64
        assert len(d) <= det.max_detections
        assert np.all(np.diff(d.score) <= 0)


def test_encode_jpeg_on_cpu_round_trips() -> None:
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = (200, 30, 30)
    data = encode_jpeg(img, 90)
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)  # fmt: skip
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 4
    tensor_data = encode_jpeg(torch.from_numpy(img).permute(2, 0, 1), 90)
    assert tensor_data[:2] == b"\xff\xd8"


def test_encode_jpeg_cuda_unavailable_falls_back_once(monkeypatch, caplog) -> None:
    """Fault: GPU JPEG asked for where nvJPEG / CUDA fails: host encoder, reason logged once."""
    state = gpu_ops._CudaJpegState()
    monkeypatch.setattr(gpu_ops, "_CUDA_JPEG", state)
    calls = []

    def broken(t, quality=75):
        calls.append(1)
        raise RuntimeError("encode_jpeg: no CUDA device")

    monkeypatch.setattr("torchvision.io.encode_jpeg", broken)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self)  # "upload" is a no-op
    img = np.full((16, 16, 3), 128, np.uint8)
    with caplog.at_level(logging.WARNING, logger="models.gpu_ops"):
        first = encode_jpeg(img, 80, device="cuda")
        second = encode_jpeg(img, 80, device="cuda")
    assert first[:2] == b"\xff\xd8" and second[:2] == b"\xff\xd8"
    assert len(calls) == 1 and not state.usable
    assert "no CUDA device" in state.reason
    assert sum("CUDA JPEG encoding unavailable" in r.message for r in caplog.records) == 1


def test_downscale_for_output() -> None:
    img = np.zeros((1080, 1920, 3), np.uint8)
    small = downscale_for_output(img, 640)
    assert small.shape == (360, 640, 3)
    assert downscale_for_output(img, None) is img
    assert downscale_for_output(img, 4000) is img


def test_batch_chunks() -> None:
    assert [list(r) for r in batch_chunks(5, 2)] == [[0, 1], [2, 3, 4]]
    assert [list(r) for r in batch_chunks(1, 4)] == [[0]]
    assert sum(len(r) for r in batch_chunks(64, 3)) == 64


@pytest.mark.gpu
def test_batched_postprocess_on_cuda_matches_cpu() -> None:
    outputs = [_raw_output(s) for s in range(4)]
    cpu = Detector._postprocess_batch(_fake_detector(None), outputs)
    cuda_out = [{k: v.cuda() for k, v in o.items()} for o in outputs]
    gpu = Detector._postprocess_batch(_fake_detector(None), cuda_out)
    for c, g in zip(cpu, gpu):
        assert len(c) == len(g)
        np.testing.assert_allclose(c.xyxy, g.xyxy, atol=1e-4)


@pytest.mark.gpu
def test_encode_jpeg_on_cuda_uses_nvjpeg() -> None:
    img = torch.full((3, 64, 96), 100, dtype=torch.uint8, device="cuda")
    data = encode_jpeg(img, 85, device="cuda")
    assert gpu_ops._CUDA_JPEG.usable, gpu_ops._CUDA_JPEG.reason
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == (64, 96, 3) and abs(int(back.mean()) - 100) <= 3
