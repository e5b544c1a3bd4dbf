"""Render a deterministic synthetic sample video (H.264 MP4) and its ground-truth JSON.

Example::

    python scripts/make_sample.py sample.mp4 --gt sample.gt.json --seed 0 --people 3

The same arguments always give the same frames and ground truth (see stream/sim/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, render the video and write the ground truth; returns 0."""
    parser = argparse.ArgumentParser(
        description="Render a deterministic synthetic video (people acting out scripted "
        "actions, plus a few objects) with exact ground truth: boxes, COCO-17 keypoints, "
        "actions.",
    )
    parser.add_argument("out", type=Path, help="output video path, e.g. sample.mp4")
    parser.add_argument(
        "--gt", type=Path, default=None, help="ground-truth JSON path (default: OUT.gt.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--width", type=int, default=640, help="frame width, even (default 640)")
    parser.add_argument("--height", type=int, default=360, help="frame height, even (default 360)")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds (default 8)")
    parser.add_argument("--people", type=int, default=3, help="number of people (default 3)")
    parser.add_argument("--objects", type=int, default=2, help="non-person objects (default 2)")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality, lower = better (18)")
    args = parser.parse_args(argv)

    gt_path = args.gt if args.gt is not None else args.out.with_suffix(".gt.json")
    scene = make_scene(
        args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        duration_s=args.duration,
        n_people=args.people,
        n_objects=args.objects,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gt_path.parent.mkdir(parents=True, exist_ok=True)
    write_sample_video(scene, args.out, gt_path, crf=args.crf, progress=True)
    print(f"wrote {args.out} ({scene.n_frames} frames) and {gt_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
