"""Stage restarts (live runs): a stage that crashed, died or hung is restarted with
exponential backoff, up to ``runtime.max_restarts`` times, announced by a ``stage.restart``
event; once the new process reports, the sources take back the ring slots of frames the dead
one held. Batch runs fail instead (a lost frame would be a silent gap in a lossless output).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import zmq

from pipeline.events import restart_event
from pipeline.graph.context import FAULT_ENV
from pipeline.graph.process import StageFailed
from pipeline.logs import stream_logger
from pipeline.protocol import SUPERVISOR_PUSH_MS, Kind, set_options
from stream import wire

log = logging.getLogger("pipeline.graph.supervisor")


class Restarts:
    """Mixed into the supervisor's run (:class:`pipeline.graph.supervisor.GraphRun`), whose
    process table, counters and sockets it uses."""

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
        self._inject_event(restart_event(name, reason, attempt, delay, detail))

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
                args: tuple = (left, resume)
            elif name == "analytics":
                args = (left, {"restart": self.restarts[name]})
            else:  # infer (sources are not restarted)
                args = (None if self.dynamic else left,)
                self.model_loaded = False  # loading again: neither ready nor stalled
            self._start(name, self.stage_classes[name], args, self.stop)
            self.awaiting_up.add(name)
            log.warning("stage %s restarted (restart %d)", name, self.restarts[name])

    def _sock(self, endpoint: str) -> zmq.Socket:
        sock = self._socks.get(endpoint)
        if sock is None:
            sock = self._socks[endpoint] = set_options(
                self.zctx.socket(zmq.PUSH),
                sndtimeo_ms=SUPERVISOR_PUSH_MS,
                linger_ms=SUPERVISOR_PUSH_MS,
            )
            sock.connect(endpoint)
        return sock

    def _inject_event(self, event: dict[str, Any]) -> None:
        """Publish a supervisor event through the publish stage (queued while it restarts)."""
        try:
            wire.send(self._sock(self.endpoints.publish), {"kind": Kind.EVENT, "event": event})
        except zmq.Again:
            log.error("publish stage unreachable; event %s not published", event["type"])

    def _reclaim_slots(self) -> None:
        """Frames held by a stage that crashed never come back: sources take their slots back."""
        for sid in self._sources_running():
            try:
                wire.send(self._sock(self.endpoints.credit(sid)), {"reclaim": True})
            except zmq.Again:
                stream_logger(log, sid).error("source unreachable for slot reclaim")
