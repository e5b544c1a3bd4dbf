"""The perceiver contract and the small pieces every frame model shares.

A *perceiver* takes a batch of ``(H, W, 3) uint8 RGB`` frames and returns, per frame,
``(Detections, Poses, Masks)`` in that frame's pixel coordinates (:class:`Perceiver`).
The stages share :class:`StrideSchedule` (run every Nth frame of a stream, reuse the result in
between), :class:`StridedStage` (a model run through one, a batch per frame size),
:func:`group_by_size`, :func:`resolve_device` (``auto``) and :func:`init_kwargs` (a stage's
keyword arguments from its typed config section).

A leaf: it imports no torch at import time and nothing of the project but the result types, so
any stage module (and the pipeline) can import it without a cycle.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from models.results import Detections, Masks, Poses

FrameOutputs = tuple[Detections, Poses, Masks]
T = TypeVar("T")
R = TypeVar("R")


class Perceiver(Protocol):
    """Frames in, ``(Detections, Poses, Masks)`` per frame out."""

    class_names: tuple[str, ...]
    description: str

    def __call__(self, frames: Sequence[np.ndarray]) -> list[FrameOutputs]: ...


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


class StridedStage(Generic[R]):
    """A frame model run through a :class:`StrideSchedule`, one batch per frame size.

    Subclasses set :attr:`schedule` and give :meth:`infer_group` (the model on same-sized
    frames: one full result per frame) and :meth:`output` (the part of a result that
    ``stage(frames)`` gives).
    """

    schedule: StrideSchedule

    def __call__(
        self, frames: Sequence[np.ndarray], stream_ids: Sequence[Hashable] | None = None
    ) -> list[Any]:
        """One :meth:`output` per frame (see :meth:`run`)."""
        return [self.output(r) for r in self.run(frames, stream_ids)]

    def run(
        self, frames: Sequence[np.ndarray], stream_ids: Sequence[Hashable] | None = None
    ) -> list[R]:
        """Full results for a batch of ``(H, W, 3) uint8 RGB`` frames.

        Args:
            frames: sizes may differ (frames are grouped by size and batched per group).
            stream_ids: one key per frame for the stride schedule (None: one stream).
        """
        return self.schedule.run(frames, stream_ids, self.infer_batch)

    def infer_batch(self, frames: Sequence[np.ndarray]) -> list[R]:
        """The model on every frame given (no schedule), one :meth:`infer_group` per size."""
        out: list[R | None] = [None] * len(frames)
        for idx in group_by_size(frames):
            for i, result in zip(idx, self.infer_group([frames[i] for i in idx])):
                out[i] = result
        return out  # type: ignore[return-value]

    def infer_group(self, frames: Sequence[np.ndarray]) -> list[R]:
        """The model on frames of one size: one result per frame."""
        raise NotImplementedError

    def output(self, result: R) -> Any:
        """What ``stage(frames)`` gives for one frame's full result."""
        raise NotImplementedError


def group_by_size(frames: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``frames`` grouped by ``(H, W)``, in first-seen order (one batch per size)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape[:2]), []).append(i)
    return list(groups.values())


def resolve_device(spec: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else unchanged."""
    if spec == "auto":
        import torch  # delayed: importing this module must not load torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def init_kwargs(fn: Callable[..., Any], section: Any, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments for ``fn`` (a class or function with keyword-only parameters): the
    values ``section`` holds under those parameter names, then ``fixed`` on top.

    ``section`` is a typed config section (attributes) or a mapping; names it does not hold are
    left to ``fn``'s own defaults, names ``fn`` does not take are ignored. The mapping from a
    config section to a stage is written once, here, instead of once per stage.
    """
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if isinstance(section, Mapping):
        held = {n: section[n] for n in names if n in section}
    else:
        held = {n: getattr(section, n) for n in names if hasattr(section, n)}
    return {**{n: v for n, v in held.items() if n not in fixed}, **fixed}
