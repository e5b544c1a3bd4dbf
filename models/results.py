"""Result types: the one currency between stages.

Dataclasses of aligned numpy arrays, validated on construction, indexable by boolean masks or
index arrays, with ``empty()`` and ``merge()``. Coordinates are pixels in the frame the result
was computed on; boxes are ``xyxy`` (x1, y1, x2, y2); keypoints follow COCO-17 order
(:data:`COCO17_KEYPOINTS`).

Each type converts to and from a *wire* form (``to_wire`` / ``from_wire``): a small JSON-able
header plus a dict of named numpy arrays, which :mod:`stream.wire` sends as raw ZeroMQ frames,
so nothing is pickled between processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _as_array(value: Any, dtype: Any, name: str, shape_tail: tuple[int, ...]) -> np.ndarray:
    """Coerce ``value`` to ``dtype`` and check that its shape is ``(n, *shape_tail)``."""
    arr = np.asarray(value, dtype=dtype)
    if arr.size == 0 and arr.ndim != 1 + len(shape_tail):
        arr = arr.reshape((0, *shape_tail))
    if arr.ndim != 1 + len(shape_tail) or tuple(arr.shape[1:]) != shape_tail:
        expected = ", ".join(["n", *map(str, shape_tail)])
        raise ValueError(f"{name} must have shape ({expected}), got {tuple(arr.shape)}")
    return arr


def _check_aligned(n: int, **arrays: np.ndarray | None) -> None:
    for name, arr in arrays.items():
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows but there are {n} items")


def _to_wire(prefix: str, **arrays: np.ndarray | None) -> dict[str, np.ndarray]:
    """``{"prefix.name": array}`` in argument order, arrays that are None left out."""
    return {f"{prefix}.{name}": arr for name, arr in arrays.items() if arr is not None}


def _from_wire(
    arrays: dict[str, np.ndarray], prefix: str, required: tuple[str, ...], optional: str
) -> list[np.ndarray | None] | None:
    """The ``required`` arrays then the ``optional`` one (None if absent) under ``prefix``;
    None when the first required one is absent (the sender had no such result)."""
    if f"{prefix}.{required[0]}" not in arrays:
        return None
    return [arrays[f"{prefix}.{n}"] for n in required] + [arrays.get(f"{prefix}.{optional}")]


def _index(arr: np.ndarray | None, index: Any) -> np.ndarray | None:
    if arr is None:
        return None
    out = arr[index]
    return out if out.ndim == arr.ndim else out[np.newaxis]


@dataclass
class Detections:
    """Boxes found in one frame.

    Attributes:
        xyxy: ``(n, 4) float32`` boxes, pixels, x1 <= x2 and y1 <= y2.
        score: ``(n,) float32`` confidences in [0, 1].
        class_id: ``(n,) int64`` indices into the detector's class names.
        track_id: optional ``(n,) int64`` identities assigned by a tracker (-1 = none).
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = _as_array(self.xyxy, np.float32, "xyxy", (4,))
        self.score = _as_array(self.score, np.float32, "score", ())
        self.class_id = _as_array(self.class_id, np.int64, "class_id", ())
        if self.track_id is not None:
            self.track_id = _as_array(self.track_id, np.int64, "track_id", ())
        _check_aligned(
            len(self.xyxy), score=self.score, class_id=self.class_id, track_id=self.track_id
        )
        if len(self.xyxy) and (
            np.any(self.xyxy[:, 2] < self.xyxy[:, 0]) or np.any(self.xyxy[:, 3] < self.xyxy[:, 1])
        ):
            raise ValueError("xyxy boxes must have x1 <= x2 and y1 <= y2")

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Select rows by boolean mask, index array, slice or integer; returns a new object."""
        return Detections(
            xyxy=_index(self.xyxy, index),
            score=_index(self.score, index),
            class_id=_index(self.class_id, index),
            track_id=_index(self.track_id, index),
        )

    @property
    def area(self) -> np.ndarray:
        """``(n,) float32`` box areas in square pixels."""
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def merge(cls, items: Iterable[Detections]) -> Detections:
        items = [d for d in items if len(d)]
        if not items:
            return cls.empty()
        with_tracks = [d.track_id is not None for d in items]
        if any(with_tracks) and not all(with_tracks):
            raise ValueError("cannot merge Detections with and without track_id")
        return cls(
            xyxy=np.concatenate([d.xyxy for d in items]),
            score=np.concatenate([d.score for d in items]),
            class_id=np.concatenate([d.class_id for d in items]),
            track_id=np.concatenate([d.track_id for d in items]) if all(with_tracks) else None,
        )

    def to_wire(self, prefix: str = "det") -> dict[str, np.ndarray]:
        return _to_wire(prefix, xyxy=self.xyxy, score=self.score, class_id=self.class_id,
                        track_id=self.track_id)  # fmt: skip

    @classmethod
    def from_wire(cls, arrays: dict[str, np.ndarray], prefix: str = "det") -> Detections:
        fields = _from_wire(arrays, prefix, ("xyxy", "score", "class_id"), "track_id")
        return cls.empty() if fields is None else cls(*fields)


@dataclass
class Poses:
    """Human keypoints found in one frame.

    Attributes:
        keypoints: ``(n, 17, 3) float32``: x, y in pixels and confidence in [0, 1], COCO-17 order.
        score: ``(n,) float32`` whole-pose confidences.
        track_id: optional ``(n,) int64`` identities (-1 = none).
    """

    keypoints: np.ndarray
    score: np.ndarray | None = None
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.keypoints = _as_array(self.keypoints, np.float32, "keypoints", (17, 3))
        if self.score is None:
            self.score = (
                self.keypoints[:, :, 2].mean(axis=1)
                if len(self.keypoints)
                else np.zeros(0, np.float32)
            )
        self.score = _as_array(self.score, np.float32, "score", ())
        if self.track_id is not None:
            self.track_id = _as_array(self.track_id, np.int64, "track_id", ())
        _check_aligned(len(self.keypoints), score=self.score, track_id=self.track_id)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index: Any) -> Poses:
        return Poses(
            _index(self.keypoints, index), _index(self.score, index), _index(self.track_id, index)
        )

    @classmethod
    def empty(cls) -> Poses:
        return cls(np.zeros((0, 17, 3), np.float32))

    @classmethod
    def merge(cls, items: Iterable[Poses]) -> Poses:
        items = [p for p in items if len(p)]
        if not items:
            return cls.empty()
        tracks = [p.track_id for p in items]
        return cls(
            np.concatenate([p.keypoints for p in items]),
            np.concatenate([p.score for p in items]),
            np.concatenate(tracks) if all(t is not None for t in tracks) else None,
        )

    def to_wire(self, prefix: str = "pose") -> dict[str, np.ndarray]:
        return _to_wire(prefix, keypoints=self.keypoints, score=self.score, track_id=self.track_id)

    @classmethod
    def from_wire(cls, arrays: dict[str, np.ndarray], prefix: str = "pose") -> Poses:
        fields = _from_wire(arrays, prefix, ("keypoints", "score"), "track_id")
        return cls.empty() if fields is None else cls(*fields)


@dataclass
class Masks:
    """Segmentation of one frame: a semantic class map or per-instance masks.

    Attributes:
        semantic: ``(H, W) uint8`` class index per pixel (0 = background), or None.
        instance: ``(n, H, W) bool`` one mask per detection, or None.
    """

    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.semantic is not None:
            self.semantic = np.asarray(self.semantic, dtype=np.uint8)
            if self.semantic.ndim != 2:
                raise ValueError(f"semantic must have shape (H, W), got {self.semantic.shape}")
        if self.instance is not None:
            self.instance = np.asarray(self.instance, dtype=bool)
            if self.instance.ndim != 3:
                raise ValueError(f"instance must have shape (n, H, W), got {self.instance.shape}")

    def __len__(self) -> int:
        return 0 if self.instance is None else len(self.instance)

    @classmethod
    def empty(cls) -> Masks:
        return cls()

    def to_wire(self, prefix: str = "mask") -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        if self.semantic is not None:
            arrays[f"{prefix}.semantic"] = self.semantic
        if self.instance is not None:  # bit-packed: 1 bit per pixel on the wire
            arrays[f"{prefix}.instance_shape"] = np.asarray(self.instance.shape, np.int64)
            arrays[f"{prefix}.instance_bits"] = np.packbits(self.instance, axis=None)
        return arrays

    @classmethod
    def from_wire(cls, arrays: dict[str, np.ndarray], prefix: str = "mask") -> Masks:
        instance = None
        if f"{prefix}.instance_bits" in arrays:
            shape = tuple(int(s) for s in arrays[f"{prefix}.instance_shape"])
            count = int(np.prod(shape))
            bits = np.unpackbits(arrays[f"{prefix}.instance_bits"], count=count)
            instance = bits.reshape(shape).astype(bool)
        return cls(arrays.get(f"{prefix}.semantic"), instance)


@dataclass(frozen=True)
class ActionForecast:
    """What one tracked person is predicted to do ``horizon_s`` seconds from now.

    Attributes:
        track_id: the person's track identity.
        action: the most probable action name.
        horizon_s: seconds ahead of the frame's ``pts``.
        probs: ``{action: probability}`` over the forecaster's whole vocabulary, summing to 1.
    """

    track_id: int
    action: str
    horizon_s: float
    probs: dict[str, float]

    def __post_init__(self) -> None:
        if self.action not in self.probs:
            raise ValueError(f"action {self.action!r} is not in the vocabulary {list(self.probs)}")
        if self.horizon_s < 0:
            raise ValueError(f"horizon_s must be >= 0 seconds, got {self.horizon_s}")

    @property
    def p(self) -> float:
        return self.probs[self.action]

    def to_json(self) -> dict[str, Any]:
        return {
            "track": self.track_id,
            "action": self.action,
            "horizon_s": self.horizon_s,
            "probs": self.probs,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ActionForecast:
        return cls(int(obj["track"]), obj["action"], float(obj["horizon_s"]), dict(obj["probs"]))


@dataclass
class FrameResult:
    """Everything the pipeline knows about one frame, with the frame's provenance.

    Attributes:
        stream_id: the source's name (e.g. ``cam1``).
        frame_idx: 0-based index of the frame in its stream (decode order = display order).
        pts: presentation time in seconds from the container or RTP clock.
        capture_ts: wall-clock UTC seconds (Unix epoch) at which the frame was captured; for
            files, the container's start time plus ``pts``, so runs are reproducible.
        width, height: frame size in pixels.
        stage_ts: ``{stage_name: unix seconds}`` when each stage finished with the frame.
    """

    stream_id: str
    frame_idx: int
    pts: float
    capture_ts: float
    width: int
    height: int
    detections: Detections = field(default_factory=Detections.empty)
    poses: Poses = field(default_factory=Poses.empty)
    masks: Masks = field(default_factory=Masks.empty)
    forecasts: list[ActionForecast] = field(default_factory=list)
    class_names: tuple[str, ...] = ()
    stage_ts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frame_idx < 0:
            raise ValueError(f"frame_idx must be >= 0, got {self.frame_idx}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")

    def class_name(self, class_id: int) -> str:
        return (
            self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-able summary for ``detections.jsonl``: boxes (xyxy px, 1 decimal), class
        names, scores, track ids (-1 = none), COCO-17 keypoints ``[x, y, conf]`` per pose with
        its track id, and forecasts. Masks are left out (they go to the annotated video)."""
        det, poses = self.detections, self.poses
        return {
            "stream": self.stream_id,
            "frame": self.frame_idx,
            "pts": round(self.pts, 6),
            "boxes": np.round(det.xyxy, 1).tolist(),
            "classes": [self.class_name(int(c)) for c in det.class_id],
            "scores": np.round(det.score, 3).tolist(),
            "tracks": (
                det.track_id if det.track_id is not None else np.full(len(det), -1)
            ).tolist(),
            "poses": np.round(poses.keypoints, 2).tolist(),
            "pose_tracks": (
                poses.track_id if poses.track_id is not None else np.full(len(poses), -1)
            ).tolist(),
            "forecasts": [f.to_json() for f in self.forecasts],
        }

    def to_wire(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Split into a JSON-able header and named arrays (see :mod:`stream.wire`)."""
        header = {
            "stream_id": self.stream_id,
            "frame_idx": self.frame_idx,
            "pts": self.pts,
            "capture_ts": self.capture_ts,
            "width": self.width,
            "height": self.height,
            "class_names": list(self.class_names),
            "stage_ts": self.stage_ts,
            "forecasts": [f.to_json() for f in self.forecasts],
        }
        arrays = {**self.detections.to_wire(), **self.poses.to_wire(), **self.masks.to_wire()}
        return header, arrays

    @classmethod
    def from_wire(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> FrameResult:
        return cls(
            stream_id=header["stream_id"],
            frame_idx=int(header["frame_idx"]),
            pts=float(header["pts"]),
            capture_ts=float(header["capture_ts"]),
            width=int(header["width"]),
            height=int(header["height"]),
            detections=Detections.from_wire(arrays),
            poses=Poses.from_wire(arrays),
            masks=Masks.from_wire(arrays),
            forecasts=[ActionForecast.from_json(f) for f in header.get("forecasts", [])],
            class_names=tuple(header.get("class_names", ())),
            stage_ts=dict(header.get("stage_ts", {})),
        )
