#!/usr/bin/env python
"""Measure the CPU default-detector candidates the way a live camera uses them.

Each candidate runs as the pipeline's detector (:class:`models.detection.Detector`, batch 1,
the stage's own preprocessing and post-processing) on 640x360 RGB frames with random weights
(speed does not depend on the weight values; R-CNN's proposal counts are fixed), with torch
limited to ``--threads`` intra-op threads. Prints a table, then ONE JSON line. Run it twice on a
shared machine: other processes' load lowers every wall-clock figure; ``CPU ms`` (process CPU
time per frame) is much less sensitive to it, and with ``--threads 1`` ``1000 / CPU ms`` is what
one free core delivers.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_default_detector.py --threads 2
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_default_detector.py --threads 1

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_default_detector.py --pipeline \\
        --models ssdlite320_mobilenet_v3_large fasterrcnn_mobilenet_v3_large_320_fpn

``--pipeline`` measures the whole ``vigil process`` instead: CPU time per frame over all its
processes, so ``2000 / CPU ms`` bounds the frames/s 2 free cores can give. The live pipeline's
wall-clock rate: ``scripts/bench_live.py --width 640 --height 360 --fps 30 --model MODEL
--device cpu`` (its ``published_fps``), on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.detection import Detector

CANDIDATES = [
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
]


def measure(model: str, frames: list[np.ndarray], seconds: float, device: str) -> dict:
    """Frames/s of one detector at batch 1 over ``seconds`` (after 3 warm-up frames)."""
    det = Detector(model=model, weights="none", device=device, score_threshold=0.5)
    for f in frames[:3]:
        det([f])
    n, latencies = 0, []
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or n < 5:
        t0 = time.perf_counter()
        det([frames[n % len(frames)]])
        latencies.append(time.perf_counter() - t0)
        n += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "model": model,
        "fps": round(n / elapsed, 2),
        "p50_ms": round(1000 * float(np.median(latencies)), 1),
        "p90_ms": round(1000 * float(np.percentile(latencies, 90)), 1),
        # CPU time a frame costs, all threads together: what other processes' load cannot
        # inflate (much); 1000 / cpu_ms is the frames/s one free core gives (--threads 1).
        "cpu_ms": round(1000 * cpu / n, 1),
        "frames": n,
    }


def pipeline_cpu_ms(model: str, width: int, height: int, frames: tuple[int, int]) -> dict:
    """CPU time per frame of the whole ``vigil process`` (all its processes: decode, infer,
    track, draw, encode annotated.mp4, publish), from two runs of different lengths, so that
    start-up (torch import, model build) cancels out: ``(cpu(long) - cpu(short)) / (long -
    short)``. Torch runs one intra-op thread and OpenMP threads sleep instead of spin-waiting
    (``OMP_WAIT_POLICY=PASSIVE``): spinning would bill idle waits as CPU time per frame."""
    import os
    import resource
    import subprocess
    import tempfile

    import av

    rng = np.random.default_rng(1)
    cpu = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in frames:
            clip = Path(tmp) / f"clip{n}.mp4"
            with av.open(str(clip), "w") as out:
                stream = out.add_stream("libx264", rate=30)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
                for i in range(n):
                    img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
                out.mux(stream.encode(None))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
                   "VIGIL__RUNTIME__TORCH_THREADS": "1"}  # fmt: skip
            subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "process", str(clip), "--out",
                 str(Path(tmp) / f"out{n}"), "--model", model, "--weights", "none",
                 "--device", "cpu", "--no-progress", "--no-journal"],
                check=True, capture_output=True, timeout=1800, env=env,
            )  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    per_frame = (cpu[1] - cpu[0]) / (frames[1] - frames[0])
    return {"model": model, "pipeline_cpu_ms": round(1000 * per_frame, 1),
            "max_fps_2_cores": round(2 / per_frame, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=15.0, help="time per candidate")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=CANDIDATES)
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="instead: CPU time per frame of the whole `vigil process` (writes annotated.mp4)",
    )
    args = parser.parse_args(argv)
    if args.pipeline:
        rows = [pipeline_cpu_ms(m, args.width, args.height, (16, 80)) for m in args.models]
        for r in rows:
            print(f"{r['model']:40s} {r['pipeline_cpu_ms']:8.1f} CPU ms/frame  "
                  f"<= {r['max_fps_2_cores']:5.1f} frames/s on 2 free cores")  # fmt: skip
        print(json.dumps({"size": [args.width, args.height], "pipeline": rows}))
        return 0
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    # Smooth random images (blocky noise upscaled) rather than pure noise: closer to a scene.
    frames = [
        np.kron(
            rng.integers(0, 256, (args.height // 8, args.width // 8, 3), dtype=np.uint8),
            np.ones((8, 8, 1), np.uint8),
        )  # fmt: skip
        for _ in range(8)
    ]
    rows = [measure(m, frames, args.seconds, args.device) for m in args.models]
    print(f"{'model':40s} {'frames/s':>9s} {'p50 ms':>8s} {'p90 ms':>8s} {'CPU ms':>8s}")
    for r in rows:
        print(f"{r['model']:40s} {r['fps']:9.2f} {r['p50_ms']:8.1f} {r['p90_ms']:8.1f} "
              f"{r['cpu_ms']:8.1f}")  # fmt: skip
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(json.dumps({"threads": args.threads, "size": [args.width, args.height],
                      "device": args.device, "loadavg": load, "results": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
