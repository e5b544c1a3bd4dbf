"""The stage processes of the graph: source -> infer -> analytics -> publish.

Each stage runs in its own process (``multiprocessing`` spawn), reads its input from a ZeroMQ
PULL socket it binds, and pushes to the next stage. Messages are :mod:`stream.wire` multipart
messages whose header has a ``kind``:

- ``open``: a source delivered its first frame (stream info; once per stream);
- ``event``: an event to publish, in stream order;
- ``frame``: a frame's address in the source's shared-memory ring, plus results so far;
- ``reset``: the stream's per-stream state (tracks, pose buffers) must start over, from the
  next frame on: ``{"kind": "reset", "stream_id", "reason": "resolution" | "pts_backwards",
  "width", "height", "frame"}`` (new size in pixels, index of the next frame);
- ``eos``: a source ended (reason, frames read). A stage exits after ``n_sources`` EOS.
- ``shutdown`` (supervisor -> infer only, dynamic runs): ``{"kind": "shutdown", "streams":
  [ids]}``: end once these streams have sent their EOS.

Static runs (no control endpoint) pass every stage the number of sources. Dynamic runs (streams
added and removed through ``runtime.control``) pass the infer stage ``None`` and the stages after
it :func:`dynamic_budget`: infer forwards each stream's EOS and, on ``shutdown``, closes the chain
with filler EOS (``stream_id`` null, ``reason`` ``"shutdown"``) up to the budget (see
:class:`StreamLedger`), so every stage after it ends exactly once, after the last stream.

Credits (publish -> source, on the stream's credit socket) name the slot, its ring and the
frame's generation (``{"slot", "ring", "gen"}``), so a late credit for a slot the source took back
is ignored; ``{"reclaim": true}`` from the supervisor, after a downstream stage was restarted,
makes the source take back every slot still out. Stages report to the supervisor on the control
socket: ``stats`` (metrics snapshot and heartbeat, :meth:`StageContext.tick`), ``info``,
``progress``, ``state``, ``ring``, ``open``, ``eos``, ``error``, ``done``.

Every blocking call polls with a timeout and checks the stop flag and the parent process, so
no stage can hang forever on a dead peer; every exception reaches the supervisor with its
traceback through the control socket.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from pipeline.metrics import StageMetrics
from stream import wire

log = logging.getLogger(__name__)

POLL_MS = 200
STATS_INTERVAL_S = 1.0
FAULT_ENV = "VIGIL_INJECT_FAULT"


@dataclass(frozen=True)
class Endpoints:
    """ipc:// addresses of one run's sockets (in a private temp folder)."""

    control: str
    infer: str
    analytics: str
    publish: str
    credit_prefix: str
    tap: str  # publish -> supervisor: events and annotated JPEGs for the HTTP viewer

    @classmethod
    def in_dir(cls, folder: Path) -> Endpoints:
        return cls(
            f"ipc://{folder}/control",
            f"ipc://{folder}/infer",
            f"ipc://{folder}/analytics",
            f"ipc://{folder}/publish",
            f"ipc://{folder}/credit-",
            f"ipc://{folder}/tap",
        )

    def credit(self, stream_id: str) -> str:
        return self.credit_prefix + stream_id


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
        self.control.setsockopt(zmq.LINGER, 5000)
        self.control.setsockopt(zmq.SNDTIMEO, 5000)
        self.control.connect(endpoints.control)
        self._parent = os.getppid()
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, ""), name)
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
        self.report("stats", **self.metrics.snapshot())

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
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        return sock

    def push(self, endpoint: str) -> zmq.Socket:
        sock = self.zmq.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 5000)
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
        self.zmq.destroy(linger=5000)


