"""Image folders: :class:`ImageDirSource` plays sorted images as a video at a fixed rate."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from stream.sources.base import (
    DEFAULT_IMAGE_FPS,
    EndOfStream,
    SourceError,
    SourceFrame,
    StreamInfo,
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
