"""The zone, line and alert-rule types a stream's analytics are configured with (frozen data).

:class:`Zone` (a polygon), :class:`Line` (a counting segment) and :class:`AlertRule` (a
forecast or dwell alert) are what :class:`models.zones.analytics.ZoneAnalytics` takes; see its
module for what they make it emit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AlertRule", "Line", "Zone"]


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
    stream time per (rule, track); a dwell rule fires once per stay. A forecast rule needs
    ``persist_frames`` consecutive qualifying forecasts of the track (one confident frame is
    often a glitch of the forecaster)."""

    name: str
    severity: str = "medium"
    cooldown_s: float = 30.0
    action: str | None = None
    horizon_s: float | None = None
    p_min: float = 0.5
    zone: str | None = None
    dwell_s: float | None = None
    persist_frames: int = 2

    def __post_init__(self) -> None:
        if (self.action is None) == (self.dwell_s is None):
            raise ValueError(f"alert {self.name!r}: give exactly one of action or dwell_s")
