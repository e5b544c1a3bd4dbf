#!/usr/bin/env python3
"""GPU throughput benchmark: N H.264 streams through the whole vigil graph vs a naive loop.

One call, nothing installed at run time. It:

1. generates its own H.264 clips with PyAV (1920x1080 by default, ``--size WxH``);
2. runs ``vigil run`` (the real process graph: one source process per stream, the inference
   process batching across streams, analytics, publish) with 1, 8, 32 and 64 streams
   (``--streams``), each configuration stopped (SIGINT: drain, exit 0) ``--budget-s`` seconds
   after its first published frame; frames/s and capture-to-event latency (p50/p99: the frame's
   decode -> its events published, ``timings.jsonl``) are taken in steady state, from the first
   published frame on; GPU utilisation and memory are sampled with NVML (``pynvml``) or
   ``torch.cuda`` while it runs (null on CPU);
3. runs the naive per-frame loop (decode -> the same models -> track/forecast -> draw, one
   frame at a time, in this process) on the same clips for at most ``--budget-s``;
4. measures per stage and model images/s at batch 1 and batched (decode to host, decode to the
   device, NV12->RGB, and each model on eager, eager fp16 + channels_last, compile and
   TensorRT where they work here; see ``scripts/bench_models.py``).

Prints a table and ends with ONE JSON line: ``{"bench": "gpu", "device", "configs":
[{"streams", "fps", "latency_ms": {"p50", "p99"}, "frames", "dropped", "gpu_util_pct",
"gpu_mem_mib", "naive_fps", "ratio"}...], "naive": {...}, "stage_results": [...], ...}``. A
line with ``"partial": true`` before the per-stage part carries the pipeline figures, should
that part be cut off.

    scripts/bench_gpu.py                                    # on a GPU: 1080p, 1/8/32/64 streams
    scripts/bench_gpu.py --device cpu --size 320x180 --streams 1,2 --budget-s 25
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent

#: Light-model defaults (on CPU everything else would take the whole budget to load and warm).
CPU_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
GPU_MODEL = "fasterrcnn_mobilenet_v3_large_fpn"
#: Model variants of the per-stage table (names from scripts/bench_models.py), by priority.
GPU_VARIANTS = "eager,eager-fp16,tensorrt-fp16,compile,eager-fp16-graphs,onnxruntime"
CPU_VARIANTS = "eager,onnxruntime"  # torch.compile's build alone takes minutes on 2 cores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if any)")
    p.add_argument("--size", default="1920x1080", help="clip size WxH, px")
    p.add_argument("--streams", default="1,8,32,64", help="stream counts, comma-separated")
    p.add_argument("--budget-s", type=float, default=60.0, help="seconds per configuration")
    p.add_argument("--clip-s", type=float, default=10.0, help="clip length, s (looped)")
    p.add_argument("--fps", type=int, default=30, help="clip frame rate")
    p.add_argument("--clips", type=int, default=4, help="distinct clips (streams share them)")
    p.add_argument("--mode", choices=("live", "batch"), default="live",
                   help="live: each stream paced as a camera, latest frame wins; batch: every "
                   "frame, as fast as the graph goes")  # fmt: skip
    p.add_argument("--stages", choices=("detect", "full"), default=None,
                   help="detect only, or detect + pose + segmentation every 3rd frame "
                   "(default: full on CUDA, detect on CPU)")  # fmt: skip
    p.add_argument("--model", default=None, help="detector (default: light one for the device)")
    p.add_argument("--backend", default="eager", help="eager | compile | onnxruntime | tensorrt")
    p.add_argument("--precision", default=None, help="fp32 | fp16 (default: fp16 on CUDA)")
    p.add_argument("--batch-size", type=int, default=None, help="inference batch (default: auto)")
    p.add_argument("--video", action="store_true", help="also write annotated videos")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage/model table")
    p.add_argument("--stage-seconds", type=float, default=None, help="time per stage measure")
    p.add_argument("--stages-budget-s", type=float, default=240.0,
                   help="all per-stage/model measures together stop after this (models share "
                   "it equally; variants in --variants order)")  # fmt: skip
    p.add_argument("--variants", default=None,
                   help="model variants to measure, in priority order, of those that work here "
                   f"(default: {GPU_VARIANTS} on CUDA, {CPU_VARIANTS} on CPU)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="keep run folders and logs here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("bench_gpu: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    streams = [int(s) for s in args.streams.split(",") if s.strip()]
    stages = args.stages or ("full" if cuda else "detect")
    model = args.model or (GPU_MODEL if cuda else CPU_MODEL)
    precision = args.precision or ("fp16" if cuda else "fp32")
    work = args.out or Path(tempfile.mkdtemp(prefix="vigil-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    n_clips = max(1, min(args.clips, max(streams)))
    clips = make_clips(work / "clips", n_clips, width, height, args.clip_s, args.fps)
    log(f"{n_clips} clips of {width}x{height}, {args.clip_s:g} s at {args.fps} fps "
        f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    cfg = base_config(args, device, model, stages, precision)

    naive = None if args.no_naive else naive_loop(clips, cfg, device, args.budget_s, args.video)
    if naive:
        log(f"naive loop: {naive['fps']:.1f} frames/s over {naive['frames']} frames")
    configs = []
    for n in streams:
        res = graph_run(clips, n, cfg, work / f"graph{n}", args, cuda)
        if naive and naive["fps"] and res.get("fps"):
            res["naive_fps"] = naive["fps"]
            res["ratio"] = round(res["fps"] / naive["fps"], 2)
        else:
            res["naive_fps"], res["ratio"] = (naive or {}).get("fps"), None
        configs.append(res)
        log(f"{n} streams: {res.get('fps')} frames/s, p99 {res['latency_ms'].get('p99')} ms")
    # The pipeline figures first, in case the per-model table runs out of time.
    print(json.dumps({"bench": "gpu", "partial": True, "device": device_name(device),
                      "configs": configs, "naive": naive}), flush=True)  # fmt: skip
    stage_rows = [] if args.no_stages else stage_bench(clips[0], cfg, device, args)

    print_table(configs, naive, stage_rows)
    summary = {
        "bench": "gpu",
        "device": device_name(device),
        "torch": torch.__version__,
        "clip": [width, height, args.fps],
        "mode": args.mode,
        "stages": stages,
        "model": model,
        "backend": f"{args.backend}/{precision}",
        "video": args.video,
        "budget_s": args.budget_s,
        "cores": os.cpu_count(),
        "configs": configs,
        "naive": naive,
        "stage_results": stage_rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))
    return 0


def log(msg: str) -> None:
    print(f"bench_gpu: {msg}", file=sys.stderr, flush=True)


# --- clips ---------------------------------------------------------------------------------


def make_clips(
    folder: Path, n: int, width: int, height: int, seconds: float, fps: int
) -> list[Path]:
    """``n`` H.264 clips of moving coloured boxes over a gradient; GOP of 1 s, like a camera."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    frames = max(2, int(round(seconds * fps)))
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 200 // width, yy * 200 // height,
                           np.full_like(xx, 90)], -1).astype(np.uint8)  # fmt: skip
    out: list[Path] = []
    for k in range(n):
        path = folder / f"clip{k}.mp4"
        out.append(path)
        if path.is_file():
            continue
        rng = np.random.default_rng(k)
        boxes = rng.uniform(0.05, 0.6, (4, 4))  # x, y, vx, vy as fractions of the frame
        with av.open(str(path), "w") as container:
            s = container.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            s.codec_context.gop_size = fps
            s.options = {"preset": "veryfast", "tune": "zerolatency"}
            s.thread_type = "AUTO"
            for i in range(frames):
                img = background.copy()
                for j, (x, y, vx, vy) in enumerate(boxes):
                    cx = int(((x + vx * i / frames) % 0.8) * width)
                    cy = int(((y + vy * i / frames) % 0.7) * height)
                    bw, bh = max(4, width // 10), max(8, height // 4)
                    img[cy : cy + bh, cx : cx + bw] = ((60 * j + 40) % 256, 200 - 40 * j, 30 * j)
                container.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            container.mux(s.encode(None))
    return out


# --- configuration -----------------------------------------------------------------------------


def base_config(
    args: argparse.Namespace, device: str, model: str, stages: str, precision: str
) -> dict[str, Any]:
    """The sections the graph and the naive loop share (models, backend, people)."""
    cuda = device.startswith("cuda")
    cfg: dict[str, Any] = {
        "detect": {"model": model, "weights": "none", "device": device},
        "backend": {
            "name": args.backend,
            "precision": precision,
            "channels_last": cuda,
            "cuda_graphs": False,  # detector inputs vary in batch size: graphs would recapture
        },
        "people": {"enabled": True, "forecast": True},
    }
    if stages == "full":
        cfg["segment"] = {"enabled": True, "model": "lraspp_mobilenet_v3_large",
                          "weights": "none", "input_size": 520, "stride": 3}  # fmt: skip
        cfg["pose"] = {"enabled": True, "model": "shufflenetv2k16", "weights": "none",
                       "fallback": "keypointrcnn_resnet50_fpn"}  # fmt: skip
    return cfg


def graph_config(
    clips: list[Path], n: int, base: dict[str, Any], out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    cfg = json.loads(json.dumps(base))
    cfg["sources"] = [
        {"uri": str(clips[i % len(clips)]), "stream_id": f"cam{i + 1}", "loop": True,
         "decoder": "auto"}
        for i in range(n)
    ]  # fmt: skip
    batch = args.batch_size or int(min(64, max(4, n)))
    cfg["detect"].update({"batch_size": batch, "batch_wait_ms": 5.0})
    cfg["output"] = {"dir": str(out), "video": bool(args.video), "events_file": True,
                     "timings": True}  # fmt: skip
    # The bench stops the run (SIGINT) once --budget-s of frames are measured; duration_s is
    # only a safety net should the bench itself die.
    safety = startup_limit_s(n) + float(args.budget_s) + 60.0
    cfg["runtime"] = {"mode": args.mode, "duration_s": safety, "max_streams": max(16, n),
                      # 64 x 8 slots of 1080p RGB would be 3.2 GB of /dev/shm: fewer per stream
                      "ring_slots": 8 if n <= 8 else 4}  # fmt: skip
    return cfg


# --- the graph -------------------------------------------------------------------------------


def graph_run(
    clips: list[Path],
    n: int,
    base: dict[str, Any],
    out: Path,
    args: argparse.Namespace,
    cuda: bool,
) -> dict[str, Any]:
    """``vigil run`` with ``n`` looping sources for ``--budget-s``; steady-state figures."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    cfg = graph_config(clips, n, base, out, args)
    cfg_path = out / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(cfg_path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    monitor = GpuMonitor(base["detect"]["device"]) if cuda else None
    started = time.perf_counter()
    timings = out / "timings.jsonl"
    first_frame: float | None = None
    note = None
    with open(out / "vigil.log", "w") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
        if monitor:
            monitor.start()
        try:
            # The budget is the measured window: it starts at the first published frame, so a
            # slow model load (or a busy machine) does not eat it. SIGINT drains and exits 0.
            while proc.poll() is None:
                now = time.perf_counter()
                if first_frame is None and timings.is_file() and timings.stat().st_size > 0:
                    first_frame = now
                    log(f"{n} streams: first frame after {now - started:.1f} s")
                if first_frame is not None and now - first_frame >= args.budget_s:
                    proc.send_signal(signal.SIGINT)
                    break
                if first_frame is None and now - started > startup_limit_s(n):
                    note = f"no frame within {startup_limit_s(n):.0f} s of start"
                    proc.send_signal(signal.SIGINT)
                    break
                time.sleep(0.2)
            rc = _wait(proc, timeout=60.0 + n)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if monitor:
                monitor.stop()
    wall = time.perf_counter() - started
    res: dict[str, Any] = {"streams": n, "rc": rc, "wall_s": round(wall, 1),
                           "startup_s": round(first_frame - started, 1) if first_frame else None}
    if note:
        res["note"] = note
    res.update(timing_stats(out / "timings.jsonl"))
    res.update(dropped_stats(out / "events.jsonl"))
    res.update(monitor.summary() if monitor else {"gpu_util_pct": None, "gpu_mem_mib": None})
    if rc != 0:
        tail = (out / "vigil.log").read_text(errors="replace").strip().splitlines()[-3:]
        res["error"] = " | ".join(tail)[-300:]
        log(f"{n} streams: vigil exited {rc}: {res['error']}")
    return res


def startup_limit_s(n: int) -> float:
    """How long ``n`` streams may take to publish their first frame (processes start, models
    load, CUDA initialises) before the configuration is given up."""
    return 180.0 + 2.0 * n


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for the drain; terminate, then kill, a run that does not exit in time."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=30)


def timing_stats(path: Path, warmup_s: float = 2.0) -> dict[str, Any]:
    """frames/s and capture-to-event latency from ``timings.jsonl``, in steady state.

    Frames published in the first ``warmup_s`` after the first published frame are left out
    (the ring filled while the model loaded), and so is the last second (the drain)."""
    if not path.is_file():
        return {"fps": None, "frames": 0, "latency_ms": {}}
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    rows = [r for r in rows if "publish" in r]
    if len(rows) < 2:
        return {"fps": None, "frames": len(rows), "latency_ms": {}}
    pub = np.array([r["publish"] for r in rows])
    first, last = pub.min(), pub.max()
    lo = first + min(warmup_s, (last - first) / 3)
    hi = last - min(1.0, (last - first) / 3)
    steady = [r for r in rows if lo <= r["publish"] <= hi]
    if len(steady) < 2:
        steady = rows
    t = np.array([r["publish"] for r in steady])
    fps = (len(t) - 1) / (t.max() - t.min()) if t.max() > t.min() else None
    begin = "capture" if "capture" in steady[0] else "decode"
    lat = np.array([r["publish"] - r[begin] for r in steady if begin in r]) * 1000.0
    pct = {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 99)} if len(lat) else {}
    return {"fps": round(float(fps), 2) if fps else None, "frames": len(rows),
            "steady_frames": len(steady), "latency_ms": pct}  # fmt: skip


def dropped_stats(path: Path) -> dict[str, Any]:
    """Frames dropped in live mode (``frame.dropped`` totals, last per stream) and read."""
    if not path.is_file():
        return {"dropped": None}
    total: dict[str, int] = {}
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("type") == "frame.dropped":
            total[e["stream"]] = max(total.get(e["stream"], 0), int(e.get("total", 0)))
    return {"dropped": sum(total.values())}


class GpuMonitor:
    """Samples GPU utilisation (%) and used memory (MiB) every ``interval_s`` in a thread.

    NVML (``pynvml``, from nvidia-ml-py) sees every process on the device (the inference
    stage is another process); without it, ``torch.cuda.mem_get_info`` gives device-wide used
    memory and utilisation stays null."""

    def __init__(self, device: str, interval_s: float = 0.5) -> None:
        import torch

        self.index = torch.device(device).index or 0
        self.interval_s = interval_s
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.index))
        except Exception as exc:  # noqa: BLE001 - optional: fall back to torch.cuda
            log(f"NVML unavailable ({type(exc).__name__}: {exc}); GPU memory from torch.cuda")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import torch

        while not self._stop.wait(self.interval_s):
            try:
                if self._nvml:
                    nv, h = self._nvml
                    self.util.append(float(nv.nvmlDeviceGetUtilizationRates(h).gpu))
                    self.mem.append(nv.nvmlDeviceGetMemoryInfo(h).used / 2**20)
                else:
                    free, total = torch.cuda.mem_get_info(self.index)
                    self.mem.append((total - free) / 2**20)
            except Exception as exc:  # noqa: BLE001 - a failed sample is skipped, not fatal
                log(f"GPU sample failed: {exc}")

    def summary(self) -> dict[str, Any]:
        util = round(float(np.mean(self.util)), 1) if self.util else None
        return {"gpu_util_pct": util,
                "gpu_util_p90_pct": round(float(np.percentile(self.util, 90)), 1)
                if self.util else None,
                "gpu_mem_mib": round(float(max(self.mem)), 0) if self.mem else None}  # fmt: skip


# --- the naive loop ----------------------------------------------------------------------------


def naive_loop(
    clips: list[Path], cfg: dict[str, Any], device: str, budget_s: float, video: bool
) -> dict[str, Any]:
    """Decode -> models -> track/forecast -> draw (-> encode with ``video``), one frame at a
    time in this process, over the clips in turn, for at most ``budget_s`` seconds."""
    import torch

    from models.perception.build import build_perceiver_from_config, perceive
    from models.results import FrameResult
    from pipeline.analytics import StreamAnalytics
    from pipeline.annotate import annotate
    from pipeline.config import VigilConfig
    from pipeline.config_sections import PeopleConfig
    from stream.sinks import VideoFileSink
    from stream.sources import FileSource

    perceiver = build_perceiver_from_config(VigilConfig.model_validate(cfg), device=device)
    people = PeopleConfig(**cfg.get("people", {})).model_dump()
    analytics = StreamAnalytics(people)
    latencies: list[float] = []
    n = 0
    warm = FileSource(clips[0])
    perceive(perceiver, [np.zeros((warm.info.height, warm.info.width, 3), np.uint8)], ["warm"])
    warm.close()
    start = time.perf_counter()
    deadline = start + budget_s
    k = 0
    while time.perf_counter() < deadline:
        clip = clips[k % len(clips)]
        sid = f"cam{k % len(clips) + 1}"
        src = FileSource(clip)
        info = src.info
        sink = None
        if video:
            sink = VideoFileSink(Path(tempfile.mkdtemp()) / "naive.mp4", width=info.width,
                                 height=info.height, fps=info.fps,
                                 time_base=Fraction(info.time_base))  # fmt: skip
        try:
            for frame in src.frames():
                t0 = time.perf_counter()
                det, poses, masks = perceive(perceiver, [frame.rgb], [sid])[0]
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                res = FrameResult(sid, frame.frame_idx, frame.pts, frame.capture_ts, info.width,
                                  info.height, detections=det, poses=poses, masks=masks,
                                  class_names=tuple(perceiver.class_names))  # fmt: skip
                analytics.update(res)
                drawn = annotate(frame.rgb, res)
                if sink is not None:
                    sink.write(drawn, frame.pts_raw)
                latencies.append(time.perf_counter() - t0)
                n += 1
                if time.perf_counter() >= deadline:
                    break
        finally:
            src.close()
            if sink is not None:
                sink.close()
        k += 1
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000.0
    return {"fps": round(n / elapsed, 2) if elapsed else None, "frames": n,
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 99)}
            if n else {}}  # fmt: skip


# --- per stage and model -----------------------------------------------------------------------


def stage_bench(
    clip: Path, cfg: dict[str, Any], device: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """images/s per stage: decoding (host / device), NV12->RGB, and each configured model on
    every backend variant that works here, at batch 1 and batched."""
    import torch

    cuda = device.startswith("cuda")
    seconds = args.stage_seconds or (3.0 if cuda else 1.0)
    rows: list[dict[str, Any]] = []
    rows += decode_rows(clip, device, seconds)
    rows += convert_rows(clip, device, seconds)
    try:
        import bench_models as bm
    except ImportError as exc:  # pragma: no cover - shipped beside this script
        log(f"bench_models not importable ({exc}); no model rows")
        return rows
    models = [("detect", cfg["detect"]["model"], None)]
    if cfg.get("segment", {}).get("enabled"):
        models.append(("segment", cfg["segment"]["model"], cfg["segment"].get("input_size")))
    if cfg.get("pose", {}).get("enabled"):
        models.append(("pose", cfg["pose"]["model"], cfg["pose"].get("input_size")))
    frames = _clip_frames(clip, 8)
    batch = 8
    available = dict(bm._variants(device, quick=False))
    wanted = [v.strip() for v in (args.variants or (GPU_VARIANTS if cuda else CPU_VARIANTS))
              .split(",") if v.strip()]  # fmt: skip
    variants = [(v, available[v]) for v in wanted if v in available]
    per_model_s = args.stages_budget_s / max(1, len(models))
    for stage, model, size in models:
        model_start = time.perf_counter()
        for label, opts in variants:
            if time.perf_counter() - model_start > per_model_s:
                rows.append({"stage": stage, "model": model, "variant": label,
                             "error": f"not run: --stages-budget-s ({per_model_s:.0f} s/model)"})
                continue
            # A variant (torch.compile's first call, a TensorRT build) may take minutes: it
            # gets what is left of its model's share, at least 15 s, then is cut off.
            limit = max(15.0, per_model_s - (time.perf_counter() - model_start))
            try:
                with _time_limit(limit):
                    got, model = _variant_rows(bm, stage, model, size, label, opts, frames,
                                               batch, seconds, cuda, cfg)  # fmt: skip
                rows += got
            except _VariantTimeout:
                rows.append({"stage": stage, "model": model, "variant": label,
                             "error": f"cut off after {limit:.0f} s (--stages-budget-s)"})
            if cuda:
                torch.cuda.empty_cache()
    return rows


class _VariantTimeout(BaseException):
    """A model variant ran past its share of ``--stages-budget-s`` (a BaseException, so the
    ``except Exception`` around builds and library code cannot swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_VariantTimeout` in this (main) thread after ``seconds`` (SIGALRM)."""

    def expire(signum: int, frame: Any) -> None:
        raise _VariantTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _variant_rows(
    bm: Any, stage: str, model: str, size: int | None, label: str, opts: Any,
    frames: list[np.ndarray], batch: int, seconds: float, cuda: bool, cfg: dict[str, Any],
) -> tuple[list[dict[str, Any]], str]:
    """Build one model on one variant and measure it at batch 1 and ``batch``; returns the rows
    and the model actually measured (the pose fallback when OpenPifPaf is missing)."""
    rows: list[dict[str, Any]] = []
    try:
        run = bm._build(stage, model, size, opts)
    except Exception as exc:  # noqa: BLE001 - a backend unusable here: say so, go on
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        fallback = cfg.get("pose", {}).get("fallback") if stage == "pose" else None
        if not fallback:
            return [{"stage": stage, "model": model, "variant": label, "error": reason}], model
        try:  # the graph falls back too: measure what it would run
            run = bm._build(stage, fallback, None, opts)
            model = fallback
        except Exception as exc2:  # noqa: BLE001
            reason = (str(exc2).strip().splitlines() or [type(exc2).__name__])[0][:160]
            return [{"stage": stage, "model": model, "variant": label, "error": reason}], model
    for b in (1, batch):
        try:
            ips, p50, _ = bm._measure(run, frames[:b], seconds, cuda)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at this batch
            rows.append({"stage": stage, "model": model, "variant": label, "batch": b,
                         "error": (str(exc).strip().splitlines() or ["?"])[0][:160]})
            continue
        rows.append({"stage": stage, "model": model, "variant": label, "batch": b,
                     "images_per_s": round(ips, 1), "p50_ms": round(p50, 2)})
    return rows, model


def decode_rows(clip: Path, device: str, seconds: float) -> list[dict[str, Any]]:
    """Decode frames/s: PyAV software to host RGB, and :class:`DeviceDecoder` per backend."""
    from stream.gpu_decode import CUDA_BACKENDS, DeviceDecoder

    rows = []

    def timed(label: str, it_factory: Any) -> None:
        n, start = 0, time.perf_counter()
        try:
            while time.perf_counter() - start < seconds:
                for _ in it_factory():
                    n += 1
                    if time.perf_counter() - start >= seconds:
                        break
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            rows.append({"stage": "decode", "model": label, "variant": "-", "batch": 1,
                         "images_per_s": round(n / (time.perf_counter() - start), 1)})
        except Exception as exc:  # noqa: BLE001 - that decoder does not work here
            rows.append({"stage": "decode", "model": label, "variant": "-",
                         "error": (str(exc).strip().splitlines() or ["?"])[0][:160]})

    def host_rgb() -> Any:
        from stream.sources import FileSource

        src = FileSource(clip)
        try:
            yield from (f.rgb for f in src.frames())
        finally:
            src.close()

    timed("pyav software -> host rgb", host_rgb)
    backends = ["software"] + (list(CUDA_BACKENDS) if device.startswith("cuda") else [])
    for b in backends:
        timed(f"{b} -> {device} rgb", lambda b=b: DeviceDecoder(clip, device=device, backend=b))
    return rows


def convert_rows(clip: Path, device: str, seconds: float) -> list[dict[str, Any]]:
    """NV12 -> RGB (+ resize to half size) images/s at batch 1 and 8 on ``device``."""
    import av
    import torch

    from models.gpu_ops import nv12_to_rgb

    with av.open(str(clip)) as c:
        f = next(c.decode(video=0)).reformat(format="nv12")
        y = torch.from_dlpack(f.planes[0].__dlpack__()).contiguous()
        uv = torch.from_dlpack(f.planes[1].__dlpack__()).contiguous()
    rows = []
    for b in (1, 8):
        yb, uvb = y.expand(b, *y.shape).to(device), uv.expand(b, *uv.shape).to(device)
        size = (y.shape[0] // 2, y.shape[1] // 2)
        nv12_to_rgb(yb, uvb, size=size)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2 or n < 3:
            nv12_to_rgb(yb, uvb, size=size)
            n += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append({"stage": "nv12->rgb+resize", "model": "models.gpu_ops", "variant": "-",
                     "batch": b, "images_per_s": round(n * b / (time.perf_counter() - start), 1)})
    return rows


def _clip_frames(clip: Path, n: int) -> list[np.ndarray]:
    from stream.sources import FileSource

    src = FileSource(clip)
    out = []
    try:
        for f in src.frames():
            out.append(f.rgb)
            if len(out) == n:
                break
    finally:
        src.close()
    return out


# --- output ------------------------------------------------------------------------------------


def print_table(
    configs: list[dict[str, Any]], naive: dict[str, Any] | None, stages: list[dict[str, Any]]
) -> None:
    head = ("streams", "frames/s", "p50 ms", "p99 ms", "dropped", "GPU %", "GPU MiB",
            "naive f/s", "ratio")  # fmt: skip
    lines = [head]
    for c in configs:
        lat = c.get("latency_ms") or {}
        lines.append(tuple(_fmt(v) for v in (
            c["streams"], c.get("fps"), lat.get("p50"), lat.get("p99"), c.get("dropped"),
            c.get("gpu_util_pct"), c.get("gpu_mem_mib"), c.get("naive_fps"), c.get("ratio"))))
    _print_rows(lines)
    if naive:
        lat = naive["latency_ms"]
        print(f"naive loop: {_fmt(naive['fps'])} frames/s, p50 {_fmt(lat.get('p50'))} ms, "
              f"p99 {_fmt(lat.get('p99'))} ms")  # fmt: skip
    if stages:
        print()
        rows = [("stage", "model", "variant", "batch", "img/s")]
        for r in stages:
            rows.append((r["stage"], r["model"], r["variant"], _fmt(r.get("batch")),
                         _fmt(r.get("images_per_s")) if "error" not in r
                         else "skipped: " + r["error"][:50]))  # fmt: skip
        _print_rows(rows)


def _print_rows(lines: list[tuple]) -> None:
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def device_name(device: str) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":
    sys.exit(main())
