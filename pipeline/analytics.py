"""Per-frame analytics shared by the process graph and in-process runners.

:class:`StreamAnalytics` turns each stream's :class:`FrameResult` sequence into events: people
tracking (``track.start``/``track.end``), action forecasts (``action.forecast``), object
counts (``objects.count``) and, where zones, lines and alert rules are configured, their
events (``zone.*``, ``line.cross``, ``alert``; see :mod:`models.zones`). It mutates the
results (track ids, forecasts) and depends only on the input sequence, so the same frames
always give the same events.
"""

from __future__ import annotations

import time
from collections import deque
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
    return ev.make_event(
        "stream.offline",
        stream_id,
        frame=last.frame_idx if last else None,
        pts=last.pts if last else None,
        ts=last.capture_ts if last else time.time(),
        reason=reason,
        frames_read=frames_read,
        detail=detail,
    )


class StreamAnalytics:
    """Analytics for any number of streams, each with its own tracker state.

    Args:
        people_cfg: the ``people`` config section as a dict (see ``PeopleConfig``).
        zones, lines, alerts: the ``zones``, ``lines`` and ``alerts`` config sections as lists
            of dicts (see ``ZoneConfig``, ``LineConfig``, ``AlertConfig``).
    """

    def __init__(
        self,
        people_cfg: dict[str, Any],
        zones: list[dict[str, Any]] | None = None,
        lines: list[dict[str, Any]] | None = None,
        alerts: list[dict[str, Any]] | None = None,
    ) -> None:
        self.people_cfg = people_cfg
        self.forecaster = _make_forecaster(people_cfg) if people_cfg["enabled"] else None
        self.counter = ObjectCounter()
        self.scene = {"zones": zones or [], "lines": lines or [], "alerts": alerts or []}
        self._people: dict[str, Any] = {}
        self._zones: dict[str, Any] = {}
        self._clips: dict[str, ClipPlanner] = {}
        self._last: dict[str, FrameResult] = {}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> StreamAnalytics:
        """From a whole config dict (``VigilConfig.model_dump(mode="json")``)."""
        return cls(cfg["people"], cfg.get("zones"), cfg.get("lines"), cfg.get("alerts"))

    def update(self, result: FrameResult) -> list[dict[str, Any]]:
        """Events of one frame, in order; fills ``result``'s track ids and forecasts."""
        sid = result.stream_id
        self._last[sid] = result
        events: list[dict[str, Any]] = []
        ended: list[int] = []
        if self.people_cfg["enabled"]:
            if sid not in self._people:
                self._people[sid] = _make_people(self.people_cfg, result, self.forecaster)
            pairs = self._people[sid].update(result)
            ended = [int(f["track"]) for kind, f in pairs if kind == "track.end"]
            events += _people_events(pairs, result)
        count = self.counter.update(result)
        if count is not None:
            events.append(count)
        zones = self._zone_analytics(result)
        if zones is not None:
            det = result.detections
            labels = [result.class_name(int(c)) for c in det.class_id.tolist()]
            pairs = zones.update(
                result.pts, det.xyxy, labels, det.track_id, result.forecasts, ended
            )
            events += self._scene_events(pairs, result)
        return events

    def finish(self, stream_id: str) -> list[dict[str, Any]]:
        """End of a stream: ``track.end`` for its open tracks, then ``zone.exit`` for their
        open stays, stamped with its last frame."""
        people, last = self._people.pop(stream_id, None), self._last.pop(stream_id, None)
        zones = self._zones.pop(stream_id, None)
        self._clips.pop(stream_id, None)
        if last is None:
            return []
        events = _people_events(people.finish(), last) if people is not None else []
        if zones is not None:
            events += _people_events(zones.finish(), last)
        return events

    def occupancy(self, stream_id: str) -> dict[str, dict[str, int]]:
        """The stream's published zone occupancy ``{zone: {label: count}}``."""
        zones = self._zones.get(stream_id)
        return zones.occupancy() if zones is not None else {}

    def _zone_analytics(self, result: FrameResult) -> Any:
        sid = result.stream_id
        if sid not in self._zones:
            self._zones[sid] = make_zone_analytics(
                self.scene, sid, result.width, result.height
            )
        return self._zones[sid]

    def _scene_events(
        self, pairs: list[tuple[str, dict]], result: FrameResult
    ) -> list[dict[str, Any]]:
        sid = result.stream_id  # only this stream's rules: another stream's may share a name
        rules = {a["name"]: a for a in self.scene["alerts"] if a.get("stream") in (None, sid)}
        for kind, fields in pairs:
            if kind == "alert":
                planner = self._clips.setdefault(result.stream_id, ClipPlanner(result.stream_id))
                fields.update(planner.plan(fields, rules[fields["name"]].get("clip"), result))
        return _people_events(pairs, result)


