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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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


def parse_http_address(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); HOST defaults to 127.0.0.1 (port 0: any free port)."""
    host, sep, port = str(value).rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536 or (sep and not host):
        raise ValueError(f"bad HTTP address {value!r}: expected [HOST:]PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def format_http_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    uri: str = Field(
        description="video file, image folder, rtsp://[user:pw@]host[:port]/path, /dev/videoN"
    )
    stream_id: str = Field(
        "cam1",
        description="name of the stream in events and topics",
        # 1..64 of [A-Za-z0-9_.-] but not . or .. (clips/STREAM must stay inside clips/);
        # spelt without look-ahead, which pydantic's regex engine lacks
        pattern=r"^(?:[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}|\.[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,62}"
        r"|\.\.[A-Za-z0-9_.\-]{1,62})$",
    )
    decoder: Literal["auto", "software", "cuda"] = Field(
        "auto", description="auto: CUDA (PyAV hwaccel) when a CUDA device is present"
    )
    fps: float | None = Field(
        None, gt=0, le=1000, description="image folders: frames/s (default 10); USB: ask the driver"
    )
    realtime: bool | None = Field(
        None, description="pace files/folders at their fps (default: in live mode only)"
    )
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="camera: connect timeout, s")
    read_timeout_s: float = Field(
        5.0, gt=0, le=300, description="camera: no packet this long = silent -> reconnect"
    )
    reconnect_base_s: float = Field(0.5, gt=0, description="camera: first retry delay, s")
    reconnect_max_s: float = Field(30.0, gt=0, description="camera: retry delay cap, s")
    reconnect_max_attempts: int | None = Field(
        None, ge=1, description="camera: give up after this many failures in a row (None: never)"
    )
    min_restart_interval_s: float = Field(
        1.0, ge=0, description="camera: at least this long between two connection attempts"
    )
    stable_s: float = Field(
        10.0, gt=0, description="camera: a session this long resets the attempt count"
    )
    loop: bool = Field(
        False,
        description="files: start over at the end, forever, with pts still increasing (a "
        "stand-in camera for demos and soak tests)",
    )
    max_pixels: int | None = Field(
        8192 * 4320,
        ge=1,
        description="refuse frames larger than this many pixels (width x height; default: DCI "
        "8K passes, 8192x8192 not) before any buffer is sized; null: no cap",
    )


class DetectConfig(_Strict):
    model: str = Field(
        "auto",
        description="detector in the weights registry, or auto: the light one on a CPU, the "
        "stronger one on CUDA (vigil says which and why)",
    )
    weights: str = Field(
        "auto",
        description="auto (cached, pack, else download on first use) | pretrained | none "
        "(random, on purpose) | path to a .pth file",
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="drop boxes below this score")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="class-aware NMS IoU threshold")
    classes: list[str] | None = Field(None, description="keep only these class names (None: all)")
    input_size: int | None = Field(None, ge=32, le=4096, description="detector's shorter side, px")
    max_detections: int = Field(100, ge=1, le=1000, description="boxes kept per frame")
    stride: int = Field(1, ge=1, le=1000, description="detect every Nth frame of a stream")
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
    detections: bool = Field(
        False, description="write DIR/detections.jsonl: per-frame boxes, tracks, poses, forecasts"
    )
    video_codec: str = Field("libx264", description="PyAV encoder for annotated.mp4")
    video_crf: int = Field(23, ge=0, le=51, description="x264 quality (lower is better)")
    clips_max_age_s: float | None = Field(
        7 * 86400.0, gt=0, description="alert clips older than this are deleted (None: kept)"
    )
    clips_max_mb: float | None = Field(
        1024.0, gt=0, description="oldest alert clips deleted beyond this total size, MiB"
    )
    clip_buffer_mb: float = Field(
        512.0, gt=0, description="per-stream pre-roll buffer of annotated frames, MiB (cap)"
    )
    existing: Literal["keep", "overwrite"] = Field(
        "keep",
        description="a previous run's outputs in DIR: keep (moved to DIR/previous/N/) or "
        "overwrite (deleted; --overwrite); the journal always continues",
    )


class MqttConfig(_Strict):
    """``publish.mqtt``: events to an MQTT broker, Frigate's topics (see README "MQTT")."""

    host: str = Field("127.0.0.1", description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual with TLS)")
    topic_prefix: str = Field("vigil", min_length=1, description="first level of every topic")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of every message (at least once: 1 or 2)")
    client_id: str = Field("", description="MQTT client id (empty: a random one)")
    username: str | None = Field(None, description="user name (None: anonymous)")
    password_file: Path | None = Field(None, description="file holding the password (one line)")
    tls: bool = Field(False, description="connect with TLS")
    tls_ca_file: Path | None = Field(None, description="CA bundle to trust (None: the system's)")
    tls_cert_file: Path | None = Field(None, description="client certificate (PEM)")
    tls_key_file: Path | None = Field(None, description="client key (PEM)")
    keepalive_s: int = Field(60, ge=5, description="MQTT keepalive, seconds")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    discovery: bool = Field(False, description="publish Home Assistant discovery configs")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery prefix")
    max_inflight: int = Field(100, ge=1, description="messages sent and not yet acknowledged")
    reconnect_max_s: float = Field(30.0, ge=1, description="largest reconnect backoff, seconds")
    drain_timeout_s: float = Field(
        5.0, ge=0, le=30, description="at shutdown, wait this long for the broker's acks, s"
    )


