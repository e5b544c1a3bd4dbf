"""The publish stage's outputs, each opened from its typed config section: the event journal,
the Kafka and MQTT sinks, the annotated video files, alert clips, the HTTP viewer's tap, and the
catch-up of ``events.jsonl`` after a crash."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import zmq

from models.results import FrameResult
from pipeline.config import VigilConfig
from pipeline.config_runtime import PublishConfig
from pipeline.config_sections import OutputConfig
from pipeline.graph.context import StageContext
from pipeline.protocol import TAP_HWM, TapKind, set_options
from stream import events as ev


def open_journal(pub: PublishConfig, out_dir: Path) -> Any:
    """The event journal named by ``publish.journal`` (None when it is ``off``)."""
    from pipeline.outputs import journal_path
    from stream.journal import EventJournal

    path = journal_path(pub.journal, out_dir)
    if path is None:
        return None
    return EventJournal(
        path,
        synchronous=pub.journal_sync,
        retention_s=pub.journal_retention_s,
        max_rows=pub.journal_max_rows,
        keep_s=pub.journal_keep_s,
    )


def open_kafka(pub: PublishConfig) -> Any:
    """The Kafka sink when ``publish.kafka_bootstrap`` is set."""
    if not pub.kafka_bootstrap:
        return None
    from stream.kafka_sink import KafkaEventSink

    return KafkaEventSink(
        pub.kafka_topic, {"bootstrap.servers": pub.kafka_bootstrap, **pub.kafka_config}
    )


def open_mqtt(pub: PublishConfig, journal: Any) -> Any:
    """The MQTT sink when ``publish.mqtt`` is set, started: it tails the journal in its own
    thread (config validation makes sure there is one)."""
    if pub.mqtt is None or journal is None:
        return None
    from stream.mqtt_sink import MqttEventSink

    opts = pub.mqtt.model_dump(mode="json")
    secret = opts.pop("password_file", None)
    password = Path(secret).read_text(encoding="utf-8").strip() if secret else None
    return MqttEventSink(journal.path, password=password, **opts).start()


def open_publisher(
    ctx: StageContext, pub: PublishConfig, jsonl: Path | None, journal: Any, restart: int
) -> Any:
    """The :class:`stream.sinks.EventPublisher` of ``publish`` (appending after a restart)."""
    from stream.sinks import EventPublisher

    return EventPublisher(
        jsonl_path=jsonl,
        append=restart > 0,
        ctx=ctx.zmq,
        endpoint=pub.events,
        wait_subscribers=pub.wait_subscribers if not restart else 0,
        wait_timeout_s=pub.wait_timeout_s,
        journal=journal,
        replay_endpoint=pub.replay,
        heartbeat_s=pub.heartbeat_s,
        kafka=open_kafka(pub),
        curve_secret_key_file=pub.curve_secret_key_file,
        curve_clients_dir=pub.curve_clients_dir,
        max_subscription_bytes=pub.max_subscription_bytes,
        replay_limits={
            "max_message_bytes": pub.replay_max_message_bytes,
            "max_reply_bytes": pub.replay_max_reply_bytes,
            "hwm": pub.replay_hwm,
            "max_clients": pub.replay_max_clients,
        },
    )


def open_frame_feed(ctx: StageContext, pub: PublishConfig) -> Any:
    """The annotated JPEG feed on ``publish.frames`` (None when unset)."""
    if not pub.frames:
        return None
    from stream.sinks import JpegFrameFeed
    from stream.zsocket import CurveServerKeys

    return JpegFrameFeed(
        ctx.zmq,
        pub.frames,
        quality=pub.jpeg_quality,
        max_message_bytes=pub.max_subscription_bytes,
        curve=CurveServerKeys.load(pub.curve_secret_key_file, pub.curve_clients_dir),
    )


def clip_recorder_from_config(cfg: VigilConfig, out_dir: Any, deterministic: bool) -> Any:
    """The publish side's :class:`stream.clips.ClipRecorder` for ``cfg``, or None when no
    alert asks for a clip."""
    pre = [a.clip.pre_s for a in cfg.alerts if a.clip is not None]
    if not pre:
        return None
    from stream.clips import ClipRecorder

    out = cfg.output
    mb = 1 << 20
    return ClipRecorder(
        out_dir,
        max_pre_s=max(pre),
        deterministic=deterministic,
        buffer_bytes=int(out.clip_buffer_mb * mb),
        max_age_s=out.clips_max_age_s,
        max_bytes=int(out.clips_max_mb * mb) if out.clips_max_mb else None,
        codec=out.video_codec,
        crf=out.video_crf,
    )


def catch_up_jsonl(jsonl: Path, journal: Any) -> None:
    """After a crash, make ``jsonl`` end where the journal does: a half-written last line is
    cut, and events journaled but not yet written there (the process died between the two)
    are appended."""
    if not jsonl.is_file():
        return
    with open(jsonl, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(max(size - 65536, 0))
        tail = f.read()
        cut = tail.rfind(b"\n") + 1  # end of the last whole line in the tail
        if cut < len(tail):
            f.truncate(size - len(tail) + cut)
        lines = tail[:cut].splitlines()
        last = json.loads(lines[-1])["seq"] if lines else 0
        f.seek(0, 2)
        for line in journal.read_after(last):
            f.write(line.encode() + b"\n")


def feed_health(publisher: Any, metrics: Any) -> None:
    """Before each stats report: restart a dead event feed thread, and say so (the supervisor
    shows ``stage publish: feed server down, restarting`` in /readyz while it is)."""
    was_down = publisher.check_feed()
    metrics.set("vigil_feed_server_down", 1 if was_down or not publisher.feed_up else 0)
    metrics.set_total("vigil_feed_server_restarts", publisher.feed_restarts)


def video_sink(
    out_dir: Path, out: OutputConfig, sid: str, info: dict[str, Any], n: int, restart: int
) -> Any:
    """The stream's ``annotated[-ID][.restartN].mp4`` writer."""
    from stream.sinks import VideoFileSink

    name = "annotated" if n == 1 else f"annotated-{sid}"
    suffix = f".restart{restart}" if restart else ""
    return VideoFileSink(
        out_dir / f"{name}{suffix}.mp4",
        width=info["width"],
        height=info["height"],
        fps=info["fps"],
        time_base=Fraction(*info["time_base"]),
        codec=out.video_codec,
        crf=out.video_crf,
    )


