"""Video sources: decode frames with their provenance.

A source yields :class:`SourceFrame` objects: RGB pixels, the 0-based frame index, ``pts`` in
seconds from the container's stream clock, and ``capture_ts`` (UTC Unix seconds). For files,
``capture_ts`` is the container's start time (its ``creation_time`` tag, else the file's
modification time) plus ``pts``, so the same file gives the same timestamps on every run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line for the user."""


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


def open_source(uri: str) -> FileSource:
    """Open a source by URI; today files (a path or ``file://`` URI)."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise SourceError(f"unsupported source scheme {scheme!r} in {redact_uri(uri)}")
    return FileSource(uri)


def redact_uri(uri: str) -> str:
    """Hide credentials: ``rtsp://user:pw@host/x`` -> ``rtsp://***@host/x``."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


class FileSource:
    """Decode a video file with PyAV (any container and codec FFmpeg reads).

    Raises :class:`SourceError` on open for a missing, empty or non-video file. A read error
    after the first frame ends iteration (``end.reason == "truncated"``) instead of raising,
    so every frame before the break is processed.
    """

    def __init__(self, path: str | os.PathLike[str], *, decode_threads: int = 0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"no such file: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a directory, not a video file")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{self.path} is empty (0 bytes)")
        try:
            self._container = av.open(str(self.path), mode="r", timeout=10.0)
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"{self.path} is not a readable video file ({_reason(exc)})"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        if decode_threads:
            self._stream.thread_count = decode_threads
        ctx = self._stream.codec_context
        if not ctx.width or not ctx.height:
            self._container.close()
            raise SourceError(f"{self.path} has a video stream of unknown size")
        rate = self._stream.average_rate or self._stream.guessed_rate or Fraction(25)
        frames = self._stream.frames or None
        if frames is None and self._stream.duration and self._stream.time_base:
            frames = int(round(float(self._stream.duration * self._stream.time_base * rate)))
        self.info = StreamInfo(
            uri=str(self.path),
            width=ctx.width,
            height=ctx.height,
            fps=float(rate),
            time_base=self._stream.time_base or Fraction(1, int(round(float(rate)))),
            frame_count=frames,
            start_ts=_container_start(self._container, self.path),
            codec=ctx.name,
        )
        self.end: EndOfStream | None = None

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames in display order; afterwards ``self.end`` says why iteration stopped."""
        idx = 0
        time_base = self.info.time_base
        try:
            for frame in self._container.decode(self._stream):
                pts_raw = (
                    frame.pts if frame.pts is not None else int(idx / self.info.fps / time_base)
                )
                pts = float(pts_raw * time_base)
                rgb = frame.to_ndarray(format="rgb24")
                yield SourceFrame(rgb, idx, pts, int(pts_raw), self.info.start_ts + pts)
                idx += 1
        except (av.error.FFmpegError, EOFError) as exc:
            if idx == 0:
                raise SourceError(
                    f"{self.path}: no frame could be decoded ({_reason(exc)})"
                ) from None
            self.end = EndOfStream(
                "truncated", idx, f"read error after {idx} frames: {_reason(exc)}"
            )
            return
        finally:
            self._container.close()
        if idx == 0:
            raise SourceError(f"{self.path}: the video stream holds no decodable frame")
        expected = self.info.frame_count
        if expected and idx < expected * 0.98 - 1:  # FFmpeg stops quietly at a cut-off file
            self.end = EndOfStream("truncated", idx, f"container announced {expected} frames")
        else:
            self.end = EndOfStream("eof", idx)

    def close(self) -> None:
        self._container.close()


def _container_start(container: av.container.InputContainer, path: Path) -> float:
    tag = container.metadata.get("creation_time")
    if tag:
        try:
            return datetime.fromisoformat(tag.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return path.stat().st_mtime


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
