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

Every stage sends a ``stats`` report (its metrics, :mod:`pipeline.metrics`) about once a second,
which is also its heartbeat. In live mode a stage that crashes, dies or stops reporting for
``runtime.stage_timeout_s`` is restarted with exponential backoff, up to ``runtime.max_restarts``
times (:mod:`pipeline.graph.restarts`): the restart is published as a ``stage.restart`` event,
and once the new process reports, the sources take back the ring slots of frames the dead one
held. Batch runs fail instead (a lost frame would be a silent gap in a lossless output). With
``runtime.http`` the supervisor also serves the viewer, metrics and health (:mod:`pipeline.http`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from pipeline.config import VigilConfig
from pipeline.graph.process import (
    SignalFlag,
    StageFailed,
    StageSpec,
    join_all,
    run_stage,
    unlink_rings,
)
from pipeline.graph.readiness import Readiness
from pipeline.graph.restarts import Restarts
from pipeline.graph.streams import StreamControl
from pipeline.logs import stream_logger
from pipeline.metrics import RunMetrics
from pipeline.protocol import (
    SHUTDOWN_PUSH_MS,
    Endpoints,
    Kind,
    dynamic_budget,
    set_options,
)
from stream import wire

log = logging.getLogger(__name__)

#: The stages, named (``module:Class``) rather than imported: the supervisor imports no model
#: or decoder code; each stage's process imports its own (:class:`StageSpec`).
SOURCE = "pipeline.stages.source:SourceStage"
INFER = "pipeline.stages.infer:InferStage"
ANALYTICS = "pipeline.stages.analytics:AnalyticsStage"
PUBLISH = "pipeline.stages.publish:PublishStage"


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
    from pipeline.access import check_exposure

    if not cfg.sources and not cfg.runtime.control:
        raise ValueError("no sources configured")
    check_exposure(cfg)  # ExposureError: an endpoint beyond loopback without CURVE or token
    cfg.output.dir.mkdir(parents=True, exist_ok=True)
    plain = cfg.model_dump(mode="json")
    plain["runtime"]["mode"] = resolve_mode(cfg)
    with tempfile.TemporaryDirectory(prefix="vigil-") as tmp:
        run = GraphRun(cfg, plain, Endpoints.in_dir(Path(tmp)), progress_total)
        return run.execute()


class GraphRun(StreamControl, Readiness, Restarts):
    """One run's processes, control sockets and bookkeeping.

    The stages' reports are dispatched through :attr:`handlers` (``kind`` -> method); stream
    control comes from :class:`~pipeline.graph.streams.StreamControl`, readiness and stall
    checks from :class:`~pipeline.graph.readiness.Readiness`.
    """

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
        self._exited_at: dict[str, float] = {}  # stage -> when its exit was first seen
        self.rings: list[str] = []
        self.summary = RunSummary()
        self.shutdown_sent = False
        # Restarts (see _crashed): live runs restart a crashed or hung stage with backoff.
        limit = cfg.runtime.max_restarts
        self.max_restarts = (
            limit if limit is not None else (5 if plain["runtime"]["mode"] == "live" else 0)
        )
        self.stage_classes: dict[str, str] = {}
        self.restarts: dict[str, int] = {}
        self.pending_restart: dict[str, float] = {}
        self.awaiting_up: set[str] = set()
        self.started_at: dict[str, float] = {}
        self.last_report: dict[str, float] = {}
        self.stats_seen: set[str] = set()
        self.stream_infos: dict[str, dict[str, Any]] = {}
        self.eos_reports = 0
        self.frames_base = self.events_base = 0
        self.n_downstream = 0
        self.model_loaded = False
        self.metrics = RunMetrics()
        self.loop_ts = time.monotonic()
        self.started = time.monotonic()
        self.status: dict[str, Any] = {
            "ready": False,
            "reasons": ["starting"],
            "streams": [],
            "stages": [],
            "uptime_s": 0.0,
        }
        self._fps: dict[str, deque[tuple[float, float]]] = {}
        self._last_frame: dict[str, float] = {}
        self._socks: dict[str, zmq.Socket] = {}
        self.zctx: zmq.Context | None = None
        self.last_progress = time.monotonic()
        self.ended_sent: dict[str, int] = {}  # stream -> frames its source sent
        self.deferred: list[dict[str, Any]] = []  # live: sources started once the model is up
        self.bar: Any = None
        self.handlers = {
            Kind.ERROR: self._on_error,
            Kind.DONE: self._on_done,
            Kind.STATS: self._on_stats,
            Kind.RING: self._on_ring,
            Kind.OPEN: self._on_open,
            Kind.STATE: self._on_state,
            Kind.INFO: self._on_info,
            Kind.PROGRESS: self._on_progress,
            Kind.EOS: self._on_eos,
            Kind.FEED: self._on_feed,
        }

    # --- processes ----------------------------------------------------------------------

    def _start(self, name: str, stage: str, args: tuple, stop: Any) -> None:
        self.stage_classes[name] = stage
        proc = self.spawn.Process(
            target=run_stage,
            name=f"vigil-{name}",
            daemon=True,
            args=(name, StageSpec(stage, self.plain, args), self.endpoints, stop, self.level),
        )
        proc.start()
        self.procs[name] = proc
        self._exited_at.pop(name, None)  # a restarted stage gets a fresh grace
        self.done.discard(name)
        self.last_report[name] = self.started_at[name] = time.monotonic()

    def _start_source(self, src: dict[str, Any]) -> None:
        sid = src["stream_id"]
        stop = self.spawn.Event()
        if self.stop.is_set():
            stop.set()
        self.source_stops[sid] = stop
        self.source_uris[sid] = src["uri"]
        self.states[sid] = "connecting"
        self.started_streams.append(sid)
        self._start(f"source:{sid}", SOURCE, (src,), stop)

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

    # --- the run ------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        cfg, plain, summary = self.cfg, self.plain, self.summary
        n = len(plain["sources"])
        downstream = dynamic_budget(cfg.runtime) if self.dynamic else n
        self.n_downstream = downstream
        zctx = self.zctx = zmq.Context()
        control = set_options(zctx.socket(zmq.PULL), linger_ms=0)
        control.bind(self.endpoints.control)
        server = http = None
        try:
            server = self._open_control(zctx) if self.dynamic else None
        except BaseException:
            control.close()
            zctx.destroy(linger=0)
            raise
        self._start("publish", PUBLISH, (downstream,), self.stop)
        self._start("analytics", ANALYTICS, (downstream,), self.stop)
        self._start("infer", INFER, (None if self.dynamic else n,), self.stop)
        # Live mode: cameras start once the model is loaded, or their first frames would wait
        # in the ring for the whole model load and open the run with seconds of latency.
        self.deferred = list(plain["sources"]) if plain["runtime"]["mode"] == "live" else []
        for src in plain["sources"] if not self.deferred else []:
            self._start_source(src)
        signals = SignalFlag()
        self.bar = _progress_bar(cfg, self.total)
        start = time.monotonic()
        self.last_progress = time.monotonic()
        next_check = 0.0
        duration = cfg.runtime.duration_s
        failed = True
        try:
            if cfg.runtime.http:  # once the stages exist: /api/status lists them from its start
                http = self._open_http(zctx)
                self._refresh_status()
            while len(self.done) < len(self.procs):
                now = self.loop_ts = time.monotonic()
                if signals.caught and not self.stop.is_set():
                    log.warning("%s: finishing the frames in flight, then exiting", signals.caught)
                    summary.interrupted = True
                    self._request_stop()
                if duration and not self.stop.is_set() and now - start > duration:
                    log.info("duration of %.1f s reached: draining", duration)
                    self._request_stop()
                if self.dynamic and self.stop.is_set() and not self.shutdown_sent:
                    if not self._sources_running():
                        self._send_shutdown(zctx)
                if server is not None:
                    _serve_some(server)
                self._due_restarts()
                if control.poll(100, zmq.POLLIN):
                    self._dispatch(wire.recv(control)[0])
                    if time.monotonic() < next_check:
                        continue
                next_check = time.monotonic() + 0.2
                self._check_stages()
                self._check_stall()
                if http is not None:
                    self._refresh_status()
            failed = False
        finally:
            summary.seconds = time.monotonic() - start
            if self.bar is not None:
                self.bar.close()
            self._request_stop()
            join_all(self.procs, timeout_s=0.0 if failed else 10.0, quiet=failed)
            unlink_rings(self.rings)
            signals.restore()
            if http is not None:
                http.close()
                http.tap.close()
            if server is not None:
                server.close()
            control.close()
            for sock in self._socks.values():
                sock.close(linger=0)
            from stream.zsocket import release_authenticator

            release_authenticator(zctx)
            zctx.destroy(linger=0)
        return summary

    def _open_control(self, zctx: zmq.Context) -> Any:
        """The control endpoint's server (``runtime.control``); StageFailed if it cannot bind."""
        from pipeline.control import ControlServer
        from stream.zsocket import CurveServerKeys

        cfg = self.cfg
        try:
            return ControlServer(
                zctx,
                cfg.runtime.control,
                self.handle,
                max_message_bytes=cfg.runtime.control_max_message_bytes,
                curve=CurveServerKeys.load(
                    cfg.publish.curve_secret_key_file, cfg.publish.curve_clients_dir
                ),
            )
        except (zmq.ZMQError, OSError, ValueError) as exc:
            raise StageFailed(
                "control", f"cannot bind {cfg.runtime.control}: {exc}", user=True
            ) from None

    # --- reports (stage -> supervisor), one handler per kind ----------------------------

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, stage = msg["kind"], msg["stage"]
        self.last_report[stage] = time.monotonic()
        if stage in self.awaiting_up:  # a restarted stage is up
            self.awaiting_up.discard(stage)
            self._reclaim_slots()
        handler = self.handlers.get(kind)
        if handler is None:
            log.warning("stage %s: unknown report %r ignored", stage, kind)
            return
        handler(stage, msg)

    def _on_error(self, stage: str, msg: dict[str, Any]) -> None:
        self._crashed(stage, "crashed", msg["message"], msg["traceback"], msg["user"])

    def _on_done(self, stage: str, msg: dict[str, Any]) -> None:
        self.done.add(stage)

    def _on_stats(self, stage: str, msg: dict[str, Any]) -> None:
        if stage not in self.pending_restart:
            # (a dead process's last report, still queued, would count it twice)
            self.stats_seen.add(stage)
            self.metrics.update(stage, msg)

    def _on_ring(self, stage: str, msg: dict[str, Any]) -> None:
        self.rings.append(msg["name"])

    def _on_open(self, stage: str, msg: dict[str, Any]) -> None:
        self.stream_infos[msg["stream_id"]] = msg["info"]

    def _on_state(self, stage: str, msg: dict[str, Any]) -> None:
        if msg["state"] == "streaming":
            self.last_progress = time.monotonic()
        self.states[msg["stream_id"]] = msg["state"]
        if msg["state"] == "ended":
            self.ended_sent[msg["stream_id"]] = msg.get("sent", 0)

    def _on_info(self, stage: str, msg: dict[str, Any]) -> None:
        if "blocked_s" in msg:  # a source waits for ring slots (it logged a warning too)
            sid = msg.get("stream_id")
            stream_logger(log, sid).info(
                "downstream blocked for %.0f s (no ring slot back)", msg["blocked_s"]
            )
            self.metrics.own.inc("vigil_downstream_blocked", stream=sid)
        if "detector" not in msg:
            return
        self.model_loaded = True
        self.last_progress = time.monotonic()  # the stall clock starts now
        for src in self.deferred:
            self._start_source(src)
        self.deferred = []
        self.summary.detector = msg["detector"]
        log.info("detector: %s", msg["detector"])

    def _on_progress(self, stage: str, msg: dict[str, Any]) -> None:
        summary = self.summary
        frames = self.frames_base + msg["frames"]
        if self.bar is not None:
            self.bar.update(frames - summary.frames)
        summary.frames = frames
        summary.events = self.events_base + msg["events"]
        self.last_progress = time.monotonic()

    def _on_eos(self, stage: str, msg: dict[str, Any]) -> None:
        self.eos_reports += 1
        if msg["stream_id"] is not None:
            self.summary.streams[msg["stream_id"]] = {
                k: msg[k] for k in ("reason", "frames_read", "detail")
            }

    def _on_feed(self, stage: str, msg: dict[str, Any]) -> None:
        """The frame feed's totals, at the publish stage's end."""
        log.info("frame feed: %d frames sent, %d dropped", msg["sent"], msg["dropped"])
        self.metrics.own.set("vigil_frame_feed_frames", msg["sent"], outcome="sent")
        self.metrics.own.set("vigil_frame_feed_frames", msg["dropped"], outcome="dropped")

    def _send_shutdown(self, zctx: zmq.Context) -> None:
        """Dynamic runs: tell infer that no stream will come any more (see pipeline.protocol)."""
        sock = set_options(
            zctx.socket(zmq.PUSH), linger_ms=SHUTDOWN_PUSH_MS, sndtimeo_ms=SHUTDOWN_PUSH_MS
        )
        sock.connect(self.endpoints.infer)
        try:
            streams = list(dict.fromkeys(self.started_streams))
            wire.send(sock, {"kind": Kind.SHUTDOWN, "streams": streams})
        except zmq.Again:
            log.error("infer stage unreachable; it will end when the supervisor goes")
        sock.close()
        self.shutdown_sent = True


def _progress_bar(cfg: VigilConfig, total: int | None) -> Any:
    if not cfg.runtime.progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="vigil", dynamic_ncols=True, smoothing=0.1)


def _serve_some(server: Any) -> None:
    """Answer a few control requests (the loop's other work comes first)."""
    try:
        for _ in range(10):
            if not server.serve(0):
                break
    except Exception:  # a peer's request never ends the run
        log.exception("control endpoint: request dropped")
