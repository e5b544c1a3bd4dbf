"""Configuration schema (pydantic v2): one YAML file, unknown keys rejected.

Every field has a one-line description; ``vigil run CONFIG`` loads a file, CLI flags override it,
and ``VIGIL__SECTION__FIELD=value`` environment variables override both file and defaults
(e.g. ``VIGIL__DETECT__SCORE_THRESHOLD=0.3``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_ENDPOINT = re.compile(
    r"^(tcp://(\*|[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})|ipc://.+|inproc://.+)$"
)


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line for the user."""


def check_endpoint(value: str) -> str:
    """Validate a ZeroMQ endpoint string such as ``tcp://127.0.0.1:5555``."""
    m = _ENDPOINT.match(value)
    if not m or (m.group(3) is not None and not 0 < int(m.group(3)) < 65536):
        raise ValueError(
            f"bad endpoint {value!r}: expected tcp://HOST:PORT (port 1-65535), ipc://PATH "
            "or inproc://NAME"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    uri: str = Field(description="video file path (or file:// URI)")
    stream_id: str = Field(
        "cam1",
        description="name of the stream in events and topics",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
    )


class DetectConfig(_Strict):
    model: str = Field(
        "fasterrcnn_mobilenet_v3_large_fpn", description="detector in the weights registry"
    )
    weights: str = Field(
        "auto", description="auto | pretrained | none (random) | path to a .pth file"
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="drop boxes below this score")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="class-aware NMS IoU threshold")
    classes: list[str] | None = Field(None, description="keep only these class names (None: all)")
    input_size: int | None = Field(None, ge=32, le=4096, description="detector's shorter side, px")
    max_detections: int = Field(100, ge=1, le=1000, description="boxes kept per frame")
    batch_size: int = Field(4, ge=1, le=64, description="frames per inference batch")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="how long to collect a batch")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    seed: int = Field(0, description="seed of random-init weights (identical across runs)")


class PeopleConfig(_Strict):
    enabled: bool = Field(True, description="track people and emit track.start / track.end")
    person_class: str = Field("person", description="detector class name that is a person")
    forecast: bool = Field(True, description="forecast actions from pose sequences (needs poses)")
    forecaster_weights: str = Field("auto", description="auto (shipped) | none | path to .pt")
    horizons_s: list[float] = Field([0.5, 1.0], description="forecast horizons, seconds ahead")
    min_confidence: float = Field(0.6, ge=0, le=1, description="min p of an action.forecast event")
    min_persist: int = Field(2, ge=1, description="consecutive agreeing forecasts before an event")
    track_high_thresh: float = Field(0.5, ge=0, le=1, description="tracker: confident detections")
    track_low_thresh: float = Field(0.1, ge=0, le=1, description="tracker: second-pass detections")
    track_max_age: int = Field(30, ge=1, description="frames a lost track is kept before it ends")


class OutputConfig(_Strict):
    dir: Path = Field(Path("out"), description="output folder")
    video: bool = Field(True, description="write DIR/annotated.mp4")
    events_file: bool = Field(True, description="write DIR/events.jsonl")
    timings: bool = Field(False, description="write DIR/timings.jsonl: per-frame stage times")
    video_codec: str = Field("libx264", description="PyAV encoder for annotated.mp4")
    video_crf: int = Field(23, ge=0, le=51, description="x264 quality (lower is better)")


class PublishConfig(_Strict):
    events: str | None = Field(
        None, description="ZeroMQ PUB endpoint for events, e.g. tcp://127.0.0.1:5555"
    )
    frames: str | None = Field(None, description="ZeroMQ PUB endpoint for annotated JPEG frames")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the frame feed")
    wait_subscribers: int = Field(0, ge=0, description="wait for this many event subscribers first")
    wait_timeout_s: float = Field(10.0, ge=0, description="at most this long, seconds")

    @field_validator("events", "frames")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return None if v is None else check_endpoint(v)


class RuntimeConfig(_Strict):
    mode: Literal["batch"] = Field("batch", description="batch: lossless, every frame in order")
    ring_slots: int = Field(
        8, ge=2, le=256, description="frames in flight per source (shared memory)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads of the inference process"
    )
    stage_timeout_s: float = Field(
        120.0, gt=0, description="a stage silent this long is declared hung"
    )
    drain_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long to wait for the drain"
    )
    progress: bool = Field(True, description="show a progress bar on a terminal")


class VigilConfig(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list, description="inputs (one today)")
    detect: DetectConfig = Field(default_factory=DetectConfig)
    people: PeopleConfig = Field(default_factory=PeopleConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


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
