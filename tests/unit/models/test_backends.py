"""Tests for the inference backends: one interface, same outputs within tolerance (eager vs
ONNX Runtime for a detector backbone and a whole detector), clear errors for what is missing,
and the CUDA paths (fp16, channels_last, CUDA graphs, pinned upload, TensorRT) where CUDA is."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import weights as W
from models.detection import Detector
from models.runtime.accelerate import accelerate, accelerate_backbone
from models.runtime.options import BACKENDS, BackendError, BackendOptions, backend_status
from models.runtime.upload import FrameUploader
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene

torch.set_num_threads(1)
#: Max abs difference allowed between eager and ONNX Runtime feature maps (fp32, CPU).
ORT_ATOL = 1e-4
cuda = pytest.mark.gpu


class Tiny(nn.Module):
    """A small conv net with a dict output, standing in for a backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = torch.relu(self.a(x))
        return {"p1": y, "p2": self.b(y)}


def test_status_lists_every_backend_and_eager_always_works() -> None:
    status = backend_status("cpu")
    assert set(status) == set(BACKENDS) and status["eager"] is None
    assert status["tensorrt"] is not None  # no CUDA here (or no tensorrt): a reason


def test_eager_keeps_the_output_structure() -> None:
    m, x = Tiny().eval(), torch.rand(2, 3, 16, 16)
    out = accelerate(m, x, name="tiny", options=BackendOptions())
    with torch.inference_mode():
        a, b = m(x), out(x)
    assert list(b) == ["p1", "p2"] and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_compile_backend_matches_eager() -> None:
    m, x = Tiny().eval(), torch.rand(1, 3, 16, 16)
    out = accelerate(m, x, name="tiny", options=BackendOptions("compile"))
    with torch.inference_mode():
        a = m(x)
    try:
        with torch.inference_mode():
            b = out(x)
    except Exception as exc:  # inductor needs a working C++ toolchain
        pytest.skip(f"torch.compile unusable here: {type(exc).__name__}")
    assert torch.allclose(a["p2"], b["p2"], atol=1e-5)


def test_onnxruntime_detector_backbone_agrees_with_eager(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    backbone = W.get(name).build(seed=0).backbone.eval()
    x = torch.rand(1, 3, 96, 160)
    ort = accelerate(
        backbone, x, name=name, options=BackendOptions("onnxruntime", cache_dir=tmp_path)
    )
    with torch.inference_mode():
        a, b = backbone(x), ort(x)
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape
        assert torch.allclose(a[k], b[k], atol=ORT_ATOL), (k, (a[k] - b[k]).abs().max())


def test_detector_with_onnxruntime_backbone_gives_the_same_boxes(tmp_path: Path) -> None:
    """Backbone in ORT, RPN / RoI heads / NMS in torch: same boxes within 0.05 px."""
    pytest.importorskip("onnxruntime")
    scene = make_scene(2, width=160, height=96)
    frames = [render_frame(scene, i)[0] for i in range(2)]
    kw = dict(model="fasterrcnn_mobilenet_v3_large_320_fpn", weights="none", score_threshold=0.0,
              input_size=96, max_detections=10)  # fmt: skip
    eager = Detector(**kw)
    ort = Detector(**kw)
    accelerate_backbone(ort.model, torch.rand(1, 3, 96, 160), name=kw["model"],
                        options=BackendOptions("onnxruntime", cache_dir=tmp_path))  # fmt: skip
    for a, b in zip(eager(frames), ort(frames)):
        assert len(a) == len(b) > 0
        assert np.allclose(a.xyxy, b.xyxy, atol=0.05) and np.array_equal(a.class_id, b.class_id)
        assert np.allclose(a.score, b.score, atol=1e-4)


def test_plain_eager_leaves_a_detector_untouched() -> None:
    net = W.get("ssdlite320_mobilenet_v3_large").build(seed=0)
    backbone = net.backbone
    accelerate_backbone(net, torch.rand(1, 3, 64, 64), name="ssd", options=BackendOptions())
    assert net.backbone is backbone


def test_frame_uploader_normalises_and_resizes() -> None:
    frame = np.full((10, 20, 3), 255, np.uint8)
    up = FrameUploader("cpu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = up([frame, frame], size=(5, 10))
    assert x.shape == (2, 3, 5, 10) and torch.allclose(x, torch.full_like(x, 2.0))
    with pytest.raises(ValueError, match="uint8"):
        up([frame.astype(np.float32)])
    with pytest.raises(ValueError, match="one size"):
        up([frame, frame[:5]])


def test_bad_options_and_missing_tensorrt_are_clear() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        BackendOptions("openvino")
    with pytest.raises(ValueError, match="precision"):
        BackendOptions(precision="int8")
    assert BackendOptions(precision="fp16", cuda_graphs=True).effective().precision == "fp32"
    if backend_status("cpu")["tensorrt"] is not None:
        with pytest.raises(BackendError, match="tensorrt backend unavailable"):
            accelerate(Tiny(), torch.rand(1, 3, 8, 8), name="tiny",
                       options=BackendOptions("tensorrt"))  # fmt: skip


# --- CUDA -----------------------------------------------------------------------------------


@cuda
def test_fp16_channels_last_cuda_graphs_match_fp32() -> None:
    m, x = Tiny().eval(), torch.rand(2, 3, 32, 32, device="cuda")
    ref = accelerate(m, x, name="tiny", options=BackendOptions(device="cuda"))
    opts = BackendOptions(device="cuda", precision="fp16", channels_last=True, cuda_graphs=True)
    fast = accelerate(copy.deepcopy(m), x, name="tiny", options=opts)
    with torch.inference_mode():
        a = ref(x)
        b1, b2 = fast(x), fast(x)  # capture, then replay
    for k in a:
        assert b1[k].dtype == torch.float32
        assert torch.allclose(a[k], b2[k], atol=1e-2) and torch.equal(b1[k], b2[k])


@cuda
def test_pinned_uploader_on_cuda() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    up = FrameUploader("cuda", mean=(0.5,) * 3, std=(0.5,) * 3)
    x = up([frame, frame])
    assert x.is_cuda and up.pinned and x.shape == (2, 3, 48, 64)
    ref = FrameUploader("cpu", mean=(0.5,) * 3, std=(0.5,) * 3)([frame, frame])
    assert torch.allclose(x.cpu(), ref, atol=1e-6)


@cuda
def test_tensorrt_engine_agrees_and_is_cached(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    m, x = Tiny().eval(), torch.rand(1, 3, 32, 32, device="cuda")
    opts = BackendOptions("tensorrt", device="cuda", cache_dir=tmp_path)
    trt = accelerate(m, x, name="tiny", options=opts)
    with torch.inference_mode():
        a, b = m.cuda()(x), trt(x)
    assert torch.allclose(a["p2"], b["p2"], atol=1e-3)
    assert len(list((tmp_path / "tensorrt").glob("tiny-*-1x3x32x32-fp32.engine"))) == 1
