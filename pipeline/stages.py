"""The stage processes of the graph: source -> infer -> analytics -> publish.

Each stage runs in its own process (``multiprocessing`` spawn), reads its input from a ZeroMQ
PULL socket it binds, and pushes to the next stage. Messages are :mod:`stream.wire` multipart
messages whose header has a ``kind``:

- ``open``: a source opened (stream info); ``event``: an event to publish, in stream order;
- ``frame``: a frame's address in the source's shared-memory ring, plus results so far;
- ``eos``: a source ended (reason, frames read). A stage exits after the EOS of every source.

Every blocking call polls with a timeout and checks the stop flag and the parent process, so
no stage can hang forever on a dead peer; every exception reaches the supervisor with its
traceback through the control socket.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from stream import wire

log = logging.getLogger(__name__)

POLL_MS = 200
FAULT_ENV = "VIGIL_INJECT_FAULT"


@dataclass(frozen=True)
class Endpoints:
    """ipc:// addresses of one run's sockets (in a private temp folder)."""

    control: str
    infer: str
    analytics: str
    publish: str
    credit_prefix: str

    @classmethod
    def in_dir(cls, folder: Path) -> Endpoints:
        return cls(
            f"ipc://{folder}/control",
            f"ipc://{folder}/infer",
            f"ipc://{folder}/analytics",
            f"ipc://{folder}/publish",
            f"ipc://{folder}/credit-",
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

    def report(self, kind: str, **fields: Any) -> None:
        try:
            wire.send(self.control, {"kind": kind, "stage": self.name, **fields})
        except zmq.Again:
            log.error("%s: supervisor unreachable; dropping %s report", self.name, kind)

    def check(self) -> None:
        if os.getppid() != self._parent:
            raise Stopped("supervisor is gone")

    def maybe_fault(self, frame_idx: int) -> None:
        """Fault injection for supervision tests (``VIGIL_INJECT_FAULT=stage:frame:raise|kill``)."""
        if self._fault is None or frame_idx != self._fault[0]:
            return
        if self._fault[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self._fault[1] == "hang":
            while True:
                time.sleep(1)
        raise RuntimeError(f"injected fault in stage {self.name} at frame {frame_idx}")

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
        while not sock.poll(POLL_MS, zmq.POLLOUT):
            self.check()
        sock.send_multipart(frames, copy=False)

    def recv(self, sock: zmq.Socket, timeout_ms: int | None = None) -> tuple[dict, dict] | None:
        """Receive one message; None after ``timeout_ms`` (never None when it is None)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
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
        self.control.close()
        self.zmq.term()


def run_stage(
    name: str,
    body: Callable[[StageContext], None],
    endpoints: Endpoints,
    stop_event: Any,
    log_level: int,
) -> None:
    """Process entry point: run ``body``, report ``done`` or ``error`` with the traceback."""
    # The supervisor orchestrates shutdown; a Ctrl-C reaching the whole process group must not
    # kill stages mid-frame.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    if log_level > logging.DEBUG:
        logging.getLogger("libav").setLevel(logging.CRITICAL)
    ctx = StageContext(name, endpoints, stop_event)
    try:
        body(ctx)
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


def _parse_fault(spec: str, stage: str) -> tuple[int, str] | None:
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != stage.split(":")[0] or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2]


def _is_user_error(exc: Exception) -> bool:
    """Errors caused by the user's input or set-up, reported as one line without traceback."""
    return type(exc).__name__ in {"SourceError", "WeightsError", "ConfigError"}


def stage_timestamp(header: dict[str, Any], stage: str) -> None:
    header["result"]["stage_ts"][stage] = time.time()