class PublishConfig(_Strict):
    events: str | None = Field(
        None, description="ZeroMQ PUB endpoint for events, e.g. tcp://127.0.0.1:5555"
    )
    frames: str | None = Field(None, description="ZeroMQ PUB endpoint for annotated JPEG frames")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the frame feed")
    wait_subscribers: int = Field(0, ge=0, description="wait for this many event subscribers first")
    wait_timeout_s: float = Field(10.0, ge=0, description="at most this long, seconds")
    journal: str = Field(
        "auto", description="event journal: auto (DIR/events.journal.sqlite) | off | PATH"
    )
    journal_sync: Literal["normal", "full"] = Field(
        "normal", description="normal: survives a crash; full: also power loss (fsync/event)"
    )
    journal_retention_s: float | None = Field(
        7 * 24 * 3600.0, gt=0, description="delete journaled events older than this, seconds"
    )
    journal_max_rows: int | None = Field(
        1_000_000, ge=1, description="keep at most this many journaled events"
    )
    journal_keep_s: float = Field(
        600.0, ge=0, description="never delete events younger than this (the resume window)"
    )
    replay: str | None = Field(
        None, description="ZeroMQ ROUTER endpoint for replay/snapshot, e.g. tcp://127.0.0.1:5556"
    )
    heartbeat_s: float | None = Field(
        1.0, gt=0, description="HEARTBEAT period on the event endpoint, seconds (null: none)"
    )
    curve_secret_key_file: Path | None = Field(
        None,
        description="zmq.auth secret certificate: CURVE-encrypt every ZeroMQ endpoint (events, "
        "replay, frames, control)",
    )
    curve_clients_dir: Path | None = Field(
        None, description="with CURVE: admit only clients whose public certs are here"
    )
    max_subscription_bytes: int = Field(
        1024,
        ge=16,
        le=1 << 20,
        description="largest message (subscription) a peer may send to the event and frame "
        "endpoints; ZeroMQ drops a peer that sends more",
    )
    replay_max_message_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 26, description="replay: a bigger request drops its peer"
    )
    replay_max_reply_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 28, description="replay: events per answer stop past this"
    )
    replay_hwm: int = Field(
        8, ge=1, le=1000, description="replay: answers queued for a client that does not read"
    )
    replay_max_clients: int = Field(
        32, ge=1, le=10_000, description="replay: clients served at once (quiet 30 s: gone)"
    )
    kafka_bootstrap: str | None = Field(
        None, description="also produce events to Kafka at these brokers (host:port,...)"
    )
    kafka_topic: str = Field("vigil.events", description="Kafka topic (key = stream id)")
    kafka_config: dict[str, Any] = Field(
        default_factory=dict, description="extra librdkafka producer settings"
    )
    mqtt: MqttConfig | None = Field(
        None, description="also publish events to an MQTT broker (fed from the journal)"
    )

    @field_validator("events", "frames", "replay")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return None if v is None else check_endpoint(v)

    @field_validator("mqtt")
    @classmethod
    def _mqtt_needs_journal(cls, v: MqttConfig | None, info: Any) -> MqttConfig | None:
        if v is not None and info.data.get("journal") == "off":
            raise ValueError("the MQTT sink feeds from the event journal: set publish.journal")
        return v


