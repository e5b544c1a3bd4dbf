"""The synthetic world's types and scripts: who is in a scene and what each figure does when.

Actions and classes (:data:`ACTIONS`, :data:`CLASSES`), a figure's timeline
(:class:`Segment`, :class:`FigureScript`), the Markov chain that draws random timelines
(:func:`random_script`), where a figure stands (:func:`figure_layout`), and the scene types
(:class:`SceneObject`, :class:`Scene`). Poses are in :mod:`stream.sim.motion`, pixels in
:mod:`stream.sim.render`.

Coordinates are pixels in the rendered frame, x right and y down; boxes are ``xyxy`` with
pixel-edge convention (a box ``[x1, y1, x2, y2]`` covers pixel columns ``x1 .. x2 - 1``);
keypoints follow COCO-17 order (:data:`models.coco17.COCO17_KEYPOINTS`). Time is seconds; frame
``i`` is shown at ``i / fps``. Everything is a pure function of the seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

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
SHIRTS: tuple[tuple[int, int, int], ...] = (
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


def weighted_choice(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
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
    action = weighted_choice(rng, _FIRST)
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
        action = weighted_choice(rng, _NEXT[action])

    ground_y, height_px = figure_layout(height, float(rng.uniform(0.0, 1.0)))
    lo_x, hi_x = 0.02 * width, 0.98 * width
    x0 = float(rng.uniform(0.1 * width, 0.9 * width))
    speed = float(rng.uniform(0.35, 0.7)) * height_px * (1.0 if rng.random() < 0.5 else -1.0)
    base = SHIRTS[(figure_id - 1) % len(SHIRTS)]
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


def segment_index(script: FigureScript, t: float) -> int:
    segs = script.segments
    for i, seg in enumerate(segs):
        if t < seg.end_s:
            return i
    return len(segs) - 1


def action_at(script: FigureScript, t: float) -> str:
    """The action at time ``t`` seconds (segments are ``[start, end)``; clamped to the script)."""
    return script.segments[segment_index(script, t)].action


# ---------------------------------------------------------------------------------------------
# Scene types
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
