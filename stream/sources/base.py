"""The vocabulary every video source shares: frames, stream facts, why a stream ended, errors.

A source yields :class:`SourceFrame` objects: RGB pixels, the 0-based frame index, ``pts`` in
seconds from the container's stream clock, and ``capture_ts`` (UTC Unix seconds). After opening
it holds a :class:`StreamInfo`; when iteration stops, an :class:`EndOfStream` says why. Opening
or reading fails with :class:`SourceError`, whose ``reason`` classifies the failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

DEFAULT_IMAGE_FPS = 10.0
# Frames the presentation-order window holds: B-frame pyramids of up to 3 B-frames move a
# timestamp at most 4 places; 8 leaves room.
REORDER_DEPTH = 8
# A file whose packets fail to decode this many times in a row is garbage, not damage.
MAX_BAD_PACKETS_IN_A_ROW = 200
# Default pixel cap per frame (sources[].max_pixels): DCI 8K (8192x4320) passes, 8192x8192 not.
DEFAULT_MAX_PIXELS = 8192 * 4320


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line for the user.

    ``reason`` classifies it for reconnect logic and events: ``unreachable`` (refused, no
    route), ``auth`` (wrong or missing credentials), ``timeout`` (no answer in time),
    ``not_found``, ``no_video``, ``unsupported``, ``error``.
    """

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class SourceFrame:
    """One decoded frame.

    Attributes:
        rgb: ``(H, W, 3) uint8`` pixels, RGB.
        frame_idx: 0-based index in the stream.
        pts: presentation time in seconds (stream clock).
        pts_raw: presentation time in units of ``StreamInfo.time_base`` (for re-muxing).
        capture_ts: UTC Unix seconds.
    """

    rgb: np.ndarray
    frame_idx: int
    pts: float
    pts_raw: int
    capture_ts: float


@dataclass
class StreamInfo:
    """What a source knows after opening: size in pixels, nominal fps, clock, frame count."""

    uri: str
    width: int
    height: int
    fps: float
    time_base: Fraction
    frame_count: int | None
    start_ts: float
    codec: str


@dataclass
class EndOfStream:
    """Why a source stopped: ``eof``, ``truncated`` (read error after some frames), ``stopped``."""

    reason: str
    frames_read: int
    detail: str = ""
