"""The public event schema (version :data:`SCHEMA_VERSION`).

An event is one JSON object. Every event has ``v`` (schema version), ``seq`` (gap-free per
publisher, assigned when published), ``type``, ``stream`` (stream id), ``frame`` (frame index or
null), ``pts`` (seconds, or null), ``ts`` (ISO-8601 UTC with milliseconds and ``Z``), then the
fields of its type (see :data:`EVENT_FIELDS`). Keys keep this order so that serialised events
are byte-identical across runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1

#: Required type-specific fields per event type.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "stream.online": ("source", "width", "height", "fps"),
    "stream.offline": ("reason", "frames_read"),
    "stream.reconnect": ("reason", "attempt"),
    "objects.count": ("counts",),
    "track.start": ("track", "label"),
    "track.end": ("track", "label", "frames", "duration_s"),
    "action.forecast": ("track", "action", "horizon_s", "p"),
    "frame.dropped": ("count", "total"),
    "stage.restart": ("stage", "reason", "attempt"),
    "zone.enter": ("track", "label", "zone"),
    "zone.exit": ("track", "label", "zone", "dwell_s"),
    "zone.dwell": ("track", "label", "zone", "dwell_s"),
    "zone.count": ("zone", "label", "count"),
    "line.cross": ("track", "label", "line", "direction", "count_in", "count_out"),
    "alert": (
        "name",
        "severity",
        "track",
        "zone",
        "reason",
        "clip",
        "snapshot",
        "clip_start",
        "clip_end",
    ),
    "alert.clip": ("name", "track", "clip", "snapshot", "clip_start", "clip_end", "status"),
}
EVENT_TYPES = frozenset(EVENT_FIELDS)
_COMMON = ("v", "seq", "type", "stream", "frame", "pts", "ts")


def format_ts(unix_s: float) -> str:
    """``1795777262.345`` -> ``"2026-11-27T06:01:02.345Z"`` (UTC, millisecond precision)."""
    dt = datetime.fromtimestamp(round(unix_s, 3), tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def make_event(
    type: str, stream: str, *, frame: int | None, pts: float | None, ts: float, **fields: Any
) -> dict[str, Any]:
    """Build an event without ``seq`` (the publisher assigns it); validates the type's fields."""
    if type not in EVENT_FIELDS:
        raise ValueError(f"unknown event type {type!r}; known: {sorted(EVENT_TYPES)}")
    missing = [f for f in EVENT_FIELDS[type] if f not in fields]
    if missing:
        raise ValueError(f"event {type!r} lacks fields {missing}")
    event = {
        "v": SCHEMA_VERSION,
        "seq": None,
        "type": type,
        "stream": stream,
        "frame": frame,
        "pts": None if pts is None else round(float(pts), 6),
        "ts": format_ts(ts),
    }
    event.update(fields)
    return event


def validate_event(event: dict[str, Any]) -> None:
    """Raise ValueError naming the problem if ``event`` does not follow the schema."""
    for key in _COMMON:
        if key not in event:
            raise ValueError(f"event lacks {key!r}: {event}")
    if event["v"] != SCHEMA_VERSION:
        raise ValueError(f"event schema v{event['v']} is not v{SCHEMA_VERSION}")
    if event["type"] not in EVENT_FIELDS:
        raise ValueError(f"unknown event type {event['type']!r}")
    missing = [f for f in EVENT_FIELDS[event["type"]] if f not in event]
    if missing:
        raise ValueError(f"event {event['type']!r} lacks fields {missing}")


def dumps(event: dict[str, Any]) -> str:
    """Serialise one event as compact JSON (one line, keys in schema order)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
