"""Train SimNet (models.simnet) on the synthetic world and write the sim pack weights + metadata.

Examples::

    .venv/bin/python scripts/train_sim.py --seed 0 --minutes 15
    .venv/bin/python scripts/train_sim.py --seed 0 --steps 420          # exact replay of a run
    .venv/bin/python scripts/train_sim.py --frames 200 --steps 20 --out /tmp/simnet.pt  # smoke

Data: ``--frames`` frames from ``stream.sim.datasets.generate`` (seeded backgrounds, 1-6 figures,
0-4 objects, occluder patches, blur / noise / brightness), each placed on a 320x192 canvas with
a random zoom (0.75-1.35, half the time exactly the inference letterbox) and shift. Every step
takes random 192x160 crops (stride-aligned), mirrors half of them (joints swap sides) and
jitters brightness. Training is CPU-bound; ``torch.set_num_threads(--threads)``.

Schedule: AdamW with warm-up then cosine decay over ``--steps`` steps. Without ``--steps`` the
script re-plans the number of steps every 25 steps from the recent pace so that the run fits
``--minutes`` (wall clock, data generation and evaluation included) on a shared, unevenly busy
CPU; the steps taken are written to the metadata. Data, init and batch order are a pure function
of ``--seed``; ``--steps N`` fixes the schedule, so a run with it is exactly reproducible (an
adaptive run's learning-rate curve depends on the machine's pace). Training also stops at
``--minutes`` * 1.3 whatever happens.

Writes ``--out`` (state_dict, float32) and ``--out`` with ``.json`` (classes, input size, seed,
steps, training time, held-out evaluation from scripts/eval_sim.py), then prints the evaluation
JSON line last.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from models.simnet.infer import DEFAULT_WEIGHTS, ENTRY, file_sha256
from models.simnet.net import CLASS_NAMES, DEFAULT_INPUT_SIZE, MASK_STRIDE
from models.simnet.train import encode_targets, flip_targets_input, simnet_loss
from stream.sim.datasets import generate, to_canvas

ROOT = Path(__file__).resolve().parents[1]

CANVAS_WH = (320, 192)
CROP_WH = (160, 192)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data, init and batches")
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget, minutes")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: fit budget)")
    p.add_argument("--frames", type=int, default=2400, help="training frames to render")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="state_dict file to write")
    p.add_argument("--eval-scenes", type=int, default=4, help="held-out scenes to evaluate on")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument(
        "--init", type=Path, default=None, help="start from this simnet state_dict (fine-tune)"
    )
    return p.parse_args(argv)


class CanvasSet:
    """Pre-rendered training frames on the canvas: images, half-res person masks, annotations."""

    def __init__(self, n: int, seed: int) -> None:
        from tqdm import tqdm

        rng = np.random.default_rng([seed, 0xCA5])
        cw, ch = CANVAS_WH
        self.images = np.zeros((n, ch, cw, 3), np.uint8)
        self.masks = np.zeros((n, ch // MASK_STRIDE, cw // MASK_STRIDE), np.uint8)
        self.anns: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        import cv2

        for i, frame in enumerate(tqdm(generate(n, seed=seed), total=n, desc="render", ncols=80)):
            H, W = frame.image.shape[:2]
            base = min(cw / W, ch / H)
            if rng.random() < 0.5:
                zoom, shift = 1.0, (0, 0)
            else:
                zoom = float(np.exp(rng.uniform(math.log(0.75), math.log(1.35))))
                nw, nh = W * base * zoom, H * base * zoom
                shift = (_offset(rng, nw, cw), _offset(rng, nh, ch))
            c = to_canvas(frame, CANVAS_WH, zoom=zoom, shift=shift)
            self.images[i] = c.image
            pm = c.person_mask.astype(np.float32)
            half = cv2.resize(
                pm, (cw // MASK_STRIDE, ch // MASK_STRIDE), interpolation=cv2.INTER_AREA
            )
            self.masks[i] = np.round(half * 255).astype(np.uint8)
            self.anns.append((c.boxes, c.labels, c.keypoints))

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Crops, flips and jitter for samples ``idx``: ``(B, 3, 192, 160)`` floats + targets."""
        cw, ch = CROP_WH
        imgs, targets = [], []
        for i in idx:
            x0 = int(rng.integers(0, (CANVAS_WH[0] - cw) // 4 + 1)) * 4
            img = self.images[i, :, x0 : x0 + cw]
            mask = self.masks[i, :, x0 // MASK_STRIDE : (x0 + cw) // MASK_STRIDE]
            mask = mask.astype(np.float32) / 255.0
            boxes, labels, kps = self.anns[i]
            boxes = boxes.copy()
            boxes[:, 0::2] = (boxes[:, 0::2] - x0).clip(0, cw)
            kps = kps.copy()
            kps[:, :, 0] -= x0
            out = (kps[:, :, 0] < 0) | (kps[:, :, 0] >= cw)
            kps[:, :, 2] = np.where(out, 0, kps[:, :, 2])
            keep = (boxes[:, 2] - boxes[:, 0]) >= 2
            boxes, labels, kps = boxes[keep], labels[keep], kps[keep]
            if rng.random() < 0.5:
                img, boxes, kps, mask = flip_targets_input(img, boxes, kps, mask)
            targets.append(encode_targets(boxes, labels, kps, mask, (ch, cw)))
            gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
            imgs.append(np.clip(img.astype(np.float32) * gain, 0, 255))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).div_(255.0).contiguous()
        t = {k: torch.from_numpy(np.stack([tt[k] for tt in targets])) for k in targets[0]}
        return x, t


def _offset(rng: np.random.Generator, size: float, canvas: int) -> int:
    """Where a ``size``-pixel-wide picture starts on a ``canvas``: inside it, or covering it."""
    slack = canvas - size
    return int(rng.uniform(min(slack, 0), max(slack, 0) + 1e-6))


def lr_at(step: int, total: int, base: float, warmup: int = 40) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 2% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(total - warmup, 1)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = CanvasSet(args.frames, args.seed)
    t_data = time.time() - t_start
    print(f"rendered {len(data)} frames in {t_data:.0f} s", flush=True)

    model = ENTRY.build(seed=args.seed)
    init_meta: dict = {}
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
        init_meta = json.loads(args.init.with_suffix(".json").read_text())
        init_meta.pop("eval", None)
        print(f"starting from {args.init}", flush=True)
    model.train()
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": params_decay, "weight_decay": 1e-4},
            {"params": params_other, "weight_decay": 0},
        ],
        lr=args.lr,
    )
    rng = np.random.default_rng([args.seed, 0xBA7])
    budget_s = args.minutes * 60.0
    total = args.steps
    # Without --steps the planned total is re-estimated every 25 steps from the recent pace, so
    # a machine that gets busier or quieter still ends the cosine schedule on the budget.
    fixed = total is not None
    reserve_s = 0.0 if args.no_eval else 60.0
    step = 0
    t_mark, step_mark = time.time(), 0
    log: dict[str, float] = {}
    from tqdm import tqdm

    bar = tqdm(total=total or 0, desc="train", ncols=110)
    while total is None or step < total:
        if not fixed and step >= 5 and step % 25 in (0, 5) and step != step_mark:
            if step % 25 == 5:  # skip the first steps of each window (noisy) ...
                t_mark, step_mark = time.time(), step
            else:  # ... and plan from the last 20
                per_step = (time.time() - t_mark) / (step - step_mark)
                left = budget_s - (time.time() - t_start) - reserve_s
                total = max(step + 10, step + int(left / per_step))
                bar.total = total
                bar.refresh()
        idx = rng.integers(0, len(data), args.batch_size)
        x, t = data.batch(idx, rng)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total or 10**6, args.lr)
        out = model(x)
        terms = simnet_loss(out, t)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        for k, v in terms.items():
            log[k] = 0.9 * log.get(k, float(v.detach())) + 0.1 * float(v.detach())
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{log['total']:.3f}", heat=f"{log['heat']:.2f}",
                            kp=f"{log['kp_reg']:.3f}", mask=f"{log['mask']:.3f}")  # fmt: skip
        if step % 100 == 0:  # a snapshot to look at while it trains
            torch.save(model.state_dict(), args.out.with_suffix(".partial.pt"))
        if time.time() - t_start > 1.3 * budget_s:
            print(f"\nstopping at step {step}: past 1.3x the {args.minutes} min budget", flush=True)
            break
    bar.close()
    train_s = time.time() - t_start

    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, args.out)
    args.out.with_suffix(".partial.pt").unlink(missing_ok=True)
    meta = {
        "model": "simnet",
        "classes": list(CLASS_NAMES),
        "input_size": DEFAULT_INPUT_SIZE,
        "seed": args.seed,
        "steps": step,
        "planned_steps": total,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "train_frames": args.frames,
        "train_crop_wh": list(CROP_WH),
        "train_seconds": round(train_s, 1),
        "data_seconds": round(t_data, 1),
        "threads": args.threads,
        "final_losses": {k: round(v, 4) for k, v in log.items()},
        "command": f"scripts/train_sim.py --seed {args.seed} --frames {args.frames} "
        f"--steps {step} --batch-size {args.batch_size} --lr {args.lr}"
        + (f" --init {args.init}" if args.init is not None else ""),
        "sha256": file_sha256(args.out),
        "torch": torch.__version__,
    }
    if args.init is not None:  # a second stage: keep the first stage's record
        meta["init"] = {"path": str(args.init), **init_meta}
        meta["total_train_seconds"] = round(train_s + init_meta.get("train_seconds", 0.0), 1)
    meta_path = args.out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {meta['sha256']})")
    if not args.no_eval:
        from eval_sim import evaluate

        figures = evaluate(str(args.out), n_scenes=args.eval_scenes)
        meta["eval"] = figures
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
