"""Detect, segment and pose stages run on the same frames and merged per frame
(:class:`CompositePerceiver`), with the poses ordered to follow the person detections
(:func:`align_poses`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from models.ops import match_boxes
from models.perception.base import FrameOutputs, Perceiver, StrideSchedule
from models.results import Detections, Masks, Poses
from models.segmentation import align_instances


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
