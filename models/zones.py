"""Zones, lines, dwell, occupancy counts and alert rules for one stream (pure logic).

:class:`ZoneAnalytics` is called once per frame, after tracking, with the frame's boxes, their
labels and track ids, the action forecasts and the frame's ``pts``. It returns the frame's
events as ``(type, fields)`` pairs, in this order: ``zone.exit``, ``zone.enter``,
``zone.dwell``, ``line.cross``, ``zone.count``, ``alert`` (each sorted by track, then by the
configured order of zones, lines and rules).

Conventions:

- The anchor of a box is its bottom centre ``((x1 + x2) / 2, y2)``, where the feet are.
- Zone polygons and line points are relative to the frame (0..1) unless ``pixels`` is set.
- A track is in a zone once its anchor has been inside for ``inertia_frames`` consecutive
  frames in which the track was seen (and out once it has been outside as long), so a box
  flickering on a boundary is not a stream of events.
- A line's side of a point is the sign of the cross product ``(p2 - p1) x (a - p1)`` in image
  coordinates (x right, y down); a crossing from the positive side to the negative side is
  ``in`` (for a line drawn from top to bottom, that is left to right in the picture). A
  crossing counts only where the anchor's path meets the segment itself (its extent), once
  the new side has held for the line's ``inertia_frames``.
- Time is the stream's ``pts`` (seconds), never the wall clock, so reruns give the same events.

Only tracked boxes (track id >= 0) enter, exit, dwell, cross and alert; ``zone.count`` counts
every box of the zone's classes whose anchor is inside, debounced by ``inertia_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AlertRule",
    "Line",
    "Zone",
    "ZoneAnalytics",
    "anchors",
    "points_in_polygons",
]

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Zone:
    """A polygon zone. ``polygon``: ``(k, 2)`` vertices, x then y, relative (0..1) unless
    ``pixels``; ``classes``: labels that count (None: all); ``dwell_s``: emit ``zone.dwell``
    once per stay that lasts this long (None: never)."""

    name: str
    polygon: tuple[tuple[float, float], ...]
    classes: tuple[str, ...] | None = None
    inertia_frames: int = 3
    dwell_s: float | None = None
    pixels: bool = False


@dataclass(frozen=True)
class Line:
    """A counting line: the segment ``points[0] -> points[1]`` (relative unless ``pixels``)."""

    name: str
    points: tuple[tuple[float, float], tuple[float, float]]
    classes: tuple[str, ...] | None = None
    inertia_frames: int = 2
    pixels: bool = False


@dataclass(frozen=True)
class AlertRule:
    """An alert: fires when a track's forecast of ``action`` at ``horizon_s`` (None: any
    horizon) has ``p >= p_min``, or when a track has stayed ``dwell_s`` in a zone; with
    ``zone`` set, only while the track is in that zone. At most once per ``cooldown_s`` of
    stream time per (rule, track); a dwell rule fires once per stay."""

    name: str
    severity: str = "medium"
    cooldown_s: float = 30.0
    action: str | None = None
    horizon_s: float | None = None
    p_min: float = 0.5
    zone: str | None = None
    dwell_s: float | None = None

    def __post_init__(self) -> None:
        if (self.action is None) == (self.dwell_s is None):
            raise ValueError(f"alert {self.name!r}: give exactly one of action or dwell_s")


def anchors(xyxy: np.ndarray) -> np.ndarray:
    """Bottom centres ``(n, 2)`` float64 of boxes ``xyxy (n, 4)`` (pixels)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2.0, xyxy[:, 3]], axis=1)


