"""How figures move: pose parameters per action, anticipation cues, blending and kinematics.

:func:`pose_at` gives a figure's COCO-17 keypoints at a time from its
:class:`~stream.sim.world.FigureScript`; :func:`pose_and_facing` also says which way it faces
(the renderer needs that for the feet). Real people announce what they are about to do, so the
last moments of a segment play a prelude of the next action (see ``_apply_cue``).
"""

from __future__ import annotations

import math

import numpy as np

from models.coco17 import COCO17_KEYPOINTS
from stream.sim.world import FigureScript, Segment, segment_index

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
HEAD_R = 0.065
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


def _add_gains(p: np.ndarray, gains: tuple[tuple[int, float], ...], w: float) -> None:
    """``p[i] += gain * w`` for each ``(i, gain)``, in place."""
    for i, gain in gains:
        p[i] += gain * w


#: Arms fly out, knees give and the torso bends mid-fall (scaled by a bump over the fall).
_FALL_FLAIL = ((_AOL, 1.0), (_AOR, 1.0), (_AFL, 0.5), (_AFR, 0.5), (_KL, 0.4), (_KR, 0.4),
               (_LEAN, 0.2))  # fmt: skip


def _fall_params(s: float, t: float, ph: float) -> np.ndarray:
    start, end = _stand_params(t, ph), _lie_params(t, ph)
    p = start + (end - start) * s
    p[_PHI] = _LIE_PHI * s * s  # accelerates like a toppling body
    p[_WIDTH] = 1.0 + (0.35 - 1.0) * _smooth(s)
    _add_gains(p, _FALL_FLAIL, math.sin(math.pi * s))
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


#: Preludes as parameter gains at full strength, by ``(current action, next action)``; a key
#: ``(None, next)`` holds for any current action without its own entry.
_CUE_GAINS: dict[tuple[str | None, str], tuple[tuple[int, float], ...]] = {
    # Weight shift onto the back leg, lean, the lead knee lifts: a first step.
    (None, "walk"): ((_LEAN, 0.14), (_SWAY, 0.025), (_TL, 0.35), (_KL, 0.45), (_TR, -0.1),
                     (_AFL, -0.25), (_AFR, 0.25)),
    # The right arm lifts sideways, the hand rising past the shoulder.
    (None, "wave"): ((_AOR, 1.2), (_EOR, 1.0)),
    # Knees bend, hips go back, torso leans forward, arms forward.
    (None, "sit_down"): ((_TL, 0.35), (_TR, 0.35), (_KL, 0.55), (_KR, 0.55), (_LEAN, 0.3),
                         (_AFL, 0.3), (_AFR, 0.3)),
    # Stumbling knees and forearms raised further (with the wobble in _apply_cue).
    (None, "fall"): ((_KL, 0.2), (_KR, 0.2), (_EOL, 0.4), (_EOR, 0.4)),
    # The waving arm comes down.
    ("wave", "stand"): ((_AOR, -0.9),),
    # Lean forward, feet drawn back, hands to the knees.
    ("sit", "stand_up"): ((_LEAN, 0.4), (_KL, 0.3), (_KR, 0.3), (_AFL, 0.45), (_AFR, 0.45),
                          (_EFL, -0.4), (_EFR, -0.4)),
    # Knees draw up, the torso props up on the arms.
    ("lie", "stand_up"): ((_PHI, -0.22), (_TL, 0.6), (_TR, 0.6), (_KL, 1.0), (_KR, 1.0),
                          (_AOL, 0.35), (_AOR, 0.35), (_WIDTH, 0.2)),
}  # fmt: skip


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
    if nxt == "wave":  # the right arm stops swinging forward
        p[_AFR] *= 1.0 - w
    elif nxt == "fall":  # stagger: sway and wobbling lean, stumbling legs, flailing arms
        wob = math.sin(2 * math.pi * 2.6 * tau)
        wob2 = math.sin(2 * math.pi * 3.3 * tau + 1.0)
        p[_SWAY] += 0.03 * w * wob
        p[_LEAN] += w * (0.1 + 0.08 * wob2)
        p[_TL] += 0.22 * w * wob
        p[_TR] -= 0.22 * w * wob
        p[_AOL] += w * (0.8 + 0.3 * wob2)
        p[_AOR] += w * (0.8 - 0.3 * wob2)
    elif nxt == "stand" and cur == "wave":  # the wave dies out
        p[_EOR] = p[_EOR] * (1.0 - 0.8 * w)
    _add_gains(p, _CUE_GAINS.get((cur, nxt), _CUE_GAINS.get((None, nxt), ())), w)


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


def pose_and_facing(script: FigureScript, t: float) -> tuple[np.ndarray, int]:
    t = min(max(float(t), 0.0), script.duration_s)
    walked = _walk_distance(script, t)
    hip_x, facing = _hip_x_and_facing(script, walked)
    H = script.height_px
    gait = 2 * math.pi * walked / (_STRIDE * H)
    ph = 1.7 * script.figure_id
    idx = segment_index(script, t)
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
            float(kp[15:17, 1].max()) + _SOLE, float(kp[:15, 1].max()) + 0.02, head_cy + HEAD_R
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
    return pose_and_facing(script, t)[0]


def torso_angle(keypoints: np.ndarray) -> float:
    """Angle in degrees between the hip-centre -> shoulder-centre vector and straight up.

    0 = upright, 90 = horizontal. ``keypoints``: ``(17, 2+)`` in COCO-17 order.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    dx = (kp[5, 0] + kp[6, 0] - kp[11, 0] - kp[12, 0]) / 2
    dy = (kp[5, 1] + kp[6, 1] - kp[11, 1] - kp[12, 1]) / 2
    return float(np.degrees(np.arctan2(abs(dx), -dy)))
