"""Video sources: decode frames with their provenance, from files, image folders and cameras.

A source yields :class:`SourceFrame` objects: RGB pixels, the 0-based frame index, ``pts`` in
seconds from the container's stream clock, and ``capture_ts`` (UTC Unix seconds). For files,
``capture_ts`` is the container's start time (its ``creation_time`` tag, else the file's
modification time) plus ``pts``, so the same file gives the same timestamps on every run.

This package is the public face; its modules are :mod:`~stream.sources.base` (frames, stream
facts, errors), :mod:`~stream.sources.decoding` (decoder choice, error classification),
:mod:`~stream.sources.file`, :mod:`~stream.sources.images`, :mod:`~stream.sources.live`
(cameras), :mod:`~stream.sources.open` (:func:`open_source`, :class:`LoopingSource`) and
:mod:`~stream.sources.resilient` (reconnecting cameras).
"""

from stream.sources.base import (
    DEFAULT_IMAGE_FPS,
    DEFAULT_MAX_PIXELS,
    EndOfStream,
    SourceError,
    SourceFrame,
    StreamInfo,
)
from stream.sources.decoding import cuda_present
from stream.sources.file import FileSource
from stream.sources.images import IMAGE_SUFFIXES, ImageDirSource
from stream.sources.live import RtspSource, UsbSource
from stream.sources.open import LoopingSource, Source, is_live_uri, open_source, probe_source
from stream.sources.resilient import Backoff, ResilientSource, SourceStatus

__all__ = [
    "DEFAULT_IMAGE_FPS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "Backoff",
    "EndOfStream",
    "FileSource",
    "ImageDirSource",
    "LoopingSource",
    "ResilientSource",
    "RtspSource",
    "Source",
    "SourceError",
    "SourceFrame",
    "SourceStatus",
    "StreamInfo",
    "UsbSource",
    "cuda_present",
    "is_live_uri",
    "open_source",
    "probe_source",
]
