"""Write a COCO-format data set (JSON + PNG images) from the synthetic world.

Example::

    .venv/bin/python scripts/make_sim_dataset.py --out /tmp/simcoco --n 200 --seed 0

``--heldout`` renders held-out demo-like scenes without augmentation instead of training frames
(see :mod:`stream.sim.datasets`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.sim.datasets import generate, heldout_scenes, render_annotated, write_coco


def main(argv: list[str] | None = None) -> int:
    """CLI: write a COCO-format synthetic dataset."""
    p = argparse.ArgumentParser(description="Write a COCO-format dataset from the synthetic world.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n", type=int, default=200, help="number of frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", action="store_true", help="held-out demo-like scenes, no aug")
    args = p.parse_args(argv)
    if args.heldout:
        scenes = heldout_scenes(max(1, args.n // 60 + (args.n % 60 > 0)), offset=args.seed * 1000)
        frames = (render_annotated(s, i) for s in scenes for i in range(s.n_frames))
        frames = (f for _, f in zip(range(args.n), frames))
    else:
        frames = generate(args.n, seed=args.seed)
    path = write_coco(frames, args.out)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
