"""One interface over every frame model the inference stage can run.

A *perceiver* takes a batch of ``(H, W, 3) uint8 RGB`` frames and returns, per frame,
``(Detections, Poses, Masks)`` in that frame's pixel coordinates. torchvision detectors give
boxes only (empty poses and masks); the project's ``simnet`` (the ``sim`` pack) gives boxes,
COCO-17 poses and a person mask from one network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from models.results import Detections, Masks, Poses

FrameOutputs = tuple[Detections, Poses, Masks]

#: Models that are not plain torchvision detectors: name -> "module:Class".
CUSTOM_PERCEIVERS: dict[str, str] = {"simnet": "models.simnet:SimPerception"}


class Perceiver(Protocol):
    class_names: tuple[str, ...]
    description: str

    def __call__(self, frames: Sequence[np.ndarray]) -> list[FrameOutputs]: ...


class DetectorPerceiver:
    """A :class:`models.detection.Detector` seen as a perceiver (no poses, no masks)."""

    def __init__(self, **kwargs: Any) -> None:
        from models.detection import Detector

        self.detector = Detector(**kwargs)
        self.class_names = tuple(self.detector.class_names)
        self.description = self.detector.description

    def __call__(self, frames: Sequence[np.ndarray]) -> list[FrameOutputs]:
        return [(det, Poses.empty(), Masks.empty()) for det in self.detector(frames)]


def check_model(name: str) -> None:
    """Raise :class:`models.weights.WeightsError` (listing known names) for an unknown model."""
    from models import weights

    if name in CUSTOM_PERCEIVERS:
        return
    entry = weights.get(name)
    if entry.task != "detection":
        raise weights.WeightsError(
            f"{name} is a {entry.task} model; detect.model needs one of: "
            + ", ".join(known_models())
        )


def known_models() -> list[str]:
    from models import weights

    names = [e.name for e in weights.entries("detection")] + list(CUSTOM_PERCEIVERS)
    return sorted(set(names))


def build_perceiver(*, model: str, seed: int = 0, **kwargs: Any) -> Perceiver:
    """Build the perceiver for ``model`` with Detector-style keyword arguments."""
    import importlib

    check_model(model)
    if model in CUSTOM_PERCEIVERS:
        module, cls = CUSTOM_PERCEIVERS[model].split(":")
        return getattr(importlib.import_module(module), cls)(**kwargs)
    return DetectorPerceiver(model=model, seed=seed, **kwargs)
