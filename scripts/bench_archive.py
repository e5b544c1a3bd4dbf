#!/usr/bin/env python3
"""Benchmark batch archives: files/s and frames/s for 1 and N local workers and Ray actors.

One invocation makes a synthetic archive (seeded scenes with walking people, via
``stream.synthetic``), then processes the same archive with each engine into its own output
folder, wall-clock timed from the call to the end (worker start-up and model loading
included, as a user pays them):

- ``local x1``: files one after another in this process (``--workers 1``);
- ``local xN``: N worker processes (``--workers N``);
- ``ray xN``: N Ray actors on a local ``ray.init(num_cpus=N)`` (skipped without Ray).

It checks that every engine wrote the same ``events.jsonl`` bytes as ``local x1``, prints a
table and ends with one JSON line:
``{"files":..,"frames":..,"runs":[{"engine":..,"workers":..,"seconds":..,"files_per_s":..,
"frames_per_s":..,"speedup":..},...],"identical":true,"model":..,"input_size":..,"cores":..}``
(``speedup`` is the ratio to ``local x1`` measured in the same run).

Example: ``.venv/bin/python scripts/bench_archive.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8, help="videos in the archive")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each video")
    parser.add_argument("--size", default="320x192", help="WIDTHxHEIGHT of each video")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="N of the parallel runs")
    parser.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    parser.add_argument("--weights", default="none", help="auto | none | pretrained | PATH")
    parser.add_argument("--input-size", type=int, default=160, help="detector input size, px")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    parser.add_argument("--quick", action="store_true", help="4 clips of 2 s at 160x96")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.seconds, args.size = 4, 2.0, "160x96"
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("libav").setLevel(logging.CRITICAL)

    from pipeline.archive.inputs import expand_inputs
    from pipeline.archive.run import run_archive
    from pipeline.config import load_config
    from stream.synthetic import make_scene, write_sample_video

    width, height = (int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-archive-"))
    src = tmp / "archive"
    src.mkdir()
    for i in range(args.clips):
        scene = make_scene(
            seed=i, width=width, height=height, fps=args.fps, duration_s=args.seconds, n_people=2
        )
        write_sample_video(scene, src / f"clip{i:03d}.mp4")
    base = {
        "detect.model": args.model,
        "detect.weights": args.weights,
        "detect.input_size": args.input_size,
        "detect.device": args.device,
        "runtime.progress": False,
    }
    plans = [("local", 1), ("local", args.workers)]
    ray_note = ""
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            plans.append(("ray", args.workers))
        except ImportError:
            ray_note = "ray: not installed (pip install 'vigil[ray]'), skipped"

    runs = []
    reference: dict[str, bytes] | None = None
    identical = True
    for engine, workers in plans:
        out = tmp / f"out-{engine}-{workers}"
        cfg = load_config(None, {**base, "archive.engine": engine, "archive.workers": workers})
        inputs = expand_inputs([str(src)], out_dir=out)
        t0 = time.perf_counter()
        summary = run_archive(cfg, inputs, out)
        seconds = time.perf_counter() - t0
        events = {
            r["path"]: (out / r["output"] / "events.jsonl").read_bytes()
            for r in summary.records
            if r["output"]
        }
        if reference is None:
            reference = events
        identical &= events == reference and summary.failed == 0
        runs.append(
            {
                "engine": engine,
                "workers": workers,
                "seconds": round(seconds, 2),
                "files": summary.done,
                "frames": summary.frames,
                "files_per_s": round(summary.done / seconds, 3),
                "frames_per_s": round(summary.frames / seconds, 2),
            }
        )
        print(f"  {engine} x{workers}: {seconds:.1f} s", file=sys.stderr, flush=True)
    for run in runs:
        run["speedup"] = round(run["frames_per_s"] / runs[0]["frames_per_s"], 2)

    header = ("engine", "workers", "seconds", "files/s", "frames/s", "speedup")
    rows = [header] + [
        (
            r["engine"],
            str(r["workers"]),
            f"{r['seconds']:.1f}",
            f"{r['files_per_s']:.3f}",
            f"{r['frames_per_s']:.1f}",
            f"{r['speedup']:.2f}x",
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(
        f"archive: {args.clips} clips x {args.seconds:g} s at {args.size}, {args.fps:g} fps; "
        f"{args.model} (weights {args.weights}, input {args.input_size}px) on "
        f"{os.cpu_count()} cores; outputs identical across engines: {identical}"
    )
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    if ray_note:
        print(ray_note)
    print(
        json.dumps(
            {
                "files": args.clips,
                "frames": runs[0]["frames"],
                "runs": runs,
                "identical": identical,
                "model": args.model,
                "input_size": args.input_size,
                "cores": os.cpu_count(),
            }
        )
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
