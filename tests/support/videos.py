"""Tiny videos made on the fly with PyAV, for tests that need a real file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_moving_box_video(
    path: Path,
    *,
    n_frames: int = 20,
    width: int = 160,
    height: int = 96,
    fps: int = 10,
    codec: str = "libx264",
) -> Path:
    """A tiny video: a red box sliding right over grey, frame i at pts i/fps.

    MP4 files are written with the index first (faststart), as streaming-ready files are, so a
    truncated copy still opens and announces its full frame count."""
    options = {"movflags": "faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 10  # keyframes often, so a cut file still decodes
        for i in range(n_frames):
            img = np.full((height, width, 3), 60, np.uint8)
            x = 5 + i * 3
            img[20:70, x : x + 30] = (200, 40, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path
