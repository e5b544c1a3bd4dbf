"""The supervisor: starts the stage processes, watches them, drains on a signal.

It owns the control socket every stage reports to (``ready``/``info``/``progress``/``eos``/
``error``/``done``). A stage's exception arrives with its traceback and ends the run with
:class:`StageFailed`; a stage that dies without a word (killed, segfault) is noticed by its exit
code; a run where no frame finishes for ``runtime.stage_timeout_s`` is declared stalled. On
SIGINT/SIGTERM the sources stop reading, every frame already read is finished and every event
flushed, then the run returns normally (the CLI exits 0).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from pipeline.config import VigilConfig
from pipeline.stages import Endpoints, run_stage
from pipeline.workers import analytics_body, infer_body, publish_body, source_body
from stream import wire

log = logging.getLogger(__name__)


class StageFailed(Exception):
    """A stage raised or died. ``user`` marks errors caused by input or set-up."""

    def __init__(self, stage: str, message: str, traceback: str = "", user: bool = False) -> None:
        super().__init__(f"stage {stage!r} failed: {message}")
        self.stage, self.message, self.traceback, self.user = stage, message, traceback, user


@dataclass
class RunSummary:
    frames: int = 0
    events: int = 0
    seconds: float = 0.0
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    detector: str = ""
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_pipeline(cfg: VigilConfig, *, progress_total: int | None = None) -> RunSummary:
    """Run the graph for ``cfg`` to completion (or until SIGINT/SIGTERM); raises StageFailed."""
    if not cfg.sources:
        raise ValueError("no sources configured")
    cfg.output.dir.mkdir(parents=True, exist_ok=True)
    plain = cfg.model_dump(mode="json")
    n = len(cfg.sources)
    summary = RunSummary()
    with tempfile.TemporaryDirectory(prefix="vigil-") as tmp:
        endpoints = Endpoints.in_dir(Path(tmp))
        spawn = mp.get_context("spawn")
        stop = spawn.Event()
        zctx = zmq.Context()
        control = zctx.socket(zmq.PULL)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(endpoints.control)
        level = logging.getLogger().getEffectiveLevel()
        specs: list[tuple[str, Any, tuple]] = [
            ("publish", publish_body, (plain, n)),
            ("analytics", analytics_body, (plain, n)),
            ("infer", infer_body, (plain, n)),
        ]
        specs += [(f"source:{s['stream_id']}", source_body, (plain, s)) for s in plain["sources"]]
        procs = {}
        for name, body, args in specs:
            proc = spawn.Process(
                target=run_stage,
                name=f"vigil-{name}",
                daemon=True,
                args=(name, _Bound(body, args), endpoints, stop, level),
            )
            proc.start()
            procs[name] = proc
        signals = _SignalFlag()
        bar = _progress_bar(cfg, progress_total)
        start = time.monotonic()
        last_progress = time.monotonic()
        done: set[str] = set()
        rings: list[str] = []
        failed = True
        try:
            while len(done) < len(procs):
                if signals.caught and not stop.is_set():
                    log.warning("%s: finishing the frames in flight, then exiting", signals.caught)
                    summary.interrupted = True
                    stop.set()
                if control.poll(200, zmq.POLLIN):
                    msg, _ = wire.recv(control)
                    kind, stage = msg["kind"], msg["stage"]
                    if kind == "error":
                        raise StageFailed(stage, msg["message"], msg["traceback"], msg["user"])
                    if kind == "done":
                        done.add(stage)
                    elif kind == "ring":
                        rings.append(msg["name"])
                    elif kind == "info" and "detector" in msg:
                        summary.detector = msg["detector"]
                        log.info("detector: %s", msg["detector"])
                    elif kind == "progress":
                        if bar is not None:
                            bar.update(msg["frames"] - summary.frames)
                        summary.frames, summary.events = msg["frames"], msg["events"]
                        last_progress = time.monotonic()
                    elif kind == "eos":
                        summary.streams[msg["stream_id"]] = {
                            k: msg[k] for k in ("reason", "frames_read", "detail")
                        }
                    continue
                for name, proc in procs.items():
                    if name not in done and proc.exitcode is not None:
                        raise StageFailed(
                            name,
                            f"process exited with code {proc.exitcode} without reporting an error",
                        )
                if time.monotonic() - last_progress > cfg.runtime.stage_timeout_s:
                    raise StageFailed(
                        "pipeline",
                        f"stalled: no frame finished in {cfg.runtime.stage_timeout_s:.0f} s",
                    )
            failed = False
        finally:
            summary.seconds = time.monotonic() - start
            if bar is not None:
                bar.close()
            stop.set()
            _join_all(procs, timeout_s=0.0 if failed else 10.0, quiet=failed)
            _unlink_rings(rings)
            signals.restore()
            control.close()
            zctx.term()
    return summary


class _Bound:
    """A picklable ``body(ctx, *args)`` closure for spawn."""

    def __init__(self, body: Any, args: tuple) -> None:
        self.body, self.args = body, args

    def __call__(self, ctx: Any) -> None:
        self.body(ctx, *self.args)


class _SignalFlag:
    def __init__(self) -> None:
        self.caught: str | None = None
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.caught = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _join_all(procs: dict[str, mp.Process], timeout_s: float, quiet: bool = False) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs.values():
        proc.join(max(deadline - time.monotonic(), 0.1))
    for name, proc in procs.items():
        if proc.is_alive():
            if not quiet:
                log.warning("stage %s did not exit in time; killing it", name)
            proc.kill()
            proc.join(5.0)


def _unlink_rings(names: list[str]) -> None:
    """Free the shared memory of sources that were killed before they could free it."""
    from multiprocessing import shared_memory

    for name in names:
        try:
            shared_memory.SharedMemory(name=name).unlink()
        except FileNotFoundError:
            pass


def _progress_bar(cfg: VigilConfig, total: int | None) -> Any:
    if not cfg.runtime.progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="vigil", dynamic_ncols=True, smoothing=0.1)
