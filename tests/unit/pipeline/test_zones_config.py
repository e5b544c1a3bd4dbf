"""The `zones`, `lines` and `alerts` config sections, and zones and lines drawn on frames."""

from __future__ import annotations

import numpy as np
import pytest

from models.results import Detections, FrameResult
from pipeline.annotate import SceneOverlay, annotate
from pipeline.config import ConfigError, load_config

ISSUE_EXAMPLE = {
    "zones": [
        {"name": "door", "stream": "cam1", "polygon": [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0],
         [0.0, 1.0]], "classes": ["person"], "inertia_frames": 3, "dwell_s": 10},
    ],
    "lines": [{"name": "gate", "stream": "cam1", "points": [[0.5, 0.0], [0.5, 1.0]],
               "classes": ["person"]}],
    "alerts": [
        {"name": "fall", "when": {"action": "fall", "horizon_s": 0.5, "p_min": 0.6, "zone": None},
         "severity": "high", "cooldown_s": 30, "clip": {"pre_s": 5, "post_s": 5}},
        {"name": "loiter", "when": {"dwell_s": 30, "zone": "door"}, "severity": "low"},
    ],
}  # fmt: skip


def load(data: dict):
    return load_config(None, {k: v for k, v in data.items()}, env={})


def test_issue_example_loads() -> None:
    cfg = load(ISSUE_EXAMPLE)
    assert cfg.zones[0].dwell_s == 10 and cfg.lines[0].inertia_frames == 2
    assert cfg.alerts[0].clip is not None and cfg.alerts[1].clip is None
    assert cfg.alerts[1].cooldown_s == 30.0


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"alerts": [{"name": "x", "when": {"dwell_s": 3, "zone": "nowhere"}}]}, "unknown zone"),
        ({"alerts": [{"name": "x", "when": {"p_min": 0.5}}]}, "exactly one of"),
        ({"zones": [{"name": "z", "polygon": [[0, 0], [2, 0], [0, 1]]}]}, "relative"),
        ({"zones": [{"name": "z", "polygon": [[0, 0], [1, 0]]}]}, "zones.0.polygon"),
        ({"lines": [{"name": "l", "points": [[0.5, 0], [0.5, 0]]}]}, "same"),
        ({"zones": [{"name": "z", "polygon": [[0, 0], [1, 0], [0, 1]]}] * 2}, "repeat"),
        ({"zones": [{"name": "z", "polygon": [[0, 0], [1, 0], [0, 1]], "colour": 1}]}, "unknown"),
    ],
)
def test_bad_sections_are_one_line_errors(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(patch)


def test_pixel_polygons_may_exceed_one() -> None:
    cfg = load({"zones": [{"name": "z", "pixels": True, "polygon": [[0, 0], [640, 0], [0, 360]]}]})
    assert cfg.zones[0].pixels


def test_annotate_draws_zones_lines_and_counts() -> None:
    overlay = SceneOverlay(ISSUE_EXAMPLE["zones"], ISSUE_EXAMPLE["lines"])
    rgb = np.zeros((120, 160, 3), np.uint8)
    result = FrameResult("cam1", 0, 0.0, 0.0, 160, 120, detections=Detections.empty())
    plain = annotate(rgb, result)
    assert not plain.any()  # nothing to draw without the overlay
    drawn = annotate(rgb, result, overlay=overlay)
    assert drawn[:, 78:82].any()  # the gate at x = 0.5
    assert drawn[60:120, 0:3].any()  # the door's left edge
    assert not annotate(rgb, FrameResult("cam2", 0, 0.0, 0.0, 160, 120,
                                         detections=Detections.empty()), overlay=overlay).any()
    before = drawn.copy()
    overlay.event({"type": "zone.count", "stream": "cam1", "zone": "door", "label": "person",
                   "count": 2})  # fmt: skip
    assert overlay.occupancy[("cam1", "door")] == {"person": 2}
    assert (annotate(rgb, result, overlay=overlay) != before).any()  # the count is drawn


@pytest.mark.parametrize("kind", ["zones", "lines", "alerts"])
def test_global_and_per_stream_item_may_not_share_a_name(kind: str) -> None:
    """Fault: ``stream: null`` and ``stream: cam1`` items named alike merged on cam1."""
    item = {
        "zones": {"name": "door", "polygon": [[0, 0], [1, 0], [0, 1]]},
        "lines": {"name": "door", "points": [[0, 0], [1, 1]]},
        "alerts": {"name": "door", "when": {"dwell_s": 3}},
    }[kind]
    load({kind: [{**item, "stream": "cam2"}, {**item, "stream": "cam3"}]})  # per-stream: fine
    with pytest.raises(ConfigError, match="both global and per-stream") as exc:
        load({kind: [item, {**item, "stream": "cam1"}]})
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("sid", [".", ".."])
def test_stream_id_dot_or_dotdot_is_refused(sid: str) -> None:
    """Fault: stream ``..`` put its clips at ``OUT/clips/../``, outside ``OUT/clips``."""
    assert load({"sources": [{"uri": "a.mp4", "stream_id": "cam.1"}]}).sources[0]
    with pytest.raises(ConfigError, match="stream_id"):
        load({"sources": [{"uri": "a.mp4", "stream_id": sid}]})


def test_clip_max_s_default_and_room() -> None:
    cfg = load(ISSUE_EXAMPLE)
    assert cfg.alerts[0].clip.max_s == 60.0
    bad = {"name": "f", "when": {"action": "fall"}, "clip": {"pre_s": 5, "post_s": 5, "max_s": 8}}
    with pytest.raises(ConfigError, match="max_s"):
        load({"alerts": [bad]})
