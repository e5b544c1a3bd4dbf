"""The synthetic world: deterministic sample video with exact ground truth.

People-like figures (head circle, torso polygon, thick limbs along the COCO-17 skeleton) act
out scripted actions over a seeded textured room, next to a few non-person objects (a rolling
ball, a parked box, a passing car). Everything is a pure function of the seed: two renders of
the same scene give byte-identical frames.

Coordinates are pixels in the rendered frame, x right and y down; boxes are ``xyxy`` with
pixel-edge convention (a box ``[x1, y1, x2, y2]`` covers pixel columns ``x1 .. x2 - 1``);
keypoints follow COCO-17 order (:data:`models.results.COCO17_KEYPOINTS`). Time is seconds; frame
``i`` is shown at ``i / fps``.

Ground-truth JSON (:func:`write_sample_video`)::

    {"version": 1, "seed": 0, "width": 640, "height": 360, "fps": 15.0, "n_frames": 120,
     "classes": ["person", "ball", "box", "car"],
     "frames": [{"frame": 0, "pts": 0.0, "objects": [
         {"id": 1, "class": "person", "box": [x1, y1, x2, y2],
          "keypoints": [[x, y, v], ...17], "action": "walk"},
         {"id": 4, "class": "ball", "box": [x1, y1, x2, y2]}]}, ...]}

In the ground truth a keypoint's ``v`` is 1 when it lies inside the frame and is not covered by a
nearer figure or object, else 0; :func:`pose_at` (no frame, no other figures) gives ``v = 1`` for
every keypoint, since every keypoint is a joint of the figure's own drawn body.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from models.coco17 import COCO17_KEYPOINTS

ACTIONS: tuple[str, ...] = ("stand", "walk", "wave", "sit_down", "sit", "stand_up", "fall", "lie")
#: Classes of the non-person objects, in the order they are added to a scene.
OBJECT_CLASSES: tuple[str, ...] = ("ball", "box", "car")
#: The ground truth's class vocabulary (index = class id); the same for every scene.
CLASSES: tuple[str, ...] = ("person", *OBJECT_CLASSES)
GT_VERSION = 1

#: Fraction of the frame height where the back wall meets the floor.
HORIZON_FRAC = 0.45


# ---------------------------------------------------------------------------------------------
# Scripts: what each figure does when
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One action held over ``[start_s, end_s)`` seconds."""

    action: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {ACTIONS}")
        if not self.end_s > self.start_s:
            raise ValueError(f"segment must have end_s > start_s, got {self}")


@dataclass(frozen=True)
class FigureScript:
    """A person's appearance and timeline.

    Attributes:
        figure_id: identity, also the ground truth's ``id`` for this person.
        segments: contiguous segments covering ``[0, duration]``.
        x0: pixels, horizontal position of the hips at t=0.
        ground_y: pixels, y of the feet when standing (farther figures stand higher).
        height_px: standing height in pixels (soles to top of head).
        speed_px_s: walking speed in pixels/s; the sign is the initial walking direction.
        color: RGB shirt colour.
        walk_bounds: ``(lo, hi)`` pixels; the hips turn round when walking reaches either end.
            ``None``: walk on forever in one direction.
        pants: RGB trousers colour.
        skin: RGB skin tone (head, neck, forearms, hands).
        hair: RGB hair colour.
    """

    figure_id: int
    segments: tuple[Segment, ...]
    x0: float
    ground_y: float
    height_px: float
    speed_px_s: float
    color: tuple[int, int, int]
    walk_bounds: tuple[float, float] | None = None
    pants: tuple[int, int, int] = (50, 60, 90)
    skin: tuple[int, int, int] = (224, 172, 140)
    hair: tuple[int, int, int] = (60, 40, 30)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a FigureScript needs at least one segment")
        if abs(self.segments[0].start_s) > 1e-9:
            raise ValueError("segments must start at t=0")
        for a, b in zip(self.segments, self.segments[1:], strict=False):
            if abs(a.end_s - b.start_s) > 1e-9:
                raise ValueError(f"segments must be contiguous: {a} then {b}")
        if self.height_px <= 0:
            raise ValueError(f"height_px must be positive, got {self.height_px}")

    @property
    def duration_s(self) -> float:
        """End of the last segment, seconds."""
        return self.segments[-1].end_s


# Which action may follow which, with weights; a pure Markov chain drives random_script.
_NEXT: dict[str, tuple[tuple[str, float], ...]] = {
    "stand": (("walk", 0.45), ("wave", 0.2), ("sit_down", 0.2), ("fall", 0.15)),
    "walk": (("stand", 0.4), ("wave", 0.15), ("fall", 0.25), ("sit_down", 0.2)),
    "wave": (("walk", 0.5), ("stand", 0.5)),
    "sit_down": (("sit", 1.0),),
    "sit": (("stand_up", 1.0),),
    "stand_up": (("stand", 0.5), ("walk", 0.5)),
    "fall": (("lie", 1.0),),
    "lie": (("stand_up", 1.0),),
}
_TRANSITIONS = frozenset({"sit_down", "stand_up", "fall"})
_FIRST: tuple[tuple[str, float], ...] = (
    ("walk", 0.45),
    ("stand", 0.3),
    ("wave", 0.1),
    ("sit", 0.15),
)
# Seconds each action lasts (uniform in the range). Transitions are short and fixed-ish.
_DURATION: dict[str, tuple[float, float]] = {
    "stand": (1.0, 3.0),
    "walk": (1.5, 4.0),
    "wave": (1.0, 3.0),
    "sit_down": (0.9, 1.3),
    "sit": (1.0, 4.0),
    "stand_up": (0.9, 1.3),
    "fall": (0.6, 0.8),
    "lie": (1.0, 4.0),
}
_GET_UP_S = (1.6, 2.2)  # stand_up right after lie: getting up off the floor is slower
#: Read-only views of the script law, for code that models it (e.g. a forecast oracle):
#: the Markov chain's next-action weights and each action's duration range in seconds
#: (stand_up right after lie lasts ``GET_UP_DURATION_S`` instead).
NEXT_ACTION: Mapping[str, tuple[tuple[str, float], ...]] = MappingProxyType(_NEXT)
ACTION_DURATION_S: Mapping[str, tuple[float, float]] = MappingProxyType(_DURATION)
GET_UP_DURATION_S: tuple[float, float] = _GET_UP_S
_SHIRTS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40), (40, 110, 220), (40, 170, 70), (240, 180, 20), (150, 60, 200),
    (250, 120, 30), (20, 180, 190), (230, 80, 160), (120, 120, 120), (140, 90, 40),
)  # fmt: skip
_PANTS: tuple[tuple[int, int, int], ...] = (
    (40, 50, 90), (30, 30, 35), (90, 80, 60), (70, 75, 85), (110, 40, 40), (45, 70, 50),
)  # fmt: skip
_SKINS: tuple[tuple[int, int, int], ...] = (
    (240, 200, 170), (224, 172, 140), (198, 140, 100), (160, 105, 70), (110, 70, 45),
)  # fmt: skip
_HAIRS: tuple[tuple[int, int, int], ...] = (
    (30, 25, 20), (70, 45, 25), (150, 110, 60), (200, 170, 110), (110, 110, 110),
)  # fmt: skip


