"""Segmentation stage: semantic class maps (DeepLabV3 / LRASPP / FCN) and instance masks
(Mask R-CNN), as :class:`~models.results.Masks`.

:class:`Segmenter` takes ``(H, W, 3) uint8 RGB`` frames and gives one ``Masks`` per frame:

- semantic models (``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``,
  ``fcn_resnet50``): ``Masks.semantic`` ``(H, W) uint8``, the argmax class per pixel at the
  frame's own size (0 = background; names in :attr:`Segmenter.class_names`, Pascal VOC 21);
- instance model (``maskrcnn_resnet50_fpn_v2``): ``Masks.instance`` ``(n, H, W) bool``, one
  mask per instance, aligned with the :class:`~models.results.Detections` that
  :meth:`Segmenter.segment` returns beside them (COCO class names). ``Masks.to_wire``
  bit-packs them.

Frames are resized on the device so their shorter side is ``input_size`` pixels (default: 520,
as the semantic models were trained; Mask R-CNN: its own ``min_size`` rule). The class map is
computed at that size and scaled back to the frame with nearest-neighbour interpolation.

``stride=N`` runs the model on every Nth frame of each stream and reuses the last result in
between (per ``stream_ids`` key), since scene layout changes slowly compared with the frame rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models import weights as weights_registry
from models.detection import build_weighted, set_input_size
from models.ops import match_boxes
from models.perception.base import StridedStage, StrideSchedule, init_kwargs
from models.results import Detections, Masks
from models.runtime.accelerate import accelerate, accelerate_backbone
from models.runtime.options import BackendOptions
from models.runtime.upload import FrameUploader

SEMANTIC_MODELS: tuple[str, ...] = (
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
)
INSTANCE_MODELS: tuple[str, ...] = ("maskrcnn_resnet50_fpn_v2",)
#: Shorter side, pixels, semantic frames are resized to when ``input_size`` is None.
DEFAULT_SEMANTIC_SIZE = 520


@dataclass
class Segmentation:
    """One frame's segmentation: masks, and for instance models the boxes they belong to.

    Attributes:
        masks: semantic ``(H, W) uint8`` or instance ``(n, H, W) bool``.
        detections: for instance models, the ``n`` boxes (``class_id`` into
            :attr:`Segmenter.class_names`) aligned with ``masks.instance``; else None.
    """

    masks: Masks
    detections: Detections | None = None


class Segmenter(StridedStage[Segmentation]):
    """Semantic or instance segmentation with any backend of :mod:`models.runtime`.

    Args:
        model: a ``segmentation`` entry of the weights registry (see module docstring).
        weights: ``"auto"`` | ``"pretrained"`` | ``"none"`` | path (:func:`models.weights.resolve`).
        device: torch device string.
        input_size: shorter side in pixels the frame is resized to (None: model default).
        stride: run the model on every ``stride``-th frame per stream, reuse the last result.
        score_threshold: instance models: keep instances scoring at least this.
        mask_threshold: instance models: mask probability above which a pixel is in.
        max_instances: instance models: at most this many instances per frame.
        backend: a :class:`BackendOptions` or a backend name (``eager`` ...).
        seed: seed of the random init (identical in every process).

    Raises:
        ValueError: a non-segmentation model or bad arguments.
        WeightsError: weights cannot be resolved or do not fit.
        BackendError: the backend cannot run here.
    """

    def __init__(
        self,
        *,
        model: str = "lraspp_mobilenet_v3_large",
        weights: str = "auto",
        device: str = "cpu",
        input_size: int | None = None,
        stride: int = 1,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        max_instances: int = 100,
        backend: BackendOptions | str = "eager",
        seed: int = 0,
    ) -> None:
        entry = weights_registry.get(model)
        if entry.task != "segmentation":
            known = ", ".join(SEMANTIC_MODELS + INSTANCE_MODELS)
            raise ValueError(f"{model!r} is a {entry.task} model; segmentation models: {known}")
        if input_size is not None and input_size < 32:
            raise ValueError(f"input_size must be >= 32 pixels, got {input_size}")
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < mask_threshold < 1.0:
            raise ValueError("score_threshold must be in [0, 1] and mask_threshold in (0, 1)")
        self.entry = entry
        self.kind = "instance" if model in INSTANCE_MODELS else "semantic"
        self.device = torch.device(device)
        self.input_size = input_size
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_instances = int(max_instances)
        self.schedule = StrideSchedule(stride)
        self.backend = BackendOptions.on_device(backend, self.device)

        net, resolved = build_weighted(entry, weights, seed)
        self.description = f"{entry.name} ({self.backend.backend}): {resolved.description}"
        self.weights_source = resolved.source
        if self.kind == "semantic":
            if getattr(net, "aux_classifier", None) is not None:
                net.aux_classifier = None  # training-only branch: skip its compute
            size = input_size or DEFAULT_SEMANTIC_SIZE
            example = torch.rand(1, 3, size, size * 4 // 3)
            self.core: nn.Module = accelerate(
                SemanticCore(net), example, name=entry.name, options=self.backend
            )
            pre = entry.preprocessing
            self.uploader = FrameUploader(str(self.device), mean=pre["mean"], std=pre["std"])
        else:
            net.roi_heads.score_thresh = self.score_threshold
            net.roi_heads.detections_per_img = self.max_instances
            if input_size is not None:
                set_input_size(net, int(input_size))
            size = int(max(net.transform.min_size))
            accelerate_backbone(
                net, torch.rand(1, 3, size, size * 4 // 3), name=entry.name, options=self.backend
            )
            self.core = net.eval().to(self.device)
            self.uploader = FrameUploader(str(self.device))

    @classmethod
    def from_config(cls, section: Any, *, device: str, backend: BackendOptions) -> Segmenter:
        """From the ``segment`` config section (``pipeline.config.SegmentConfig``), on
        ``backend``."""
        return cls(**init_kwargs(cls, section, device=device, backend=backend))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names indexed by semantic class values / instance ``class_id``."""
        return self.entry.categories

    #: ``segment(frames, stream_ids=None)``: one :class:`Segmentation` per frame, masks at
    #: that frame's size; ``stage(frames)`` gives the masks.
    segment = StridedStage.run

    def output(self, result: Segmentation) -> Masks:
        return result.masks

    def __repr__(self) -> str:
        return (f"Segmenter(model={self.entry.name!r}, kind={self.kind!r}, "
                f"backend={self.backend.backend!r}, stride={self.schedule.stride})")  # fmt: skip

    # --- internals ------------------------------------------------------------------------

    def infer_group(self, frames: Sequence[np.ndarray]) -> list[Segmentation]:
        return self._semantic(frames) if self.kind == "semantic" else self._instance(frames)

    def _semantic(self, frames: Sequence[np.ndarray]) -> list[Segmentation]:
        h, w = frames[0].shape[:2]
        size = _shorter_side_to(h, w, self.input_size or DEFAULT_SEMANTIC_SIZE)
        with torch.inference_mode():
            x = self.uploader(frames, size=size)
            logits = self.core(x)
            classes = logits.argmax(dim=1, keepdim=True).to(torch.uint8)
            if classes.shape[-2:] != (h, w):  # nearest: class ids must not blend
                classes = nn.functional.interpolate(classes, size=(h, w), mode="nearest")
            maps = classes[:, 0].cpu().numpy()
        return [Segmentation(Masks(semantic=m)) for m in maps]

    def _instance(self, frames: Sequence[np.ndarray]) -> list[Segmentation]:
        with torch.inference_mode():
            x = self.uploader(frames)
            outputs = self.core(list(x))
        results = []
        for o in outputs:
            keep = o["scores"] >= self.score_threshold
            det = Detections(
                xyxy=o["boxes"][keep].float().cpu().numpy(),
                score=o["scores"][keep].float().cpu().numpy(),
                class_id=o["labels"][keep].cpu().numpy(),
            )
            inst = (o["masks"][keep][:, 0] > self.mask_threshold).cpu().numpy()
            results.append(Segmentation(Masks(instance=inst), det))
        return results


