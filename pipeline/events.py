"""Builders of the events the pipeline itself makes (one place for each type's stamp).

Every event is :func:`stream.events.make_event` with a stream, a frame index, a ``pts`` and a
``ts``; what differs is where the stamp comes from: a source frame (``stream.online``,
``stream.offline``, ``stream.reconnect``, ``frame.dropped``), a :class:`FrameResult` (people,
count, zone and alert events), the publish stage's view of a stream (``alert.clip``,
``track.end`` after a restart) or the supervisor (``stage.restart``, ``"*"``: no stream).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from models.results import FrameResult
from stream import events as ev


def online_event(stream_id: str, uri: str, info: Any, first: Any) -> dict[str, Any]:
    """``stream.online`` for a source with ``info`` (StreamInfo) and its first SourceFrame."""
    from stream.redact import redact
    return ev.make_event(
        "stream.online",
        stream_id,
        frame=first.frame_idx,
        pts=first.pts,
        ts=first.capture_ts,
        source=redact(uri),
        width=info.width,
        height=info.height,
        fps=round(info.fps, 3),
    )


def offline_event(
    stream_id: str, last: Any, reason: str, frames_read: int, detail: str = ""
) -> dict[str, Any]:
    """``stream.offline`` stamped with the last SourceFrame read (or now, if none was)."""
    return at_last_frame(
        "stream.offline",
        stream_id,
        last,
        on_stream_clock=True,
        reason=reason,
        frames_read=frames_read,
        detail=detail,
    )


def at_last_frame(
    type_: str, stream_id: str, last: Any, on_stream_clock: bool = False, **fields: Any
) -> dict[str, Any]:
    """An event of a stream, stamped with its ``last`` SourceFrame (if any) and now; with
    ``on_stream_clock``, ``ts`` is that frame's capture time, like the events about frames (a
    file's clock is its container's, not the wall clock)."""
    return ev.make_event(
        type_,
        stream_id,
        frame=last.frame_idx if last else None,
        pts=last.pts if last else None,
        ts=last.capture_ts if last and on_stream_clock else time.time(),
        **fields,
    )


def result_event(type_: str, result: FrameResult, **fields: Any) -> dict[str, Any]:
    """An event about one frame, stamped with its :class:`FrameResult`."""
    return ev.make_event(
        type_,
        result.stream_id,
        frame=result.frame_idx,
        pts=result.pts,
        ts=result.capture_ts,
        **fields,
    )


def people_events(pairs: list[tuple[str, dict]], result: FrameResult) -> list[dict[str, Any]]:
    """``(type, fields)`` pairs of the people analytics -> events stamped with ``result``."""
    return [result_event(kind, result, **fields) for kind, fields in pairs]


def clip_event(stream_id: str, fields: dict[str, Any], frame: Any, pts: Any, ts: float) -> dict:
    """An ``alert.clip`` event of :meth:`stream.clips.ClipRecorder` ``fields``."""
    return ev.make_event("alert.clip", stream_id, frame=frame, pts=pts, ts=ts, **fields)


def unix_ts(ts: str) -> float:
    """``"2026-11-27T06:01:02.345Z"`` -> Unix seconds (an event's ``ts`` back)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def restart_event(stage: str, reason: str, attempt: int, delay_s: float, detail: str) -> dict:
    """The supervisor's ``stage.restart`` (stream ``"*"``, stamped now)."""
    return ev.make_event(
        "stage.restart",
        "*",
        frame=None,
        pts=None,
        ts=time.time(),
        stage=stage,
        reason=reason,
        attempt=attempt,
        delay_s=round(delay_s, 3),
        detail=detail,
    )