def _choice(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    names = [name for name, _ in options]
    weights = np.array([w for _, w in options], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def figure_layout(height: int, depth: float) -> tuple[float, float]:
    """Where a figure stands for a depth in [0, 1] (0 = far, 1 = near).

    Returns ``(ground_y, height_px)`` in pixels for a frame ``height`` pixels high: nearer figures
    stand lower in the frame and are taller, and their heads stay inside the frame.
    """
    ground_y = height * (0.62 + 0.30 * depth)
    height_px = height * (0.30 + 0.27 * depth)
    return float(ground_y), float(height_px)


def random_script(
    rng: np.random.Generator, *, duration_s: float, width: int, height: int, figure_id: int
) -> FigureScript:
    """A plausible random timeline and appearance for one person.

    Actions follow a Markov chain (e.g. walk -> stand -> wave -> walk, walk -> fall -> lie ->
    stand_up, stand -> sit_down -> sit -> stand_up -> walk); segments last 1-4 s, except the
    transitions sit_down / stand_up (~1 s; ~2 s up from lying) and fall (0.6-0.8 s). The last
    segment is cut at ``duration_s``; a transition is never cut (the action before it is held
    to the end instead). The shirt colour is picked by ``figure_id`` so figures of one scene differ.
    A pure function of the generator's state and the arguments.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    segments: list[Segment] = []
    t = 0.0
    action = _choice(rng, _FIRST)
    while t < duration_s - 1e-9:
        lo, hi = _DURATION[action]
        if action == "stand_up" and segments and segments[-1].action == "lie":
            lo, hi = _GET_UP_S
        end = t + float(rng.uniform(lo, hi))
        if action in _TRANSITIONS and end > duration_s and segments:
            # A transition is never cut short (it would play too fast): hold the previous action.
            last = segments.pop()
            segments.append(Segment(last.action, last.start_s, duration_s))
            break
        end = min(end, duration_s)
        if duration_s - end < 0.25:  # no sliver of a segment at the very end
            end = duration_s
        segments.append(Segment(action, t, end))
        t = end
        action = _choice(rng, _NEXT[action])

    ground_y, height_px = figure_layout(height, float(rng.uniform(0.0, 1.0)))
    lo_x, hi_x = 0.02 * width, 0.98 * width
    x0 = float(rng.uniform(0.1 * width, 0.9 * width))
    speed = float(rng.uniform(0.35, 0.7)) * height_px * (1.0 if rng.random() < 0.5 else -1.0)
    base = _SHIRTS[(figure_id - 1) % len(_SHIRTS)]
    jitter = rng.integers(-15, 16, size=3)
    color = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter, strict=True))
    pants = _PANTS[int(rng.integers(len(_PANTS)))]
    skin = _SKINS[int(rng.integers(len(_SKINS)))]
    hair = _HAIRS[int(rng.integers(len(_HAIRS)))]
    return FigureScript(
        figure_id=figure_id,
        segments=tuple(segments),
        x0=x0,
        ground_y=ground_y,
        height_px=height_px,
        speed_px_s=speed,
        color=color,  # type: ignore[arg-type]
        walk_bounds=(lo_x, hi_x),
        pants=pants,
        skin=skin,
        hair=hair,
    )


def _segment_index(script: FigureScript, t: float) -> int:
    segs = script.segments
    for i, seg in enumerate(segs):
        if t < seg.end_s:
            return i
    return len(segs) - 1


def action_at(script: FigureScript, t: float) -> str:
    """The action at time ``t`` seconds (segments are ``[start, end)``; clamped to the script)."""
    return script.segments[_segment_index(script, t)].action


# ---------------------------------------------------------------------------------------------
# Poses: pose parameters per action, blended at segment starts, then forward kinematics
# ---------------------------------------------------------------------------------------------

_KP = {name: i for i, name in enumerate(COCO17_KEYPOINTS)}
assert len(COCO17_KEYPOINTS) == 17 and _KP["left_hip"] == 11 and _KP["right_ankle"] == 16

# Pose parameter vector layout (radians unless noted). Limb angles are measured from "hanging
# straight down"; "out" raises a limb sideways away from the body, "fwd" swings it toward the
# direction the figure faces.
(
    _PHI,  # whole-body rotation about the feet toward the facing side (0 upright, ~pi/2 lying)
    _LEAN,  # torso lean toward the facing side
    _SWAY,  # sideways hip shift, units of height
    _TL, _TR,  # thigh swing forward, left / right
    _KL, _KR,  # knee flex (shin folds backward)
    _AOL, _AOR,  # upper arm raised sideways
    _AFL, _AFR,  # upper arm swung forward
    _EOL, _EOR,  # forearm raised further sideways (relative to upper arm)
    _EFL, _EFR,  # forearm bent forward (relative to upper arm)
    _WIDTH,  # 1 = facing the camera; smaller = body turned sideways (shoulders/hips narrower)
) = range(16)  # fmt: skip
_NPARAM = 16
_LIE_PHI = 0.97 * math.pi / 2
_BLEND_S = 0.45  # seconds over which one action's pose blends into the next
_STRIDE = 0.84  # gait cycle length, units of height

# Body proportions, units of standing height.
_HIP_HALF = 0.07
_SHOULDER_HALF = 0.105
_THIGH = 0.245
_SHIN = 0.245
_UPPER_ARM = 0.16
_FOREARM = 0.15
_SHOULDER_UP = 0.31  # hip centre to shoulder line, along the torso
_HEAD_UP = 0.43  # hip centre to head centre, along the torso
_HEAD_R = 0.065
_SOLE = 0.025  # ankle keypoint above the sole


def _smooth(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _stand_params(t: float, ph: float) -> np.ndarray:
    p = np.zeros(_NPARAM)
    p[_SWAY] = 0.012 * math.sin(2 * math.pi * 0.23 * t + ph)
    p[_LEAN] = 0.015 * math.sin(2 * math.pi * 0.31 * t + ph)
    p[_AOL] = p[_AOR] = 0.12 + 0.03 * math.sin(2 * math.pi * 0.4 * t + ph)
    p[_EFL] = p[_EFR] = 0.12
    p[_KL] = p[_KR] = 0.03
    p[_WIDTH] = 1.0
    return p


def _walk_params(gait: float) -> np.ndarray:
    p = np.zeros(_NPARAM)
    s, c = math.sin(gait), math.cos(gait)
    p[_TL], p[_TR] = 0.42 * s, -0.42 * s
    p[_KL], p[_KR] = 0.08 + 0.6 * max(0.0, c), 0.08 + 0.6 * max(0.0, -c)
    p[_AFL], p[_AFR] = -0.38 * s, 0.38 * s
    p[_AOL] = p[_AOR] = 0.1
    p[_EFL] = p[_EFR] = 0.25
    p[_LEAN] = 0.07
    p[_WIDTH] = 1.0
    return p


def _wave_params(t: float, ph: float) -> np.ndarray:
    p = _stand_params(t, ph)
    p[_AOR] = 2.45  # right upper arm raised up and out
    p[_EOR] = 0.55 + 0.5 * math.sin(2 * math.pi * 1.7 * t)  # forearm swings across vertical
    p[_EFR] = 0.0
    return p


def _sit_params(t: float, ph: float) -> np.ndarray:
    p = np.zeros(_NPARAM)
    p[_TL] = p[_TR] = 1.45
    p[_KL] = p[_KR] = 1.5
    p[_LEAN] = 0.1 + 0.01 * math.sin(2 * math.pi * 0.25 * t + ph)
    p[_AFL] = p[_AFR] = 0.55
    p[_EFL] = p[_EFR] = 0.85
    p[_AOL] = p[_AOR] = 0.12
    p[_WIDTH] = 1.0
    return p


def _lie_params(t: float, ph: float) -> np.ndarray:
    p = np.zeros(_NPARAM)
    p[_PHI] = _LIE_PHI
    p[_LEAN] = 0.01 * math.sin(2 * math.pi * 0.25 * t + ph)
    p[_AOL] = p[_AOR] = 0.06  # arms along the body, so they don't prop it off the floor
    p[_KL] = p[_KR] = 0.15
    p[_WIDTH] = 0.35
    return p


def _fall_params(s: float, t: float, ph: float) -> np.ndarray:
    start, end = _stand_params(t, ph), _lie_params(t, ph)
    p = start + (end - start) * s
    p[_PHI] = _LIE_PHI * s * s  # accelerates like a toppling body
    p[_WIDTH] = 1.0 + (0.35 - 1.0) * _smooth(s)
    bump = math.sin(math.pi * s)
    p[_AOL] += 1.0 * bump
    p[_AOR] += 1.0 * bump
    p[_AFL] += 0.5 * bump
    p[_AFR] += 0.5 * bump
    p[_KL] += 0.4 * bump
    p[_KR] += 0.4 * bump
    p[_LEAN] += 0.2 * bump
    return p


# ---- Anticipation cues ----------------------------------------------------------------------
# Real people announce what they are about to do: a walker slows before stopping, someone about
# to sit bends the knees and leans, someone about to fall staggers. So during the last
# ``_CUE_S`` seconds of a segment that has a successor, the figure plays a prelude of the NEXT
# action on top of the current one (the label stays the current action). Each (current, next)
# pair has its own prelude; its amplitude rises with ``_smooth`` from 0 at the cue's onset to 1
# at the segment's end, and stays at 1 while the next segment blends in, so motion is smooth.
# Forced successors (sit_down -> sit, fall -> lie) need no prelude: the motion itself says so.
_CUE_S = 0.75
#: Fraction of walking speed shed by the end of a walk segment, by the next action.
_WALK_SLOWDOWN: dict[str, float] = {"stand": 0.75, "sit_down": 0.6, "wave": 0.45}


def _cue_span(seg: Segment) -> float:
    """Seconds of prelude at the end of ``seg`` (shorter only for hand-made short segments)."""
    return min(_CUE_S, 0.8 * (seg.end_s - seg.start_s))


def _cue_phase(script: FigureScript, seg_idx: int, t: float) -> tuple[str | None, float, float]:
    """``(next action or None, x, tau)``: the prelude's progress ``x`` in [0, 1] (1 from the
    segment's end on) and ``tau``, seconds since the prelude's onset (may be negative)."""
    if seg_idx + 1 >= len(script.segments):
        return None, 0.0, 0.0
    seg, nxt = script.segments[seg_idx], script.segments[seg_idx + 1].action
    span = _cue_span(seg)
    tau = t - (seg.end_s - span)
    return nxt, min(max(tau / span, 0.0), 1.0), tau


def _apply_cue(p: np.ndarray, cur: str, nxt: str, x: float, tau: float) -> None:
    """Add the prelude of ``nxt`` (progress ``x``) to ``cur``'s pose parameters, in place."""
    if x <= 0.0:
        return
    w = _smooth(x)
    if cur in ("sit_down", "fall"):
        return
    if cur == "walk" and nxt in _WALK_SLOWDOWN:
        # Shorter steps as the walker slows down (hip speed: see _walk_distance).
        damp = 1.0 - 0.45 * w
        for i in (_TL, _TR, _AFL, _AFR):
            p[i] *= damp
        for i in (_KL, _KR):
            p[i] = 0.08 + (p[i] - 0.08) * damp
    if nxt == "walk":  # weight shift onto the back leg, lean, the lead knee lifts: a first step
        p[_LEAN] += 0.14 * w
        p[_SWAY] += 0.025 * w
        p[_TL] += 0.35 * w
        p[_KL] += 0.45 * w
        p[_TR] -= 0.1 * w
        p[_AFL] -= 0.25 * w
        p[_AFR] += 0.25 * w
    elif nxt == "wave":  # the right arm lifts sideways, the hand rising past the shoulder
        p[_AFR] *= 1.0 - w
        p[_AOR] += 1.2 * w
        p[_EOR] += 1.0 * w
    elif nxt == "sit_down":  # knees bend, hips go back, torso leans forward, arms forward
        p[_TL] += 0.35 * w
        p[_TR] += 0.35 * w
        p[_KL] += 0.55 * w
        p[_KR] += 0.55 * w
        p[_LEAN] += 0.3 * w
        p[_AFL] += 0.3 * w
        p[_AFR] += 0.3 * w
    elif nxt == "fall":  # stagger: sway and wobbling lean, stumbling legs, flailing arms
        wob = math.sin(2 * math.pi * 2.6 * tau)
        wob2 = math.sin(2 * math.pi * 3.3 * tau + 1.0)
        p[_SWAY] += 0.03 * w * wob
        p[_LEAN] += w * (0.1 + 0.08 * wob2)
        p[_TL] += 0.22 * w * wob
        p[_TR] -= 0.22 * w * wob
        p[_KL] += 0.2 * w
        p[_KR] += 0.2 * w
        p[_AOL] += w * (0.8 + 0.3 * wob2)
        p[_AOR] += w * (0.8 - 0.3 * wob2)
        p[_EOL] += 0.4 * w
        p[_EOR] += 0.4 * w
    elif nxt == "stand" and cur == "wave":  # the waving arm comes down, the wave dies out
        p[_AOR] -= 0.9 * w
        p[_EOR] = p[_EOR] * (1.0 - 0.8 * w)
    elif nxt == "stand_up" and cur == "sit":  # lean forward, feet drawn back, hands to the knees
        p[_LEAN] += 0.4 * w
        p[_KL] += 0.3 * w
        p[_KR] += 0.3 * w
        p[_AFL] += 0.45 * w
        p[_AFR] += 0.45 * w
        p[_EFL] -= 0.4 * w
        p[_EFR] -= 0.4 * w
    elif nxt == "stand_up" and cur == "lie":  # knees draw up, the torso props up on the arms
        p[_PHI] -= 0.22 * w
        p[_TL] += 0.6 * w
        p[_TR] += 0.6 * w
        p[_KL] += 1.0 * w
        p[_KR] += 1.0 * w
        p[_AOL] += 0.35 * w
        p[_AOR] += 0.35 * w
        p[_WIDTH] += 0.2 * w


def _action_params(
    script: FigureScript, seg_idx: int, t: float, gait: float, ph: float
) -> np.ndarray:
    p = _base_params(script, seg_idx, t, gait, ph)
    nxt, x, tau = _cue_phase(script, seg_idx, t)
    if nxt is not None:
        _apply_cue(p, script.segments[seg_idx].action, nxt, x, tau)
    return p


def _base_params(
    script: FigureScript, seg_idx: int, t: float, gait: float, ph: float
) -> np.ndarray:
    seg = script.segments[seg_idx]
    s = min(max((t - seg.start_s) / (seg.end_s - seg.start_s), 0.0), 1.0)
    a = seg.action
    if a == "stand":
        return _stand_params(t, ph)
    if a == "walk":
        return _walk_params(gait)
    if a == "wave":
        return _wave_params(t, ph)
    if a == "sit":
        return _sit_params(t, ph)
    if a == "lie":
        return _lie_params(t, ph)
    if a == "fall":
        return _fall_params(s, t, ph)
    if a == "sit_down":
        start, end, w, bump = _stand_params(t, ph), _sit_params(t, ph), _smooth(s), True
    elif a == "stand_up":
        prev = script.segments[seg_idx - 1].action if seg_idx > 0 else "sit"
        if prev in ("lie", "fall") and s < 0.55:  # roll up off the floor, then rise
            start, end, w, bump = _lie_params(t, ph), _sit_params(t, ph), _smooth(s / 0.55), False
        elif prev in ("lie", "fall"):
            start, end, w = _sit_params(t, ph), _stand_params(t, ph), _smooth((s - 0.55) / 0.45)
            bump = False
        else:
            start, end, w, bump = _sit_params(t, ph), _stand_params(t, ph), _smooth(s), True
    else:  # pragma: no cover - Segment validates actions
        raise ValueError(a)
    p = start + (end - start) * w
    if bump:
        p[_LEAN] += 0.35 * math.sin(math.pi * s)  # lean forward while the hips move
    return p


def _walk_distance(script: FigureScript, t: float) -> float:
    """Pixels walked (unsigned) from 0 to ``t``."""
    walked = 0.0
    segs = script.segments
    for i, seg in enumerate(segs):
        if seg.start_s >= t:
            break
        if seg.action != "walk":
            continue
        walked += min(t, seg.end_s) - seg.start_s
        slow = _WALK_SLOWDOWN.get(segs[i + 1].action, 0.0) if i + 1 < len(segs) else 0.0
        if slow > 0.0:  # decelerating prelude: speed falls by slow * _smooth over the cue
            span = _cue_span(seg)
            x = min(max((min(t, seg.end_s) - (seg.end_s - span)) / span, 0.0), 1.0)
            walked -= slow * span * (x**3 - 0.5 * x**4)  # integral of _smooth from 0 to x
    return walked * abs(script.speed_px_s)


def _hip_x_and_facing(script: FigureScript, walked: float) -> tuple[float, int]:
    direction = 1 if script.speed_px_s >= 0 else -1
    u = script.x0 + direction * walked
    if script.walk_bounds is None:
        return u, direction
    lo, hi = script.walk_bounds
    span = hi - lo
    if span <= 0:
        return script.x0, direction
    m = (u - lo) % (2 * span)
    if m <= span:
        return lo + m, direction
    return lo + 2 * span - m, -direction


def _pose_and_facing(script: FigureScript, t: float) -> tuple[np.ndarray, int]:
    t = min(max(float(t), 0.0), script.duration_s)
    walked = _walk_distance(script, t)
    hip_x, facing = _hip_x_and_facing(script, walked)
    H = script.height_px
    gait = 2 * math.pi * walked / (_STRIDE * H)
    ph = 1.7 * script.figure_id
    idx = _segment_index(script, t)
    p = _action_params(script, idx, t, gait, ph)
    tau = t - script.segments[idx].start_s
    if idx > 0 and tau < _BLEND_S:
        prev = _action_params(script, idx - 1, t, gait, ph)
        w = _smooth(tau / _BLEND_S)
        p = prev + (p - prev) * w
    return _kinematics(p, facing, hip_x, script.ground_y, H), facing


def _kinematics(p: np.ndarray, f: int, hip_x: float, ground_y: float, H: float) -> np.ndarray:
    """Forward kinematics: pose parameters -> (17, 3) keypoints in pixels."""
    kp = np.zeros((17, 2))
    w = float(p[_WIDTH])
    sin, cos = math.sin, math.cos
    # Legs, relative to the hip centre (x right, y down, units of height).
    for sgn, hip_i, knee_i, ankle_i, th_i, kn_i in (
        (1, 11, 13, 15, _TL, _KL),
        (-1, 12, 14, 16, _TR, _KR),
    ):
        hx = sgn * _HIP_HALF * w
        a = f * p[th_i]
        kx, ky = hx + _THIGH * sin(a), _THIGH * cos(a)
        b = a - f * p[kn_i]
        kp[hip_i] = (hx, 0.0)
        kp[knee_i] = (kx, ky)
        kp[ankle_i] = (kx + _SHIN * sin(b), ky + _SHIN * cos(b))
    # Upper body: torso direction "up" at the lean angle.
    lean = f * p[_LEAN]
    ux, uy = sin(lean), -cos(lean)
    px, py = cos(lean), sin(lean)  # perpendicular, toward the figure's left (+x when upright)
    scx, scy = _SHOULDER_UP * ux, _SHOULDER_UP * uy
    hcx, hcy = _HEAD_UP * ux, _HEAD_UP * uy
    kp[0] = (hcx - 0.012 * ux, hcy - 0.012 * uy)  # nose, just below the head centre
    for sgn, eye_i, ear_i in ((1, 1, 3), (-1, 2, 4)):
        kp[eye_i] = (
            hcx + 0.015 * ux + sgn * 0.025 * w * px,
            hcy + 0.015 * uy + sgn * 0.025 * w * py,
        )
        kp[ear_i] = (hcx + sgn * 0.06 * w * px, hcy + sgn * 0.06 * w * py)
    for sgn, sh_i, el_i, wr_i, ao, af, eo, ef in (
        (1, 5, 7, 9, _AOL, _AFL, _EOL, _EFL),
        (-1, 6, 8, 10, _AOR, _AFR, _EOR, _EFR),
    ):
        sx, sy = scx + sgn * _SHOULDER_HALF * w * px, scy + sgn * _SHOULDER_HALF * w * py
        a = sgn * p[ao] + f * p[af] - lean
        ex, ey = sx + _UPPER_ARM * sin(a), sy + _UPPER_ARM * cos(a)
        b = a + sgn * p[eo] + f * p[ef]
        kp[sh_i] = (sx, sy)
        kp[el_i] = (ex, ey)
        kp[wr_i] = (ex + _FOREARM * sin(b), ey + _FOREARM * cos(b))
    # Stand on the lower sole, then rotate the body about the feet (falling / lying).
    kp[:, 0] += p[_SWAY]
    kp[:, 1] -= max(kp[15, 1], kp[16, 1]) + _SOLE
    phi = f * p[_PHI]
    if phi != 0.0:
        cx, cy = (kp[15, 0] + kp[16, 0]) / 2, (kp[15, 1] + kp[16, 1]) / 2
        c, s = cos(phi), sin(phi)
        dx, dy = kp[:, 0] - cx, kp[:, 1] - cy
        kp[:, 0] = cx + dx * c - dy * s
        kp[:, 1] = cy + dx * s + dy * c
        # Nothing sinks into the floor: lift by the lowest drawn point.
        head_cy = (kp[3, 1] + kp[4, 1]) / 2
        lowest = max(
            float(kp[15:17, 1].max()) + _SOLE, float(kp[:15, 1].max()) + 0.02, head_cy + _HEAD_R
        )
        kp[:, 1] -= max(lowest, 0.0)
    out = np.ones((17, 3), dtype=np.float32)
    out[:, 0] = hip_x + H * kp[:, 0]
    out[:, 1] = ground_y + H * kp[:, 1]
    return out


def pose_at(script: FigureScript, t: float) -> np.ndarray:
    """The figure's keypoints at time ``t`` seconds.

    Returns:
        ``(17, 3) float32``: x, y in pixels (COCO-17 order) and visibility, which is 1 for
        every keypoint (each is a joint of the figure's own drawn body; the ground truth of a
        rendered frame also zeroes keypoints outside the frame or hidden by nearer things).
    """
    return _pose_and_facing(script, t)[0]


def torso_angle(keypoints: np.ndarray) -> float:
    """Angle in degrees between the hip-centre -> shoulder-centre vector and straight up.

    0 = upright, 90 = horizontal. ``keypoints``: ``(17, 2+)`` in COCO-17 order.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    dx = (kp[5, 0] + kp[6, 0] - kp[11, 0] - kp[12, 0]) / 2
    dy = (kp[5, 1] + kp[6, 1] - kp[11, 1] - kp[12, 1]) / 2
    return float(np.degrees(np.arctan2(abs(dx), -dy)))


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """A non-person object.

    Attributes:
        object_id: ground-truth ``id`` (distinct from every figure's id).
        kind: one of :data:`OBJECT_CLASSES`: ``ball`` rolls and bounces between the frame
            edges, ``box`` stays put, ``car`` drives across and wraps round (leaving the frame
            for a while).
        x0: pixels, horizontal centre at t=0.
        ground_y: pixels, y where it touches the floor.
        size_px: pixels: ball diameter, box width, car length.
        speed_px_s: signed horizontal speed, pixels/s (0 for a box).
        color: RGB.
    """

    object_id: int
    kind: str
    x0: float
    ground_y: float
    size_px: float
    speed_px_s: float
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if self.kind not in OBJECT_CLASSES:
            raise ValueError(f"unknown object kind {self.kind!r}; expected one of {OBJECT_CLASSES}")


@dataclass(frozen=True)
class Scene:
    """A deterministic world: frame size, timing, people and objects.

    Attributes:
        seed: seeds the background texture (figures and objects are fixed already).
        width, height: frame size, pixels.
        fps: frames per second; frame ``i`` is at ``i / fps`` seconds.
        duration_s: seconds; the video has ``n_frames = round(duration_s * fps)`` frames.
        figures: the people, ids 1..n.
        objects: the non-person objects, ids after the people's.
    """

    seed: int
    width: int
    height: int
    fps: float
    duration_s: float
    figures: tuple[FigureScript, ...]
    objects: tuple[SceneObject, ...]

    @property
    def n_frames(self) -> int:
        """Number of frames in the video."""
        return int(round(self.duration_s * self.fps))


def make_scene(
    seed: int = 0,
    *,
    width: int = 640,
    height: int = 360,
    fps: float = 15.0,
    duration_s: float = 8.0,
    n_people: int = 3,
    n_objects: int = 2,
) -> Scene:
    """A seeded scene: ``n_people`` random scripts (ids 1..n) and ``n_objects`` objects whose
    kinds cycle through :data:`OBJECT_CLASSES` (ball, box, car, ball, ...)."""
    if width < 16 or height < 16:
        raise ValueError(f"frame must be at least 16x16, got {width}x{height}")
    if fps <= 0 or duration_s <= 0:
        raise ValueError(f"fps and duration_s must be positive, got {fps}, {duration_s}")
    rng = np.random.default_rng(seed)
    figures = tuple(
        random_script(rng, duration_s=duration_s, width=width, height=height, figure_id=i + 1)
        for i in range(n_people)
    )
    objects = []
    for j in range(n_objects):
        kind = OBJECT_CLASSES[j % len(OBJECT_CLASSES)]
        ground_y, fig_h = figure_layout(height, float(rng.uniform(0.0, 1.0)))
        color = tuple(int(c) for c in rng.integers(40, 230, size=3))
        if kind == "ball":
            size, speed = fig_h * rng.uniform(0.12, 0.18), fig_h * rng.uniform(0.6, 1.2)
        elif kind == "box":
            size, speed = fig_h * rng.uniform(0.3, 0.45), 0.0
        else:
            size, speed = fig_h * rng.uniform(1.6, 2.0), fig_h * rng.uniform(0.5, 1.0)
        speed *= 1.0 if rng.random() < 0.5 else -1.0
        objects.append(
            SceneObject(
                object_id=n_people + 1 + j,
                kind=kind,
                x0=float(rng.uniform(0.1 * width, 0.9 * width)),
                ground_y=float(ground_y),
                size_px=float(size),
                speed_px_s=float(speed),
                color=color,  # type: ignore[arg-type]
            )
        )
    return Scene(seed, width, height, float(fps), float(duration_s), figures, tuple(objects))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


def render_frame(scene: Scene, frame_idx: int) -> tuple[np.ndarray, dict]:
    """Render one frame and its ground truth.

    Returns:
        ``(H, W, 3) uint8`` RGB frame, and the frame's ground-truth dict
        ``{"frame", "pts" (seconds), "objects": [...]}`` as in the module docstring; objects are
        sorted by id, and those entirely outside the frame are left out.
    """
    t = frame_idx / scene.fps
    frame = _background(scene.seed, scene.width, scene.height).copy()
    items: list[tuple[float, int, Any]] = [(fig.ground_y, 0, fig) for fig in scene.figures]
    items += [(obj.ground_y, 1, obj) for obj in scene.objects]
    items.sort(key=lambda it: (it[0], it[1], _item_id(it[2])))  # far to near: painter's order

    drawn: list[tuple[int, int, int, np.ndarray | None, dict]] = []  # id, roi x0, y0, mask, gt
    for _, _, item in items:
        if isinstance(item, FigureScript):
            kp, facing = _pose_and_facing(item, t)
            x0, y0, mask = _draw_figure(frame, item, kp, facing)
            entry = {
                "id": item.figure_id,
                "class": "person",
                "kp": kp,
                "action": action_at(item, t),
            }
        else:
            x0, y0, mask = _draw_object(frame, item, t)
            entry = {"id": item.object_id, "class": item.kind}
        drawn.append((_item_id(item), x0, y0, mask, entry))

    objects = []
    for k, (_, x0, y0, mask, entry) in enumerate(drawn):
        box = _mask_box(mask, x0, y0)
        if box is None:
            continue
        out: dict[str, Any] = {"id": entry["id"], "class": entry["class"], "box": box}
        if entry["class"] == "person":
            kp = entry["kp"]
            vis = _visible(kp, drawn[k + 1 :], scene.width, scene.height)
            out["keypoints"] = [
                [round(float(x), 2), round(float(y), 2), int(v)]
                for (x, y, _), v in zip(kp, vis, strict=True)
            ]
            out["action"] = entry["action"]
        objects.append(out)
    objects.sort(key=lambda o: o["id"])
    return frame, {"frame": int(frame_idx), "pts": round(t, 6), "objects": objects}


def _item_id(item: FigureScript | SceneObject) -> int:
    return item.figure_id if isinstance(item, FigureScript) else item.object_id


def _mask_box(mask: np.ndarray | None, x0: int, y0: int) -> list[float] | None:
    if mask is None:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return [
        float(x0 + cols[0]),
        float(y0 + rows[0]),
        float(x0 + cols[-1] + 1),
        float(y0 + rows[-1] + 1),
    ]


def _visible(kp: np.ndarray, later: list, width: int, height: int) -> list[int]:
    """1 where a keypoint is inside the frame and not under a later-drawn (nearer) item."""
    vis = []
    for x, y, _ in kp:
        xi, yi = math.floor(x), math.floor(y)
        v = 0 <= xi < width and 0 <= yi < height
        if v:
            for _, ox, oy, mask, _ in later:
                if mask is None:
                    continue
                r, c = yi - oy, xi - ox
                if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]:
                    v = False
                    break
        vis.append(int(v))
    return vis


def _roi(frame: np.ndarray, xs: np.ndarray, ys: np.ndarray, margin: float):
    """Integer ROI ``(x0, y0, x1, y1)`` around points, clipped to the frame; None if empty."""
    h, w = frame.shape[:2]
    x0 = max(int(math.floor(float(xs.min()) - margin)), 0)
    y0 = max(int(math.floor(float(ys.min()) - margin)), 0)
    x1 = min(int(math.ceil(float(xs.max()) + margin)) + 1, w)
    y1 = min(int(math.ceil(float(ys.max()) + margin)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


class _Painter:
    """Draws the same primitives into the frame and into an ROI mask (255 wherever drawn)."""

    def __init__(self, frame: np.ndarray, roi: tuple[int, int, int, int]):
        self.frame = frame
        self.x0, self.y0 = roi[0], roi[1]
        self.mask = np.zeros((roi[3] - roi[1], roi[2] - roi[0]), dtype=np.uint8)

    def _p(self, x: float, y: float, ox: int = 0, oy: int = 0) -> tuple[int, int]:
        return int(round((x - ox) * _ONE)), int(round((y - oy) * _ONE))

    def line(self, a, b, color, thickness: int) -> None:
        t = max(int(thickness), 1)
        cv2.line(self.frame, self._p(*a), self._p(*b), color, t, _AA, _SHIFT)
        pa, pb = self._p(*a, self.x0, self.y0), self._p(*b, self.x0, self.y0)
        cv2.line(self.mask, pa, pb, 255, t, _AA, _SHIFT)

    def circle(self, c, r: float, color, mask: bool = True) -> None:
        rr = max(int(round(r * _ONE)), _ONE // 2)
        cv2.circle(self.frame, self._p(*c), rr, color, -1, _AA, _SHIFT)
        if mask:
            cv2.circle(self.mask, self._p(*c, self.x0, self.y0), rr, 255, -1, _AA, _SHIFT)

    def poly(self, pts, color) -> None:
        fp = np.array([[self._p(x, y) for x, y in pts]], dtype=np.int32)
        mp = np.array([[self._p(x, y, self.x0, self.y0) for x, y in pts]], dtype=np.int32)
        cv2.fillPoly(self.frame, fp, color, _AA, _SHIFT)
        cv2.fillPoly(self.mask, mp, 255, _AA, _SHIFT)


def _shade(color: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(min(max(c * k, 0), 255)) for c in color)  # type: ignore[return-value]


def _draw_figure(frame: np.ndarray, fig: FigureScript, kp: np.ndarray, facing: int):
    """Paint one person; returns ``(roi_x0, roi_y0, mask)`` (mask None if off-frame)."""
    H = fig.height_px
    roi = _roi(frame, kp[:, 0], kp[:, 1], 0.12 * H + 3)
    if roi is None:
        return 0, 0, None
    pen = _Painter(frame, roi)
    P = [(float(x), float(y)) for x, y, _ in kp]
    leg_t = max(2, round(0.05 * H))
    arm_t = max(2, round(0.036 * H))
    shoe = (35, 35, 40)
    # Legs and shoes.
    for hip, knee, ankle in ((11, 13, 15), (12, 14, 16)):
        pen.line(P[hip], P[knee], fig.pants, leg_t)
        pen.line(P[knee], P[ankle], fig.pants, leg_t)
        dx, dy = P[ankle][0] - P[knee][0], P[ankle][1] - P[knee][1]
        n = math.hypot(dx, dy) or 1.0
        toe = (P[ankle][0] + 0.055 * H * facing * dy / n, P[ankle][1] - 0.055 * H * facing * dx / n)
        pen.line(P[ankle], toe, shoe, max(2, round(0.035 * H)))
    # Torso: shirt polygon over shoulders and hips, plus a thick spine so it keeps body when
    # turned sideways.
    sh_mid = ((P[5][0] + P[6][0]) / 2, (P[5][1] + P[6][1]) / 2)
    hip_mid = ((P[11][0] + P[12][0]) / 2, (P[11][1] + P[12][1]) / 2)
    pen.poly([P[5], P[6], P[12], P[11]], fig.color)
    pen.line(sh_mid, hip_mid, fig.color, max(3, round(0.1 * H)))
    pen.line(P[11], P[12], fig.pants, leg_t)  # belt line joins the trousers
    # Arms: sleeve, bare forearm, hand.
    for sh, el, wr in ((5, 7, 9), (6, 8, 10)):
        pen.line(P[sh], P[el], fig.color, arm_t)
        pen.line(P[el], P[wr], fig.skin, max(2, round(0.8 * arm_t)))
        pen.circle(P[wr], 0.025 * H, fig.skin)
    # Neck and head: hair circle, face circle shifted down inside it, eyes.
    head = ((P[3][0] + P[4][0]) / 2, (P[3][1] + P[4][1]) / 2)
    ux, uy = head[0] - sh_mid[0], head[1] - sh_mid[1]
    n = math.hypot(ux, uy) or 1.0
    ux, uy = ux / n, uy / n
    pen.line(sh_mid, head, fig.skin, max(2, round(0.045 * H)))
    r = _HEAD_R * H
    pen.circle(head, r, fig.hair)
    pen.circle((head[0] - 0.12 * r * ux, head[1] - 0.12 * r * uy), 0.86 * r, fig.skin, mask=False)
    if H >= 80:
        for eye in (P[1], P[2]):
            pen.circle(eye, max(1.0, 0.009 * H), (30, 30, 30), mask=False)
    return pen.x0, pen.y0, pen.mask


def _object_x(obj: SceneObject, t: float, width: int) -> float:
    """Horizontal centre at ``t``: balls bounce between the edges, cars wrap round."""
    u = obj.x0 + obj.speed_px_s * t
    if obj.kind == "ball":
        r = obj.size_px / 2
        lo, span = r, max(width - 2 * r, 1.0)
        m = (u - lo) % (2 * span)
        return lo + (m if m <= span else 2 * span - m)
    if obj.kind == "car":
        period = width + 1.5 * obj.size_px
        return (u + 0.75 * obj.size_px) % period - 0.75 * obj.size_px
    return obj.x0


def _draw_object(frame: np.ndarray, obj: SceneObject, t: float):
    """Paint one object; returns ``(roi_x0, roi_y0, mask)`` (mask None if off-frame)."""
    width = frame.shape[1]
    cx, g, s = _object_x(obj, t, width), obj.ground_y, obj.size_px
    if obj.kind == "ball":
        r = s / 2
        roi = _roi(frame, np.array([cx - r, cx + r]), np.array([g - s, g]), 3)
        if roi is None:
            return 0, 0, None
        pen = _Painter(frame, roi)
        c = (cx, g - r)
        pen.circle(c, r, obj.color)
        ang = (_object_x(obj, t, width) - obj.x0) / max(r, 1.0)  # rolling without slipping
        a = (c[0] + 0.8 * r * math.cos(ang), c[1] + 0.8 * r * math.sin(ang))
        b = (c[0] - 0.8 * r * math.cos(ang), c[1] - 0.8 * r * math.sin(ang))
        pen.line(a, b, (245, 245, 245), max(1, round(0.22 * r)))
        pen.circle((c[0] - 0.35 * r, c[1] - 0.35 * r), 0.18 * r, _shade(obj.color, 1.4), mask=False)
        return pen.x0, pen.y0, pen.mask
    if obj.kind == "box":
        w, h = s, 0.75 * s
        dx, dy = 0.18 * w, 0.22 * h  # receding top face
        x1, x2, y1 = cx - w / 2, cx + w / 2, g - h
        roi = _roi(frame, np.array([x1, x2 + dx]), np.array([y1 - dy, g]), 3)
        if roi is None:
            return 0, 0, None
        pen = _Painter(frame, roi)
        pen.poly(
            [(x1, y1), (x2, y1), (x2 + dx, y1 - dy), (x1 + dx, y1 - dy)], _shade(obj.color, 1.25)
        )
        pen.poly([(x2, y1), (x2 + dx, y1 - dy), (x2 + dx, g - dy), (x2, g)], _shade(obj.color, 0.7))
        pen.poly([(x1, y1), (x2, y1), (x2, g), (x1, g)], obj.color)
        edge, tk = _shade(obj.color, 0.45), max(1, round(0.03 * w))
        pen.line((x1, y1), (x2, y1), edge, tk)
        pen.line((x1, g), (x2, g), edge, tk)
        pen.line(((x1 + x2) / 2, y1), ((x1 + x2) / 2, g), (200, 180, 120), max(1, round(0.1 * w)))
        return pen.x0, pen.y0, pen.mask
    # car: body, cabin with windows, wheels, a headlight at the front
    L = s
    front = 1 if obj.speed_px_s >= 0 else -1
    roi = _roi(frame, np.array([cx - L / 2, cx + L / 2]), np.array([g - 0.56 * L, g]), 3)
    if roi is None:
        return 0, 0, None
    pen = _Painter(frame, roi)
    body_top, body_bot = g - 0.33 * L, g - 0.09 * L
    pen.poly(
        [
            (cx - 0.5 * L, body_top),
            (cx + 0.5 * L, body_top),
            (cx + 0.5 * L, body_bot),
            (cx - 0.5 * L, body_bot),
        ],
        obj.color,
    )

    def outline(fx: tuple[float, ...], fy: tuple[float, ...]) -> list[tuple[float, float]]:
        """Points at ``cx + front * fx * L``, ``g - fy * L`` (units of car length)."""
        return [(cx + front * a * L, g - b * L) for a, b in zip(fx, fy, strict=True)]

    pen.poly(outline((-0.3, -0.2, 0.15, 0.3), (0.33, 0.53, 0.53, 0.33)), obj.color)
    win = outline((-0.25, -0.18, 0.13, 0.24), (0.35, 0.5, 0.5, 0.35))
    pen.poly(win, (170, 200, 225))
    pen.line(
        (cx - 0.02 * front * L, body_top),
        (cx - 0.02 * front * L, g - 0.52 * L),
        obj.color,
        max(1, round(0.03 * L)),
    )
    lamp = cx + front * 0.47 * L
    pen.line(
        (lamp, body_top + 0.06 * L),
        (lamp, body_top + 0.1 * L),
        (250, 230, 120),
        max(1, round(0.04 * L)),
    )
    for wx in (cx - 0.3 * L, cx + 0.3 * L):
        pen.circle((wx, g - 0.1 * L), 0.1 * L, (25, 25, 28))
        pen.circle((wx, g - 0.1 * L), 0.045 * L, (170, 170, 175), mask=False)
    return pen.x0, pen.y0, pen.mask


@lru_cache(maxsize=8)
def _background(seed: int, width: int, height: int) -> np.ndarray:
    """The seeded room behind everything: ``(H, W, 3) uint8`` RGB, read-only (cached).

    Back wall (vertical gradient, smooth multi-scale noise, posters/windows, a skirting board)
    over a floor of perspective tiles.
    """
    rng = np.random.default_rng([seed, 0xB6])  # its own stream: scripts don't shift it
    H, W = height, width
    hz = int(round(HORIZON_FRAC * H))
    img = np.zeros((H, W, 3), np.float32)

    walls = ((205, 195, 175), (180, 195, 205), (215, 205, 185), (190, 200, 180), (200, 185, 190))
    wall = np.array(walls[int(rng.integers(len(walls)))], np.float32)
    ys = np.linspace(0.0, 1.0, max(hz, 1), dtype=np.float32)[:, None, None]
    img[:hz] = wall * (0.82 + 0.22 * ys)

    # Floor: a checker of tiles seen in perspective, rendered at 2x and area-downsampled.
    floors = (((165, 140, 110), (120, 95, 70)), ((170, 170, 175), (115, 115, 125)),
              ((150, 160, 140), (100, 110, 95)))  # fmt: skip
    light, dark = (np.array(c, np.float32) for c in floors[int(rng.integers(len(floors)))])
    fh = H - hz
    if fh > 0:
        ss = 2
        yy = (np.arange(fh * ss, dtype=np.float32) + 0.5) / ss + 0.5  # rows below the horizon
        xx = (np.arange(W * ss, dtype=np.float32) + 0.5) / ss
        tile_px = 0.16 * W  # tile width at the bottom edge
        scale = tile_px * yy / fh  # screen pixels per tile at each row
        wx = (xx[None, :] - W / 2 + rng.uniform(0, tile_px)) / scale[:, None]
        wz = fh * fh / (0.5 * tile_px * yy)  # depth in tiles
        check = ((np.floor(wx) + np.floor(wz)[:, None]) % 2).astype(np.float32)
        check = cv2.resize(check, (W, fh), interpolation=cv2.INTER_AREA)[..., None]
        fade = np.clip(np.arange(fh, dtype=np.float32)[:, None, None] / (0.6 * fh) + 0.35, 0, 1)
        img[hz:] = (dark + (light - dark) * check) * (0.75 + 0.25 * fade)

    # Wall decorations: posters and windows with frames.
    for _ in range(int(rng.integers(2, 5))):
        pw, ph = rng.uniform(0.06, 0.16) * W, rng.uniform(0.12, 0.28) * H
        px, py = rng.uniform(0, W - pw), rng.uniform(0.04 * H, max(hz - ph - 0.04 * H, 0.05 * H))
        x1, y1, x2, y2 = int(px), int(py), int(px + pw), int(py + ph)
        c1, c2 = rng.uniform(40, 230, size=3), rng.uniform(40, 230, size=3)
        g = np.linspace(0.0, 1.0, max(y2 - y1, 1), dtype=np.float32)[:, None, None]
        img[y1:y2, x1:x2] = c1 + (c2 - c1) * g
        cv2.rectangle(img, (x1, y1), (x2, y2), (70.0, 60.0, 50.0), max(1, W // 320))
    cv2.rectangle(img, (0, hz - max(2, H // 60)), (W, hz), (95.0, 85.0, 75.0), -1)  # skirting

    # Smooth multi-scale noise everywhere, plus faint grain.
    noise = np.zeros((H, W), np.float32)
    for cells, amp in ((5, 9.0), (14, 5.0), (48, 3.0)):
        small = rng.standard_normal((cells, max(2, cells * W // H))).astype(np.float32)
        noise += amp * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    noise += 2.0 * rng.standard_normal((H, W)).astype(np.float32)
    img += noise[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def scene_ground_truth_header(scene: Scene) -> dict:
    """The ground-truth dict without frames: version, seed, size, fps, n_frames, classes."""
    return {
        "version": GT_VERSION,
        "seed": scene.seed,
        "width": scene.width,
        "height": scene.height,
        "fps": scene.fps,
        "n_frames": scene.n_frames,
        "classes": list(CLASSES),
    }


def fall_and_walk_scene(fps: float = 15.0, duration_s: float = 6.0) -> Scene:
    """A fixed, unambiguous scene for checking tracks and forecasts end to end: figure 1 stands
    near the camera and falls at 2.5 s (down at 3.2 s), then lies; figure 2 walks left the whole
    time, far from it; a box stands still."""
    h_y, h_px = figure_layout(360, 0.6)
    faller = FigureScript(
        figure_id=1,
        x0=160.0,
        ground_y=h_y,
        height_px=h_px,
        speed_px_s=40.0,
        color=(220, 40, 40),
        walk_bounds=None,
        segments=(
            Segment("stand", 0.0, 2.5),
            Segment("fall", 2.5, 3.2),
            Segment("lie", 3.2, duration_s),
        ),
    )
    g_y, g_px = figure_layout(360, 0.2)
    walker = FigureScript(
        figure_id=2,
        x0=600.0,
        ground_y=g_y,
        height_px=g_px,
        speed_px_s=-45.0,
        color=(40, 110, 220),
        walk_bounds=None,
        segments=(Segment("walk", 0.0, duration_s),),
    )
    box = SceneObject(
        object_id=3,
        kind="box",
        x0=420.0,
        ground_y=330.0,
        size_px=50.0,
        speed_px_s=0.0,
        color=(120, 90, 60),
    )
    return Scene(0, 640, 360, fps, duration_s, (faller, walker), (box,))


def _walker(
    figure_id: int,
    depth: float,
    x0: float,
    speed: float,
    segments: tuple[Segment, ...],
    color: tuple[int, int, int],
    height: int = 360,
) -> FigureScript:
    ground_y, height_px = figure_layout(height, depth)
    return FigureScript(
        figure_id=figure_id,
        x0=x0,
        ground_y=ground_y,
        height_px=height_px,
        speed_px_s=speed,
        color=color,
        walk_bounds=None,
        segments=segments,
    )


def zone_scenes(fps: float = 15.0, duration_s: float = 6.0) -> list[tuple[Scene, dict]]:
    """Held-out scenes for zones, lines and fall alerts (``scripts/eval_zones.py``), each with
    its ``{"zones": [...], "lines": [...]}`` config (relative coordinates, 640x360 frames).

    Scripted, not drawn from :func:`make_scene`'s seeds (the sim pack and the forecaster train
    on those): figures walk into and out of floor zones, cross counting lines both ways, stay
    long enough to dwell, and two of them fall (at 2.5 s and 3.0 s, after the forecaster's 2 s
    window has filled).
    """
    d = duration_s
    floor_right = [[0.65, 0.5], [1.0, 0.5], [1.0, 1.0], [0.65, 1.0]]
    crossing = Scene(
        101, 640, 360, fps, d,
        (
            _walker(1, 0.8, 80.0, 90.0, (Segment("walk", 0.0, d),), (220, 40, 40)),
            _walker(2, 0.3, 560.0, -70.0, (Segment("walk", 0.0, d),), (40, 110, 220)),
        ),
        (),
    )  # fmt: skip
    fall_in_zone = Scene(
        102, 640, 360, fps, d,
        (
            _walker(1, 0.7, 150.0, 60.0, (Segment("walk", 0.0, 2.0), Segment("stand", 2.0, 3.0),
                    Segment("fall", 3.0, 3.7), Segment("lie", 3.7, d)), (230, 150, 30)),
            _walker(2, 0.2, 600.0, -50.0, (Segment("walk", 0.0, d),), (40, 160, 80)),
        ),
        (),
    )  # fmt: skip
    walk_then_fall = Scene(
        103, 640, 360, fps, d,
        (
            _walker(1, 0.9, 560.0, -60.0, (Segment("walk", 0.0, 2.5), Segment("fall", 2.5, 3.2),
                    Segment("lie", 3.2, d)), (150, 40, 200)),
            _walker(2, 0.5, 100.0, 80.0, (Segment("walk", 0.0, d),), (40, 180, 190)),
        ),
        (),
    )  # fmt: skip
    return [
        (
            crossing,
            {
                "zones": [{"name": "right", "polygon": floor_right, "dwell_s": 1.5}],
                "lines": [{"name": "gate", "points": [[0.5, 0.5], [0.5, 1.0]]}],
            },
        ),
        (
            fall_in_zone,
            {
                "zones": [
                    {"name": "mat", "polygon": [[0.31, 0.5], [0.63, 0.5], [0.63, 1.0], [0.31, 1.0]],
                     "dwell_s": 1.5}
                ],
                "lines": [{"name": "door", "points": [[0.7, 0.5], [0.7, 1.0]]}],
            },
        ),  # fmt: skip
        (
            walk_then_fall,
            {
                "zones": [{"name": "left", "polygon": [[0, 0.5], [0.35, 0.5], [0.35, 1], [0, 1]],
                           "dwell_s": 1.0}],
                "lines": [{"name": "mid", "points": [[0.5, 0.5], [0.5, 1.0]]}],
            },
        ),  # fmt: skip
    ]


def write_sample_video(
    scene: Scene,
    video_path: str | Path,
    gt_path: str | Path | None = None,
    *,
    crf: int = 18,
    progress: bool = False,
) -> dict:
    """Render the scene to an H.264 video (libx264, yuv420p) and its ground-truth JSON.

    Frame ``i`` has ``pts = i`` in a ``1/fps`` time base, i.e. it is shown at ``i / fps``
    seconds. The container follows ``video_path``'s suffix (``.mp4`` intended). Width and height
    must be even (yuv420p). ``progress`` shows a tqdm bar. Returns the ground-truth dict.
    """
    import av

    if scene.width % 2 or scene.height % 2:
        raise ValueError(
            f"H.264 yuv420p needs an even frame size, got {scene.width}x{scene.height}"
        )
    rate = Fraction(scene.fps).limit_denominator(1001)
    gt = scene_ground_truth_header(scene)
    frames_gt = []
    indices: Any = range(scene.n_frames)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=Path(video_path).name, unit="frame")
    with av.open(str(video_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.options = {"crf": str(int(crf))}
        # Frame pts count frames (time base 1/fps); the muxer picks its own finer time base.
        # (Setting stream.time_base here too makes PyAV 18 hand the muxer a bad packet.)
        time_base = 1 / rate
        for i in indices:
            img, fgt = render_frame(scene, i)
            frames_gt.append(fgt)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    gt["frames"] = frames_gt
    if gt_path is not None:
        Path(gt_path).write_text(json.dumps(gt, separators=(",", ":")))
    return gt


def demo_sample(cache_dir: Path) -> tuple[Path, Path]:
    """The default demo video and ground truth, made once under ``cache_dir``.

    Returns ``(cache_dir / "sample.mp4", cache_dir / "sample.gt.json")`` for
    ``make_scene(seed=0)``. They are (re)written when either is missing, or when the ground
    truth's ``sample_fingerprint`` (this module's code and the scene's script) differs, so a
    newer vigil never plays a stale sample. Each goes through a temporary file and an atomic
    rename, so a concurrent reader never sees half a file.
    """
    cache_dir = Path(cache_dir)
    video, gt = cache_dir / "sample.mp4", cache_dir / "sample.gt.json"
    scene = make_scene(seed=0)
    made_by = Path(__file__).read_bytes() + repr(scene).encode()
    fingerprint = hashlib.sha256(made_by).hexdigest()[:16]
    if video.is_file() and gt.is_file():
        try:
            if json.loads(gt.read_text()).get("sample_fingerprint") == fingerprint:
                return video, gt
        except (OSError, ValueError):
            pass  # unreadable: made again
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_video = cache_dir / f".sample.{os.getpid()}.tmp.mp4"
    tmp_gt = cache_dir / f".sample.{os.getpid()}.tmp.json"
    try:
        truth = write_sample_video(scene, tmp_video)
        truth["sample_fingerprint"] = fingerprint
        tmp_gt.write_text(json.dumps(truth, separators=(",", ":")))
        os.replace(tmp_video, video)
        os.replace(tmp_gt, gt)
    finally:
        for p in (tmp_video, tmp_gt):
            p.unlink(missing_ok=True)
    return video, gt


# ---------------------------------------------------------------------------------------------
# Training data for the action forecaster
# ---------------------------------------------------------------------------------------------


def motion_dataset(
    rng: np.random.Generator,
    n_sequences: int,
    *,
    rate_hz: float = 10.0,
    window_s: float = 2.0,
    horizons_s: Sequence[float] = (0.5, 1.0),
    width: int = 640,
    height: int = 360,
    transition_frac: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose windows from random scripts, labelled with the action now and at future horizons.

    Each sequence is a fresh :func:`random_script`; a window of ``T = round(window_s *
    rate_hz)`` poses sampled every ``1 / rate_hz`` s ends at a random time ``t``. With
    ``transition_frac`` > 0, that fraction of the windows (on average) is placed so that an
    action change falls within ``(t, t + max(horizons_s)]``, which the uniform placement makes
    rare (a fall is ~1% of the time); the rest stay uniform.

    Returns:
        ``X (n, T, 17, 3) float32``: keypoints x, y in pixels (a ``width`` x ``height`` frame)
        and visibility; ``y_now (n,) int64``: index into :data:`ACTIONS` at ``t``;
        ``y_h (n, len(horizons_s)) int64``: index into :data:`ACTIONS` at ``t + h``.
    """
    T = int(round(window_s * rate_hz))
    if T < 1 or n_sequences < 0:
        raise ValueError(f"need T >= 1 and n_sequences >= 0, got T={T}, n={n_sequences}")
    horizons = tuple(float(h) for h in horizons_s)
    max_h = max(horizons, default=0.0)
    span = (T - 1) / rate_hz
    duration = span + max_h + 8.0
    index = {a: i for i, a in enumerate(ACTIONS)}
    X = np.zeros((n_sequences, T, 17, 3), np.float32)
    y_now = np.zeros(n_sequences, np.int64)
    y_h = np.zeros((n_sequences, len(horizons)), np.int64)
    for n in range(n_sequences):
        script = random_script(
            rng, duration_s=duration, width=width, height=height, figure_id=n + 1
        )
        t_end = float(rng.uniform(span, duration - max_h))
        if transition_frac > 0 and rng.random() < transition_frac:
            changes = [g.start_s for g in script.segments[1:] if span < g.start_s <= duration]
            if changes and max_h > 0:
                change = changes[int(rng.integers(len(changes)))]
                t_end = min(max(change - float(rng.uniform(0.0, max_h)), span), duration - max_h)
        for k in range(T):
            X[n, k] = pose_at(script, t_end - (T - 1 - k) / rate_hz)
        y_now[n] = index[action_at(script, t_end)]
        y_h[n] = [index[action_at(script, t_end + h)] for h in horizons]
    return X, y_now, y_h


__all__ = [
    "ACTIONS",
    "ACTION_DURATION_S",
    "CLASSES",
    "GET_UP_DURATION_S",
    "NEXT_ACTION",
    "OBJECT_CLASSES",
    "FigureScript",
    "Scene",
    "SceneObject",
    "Segment",
    "action_at",
    "demo_sample",
    "figure_layout",
    "make_scene",
    "motion_dataset",
    "pose_at",
    "random_script",
    "render_frame",
    "scene_ground_truth_header",
    "torso_angle",
    "write_sample_video",
]