def points_in_polygons(points: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """Even-odd rule: ``(n, z)`` bool, True where point ``i`` is inside polygon ``j``.

    ``points``: ``(n, 2)``; ``polygons``: ``z`` arrays ``(k_j, 2)``, same units. All polygons
    are tested at once (one ray cast over every edge), so 100 points x 20 zones is a few
    array operations.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not polygons:
        return np.zeros((len(points), 0), bool)
    a = np.concatenate([np.asarray(p, np.float64) for p in polygons])
    b = np.concatenate([np.roll(np.asarray(p, np.float64), -1, axis=0) for p in polygons])
    starts = np.cumsum([0] + [len(p) for p in polygons[:-1]])
    if len(points) == 0:
        return np.zeros((0, len(polygons)), bool)
    px, py = points[:, :1], points[:, 1:]
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    straddles = (ay > py) != (by > py)  # (n, E)
    dy = np.where(by == ay, 1.0, by - ay)  # horizontal edges never straddle; avoid 0/0
    x_cross = ax + (py - ay) * (bx - ax) / dy
    crossings = (straddles & (px < x_cross)).astype(np.int32)
    return (np.add.reduceat(crossings, starts, axis=1) % 2).astype(bool)


@dataclass
class _Stay:
    start_pts: float  # first frame of the run of inside frames that made the track enter
    dwell_emitted: bool = False


@dataclass
class _TrackState:
    label: str
    inside: np.ndarray  # (z,) bool, debounced
    run: np.ndarray  # (z,) int, consecutive frames the raw state disagreed with ``inside``
    run_start: np.ndarray  # (z,) float, pts of the first frame of that run
    stays: dict[int, _Stay] = field(default_factory=dict)  # zone index -> open stay
    side: np.ndarray | None = None  # (l,) int8: debounced side of each line (0: none yet)
    side_run: np.ndarray | None = None  # (l,) frames the other side has held
    side_from: np.ndarray | None = None  # (l, 2): last anchor on the debounced side
    last_pts: float = 0.0


class ZoneAnalytics:
    """Zones, lines and alert rules of one stream of ``width`` x ``height`` pixels.

    Args:
        zones, lines, rules: the stream's zones, lines and alert rules (in config order).
        width, height: the frame size, pixels (relative coordinates are scaled by it).
    """

    def __init__(
        self,
        zones: list[Zone],
        lines: list[Line],
        rules: list[AlertRule],
        width: int,
        height: int,
    ) -> None:
        self.zones, self.lines, self.rules = list(zones), list(lines), list(rules)
        scale = np.array([width, height], np.float64)
        self._polys = [
            np.asarray(z.polygon, np.float64) * (1.0 if z.pixels else scale) for z in self.zones
        ]
        self._segs = [
            np.asarray(ln.points, np.float64) * (1.0 if ln.pixels else scale) for ln in self.lines
        ]
        self._zone_index = {z.name: i for i, z in enumerate(self.zones)}
        for rule in self.rules:
            if rule.zone is not None and rule.zone not in self._zone_index:
                raise ValueError(f"alert {rule.name!r}: unknown zone {rule.zone!r}")
        self._inertia = np.array([z.inertia_frames for z in self.zones], np.int64)
        self._line_inertia = np.array([ln.inertia_frames for ln in self.lines], np.int64)
        self._tracks: dict[int, _TrackState] = {}
        self.count_in = [0] * len(self.lines)
        self.count_out = [0] * len(self.lines)
        # zone.count debounce per (zone, label): published count, candidate, frames held.
        self._counts: dict[tuple[int, str], int] = {}
        self._count_cand: dict[tuple[int, str], tuple[int, int]] = {}
        self._last_fired: dict[tuple[int, int], float] = {}  # (rule, track) -> pts
        self._dwell_fired: set[tuple[int, int, int, float]] = set()  # (rule, track, zone, stay)

    # --- public -----------------------------------------------------------------------------

    def update(
        self,
        pts: float,
        xyxy: np.ndarray,
        labels: list[str],
        track_ids: np.ndarray | None,
        forecasts: list[Any] = (),  # type: ignore[assignment]
        ended: list[int] = (),  # type: ignore[assignment]
    ) -> list[Event]:
        """Events of one frame.

        Args:
            pts: the frame's presentation time, seconds.
            xyxy: ``(n, 4)`` boxes, pixels.
            labels: ``n`` class names.
            track_ids: ``(n,)`` track ids (-1: untracked), or None.
            forecasts: the frame's :class:`models.results.ActionForecast` objects.
            ended: tracks that ended at this frame (their stays end with a ``zone.exit``).
        """
        pts = float(pts)
        n = len(labels)
        tids = (
            np.full(n, -1, np.int64) if track_ids is None else np.asarray(track_ids, np.int64)
        )
        pts_anchor = anchors(xyxy)
        inside = points_in_polygons(pts_anchor, self._polys)  # (n, z)
        exits: list[Event] = []
        enters: list[Event] = []
        dwells: list[Event] = []
        crosses: list[Event] = []
        for tid in sorted(int(t) for t in ended):
            exits += self._end_track(tid, pts)
        order = sorted((int(t), i) for i, t in enumerate(tids.tolist()) if t >= 0)
        for tid, i in order:
            state = self._tracks.get(tid)
            if state is None:
                state = self._new_state(labels[i])
                self._tracks[tid] = state
            state.last_pts = pts
            ex, en, dw = self._zones_step(tid, state, inside[i], pts)
            exits += ex
            enters += en
            dwells += dw
            if self.lines:
                crosses += self._lines_step(tid, state, pts_anchor[i])
        counts = self._count_step(inside, labels)
        alerts = self._alerts_step(pts, forecasts, dwells)
        return exits + enters + dwells + crosses + counts + alerts

    def finish(self, pts: float | None = None) -> list[Event]:
        """End of stream (or reset): ``zone.exit`` for every open stay; state forgotten.
        Occupancy counts go back to 0 silently (a new stream segment starts empty)."""
        events: list[Event] = []
        for tid in sorted(self._tracks):
            state = self._tracks[tid]
            events += self._end_track(tid, state.last_pts if pts is None else pts)
        self._counts.clear()
        self._count_cand.clear()
        self._last_fired.clear()
        return events

    def occupancy(self) -> dict[str, dict[str, int]]:
        """Published occupancy: ``{zone: {label: count}}`` (zones with no count left out)."""
        out: dict[str, dict[str, int]] = {}
        for (zi, label), count in sorted(self._counts.items()):
            out.setdefault(self.zones[zi].name, {})[label] = count
        return out

    # --- zones ------------------------------------------------------------------------------

    def _new_state(self, label: str) -> _TrackState:
        z, nl = len(self.zones), len(self.lines)
        return _TrackState(
            label=label,
            inside=np.zeros(z, bool),
            run=np.zeros(z, np.int64),
            run_start=np.zeros(z, np.float64),
            side=np.zeros(nl, np.int8),
            side_run=np.zeros(nl, np.int64),
            side_from=np.zeros((nl, 2), np.float64),
        )

    def _applies(self, classes: tuple[str, ...] | None, label: str) -> bool:
        return classes is None or label in classes

    def _zones_step(
        self, tid: int, st: _TrackState, raw: np.ndarray, pts: float
    ) -> tuple[list[Event], list[Event], list[Event]]:
        exits: list[Event] = []
        enters: list[Event] = []
        dwells: list[Event] = []
        if not len(self.zones):
            return exits, enters, dwells
        differs = raw != st.inside
        st.run_start = np.where(differs & (st.run == 0), pts, st.run_start)
        st.run = np.where(differs, st.run + 1, 0)
        for zi in np.flatnonzero(st.run >= self._inertia).tolist():
            zone = self.zones[zi]
            st.inside[zi] = raw[zi]
            st.run[zi] = 0
            if not self._applies(zone.classes, st.label):
                continue
            base = {"track": tid, "label": st.label, "zone": zone.name}
            if raw[zi]:
                st.stays[zi] = _Stay(start_pts=float(st.run_start[zi]))
                enters.append(("zone.enter", base))
            else:
                stay = st.stays.pop(zi, None)
                if stay is not None:
                    dwell = round(float(st.run_start[zi]) - stay.start_pts, 6)
                    exits.append(("zone.exit", {**base, "dwell_s": dwell}))
        for zi, stay in sorted(st.stays.items()):
            zone = self.zones[zi]
            if zone.dwell_s is not None and not stay.dwell_emitted:
                if pts - stay.start_pts >= zone.dwell_s:
                    stay.dwell_emitted = True
                    fields = {"track": tid, "label": st.label, "zone": zone.name}
                    dwells.append(("zone.dwell", {**fields, "dwell_s": _dwell(pts, stay)}))
        return exits, enters, dwells

    def _end_track(self, tid: int, pts: float) -> list[Event]:
        st = self._tracks.pop(tid, None)
        if st is None:
            return []
        events: list[Event] = []
        for zi, stay in sorted(st.stays.items()):
            fields = {"track": tid, "label": st.label, "zone": self.zones[zi].name}
            events.append(("zone.exit", {**fields, "dwell_s": _dwell(st.last_pts, stay)}))
        for key in [k for k in self._last_fired if k[1] == tid]:
            del self._last_fired[key]
        self._dwell_fired = {k for k in self._dwell_fired if k[1] != tid}
        return events

    def _count_step(self, inside: np.ndarray, labels: list[str]) -> list[Event]:
        events: list[Event] = []
        for zi, zone in enumerate(self.zones):
            raw: dict[str, int] = {}
            for i in np.flatnonzero(inside[:, zi]).tolist():
                if self._applies(zone.classes, labels[i]):
                    raw[labels[i]] = raw.get(labels[i], 0) + 1
            known = {label for (z, label) in self._counts if z == zi}
            known |= {label for (z, label) in self._count_cand if z == zi}
            for label in sorted(known | set(raw)):
                key, now = (zi, label), raw.get(label, 0)
                if now == self._counts.get(key, 0):
                    self._count_cand.pop(key, None)
                    continue
                cand, held = self._count_cand.get(key, (None, 0))
                held = held + 1 if cand == now else 1
                if held < zone.inertia_frames:
                    self._count_cand[key] = (now, held)
                    continue
                self._count_cand.pop(key, None)
                self._counts[key] = now
                events.append(("zone.count", {"zone": zone.name, "label": label, "count": now}))
        return events

    # --- lines ------------------------------------------------------------------------------

    def _lines_step(self, tid: int, st: _TrackState, anchor: np.ndarray) -> list[Event]:
        events: list[Event] = []
        assert st.side is not None and st.side_run is not None and st.side_from is not None
        for li, (seg, line) in enumerate(zip(self._segs, self.lines)):
            if not self._applies(line.classes, st.label):
                continue
            p1, p2 = seg
            d = p2 - p1
            cross = d[0] * (anchor[1] - p1[1]) - d[1] * (anchor[0] - p1[0])
            side = int(np.sign(cross))
            if side == 0:
                continue  # on the line: no side yet
            if st.side[li] == 0:
                st.side[li], st.side_from[li] = side, anchor
                continue
            if side == st.side[li]:
                st.side_run[li] = 0
                st.side_from[li] = anchor
                continue
            st.side_run[li] += 1
            if st.side_run[li] < self._line_inertia[li]:
                continue
            # The new side held: count it if the path from the last anchor on the old side
            # meets the segment (not its extension beyond the end points).
            before = st.side_from[li].copy()
            st.side[li], st.side_run[li], st.side_from[li] = side, 0, anchor
            if not _meets_segment(before, anchor, p1, p2):
                continue
            direction = "in" if side < 0 else "out"
            if direction == "in":
                self.count_in[li] += 1
            else:
                self.count_out[li] += 1
            events.append(
                (
                    "line.cross",
                    {
                        "track": tid,
                        "label": st.label,
                        "line": line.name,
                        "direction": direction,
                        "count_in": self.count_in[li],
                        "count_out": self.count_out[li],
                    },
                )
            )
        return events

    # --- alerts -----------------------------------------------------------------------------

    def _alerts_step(self, pts: float, forecasts: Any, dwells: list[Event]) -> list[Event]:
        if not self.rules:
            return []
        events: list[Event] = []
        by_track: dict[int, list[Any]] = {}
        for f in forecasts:
            by_track.setdefault(int(f.track_id), []).append(f)
        for ri, rule in enumerate(self.rules):
            zi = self._zone_index.get(rule.zone) if rule.zone is not None else None
            if rule.action is not None:
                for tid in sorted(by_track):
                    st = self._tracks.get(tid)
                    if st is None or (zi is not None and zi not in st.stays):
                        continue
                    best = None
                    for f in by_track[tid]:
                        if rule.horizon_s is not None and abs(f.horizon_s - rule.horizon_s) > 1e-6:
                            continue
                        p = float(f.probs.get(rule.action, 0.0))
                        if p >= rule.p_min and (best is None or p > best[0]):
                            best = (p, f.horizon_s)
                    if best is None or not self._cooled(ri, tid, pts, rule):
                        continue
                    reason = {
                        "action": rule.action,
                        "horizon_s": best[1],
                        "p": round(best[0], 4),
                        "p_min": rule.p_min,
                    }
                    events.append(self._alert(rule, tid, rule.zone, reason))
            else:
                assert rule.dwell_s is not None
                for tid in sorted(self._tracks):
                    st = self._tracks[tid]
                    for szi, stay in sorted(st.stays.items()):
                        if zi is not None and szi != zi:
                            continue
                        dwell = pts - stay.start_pts
                        key = (ri, tid, szi, stay.start_pts)
                        if dwell < rule.dwell_s or key in self._dwell_fired:
                            continue
                        if not self._cooled(ri, tid, pts, rule):
                            continue
                        self._dwell_fired.add(key)
                        zone = self.zones[szi].name
                        reason = {"dwell_s": round(dwell, 3), "min_dwell_s": rule.dwell_s}
                        events.append(self._alert(rule, tid, zone, reason))
        return events

    def _cooled(self, ri: int, tid: int, pts: float, rule: AlertRule) -> bool:
        last = self._last_fired.get((ri, tid))
        if last is not None and pts - last < rule.cooldown_s:
            return False
        self._last_fired[ri, tid] = pts
        return True

    def _alert(self, rule: AlertRule, tid: int, zone: str | None, reason: dict) -> Event:
        return (
            "alert",
            {
                "name": rule.name,
                "severity": rule.severity,
                "track": tid,
                "zone": zone,
                "reason": reason,
            },
        )


def _dwell(pts: float, stay: _Stay) -> float:
    return round(max(pts - stay.start_pts, 0.0), 6)


def _meets_segment(a: np.ndarray, b: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> bool:
    """Whether the path ``a -> b`` meets the segment ``p1 -> p2`` (end points included)."""
    d, e = b - a, p2 - p1
    denom = d[0] * e[1] - d[1] * e[0]
    if denom == 0:
        return False  # parallel: a path along the line never crosses it
    w = p1 - a
    t = (w[0] * e[1] - w[1] * e[0]) / denom  # along the path
    u = (w[0] * d[1] - w[1] * d[0]) / denom  # along the segment
    return -1e-9 <= t <= 1 + 1e-9 and -1e-9 <= u <= 1 + 1e-9
