"""Per-frame analytics shared by the process graph and in-process runners.

:class:`StreamAnalytics` turns each stream's :class:`FrameResult` sequence into events: people
tracking (``track.start``/``track.end``), action forecasts (``action.forecast``), object
counts (``objects.count``) and, where zones, lines and alert rules are configured, their
events (``zone.*``, ``line.cross``, ``alert``; see :mod:`models.zones`). It mutates the
results (track ids, forecasts) and depends only on the input sequence, so the same frames
always give the same events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.results import FrameResult
from pipeline.events import people_events, result_event
from stream import events as ev

if TYPE_CHECKING:
    from pipeline.config import VigilConfig


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
    def from_config(cls, cfg: VigilConfig) -> StreamAnalytics:
        """From the run's config: its ``people``, ``zones``, ``lines`` and ``alerts``."""
        scene = [[item.model_dump(mode="json") for item in items]
                 for items in (cfg.zones, cfg.lines, cfg.alerts)]  # fmt: skip
        return cls(cfg.people.model_dump(mode="json"), *scene)

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
            events += people_events(pairs, result)
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
        events = people_events(people.finish(), last) if people is not None else []
        if zones is not None:
            events += people_events(zones.finish(), last)
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
        return people_events(pairs, result)


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
        return result_event("objects.count", result, counts=counts)


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
