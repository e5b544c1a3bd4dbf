"""Config sections (pydantic v2) of the scene: ``zones``, ``lines`` and ``alerts`` (with
their ``when`` and ``clip``), see :mod:`models.zones`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config_sections import Strict

_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


def _check_points(points: list[list[float]], pixels: bool, what: str) -> list[list[float]]:
    for p in points:
        if len(p) != 2:
            raise ValueError(f"{what}: each point is [x, y], got {p}")
        if not pixels and not all(0.0 <= v <= 1.0 for v in p):
            raise ValueError(f"{what}: relative coordinates are 0..1 (or set pixels: true)")
    return points


class ZoneConfig(Strict):
    name: str = Field(description="zone name in events and topics", pattern=_NAME)
    stream: str | None = Field(None, description="stream id it belongs to (None: every stream)")
    polygon: list[list[float]] = Field(
        min_length=3, description="vertices [[x, y], ...], relative 0..1 unless pixels"
    )
    pixels: bool = Field(False, description="polygon in pixels instead of relative coordinates")
    classes: list[str] | None = Field(None, description="labels that count (None: all)")
    inertia_frames: int = Field(
        3, ge=1, le=1000, description="frames a change must hold before it is an event"
    )
    dwell_s: float | None = Field(
        None, gt=0, description="emit zone.dwell once per stay this long, seconds (None: never)"
    )

    @model_validator(mode="after")
    def _points(self) -> ZoneConfig:
        _check_points(self.polygon, self.pixels, f"zone {self.name}")
        return self


class LineConfig(Strict):
    name: str = Field(description="line name in events and topics", pattern=_NAME)
    stream: str | None = Field(None, description="stream id it belongs to (None: every stream)")
    points: list[list[float]] = Field(
        min_length=2, max_length=2, description="[[x1, y1], [x2, y2]]; left -> right side is in"
    )
    pixels: bool = Field(False, description="points in pixels instead of relative coordinates")
    classes: list[str] | None = Field(None, description="labels that count (None: all)")
    inertia_frames: int = Field(
        2, ge=1, le=1000, description="frames the new side must hold before a crossing counts"
    )

    @model_validator(mode="after")
    def _points(self) -> LineConfig:
        _check_points(self.points, self.pixels, f"line {self.name}")
        if self.points[0] == self.points[1]:
            raise ValueError(f"line {self.name}: its two points are the same")
        return self


class AlertWhen(Strict):
    action: str | None = Field(None, description="forecast action that fires (e.g. fall)")
    horizon_s: float | None = Field(None, ge=0, description="forecast horizon (None: any)")
    p_min: float = Field(0.5, ge=0, le=1, description="min forecast probability")
    persist_frames: int = Field(
        2, ge=1, le=1000, description="consecutive forecasts of the track with p >= p_min"
    )
    dwell_s: float | None = Field(None, gt=0, description="fires when a stay lasts this long")
    zone: str | None = Field(None, description="only while the track is in this zone")

    @model_validator(mode="after")
    def _one_condition(self) -> AlertWhen:
        if (self.action is None) == (self.dwell_s is None):
            raise ValueError("give exactly one of action or dwell_s")
        return self


class ClipConfig(Strict):
    pre_s: float = Field(5.0, ge=0, le=120, description="seconds of video before the trigger")
    post_s: float = Field(5.0, ge=0, le=120, description="seconds of video after the trigger")
    max_s: float = Field(
        60.0, gt=0, le=3600,
        description="longest clip, s: a later alert then opens a new clip instead of extending",
    )

    @model_validator(mode="after")
    def _room(self) -> ClipConfig:
        if self.max_s < self.pre_s + self.post_s:
            raise ValueError("clip.max_s is less than pre_s + post_s")
        return self


class AlertConfig(Strict):
    name: str = Field(description="alert name in events", pattern=_NAME)
    stream: str | None = Field(None, description="stream id it applies to (None: every stream)")
    when: AlertWhen = Field(description="the condition")
    severity: Literal["low", "medium", "high", "critical"] = Field(
        "medium", description="low | medium | high | critical"
    )
    cooldown_s: float = Field(30.0, ge=0, description="at most one per (alert, track) this often")
    clip: ClipConfig | None = Field(
        None, description="write an MP4 clip and a JPEG snapshot (None: no clip, no snapshot)"
    )
