"""Build the inference stage's perceiver.

:func:`build_perceiver` gives the perceiver of one detector name: a torchvision detector seen
as a perceiver (:class:`DetectorPerceiver`: boxes only, empty poses and masks) or one of the
project's own perceivers (the ``sim`` pack's ``simnet`` gives boxes, COCO-17 poses and a person
mask from one network).

:func:`build_perceiver_from_config` composes the configured stages from the typed config: any
subset of detect (:mod:`models.detection` or a custom perceiver), segment
(:mod:`models.segmentation`) and pose (:mod:`models.pose`), each with its own model, input size
and frame stride, all on one backend (:mod:`models.runtime`). With only detection on and the
eager backend it returns exactly the perceiver :func:`build_perceiver` gives (no wrapper, no
overhead). :func:`perceive` runs either kind on a batch.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.catalog import CUSTOM_PERCEIVERS, check_model
from models.detection import Detector
from models.perception.base import FrameOutputs, Perceiver, init_kwargs, resolve_device
from models.perception.composite import CompositePerceiver
from models.pose import PoseEstimator
from models.results import Masks, Poses
from models.runtime.accelerate import accelerate_backbone
from models.runtime.options import BackendOptions
from models.segmentation import Segmenter


class DetectorPerceiver:
    """A :class:`models.detection.Detector` seen as a perceiver (no poses, no masks)."""

    def __init__(self, **kwargs: Any) -> None:
        self.detector = Detector(**kwargs)
        self.class_names = tuple(self.detector.class_names)
        self.description = self.detector.description

    def __call__(self, frames: Sequence[np.ndarray]) -> list[FrameOutputs]:
        return [(det, Poses.empty(), Masks.empty()) for det in self.detector(frames)]


def perceive(
    perceiver: Perceiver, frames: Sequence[np.ndarray], stream_ids: Sequence[str]
) -> list[FrameOutputs]:
    """Run ``perceiver`` on a batch; stream ids (one per frame) reach the perceivers that keep
    per-stream state (stage strides), the others take frames only."""
    if isinstance(perceiver, CompositePerceiver):
        return perceiver(frames, stream_ids=list(stream_ids))
    return perceiver(frames)


def build_perceiver(*, model: str, seed: int = 0, **kwargs: Any) -> Perceiver:
    """Build the perceiver for ``model`` with Detector-style keyword arguments."""
    check_model(model)
    if model in CUSTOM_PERCEIVERS:
        module, cls = CUSTOM_PERCEIVERS[model].split(":")
        return getattr(importlib.import_module(module), cls)(**kwargs)
    return DetectorPerceiver(model=model, seed=seed, **kwargs)


def build_perceiver_from_config(cfg: Any, *, device: str | None = None) -> Perceiver:
    """The inference stage's perceiver for a whole vigil config.

    Args:
        cfg: the typed config (``pipeline.config.VigilConfig``; read by attribute). Sections
            read: ``detect`` (``model: none`` turns detection off, ``stride`` runs it every
            Nth frame), ``segment``, ``pose`` (``enabled``, ``model``, ``weights``,
            ``input_size``, ``stride``, ...), ``backend`` (``name``, ``precision``,
            ``channels_last``, ``cuda_graphs``, ...) and ``people.person_class``.
        device: overrides ``detect.device`` (``auto`` = CUDA when available).

    Returns:
        A perceiver; call it as ``perceiver(frames)`` or ``perceiver(frames, stream_ids=ids)``
        (one id per frame: strides count frames per stream). With segment and pose off and the
        eager backend this is :func:`build_perceiver`'s plain perceiver.
    """
    det, seg, pose = cfg.detect, cfg.segment, cfg.pose
    device = resolve_device(device or det.device)
    backend = BackendOptions.from_config(cfg.backend, device)
    detect_on = str(det.model).lower() not in ("none", "off", "")
    segment_on, pose_on = bool(seg.enabled), bool(pose.enabled)
    det_stride = int(det.stride)

    detector: Perceiver | None = None
    if detect_on:
        detector = build_perceiver(**init_kwargs(Detector, det, device=device))
        inner = getattr(getattr(detector, "detector", None), "model", None)
        if inner is not None and not backend.is_plain:
            size = int(det.input_size or 800)
            example = torch.rand(1, 3, size, size * 4 // 3)
            accelerate_backbone(inner, example, name=str(det.model), options=backend)
            detector.description += f" [{backend.backend}/{backend.precision} backbone]"
        if not segment_on and not pose_on and det_stride == 1:
            return detector  # today's path, unchanged
    segmenter = Segmenter.from_config(seg, device=device, backend=backend) if segment_on else None
    estimator = PoseEstimator.from_config(pose, device=device, backend=backend) if pose_on else None
    if detector is None and segmenter is None and estimator is None:
        raise ValueError("no stage enabled: set detect.model, segment.enabled or pose.enabled")
    return CompositePerceiver(
        detector=detector,
        segmenter=segmenter,
        pose=estimator,
        detect_stride=det_stride,
        person_class=str(cfg.people.person_class),
    )
