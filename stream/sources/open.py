"""Opening a source by URI (:func:`open_source`), telling cameras from files
(:func:`is_live_uri`), failing fast on a bad input (:func:`probe_source`), and playing a file
or folder over and over (:class:`LoopingSource`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from stream.redact import redact
from stream.sources.base import (
    DEFAULT_IMAGE_FPS,
    DEFAULT_MAX_PIXELS,
    EndOfStream,
    SourceError,
    SourceFrame,
)
from stream.sources.file import FileSource
from stream.sources.images import ImageDirSource
from stream.sources.live import RtspSource, UsbSource


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
        raise SourceError(f"unsupported source scheme {scheme!r} in {redact(uri)}")
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
            raise SourceError(f"{redact(uri)}: no host in RTSP URI")
        return None
    source = open_source(uri, max_pixels=max_pixels)
    try:
        return source.info.frame_count
    finally:
        source.close()


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
                        f"{redact(self.uri)}: pass {self.passes} yielded no frame; "
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
