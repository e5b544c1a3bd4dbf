"""Event bookkeeping that lets the graph survive a stage restart without losing or repeating
an event: :class:`SentEvents` (the analytics stage's numbered outbox), :class:`EventGate` (the
publish stage's journal-once gate) and :class:`OpenTracks` (the publish stage's ledger of open
tracks, ended for a crashed analytics stage). See ``resend``, ``resend_done`` and
``tracks_lost`` in :mod:`pipeline.protocol`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from models.results import FrameResult
from stream import events as ev


class OpenTracks:
    """The publish stage's ledger of tracks started and not yet ended, per stream, so that
    tracks a crashed analytics stage left open still get their ``track.end``.

    A restarted analytics process starts with a fresh tracker (ids from 1, as after a stream
    reset); it announces itself with a ``tracks_lost`` message and :meth:`end_all` ends every
    track the dead one had open, with ``reason: "restart"``. ``frames`` and ``duration_s``
    count the frames published with the track's id, stamped with the stream's last frame.
    Track events of an older analytics process that still arrive after that are
    :meth:`stale`: their tracks were ended for them.
    """

    def __init__(self) -> None:
        self._tracks: dict[tuple[str, int], dict[str, Any]] = {}
        self._last: dict[str, tuple[int | None, float | None, float]] = {}
        self.closed_below: int | None = None  # analytics gens whose tracks were all ended

    def __len__(self) -> int:
        return len(self._tracks)

    def event(self, event: dict[str, Any]) -> None:
        """Follow a published event (any type)."""
        kind, sid = event["type"], event["stream"]
        if kind == "track.start":
            self._tracks[sid, int(event["track"])] = {
                "label": event["label"],
                "frames": 0,
                "first_pts": event["pts"],
                "last_pts": event["pts"],
            }
        elif kind == "track.end":
            self._tracks.pop((sid, int(event["track"])), None)
        elif kind == "stream.offline":  # its analytics ended the stream's tracks before this
            for key in [k for k in self._tracks if k[0] == sid]:
                del self._tracks[key]
            self._last.pop(sid, None)

    def stale(self, event: dict[str, Any], gen: int | None) -> bool:
        """A track event from analytics process ``gen``, older than the last ``tracks_lost``."""
        return (
            gen is not None
            and self.closed_below is not None
            and gen < self.closed_below
            and event["type"] in ("track.start", "track.end")
        )

    def frame(self, result: FrameResult) -> None:
        """Follow a published frame: its tracks were seen at its pts."""
        sid = result.stream_id
        self._last[sid] = (result.frame_idx, result.pts, result.capture_ts)
        ids = result.detections.track_id
        for tid in [] if ids is None else ids[ids >= 0].tolist():
            track = self._tracks.get((sid, int(tid)))
            if track is not None:
                track["frames"] += 1
                track["last_pts"] = result.pts

    def end_all(self, reason: str, gen: int | None = None) -> list[dict[str, Any]]:
        """``track.end`` (with ``reason``) for every open track, by stream then id; forgets them.
        ``gen``: the new analytics process; track events of older ones are stale from now on."""
        self.closed_below = gen
        events = []
        for sid, tid in sorted(self._tracks, key=lambda k: (str(k[0]), k[1])):
            track = self._tracks[sid, tid]
            frame, pts, ts = self._last.get(sid, (None, track["last_pts"], time.time()))
            first, last = track["first_pts"], track["last_pts"]
            events.append(
                ev.make_event(
                    "track.end",
                    sid,
                    frame=frame,
                    pts=pts,
                    ts=ts,
                    track=tid,
                    label=track["label"],
                    frames=track["frames"],
                    duration_s=round(last - first, 6) if None not in (first, last) else 0.0,
                    reason=reason,
                )
            )
        self._tracks.clear()
        return events


#: Events the analytics stage keeps for a resend (and the longest run of skipped-over ids a
#: publish stage keeps welcoming: more could not be resent anyway).
RESEND_CAPACITY = 10_000


class SentEvents:
    """The analytics stage's outbox numbering: every event it sends the publish stage gets an
    id ``[gen, n]`` (``gen``: the analytics process's restart count, ``n`` from 1), and the
    newest ``capacity`` are kept (oldest evicted) so that a restarted publish stage can ask for
    the ones its dead predecessor received but had not journaled (see :class:`EventGate`)."""

    def __init__(self, gen: int, capacity: int = RESEND_CAPACITY) -> None:
        self.gen = gen
        self.capacity = capacity
        self.next = 1
        self._kept: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)

    def number(self, event: dict[str, Any]) -> list[int]:
        n, self.next = self.next, self.next + 1
        self._kept.append((n, event))
        return [self.gen, n]

    def after(self, eid: list[int] | None) -> tuple[list[tuple[list[int], dict[str, Any]]], int]:
        """The kept events after ``eid`` (the last one journaled; None: none ever was), and how
        many of those were evicted already (lost; the caller says so loudly)."""
        start = eid[1] if eid is not None and eid[0] == self.gen else 0
        kept = [([self.gen, n], event) for n, event in self._kept if n > start]
        first = kept[0][0][1] if kept else self.next
        return kept, max(first - (start + 1), 0)


class EventGate:
    """The publish stage's side of :class:`SentEvents`: each analytics event is journaled
    once, in id order within an analytics process (``gen``), also across a publish restart.

    A restarted publish stage starts ``holding``: it asks the analytics stage to send again
    every event after the last one journaled (``last``, from the journal) and holds what
    arrives until the answer's ``resend_done`` (or ``wait_s`` after :meth:`start`), then
    releases the held events sorted, without duplicates (the same event may come through the
    old pipe and the resend). Ids skipped over by a release that timed out stay welcome later
    (``missing``), so a slow resend is late, not dropped. Marks are kept per ``gen``: the
    last events of a dead analytics process may still arrive after its successor's first.
    """

    def __init__(self, last: list[int] | None, holding: bool, wait_s: float = 30.0) -> None:
        self.marks: dict[int, int] = {last[0]: last[1]} if last is not None else {}
        self.holding = holding
        self.wait_s = wait_s
        self.deadline = time.monotonic() + wait_s
        self.missing: set[tuple[int, int]] = set()
        self._held: dict[tuple[int, int], dict[str, Any]] = {}

    def start(self) -> None:
        """Start the clock of the wait for ``resend_done`` (once the stage is ready to read)."""
        self.deadline = time.monotonic() + self.wait_s

    def offer(self, eid: list[int], event: dict[str, Any]) -> list[tuple[list[int], dict]]:
        """Events to journal now, in order (none while holding or for a duplicate)."""
        key = (int(eid[0]), int(eid[1]))
        if self.holding:
            self._held.setdefault(key, event)
            return []
        return [(list(key), event)] if self._take(key) else []

    def release(self) -> list[tuple[list[int], dict[str, Any]]]:
        """Stop holding: the held events to journal, in id order, duplicates dropped."""
        self.holding = False
        held, self._held = self._held, {}
        return [(list(key), held[key]) for key in sorted(held) if self._take(key)]

    def _take(self, key: tuple[int, int]) -> bool:
        gen, n = key
        if key in self.missing:
            self.missing.discard(key)
            return True
        mark = self.marks.get(gen, 0)
        if n <= mark:
            return False  # journaled already
        if n - mark - 1 <= RESEND_CAPACITY:  # skipped over: still welcome if it comes later
            self.missing.update((gen, m) for m in range(mark + 1, n))
        self.marks[gen] = n
        return True
