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
times (:meth:`_Run._crashed`): the restart is published as a ``stage.restart`` event, and once the
new process reports, the sources take back the ring slots of frames the dead one held. Batch
runs fail instead (a lost frame would be a silent gap in a lossless output). With
``runtime.http`` the supervisor also serves the viewer, metrics and health (:mod:`pipeline.http`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from pipeline.config import VigilConfig
from pipeline.logs import stream_logger
from pipeline.metrics import RunMetrics
from pipeline.stages import FAULT_ENV, Endpoints, dynamic_budget, run_stage
from pipeline.workers import analytics_body, infer_body, publish_body, source_body
from stream import events as ev
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
    from pipeline.access import check_exposure

    if not cfg.sources and not cfg.runtime.control:
        raise ValueError("no sources configured")
    check_exposure(cfg)  # ExposureError: an endpoint beyond loopback without CURVE or token
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
        self._exited_at: dict[str, float] = {}  # stage -> when its exit was first seen
        self.rings: list[str] = []
        self.summary = RunSummary()
        self.shutdown_sent = False
        # Restarts (see _crashed): live runs restart a crashed or hung stage with backoff.
        limit = cfg.runtime.max_restarts
        self.max_restarts = (
            limit if limit is not None else (5 if plain["runtime"]["mode"] == "live" else 0)
        )
        self.bodies: dict[str, Any] = {}
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

    # --- processes ----------------------------------------------------------------------

    def _start(self, name: str, body: Any, args: tuple, stop: Any) -> None:
        self.bodies[name] = body
        proc = self.spawn.Process(
            target=run_stage,
            name=f"vigil-{name}",
            daemon=True,
            args=(name, _Bound(body, args), self.endpoints, stop, self.level),
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

    def handle(self, req: dict[str, Any]) -> dict[str, Any] | Any:
        """Answer one control request (see :mod:`pipeline.control`); an ``add`` answers later,
        once its source probe (in a thread) is done."""
        from stream.redact import redact

        op = req.get("op")
        if op == "list":
            running = set(self._sources_running())
            streams = [
                {
                    "stream_id": sid,
                    "uri": redact(self.source_uris[sid]),
                    "state": self.states.get(sid, "connecting"),
                    "running": sid in running,
                }
                for sid in self.source_stops
            ]
            return {"ok": True, "streams": streams}
        if op == "remove":
            sid = req.get("stream_id")
            if not isinstance(sid, str) or sid not in self._sources_running():
                return {"ok": False, "error": f"no running stream {_short(sid)}"}
            self.source_stops[sid].set()
            return {"ok": True, "stream_id": sid}
        if op == "add":
            return self._add(req)
        return {"ok": False, "error": f"unknown op {_short(op)}: expected add, remove or list"}

    def _add(self, req: dict[str, Any]) -> dict[str, Any] | Any:
        import re

        from pydantic import ValidationError

        from pipeline.config import SourceConfig
        from pipeline.control import MAX_URI_CHARS, Deferred, source_allowed
        from stream.redact import redact
        from stream.sources import is_live_uri, probe_source

        rt = self.cfg.runtime
        if self.stop.is_set():
            return {"ok": False, "error": "vigil is stopping"}
        uri = req.get("uri")
        if not isinstance(uri, str) or not uri:
            return {"ok": False, "error": "uri: a non-empty string is required"}
        if len(uri) > MAX_URI_CHARS:
            return {"ok": False, "error": f"uri: longer than {MAX_URI_CHARS} characters"}
        if not source_allowed(uri, rt.allowed_sources):
            # The same words whether or not the path exists: a peer learns nothing from it.
            return {"ok": False, "error": "uri: not allowed by runtime.allowed_sources"}
        fields = {k: v for k, v in req.items() if k != "op"}
        fields.setdefault("stream_id", f"cam{len(self.started_streams) + 1}")
        try:
            src = SourceConfig.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            return {"ok": False, "error": f"{loc}: {msg}"[:300]}
        # Attempts are at least min_restart_interval_s apart whatever the backoff says, so its
        # floor bounds the reconnect events any request can cause.
        if src.min_restart_interval_s < rt.control_min_retry_s:
            floor = rt.control_min_retry_s
            why = f"min_restart_interval_s: at least {floor:g} s (runtime.control_min_retry_s)"
            return {"ok": False, "error": why}
        sid = src.stream_id
        if sid in self._sources_running():
            return {"ok": False, "error": f"stream {sid!r} is already running"}
        if len(self._sources_running()) >= rt.max_streams:  # running ones: a remove frees one
            return {"ok": False, "error": f"runtime.max_streams ({rt.max_streams}) reached"}
        live = is_live_uri(src.uri)

        def finish(result: Any) -> dict[str, Any]:
            if isinstance(result, BaseException):
                if getattr(result, "reason", None) == "too_large":  # as on the command line
                    # The size and the cap, not the path: a peer learns no more of the disk.
                    sizes = re.findall(r"frames of (\d+x\d+) ", str(result))  # last: not the path
                    frames = f"frames of {sizes[-1]}" if sizes else "frames"
                    cap = f"max_pixels ({src.max_pixels:,} pixels)"
                    return {"ok": False, "error": f"uri: {frames} exceed {cap}; refused"}
                if live:
                    return {"ok": False, "error": str(result)[:300]}
                log.info("control add refused: %s: %s", redact(src.uri), result)
                return {"ok": False, "error": "uri: cannot be opened as a video source"}
            if self.stop.is_set():
                return {"ok": False, "error": "vigil is stopping"}
            if sid in self._sources_running():
                return {"ok": False, "error": f"stream {sid!r} is already running"}
            if len(self._sources_running()) >= rt.max_streams:
                return {"ok": False, "error": f"runtime.max_streams ({rt.max_streams}) reached"}
            self._start_source(src.model_dump(mode="json"))
            stream_logger(log, sid).info("added: %s", redact(src.uri))
            return {"ok": True, "stream_id": sid}

        if Deferred.busy():  # probes that timed out and still hang hold their threads
            return {"ok": False, "error": "too many source probes still running; try later"}
        timeout = rt.probe_timeout_s
        late = {"ok": False, "error": f"uri: no answer from the source in {timeout:g} s"}
        return Deferred(
            lambda: probe_source(src.uri, max_pixels=src.max_pixels),  # the request's cap
            finish,
            timeout_s=timeout,
            timeout_reply=late,
        )

    # --- the run ------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        cfg, plain, summary = self.cfg, self.plain, self.summary
        n = len(plain["sources"])
        downstream = dynamic_budget(plain) if self.dynamic else n
        self.n_downstream = downstream
        zctx = self.zctx = zmq.Context()
        control = zctx.socket(zmq.PULL)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(self.endpoints.control)
        server = http = None
        try:
            if self.dynamic:
                from pipeline.control import ControlServer
                from stream.zsocket import CurveServerKeys

                try:
                    server = ControlServer(
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
        except BaseException:
            if server is not None:
                server.close()
            control.close()
            zctx.destroy(linger=0)
            raise
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
        next_check = 0.0
        duration = cfg.runtime.duration_s
        ended_sent: dict[str, int] = {}
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
                    try:
                        for _ in range(10):  # a few per turn: the loop's other work comes first
                            if not server.serve(0):
                                break
                    except Exception:  # a peer's request never ends the run
                        log.exception("control endpoint: request dropped")
                self._due_restarts()
                if control.poll(100, zmq.POLLIN):
                    msg, _ = wire.recv(control)
                    kind, stage = msg["kind"], msg["stage"]
                    self.last_report[stage] = time.monotonic()
                    if stage in self.awaiting_up:  # a restarted stage is up
                        self.awaiting_up.discard(stage)
                        self._reclaim_slots()
                    if kind == "error":
                        self._crashed(
                            stage, "crashed", msg["message"], msg["traceback"], msg["user"]
                        )
                    elif kind == "done":
                        self.done.add(stage)
                    elif kind == "stats" and stage not in self.pending_restart:
                        # (a dead process's last report, still queued, would count it twice)
                        self.stats_seen.add(stage)
                        self.metrics.update(stage, msg)
                    elif kind == "ring":
                        self.rings.append(msg["name"])
                    elif kind == "open":
                        self.stream_infos[msg["stream_id"]] = msg["info"]
                    elif kind == "state":
                        if msg["state"] == "streaming":
                            last_progress = time.monotonic()
                        self.states[msg["stream_id"]] = msg["state"]
                        if msg["state"] == "ended":
                            ended_sent[msg["stream_id"]] = msg.get("sent", 0)
                    elif kind == "info" and "detector" in msg:
                        self.model_loaded = True
                        last_progress = time.monotonic()  # the stall clock starts now
                        for src in deferred:
                            self._start_source(src)
                        deferred = []
                        summary.detector = msg["detector"]
                        log.info("detector: %s", msg["detector"])
                    elif kind == "progress":
                        frames = self.frames_base + msg["frames"]
                        if bar is not None:
                            bar.update(frames - summary.frames)
                        summary.frames = frames
                        summary.events = self.events_base + msg["events"]
                        last_progress = time.monotonic()
                    elif kind == "eos":
                        self.eos_reports += 1
                        if msg["stream_id"] is not None:
                            summary.streams[msg["stream_id"]] = {
                                k: msg[k] for k in ("reason", "frames_read", "detail")
                            }
                    if time.monotonic() < next_check:
                        continue
                next_check = time.monotonic() + 0.2
                self._check_stages()
                # A pipeline with no camera streaming (all reconnecting, or none added) is idle,
                # not stalled; frames still in flight after the last source ended do count. So
                # is one whose model is still loading (minutes when TensorRT builds an engine),
                # or with a stage restarting (until the new process reports).
                active = any(s == "streaming" for s in self.states.values())
                active = active or sum(ended_sent.values()) > summary.frames
                active = active or not self.states
                active = active and self.model_loaded
                active = active and not self.pending_restart and not self.awaiting_up
                if active and time.monotonic() - last_progress > cfg.runtime.stage_timeout_s:
                    raise StageFailed(
                        "pipeline",
                        f"stalled: no frame finished in {cfg.runtime.stage_timeout_s:.0f} s",
                    )
                if not active:
                    last_progress = time.monotonic()
                if http is not None:
                    self._refresh_status()
            failed = False
        finally:
            summary.seconds = time.monotonic() - start
            if bar is not None:
                bar.close()
            self._request_stop()
            _join_all(self.procs, timeout_s=0.0 if failed else 10.0, quiet=failed)
            _unlink_rings(self.rings)
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

    # --- restarts -----------------------------------------------------------------------

    def _check_stages(self) -> None:
        """Notice stages that died without a word, or stopped reporting (hung)."""
        timeout = self.cfg.runtime.stage_timeout_s
        for name, proc in list(self.procs.items()):
            if name in self.done or name in self.pending_restart:
                continue
            if proc.exitcode is not None:
                # Its last reports ("done") may still be queued behind other stages' (many
                # streams): give them a second to arrive before calling the exit a death.
                seen = self._exited_at.setdefault(name, time.monotonic())
                if time.monotonic() - seen >= 1.0:
                    self._crashed(name, "died", f"process {_exit_text(proc.exitcode)}")
                continue
            now = time.monotonic()
            silent = now - self.last_report.get(name, now)
            starting = now - self.started_at.get(name, now)
            if name in self.stats_seen and silent > timeout:
                message = f"hung: no report for {silent:.0f} s"
            elif name not in self.stats_seen and starting > self.cfg.runtime.startup_timeout_s:
                message = f"hung: no report {starting:.0f} s after it started"
            else:
                continue
            if self._restartable(name):
                proc.kill()
            self._crashed(name, "hung", message)

    def _restartable(self, name: str) -> bool:
        """Sources are not restarted (a camera reconnects inside its own process); the other
        stages are, up to ``max_restarts`` each, unless the run is draining."""
        return (
            not name.startswith("source:")
            and not self.stop.is_set()
            and self.restarts.get(name, 0) < self.max_restarts
        )

    def _crashed(
        self, name: str, reason: str, message: str, traceback: str = "", user: bool = False
    ) -> None:
        """A stage crashed, died or hung: schedule its restart, or end the run (StageFailed)."""
        if user or not self._restartable(name):
            done = self.restarts.get(name, 0)
            if done:
                message += f" (after {done} restart{'s' if done > 1 else ''})"
            raise StageFailed(name, message, traceback, user)
        attempt = self.restarts.get(name, 0) + 1
        self.restarts[name] = attempt
        rt = self.cfg.runtime
        delay = min(rt.restart_backoff_s * 2 ** (attempt - 1), rt.restart_backoff_max_s)
        self.pending_restart[name] = time.monotonic() + delay
        self.stats_seen.discard(name)
        self.metrics.stage_gone(name)
        self.metrics.own.inc("vigil_stage_restarts", stage=name, reason=reason)
        if name == "publish":  # the new process counts from zero
            self.frames_base, self.events_base = self.summary.frames, self.summary.events
        detail = message.splitlines()[0] if message else ""
        log.warning(
            "stage %s %s: %s; restarting in %.1f s (restart %d of at most %d)",
            name,
            reason,
            detail,
            delay,
            attempt,
            self.max_restarts,
        )
        if traceback:
            log.info("stage %s traceback:\n%s", name, traceback)
        self._inject_event(
            ev.make_event(
                "stage.restart",
                "*",
                frame=None,
                pts=None,
                ts=time.time(),
                stage=name,
                reason=reason,
                attempt=attempt,
                delay_s=round(delay, 3),
                detail=detail,
            )
        )

    def _due_restarts(self) -> None:
        now = time.monotonic()
        for name, due in list(self.pending_restart.items()):
            if now < due:
                continue
            del self.pending_restart[name]
            old = self.procs[name]
            if old.exitcode is None:
                old.kill()
            old.join(2.0)
            os.environ.pop(FAULT_ENV, None)  # an injected fault fires in the first process only
            left = max(self.n_downstream - self.eos_reports, 1)
            if name == "publish":
                resume = {"restart": self.restarts[name], "streams": dict(self.stream_infos)}
                args: tuple = (self.plain, left, resume)
            elif name == "analytics":
                args = (self.plain, left, {"restart": self.restarts[name]})
            elif name == "infer":
                args = (self.plain, None if self.dynamic else left)
                self.model_loaded = False  # loading again: neither ready nor stalled
            else:
                args = (self.plain, left)
            self._start(name, self.bodies[name], args, self.stop)
            self.awaiting_up.add(name)
            log.warning("stage %s restarted (restart %d)", name, self.restarts[name])

    def _sock(self, endpoint: str) -> zmq.Socket:
        sock = self._socks.get(endpoint)
        if sock is None:
            sock = self._socks[endpoint] = self.zctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDTIMEO, 1000)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(endpoint)
        return sock

    def _inject_event(self, event: dict[str, Any]) -> None:
        """Publish a supervisor event through the publish stage (queued while it restarts)."""
        try:
            wire.send(self._sock(self.endpoints.publish), {"kind": "event", "event": event})
        except zmq.Again:
            log.error("publish stage unreachable; event %s not published", event["type"])

    def _reclaim_slots(self) -> None:
        """Frames held by a stage that crashed never come back: sources take their slots back."""
        for sid in self._sources_running():
            try:
                wire.send(self._sock(self.endpoints.credit(sid)), {"reclaim": True})
            except zmq.Again:
                stream_logger(log, sid).error("source unreachable for slot reclaim")

    # --- HTTP: viewer, metrics, health --------------------------------------------------

    def _open_http(self, zctx: zmq.Context) -> Any:
        from pipeline.access import ExposureError, HttpAccess, read_token
        from pipeline.config import parse_http_address
        from pipeline.http import HttpService, LiveTap

        rt = self.cfg.runtime
        host, port = parse_http_address(rt.http)
        try:
            token = read_token(rt.http_token_file) if rt.http_token_file else None
        except ExposureError as exc:
            raise StageFailed("http", str(exc), user=True) from None
        access = HttpAccess(bound_host=host, allowed_hosts=rt.http_allowed_hosts, token=token)
        tap = LiveTap(zctx, self.endpoints.tap)
        registry = self.metrics.registry()
        try:
            service = HttpService(
                host,
                port,
                tap=tap,
                status=lambda: self.status,
                metrics=lambda: _exposition(registry),
                alive=self._alive,
                out_dir=Path(self.plain["output"]["dir"]),
                access=access,
                max_connections=rt.http_max_connections,
                timeout_s=rt.http_timeout_s,
            )
        except OSError as exc:
            tap.close()
            raise StageFailed(
                "http", f"cannot serve HTTP on {host}:{port} ({exc.strerror or exc})", user=True
            ) from None
        log.warning(
            "viewer, /metrics, /healthz and /readyz on %s%s",
            service.url,
            " (it needs the token of runtime.http_token_file; README, Security)" if token else "",
        )
        return service

    def _alive(self) -> bool:
        return time.monotonic() - self.loop_ts < 5.0

    def _refresh_status(self) -> None:
        """Recompute /api/status and /readyz (read by the HTTP threads; swapped whole)."""
        from stream.redact import redact

        now = time.monotonic()
        rt, m = self.cfg.runtime, self.metrics
        running = set(self._sources_running())
        reasons: list[str] = []
        streams = []
        for sid in self.source_stops:
            frames = m.value("vigil_frames_processed", stream=sid)
            history = self._fps.setdefault(sid, deque(maxlen=64))
            if frames and (not history or history[-1][1] != frames):
                self._last_frame[sid] = now
            history.append((now, frames))
            while len(history) > 2 and now - history[0][0] > 5.0:
                history.popleft()
            span = history[-1][0] - history[0][0]
            fps = (history[-1][1] - history[0][1]) / span if span > 0.5 else 0.0
            state = self.states.get(sid, "connecting")
            seen = self._last_frame.get(sid)
            age = None if seen is None else round(now - seen, 2)
            dropped = m.value("vigil_frames_dropped", stream=sid)  # every reason
            streams.append(
                {
                    "stream_id": sid,
                    "uri": redact(self.source_uris[sid]),
                    "state": state,
                    "running": sid in running,
                    "fps": round(fps, 2),
                    "frames": int(frames),
                    "dropped": int(dropped),
                    "reconnects": int(m.value("vigil_reconnects", stream=sid)),
                    "last_frame_age_s": age,
                }
            )
            m.own.set("vigil_stream_up", 1 if state == "streaming" else 0, stream=sid)
            m.own.set("vigil_stream_fps", fps, stream=sid)
            if sid not in running:
                continue
            if state != "streaming":
                what = {"waiting": "camera down, reconnecting", "connecting": "connecting"}
                reasons.append(f"stream {sid}: {what.get(state, state)}")
            elif self.model_loaded and (age is None or age > rt.ready_timeout_s):
                since = "yet" if age is None else f"for {age:.0f} s"
                reasons.append(f"stream {sid}: no frame through the graph {since}")
        stages = []
        for name, proc in self.procs.items():
            alive = proc.exitcode is None and name not in self.pending_restart
            silent = now - self.last_report.get(name, now)
            stages.append(
                {
                    "name": name,
                    "pid": proc.pid,
                    "alive": alive,
                    "restarts": self.restarts.get(name, 0),
                    "last_report_age_s": round(silent, 2),
                }
            )
            m.own.set("vigil_stage_up", 1 if alive else 0, stage=name)
            m.own.set("vigil_stage_last_report_age_seconds", silent, stage=name)
            if name in self.done:
                continue
            if name in self.pending_restart:
                wait = max(self.pending_restart[name] - now, 0.0)
                reasons.append(f"stage {name}: down, restarting in {wait:.1f} s")
            elif name in self.awaiting_up:
                reasons.append(f"stage {name}: restarting")
            elif name == "infer" and not self.model_loaded:
                reasons.append("stage infer: loading the model")
            elif name in self.stats_seen and silent > rt.ready_timeout_s:
                reasons.append(f"stage {name}: stalled, no report for {silent:.0f} s")
            elif name == "publish" and m.value("vigil_feed_server_down"):
                reasons.append("stage publish: feed server down, restarting")
        if not running and not self.dynamic:
            reasons.append("no stream running")
        m.own.set("vigil_ready", 0 if reasons else 1)
        self.status = {
            "ready": not reasons,
            "reasons": reasons,
            "uptime_s": round(now - self.started, 1),
            "streams": streams,
            "stages": stages,
        }

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


def _short(value: Any) -> str:
    """A peer's value for an error message, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without reporting an error"


def _exposition(registry: Any) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


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
