"""The supervisor: starts the stage processes, watches them, drains on a signal.

It owns the control socket every stage reports to (``ready``/``info``/``progress``/``eos``/
``error``/``done``). A stage's exception arrives with its traceback and ends the run with
:class:`StageFailed`; a stage that dies without a word (killed, segfault) is noticed by its exit
code; a run where no frame finishes for ``runtime.stage_timeout_s`` while a source is streaming
is declared stalled (cameras that are down and reconnecting are idle, not stalled). On
SIGINT/SIGTERM or after ``runtime.duration_s`` the sources stop reading, every frame already
read is finished and every event flushed, then the run returns normally (the CLI exits 0).

Each source has its own stop flag, so the control endpoint (:mod:`pipeline.control`) can remove
one stream; it can also start new source processes while the run goes on.
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
from pipeline.stages import Endpoints, dynamic_budget, run_stage
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


def resolve_mode(cfg: VigilConfig) -> str:
    """``runtime.mode`` with ``auto`` decided: live when any source is a camera."""
    from stream.sources import is_live_uri

    if cfg.runtime.mode != "auto":
        return cfg.runtime.mode
    return "live" if any(is_live_uri(s.uri) for s in cfg.sources) else "batch"


def run_pipeline(cfg: VigilConfig, *, progress_total: int | None = None) -> RunSummary:
    """Run the graph for ``cfg`` to completion (or until SIGINT/SIGTERM or
    ``runtime.duration_s``); raises StageFailed.

    Without a control endpoint the run ends when every source has ended. With one
    (``runtime.control``) streams come and go at runtime and the run lasts until a signal or
    ``runtime.duration_s``.
    """
    if not cfg.sources and not cfg.runtime.control:
        raise ValueError("no sources configured")
    cfg.output.dir.mkdir(parents=True, exist_ok=True)
    plain = cfg.model_dump(mode="json")
    plain["runtime"]["mode"] = resolve_mode(cfg)
    with tempfile.TemporaryDirectory(prefix="vigil-") as tmp:
        run = _Run(cfg, plain, Endpoints.in_dir(Path(tmp)), progress_total)
        return run.execute()


class _Run:
    """One run's processes, control sockets and bookkeeping."""

    def __init__(
        self, cfg: VigilConfig, plain: dict[str, Any], endpoints: Endpoints, total: int | None
    ) -> None:
        self.cfg, self.plain, self.endpoints, self.total = cfg, plain, endpoints, total
        self.dynamic = cfg.runtime.control is not None
        self.spawn = mp.get_context("spawn")
        self.stop = self.spawn.Event()
        self.level = logging.getLogger().getEffectiveLevel()
        self.procs: dict[str, Any] = {}
        self.source_stops: dict[str, Any] = {}
        self.source_uris: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.started_streams: list[str] = []
        self.done: set[str] = set()
        self.rings: list[str] = []
        self.summary = RunSummary()
        self.shutdown_sent = False

    # --- processes ----------------------------------------------------------------------

    def _start(self, name: str, body: Any, args: tuple, stop: Any) -> None:
        proc = self.spawn.Process(
            target=run_stage,
            name=f"vigil-{name}",
            daemon=True,
            args=(name, _Bound(body, args), self.endpoints, stop, self.level),
        )
        proc.start()
        self.procs[name] = proc
        self.done.discard(name)

    def _start_source(self, src: dict[str, Any]) -> None:
        sid = src["stream_id"]
        stop = self.spawn.Event()
        if self.stop.is_set():
            stop.set()
        self.source_stops[sid] = stop
        self.source_uris[sid] = src["uri"]
        self.states[sid] = "connecting"
        self.started_streams.append(sid)
        self._start(f"source:{sid}", source_body, (self.plain, src), stop)

    def _request_stop(self) -> None:
        self.stop.set()
        for stop in self.source_stops.values():
            stop.set()

    def _sources_running(self) -> list[str]:
        return [
            sid
            for sid in self.source_stops
            if f"source:{sid}" not in self.done and self.procs[f"source:{sid}"].exitcode is None
        ]

    # --- control endpoint ---------------------------------------------------------------

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (see :mod:`pipeline.control`)."""
        from pydantic import ValidationError

        from pipeline.config import SourceConfig
        from stream.sources import SourceError, probe_source, redact_uri

        op = req.get("op")
        if op == "list":
            running = set(self._sources_running())
            streams = [
                {
                    "stream_id": sid,
                    "uri": redact_uri(self.source_uris[sid]),
                    "state": self.states.get(sid, "connecting"),
                    "running": sid in running,
                }
                for sid in self.source_stops
            ]
            return {"ok": True, "streams": streams}
        if op == "remove":
            sid = req.get("stream_id")
            if sid not in self._sources_running():
                return {"ok": False, "error": f"no running stream {sid!r}"}
            self.source_stops[sid].set()
            return {"ok": True, "stream_id": sid}
        if op == "add":
            if self.stop.is_set():
                return {"ok": False, "error": "vigil is stopping"}
            fields = {k: v for k, v in req.items() if k != "op"}
            fields.setdefault("stream_id", f"cam{len(self.started_streams) + 1}")
            try:
                src = SourceConfig.model_validate(fields)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                return {"ok": False, "error": f"{loc}: {msg}"}
            sid = src.stream_id
            if sid in self._sources_running():
                return {"ok": False, "error": f"stream {sid!r} is already running"}
            if len(self.started_streams) >= self.cfg.runtime.max_streams:
                limit = self.cfg.runtime.max_streams
                return {"ok": False, "error": f"runtime.max_streams ({limit}) reached"}
            try:
                probe_source(src.uri)
            except SourceError as exc:
                return {"ok": False, "error": str(exc)}
            self._start_source(src.model_dump(mode="json"))
            log.info("stream %s added: %s", sid, redact_uri(src.uri))
            return {"ok": True, "stream_id": sid}
        return {"ok": False, "error": f"unknown op {op!r}: expected add, remove or list"}

    # --- the run ------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        cfg, plain, summary = self.cfg, self.plain, self.summary
        n = len(plain["sources"])
        downstream = dynamic_budget(plain) if self.dynamic else n
        zctx = zmq.Context()
        control = zctx.socket(zmq.PULL)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(self.endpoints.control)
        server = None
        if self.dynamic:
            from pipeline.control import ControlServer

            try:
                server = ControlServer(zctx, cfg.runtime.control, self.handle)
            except zmq.ZMQError as exc:
                control.close()
                zctx.term()
                raise StageFailed(
                    "control", f"cannot bind {cfg.runtime.control}: {exc}", user=True
                ) from None
        self._start("publish", publish_body, (plain, downstream), self.stop)
        self._start("analytics", analytics_body, (plain, downstream), self.stop)
        self._start("infer", infer_body, (plain, None if self.dynamic else n), self.stop)
        # Live mode: cameras start once the model is loaded, or their first frames would wait
        # in the ring for the whole model load and open the run with seconds of latency.
        deferred = list(plain["sources"]) if plain["runtime"]["mode"] == "live" else []
        for src in plain["sources"] if not deferred else []:
            self._start_source(src)
        signals = _SignalFlag()
        bar = _progress_bar(cfg, self.total)
        start = time.monotonic()
        last_progress = time.monotonic()
        duration = cfg.runtime.duration_s
        ended_sent: dict[str, int] = {}
        failed = True
        try:
            while len(self.done) < len(self.procs):
                if signals.caught and not self.stop.is_set():
                    log.warning("%s: finishing the frames in flight, then exiting", signals.caught)
                    summary.interrupted = True
                    self._request_stop()
                if duration and not self.stop.is_set() and time.monotonic() - start > duration:
                    log.info("duration of %.1f s reached: draining", duration)
                    self._request_stop()
                if self.dynamic and self.stop.is_set() and not self.shutdown_sent:
                    if not self._sources_running():
                        self._send_shutdown(zctx)
                if server is not None:
                    server.serve(0)
                if control.poll(100, zmq.POLLIN):
                    msg, _ = wire.recv(control)
                    kind, stage = msg["kind"], msg["stage"]
                    if kind == "error":
                        raise StageFailed(stage, msg["message"], msg["traceback"], msg["user"])
                    if kind == "done":
                        self.done.add(stage)
                    elif kind == "ring":
                        self.rings.append(msg["name"])
                    elif kind == "state":
                        if msg["state"] == "streaming":
                            last_progress = time.monotonic()
                        self.states[msg["stream_id"]] = msg["state"]
                        if msg["state"] == "ended":
                            ended_sent[msg["stream_id"]] = msg.get("sent", 0)
                    elif kind == "info" and "detector" in msg:
                        for src in deferred:
                            self._start_source(src)
                        deferred = []
                        summary.detector = msg["detector"]
                        log.info("detector: %s", msg["detector"])
                    elif kind == "progress":
                        if bar is not None:
                            bar.update(msg["frames"] - summary.frames)
                        summary.frames, summary.events = msg["frames"], msg["events"]
                        last_progress = time.monotonic()
                    elif kind == "eos" and msg["stream_id"] is not None:
                        summary.streams[msg["stream_id"]] = {
                            k: msg[k] for k in ("reason", "frames_read", "detail")
                        }
                    continue
                for name, proc in self.procs.items():
                    if name not in self.done and proc.exitcode is not None:
                        raise StageFailed(
                            name,
                            f"process exited with code {proc.exitcode} without reporting an error",
                        )
                # A pipeline with no camera streaming (all reconnecting, or none added) is idle,
                # not stalled; frames still in flight after the last source ended do count.
                active = any(s == "streaming" for s in self.states.values())
                active = active or sum(ended_sent.values()) > summary.frames
                active = active or not self.states
                if active and time.monotonic() - last_progress > cfg.runtime.stage_timeout_s:
                    raise StageFailed(
                        "pipeline",
                        f"stalled: no frame finished in {cfg.runtime.stage_timeout_s:.0f} s",
                    )
                if not active:
                    last_progress = time.monotonic()
            failed = False
        finally:
            summary.seconds = time.monotonic() - start
            if bar is not None:
                bar.close()
            self._request_stop()
            _join_all(self.procs, timeout_s=0.0 if failed else 10.0, quiet=failed)
            _unlink_rings(self.rings)
            signals.restore()
            if server is not None:
                server.close()
            control.close()
            zctx.term()
        return summary

    def _send_shutdown(self, zctx: zmq.Context) -> None:
        """Dynamic runs: tell infer that no stream will come any more (see pipeline.stages)."""
        sock = zctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.SNDTIMEO, 2000)
        sock.connect(self.endpoints.infer)
        try:
            wire.send(
                sock, {"kind": "shutdown", "streams": list(dict.fromkeys(self.started_streams))}
            )
        except zmq.Again:
            log.error("infer stage unreachable; it will end when the supervisor goes")
        sock.close()
        self.shutdown_sent = True


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
