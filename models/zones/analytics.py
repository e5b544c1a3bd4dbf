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

The rule types are in :mod:`models.zones.rules`, the geometry in :mod:`models.zones.geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.zones.geometry import PolygonSet, anchors, meets_segment
from models.zones.rules import AlertRule, Line, Zone

__all__ = ["ZoneAnalytics"]

Event = tuple[str, dict[str, Any]]


@dataclass
class _Stay:
    start_pts: float  # first frame of the run of inside frames that made the track enter
    dwell_emitted: bool = False


@dataclass
class _Track:
    label: str
    slot: int  # row of the track in the state arrays
    stays: dict[int, _Stay] = field(default_factory=dict)  # zone index -> open stay
    last_pts: float = 0.0


class ZoneAnalytics:
    """Zones, lines and alert rules of one stream of ``width`` x ``height`` pixels.

    Per-track state lives in arrays (a row per track, reused after the track ends), so a frame
    costs a few array operations over all tracks x zones and tracks x lines; Python loops run
    only over the changes (enters, exits, dwells, crossings).

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
        self._polys = PolygonSet(
            [np.asarray(z.polygon, np.float64) * (1.0 if z.pixels else scale) for z in self.zones]
        )
        segs = [
            np.asarray(ln.points, np.float64) * (1.0 if ln.pixels else scale) for ln in self.lines
        ]
        self._segs = segs
        self._p1 = np.array([s[0] for s in segs]).reshape(-1, 2)
        self._dir = np.array([s[1] - s[0] for s in segs]).reshape(-1, 2)
        self._zone_index = {z.name: i for i, z in enumerate(self.zones)}
        for rule in self.rules:
            if rule.zone is not None and rule.zone not in self._zone_index:
                raise ValueError(f"alert {rule.name!r}: unknown zone {rule.zone!r}")
        self._inertia = np.array([z.inertia_frames for z in self.zones], np.int64)
        self._dwell_s = np.array(
            [np.inf if z.dwell_s is None else z.dwell_s for z in self.zones], np.float64
        )
        self._line_inertia = np.array([ln.inertia_frames for ln in self.lines], np.int64)
        self._applies_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._tracks: dict[int, _Track] = {}
        self._free: list[int] = []
        self._alloc(64)
        self.count_in = [0] * len(self.lines)
        self.count_out = [0] * len(self.lines)
        # zone.count debounce per (zone, label): published count, candidate, frames held.
        self._counts: dict[tuple[int, str], int] = {}
        self._count_cand: dict[tuple[int, str], tuple[int, int]] = {}
        self._last_fired: dict[tuple[int, int], float] = {}  # (rule, track) -> pts
        self._persist: dict[tuple[int, int], int] = {}  # (rule, track) -> qualifying in a row
        self._dwell_fired: set[tuple[int, int, int, float]] = set()  # (rule, track, zone, stay)

    # --- public -----------------------------------------------------------------------------

    def update(
        self,
        pts: float,
        xyxy: np.ndarray,
        labels: list[str],
        track_ids: np.ndarray | None,
        forecasts: Any = (),
        ended: Any = (),
    ) -> list[Event]:
        """Events of one frame.

        Args:
            pts: the frame's presentation time, seconds.
            xyxy: ``(n, 4)`` boxes, pixels.
            labels: ``n`` class names.
            track_ids: ``(n,)`` track ids (-1: untracked), or None.
            forecasts: the frame's :class:`models.results.ActionForecast` objects.
            ended: ids of the tracks that ended at this frame (open stays get a ``zone.exit``).
        """
        pts = float(pts)
        n = len(labels)
        tids = np.full(n, -1, np.int64) if track_ids is None else np.asarray(track_ids, np.int64)
        feet = anchors(xyxy)
        inside = self._polys.contains(feet)  # (n, z)
        exits: list[Event] = []
        for tid in sorted(int(t) for t in ended):
            exits += self._end_track(tid, pts)
        rows = sorted((int(t), i) for i, t in enumerate(tids.tolist()) if t >= 0)
        enters: list[Event] = []
        dwells: list[Event] = []
        crosses: list[Event] = []
        if rows:
            order = np.array([i for _, i in rows])
            tracks = []
            for tid, i in rows:
                track = self._tracks.get(tid)
                if track is None:
                    track = self._tracks[tid] = _Track(labels[i], self._take_slot())
                track.last_pts = pts
                tracks.append((tid, track))
            slots = np.array([t.slot for _, t in tracks])
            zone_ok, line_ok = self._applies([labels[i] for i in order])
            if self.zones:
                ex, en, dw = self._zones_step(tracks, slots, inside[order] & zone_ok, pts)
                exits += ex
                enters += en
                dwells += dw
            if self.lines:
                crosses = self._lines_step(tracks, slots, feet[order], line_ok)
        counts = self._count_step(inside, labels)
        alerts = self._alerts_step(pts, forecasts)
        return exits + enters + dwells + crosses + counts + alerts

    def finish(self, pts: float | None = None) -> list[Event]:
        """End of stream (or reset): ``zone.exit`` for every open stay; state forgotten.
        Occupancy counts go back to 0 silently (a new stream segment starts empty)."""
        events: list[Event] = []
        for tid in sorted(self._tracks):
            track = self._tracks[tid]
            events += self._end_track(tid, track.last_pts if pts is None else pts)
        self._counts.clear()
        self._count_cand.clear()
        self._last_fired.clear()
        self._persist.clear()
        return events

    def occupancy(self) -> dict[str, dict[str, int]]:
        """Published occupancy: ``{zone: {label: count}}`` (zones with no count left out)."""
        out: dict[str, dict[str, int]] = {}
        for (zi, label), count in sorted(self._counts.items()):
            out.setdefault(self.zones[zi].name, {})[label] = count
        return out

    # --- state rows -------------------------------------------------------------------------

    def _alloc(self, cap: int) -> None:
        z, nl = len(self.zones), len(self.lines)
        old = getattr(self, "_cap", 0)

        def grow(name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> None:
            arr = np.full((cap, *shape), fill, dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)

        grow("_in", (z,), bool, False)  # debounced inside
        grow("_run", (z,), np.int64, 0)  # frames the raw state has disagreed with it
        grow("_run_start", (z,), np.float64, 0.0)  # pts of the first of those frames
        grow("_stay_start", (z,), np.float64, np.nan)  # open stay's start (NaN: none)
        grow("_dwelt", (z,), bool, False)  # zone.dwell sent for the open stay
        grow("_side", (nl,), np.int8, 0)  # debounced side of each line (0: none yet)
        grow("_side_run", (nl,), np.int64, 0)  # frames the other side has held
        grow("_side_from", (nl, 2), np.float64, 0.0)  # last anchor on the debounced side
        self._free += list(range(cap - 1, old - 1, -1))
        self._cap = cap

    def _take_slot(self) -> int:
        if not self._free:
            self._alloc(self._cap * 2)
        slot = self._free.pop()
        for name, fill in (("_in", False), ("_run", 0), ("_run_start", 0.0),
                           ("_stay_start", np.nan), ("_dwelt", False), ("_side", 0),
                           ("_side_run", 0), ("_side_from", 0.0)):  # fmt: skip
            getattr(self, name)[slot] = fill
        return slot

    def _applies(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(n, z)`` and ``(n, l)`` bool: whether each zone and line counts each label."""
        rows = []
        for label in labels:
            if label not in self._applies_cache:
                self._applies_cache[label] = (
                    np.array([_counts(z.classes, label) for z in self.zones], bool),
                    np.array([_counts(ln.classes, label) for ln in self.lines], bool),
                )
            rows.append(self._applies_cache[label])
        zone_ok = np.array([r[0] for r in rows], bool).reshape(len(labels), len(self.zones))
        line_ok = np.array([r[1] for r in rows], bool).reshape(len(labels), len(self.lines))
        return zone_ok, line_ok

    # --- zones ------------------------------------------------------------------------------

    def _zones_step(
        self, tracks: list[tuple[int, _Track]], slots: np.ndarray, raw: np.ndarray, pts: float
    ) -> tuple[list[Event], list[Event], list[Event]]:
        exits: list[Event] = []
        enters: list[Event] = []
        dwells: list[Event] = []
        state, run, run_start = self._in[slots], self._run[slots], self._run_start[slots]
        differs = raw != state
        run_start = np.where(differs & (run == 0), pts, run_start)
        run = np.where(differs, run + 1, 0)
        flips = run >= self._inertia
        state = np.where(flips, raw, state)
        run[flips] = 0
        self._in[slots], self._run[slots], self._run_start[slots] = state, run, run_start
        for k, zi in zip(*np.nonzero(flips)):  # row-major: by track, then zone
            tid, track = tracks[k]
            base = {"track": tid, "label": track.label, "zone": self.zones[zi].name}
            slot = int(slots[k])
            if raw[k, zi]:
                start = float(run_start[k, zi])
                track.stays[int(zi)] = _Stay(start_pts=start)
                self._stay_start[slot, zi], self._dwelt[slot, zi] = start, False
                enters.append(("zone.enter", base))
            else:
                stay = track.stays.pop(int(zi), None)
                self._stay_start[slot, zi] = np.nan
                if stay is not None:
                    dwell = round(float(run_start[k, zi]) - stay.start_pts, 6)
                    exits.append(("zone.exit", {**base, "dwell_s": dwell}))
        with np.errstate(invalid="ignore"):
            due = (pts - self._stay_start[slots] >= self._dwell_s) & ~self._dwelt[slots]
        for k, zi in zip(*np.nonzero(due)):
            tid, track = tracks[k]
            self._dwelt[slots[k], zi] = True
            stay = track.stays[int(zi)]
            stay.dwell_emitted = True
            fields = {"track": tid, "label": track.label, "zone": self.zones[zi].name}
            dwells.append(("zone.dwell", {**fields, "dwell_s": _dwell(pts, stay)}))
        return exits, enters, dwells

    def _end_track(self, tid: int, pts: float) -> list[Event]:
        track = self._tracks.pop(tid, None)
        if track is None:
            return []
        self._free.append(track.slot)
        events: list[Event] = []
        for zi, stay in sorted(track.stays.items()):
            fields = {"track": tid, "label": track.label, "zone": self.zones[zi].name}
            events.append(("zone.exit", {**fields, "dwell_s": _dwell(track.last_pts, stay)}))
        for key in [k for k in self._last_fired if k[1] == tid]:
            del self._last_fired[key]
        for key in [k for k in self._persist if k[1] == tid]:
            del self._persist[key]
        self._dwell_fired = {k for k in self._dwell_fired if k[1] != tid}
        return events

    def _count_step(self, inside: np.ndarray, labels: list[str]) -> list[Event]:
        events: list[Event] = []
        if not self.zones:
            return events
        zone_ok, _ = self._applies(labels)
        hits = inside & zone_ok
        present = np.flatnonzero(hits.any(axis=1)) if len(labels) else []
        raw: dict[tuple[int, str], int] = {}
        for i in present:
            for zi in np.flatnonzero(hits[i]).tolist():
                raw[zi, labels[i]] = raw.get((zi, labels[i]), 0) + 1
        for key in sorted(set(raw) | set(self._counts) | set(self._count_cand)):
            zi, label = key
            now = raw.get(key, 0)
            if now == self._counts.get(key, 0):
                self._count_cand.pop(key, None)
                continue
            cand, held = self._count_cand.get(key, (None, 0))
            held = held + 1 if cand == now else 1
            if held < self.zones[zi].inertia_frames:
                self._count_cand[key] = (now, held)
                continue
            self._count_cand.pop(key, None)
            self._counts[key] = now
            events.append(
                ("zone.count", {"zone": self.zones[zi].name, "label": label, "count": now})
            )
        return events

    # --- lines ------------------------------------------------------------------------------

    def _lines_step(
        self,
        tracks: list[tuple[int, _Track]],
        slots: np.ndarray,
        feet: np.ndarray,
        line_ok: np.ndarray,
    ) -> list[Event]:
        events: list[Event] = []
        rel_x = feet[:, :1] - self._p1[:, 0]  # (n, l)
        rel_y = feet[:, 1:] - self._p1[:, 1]
        side = np.sign(self._dir[:, 0] * rel_y - self._dir[:, 1] * rel_x).astype(np.int8)
        side[~line_ok] = 0  # a line that does not count the label never sees it
        cur, run = self._side[slots], self._side_run[slots]
        frm = self._side_from[slots]
        seen = side != 0
        first = seen & (cur == 0)
        same = seen & (side == cur)
        other = seen & ~first & ~same
        run = np.where(other, run + 1, np.where(same, 0, run))
        held = other & (run >= self._line_inertia)
        before = frm.copy()
        cur = np.where(first | held, side, cur)
        run[held] = 0
        moved = first | same | held
        frm[moved] = np.broadcast_to(feet[:, None, :], frm.shape)[moved]
        self._side[slots], self._side_run[slots], self._side_from[slots] = cur, run, frm
        for k, li in zip(*np.nonzero(held)):  # by track, then line
            p1, p2 = self._segs[li]
            # Counted only if the path from the last anchor on the old side meets the segment
            # itself (not its extension beyond the end points).
            if not meets_segment(before[k, li], feet[k], p1, p2):
                continue
            tid, track = tracks[k]
            direction = "in" if side[k, li] < 0 else "out"
            if direction == "in":
                self.count_in[li] += 1
            else:
                self.count_out[li] += 1
            events.append(
                (
                    "line.cross",
                    {
                        "track": tid,
                        "label": track.label,
                        "line": self.lines[li].name,
                        "direction": direction,
                        "count_in": self.count_in[li],
                        "count_out": self.count_out[li],
                    },
                )
            )
        return events

    # --- alerts -----------------------------------------------------------------------------

    def _alerts_step(self, pts: float, forecasts: Any) -> list[Event]:
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
                    if not any(
                        rule.horizon_s is None or abs(f.horizon_s - rule.horizon_s) <= 1e-6
                        for f in by_track[tid]
                    ):
                        continue  # no forecast of that horizon this frame: the run goes on
                    held = self._persist.get((ri, tid), 0) + 1 if best is not None else 0
                    self._persist[ri, tid] = held
                    if held < rule.persist_frames or not self._cooled(ri, tid, pts, rule):
                        continue
                    assert best is not None
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


def _counts(classes: tuple[str, ...] | None, label: str) -> bool:
    return classes is None or label in classes


def _dwell(pts: float, stay: _Stay) -> float:
    return round(max(pts - stay.start_pts, 0.0), 6)