class SemanticCore(nn.Module):
    """torchvision segmentation model -> ``(B, C, H, W)`` logits only (the ONNX boundary)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def align_instances(
    seg: Segmentation, detections: Detections, shape: tuple[int, int], iou_threshold: float = 0.5
) -> Masks:
    """Instance masks reordered to ``detections``: row i is the mask of the instance whose box
    best overlaps detection i (IoU >= ``iou_threshold``, one to one), else all False.

    Args:
        seg: an instance :class:`Segmentation` (its own boxes and masks).
        detections: the frame's detections, ``n`` boxes xyxy pixels.
        shape: ``(H, W)`` of the frame.

    Returns:
        ``Masks(instance=(n, H, W) bool)``.
    """
    h, w = shape
    out = np.zeros((len(detections), h, w), dtype=bool)
    src = seg.masks.instance
    if seg.detections is None or src is None or not len(detections) or not len(seg.detections):
        return Masks(instance=out)
    for r, c in match_boxes(detections.xyxy, seg.detections.xyxy, iou_threshold):
        if src[c].shape == (h, w):
            out[r] = src[c]
    return Masks(instance=out)


def _shorter_side_to(h: int, w: int, size: int) -> tuple[int, int]:
    """``(h', w')`` with the shorter side ``size`` and the aspect ratio kept."""
    scale = size / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))