class RuntimeConfig(_Strict):
    mode: Literal["auto", "batch", "live"] = Field(
        "auto",
        description="batch: lossless, every frame in order; live: latest frame wins, drops "
        "counted; auto: live when a source is a camera (rtsp, usb), else batch",
    )
    live_inflight: int = Field(
        2, ge=1, le=64, description="live: frames per stream in the pipeline at once"
    )
    drop_event_interval_s: float = Field(
        1.0, gt=0, description="live: at most one frame.dropped event per stream this often"
    )
    blocked_warn_s: float = Field(
        10.0, gt=0, description="warn when a source waits this long for a free ring slot"
    )
    duration_s: float | None = Field(
        None, gt=0, description="stop (drain and exit 0) after this many seconds"
    )
    control: str | None = Field(
        None, description="ZeroMQ REP endpoint to add/remove/list streams at runtime"
    )
    max_streams: int = Field(
        16, ge=1, le=256, description="most streams running at once (a remove frees a place)"
    )
    allowed_sources: list[str] = Field(
        ["rtsp://", "rtsps://"],
        description="control add: URI prefixes (with ://) and path roots a peer may add",
    )
    control_min_retry_s: float = Field(
        1.0,
        ge=0,
        description="control add: floor of min_restart_interval_s (reconnect attempts apart)",
    )
    control_max_message_bytes: int = Field(
        64 * 1024, ge=1024, le=1 << 24, description="control: a bigger request drops its peer"
    )
    probe_timeout_s: float = Field(
        20.0, gt=0, le=600, description="control add: the source probe's time limit, seconds"
    )
    ring_slots: int = Field(
        8, ge=2, le=256, description="frames in flight per source (shared memory)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads of the inference process"
    )
    stage_timeout_s: float = Field(
        120.0, gt=0, description="a stage silent this long is declared hung"
    )
    startup_timeout_s: float = Field(
        900.0,
        gt=0,
        description="a stage that has not reported this long after it started (loading its "
        "model: TensorRT may build engines for minutes) is declared hung",
    )
    drain_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long to wait for the drain"
    )
    progress: bool = Field(True, description="show a progress bar on a terminal")
    http: str | None = Field(
        None,
        description="serve /metrics, /healthz, /readyz and the live viewer on [HOST:]PORT "
        "(HOST defaults to 127.0.0.1)",
    )
    max_restarts: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="restarts of a crashed stage before the run fails (None: 5 in live mode, "
        "0 in batch mode, where a lost frame would be a silent gap in the output)",
    )
    restart_backoff_s: float = Field(
        1.0, gt=0, description="delay before a stage's first restart; doubles each time"
    )
    restart_backoff_max_s: float = Field(30.0, gt=0, description="cap of the restart delay")
    ready_timeout_s: float = Field(
        10.0,
        gt=0,
        description="/readyz: a stream with no frame this long, or a stage with no report this "
        "long, is not ready",
    )
    http_token_file: Path | None = Field(
        None,
        description="file holding the HTTP bearer token (required to serve HTTP beyond "
        "loopback): Authorization: Bearer TOKEN, or /?token=TOKEN once in a browser",
    )
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides the bound host, localhost and IP "
        "literals (DNS rebinding guard), e.g. [vigil.example.org]",
    )
    http_max_connections: int = Field(
        100, ge=1, le=10000, description="HTTP connections at once (one thread each; 503 past it)"
    )
    http_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="an HTTP client must send its request head within this, and a write it "
        "does not read for this long closes its connection, seconds",
    )
    insecure: bool = Field(
        False,
        description="allow binding HTTP without a token, or ZeroMQ endpoints without CURVE, "
        "beyond loopback (a warning is logged); --insecure",
    )

    @field_validator("control")
    @classmethod
    def _control_endpoint(cls, v: str | None) -> str | None:
        return None if v is None else check_endpoint(v)

    @field_validator("http")
    @classmethod
    def _http_address(cls, v: str | None) -> str | None:
        return None if v is None else format_http_address(*parse_http_address(v))


