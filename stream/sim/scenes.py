"""Canned and seeded scenes of the synthetic world.

:func:`make_scene` draws a seeded scene (random scripts and objects); :func:`fall_and_walk_scene`
and :func:`zone_scenes` are fixed scripted scenes for end-to-end checks of tracks, forecasts,
zones, lines and fall alerts; :func:`walker` places one scripted figure by depth.
"""

from __future__ import annotations

import numpy as np

from stream.sim.world import (
    OBJECT_CLASSES,
    FigureScript,
    Scene,
    SceneObject,
    Segment,
    figure_layout,
    random_script,
)


def make_scene(
    seed: int = 0, *, width: int = 640, height: int = 360, fps: float = 15.0,
    duration_s: float = 8.0, n_people: int = 3, n_objects: int = 2,
) -> Scene:  # fmt: skip
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


def fall_and_walk_scene(fps: float = 15.0, duration_s: float = 6.0) -> Scene:
    """A fixed, unambiguous scene for checking tracks and forecasts end to end: figure 1 stands
    near the camera and falls at 2.5 s (down at 3.2 s), then lies; figure 2 walks left the whole
    time, far from it; a box stands still."""
    stages = (
        Segment("stand", 0.0, 2.5),
        Segment("fall", 2.5, 3.2),
        Segment("lie", 3.2, duration_s),
    )
    faller = walker(1, 0.6, 160.0, 40.0, stages, (220, 40, 40))
    passer = walker(2, 0.2, 600.0, -45.0, (Segment("walk", 0.0, duration_s),), (40, 110, 220))
    box = SceneObject(
        object_id=3,
        kind="box",
        x0=420.0,
        ground_y=330.0,
        size_px=50.0,
        speed_px_s=0.0,
        color=(120, 90, 60),
    )
    return Scene(0, 640, 360, fps, duration_s, (faller, passer), (box,))


def walker(
    figure_id: int,
    depth: float,
    x0: float,
    speed: float,
    segments: tuple[Segment, ...],
    color: tuple[int, int, int],
    height: int = 360,
) -> FigureScript:
    """One scripted figure (no walk bounds) standing at ``depth`` (0 far .. 1 near, see
    :func:`~stream.sim.world.figure_layout`) in a frame ``height`` pixels high."""
    ground_y, height_px = figure_layout(height, depth)
    return FigureScript(figure_id, segments, x0, ground_y, height_px, speed, color, None)


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
            walker(1, 0.8, 80.0, 90.0, (Segment("walk", 0.0, d),), (220, 40, 40)),
            walker(2, 0.3, 560.0, -70.0, (Segment("walk", 0.0, d),), (40, 110, 220)),
        ),
        (),
    )  # fmt: skip
    fall_in_zone = Scene(
        102, 640, 360, fps, d,
        (
            walker(1, 0.7, 150.0, 60.0, (Segment("walk", 0.0, 2.0), Segment("stand", 2.0, 3.0),
                    Segment("fall", 3.0, 3.7), Segment("lie", 3.7, d)), (230, 150, 30)),
            walker(2, 0.2, 600.0, -50.0, (Segment("walk", 0.0, d),), (40, 160, 80)),
        ),
        (),
    )  # fmt: skip
    walk_then_fall = Scene(
        103, 640, 360, fps, d,
        (
            walker(1, 0.9, 560.0, -60.0, (Segment("walk", 0.0, 2.5), Segment("fall", 2.5, 3.2),
                    Segment("lie", 3.2, d)), (150, 40, 200)),
            walker(2, 0.5, 100.0, 80.0, (Segment("walk", 0.0, d),), (40, 180, 190)),
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
