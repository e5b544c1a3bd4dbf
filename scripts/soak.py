#!/usr/bin/env python
"""Soak test: run vigil for minutes on a looping file and watch its resources for leaks.

Runs ``vigil process SAMPLE --loop --mode live --duration S --no-video --out OUT`` as a
subprocess (SAMPLE: the synthetic demo sample, made once under the vigil cache, or ``--input``)
and every ``--interval`` seconds samples, with psutil, the vigil process and all its children:
resident memory (RSS, summed), open file descriptors (summed), threads (summed) and the number
of child processes. One progress line per sample; at the end a table (first, last, min, max,
least-squares slope per hour after the ``--warmup-s`` warm-up, which skips model loading and
first allocations) and ONE JSON line:

    {"minutes", "samples", "rss_mb_start", "rss_mb_end", "rss_slope_mb_per_h",
     "rss_slope_mb_per_h_second_half", "fds_slope_per_h", "threads_slope_per_h", "frames",
     "exit_code", ...}

Slopes are fitted on the samples from the warm-up to the end of ``--minutes`` (after it vigil
drains and its processes exit); ``rss_mb_start`` is the first of them (the first sample when
there is none) and slopes are null with fewer than two. ``frames`` is what vigil's
closing line reports (``vigil: N frames in ...``). RSS is summed over processes, so pages they
share (libraries, the frame rings) count once per process: compare slopes, not the level.

vigil stops itself after ``--duration``; Ctrl-C (or SIGTERM) forwards SIGTERM to it and waits
up to ``--stop-timeout-s`` for the drain before killing its process group. Exit status: 0 if
vigil exited 0, 1 if it failed (its last log lines are printed), 130 if interrupted.

    .venv/bin/python scripts/soak.py [--minutes 10] [--interval 5] [--warmup-s 60]
        [--input VIDEO] [--out DIR] [--http [HOST:]PORT] [--model M] [-- VIGIL_ARGS...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

METRICS = ("rss_mb", "fds", "threads", "children")
FRAMES_LINE = re.compile(r"^vigil: (\d+) frames in ", re.MULTILINE)


@dataclass
class Sample:
    """One look at the process tree, ``t`` seconds after vigil started."""

    t: float
    rss_mb: float
    fds: int
    threads: int
    children: int


# --- the maths ------------------------------------------------------------------------------


def least_squares_slope(ts: Sequence[float], ys: Sequence[float]) -> float | None:
    """Slope of the least-squares line through ``(ts[i], ys[i])``, in y per unit of t.

    None with fewer than two points or when every t is the same (no line to fit)."""
    n = len(ts)
    if n != len(ys):
        raise ValueError(f"{n} times but {len(ys)} values")
    if n < 2:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var <= 0:
        return None
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var


def fit_window(
    samples: Sequence[Sample], warmup_s: float, end_s: float | None = None
) -> list[Sample]:
    """The samples slopes are fitted on: from ``warmup_s`` (model loading is over) to ``end_s``
    (vigil's ``--duration``: after it, vigil drains and its processes exit one by one)."""
    return [s for s in samples if s.t >= warmup_s and (end_s is None or s.t <= end_s)]


def summarize(
    samples: Sequence[Sample], warmup_s: float, end_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """Per metric: first, last, min, max (all samples) and ``slope_per_h`` (fit window)."""
    fit = fit_window(samples, warmup_s, end_s)
    out: dict[str, dict[str, Any]] = {}
    for name in METRICS:
        values = [getattr(s, name) for s in samples]
        slope = least_squares_slope([s.t for s in fit], [getattr(s, name) for s in fit])
        out[name] = {
            "first": values[0] if values else None,
            "last": values[-1] if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "slope_per_h": None if slope is None else slope * 3600.0,
        }
    return out


def second_half_slope(window: Sequence[Sample], name: str) -> float | None:
    """Slope per hour of ``name`` over the later half (in time) of the fit window."""
    if len(window) < 4:
        return None
    middle = (window[0].t + window[-1].t) / 2
    late = [s for s in window if s.t >= middle]
    slope = least_squares_slope([s.t for s in late], [getattr(s, name) for s in late])
    return None if slope is None else slope * 3600.0


def result_line(
    samples: Sequence[Sample],
    warmup_s: float,
    minutes: float,
    frames: int | None,
    exit_code: int | None,
    **extra: Any,
) -> dict[str, Any]:
    """The final JSON object (see the module docstring); the fit window ends at ``minutes``."""
    end_s = minutes * 60.0
    stats = summarize(samples, warmup_s, end_s)
    window = fit_window(samples, warmup_s, end_s)
    fit = window or list(samples)

    def r(x: float | None, nd: int = 3) -> float | None:
        return None if x is None or not math.isfinite(x) else round(x, nd)

    return {
        "minutes": minutes,
        "samples": len(samples),
        "samples_fit": len(window),
        "warmup_s": warmup_s,
        "rss_mb_start": r(fit[0].rss_mb) if fit else None,
        "rss_mb_end": r(samples[-1].rss_mb) if samples else None,
        "rss_mb_max": r(stats["rss_mb"]["max"]),
        "rss_slope_mb_per_h": r(stats["rss_mb"]["slope_per_h"]),
        # The second half of the fit window alone: allocator and buffer warm-up growth has
        # settled there, so a leak shows as a slope that stays, warm-up as one that goes.
        "rss_slope_mb_per_h_second_half": r(second_half_slope(window, "rss_mb")),
        "fds_start": fit[0].fds if fit else None,
        "fds_end": samples[-1].fds if samples else None,
        "fds_slope_per_h": r(stats["fds"]["slope_per_h"]),
        "threads_start": fit[0].threads if fit else None,
        "threads_end": samples[-1].threads if samples else None,
        "threads_slope_per_h": r(stats["threads"]["slope_per_h"]),
        "children_max": stats["children"]["max"],
        "frames": frames,
        "exit_code": exit_code,
        **extra,
    }


def format_table(stats: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table of :func:`summarize`'s output."""

    def cell(x: Any) -> str:
        if x is None:
            return "-"
        return f"{x:.1f}" if isinstance(x, float) else str(x)

    rows = [f"{'metric':<10} {'first':>10} {'last':>10} {'min':>10} {'max':>10} {'slope/h':>10}"]
    for name, st in stats.items():
        cells = [cell(st[k]) for k in ("first", "last", "min", "max", "slope_per_h")]
        rows.append(f"{name:<10} " + " ".join(f"{c:>10}" for c in cells))
    return "\n".join(rows)


def frames_reported(stderr_text: str) -> int | None:
    """Frames processed, from vigil's closing line ``vigil: N frames in S s ...``."""
    found = FRAMES_LINE.findall(stderr_text)
    return int(found[-1]) if found else None


# --- sampling the process tree --------------------------------------------------------------


def sample_tree(pid: int, t: float) -> Sample | None:
    """RSS, fds and threads summed over ``pid`` and all its descendants; None once it is gone.

    A child that exits between listing and reading is skipped, not an error."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    rss = fds = threads = alive = 0
    for proc in procs:
        try:
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                rss += proc.memory_info().rss
                fds += proc.num_fds()
                threads += proc.num_threads()
                alive += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    if alive == 0:
        return None
    return Sample(round(t, 2), rss / 2**20, fds, threads, alive - 1)


def http_ok(address: str | None) -> bool | None:
    """With ``--http``: whether vigil's ``/healthz`` answers 200 within 2 s (None: not asked)."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    url = f"http://{host or '127.0.0.1'}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as reply:
            return reply.status == 200
    except OSError:
        return False


# --- the run --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(
        prog="soak.py",
        description=__doc__.rsplit("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after `--` go to `vigil process` as they are (e.g. -- --weights none).",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between samples (default 5)"
    )
    p.add_argument(
        "--warmup-s",
        type=float,
        default=60.0,
        help="fit slopes on samples after this many seconds (skips model loading; default 60)",
    )
    p.add_argument("--input", type=Path, help="video to loop (default: the synthetic demo sample)")
    p.add_argument("--out", type=Path, help="vigil's output folder (default: a temporary one)")
    p.add_argument("--http", metavar="[HOST:]PORT", help="also serve vigil's HTTP endpoints")
    p.add_argument("--model", help="detector (default: vigil's default config)")
    p.add_argument("--weights", help="auto | pretrained | none | PATH (default: vigil's)")
    p.add_argument("--device", help="auto | cpu | cuda (default: vigil's)")
    p.add_argument(
        "--stop-timeout-s",
        type=float,
        default=60.0,
        help="on Ctrl-C, how long to wait for vigil to drain before killing it (default 60)",
    )
    p.add_argument(
        "--grace-s",
        type=float,
        default=180.0,
        help="vigil still running this long after its --duration is hung: stop it and fail "
        "(covers start-up, model loading and the drain; default 180)",
    )
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or args.warmup_s < 0:
        p.error("--minutes and --interval must be positive and --warmup-s not negative")
    args.vigil_args = extra
    return args


def vigil_command(args: argparse.Namespace, video: Path, out: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "pipeline.cli", "process", str(video), "--loop", "--mode", "live",
        "--duration", f"{args.minutes * 60:g}", "--no-video", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    for flag in ("http", "model", "weights", "device"):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag}", str(value)]
    return cmd + list(args.vigil_args)


def default_sample() -> Path:
    from models.weights import cache_dir
    from stream.sim.sample import demo_sample

    return demo_sample(cache_dir() / "sample")[0]


class _Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Interrupted


def stop(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM vigil (it drains and exits), then kill its whole process group if it does not
    exit within ``timeout_s``, or at once on a second Ctrl-C / SIGTERM."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
        return
    except subprocess.TimeoutExpired:
        print(f"soak: vigil still running {timeout_s:g} s after SIGTERM; killing it", flush=True)
    except (KeyboardInterrupt, _Interrupted):
        print("soak: interrupted again; killing vigil", flush=True)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: vigil and all its children
    except ProcessLookupError:
        pass
    proc.wait(10)


def run(args: argparse.Namespace) -> int:
    video = args.input or default_sample()
    if not video.is_file():
        sys.exit(f"soak: no such video: {video}")
    with tempfile.TemporaryDirectory(prefix="vigil-soak-") as tmp:
        out = args.out or Path(tmp) / "out"
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "vigil.log"
        cmd = vigil_command(args, video, out)
        print("soak: " + " ".join(cmd), flush=True)
        samples: list[Sample] = []
        http_fail = 0
        interrupted = overran = False
        old = signal.signal(signal.SIGTERM, _on_sigterm)
        with open(log_path, "w") as log:
            # Its own session: a Ctrl-C reaches only this script, which stops vigil once.
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            start = time.monotonic()
            deadline = start + args.minutes * 60 + args.grace_s
            try:
                next_at = start
                while proc.poll() is None:
                    now = time.monotonic()
                    if now > deadline:
                        overran = True
                        print(
                            f"soak: vigil still running {args.grace_s:g} s after its --duration; "
                            "stopping it",
                            flush=True,
                        )
                        break
                    if now < next_at:
                        time.sleep(min(next_at - now, 0.2))
                        continue
                    next_at += args.interval
                    sample = sample_tree(proc.pid, now - start)
                    if sample is None:
                        continue
                    samples.append(sample)
                    ok = http_ok(args.http)
                    http_fail += ok is False and sample.t >= args.warmup_s  # not while starting
                    print(
                        f"[{sample.t:7.1f} s] rss {sample.rss_mb:8.1f} MB  fds {sample.fds:5d}  "
                        f"threads {sample.threads:4d}  children {sample.children:2d}"
                        + ("" if ok is None else f"  http {'ok' if ok else 'FAIL'}"),
                        flush=True,
                    )
            except (KeyboardInterrupt, _Interrupted):
                interrupted = True
                print("soak: interrupted; stopping vigil (SIGTERM)", flush=True)
            finally:
                stop(proc, args.stop_timeout_s)
                signal.signal(signal.SIGTERM, old)
        text = log_path.read_text(errors="replace")
    code = proc.returncode
    if (code != 0 or overran) and not interrupted:
        tail = "\n".join(text.splitlines()[-20:])
        why = "hung" if overran else f"failed (exit {code})"
        print(f"soak: vigil {why}; its last lines:\n{tail}", flush=True)
    if samples:
        print()
        end_s = args.minutes * 60
        print(format_table(summarize(samples, args.warmup_s, end_s)))
        print(f"(slopes over the samples from {args.warmup_s:g} s to {end_s:g} s; rss in MB)")
    extra: dict[str, Any] = {"interrupted": interrupted, "overran": overran}
    if args.http:
        extra["http_failures"] = http_fail
    line = result_line(samples, args.warmup_s, args.minutes, frames_reported(text), code, **extra)
    print(json.dumps(line, separators=(",", ":")), flush=True)
    if interrupted:
        return 130
    return 0 if code == 0 and not overran else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