class ViewerTap:
    """Publish -> supervisor feed for the HTTP viewer (:mod:`pipeline.http`): every event, and
    annotated frames as JPEG at most ``max_fps`` per stream. Lossy by design (latest wins): a
    full queue or a frame inside the rate limit is skipped and counted, never waited for."""

    def __init__(self, ctx: StageContext, *, quality: int = 80, max_fps: float = 10.0) -> None:
        from stream.sinks import encode_jpeg  # OpenCV: imported by the publish stage only

        self._encode = encode_jpeg
        self._ctx = ctx
        self._sock = set_options(ctx.zmq.socket(zmq.PUSH), sndhwm=TAP_HWM, linger_ms=0)
        self._sock.connect(ctx.endpoints.tap)
        self._quality = quality
        self._interval = 1.0 / max_fps
        self._last: dict[str, float] = {}

    def _send(self, parts: list[bytes]) -> bool:
        try:
            self._sock.send_multipart(parts, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def event(self, event: dict[str, Any]) -> None:
        if not self._send([TapKind.EVENT, ev.dumps(event).encode()]):
            self._ctx.metrics.inc("vigil_viewer_dropped", kind="event")

    def frame(self, sid: str, rgb: Any, result: FrameResult) -> None:
        now = time.monotonic()
        if now - self._last.get(sid, 0.0) < self._interval:
            return
        jpeg = self._encode(rgb, self._quality)
        meta = {"stream": sid, "frame": result.frame_idx, "pts": result.pts}
        if jpeg is None or not self._send(
            [TapKind.FRAME, sid.encode(), json.dumps(meta).encode(), jpeg]
        ):
            self._ctx.metrics.inc("vigil_viewer_dropped", kind="frame")
            return
        self._last[sid] = now
