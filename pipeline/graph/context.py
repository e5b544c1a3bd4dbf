"""What every stage process has: :class:`StageContext` (its sockets, stop flag, control link
and metrics) and fault injection for supervision tests (``VIGIL_INJECT_FAULT``).

Every blocking call polls with a timeout and checks the stop flag and the parent process, so no
stage can hang forever on a dead peer. The messages themselves are described in
:mod:`pipeline.protocol`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import zmq

from pipeline.metrics import StageMetrics
from pipeline.protocol import (
    CONTROL_SNDTIMEO_MS,
    LINGER_MS,
    POLL_MS,
    Endpoints,
    Kind,
    set_options,
)
from stream import wire

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
FAULT_ENV = "VIGIL_INJECT_FAULT"


class Stopped(Exception):
    """Raised inside a stage when the supervisor asked to stop or the parent is gone."""


class StageContext:
    """What every stage has: its name, sockets' context, the stop flag and the control link."""

    def __init__(self, name: str, endpoints: Endpoints, stop_event: Any) -> None:
        self.name = name
        self.endpoints = endpoints
        self.stop_event = stop_event
        self.zmq = zmq.Context()
        self.control = self.zmq.socket(zmq.PUSH)
        set_options(self.control, linger_ms=LINGER_MS, sndtimeo_ms=CONTROL_SNDTIMEO_MS)
        self.control.connect(endpoints.control)
        self._parent = os.getppid()
        self._fault = parse_fault(os.environ.get(FAULT_ENV, ""), name)
        self.metrics = StageMetrics()
        #: Called before each stats report, to copy totals the body keeps into :attr:`metrics`.
        self.stats_hook: Callable[[StageMetrics], None] | None = None
        self._next_stats = 0.0

    def tick(self, force: bool = False) -> None:
        """Send the ``stats`` report (metrics snapshot) about once a second. It doubles as the
        stage's heartbeat: a stage that stops reporting is stalled (see /readyz)."""
        now = time.monotonic()
        if not force and now < self._next_stats:
            return
        self._next_stats = now + STATS_INTERVAL_S
        if self.stats_hook is not None:
            self.stats_hook(self.metrics)
        self.report(Kind.STATS, **self.metrics.snapshot())

    def report(self, kind: str, **fields: Any) -> None:
        try:
            wire.send(self.control, {"kind": kind, "stage": self.name, **fields})
        except zmq.Again:
            log.error("%s: supervisor unreachable; dropping %s report", self.name, kind)

    def check(self) -> None:
        self.tick()
        if os.getppid() != self._parent:
            raise Stopped("supervisor is gone")

    def maybe_fault(self, frame_idx: int) -> None:
        """Fault injection for supervision tests, ``VIGIL_INJECT_FAULT=stage:where:what``:
        ``what`` is raise, kill or hang; ``where`` a frame index (fires once, on the first
        frame at or past it: live mode drops frames), ``event=TYPE`` (fires on the first event
        of that type the stage receives, see :meth:`maybe_fault_on_event`), or ``load`` with
        ``what`` = ``sleepN`` (the stage's start-up, the model load, takes N s longer)."""
        fault = self._fault
        if fault is not None and fault[0] == "frame" and frame_idx >= fault[1]:
            self._fire(f"frame {frame_idx}")

    def maybe_fault_on_event(self, event_type: str) -> None:
        fault = self._fault
        if fault is not None and fault[0] == "event" and event_type == fault[1]:
            self._fire(f"event {event_type}")

    def maybe_slow_load(self) -> None:
        """``stage:load:sleepN`` (see :meth:`maybe_fault`): sleep N s here, without reporting,
        as a slow model load would."""
        fault = self._fault
        if fault is not None and fault[0] == "load":
            self._fault = None
            time.sleep(float(fault[2].removeprefix("sleep")))

    def _fire(self, where: str) -> None:
        fault, self._fault = self._fault, None
        if fault[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault[2] == "hang":
            while True:
                time.sleep(1)
        raise RuntimeError(f"injected fault in stage {self.name} at {where}")

    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def pull(self, endpoint: str) -> zmq.Socket:
        sock = self.zmq.socket(zmq.PULL)
        set_options(sock, linger_ms=0)
        sock.bind(endpoint)
        return sock

    def push(self, endpoint: str) -> zmq.Socket:
        sock = self.zmq.socket(zmq.PUSH)
        set_options(sock, linger_ms=LINGER_MS)
        sock.connect(endpoint)
        return sock

    def send(self, sock: zmq.Socket, header: dict[str, Any], arrays: dict | None = None) -> None:
        """Send, waiting for room as long as it takes, but never past a dead parent."""
        frames = wire.encode(header, arrays)
        self.tick()
        while not sock.poll(POLL_MS, zmq.POLLOUT):
            self.check()
        sock.send_multipart(frames, copy=False)

    def recv(self, sock: zmq.Socket, timeout_ms: int | None = None) -> tuple[dict, dict] | None:
        """Receive one message; None after ``timeout_ms`` (never None when it is None)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        self.tick()
        while True:
            wait_ms = POLL_MS
            if deadline is not None:
                wait_ms = min(POLL_MS, max(int((deadline - time.monotonic()) * 1000), 0))
            if sock.poll(wait_ms, zmq.POLLIN):
                return wire.recv(sock)
            self.check()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        """Close every socket of this stage (queued messages get up to 5 s), then the context.

        ``Context.term()`` alone would wait forever for sockets a body left open."""
        self.zmq.destroy(linger=LINGER_MS)


def parse_fault(spec: str, stage: str) -> tuple[str, Any, str] | None:
    """``stage:where:what`` for this stage -> (trigger, value, what); see ``maybe_fault``."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != stage.split(":")[0]:
        return None
    where, what = parts[1], parts[2]
    if where == "load" and re.fullmatch(r"sleep\d+(\.\d+)?", what):
        return "load", None, what
    if where.startswith("event="):
        return "event", where.removeprefix("event="), what
    return ("frame", int(where), what) if where.isdigit() else None