def make_zone_analytics(
    scene: dict[str, list[dict[str, Any]]], stream_id: str, width: int, height: int
) -> Any:
    """A :class:`models.zones.analytics.ZoneAnalytics` for the zones, lines and alerts of
    ``scene`` that apply to ``stream_id`` (``stream`` unset or equal), or None when there are
    none."""
    from models.zones.analytics import ZoneAnalytics
    from models.zones.rules import AlertRule, Line, Zone

    def mine(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in items if i.get("stream") in (None, stream_id)]

    zones = [
        Zone(
            name=z["name"],
            polygon=tuple(tuple(p) for p in z["polygon"]),
            classes=tuple(z["classes"]) if z.get("classes") is not None else None,
            inertia_frames=z.get("inertia_frames", 3),
            dwell_s=z.get("dwell_s"),
            pixels=z.get("pixels", False),
        )
        for z in mine(scene["zones"])
    ]
    lines = [
        Line(
            name=ln["name"],
            points=(tuple(ln["points"][0]), tuple(ln["points"][1])),
            classes=tuple(ln["classes"]) if ln.get("classes") is not None else None,
            inertia_frames=ln.get("inertia_frames", 2),
            pixels=ln.get("pixels", False),
        )
        for ln in mine(scene["lines"])
    ]
    rules = [
        AlertRule(
            name=a["name"],
            severity=a.get("severity", "medium"),
            cooldown_s=a.get("cooldown_s", 30.0),
            action=a["when"].get("action"),
            horizon_s=a["when"].get("horizon_s"),
            p_min=a["when"].get("p_min", 0.5),
            zone=a["when"].get("zone"),
            dwell_s=a["when"].get("dwell_s"),
            persist_frames=a["when"].get("persist_frames", 2),
        )
        for a in mine(scene["alerts"])
    ]
    if not (zones or lines or rules):
        return None
    return ZoneAnalytics(zones, lines, rules, width, height)


def clip_recorder_from_config(cfg: dict[str, Any], out_dir: Any, deterministic: bool) -> Any:
    """The publish side's :class:`stream.clips.ClipRecorder` for ``cfg`` (a whole config as a
    dict), or None when no alert asks for a clip."""
    pre = [a["clip"]["pre_s"] for a in cfg.get("alerts") or [] if a.get("clip")]
    if not pre:
        return None
    from stream.clips import ClipRecorder

    out = cfg["output"]
    mb = 1 << 20
    return ClipRecorder(
        out_dir,
        max_pre_s=max(pre),
        deterministic=deterministic,
        buffer_bytes=int(out.get("clip_buffer_mb", 512.0) * mb),
        max_age_s=out.get("clips_max_age_s"),
        max_bytes=int(out["clips_max_mb"] * mb) if out.get("clips_max_mb") else None,
        codec=out.get("video_codec", "libx264"),
        crf=out.get("video_crf", 23),
    )


def clip_event(stream_id: str, fields: dict[str, Any], frame: Any, pts: Any, ts: float) -> dict:
    """An ``alert.clip`` event of :meth:`stream.clips.ClipRecorder` ``fields``."""
    return ev.make_event("alert.clip", stream_id, frame=frame, pts=pts, ts=ts, **fields)


