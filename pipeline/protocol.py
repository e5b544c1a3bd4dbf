"""The graph's wire protocol: message kinds, headers, endpoints and socket defaults.

The graph is four stages, each in its own process: ``source`` (one per stream) -> ``infer`` ->
``analytics`` -> ``publish`` (:mod:`pipeline.stages`), run and watched by the supervisor
(:mod:`pipeline.graph.supervisor`). Each stage binds a ZeroMQ PULL socket and pushes to the
next. Messages are :mod:`stream.wire` multipart messages: a JSON header whose ``kind`` is a
:class:`Kind`, plus named numpy arrays (detections, poses, masks of a frame).

Data path (stage -> next stage), in stream order:

- ``open`` (:class:`OpenHeader`): a source delivered its first frame; stream info, once per
  stream.
- ``frame`` (:class:`FrameHeader`): a frame's address in the source's shared-memory ring
  (``addr``: ring, slot, shape, generation), its raw ``pts`` and the results so far (``result``,
  :meth:`models.results.FrameResult.to_wire`; the arrays ride along).
- ``event`` (:class:`EventHeader`): an event to publish. Events the analytics stage sends on
  carry an ``eid`` ``[gen, n]`` (analytics process generation, number from 1); the
  supervisor's own (``stage.restart``) carry none.
- ``reset`` (:class:`ResetHeader`): the stream's per-stream state (tracks, pose buffers) must
  start over from the next frame: ``reason`` ``resolution`` | ``pts_backwards``, the new
  ``width``/``height`` and the index of the next ``frame``.
- ``eos`` (:class:`EosHeader`): a source ended (``reason``, ``frames_read``, ``detail``). A
  stage exits after its budget of EOS.
- ``shutdown`` (:class:`ShutdownHeader`, supervisor -> infer, dynamic runs only): end once the
  listed ``streams`` have sent their EOS.

Recovery after a restart (live runs restart a crashed stage, see the supervisor):

- ``resend`` (:class:`ResendHeader`, a restarted publish stage -> analytics): send again every
  event after ``after`` (the last eid journaled, or null); ``request`` is the publish restart
  count.
- ``resend_done`` (:class:`ResendDoneHeader`, analytics -> publish): the answer is complete:
  ``count`` events resent, ``lost`` no longer kept; ``request`` echoes the request.
- ``tracks_lost`` (:class:`TracksLostHeader`, a restarted analytics stage -> publish, first
  message): its tracker starts anew; publish ends every track still open (``reason:
  restart``) and drops late track events of older generations.

Static runs (no control endpoint) pass every stage the number of sources. Dynamic runs
(streams added and removed through ``runtime.control``) pass the infer stage ``None`` and the
stages after it a budget (:func:`dynamic_budget`): infer forwards each stream's EOS and, on
``shutdown``, closes the chain with filler EOS (``stream_id`` null, ``reason`` ``shutdown``) up
to the budget (:class:`pipeline.stages.infer.StreamLedger`), so every later stage ends exactly
once, after the last stream.

Credits (publish -> source, on the stream's credit socket, :class:`CreditHeader`) name the
slot, its ring and the frame's generation, so a late credit for a slot the source took back is
ignored; ``{"reclaim": true}`` from the supervisor, after a downstream stage was restarted,
makes the source take back every slot still out.

Reports (stage -> supervisor, on the control socket; every header has ``kind`` and ``stage``):
``stats`` (metrics snapshot, once a second: also the heartbeat), ``info`` (``detector``: the
model is loaded; or ``stream_id`` + ``blocked_s``: a source waits for ring slots),
``progress`` (``frames``, ``events``), ``state`` (a stream's ``state``: connecting, streaming,
waiting, ended), ``ring`` (a shared-memory ring to unlink at the end), ``open``, ``eos``,
``feed`` (the frame feed's ``sent``/``dropped`` totals, at the end), ``error`` (``message``,
``traceback``, ``user``) and ``done``.

The viewer tap (publish -> supervisor, lossy) is not wire-encoded: ``[b"event", json]`` or
``[b"frame", stream, meta json, jpeg]`` (:class:`TapKind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypedDict

import zmq


class Kind(StrEnum):
    """The ``kind`` of every graph message; str-valued, so the wire holds plain strings."""

    OPEN = "open"
    FRAME = "frame"
    EVENT = "event"
    RESET = "reset"
    EOS = "eos"
    SHUTDOWN = "shutdown"
    RESEND = "resend"
    RESEND_DONE = "resend_done"
    TRACKS_LOST = "tracks_lost"
    # reports, stage -> supervisor
    STATS = "stats"
    INFO = "info"
    PROGRESS = "progress"
    STATE = "state"
    RING = "ring"
    FEED = "feed"
    ERROR = "error"
    DONE = "done"


class TapKind(bytes, Enum):
    """First part of a viewer-tap message (publish -> supervisor)."""

    EVENT = b"event"
    FRAME = b"frame"


class OpenHeader(TypedDict):
    kind: str
    stream_id: str
    info: dict[str, Any]  # width, height, fps, codec, time_base [num, den], frame_count, start_ts


class FrameHeader(TypedDict):
    kind: str
    addr: dict[str, Any]  # ring, slot, shape, gen
    pts_raw: int | None
    result: dict[str, Any]  # FrameResult.to_wire() header


class EventHeader(TypedDict, total=False):
    kind: str
    event: dict[str, Any]
    eid: list[int]  # [gen, n]: analytics events only


class ResetHeader(TypedDict):
    kind: str
    stream_id: str
    reason: str
    width: int | None
    height: int | None
    frame: int


class EosHeader(TypedDict):
    kind: str
    stream_id: str | None
    reason: str
    frames_read: int
    detail: str


class ShutdownHeader(TypedDict):
    kind: str
    streams: list[str]


class ResendHeader(TypedDict):
    kind: str
    after: list[int] | None
    request: int


class ResendDoneHeader(TypedDict):
    kind: str
    count: int
    lost: int
    request: int | None


class TracksLostHeader(TypedDict):
    kind: str
    restart: int


class CreditHeader(TypedDict, total=False):
    slot: int
    ring: str
    gen: int | None
    reclaim: bool


def eos(stream_id: str | None, reason: str, frames_read: int, detail: str) -> EosHeader:
    """An ``eos`` header."""
    return {
        "kind": Kind.EOS,
        "stream_id": stream_id,
        "reason": reason,
        "frames_read": frames_read,
        "detail": detail,
    }


def dynamic_budget(runtime: Any) -> int:
    """EOS count the stages after infer wait for in a dynamic run (more than streams can end):
    ``runtime.max_streams + 1``."""
    return runtime.max_streams + 1


#: Poll period of every blocking call in a stage, ms (stop flag and parent checked between).
POLL_MS = 200
#: How long a closing socket may still deliver queued messages, ms.
LINGER_MS = 5000
#: Send timeout of a stage's control socket (reports), ms.
CONTROL_SNDTIMEO_MS = 5000
#: Linger and send timeout of the supervisor's own pushes (events, reclaims), ms.
SUPERVISOR_PUSH_MS = 1000
#: Linger and send timeout of the ``shutdown`` message, ms.
SHUTDOWN_PUSH_MS = 2000
#: Messages the viewer tap queues before it drops (latest wins).
TAP_HWM = 64


def set_options(
    sock: zmq.Socket,
    *,
    linger_ms: int | None = None,
    sndtimeo_ms: int | None = None,
    sndhwm: int | None = None,
    max_message_bytes: int | None = None,
) -> zmq.Socket:
    """Apply the given socket options (None: leave the default); returns ``sock``."""
    for opt, value in (
        (zmq.LINGER, linger_ms),
        (zmq.SNDTIMEO, sndtimeo_ms),
        (zmq.SNDHWM, sndhwm),
        (zmq.MAXMSGSIZE, max_message_bytes),
    ):
        if value is not None:
            sock.setsockopt(opt, value)
    return sock


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
