"""Video files: :class:`FileSource` decodes any container and codec FFmpeg reads, with
strictly increasing presentation timestamps.

For files, ``capture_ts`` is the container's start time (its ``creation_time`` tag, else the
file's modification time) plus ``pts``, so the same file gives the same timestamps on every run.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.sources.base import (
    MAX_BAD_PACKETS_IN_A_ROW,
    REORDER_DEPTH,
    EndOfStream,
    SourceError,
    SourceFrame,
    StreamInfo,
)
from stream.sources.decoding import decoder_name, error_text, hwaccel


class FileSource:
    """Decode a video file with PyAV (any container and codec FFmpeg reads).

    Frames come out in presentation order with presentation timestamps, strictly increasing:

    - a container that hands timestamps out in decode order (AVI holding H.264 with B-frames:
      the frames are in display order but their ``pts`` are permuted) is put right by a small
      reorder window (:data:`REORDER_DEPTH` frames): each frame gets the smallest ``pts`` still
      in the window;
    - a frame without ``pts`` gets the previous one's plus one frame period (from the rate);
    - a repeated or backwards ``pts`` is moved to one tick after the previous frame;
    - AVI stores no presentation times, only the frames' order at a fixed rate (FFmpeg's
      guesses differ by a frame between versions when B-frames delay the decoder): frame ``i``
      is at ``start + i / fps``, the AVI index's own clock.

    Rotation metadata (the display matrix) is applied: frames are analysed and drawn upright,
    and ``info`` gives the upright size. Decoding uses FFmpeg's frame and slice threads
    (``decode_threads``: 0 = one per core). A corrupt packet is skipped (counted in
    ``bad_packets``) and decoding goes on, as the ``ffmpeg`` CLI does.

    The first frame is decoded on open, so an input that cannot be decoded, or whose frames
    exceed ``max_pixels``, raises :class:`SourceError` here (reason ``undecodable`` or
    ``too_large``), before any frame buffer is sized; so does a missing, empty or non-video
    file. A read error after the first frame ends iteration (``end.reason == "truncated"``)
    instead of raising, so every frame before the break is processed.
    """

    live = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        decode_threads: int = 0,
        decoder: str = "software",
        max_pixels: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"no such file: {self.path}", "not_found")
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a directory, not a video file")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{self.path} is empty (0 bytes)")
        try:
            self._container = av.open(
                str(self.path), mode="r", timeout=10.0, hwaccel=hwaccel(decoder)
            )
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"{self.path} is not a readable video file ({error_text(exc)})"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path} has no video stream", "no_video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame + slice threads: files have no latency bound
        self._stream.thread_count = decode_threads
        self.decoder = decoder_name(self._stream)
        self.max_pixels = max_pixels
        self.bad_packets = 0
        self._read_error: str | None = None
        self._reach: int | None = None  # the furthest packet end seen, time-base ticks
        ctx = self._stream.codec_context
        if not ctx.width or not ctx.height:
            self._container.close()
            raise SourceError(f"{self.path} has a video stream of unknown size", "undecodable")
        self._check_size(ctx.width, ctx.height)
        rate = self._stream.average_rate or self._stream.guessed_rate or Fraction(25)
        time_base = self._stream.time_base or 1 / Fraction(rate).limit_denominator(1001)
        frames = self._stream.frames or None
        if frames is None and self._stream.duration and self._stream.time_base:
            frames = int(round(float(self._stream.duration * self._stream.time_base * rate)))
        # One frame period in time-base ticks: the step for frames that carry no pts.
        self._period = max(1, round(1 / (float(rate) * float(time_base))))
        self._index_clock = "avi" in self._container.format.name.split(",")
        self._decoded = self._decode()
        try:
            first = next(self._decoded, None)
            if first is None:
                why = f" ({self._read_error})" if self._read_error else ""
                raise SourceError(f"{self.path}: no frame could be decoded{why}", "undecodable")
            if self.max_pixels and first.width * first.height > self.max_pixels:
                self._decoded.close()  # before _check_size closes the container and raises
            self._check_size(first.width, first.height)
        except SourceError:
            # The generator first, then its container: none is left suspended over a closed one.
            self._decoded.close()
            self._container.close()
            raise
        self._first: Any = first
        #  Quarter turns counter-clockwise (np.rot90) that make the picture upright.
        self.rotation = int(round(float(getattr(first, "rotation", 0) or 0) / 90.0)) % 4
        width, height = first.width, first.height
        if self.rotation % 2:
            width, height = height, width
        self.info = StreamInfo(
            uri=str(self.path),
            width=width,
            height=height,
            fps=float(rate),
            time_base=Fraction(time_base),
            frame_count=frames,
            start_ts=_container_start(self._container, self.path),
            codec=ctx.name,
        )
        self.end: EndOfStream | None = None

    def _check_size(self, width: int, height: int) -> None:
        if self.max_pixels and width * height > self.max_pixels:
            self._container.close()
            raise SourceError(
                f"{self.path}: frames of {width}x{height} ({width * height:,} pixels) exceed "
                f"sources[].max_pixels ({self.max_pixels:,}); refused",
                "too_large",
            )

    def _decode(self) -> Iterator[Any]:
        """Decoded ``av.VideoFrame`` s in the decoder's output order; skips corrupt packets,
        stops at a read error (noted in ``_read_error``) after flushing the decoder."""
        bad_run = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.pts is not None:  # how far the file reaches, decodable or not
                    end = packet.pts + (packet.duration or 0)
                    self._reach = end if self._reach is None else max(self._reach, end)
                try:
                    decoded = packet.decode()
                except (av.error.InvalidDataError, av.error.PatchWelcomeError) as exc:
                    self.bad_packets += 1
                    bad_run += 1
                    if bad_run >= MAX_BAD_PACKETS_IN_A_ROW:  # not damage: garbage
                        self._read_error = (
                            f"{bad_run} undecodable packets in a row: {error_text(exc)}"
                        )
                        return
                    continue
                if decoded:
                    bad_run = 0
                yield from decoded
        except (av.error.FFmpegError, EOFError) as exc:
            self._read_error = error_text(exc)
            try:  # the frames still inside the (threaded) decoder are good ones
                yield from self._stream.codec_context.decode(None)
            except (av.error.FFmpegError, EOFError):
                pass

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames in display order; afterwards ``self.end`` says why iteration stopped."""
        idx = 0
        time_base = self.info.time_base
        window: deque[Any] = deque()  # decoded frames waiting for their pts
        stamps: list[int] = []  # min-heap of the pts values of the frames in the window
        last_in: int | None = None
        last_out: int | None = None
        too_large = ""

        def emit(frame: Any) -> SourceFrame:
            nonlocal idx, last_out
            raw = heapq.heappop(stamps)
            if last_out is not None and raw <= last_out:
                raw = last_out + 1  # a repeated pts: one tick later, never twice, never back
            last_out = raw
            rgb = frame.to_ndarray(format="rgb24")
            if self.rotation:
                rgb = np.ascontiguousarray(np.rot90(rgb, self.rotation))
            pts = float(raw * time_base)
            out = SourceFrame(rgb, idx, pts, int(raw), self.info.start_ts + pts)
            idx += 1
            return out

        first, self._first = self._first, None
        try:
            for frame in itertools.chain([first] if first is not None else [], self._decoded):
                if self.max_pixels and frame.width * frame.height > self.max_pixels:
                    too_large = f"frame of {frame.width}x{frame.height} exceeds max_pixels"
                    break
                raw = frame.pts
                if self._index_clock:
                    raw = (self._stream.start_time or 0) + (idx + len(window)) * self._period
                elif raw is None:  # no timestamp: one frame period after the previous one
                    raw = last_in + self._period if last_in is not None else 0
                last_in = raw
                heapq.heappush(stamps, raw)
                window.append(frame)
                if len(window) > REORDER_DEPTH:
                    yield emit(window.popleft())
            while window and not too_large:
                yield emit(window.popleft())
        finally:
            self._container.close()
        detail = f"{self.bad_packets} corrupt packet(s) skipped" if self.bad_packets else ""
        expected = self.info.frame_count
        duration = self._stream.duration
        if duration and self._reach is not None:  # the container says how long it is
            start = self._stream.start_time or 0
            cut = self._reach < start + duration * 0.98 - self._period
            expected = idx + 2 if cut else None
        if too_large:
            self.end = EndOfStream("too_large", idx, too_large)
        elif self._read_error is not None:
            self.end = EndOfStream(
                "truncated", idx, f"read error after {idx} frames: {self._read_error}"
            )
        elif expected and idx < expected * 0.98 - 1:  # FFmpeg stops quietly at a cut-off file
            self.end = EndOfStream("truncated", idx, f"container announced {expected} frames")
        else:
            self.end = EndOfStream("eof", idx, detail)

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
