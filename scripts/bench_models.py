#!/usr/bin/env python
"""Benchmark the frame models on each inference backend: images/s at batch 1 and 8.

Each model runs as the pipeline runs it (the stage object: preprocessing on the device,
network on the backend, post-processing / decoding in torch), with random weights, on
synthetic frames. For every model, the baseline is eager fp32 at batch 1 measured in the same
run; ``ratio`` is images/s over that baseline. Prints a table, then ONE JSON line.

    scripts/bench_models.py --device cpu --quick      # < 5 minutes on 2 CPU cores
    scripts/bench_models.py --device cuda             # 1080p frames, + fp16, compile, TensorRT
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models.runtime.accelerate import accelerate_backbone
from models.runtime.options import BackendOptions, backend_status

#: (stage, model, input size) benchmarked; quick keeps the light ones.
MODELS_FULL = [
    ("detect", "fasterrcnn_mobilenet_v3_large_fpn", None),
    ("detect", "fasterrcnn_resnet50_fpn_v2", None),
    ("segment", "deeplabv3_mobilenet_v3_large", 520),
    ("segment", "lraspp_mobilenet_v3_large", 520),
    ("segment", "maskrcnn_resnet50_fpn_v2", None),
    ("pose", "keypointrcnn_resnet50_fpn", None),
    ("pose", "shufflenetv2k16", 641),
]
MODELS_QUICK = [
    ("detect", "fasterrcnn_mobilenet_v3_large_320_fpn", 192),
    ("segment", "lraspp_mobilenet_v3_large", 192),
    ("segment", "deeplabv3_mobilenet_v3_large", 192),
    ("pose", "shufflenetv2k16", 321),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="light models, small frames")
    parser.add_argument("--models", nargs="*", help="only these model names")
    parser.add_argument(
        "--backends", nargs="*", help="only these variants (e.g. eager onnxruntime)"
    )
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("bench_models: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    width, height = (320, 192) if args.quick else ((1920, 1080) if cuda else (1280, 720))
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    models = MODELS_QUICK if args.quick else MODELS_FULL
    if args.models:
        models = [m for m in models if m[1] in args.models] or [
            (_stage_of(n), n, None) for n in args.models
        ]
    variants = _variants(args.device, quick=args.quick)
    if args.backends:
        variants = [v for v in variants if v[0] in args.backends]
    frames = _frames(width, height, max(args.batches))

    rows: list[dict[str, Any]] = []
    for stage, model, size in models:
        baseline = None
        for label, opts in variants:
            try:
                run = _build(stage, model, size, opts)
            except Exception as exc:  # a backend or model unusable here: say so, go on
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                rows.append({"model": model, "backend": label, "error": reason[:160]})
                print(f"  {model} / {label}: skipped ({reason[:120]})", file=sys.stderr)
                continue
            for batch in args.batches:
                ips, p50, p90 = _measure(run, frames[:batch], seconds, cuda)
                if label == "eager" and batch == 1:
                    baseline = ips
                rows.append({"model": model, "stage": stage, "backend": label, "batch": batch,
                             "images_per_s": round(ips, 2), "p50_ms": round(p50, 2),
                             "p90_ms": round(p90, 2),
                             "ratio": round(ips / baseline, 3) if baseline else None})  # fmt: skip
                print(f"  {model} / {label} / b{batch}: {ips:.1f} img/s", file=sys.stderr)

    _table(rows)
    print(json.dumps({"bench": "models", "device": _device_name(args.device),
                      "frame": [width, height], "quick": args.quick,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "baseline": "eager fp32 batch 1, same model, same run",
                      "results": rows}))  # fmt: skip
    return 0


def _variants(device: str, *, quick: bool) -> list[tuple[str, BackendOptions]]:
    status = backend_status(device)
    cuda = torch.device(device).type == "cuda"
    out = [("eager", BackendOptions("eager", device=device))]
    if cuda:
        out.append(("eager-fp16", BackendOptions("eager", device=device, precision="fp16",
                                                 channels_last=True)))  # fmt: skip
        out.append(("eager-fp16-graphs", BackendOptions("eager", device=device, precision="fp16",
                                                        cuda_graphs=True)))  # fmt: skip
    if not quick or cuda:
        out.append(("compile", BackendOptions("compile", device=device,
                                              precision="fp16" if cuda else "fp32")))  # fmt: skip
    if status["onnxruntime"] is None:
        out.append(("onnxruntime", BackendOptions("onnxruntime", device=device)))
    if status["tensorrt"] is None:
        out.append(("tensorrt-fp16", BackendOptions("tensorrt", device=device, precision="fp16")))
    return out


def _build(stage: str, model: str, size: int | None, opts: BackendOptions) -> Callable:
    if stage == "segment":
        from models.segmentation import Segmenter

        return Segmenter(model=model, weights="none", device=opts.device, input_size=size,
                         score_threshold=0.05, backend=opts)  # fmt: skip
    if stage == "pose":
        from models.pose import PoseEstimator

        return PoseEstimator(model=model, weights="none", device=opts.device, input_size=size,
                             backend=opts)  # fmt: skip
    from models.detection import Detector

    det = Detector(model=model, weights="none", device=opts.device, input_size=size,
                   score_threshold=0.05)  # fmt: skip
    example_size = size or 800
    accelerate_backbone(det.model, torch.rand(1, 3, example_size, example_size * 16 // 9),
                        name=model, options=opts)  # fmt: skip
    return det


def _measure(
    run: Callable, frames: list[np.ndarray], seconds: float, cuda: bool
) -> tuple[float, float, float]:
    """images/s, p50 and p90 latency per batch call (ms), after two warm-up calls."""
    for _ in range(2):
        run(frames)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        run(frames)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    arr = np.asarray(times) * 1000.0
    return len(frames) * len(times) / float(np.sum(times)), *np.percentile(arr, [50, 90])


def _frames(width: int, height: int, n: int) -> list[np.ndarray]:
    from stream.synthetic import make_scene, render_frame

    scene = make_scene(0, width=width, height=height, n_people=3)
    return [render_frame(scene, i)[0] for i in range(n)]


def _stage_of(name: str) -> str:
    from models import weights as W

    if name in ("openpifpaf", "shufflenetv2k16", "shufflenetv2k30", "resnet50"):
        return "pose"
    task = W.get(name).task
    return {"segmentation": "segment", "keypoints": "pose"}.get(task, "detect")


def _table(rows: list[dict[str, Any]]) -> None:
    head = ("model", "backend", "batch", "img/s", "p50 ms", "p90 ms", "x eager b1")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append((r["model"], r["backend"], "-", "skipped", "", "", r["error"][:40]))
            continue
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append((r["model"], r["backend"], str(r["batch"]), f"{r['images_per_s']:.1f}",
                      f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", ratio))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(main())
