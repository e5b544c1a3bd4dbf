#!/usr/bin/env python3
"""Decode speed: vigil's decode path against ``ffmpeg -threads T -i X -f null -``.

Makes a 1080p H.264 clip (``ffmpeg`` CLI, testsrc2, libx264 with B-frames, ``--frames`` frames)
unless ``--input`` is given, then for each thread count T (``--threads``, default: the cores)
measures, in one run and on the same file:

- ``ffmpeg``: ``ffmpeg -threads T -i X -f null -`` (decode only, no pixel conversion), wall
  clock of the whole command;
- ``pyav decode``: PyAV with frame threading (``thread_type=AUTO``, ``thread_count=T``), frames
  decoded and dropped: what the decoder alone gives through PyAV;
- ``vigil``: :class:`stream.sources.FileSource` ``frames()`` with ``decode_threads=T``: decode,
  presentation-order timestamps and the RGB conversion the models need (what a source stage
  does per frame, minus the shared-memory copy).

Prints a table (frames/s and the ratio to ffmpeg at the same thread count), then one JSON line:
``{"clip": "1920x1080 h264", "frames": N, "runs": [{"threads": T, "ffmpeg_fps": ..,
"pyav_fps": .., "vigil_fps": .., "ratio": vigil/ffmpeg, "ratio_decode": pyav/ffmpeg}, ...]}``.
Each figure is the best of ``--repeat`` runs (default 3), so a busy machine hurts less.

Example: ``PYTHONPATH=$PWD .venv/bin/python scripts/bench_decode.py --threads 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from stream.sources import FileSource


def make_clip(path: Path, frames: int) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
         "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-bf", "3",
         "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=1200,
    )


def time_ffmpeg(path: Path, threads: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", str(threads), "-i", str(path), "-f", "null", "-"],
        check=True, timeout=1200,
    )
    return time.perf_counter() - start


def time_pyav(path: Path, threads: int) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        for _ in container.decode(stream):
            n += 1
    return time.perf_counter() - start, n


def time_vigil(path: Path, threads: int) -> tuple[float, int]:
    start = time.perf_counter()
    source = FileSource(path, decode_threads=threads)
    n = sum(1 for _ in source.frames())
    return time.perf_counter() - start, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, help="a video to decode (default: a 1080p clip)")
    ap.add_argument("--frames", type=int, default=240, help="frames of the generated clip")
    ap.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1])
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-decode-") as tmp:
        clip = args.input or Path(tmp) / "clip1080.mp4"
        if args.input is None:
            make_clip(clip, args.frames)
        with av.open(str(clip)) as c:
            s = c.streams.video[0]
            desc = f"{s.codec_context.width}x{s.codec_context.height} {s.codec_context.name}"
        runs = []
        for t in args.threads:
            ff_s = min(time_ffmpeg(clip, t) for _ in range(args.repeat))
            pyav = [time_pyav(clip, t) for _ in range(args.repeat)]
            vigil = [time_vigil(clip, t) for _ in range(args.repeat)]
            n = vigil[0][1]
            assert all(r[1] == n for r in pyav + vigil), "frame counts differ"
            ff_fps = n / ff_s
            py_fps = n / min(r[0] for r in pyav)
            vg_fps = n / min(r[0] for r in vigil)
            runs.append({"threads": t, "ffmpeg_fps": round(ff_fps, 1), "pyav_fps": round(py_fps, 1),
                         "vigil_fps": round(vg_fps, 1), "ratio": round(vg_fps / ff_fps, 3),
                         "ratio_decode": round(py_fps / ff_fps, 3)})
    print(f"clip: {desc}, {n} frames; best of {args.repeat}")
    print(f"{'threads':>7} {'ffmpeg f/s':>11} {'pyav f/s':>9} {'vigil f/s':>10} "
          f"{'vigil/ffmpeg':>13} {'pyav/ffmpeg':>12}")
    for r in runs:
        print(f"{r['threads']:>7} {r['ffmpeg_fps']:>11} {r['pyav_fps']:>9} {r['vigil_fps']:>10} "
              f"{r['ratio']:>13} {r['ratio_decode']:>12}")
    print(json.dumps({"clip": desc, "frames": n, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
