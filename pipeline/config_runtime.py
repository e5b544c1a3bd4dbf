"""Config sections (pydantic v2) of what vigil serves and how it runs: ``publish`` (with
``publish.mqtt``) and ``runtime``, and the endpoint and HTTP address checks they use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.config_sections import Strict

_ENDPOINT = re.compile(
    r"^(tcp://(\*|[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})|ipc://.+|inproc://.+)$"
)

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

class MqttConfig(Strict):
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


class PublishConfig(Strict):
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


class RuntimeConfig(Strict):
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
