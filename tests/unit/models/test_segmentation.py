"""Tests for the segmentation stage: semantic class maps and instance masks of the right shapes
on synthetic frames (random weights), frame strides, alignment to detections, and eager vs
ONNX Runtime agreement for every semantic model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.results import Detections, Masks
from models.runtime.accelerate import accelerate
from models.runtime.options import BackendOptions
from models.segmentation import (
    SEMANTIC_MODELS,
    Segmentation,
    Segmenter,
    SemanticCore,
    align_instances,
)
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene

torch.set_num_threads(1)

#: Max abs difference allowed between eager and ONNX Runtime logits (fp32, same CPU).
ORT_ATOL = 1e-4


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    scene = make_scene(1, width=160, height=96)
    return [render_frame(scene, i)[0] for i in range(3)]


@pytest.mark.parametrize("model", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_semantic_map_at_frame_size(model: str, frames: list[np.ndarray]) -> None:
    seg = Segmenter(model=model, weights="none", input_size=64)
    masks = seg(frames)
    assert seg.kind == "semantic" and len(seg.class_names) == 21
    for m in masks:
        assert isinstance(m, Masks) and m.instance is None
        assert m.semantic.shape == (96, 160) and m.semantic.dtype == np.uint8
        assert m.semantic.max() < len(seg.class_names)
    wire = Masks.from_wire(masks[0].to_wire())
    assert np.array_equal(wire.semantic, masks[0].semantic)


def test_mixed_frame_sizes_each_get_their_own_size(frames: list[np.ndarray]) -> None:
    seg = Segmenter(model="lraspp_mobilenet_v3_large", weights="none", input_size=48)
    small = np.ascontiguousarray(frames[0][:64, :80])
    out = seg([frames[0], small, frames[1]])
    assert [m.semantic.shape for m in out] == [(96, 160), (64, 80), (96, 160)]


def test_instance_masks_are_bool_aligned_and_bitpacked(frames: list[np.ndarray]) -> None:
    seg = Segmenter(model="maskrcnn_resnet50_fpn_v2", weights="none", input_size=64,
                    score_threshold=0.0, max_instances=3)  # fmt: skip
    results = seg.segment(frames[:1])
    r = results[0]
    assert seg.kind == "instance" and r.detections is not None
    n = len(r.detections)
    assert 0 < n <= 3 and r.masks.instance.shape == (n, 96, 160)
    assert r.masks.instance.dtype == bool
    wire = r.masks.to_wire()
    assert wire["mask.instance_bits"].nbytes == -(-n * 96 * 160 // 8)  # 1 bit per pixel
    assert np.array_equal(Masks.from_wire(wire).instance, r.masks.instance)


def test_stride_runs_every_nth_frame_per_stream(frames: list[np.ndarray]) -> None:
    seg = Segmenter(model="lraspp_mobilenet_v3_large", weights="none", input_size=48, stride=3)
    batch = frames + frames + frames[:1]  # 7 frames of stream "a"
    out = seg(batch, stream_ids=["a"] * 7)
    assert seg.schedule.runs == 3  # frames 0, 3, 6
    assert out[1] is out[0] and out[2] is out[0] and out[3] is not out[0]
    out2 = seg(frames[:2], stream_ids=["b", "a"])  # new stream runs at once; "a" frame 7 reuses
    assert seg.schedule.runs == 4 and out2[1] is out[6]


def test_align_instances_follows_detection_order() -> None:
    h, w = 20, 30
    inst = np.zeros((2, h, w), bool)
    inst[0, :5, :5] = True
    inst[1, 10:, 10:] = True
    own = Detections([[0, 0, 5, 5], [10, 10, 30, 20]], [0.9, 0.8], [1, 3])
    dets = Detections(
        [[10, 10, 29, 20], [50, 50, 60, 60], [0, 0, 5, 6]], [0.9, 0.5, 0.4], [3, 1, 1]
    )
    out = align_instances(Segmentation(Masks(instance=inst), own), dets, (h, w))
    assert out.instance.shape == (3, h, w)
    assert np.array_equal(out.instance[0], inst[1]) and np.array_equal(out.instance[2], inst[0])
    assert not out.instance[1].any()


def test_non_segmentation_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="segmentation models"):
        Segmenter(model="ssdlite320_mobilenet_v3_large")


@pytest.mark.parametrize("model", SEMANTIC_MODELS)
def test_eager_and_onnxruntime_agree(model: str, tmp_path: Path) -> None:
    """Logits within ORT_ATOL; the exported file is cached and reused."""
    pytest.importorskip("onnxruntime")
    from models import weights as W

    net = W.get(model).build(seed=0)
    net.aux_classifier = None
    core = SemanticCore(net).eval()
    x = torch.rand(2, 3, 64, 96)
    ort = accelerate(core, x, name=model, options=BackendOptions("onnxruntime", cache_dir=tmp_path))
    with torch.inference_mode():
        a, b = core(x), ort(x)
        other = torch.rand(1, 3, 48, 80)  # dynamic batch / height / width
        a2, b2 = core(other), ort(other)
    assert a.shape == b.shape and a2.shape == b2.shape == (1, 21, 48, 80)
    assert torch.allclose(a, b, atol=ORT_ATOL) and torch.allclose(a2, b2, atol=ORT_ATOL)
    files = list((tmp_path / "onnx").glob(f"{model}-*.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    accelerate(core, x, name=model, options=BackendOptions("onnxruntime", cache_dir=tmp_path))
    assert files[0].stat().st_mtime_ns == mtime


def test_segmenter_on_onnxruntime_matches_eager(frames: list[np.ndarray], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    kw = dict(model="lraspp_mobilenet_v3_large", weights="none", input_size=64)
    eager = Segmenter(**kw)(frames[:1])[0].semantic
    ort = Segmenter(**kw, backend=BackendOptions("onnxruntime", cache_dir=tmp_path))
    assert "onnxruntime" in ort.description
    got = ort(frames[:1])[0].semantic
    assert (got == eager).mean() > 0.99  # argmax ties may flip a few pixels
