"""Zones, lines, dwell, counts and alert rules (models/zones/): pure logic, no video."""

from __future__ import annotations

import numpy as np
import pytest

from models.results import ActionForecast
from models.zones.analytics import ZoneAnalytics
from models.zones.geometry import anchors, points_in_polygons
from models.zones.rules import AlertRule, Line, Zone

W, H = 100, 100
LEFT_HALF = Zone("left", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)), inertia_frames=3)


def box_at(x: float, y: float) -> list[float]:
    """A 10x20 px box whose bottom centre (anchor) is at (x, y) px."""
    return [x - 5, y - 20, x + 5, y]


def step(za: ZoneAnalytics, pts: float, feet: dict[int, tuple[float, float]], **kw):
    tids = sorted(feet)
    xyxy = np.array([box_at(*feet[t]) for t in tids], np.float32).reshape(-1, 4)
    return za.update(pts, xyxy, ["person"] * len(tids), np.array(tids, np.int64), **kw)


def kinds(events) -> list[str]:
    return [k for k, _ in events]


def test_point_in_polygon_on_anchors():
    pts = anchors(np.array([box_at(10, 90), box_at(98, 90)]))
    assert pts.tolist() == [[10, 90], [98, 90]]
    square = np.array([[0, 50], [50, 50], [50, 100], [0, 100]], float)
    tri = np.array([[60, 0], [100, 0], [100, 100]], float)
    inside = points_in_polygons(pts, [square, tri])
    assert inside.tolist() == [[True, False], [False, True]]
    assert points_in_polygons(np.zeros((0, 2)), [square]).shape == (0, 1)


def test_zone_debounce_flicker_on_boundary_is_not_an_event():
    """Fault: a box flickering across a zone's edge must not spam enter/exit events."""
    za = ZoneAnalytics([LEFT_HALF], [], [], W, H)
    events = []
    for i in range(21):  # alternates out/in every frame, ends out: never holds 3 frames
        events += step(za, i * 0.1, {1: (48 if i % 2 else 52, 90)})
    assert "zone.enter" not in kinds(events)
    # Held for 3 frames: exactly one enter, on the 3rd frame, dwell counted from the 1st.
    out = [step(za, 2.0 + i * 0.1, {1: (20, 90)}) for i in range(3)]
    assert [kinds(e) for e in out[:2]] == [[], []]
    assert kinds(out[2]) == ["zone.enter", "zone.count"]
    assert out[2][0][1] == {"track": 1, "label": "person", "zone": "left"}
    exits = []
    for i in range(3):
        exits += step(za, 3.0 + i * 0.1, {1: (80, 90)})
    (exit_event,) = [f for k, f in exits if k == "zone.exit"]
    assert exit_event["dwell_s"] == pytest.approx(1.0)


def test_zone_count_holds_and_exit_on_track_end():
    za = ZoneAnalytics([LEFT_HALF], [], [], W, H)
    counts = []
    for i in range(4):
        events = step(za, i * 0.1, {1: (10, 90), 2: (20, 90)})
        counts += [f for k, f in events if k == "zone.count"]
    assert counts == [{"zone": "left", "label": "person", "count": 2}]
    assert za.occupancy() == {"left": {"person": 2}}
    events = step(za, 0.5, {2: (20, 90)}, ended=[1])
    assert ("zone.exit", {"track": 1, "label": "person", "zone": "left", "dwell_s": 0.3}) in [
        (k, f) for k, f in events
    ]
    assert kinds(za.finish()) == ["zone.exit"]


def test_zone_classes_filter():
    cars_only = Zone("lot", LEFT_HALF.polygon, classes=("car",), inertia_frames=1)
    za = ZoneAnalytics([cars_only], [], [], W, H)
    assert step(za, 0.0, {1: (10, 90)}) == []


def test_pixels_coordinates():
    px = Zone("px", ((0, 0), (50, 0), (50, 100), (0, 100)), inertia_frames=1, pixels=True)
    za = ZoneAnalytics([px], [], [], 1000, 1000)  # relative would be 0..500 px: pixels are not
    assert "zone.enter" in kinds(step(za, 0.0, {1: (10, 90)}))
    assert "zone.enter" not in kinds(step(za, 0.1, {2: (300, 90)}))


def test_dwell_once_per_stay_on_stream_time():
    zone = Zone("door", LEFT_HALF.polygon, inertia_frames=1, dwell_s=2.0)
    za = ZoneAnalytics([zone], [], [], W, H)
    dwells = []
    for i in range(50):  # 5 s inside at 10 fps
        dwells += [f for k, f in step(za, i * 0.1, {1: (10, 90)}) if k == "zone.dwell"]
    assert len(dwells) == 1
    assert dwells[0]["dwell_s"] == pytest.approx(2.0)


GATE = Line("gate", ((0.5, 0.0), (0.5, 0.6)), inertia_frames=2)


def walk(za: ZoneAnalytics, xs: list[float], y: float = 40, tid: int = 1):
    out = []
    for i, x in enumerate(xs):
        out += [f for k, f in step(za, i * 0.1, {tid: (x, y)}) if k == "line.cross"]
    return out


def test_line_direction_and_counts():
    za = ZoneAnalytics([], [GATE], [], W, H)
    # Top-to-bottom line: left to right in the picture is "in".
    ins = walk(za, [20, 30, 40, 60, 70, 80], tid=1)
    assert [(e["direction"], e["count_in"], e["count_out"]) for e in ins] == [("in", 1, 0)]
    outs = walk(za, [80, 70, 60, 40, 30, 20], tid=2)
    assert [(e["direction"], e["count_in"], e["count_out"]) for e in outs] == [("out", 1, 1)]