def init_child_process(name: str, log_level: int) -> None:
    """Set up a worker process: its parent orchestrates shutdown, so a Ctrl-C or SIGTERM sent to
    the whole process group must not kill it mid-frame; logs carry the worker's name, and
    FFmpeg's own log lines show in debug only."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pipeline.logs import setup_logging  # JSON or not: the parent's VIGIL_LOG_JSON

    setup_logging(log_level, None, process=name)
    if log_level > logging.DEBUG:
        logging.getLogger("libav").setLevel(logging.CRITICAL)


def run_stage(
    name: str,
    body: Callable[[StageContext], None],
    endpoints: Endpoints,
    stop_event: Any,
    log_level: int,
) -> None:
    """Process entry point: run ``body``, report ``done`` or ``error`` with the traceback."""
    init_child_process(name, log_level)
    ctx = StageContext(name, endpoints, stop_event)
    try:
        body(ctx)
        ctx.tick(force=True)
        ctx.report("done")
    except Stopped as exc:
        ctx.report("done", note=str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure goes to the supervisor
        ctx.report(
            "error",
            message=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            user=_is_user_error(exc),
        )
        ctx.close()
        os._exit(1)
    ctx.close()


def _parse_fault(spec: str, stage: str) -> tuple[str, Any, str] | None:
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


def _is_user_error(exc: Exception) -> bool:
    """Errors caused by the user's input or set-up, reported as one line without traceback."""
    return type(exc).__name__ in {"SourceError", "WeightsError", "ConfigError"}


def stage_timestamp(header: dict[str, Any], stage: str) -> None:
    header["result"]["stage_ts"][stage] = time.time()


def dynamic_budget(cfg: dict[str, Any]) -> int:
    """EOS count the stages after infer wait for in a dynamic run (more than streams can end)."""
    return int(cfg["runtime"]["max_streams"]) + 1


class StreamLedger:
    """The infer stage's account of streams: when to exit, and how to close the chain.

    Args:
        n_sources: a static run's source count (exit after that many EOS), or None for a
            dynamic run (exit on ``shutdown`` once its streams have ended, or after
            ``drain_timeout_s`` without their EOS).
        budget: EOS the next stages wait for in a dynamic run (:func:`dynamic_budget`).
    """

    def __init__(
        self, n_sources: int | None, budget: int = 0, drain_timeout_s: float = 30.0
    ) -> None:
        self.n_sources = n_sources
        self.budget = budget
        self.drain_timeout_s = drain_timeout_s
        self.opened: set[str] = set()
        self.ended: set[str] = set()
        self.eos_sent = 0
        self.expect: set[str] | None = None
        self._deadline = float("inf")

    @property
    def poll_ms(self) -> int | None:
        """How long to block on input: forever in a static run, briefly in a dynamic one."""
        return None if self.n_sources is not None else POLL_MS

    def see(self, header: dict[str, Any]) -> None:
        kind = header["kind"]
        if kind == "open":
            self.opened.add(header["stream_id"])
        elif kind == "eos":
            self.ended.add(header["stream_id"])
            self.eos_sent += 1
        elif kind == "shutdown":
            self.expect = set(header.get("streams", [])) | self.opened
            self._deadline = time.monotonic() + self.drain_timeout_s

    def tick(self) -> None:
        """Called when input is idle; :attr:`done` checks the drain deadline itself."""

    @property
    def done(self) -> bool:
        if self.n_sources is not None:
            return self.eos_sent >= self.n_sources
        if self.expect is None:
            return False
        return self.expect <= self.ended or time.monotonic() > self._deadline

    def closing_messages(self) -> list[dict[str, Any]]:
        """EOS for streams that never sent one (drain timeout), then fillers up to the budget."""
        if self.n_sources is not None:
            return []
        msgs = [
            {
                "kind": "eos",
                "stream_id": sid,
                "reason": "lost",
                "frames_read": 0,
                "detail": "no end of stream before shutdown",
            }
            for sid in sorted((self.expect or set()) - self.ended)
        ]
        fill = max(self.budget - self.eos_sent - len(msgs), 1)
        msgs += [
            {"kind": "eos", "stream_id": None, "reason": "shutdown", "frames_read": 0, "detail": ""}
        ] * fill
        return msgs