class ClipPlanner:
    """Names each alert's clip and snapshot (paths relative to the output folder) and its
    window in stream ``pts``: ``pre_s`` before the trigger to ``post_s`` after it. An alert
    whose window starts before the stream's open clip ends extends that clip (same file)
    instead of starting another, unless the clip would then be longer than ``max_s``.
    Names come from the trigger's ``ts`` (for files: the container's start time plus ``pts``),
    so batch reruns name clips identically."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._open: dict[str, Any] | None = None  # {"clip", "start", "end"}

    def plan(
        self, alert: dict[str, Any], clip_cfg: dict[str, Any] | None, result: FrameResult
    ) -> dict[str, Any]:
        """``clip``, ``snapshot``, ``clip_start``, ``clip_end`` of one ``alert``'s fields."""
        if clip_cfg is None:
            return {"clip": None, "snapshot": None, "clip_start": None, "clip_end": None}
        pts = float(result.pts)
        start, end = pts - clip_cfg["pre_s"], pts + clip_cfg["post_s"]
        stamp = ev.format_ts(result.capture_ts).replace("-", "").replace(":", "")
        folder = f"clips/{self.stream_id}"
        snapshot = f"{folder}/{stamp}-{alert['name']}-{alert['track']}.jpg"
        longest = clip_cfg.get("max_s", 60.0)  # bounds the recorder's open clip in time
        if (
            self._open is not None
            and start <= self._open["end"]
            and end - self._open["start"] <= longest + 1e-6
        ):
            self._open["end"] = max(self._open["end"], end)
        else:
            self._open = {"clip": f"{folder}/{stamp}-{alert['name']}.mp4", "start": max(start, 0.0)}
            self._open["end"] = end
        return {
            "clip": self._open["clip"],
            "snapshot": snapshot,
            "clip_start": round(self._open["start"], 6),
            "clip_end": round(self._open["end"], 6),
        }


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


class ObjectCounter:
    """Per-stream ``objects.count`` events: emitted when the per-class counts change and the
    new counts have held for ``min_persist`` frames (so one flickering box is not an event)."""

    def __init__(self, min_persist: int = 3) -> None:
        self.min_persist = min_persist
        self._published: dict[str, dict[str, int]] = {}
        self._candidate: dict[str, tuple[dict[str, int], int]] = {}

    def update(self, result: FrameResult) -> dict[str, Any] | None:
        det = result.detections
        counts: dict[str, int] = {}
        for cid in det.class_id.tolist():
            name = result.class_name(cid)
            counts[name] = counts.get(name, 0) + 1
        counts = dict(sorted(counts.items()))
        sid = result.stream_id
        if counts == self._published.get(sid, {}):
            self._candidate.pop(sid, None)
            return None
        cand, seen = self._candidate.get(sid, (None, 0))
        seen = seen + 1 if cand == counts else 1
        self._candidate[sid] = (counts, seen)
        if seen < self.min_persist:
            return None
        self._published[sid] = counts
        self._candidate.pop(sid, None)
        return ev.make_event(
            "objects.count",
            sid,
            frame=result.frame_idx,
            pts=result.pts,
            ts=result.capture_ts,
            counts=counts,
        )


def _make_forecaster(people_cfg: dict[str, Any]) -> Any:
    if not people_cfg["forecast"]:
        return None
    import torch

    from models.people.action import ActionForecaster

    torch.set_num_threads(1)  # small LSTM; leave the cores to inference
    return ActionForecaster(
        weights=people_cfg["forecaster_weights"], horizons_s=people_cfg["horizons_s"]
    )


def _make_people(people_cfg: dict[str, Any], result: FrameResult, forecaster: Any) -> Any:
    from models.people.analytics import PeopleAnalytics

    names = result.class_names
    person_ids = {i for i, n in enumerate(names) if n == people_cfg["person_class"]}
    return PeopleAnalytics(
        person_class_ids=person_ids,
        forecaster=forecaster,
        tracker_kwargs={
            "high_thresh": people_cfg["track_high_thresh"],
            "low_thresh": people_cfg["track_low_thresh"],
            "max_age": people_cfg["track_max_age"],
        },
        min_confidence=people_cfg["min_confidence"],
        min_persist=people_cfg["min_persist"],
    )


def _people_events(pairs: list[tuple[str, dict]], result: FrameResult) -> list[dict[str, Any]]:
    return [
        ev.make_event(
            kind,
            result.stream_id,
            frame=result.frame_idx,
            pts=result.pts,
            ts=result.capture_ts,
            **fields,
        )
        for kind, fields in pairs
    ]