class ArchiveConfig(_Strict):
    """Batch archives: ``vigil process`` with several inputs (see ``pipeline/archive.py``)."""

    workers: int = Field(1, ge=1, le=256, description="files processed at once (processes/actors)")
    engine: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: Ray actors"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join, e.g. ray://head:10001 (None: start a local one)"
    )
    ray_cpus_per_worker: float = Field(
        1.0, gt=0, description="CPUs each Ray actor reserves (also its torch threads)"
    )
    extensions: list[str] = Field(
        ["mp4", "mkv", "avi", "mov", "ts", "webm", "m4v", "mpg", "mpeg"],
        description="file extensions a folder or glob input is scanned for",
    )


class SegmentConfig(_Strict):
    """Segmentation stage (``models/segmentation.py``); off by default."""

    enabled: bool = Field(False, description="run segmentation (masks on every result)")
    model: str = Field(
        "lraspp_mobilenet_v3_large",
        description="lraspp_mobilenet_v3_large | deeplabv3_mobilenet_v3_large | fcn_resnet50 "
        "(semantic) | maskrcnn_resnet50_fpn_v2 (instance)",
    )
    weights: str = Field("auto", description="auto | pretrained | none (random) | path")
    input_size: int | None = Field(None, ge=32, le=4096, description="shorter side, px")
    stride: int = Field(1, ge=1, le=1000, description="run every Nth frame per stream, reuse")
    score_threshold: float = Field(0.5, ge=0, le=1, description="instance: min instance score")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="instance: mask probability cut")
    seed: int = Field(0, description="seed of random-init weights")


class PoseConfig(_Strict):
    """Pose stage (``models/pose.py``); off by default (``simnet`` gives poses itself)."""

    enabled: bool = Field(False, description="run a pose model (replaces the detector's poses)")
    model: str = Field(
        "shufflenetv2k16",
        description="openpifpaf | shufflenetv2k16 | shufflenetv2k30 | resnet50 (OpenPifPaf) | "
        "keypointrcnn_resnet50_fpn",
    )
    weights: str = Field("auto", description="auto | pretrained | none (random) | path")
    fallback: str | None = Field(
        "keypointrcnn_resnet50_fpn",
        description="model when OpenPifPaf is unavailable (None: error)",
    )
    input_size: int | None = Field(
        None, ge=32, le=4096, description="OpenPifPaf: longer side; Keypoint R-CNN: shorter, px"
    )
    stride: int = Field(1, ge=1, le=1000, description="run every Nth frame per stream, reuse")
    score_threshold: float = Field(0.1, ge=0, le=1, description="drop poses below this score")
    max_poses: int = Field(50, ge=1, le=1000, description="poses kept per frame")
    seed: int = Field(0, description="seed of random-init weights")


class BackendConfig(_Strict):
    """How the frame models run (``models/backends.py``), for every stage."""

    name: Literal["eager", "compile", "onnxruntime", "tensorrt"] = Field(
        "eager", description="eager | compile (torch.compile) | onnxruntime | tensorrt"
    )
    precision: Literal["fp32", "fp16"] = Field("fp32", description="fp16: CUDA only")
    channels_last: bool = Field(False, description="NHWC convolutions (CUDA)")
    cuda_graphs: bool = Field(False, description="replay CUDA graphs for static shapes (CUDA)")
    compile_mode: str | None = Field(None, description="torch.compile mode (None: automatic)")
    cache_dir: Path | None = Field(
        None, description="ONNX files and TensorRT engines (None: $VIGIL_CACHE or ~/.cache/vigil)"
    )
    decode_threads: int = Field(
        0, ge=0, le=64,
        description="OpenPifPaf: CPU decoder threads overlapping the network (0: inline)",
    )


_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


def _check_points(points: list[list[float]], pixels: bool, what: str) -> list[list[float]]:
    for p in points:
        if len(p) != 2:
            raise ValueError(f"{what}: each point is [x, y], got {p}")
        if not pixels and not all(0.0 <= v <= 1.0 for v in p):
            raise ValueError(f"{what}: relative coordinates are 0..1 (or set pixels: true)")
    return points


class ZoneConfig(_Strict):
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


class LineConfig(_Strict):
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


class AlertWhen(_Strict):
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


class ClipConfig(_Strict):
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


class AlertConfig(_Strict):
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


class VigilConfig(_Strict):
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
