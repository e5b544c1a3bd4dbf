"""Configuration schema (pydantic v2): one YAML file, unknown keys rejected.

:class:`VigilConfig` is the whole config; its sections are in :mod:`pipeline.config_sections`
(inputs and models), :mod:`pipeline.config_runtime` (publish, runtime) and
:mod:`pipeline.config_scene` (zones, lines, alerts).

Every field has a one-line description; ``vigil run CONFIG`` loads a file, CLI flags override it,
and ``VIGIL__SECTION__FIELD=value`` environment variables override both file and defaults
(e.g. ``VIGIL__DETECT__SCORE_THRESHOLD=0.3``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline.config_runtime import PublishConfig, RuntimeConfig
from pipeline.config_scene import AlertConfig, LineConfig, ZoneConfig
from pipeline.config_sections import (
    ArchiveConfig,
    BackendConfig,
    DetectConfig,
    OutputConfig,
    PeopleConfig,
    PoseConfig,
    SegmentConfig,
    SourceConfig,
    Strict,
)


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line for the user."""


class VigilConfig(Strict):
    sources: list[SourceConfig] = Field(default_factory=list, description="inputs (one today)")
    detect: DetectConfig = Field(default_factory=DetectConfig)
    people: PeopleConfig = Field(default_factory=PeopleConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    zones: list[ZoneConfig] = Field(default_factory=list, description="polygon zones")
    lines: list[LineConfig] = Field(default_factory=list, description="counting lines")
    alerts: list[AlertConfig] = Field(default_factory=list, description="alert rules")

    @model_validator(mode="after")
    def _zone_names(self) -> VigilConfig:
        for kind, items in (("zone", self.zones), ("line", self.lines), ("alert", self.alerts)):
            names = [(i.stream, i.name) for i in items]
            dup = sorted({f"{n}" for s, n in names if names.count((s, n)) > 1})
            if dup:
                raise ValueError(f"{kind} names repeat: {dup}")
            # a global item and a per-stream one with one name would merge on that stream
            both = sorted({n for s, n in names if s is None} & {n for s, n in names if s})
            if both:
                raise ValueError(f"{kind} names both global and per-stream: {both}")
        zone_names = {z.name for z in self.zones}
        for a in self.alerts:
            if a.when.zone is not None and a.when.zone not in zone_names:
                raise ValueError(f"alert {a.name}: unknown zone {a.when.zone!r}")
        return self


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> VigilConfig:
    """Load YAML (if given), apply ``VIGIL__A__B`` env vars, then dotted ``overrides``.

    Raises :class:`ConfigError` with a one-line message for a missing file, bad YAML, unknown
    keys or invalid values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
    env = os.environ if env is None else env
    for key, value in env.items():
        if key.startswith("VIGIL__"):
            _set_dotted(
                data, key[len("VIGIL__") :].lower().replace("__", "."), yaml.safe_load(value)
            )
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    try:
        return VigilConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _one_line(exc: ValidationError, path: Path | str | None) -> str:
    where = f"{path}: " if path else ""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return f"{where}invalid config: " + "; ".join(parts)