def test_line_segment_extent_respected():
    """Fault: a track passing beyond the segment's end must not count as a crossing."""
    za = ZoneAnalytics([], [GATE], [], W, H)
    assert walk(za, [20, 40, 60, 80], y=90) == []  # the gate ends at y=60 px


def test_line_jitter_does_not_count():
    za = ZoneAnalytics([], [GATE], [], W, H)
    assert walk(za, [48, 52, 48, 52, 48, 52, 48]) == []


def forecast(tid: int, p_fall: float, horizon: float = 0.5) -> ActionForecast:
    probs = {"fall": p_fall, "walk": 1 - p_fall}
    return ActionForecast(tid, max(probs, key=probs.get), horizon, probs)


def test_alert_cooldown_per_rule_and_track():
    rule = AlertRule(
        "fall", "high", cooldown_s=30, action="fall", horizon_s=0.5, p_min=0.6, persist_frames=1
    )
    za = ZoneAnalytics([], [], [rule], W, H)
    fired = []
    for i in range(100):  # 10 s of confident fall forecasts for two tracks
        pts = i * 0.1
        both = [forecast(1, 0.9), forecast(2, 0.9)]
        events = step(za, pts, {1: (10, 90), 2: (80, 90)}, forecasts=both)
        fired += [(pts, f["track"]) for k, f in events if k == "alert"]
    assert fired == [(0.0, 1), (0.0, 2)]
    events = step(za, 30.0, {1: (10, 90)}, forecasts=[forecast(1, 0.9)])
    assert [f["track"] for k, f in events if k == "alert"] == [1]
    (alert,) = [f for k, f in events if k == "alert"]
    assert alert["reason"] == {"action": "fall", "horizon_s": 0.5, "p": 0.9, "p_min": 0.6}
    assert alert["severity"] == "high" and alert["zone"] is None


def test_alert_threshold_horizon_and_zone():
    rule = AlertRule("fall", action="fall", horizon_s=1.0, p_min=0.6, zone="left", persist_frames=1)
    zone = Zone("left", LEFT_HALF.polygon, inertia_frames=1)
    za = ZoneAnalytics([zone], [], [rule], W, H)
    assert kinds(step(za, 0.0, {1: (10, 90)}, forecasts=[forecast(1, 0.9, 0.5)])) == [
        "zone.enter",
        "zone.count",
    ]  # wrong horizon
    assert "alert" not in kinds(step(za, 0.1, {1: (10, 90)}, forecasts=[forecast(1, 0.5, 1.0)]))
    assert "alert" not in kinds(step(za, 0.2, {2: (80, 90)}, forecasts=[forecast(2, 0.9, 1.0)]))
    assert "alert" in kinds(step(za, 0.3, {1: (10, 90)}, forecasts=[forecast(1, 0.9, 1.0)]))


def test_one_confident_forecast_frame_is_not_an_alert():
    """Fault: a single-frame spike of the forecaster (seen on the sim pack: p(fall) 1.0 for one
    frame of a walking figure) must not raise a fall alert."""
    rule = AlertRule("fall", action="fall", horizon_s=0.5, p_min=0.6, persist_frames=2)
    za = ZoneAnalytics([], [], [rule], W, H)
    fired = []
    for i, p in enumerate([0.1, 1.0, 0.4, 0.9, 0.2, 0.7, 0.8, 0.9]):
        events = step(za, i * 0.1, {1: (10, 90)}, forecasts=[forecast(1, p)])
        fired += [i for k, _ in events if k == "alert"]
    assert fired == [6]  # the first second one in a row
    # A frame without a forecast (no pose) neither breaks nor extends the run.
    za = ZoneAnalytics([], [], [rule], W, H)
    step(za, 0.0, {1: (10, 90)}, forecasts=[forecast(1, 0.9)])
    step(za, 0.1, {1: (10, 90)})
    assert "alert" in kinds(step(za, 0.2, {1: (10, 90)}, forecasts=[forecast(1, 0.9)]))


def test_dwell_alert_once_per_stay():
    rule = AlertRule("loiter", severity="low", dwell_s=1.0, zone="left", cooldown_s=0)
    zone = Zone("left", LEFT_HALF.polygon, inertia_frames=1)
    za = ZoneAnalytics([zone], [], [rule], W, H)
    alerts = []
    for i in range(40):
        alerts += [f for k, f in step(za, i * 0.1, {1: (10, 90)}) if k == "alert"]
    assert len(alerts) == 1 and alerts[0]["zone"] == "left"
    assert alerts[0]["reason"]["dwell_s"] == pytest.approx(1.0)


def test_alert_rule_needs_one_condition():
    with pytest.raises(ValueError):
        AlertRule("x")
    with pytest.raises(ValueError):
        ZoneAnalytics([], [], [AlertRule("x", action="fall", zone="nope")], W, H)


def test_alert_clip_settings_come_from_the_streams_own_rule():
    """Fault: rules looked up by name only, so cam1's ``fall`` took cam2's (clip-less) rule."""
    from models.results import Detections, FrameResult
    from pipeline.analytics import StreamAnalytics

    when = {"action": "fall"}
    alerts = [
        {"name": "fall", "stream": "cam1", "when": when, "clip": {"pre_s": 1.0, "post_s": 1.0}},
        {"name": "fall", "stream": "cam2", "when": when, "clip": None},
    ]
    sa = StreamAnalytics({"enabled": False}, alerts=alerts)
    for sid, has_clip in (("cam1", True), ("cam2", False)):
        result = FrameResult(sid, 5, 5.0, 1_800_000_000.0, W, H, detections=Detections.empty())
        fields = {"name": "fall", "track": 1, "severity": "high", "zone": None, "reason": "x"}
        (event,) = sa._scene_events([("alert", fields)], result)
        assert (event["clip"] is not None) == has_clip, sid
