"""Object detection stage: torchvision detectors with class-aware NMS.

:class:`Detector` turns a batch of ``(H, W, 3) uint8 RGB`` frames into one
:class:`~models.results.Detections` per frame, boxes ``xyxy`` in the frame's own pixels, sorted
by score (descending). :func:`nms_detections` is the class-aware NMS it applies, usable alone;
:func:`check_detector_args` and :func:`set_input_size` are shared with the other detectors and
R-CNN-based stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from models import weights as weights_registry
from models.perception.base import init_kwargs
from models.results import Detections
from models.runtime.upload import check_frame

#: Class names that are placeholders, not classes (torchvision's COCO list has both).
_PLACEHOLDER_NAMES = frozenset({"__background__", "N/A"})


def nms_detections(det: Detections, iou_threshold: float) -> Detections:
    """Class-aware non-maximum suppression.

    Boxes of the same ``class_id`` whose IoU is above ``iou_threshold`` suppress the lower
    scored one; boxes of different classes never suppress each other.

    Args:
        det: ``n`` detections, ``xyxy (n, 4)`` pixels.
        iou_threshold: IoU in [0, 1] above which a box is discarded.

    Returns:
        The kept detections sorted by score, descending (``track_id`` kept if present).
    """
    if len(det) == 0:
        return Detections.empty() if det.track_id is None else det
    keep = batched_nms(
        torch.from_numpy(det.xyxy),
        torch.from_numpy(det.score),
        torch.from_numpy(det.class_id),
        float(iou_threshold),
    )
    return det[keep.numpy()]


def build_weighted(
    entry: weights_registry.WeightsEntry, weights: str, seed: int
) -> tuple[nn.Module, weights_registry.ResolvedWeights]:
    """The registry model ``entry`` built with random init seeded by ``seed`` (no download),
    then loaded with what ``weights`` resolves to (:func:`models.weights.resolve`)."""
    resolved = weights_registry.resolve(entry, weights)
    net = entry.build(seed=seed)
    weights_registry.load_weights(net, resolved, name=entry.name)
    return net, resolved


def check_detector_args(score_threshold: float, iou_threshold: float, max_detections: int) -> None:
    """Raise ValueError for a score or NMS IoU threshold outside [0, 1] or a cap below 1."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")


