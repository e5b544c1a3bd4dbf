#!/usr/bin/env python
"""Live-mode latency benchmark: feed a stream faster than the pipeline can process it.

A camera is played in real time into ``vigil process --mode live`` (a synthetic file at
``--fps``, or with ``--rtsp`` the GStreamer test camera), per-frame capture-to-publish latency is
read from ``timings.jsonl``, and a table prints p50/p99 latency and the drop rate per time window
of the run. The p99 must not grow with run length (``p99_growth`` = last window's p99 / first's).
With ``--baseline`` the same input also runs in batch mode (every frame, blocking
backpressure), whose latency grows without bound, for comparison. Last line: one JSON object.

It uses a helper under ``tests/``, so it runs as a module from the checkout root:

    .venv/bin/python -m scripts.bench_live [--seconds 30] [--fps 60] [--rtsp] [--baseline]
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="run length, s")
    p.add_argument("--fps", type=int, default=60, help="camera frame rate")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--window", type=float, default=5.0, help="table window, s")
    p.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    p.add_argument("--device", default="auto")
    p.add_argument("--rtsp", action="store_true", help="read the GStreamer RTSP test camera")
    p.add_argument("--baseline", action="store_true", help="also run batch mode on the file")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        tmp_path = Path(tmp)
        server = None
        if args.rtsp:
            from stream.sim.camera import RtspTestServer, missing_requirements

            missing = missing_requirements()
            if missing:
                sys.exit(f"bench_live: {missing}")
            server = RtspTestServer(width=args.width, height=args.height, fps=args.fps).start()
            uri, extra = server.url, ["--duration", str(args.seconds)]
        else:
            from tests.support.videos import write_moving_box_video

            n = int(args.seconds * args.fps)
            uri = str(
                write_moving_box_video(
                    tmp_path / "camera.mp4",
                    n_frames=n,
                    width=args.width,
                    height=args.height,
                    fps=args.fps,
                )
            )
            extra = []
        try:
            live = run(uri, tmp_path / "live", "live", args, extra)
        finally:
            if server is not None:
                server.stop()
        base = (
            run(uri, tmp_path / "batch", "batch", args, [])
            if args.baseline and not args.rtsp
            else None
        )

    print(f"\nlive mode, {args.fps} fps input, {args.model} on {args.device}")
    print(f"{'window s':>10} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8} {'drop %':>7}")
    for w in live["windows"]:
        print(
            f"{w['t0']:>4.0f}-{w['t1']:<5.0f} {w['frames']:>7} {w['p50_ms']:>8.0f} "
            f"{w['p99_ms']:>8.0f} {100 * w['drop_rate']:>7.1f}"
        )
    result = {
        "bench": "live",
        "input_fps": args.fps,
        "seconds": args.seconds,
        "size": [args.width, args.height],
        "model": args.model,
        "source": "rtsp" if args.rtsp else "file-realtime",
        "published_fps": live["published_fps"],
        "p50_ms": live["p50_ms"],
        "p99_ms": live["p99_ms"],
        "drop_rate": live["drop_rate"],
        "p99_first_window_ms": live["windows"][0]["p99_ms"] if live["windows"] else None,
        "p99_last_window_ms": live["windows"][-1]["p99_ms"] if live["windows"] else None,
        "p99_growth": live["p99_growth"],
        "windows": live["windows"],
    }
    if base is not None:
        print(f"batch baseline: p50 {base['p50_ms']:.0f} ms, p99 {base['p99_ms']:.0f} ms")
        result["batch_p99_ms"] = base["p99_ms"]
        result["batch_p99_growth"] = base["p99_growth"]
        result["p99_ratio_live_to_batch"] = round(live["p99_ms"] / max(base["p99_ms"], 1e-9), 4)
    print(json.dumps(result, separators=(",", ":")))


def run(uri: str, out: Path, mode: str, args: argparse.Namespace, extra: list[str]) -> dict:
    env = {**os.environ, "VIGIL__OUTPUT__TIMINGS": "true", "VIGIL__PEOPLE__FORECAST": "false"}
    cmd = [
        sys.executable, "-m", "pipeline.cli", "process", uri, "--out", str(out), "--mode", mode,
        "--model", args.model, "--weights", "none", "--device", args.device, "--no-video",
        "--no-progress", *extra,
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench_live: vigil failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "timings.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    drops = [e for e in events if e["type"] == "frame.dropped"]
    cap = np.array([r["capture"] for r in rows])
    lat = np.array([r["publish"] - r["capture"] for r in rows]) * 1000
    start = cap.min() if len(cap) else 0.0
    windows = []
    t = 0.0
    while len(cap) and start + t <= cap.max():
        sel = (cap >= start + t) & (cap < start + t + args.window)
        in_win = [d for d in drops if start + t <= _ts(d) < start + t + args.window]
        dropped = sum(d["count"] for d in in_win)
        if sel.any():
            windows.append(
                {
                    "t0": t,
                    "t1": t + args.window,
                    "frames": int(sel.sum()),
                    "p50_ms": round(float(np.percentile(lat[sel], 50)), 1),
                    "p99_ms": round(float(np.percentile(lat[sel], 99)), 1),
                    "drop_rate": round(dropped / max(dropped + int(sel.sum()), 1), 4),
                }
            )
        t += args.window
    total_drop = drops[-1]["total"] if drops else 0
    growth = windows[-1]["p99_ms"] / max(windows[0]["p99_ms"], 1e-9) if len(windows) > 1 else 1.0
    return {
        "wall_s": time.monotonic() - t0,
        "published_fps": round(len(rows) / max(cap.max() - cap.min(), 1e-9), 2) if len(cap) else 0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "drop_rate": round(total_drop / max(total_drop + len(rows), 1), 4),
        "p99_growth": round(growth, 3),
        "windows": windows,
    }


def _ts(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    main()
