"""Readiness and stall detection of a run: what ``/readyz`` and ``/api/status`` say
(:meth:`Readiness._refresh_status`), stages that died without a word or stopped reporting
(:meth:`Readiness._check_stages`), and a graph where no frame finishes while a source streams
(:meth:`Readiness._check_stall`).

A stage's ``stats`` report, about once a second, is its heartbeat. Cameras that are down and
reconnecting are idle, not stalled; so is a graph whose model is still loading or with a stage
restarting.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import zmq

from pipeline.graph.process import StageFailed, exit_text

log = logging.getLogger("pipeline.graph.supervisor")


class Readiness:
    """Mixed into the supervisor's run (see :class:`pipeline.graph.supervisor.GraphRun` for
    the attributes it reads)."""

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
                    self._crashed(name, "died", f"process {exit_text(proc.exitcode)}")
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

    def _check_stall(self) -> None:
        """Raise :class:`StageFailed` when no frame finished for ``runtime.stage_timeout_s``
        while the graph is active (see the module docstring)."""
        # A pipeline with no camera streaming (all reconnecting, or none added) is idle, not
        # stalled; frames still in flight after the last source ended do count. So is one
        # whose model is still loading (minutes when TensorRT builds an engine), or with a
        # stage restarting (until the new process reports).
        active = any(s == "streaming" for s in self.states.values())
        active = active or sum(self.ended_sent.values()) > self.summary.frames
        active = active or not self.states
        active = active and self.model_loaded
        active = active and not self.pending_restart and not self.awaiting_up
        timeout = self.cfg.runtime.stage_timeout_s
        if active and time.monotonic() - self.last_progress > timeout:
            raise StageFailed("pipeline", f"stalled: no frame finished in {timeout:.0f} s")
        if not active:
            self.last_progress = time.monotonic()

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

    def _open_http(self, zctx: zmq.Context) -> Any:
        from pipeline.access import ExposureError, read_token
        from pipeline.config_runtime import parse_http_address
        from pipeline.http import HttpAccess, HttpService, LiveTap

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


def _exposition(registry: Any) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