class Detector:
    """A torchvision detector with score threshold, class filter and class-aware NMS.

    Build by hand (keyword-only) or with :meth:`from_config`. The model is built with random
    init seeded by ``seed`` (identical in every process, no downloads) and then loaded with the
    weights that ``weights`` resolves to (see :func:`models.weights.resolve`).

    Args:
        model: registry name of a ``detection`` entry, or ``"auto"``: the default detector for
            ``device`` (:func:`models.catalog.default_detector`).
        weights: ``"auto"`` | ``"pretrained"`` | ``"none"`` | path to a state_dict file
            (``auto``/``pretrained`` download a missing file: :func:`models.weights.fetch`).
        device: torch device string, e.g. ``"cpu"``, ``"cuda:0"``.
        score_threshold: keep boxes with score >= this, in [0, 1].
        iou_threshold: class-aware NMS IoU threshold, in [0, 1].
        classes: keep only these class names (from :attr:`class_names`); None keeps all.
        input_size: the shorter side, in pixels, the model resizes frames to (Faster R-CNN,
            RetinaNet: ``min_size``, with ``max_size`` scaled by the model's own ratio; SSD:
            square ``input_size x input_size``). None keeps the model's default.
        max_detections: keep at most this many boxes per frame, highest scores first.
        seed: seed for the random init.

    Raises:
        ValueError: bad thresholds, a non-detection model, or unknown names in ``classes``.
        WeightsError: the weights cannot be resolved or do not fit the model.
    """

    def __init__(
        self,
        *,
        model: str = "fasterrcnn_mobilenet_v3_large_fpn",
        weights: str = "auto",
        device: str = "cpu",
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        classes: list[str] | None = None,
        input_size: int | None = None,
        max_detections: int = 100,
        seed: int = 0,
    ) -> None:
        if model == "auto":
            from models.catalog import default_detector

            model, _ = default_detector(str(device))
        entry = weights_registry.get(model)
        if entry.task != "detection":
            known = ", ".join(e.name for e in weights_registry.entries("detection"))
            raise ValueError(f"{model!r} is a {entry.task} model; detection models: {known}")
        check_detector_args(score_threshold, iou_threshold, max_detections)
        if input_size is not None and input_size < 32:
            raise ValueError(f"input_size must be >= 32 pixels, got {input_size}")

        self.entry = entry
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.device = torch.device(device)
        self._class_ids = _class_ids(entry.categories, classes)

        net, resolved = build_weighted(entry, weights, seed)
        if input_size is not None:
            set_input_size(net, int(input_size))
        # Model-internal post-processing does the same thresholds so it does not drop boxes we
        # would keep; with a class filter its per-image cap is lifted, as filtering comes after.
        cap = self.max_detections if self._class_ids is None else 100_000
        _set_postprocess(net, self.score_threshold, self.iou_threshold, cap)
        self.model: nn.Module = net.eval().to(self.device)
        self.description: str = resolved.description
        """Which weights were loaded, one line (e.g. "random weights (no pretrained file ...")."""
        self.weights_source: str = resolved.source

    @classmethod
    def from_config(cls, cfg: Any) -> Detector:
        """Build from any object or mapping with (some of) the ``__init__`` keyword names."""
        kwargs = init_kwargs(cls, cfg)
        if kwargs.get("classes") is not None:
            kwargs["classes"] = list(kwargs["classes"])
        if kwargs.get("weights") is not None:
            kwargs["weights"] = str(kwargs["weights"])
        return cls(**kwargs)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names indexed by ``Detections.class_id`` (torchvision COCO: 0 = background)."""
        return self.entry.categories

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in a batch of frames, in one forward pass.

        Args:
            frames: ``(H, W, 3) uint8 RGB`` arrays; sizes may differ.

        Returns:
            One :class:`Detections` per frame, ``xyxy`` in that frame's pixels, sorted by score
            descending; ``Detections.empty()`` where nothing passes.
        """
        if len(frames) == 0:
            return []
        images = [self._to_tensor(f) for f in frames]
        with torch.inference_mode():
            outputs = self.model(images)
            return self._postprocess_batch(outputs)

    def __repr__(self) -> str:
        return (f"Detector(model={self.entry.name!r}, device={str(self.device)!r}, "
                f"weights={self.weights_source!r})")  # fmt: skip

    # --- internals ------------------------------------------------------------------------

    def _to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [0, 1] on the device."""
        check_frame(frame)
        if not frame.flags.writeable:  # torch.from_numpy warns on read-only (e.g. shm) arrays
            frame = frame.copy()
        # Upload uint8 (4x fewer bytes than float) and convert on the device.
        tensor = torch.from_numpy(frame).to(self.device, non_blocking=True)
        return tensor.permute(2, 0, 1).float().div_(255.0)

    def _postprocess_batch(
        self, outputs: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[Detections]:
        """Threshold, class filter and class-aware NMS where the model ran (GPU NMS on CUDA),
        then ONE device-to-host copy for the whole batch (not three small ones per frame)."""
        from models.gpu_ops import nms_keep

        class_ids = None if self._class_ids is None else torch.from_numpy(self._class_ids)
        kept = []
        for out in outputs:
            keep = nms_keep(out["boxes"], out["scores"], out["labels"],
                            score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                            class_ids=class_ids, max_detections=self.max_detections)  # fmt: skip
            kept.append((out["boxes"][keep].float(), out["scores"][keep].float(),
                         out["labels"][keep].to(torch.float32)))  # fmt: skip
        counts = [len(k[1]) for k in kept]
        if not kept or sum(counts) == 0:
            return [Detections.empty() for _ in outputs]
        # (n, 6) rows: x1, y1, x2, y2, score, label (labels < 2**24 are exact in float32).
        host = torch.cat([torch.cat([b, s[:, None], c[:, None]], 1) for b, s, c in kept]).cpu()
        result = []
        for rows in torch.split(host, counts):
            if len(rows) == 0:
                result.append(Detections.empty())
                continue
            arr = rows.numpy()
            result.append(Detections(xyxy=np.ascontiguousarray(arr[:, :4]),
                                     score=np.ascontiguousarray(arr[:, 4]),
                                     class_id=arr[:, 5].astype(np.int64)))  # fmt: skip
        return result


def _class_ids(categories: tuple[str, ...], classes: Sequence[str] | None) -> np.ndarray | None:
    """Label ids for the names in ``classes`` (None = all); ValueError lists the valid names."""
    if classes is None:
        return None
    if isinstance(classes, str):
        raise ValueError(f"classes must be a list of names, got the string {classes!r}")
    valid = [c for c in categories if c not in _PLACEHOLDER_NAMES]
    unknown = [c for c in classes if c not in valid]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; valid classes: {', '.join(valid)}")
    return np.array([i for i, c in enumerate(categories) if c in set(classes)], dtype=np.int64)


def set_input_size(model: nn.Module, input_size: int) -> None:
    """Make a torchvision detector's own transform resize frames to ``input_size`` (shorter side,
    pixels; R-CNNs keep their ``max_size / min_size`` ratio, SSD gets a fixed square)."""
    transform = getattr(model, "transform", None)
    if transform is None:
        raise ValueError(f"{type(model).__name__} has no resize transform to set input_size on")
    if transform.fixed_size is not None:  # SSD: a fixed square input
        transform.fixed_size = (input_size, input_size)
        transform.min_size = (input_size,)
        transform.max_size = input_size
        return
    ratio = transform.max_size / max(transform.min_size)
    transform.min_size = (input_size,)
    transform.max_size = round(input_size * ratio)


def _set_postprocess(model: nn.Module, score: float, iou: float, cap: int) -> None:
    """Set the score threshold, NMS IoU and per-image cap inside the torchvision model."""
    heads = getattr(model, "roi_heads", model)  # R-CNN family: in roi_heads; RetinaNet/SSD: top
    heads.score_thresh = score
    heads.nms_thresh = iou
    heads.detections_per_img = cap
