"""Cameras read through PyAV: :class:`RtspSource` (RTSP over TCP) and :class:`UsbSource`
(V4L2), each ending quietly when the camera goes silent or the link breaks.

A camera session never raises after opening: ``frames()`` ends and ``end.reason`` says why;
:class:`~stream.sources.resilient.ResilientSource` reconnects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.redact import redact
from stream.sources.base import EndOfStream, SourceError, SourceFrame, StreamInfo
from stream.sources.decoding import REASON_TEXT, classify_error, decoder_name, error_text, hwaccel


class _PyAVLiveSource:
    """A camera read through PyAV: frames until the camera goes silent or the link breaks.

    Packets before the first keyframe are skipped (counted in ``skipped_before_keyframe``), so
    no half-decoded grey frame ever reaches the models. ``frames()`` never raises for a lost
    camera: it ends and ``end.reason`` says why: ``silent`` (no packet for ``read_timeout_s``),
    ``lost`` (read error), ``eof`` (the camera closed the session).
    """

    live = True

    def _input(
        self, uri: str, *, fps: float | None, read_timeout_s: float
    ) -> tuple[str, str | None, dict[str, str]]:
        """``(what av.open opens, container format or None, its options)`` for ``uri``."""
        raise NotImplementedError

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
        uri, container_format, options = self._input(uri, fps=fps, read_timeout_s=read_timeout_s)
        self.uri = uri
        self.read_timeout_s = read_timeout_s
        self.max_pixels = max_pixels
        self.skipped_before_keyframe = 0
        shown = redact(uri)
        try:
            self._container = av.open(
                uri,
                mode="r",
                format=container_format,
                options=options,
                timeout=(open_timeout_s, read_timeout_s),
                hwaccel=hwaccel(decoder),
            )
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            reason = classify_error(exc)
            raise SourceError(
                f"{shown}: {REASON_TEXT[reason]} ({error_text(exc)})", reason
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{shown}: no video stream", "no_video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "SLICE"  # frame threads would hold frames back (latency)
        self.decoder = decoder_name(self._stream)
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
                "silent", idx, f"no packet for {self.read_timeout_s:g} s ({error_text(exc)})"
            )
            return
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            self.end = EndOfStream("lost", idx, f"read error: {error_text(exc)}")
            return
        self.end = EndOfStream("eof", idx, "the camera closed the stream")

    def close(self) -> None:
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError):
            pass


class RtspSource(_PyAVLiveSource):
    """An RTSP camera over TCP (interleaved RTP), with open and read timeouts in seconds.

    ``fps`` is only the rate assumed when the camera announces none (default 25).
    """

    def _input(
        self, uri: str, *, fps: float | None, read_timeout_s: float
    ) -> tuple[str, str | None, dict[str, str]]:
        options = {
            "rtsp_transport": "tcp",
            "timeout": str(int(read_timeout_s * 1e6)),  # socket I/O timeout, microseconds
            "fflags": "nobuffer",
            "analyzeduration": "1000000",
            "probesize": "500000",
        }
        return uri, None, options


class UsbSource(_PyAVLiveSource):
    """A V4L2 camera (``/dev/videoN`` or ``v4l2:///dev/videoN``) through PyAV's ``v4l2`` input.

    ``fps`` asks the driver for a frame rate (the driver may pick the nearest it supports).
    """

    def _input(
        self, uri: str, *, fps: float | None, read_timeout_s: float
    ) -> tuple[str, str | None, dict[str, str]]:
        device = uri[len("v4l2://") :] if uri.startswith("v4l2://") else uri
        if not device.startswith("/"):
            device = "/" + device
        if not Path(device).exists():
            raise SourceError(f"{device}: no such video device", "unreachable")
        return device, "v4l2", {"framerate": f"{fps:g}"} if fps else {}
