"""Video sources: decode frames with their provenance.

A source yields :class:`SourceFrame` objects: RGB pixels, the 0-based frame index, ``pts`` in
seconds from the container's stream clock, and ``capture_ts`` (UTC Unix seconds). For files,
``capture_ts`` is the container's start time (its ``creation_time`` tag, else the file's
modification time) plus ``pts``, so the same file gives the same timestamps on every run.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.codec.hwaccel
import numpy as np

from stream.redact import redact

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


def open_source(
    uri: str,
    *,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    decoder: str = "auto",
    fps: float | None = None,
    loop: bool = False,
    max_pixels: int | None = None,
) -> Source:
    """Open a source by URI.

    - ``rtsp://`` / ``rtsps://``: :class:`RtspSource` (TCP, open and read timeouts);
    - ``/dev/videoN`` or ``v4l2:///dev/videoN``: :class:`UsbSource` (V4L2);
    - a directory (or ``dir://PATH``): :class:`ImageDirSource` (sorted images at ``fps``);
    - anything else: a video file (a path or ``file://`` URI), :class:`FileSource`.

    ``decoder`` is ``auto`` (CUDA through PyAV's hwaccel when a CUDA device is present, else
    software), ``cuda`` or ``software``. ``loop`` plays a file or image folder over and over
    (:class:`LoopingSource`); it is ignored for cameras, which never end (they reconnect).
    ``max_pixels`` refuses files and cameras whose frames hold more pixels (reason
    ``too_large``) before any frame buffer is sized; None: no cap.
    Raises :class:`SourceError` (with a ``reason``).
    """
    if loop and not is_live_uri(uri):
        kwargs = {"decoder": decoder, "fps": fps, "max_pixels": max_pixels}
        return LoopingSource(uri, open_kwargs=kwargs)
    if is_live_uri(uri):
        if uri.startswith(("rtsp://", "rtsps://")):
            return RtspSource(
                uri,
                open_timeout_s=open_timeout_s,
                read_timeout_s=read_timeout_s,
                decoder=decoder,
                max_pixels=max_pixels,
            )
        return UsbSource(
            uri,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            decoder=decoder,
            fps=fps,
            max_pixels=max_pixels,
        )
    if uri.startswith("dir://"):
        return ImageDirSource(uri[len("dir://") :], fps=fps or DEFAULT_IMAGE_FPS)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise SourceError(f"unsupported source scheme {scheme!r} in {redact_uri(uri)}")
    if Path(uri).is_dir():
        return ImageDirSource(uri, fps=fps or DEFAULT_IMAGE_FPS)
    return FileSource(uri, decoder=decoder, max_pixels=max_pixels)


def is_live_uri(uri: str) -> bool:
    """A camera (RTSP or V4L2): it can drop and come back, so it is reconnected, never EOF."""
    return uri.startswith(("rtsp://", "rtsps://", "v4l2://")) or uri.startswith("/dev/video")


def probe_source(uri: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int | None:
    """Fail fast on an input that cannot work; returns its frame count when known.

    Files and image folders are opened (and closed): the first frame is decoded, so an
    undecodable file, or one whose frames exceed ``max_pixels``, fails here. Cameras are only
    checked for a well-formed URI, since a camera that is down at start-up is retried.
    """
    if is_live_uri(uri):
        if uri.startswith(("rtsp://", "rtsps://")) and not uri.split("://", 1)[1].strip("/"):
            raise SourceError(f"{redact_uri(uri)}: no host in RTSP URI")
        return None
    source = open_source(uri, max_pixels=max_pixels)
    try:
        return source.info.frame_count
    finally:
        source.close()


def redact_uri(uri: str) -> str:
    """Hide credentials: ``rtsp://user:pw@host/x?token=t`` -> ``rtsp://***@host/x?token=***``.

    The userinfo goes up to the authority's *last* ``@`` (a password holding an unescaped
    ``@`` is hidden whole), and so do credential-like query parameters (``password=``,
    ``token=``, ``auth=``, ``key=``, ...): one implementation, :func:`stream.redact.redact`,
    shared with the log lines (:class:`pipeline.logs.RedactFilter`)."""
    return redact(uri)


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
                str(self.path), mode="r", timeout=10.0, hwaccel=_hwaccel(decoder)
            )
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"{self.path} is not a readable video file ({_reason(exc)})"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path} has no video stream", "no_video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame + slice threads: files have no latency bound
        self._stream.thread_count = decode_threads
        self.decoder = _decoder_name(self._stream)
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
                        self._read_error = f"{bad_run} undecodable packets in a row: {_reason(exc)}"
                        return
                    continue
                if decoded:
                    bad_run = 0
                yield from decoded
        except (av.error.FFmpegError, EOFError) as exc:
            self._read_error = _reason(exc)
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


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class _PyAVLiveSource:
    """A camera read through PyAV: frames until the camera goes silent or the link breaks.

    Packets before the first keyframe are skipped (counted in ``skipped_before_keyframe``), so
    no half-decoded grey frame ever reaches the models. ``frames()`` never raises for a lost
    camera: it ends and ``end.reason`` says why: ``silent`` (no packet for ``read_timeout_s``),
    ``lost`` (read error), ``eof`` (the camera closed the session).
    """

    live = True

    def __init__(
        self,
        uri: str,
        *,
        container_format: str | None,
        options: dict[str, str],
        open_timeout_s: float,
        read_timeout_s: float,
        decoder: str,
        fps: float | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.uri = uri
        self.read_timeout_s = read_timeout_s
        self.max_pixels = max_pixels
        self.skipped_before_keyframe = 0
        shown = redact_uri(uri)
        try:
            self._container = av.open(
                uri,
                mode="r",
                format=container_format,
                options=options,
                timeout=(open_timeout_s, read_timeout_s),
                hwaccel=_hwaccel(decoder),
            )
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            reason = _classify(exc)
            raise SourceError(f"{shown}: {_REASON_TEXT[reason]} ({_reason(exc)})", reason) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{shown}: no video stream", "no_video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "SLICE"  # frame threads would hold frames back (latency)
        self.decoder = _decoder_name(self._stream)
        ctx = self._stream.codec_context
        if max_pixels and ctx.width * ctx.height > max_pixels:
            self._container.close()
            raise SourceError(
                f"{shown}: frames of {ctx.width}x{ctx.height} ({ctx.width * ctx.height:,} "
                f"pixels) exceed sources[].max_pixels ({max_pixels:,}); refused",
                "too_large",
            )
        rate = self._stream.average_rate or self._stream.guessed_rate or fps or 25
        self.info = StreamInfo(
            uri=shown,
            width=ctx.width,
            height=ctx.height,
            fps=float(rate),
            time_base=Fraction(1, 90000),
            frame_count=None,
            start_ts=time.time(),
            codec=ctx.name,
        )
        self.end: EndOfStream | None = None

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames as they arrive; ``pts`` is seconds on the camera's clock (this session),
        ``capture_ts`` the wall clock when the frame was decoded."""
        idx = 0
        keyed = False
        tb = self._stream.time_base
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue
                if not keyed:
                    if not packet.is_keyframe:
                        self.skipped_before_keyframe += 1
                        continue
                    keyed = True
                for frame in packet.decode():
                    if self.max_pixels and frame.width * frame.height > self.max_pixels:
                        self.end = EndOfStream(
                            "too_large",
                            idx,
                            f"frames of {frame.width}x{frame.height} exceed sources[].max_pixels "
                            f"({self.max_pixels:,})",
                        )
                        return
                    now = time.time()
                    if frame.pts is not None and tb:
                        pts = float(frame.pts * tb)
                    else:
                        pts = idx / (self.info.fps or 25.0)
                    rgb = frame.to_ndarray(format="rgb24")
                    turns = int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
                    if turns:  # the display matrix: analyse and draw upright
                        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
                    yield SourceFrame(rgb, idx, pts, int(round(pts * 90000)), now)
                    idx += 1
        except (av.error.ExitError, TimeoutError) as exc:
            self.end = EndOfStream(
                "silent", idx, f"no packet for {self.read_timeout_s:g} s ({_reason(exc)})"
            )
            return
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            self.end = EndOfStream("lost", idx, f"read error: {_reason(exc)}")
            return
        self.end = EndOfStream("eof", idx, "the camera closed the stream")

    def close(self) -> None:
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError):
            pass


