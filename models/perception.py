"""One interface over every frame model the inference stage can run.

A *perceiver* takes a batch of ``(H, W, 3) uint8 RGB`` frames and returns, per frame,
``(Detections, Poses, Masks)`` in that frame's pixel coordinates. torchvision detectors give
boxes only (empty poses and masks); the project's ``simnet`` (the ``sim`` pack) gives boxes,
COCO-17 poses and a person mask from one network.

:func:`build_perceiver_from_config` composes the configured stages: any subset of detect
(:mod:`models.detection` or a custom perceiver), segment (:mod:`models.segmentation`) and pose
(:mod:`models.pose`), each with its own model, input size and frame stride, all on one backend
(:mod:`models.backends`). With only detection on and the eager backend it returns exactly the
perceiver :func:`build_perceiver` gives (no wrapper, no overhead).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from models.catalog import CUSTOM_PERCEIVERS, check_model
from models.ops import match_boxes
from models.results import Detections, Masks, Poses

FrameOutputs = tuple[Detections, Poses, Masks]
LOG = logging.getLogger(__name__)
T = TypeVar("T")


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
    import importlib

    check_model(model)
    if model in CUSTOM_PERCEIVERS:
        module, cls = CUSTOM_PERCEIVERS[model].split(":")
        return getattr(importlib.import_module(module), cls)(**kwargs)
    return DetectorPerceiver(model=model, seed=seed, **kwargs)


# --- composition from config --------------------------------------------------------------


def build_perceiver_from_config(cfg: Any, *, device: str | None = None) -> Perceiver:
    """The inference stage's perceiver for a whole vigil config.

    Args:
        cfg: the config as a dict (``VigilConfig.model_dump()``) or the pydantic object.
            Sections read: ``detect`` (as today; ``model: none`` turns detection off, an
            optional ``stride`` key runs it every Nth frame), ``segment``, ``pose``
            (``enabled``, ``model``, ``weights``, ``input_size``, ``stride``, ...) and
            ``backend`` (``name``, ``precision``, ``channels_last``, ``cuda_graphs``, ...).
            Missing sections mean off / eager.
        device: overrides ``detect.device`` (``auto`` = CUDA when available).

    Returns:
        A perceiver; call it as ``perceiver(frames)`` or ``perceiver(frames, stream_ids=ids)``
        (one id per frame: strides count frames per stream). With segment and pose off and the
        eager backend this is :func:`build_perceiver`'s plain perceiver.
    """
    if hasattr(cfg, "model_dump"):
        cfg = cfg.model_dump()
    det = dict(cfg.get("detect") or {})
    seg = dict(cfg.get("segment") or {})
    pose = dict(cfg.get("pose") or {})
    backend_cfg = dict(cfg.get("backend") or {})
    device = resolve_device(device or det.get("device", "auto"))
    from models.backends import BackendOptions, accelerate_backbone

    backend = BackendOptions.from_config(backend_cfg, device)
    detect_on = str(det.get("model", "none")).lower() not in ("none", "off", "")
    segment_on, pose_on = bool(seg.get("enabled")), bool(pose.get("enabled"))
    det_stride = int(det.get("stride", 1) or 1)

    detector: Perceiver | None = None
    if detect_on:
        kwargs = {k: det[k] for k in _DETECT_KEYS if k in det}
        detector = build_perceiver(**kwargs, device=device)
        inner = getattr(getattr(detector, "detector", None), "model", None)
        if inner is not None and not backend.is_plain:
            size = int(det.get("input_size") or 800)
            example = torch.rand(1, 3, size, size * 4 // 3)
            accelerate_backbone(inner, example, name=str(det["model"]), options=backend)
            detector.description += f" [{backend.backend}/{backend.precision} backbone]"
        if not segment_on and not pose_on and det_stride == 1:
            return detector  # today's path, unchanged
    segmenter = pose_estimator = None
    if segment_on:
        from models.segmentation import segmenter_from_config

        segmenter = segmenter_from_config({**seg, "backend": backend}, device)
    if pose_on:
        from models.pose import pose_estimator_from_config

        pose_estimator = pose_estimator_from_config({**pose, "backend": backend}, device)
    if detector is None and segmenter is None and pose_estimator is None:
        raise ValueError("no stage enabled: set detect.model, segment.enabled or pose.enabled")
    return CompositePerceiver(
        detector=detector,
        segmenter=segmenter,
        pose=pose_estimator,
        detect_stride=det_stride,
        person_class=str((cfg.get("people") or {}).get("person_class", "person")),
    )


class CompositePerceiver:
    """Detect, segment and pose stages run on the same frames, merged per frame.

    - Detections come from the detector; without one, from the instance segmenter, else from
      the pose model's person boxes (:attr:`class_names` follows that source).
    - Masks: the segmenter's semantic map, or instance masks re-ordered to the detections (row
      i = detection i; all False where no instance overlaps); else the detector's own masks.
    - Poses: the pose model's, ordered to follow the person detections (pose i belongs to the
      i-th matched person box, by box IoU >= 0.3), unmatched poses last; else the detector's.

    Args:
        detector, segmenter, pose: the stages (None = off); at least one.
        detect_stride: run the detector every Nth frame per stream (reuse in between).
        person_class: the detector's class name for people.
    """

    def __init__(
        self,
        *,
        detector: Perceiver | None = None,
        segmenter: Any = None,
        pose: Any = None,
        detect_stride: int = 1,
        person_class: str = "person",
    ) -> None:
        if detector is None and segmenter is None and pose is None:
            raise ValueError("CompositePerceiver needs at least one stage")
        self.detector, self.segmenter, self.pose = detector, segmenter, pose
        self.detect_schedule = StrideSchedule(detect_stride)
        instance = segmenter is not None and segmenter.kind == "instance"
        if detector is not None:
            self.class_names = tuple(detector.class_names)
        elif instance:
            self.class_names = tuple(segmenter.class_names)
        elif pose is not None:
            self.class_names = tuple(pose.class_names)
        else:
            self.class_names = ()
        self._person_ids = np.array(
            [i for i, n in enumerate(self.class_names) if n == person_class], np.int64
        )
        parts = [s.description for s in (detector, segmenter, pose) if s is not None]
        self.description = " + ".join(parts)

    def __call__(
        self, frames: Sequence[np.ndarray], stream_ids: Sequence[Hashable] | None = None
    ) -> list[FrameOutputs]:
        """Per frame ``(Detections, Poses, Masks)``; ``stream_ids`` keys the frame strides."""
        n = len(frames)
        if n == 0:
            return []
        if self.detector is not None:
            base = self.detect_schedule.run(frames, stream_ids, self.detector)
        else:
            base = [(Detections.empty(), Poses.empty(), Masks.empty())] * n
        segs = self.segmenter.segment(frames, stream_ids) if self.segmenter else [None] * n
        poses = self.pose.estimate(frames, stream_ids) if self.pose else [None] * n
        out: list[FrameOutputs] = []
        for frame, (det, pose, mask), seg, pr in zip(frames, base, segs, poses):
            if seg is not None:
                if seg.detections is None:
                    mask = seg.masks
                elif self.detector is None:
                    det, mask = seg.detections, seg.masks
                else:
                    from models.segmentation import align_instances

                    mask = align_instances(seg, det, frame.shape[:2])
            if pr is not None:
                if self.detector is None and (seg is None or seg.detections is None):
                    det, pose = pr.boxes, pr.poses
                else:
                    pose = align_poses(pr.poses, pr.boxes, det, self._person_ids)
            out.append((det, pose, mask))
        return out


def align_poses(
    poses: Poses,
    pose_boxes: Detections,
    detections: Detections,
    person_ids: np.ndarray,
    iou_threshold: float = 0.3,
) -> Poses:
    """Reorder ``poses`` to follow the person rows of ``detections``.

    Each person detection (``class_id`` in ``person_ids``, in detection order) takes the pose
    whose box overlaps it best (one to one, Hungarian on IoU, IoU >= ``iou_threshold``); those
    poses come first in that order, the unmatched poses after them, by score.

    Args:
        poses: ``n`` poses; ``pose_boxes``: their ``n`` boxes, xyxy pixels.
        detections: the frame's detections.
        person_ids: class ids that are people.
    """
    if len(poses) == 0:
        return poses
    persons = np.flatnonzero(np.isin(detections.class_id, person_ids))
    if len(persons) == 0:
        return poses
    matched = match_boxes(detections.xyxy[persons], pose_boxes.xyxy, iou_threshold)
    first = [c for _, c in sorted(matched)]
    rest = [i for i in range(len(poses)) if i not in set(first)]
    return poses[np.asarray(first + rest, np.int64)]


class StrideSchedule:
    """Run a model on every ``stride``-th frame of each stream; reuse its last result between.

    The first frame of a stream always runs. Keys are stream ids (None: one stream). At most
    ``max_streams`` streams are remembered (least recently seen forgotten first).
    """

    def __init__(self, stride: int = 1, max_streams: int = 1024) -> None:
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = int(stride)
        self.max_streams = max_streams
        self._count: OrderedDict[Hashable, int] = OrderedDict()
        self._last: dict[Hashable, Any] = {}
        self.runs = 0
        """Frames the model actually ran on (for tests and metrics)."""

    def run(
        self,
        frames: Sequence[np.ndarray],
        stream_ids: Sequence[Hashable] | None,
        infer: Callable[[Sequence[np.ndarray]], Sequence[T]],
    ) -> list[T]:
        """``infer`` on the frames that are due (one batch), cached results for the others."""
        keys: Sequence[Hashable] = [None] * len(frames) if stream_ids is None else stream_ids
        if len(keys) != len(frames):
            raise ValueError(f"{len(keys)} stream_ids for {len(frames)} frames")
        if self.stride == 1:
            self.runs += len(frames)
            return list(infer(frames))
        due: list[bool] = []
        seen: set[Hashable] = set()
        for key in keys:
            count = self._count.pop(key, 0)
            due.append(count % self.stride == 0 or (key not in self._last and key not in seen))
            seen.add(key)
            self._count[key] = count + 1
        while len(self._count) > self.max_streams:
            old, _ = self._count.popitem(last=False)
            self._last.pop(old, None)
        run_idx = [i for i, d in enumerate(due) if d]
        fresh = iter(infer([frames[i] for i in run_idx]) if run_idx else [])
        self.runs += len(run_idx)
        out: list[T] = []
        for key, is_due in zip(keys, due):
            if is_due:
                self._last[key] = next(fresh)
            out.append(self._last[key])
        return out


def group_by_size(frames: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``frames`` grouped by ``(H, W)``, in first-seen order (one batch per size)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape[:2]), []).append(i)
    return list(groups.values())


def resolve_device(spec: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else unchanged."""
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


_DETECT_KEYS = ("model", "weights", "score_threshold", "iou_threshold", "classes", "input_size",
                "max_detections", "seed")  # fmt: skip
