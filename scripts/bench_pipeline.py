#!/usr/bin/env python3
"""Benchmark `vigil process` (the multi-process graph) against a naive single-process loop.

Both run on the same video with the same detector in one invocation:

- naive: decode -> detect -> track/forecast -> draw -> encode, one frame at a time, in this
  process (the same work as the graph's stages);
- graph: ``vigil process`` (source, infer, analytics and publish processes, pixels in shared
  memory), per-frame latency from its ``timings.jsonl`` (decode done -> publish done).

Prints a table and ends with one JSON line:
``{"naive_fps":..,"graph_fps":..,"ratio":..,"naive_latency_ms":{"p50":..,"p95":..,"p99":..},
"graph_latency_ms":{...},"frames":..,"model":..,"input_size":..,"cores":..}``.

Example: ``.venv/bin/python scripts/bench_pipeline.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, help="input video (default: synthetic sample)")
    parser.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    parser.add_argument("--weights", default="none", help="auto | none | pretrained | PATH")
    parser.add_argument("--input-size", type=int, default=None, help="detector input size, px")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=8.0, help="synthetic video seconds")
    parser.add_argument("--quick", action="store_true", help="4 s of video")
    args = parser.parse_args()

    from stream.sim.sample import write_sample_video
    from stream.sim.scenes import make_scene

    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    video = args.video
    if video is None:
        video = tmp / "sample.mp4"
        duration = 4.0 if args.quick else args.duration
        write_sample_video(make_scene(seed=0, duration_s=duration), video)
    naive_fps, naive_lat, frames = naive_loop(video, tmp / "naive.mp4", args)
    graph_fps, graph_lat = graph_run(video, tmp / "graph", args)

    def pct(lat: list[float]) -> dict[str, float]:
        a = np.asarray(lat) * 1000
        return {f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)}

    rows = [("naive loop", naive_fps, pct(naive_lat)), ("vigil graph", graph_fps, pct(graph_lat))]
    print(f"{'runner':<12} {'frames/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for name, fps, p in rows:
        print(f"{name:<12} {fps:9.2f} {p['p50']:8.1f} {p['p95']:8.1f} {p['p99']:8.1f}")
    ratio = graph_fps / naive_fps if naive_fps else 0.0
    print(f"graph / naive throughput: {ratio:.2f}x on {os.cpu_count()} cores, {frames} frames")
    print(
        json.dumps(
            {
                "naive_fps": round(naive_fps, 3),
                "graph_fps": round(graph_fps, 3),
                "ratio": round(ratio, 3),
                "naive_latency_ms": pct(naive_lat),
                "graph_latency_ms": pct(graph_lat),
                "frames": frames,
                "model": args.model,
                "input_size": args.input_size,
                "cores": os.cpu_count(),
            }
        )
    )
    return 0


def naive_loop(video: Path, out: Path, args: argparse.Namespace) -> tuple[float, list, int]:
    """Decode -> detect -> track/forecast -> draw -> encode, sequentially, in this process."""
    from models.detection import Detector
    from models.results import FrameResult
    from pipeline.analytics import StreamAnalytics
    from pipeline.annotate import annotate
    from pipeline.config_sections import PeopleConfig
    from stream.sinks import VideoFileSink
    from stream.sources import FileSource

    detector = Detector(
        model=args.model,
        weights=args.weights,
        input_size=args.input_size,
        score_threshold=args.score_threshold,
    )
    src = FileSource(video)
    info = src.info
    sink = VideoFileSink(
        out, width=info.width, height=info.height, fps=info.fps, time_base=Fraction(info.time_base)
    )
    analytics = StreamAnalytics(PeopleConfig().model_dump())
    latencies, n = [], 0
    detector([np.zeros((info.height, info.width, 3), np.uint8)])  # warm-up, as the graph's is
    start = time.perf_counter()
    for frame in src.frames():
        t0 = time.perf_counter()
        det = detector([frame.rgb])[0]
        res = FrameResult(
            "cam1",
            frame.frame_idx,
            frame.pts,
            frame.capture_ts,
            info.width,
            info.height,
            detections=det,
            class_names=detector.class_names,
        )
        analytics.update(res)  # the graph's analytics stage does the same work
        sink.write(annotate(frame.rgb, res), frame.pts_raw)
        latencies.append(time.perf_counter() - t0)
        n += 1
    sink.close()
    return n / (time.perf_counter() - start), latencies, n


def graph_run(video: Path, out: Path, args: argparse.Namespace) -> tuple[float, list]:
    """`vigil process` in a subprocess, measured in steady state.

    The source decodes ahead while the inference process still loads its model, so the first
    ring-full of frames waits for start-up: throughput counts from the first published frame,
    and latency percentiles skip the first 8 frames (the ring's size)."""
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "process",
        str(video),
        "--out",
        str(out),
        "--model",
        args.model,
        "--weights",
        args.weights,
        "--no-progress",
        "--score-threshold",
        str(args.score_threshold),
    ]
    env = {**os.environ, "VIGIL__OUTPUT__TIMINGS": "true"}
    if args.input_size:
        env["VIGIL__DETECT__INPUT_SIZE"] = str(args.input_size)
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    rows = [json.loads(x) for x in (out / "timings.jsonl").read_text().splitlines()]
    published = sorted(r["publish"] for r in rows)
    fps = (len(published) - 1) / (published[-1] - published[0])
    return fps, [r["publish"] - r["decode"] for r in rows[8:]]


if __name__ == "__main__":
    sys.exit(main())