class RtspSource(_PyAVLiveSource):
    """An RTSP camera over TCP (interleaved RTP), with open and read timeouts in seconds."""

    def __init__(
        self,
        uri: str,
        *,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        decoder: str = "auto",
        max_pixels: int | None = None,
    ) -> None:
        options = {
            "rtsp_transport": "tcp",
            "timeout": str(int(read_timeout_s * 1e6)),  # socket I/O timeout, microseconds
            "fflags": "nobuffer",
            "analyzeduration": "1000000",
            "probesize": "500000",
        }
        super().__init__(
            uri,
            container_format=None,
            options=options,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            decoder=decoder,
            max_pixels=max_pixels,
        )


class UsbSource(_PyAVLiveSource):
    """A V4L2 camera (``/dev/videoN`` or ``v4l2:///dev/videoN``) through PyAV's ``v4l2`` input.

    ``fps`` asks the driver for a frame rate (the driver may pick the nearest it supports).
    """

    def __init__(
        self,
        uri: str,
        *,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        decoder: str = "auto",
        fps: float | None = None,
        max_pixels: int | None = None,
    ) -> None:
        device = uri[len("v4l2://") :] if uri.startswith("v4l2://") else uri
        if not device.startswith("/"):
            device = "/" + device
        if not Path(device).exists():
            raise SourceError(f"{device}: no such video device", "unreachable")
        options = {"framerate": f"{fps:g}"} if fps else {}
        super().__init__(
            device,
            container_format="v4l2",
            options=options,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            decoder=decoder,
            fps=fps,
            max_pixels=max_pixels,
        )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageDirSource:
    """A folder of images, in sorted file-name order, as a video at a fixed ``fps``.

    Every image is resized to the first one's size. ``capture_ts`` is the folder's
    modification time plus ``pts``, so reruns give identical events. An unreadable image is
    skipped and counted (``skipped``), never replaced by a blank frame.
    """

    live = False
    decoder = "software"

    def __init__(self, path: str | os.PathLike[str], *, fps: float = DEFAULT_IMAGE_FPS) -> None:
        import cv2

        self._cv2 = cv2
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"no such image folder: {self.path}", "not_found")
        self.files = sorted(
            p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise SourceError(f"{self.path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        first = cv2.imread(str(self.files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise SourceError(f"{self.files[0]} is not a readable image")
        rate = Fraction(fps).limit_denominator(1001)
        self.info = StreamInfo(
            uri=str(self.path),
            width=first.shape[1],
            height=first.shape[0],
            fps=float(rate),
            time_base=1 / rate,
            frame_count=len(self.files),
            start_ts=self.path.stat().st_mtime,
            codec="image",
        )
        self.skipped = 0
        self.end: EndOfStream | None = None

    def frames(self) -> Iterator[SourceFrame]:
        cv2 = self._cv2
        idx = 0
        size = (self.info.width, self.info.height)
        for file in self.files:
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                self.skipped += 1
                continue
            if (bgr.shape[1], bgr.shape[0]) != size:
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            pts = float(idx * self.info.time_base)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield SourceFrame(rgb, idx, pts, idx, self.info.start_ts + pts)
            idx += 1
        detail = f"{self.skipped} unreadable image(s) skipped" if self.skipped else ""
        self.end = EndOfStream("eof", idx, detail)

    def close(self) -> None:
        pass


class LoopingSource:
    """A file or image folder played over and over, forever: a stand-in camera.

    Each pass reopens the input (``opener``, default :func:`open_source`, with ``open_kwargs``).
    Frames keep one clock across passes: ``frame_idx`` counts on, and ``pts_raw`` (hence ``pts``
    and ``capture_ts``) is shifted so that a pass starts one frame period (``1 / fps``) after the
    previous pass's last frame. Downstream thus sees one continuous stream whose ``pts`` only
    increases, never a jump back to 0. ``info`` is the first pass's, with ``frame_count`` None
    (there is no end).

    Errors: the first open raises here, as :func:`open_source` would. A pass that yields no
    frame raises :class:`SourceError` instead of reopening in a tight loop forever; a reopen that
    fails (file deleted meanwhile) raises too. A truncated pass is played up to its break, and
    the next pass starts over. ``on_pass_end(pass_number, end)`` (1-based) is called after each
    pass, before the next opens, e.g. to log it. ``frames()`` only ends when its consumer stops
    iterating (or on an error); ``end`` is then ``stopped``. ``passes`` counts passes begun.
    """

    live = False

    def __init__(
        self,
        uri: str,
        *,
        open_kwargs: dict[str, Any] | None = None,
        on_pass_end: Callable[[int, EndOfStream], None] | None = None,
        opener: Callable[..., Any] | None = None,
    ) -> None:
        self.uri = uri
        self.open_kwargs = open_kwargs or {}
        self.on_pass_end = on_pass_end
        self._open = opener or open_source
        self._source: Any = self._open(uri, **self.open_kwargs)
        first = self._source.info
        self.info = replace(first, frame_count=None)
        self.decoder = getattr(self._source, "decoder", "software")
        self.passes = 0
        self.end: EndOfStream | None = None

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames forever (see the class docstring); each pass is closed when left."""
        time_base = self.info.time_base
        # One frame period in time-base units: the gap between a pass's last frame and the
        # next pass's first, so the joined clock keeps the input's rate.
        period = max(1, round(1.0 / (max(self.info.fps, 1e-3) * float(time_base))))
        idx = 0
        last_raw: int | None = None
        try:
            while True:
                if self._source is None:
                    self._source = self._open(self.uri, **self.open_kwargs)
                source = self._source
                self.passes += 1
                offset = 0  # the first pass keeps the file's own clock; later ones continue it
                count = 0
                for frame in source.frames():
                    if count == 0 and last_raw is not None:
                        offset = last_raw + period - frame.pts_raw
                    raw = frame.pts_raw + offset
                    if last_raw is not None and raw <= last_raw:  # never back, never twice
                        raw = last_raw + 1
                    pts = float(raw * time_base)
                    frame.frame_idx, frame.pts_raw, frame.pts = idx, raw, pts
                    frame.capture_ts = self.info.start_ts + pts
                    last_raw = raw
                    idx += 1
                    count += 1
                    yield frame
                self.close()
                if count == 0:
                    raise SourceError(
                        f"{redact_uri(self.uri)}: pass {self.passes} yielded no frame; "
                        "cannot loop over an input without frames"
                    )
                if self.on_pass_end is not None:
                    self.on_pass_end(self.passes, source.end or EndOfStream("eof", count))
        except GeneratorExit:  # the consumer stopped iterating
            self.end = EndOfStream("stopped", idx, f"stopped during pass {self.passes}")
            raise
        finally:
            self.close()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


Source = FileSource | RtspSource | UsbSource | ImageDirSource | LoopingSource


# --- staying connected -----------------------------------------------------------------------


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: attempt ``n`` waits about
    ``min(cap_s, base_s * 2**(n-1))``, times a random factor in ``[1 - jitter, 1]``."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.3

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        # 2**(n-1) overflows a float at n = 1025 (7 h of outage); past 2**62 the cap holds.
        raw = min(self.cap_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))
        return raw * (1.0 - self.jitter * (rng or random).random())


@dataclass
class SourceStatus:
    """A change in a camera's state, told in order with its frames.

    ``kind``: ``online`` (connected, first frame decoded), ``offline`` (lost: ``reason`` is
    ``silent``, ``lost``, ``eof`` or an open failure's reason), ``reconnect`` (about to retry
    after ``delay_s``), ``reset`` (``resolution`` or ``pts_backwards``: downstream per-stream
    state must start over), ``gave_up`` (``max_attempts`` failed opens in a row).
    """

    kind: str
    reason: str = ""
    attempt: int = 0
    detail: str = ""
    info: StreamInfo | None = None
    decoder: str = ""
    delay_s: float = 0.0
    skipped: int = 0


class ResilientSource:
    """Keep a camera connected: open, stream, and on any loss reconnect with backoff.

    Iterating yields :class:`SourceFrame` and :class:`SourceStatus` items in order. Frames get
    a ``frame_idx`` and a ``pts`` that keep increasing across reconnects (``pts`` is rebased so
    that it never goes backwards; a backwards jump is reported as a ``reset``). The attempt
    counter only starts over after a session that stayed up ``stable_s`` seconds, and two opens
    are at least ``min_restart_interval_s`` apart, so a flapping camera is retried at a bounded
    pace. ``should_stop`` is polled between frames and during waits.
    """

    def __init__(
        self,
        uri: str,
        *,
        should_stop: Callable[[], bool],
        open_kwargs: dict[str, Any] | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        stable_s: float = 10.0,
        min_restart_interval_s: float = 1.0,
        opener: Callable[..., Any] | None = None,
    ) -> None:
        self.uri = uri
        self.should_stop = should_stop
        self.open_kwargs = open_kwargs or {}
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.stable_s = stable_s
        self.min_restart_interval_s = min_restart_interval_s
        self._open = opener or open_source
        self._rng = random.Random()
        self.frames_read = 0
        self.sessions = 0

    def __iter__(self) -> Iterator[SourceFrame | SourceStatus]:
        attempt = 0
        size: tuple[int, int] | None = None
        last_pts = -1.0
        offset = 0.0
        last_open = -1e9
        while not self.should_stop():
            wait = self.min_restart_interval_s - (time.monotonic() - last_open)
            if wait > 0 and not self._sleep(wait):
                return
            last_open = time.monotonic()
            try:
                source = self._open(self.uri, **self.open_kwargs)
            except SourceError as exc:
                attempt += 1
                if attempt == 1 and self.sessions == 0:
                    yield SourceStatus("offline", exc.reason, attempt, str(exc))
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    yield SourceStatus("gave_up", exc.reason, attempt, str(exc))
                    return
                delay = self.backoff.delay(attempt, self._rng)
                yield SourceStatus("reconnect", exc.reason, attempt, str(exc), delay_s=delay)
                if not self._sleep(delay):
                    return
                continue
            started = time.monotonic()
            first = True
            session_base: float | None = None
            try:
                for frame in source.frames():
                    h, w = frame.rgb.shape[:2]
                    if first:
                        first = False
                        self.sessions += 1
                        info = source.info
                        info.width, info.height = w, h
                        yield SourceStatus(
                            "online",
                            attempt=attempt,
                            info=info,
                            decoder=getattr(source, "decoder", "software"),
                            skipped=getattr(source, "skipped_before_keyframe", 0),
                        )
                        if size is not None and size != (w, h):
                            yield SourceStatus("reset", "resolution", info=info)
                        size = (w, h)
                        # A new session's clock starts anywhere: continue after the last pts.
                        session_base = frame.pts
                        offset = last_pts + 1.0 / max(info.fps, 1.0) if last_pts >= 0 else 0.0
                    elif size != (w, h):
                        info = source.info
                        info.width, info.height = w, h
                        size = (w, h)
                        yield SourceStatus("reset", "resolution", info=info)
                    pts = offset + frame.pts - (session_base or 0.0)
                    if pts < last_pts:
                        yield SourceStatus(
                            "reset", "pts_backwards", detail=f"{pts:.3f} < {last_pts:.3f}"
                        )
                        offset += last_pts - pts + 1.0 / max(source.info.fps, 1.0)
                        pts = offset + frame.pts - (session_base or 0.0)
                    elif pts == last_pts:
                        pts = last_pts + 1e-3
                    last_pts = pts
                    frame.pts, frame.pts_raw = pts, int(round(pts * 90000))
                    frame.frame_idx = self.frames_read
                    self.frames_read += 1
                    yield frame
                    if self.should_stop():
                        return
            finally:
                source.close()
            if self.should_stop():
                return
            end = source.end or EndOfStream("lost", 0, "")
            if time.monotonic() - started >= self.stable_s:
                attempt = 0
            attempt += 1  # a session that ends (or never delivers a frame) is a failure too
            yield SourceStatus("offline", end.reason, attempt, end.detail)
            if self.max_attempts is not None and attempt >= self.max_attempts:
                yield SourceStatus("gave_up", end.reason, attempt, end.detail)
                return
            delay = self.backoff.delay(attempt, self._rng)
            yield SourceStatus("reconnect", end.reason, attempt, end.detail, delay_s=delay)
            if not self._sleep(delay):
                return

    def _sleep(self, seconds: float) -> bool:
        """Sleep in short steps; False if asked to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.should_stop():
                return False
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return not self.should_stop()


# --- decoder choice and error classification -------------------------------------------------

_REASON_TEXT = {
    "unreachable": "camera unreachable",
    "auth": "authentication failed (check the credentials in the URI)",
    "timeout": "no answer in time",
    "not_found": "stream not found on the server",
    "no_video": "no video stream",
    "unsupported": "unsupported stream",
    "error": "cannot open",
}


def _classify(exc: BaseException) -> str:
    name = type(exc).__name__
    text = f"{name} {_reason(exc)}".lower()
    if "unauthorized" in text or "401" in text or "403" in text or "forbidden" in text:
        return "auth"
    if "notfound" in name.lower() or "404" in text or "not found" in text:
        return "not_found"
    if "refused" in text or "unreachable" in text or "no route" in text or "reset" in text:
        return "unreachable"
    if isinstance(exc, (av.error.ExitError, TimeoutError)) or "timed out" in text:
        return "timeout"
    return "error"


def _hwaccel(decoder: str) -> Any:
    """PyAV hwaccel settings for ``decoder`` (``auto``: CUDA when a device is present)."""
    if decoder == "software" or (decoder == "auto" and not cuda_present()):
        return None
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type="cuda", allow_software_fallback=True)


def _decoder_name(stream: Any) -> str:
    try:
        return "cuda" if stream.codec_context.is_hwaccel else "software"
    except AttributeError:
        return "software"


_CUDA: bool | None = None


def cuda_present() -> bool:
    """Whether a CUDA device can be used (driver loads and reports a device); cached."""
    global _CUDA
    if _CUDA is None:
        _CUDA = False
        if "cuda" in av.codec.hwaccel.hwdevices_available():
            try:
                import ctypes

                lib = ctypes.CDLL("libcuda.so.1")
                count = ctypes.c_int(0)
                _CUDA = lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0
                _CUDA = _CUDA and count.value > 0
            except OSError:
                _CUDA = False
    return _CUDA
