"""Bodies of the stage processes (see :mod:`pipeline.stages` for the message protocol)."""

from __future__ import annotations

import json
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import zmq

from models.results import FrameResult
from pipeline.stages import StageContext, StreamLedger, dynamic_budget
from stream import events as ev
from stream.transport import RingReader

log = logging.getLogger(__name__)


def source_body(ctx: StageContext, cfg: dict[str, Any], src: dict[str, Any]) -> None:
    """Decode one source into the shared-memory ring: lossless in batch mode (wait for a free
    slot), latest-wins in live mode; cameras reconnect (see :mod:`pipeline.source_stage`)."""
    from pipeline.source_stage import run_source

    run_source(ctx, cfg, src)


def _source_error(message: str) -> Exception:
    from stream.sources import SourceError

    return SourceError(message)


def infer_body(ctx: StageContext, cfg: dict[str, Any], n_sources: int) -> None:
    """Batch frames (across streams) and run the frame model: detection with class-aware NMS,
    and poses and person masks where the model gives them."""
    import torch

    from models.perception.build import build_perceiver_from_config, perceive
    from pipeline.config import VigilConfig

    rt, det_cfg = cfg["runtime"], cfg["detect"]
    if rt["torch_threads"]:
        torch.set_num_threads(rt["torch_threads"])
    device = resolve_device(det_cfg["device"])
    # Bind the input before the (slow) model load: a source that ends meanwhile must find a
    # peer for its frames and EOS, or they would die with it after its linger time.
    inp = ctx.pull(ctx.endpoints.infer)
    ctx.maybe_slow_load()
    perceiver = build_perceiver_from_config(VigilConfig.model_validate(cfg), device=device)
    ctx.report("info", detector=f"{det_cfg['model']} on {device}: {perceiver.description}")
    class_names = list(perceiver.class_names)
    if device.startswith("cuda"):
        ctx.stats_hook = lambda metrics: _gpu_memory(metrics, device)
    out = ctx.push(ctx.endpoints.analytics)
    reader = RingReader()
    batch_size, wait_ms = det_cfg["batch_size"], det_cfg["batch_wait_ms"]
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        frames = [reader.view(h["addr"]) for h in pending]
        started = time.perf_counter()
        outputs = perceive(perceiver, frames, [h["result"]["stream_id"] for h in pending])
        ctx.metrics.observe("vigil_inference_seconds", time.perf_counter() - started)
        ctx.metrics.observe("vigil_inference_batch_size", len(pending))
        now = time.time()
        for header, (dets, poses, masks) in zip(pending, outputs):
            header["result"]["class_names"] = class_names
            header["result"]["stage_ts"]["infer"] = now
            ctx.send(out, header, {**dets.to_wire(), **poses.to_wire(), **masks.to_wire()})
        pending.clear()

    # Static runs end after the EOS of each of ``n_sources``; dynamic runs (n_sources None: a
    # control endpoint adds and removes streams) end on the supervisor's ``shutdown``.
    streams = StreamLedger(
        n_sources, budget=dynamic_budget(cfg), drain_timeout_s=rt["drain_timeout_s"]
    )
    try:
        while not streams.done:
            msg = ctx.recv(inp, timeout_ms=int(wait_ms) if pending else streams.poll_ms)
            if msg is None:
                flush()
                streams.tick()
                continue
            header, _ = msg
            if header["kind"] == "frame":
                ctx.maybe_fault(header["result"]["frame_idx"])
                pending.append(header)
                if len(pending) >= batch_size:
                    flush()
                continue
            flush()
            streams.see(header)
            if header["kind"] != "shutdown":
                ctx.send(out, header)
        flush()
        for header in streams.closing_messages():
            ctx.send(out, header)
    finally:
        reader.close()


def _gpu_memory(metrics: Any, device: str) -> None:
    import torch

    metrics.set(
        "vigil_gpu_memory_bytes",
        torch.cuda.memory_allocated(device),
        device=device,
        kind="allocated",
    )
    metrics.set(
        "vigil_gpu_memory_bytes", torch.cuda.memory_reserved(device), device=device, kind="reserved"
    )


def resolve_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def analytics_body(
    ctx: StageContext, cfg: dict[str, Any], n_sources: int, resume: dict[str, Any] | None = None
) -> None:
    """Per-stream analytics (see :class:`pipeline.analytics.StreamAnalytics`) on each frame.

    Every event it sends on (its own and the sources') is numbered and kept for a while
    (:class:`pipeline.analytics.SentEvents`): a restarted publish stage asks for the ones its
    predecessor had not journaled (``resend``). ``resume`` is given to an analytics stage
    restarted by the supervisor: its first message tells the publish stage to end the tracks
    the dead process left open (``tracks_lost``)."""
    from pipeline.analytics import SentEvents, StreamAnalytics

    inp, out = ctx.pull(ctx.endpoints.analytics), ctx.push(ctx.endpoints.publish)
    sent = SentEvents(gen=(resume or {}).get("restart", 0))
    if resume:
        ctx.send(out, {"kind": "tracks_lost", "restart": resume["restart"]})
    analytics = StreamAnalytics.from_config(cfg)

    def send_event(event: dict[str, Any], eid: list[int] | None = None) -> None:
        ctx.send(out, {"kind": "event", "event": event, "eid": eid or sent.number(event)})

    eos_left = n_sources
    while eos_left:
        header, arrays = ctx.recv(inp)
        kind = header["kind"]
        if kind == "resend":  # from a restarted publish stage
            after = header["after"]
            events, lost = sent.after(after)
            if lost:
                log.error(
                    "%d events the dead publish stage had not journaled were no longer kept "
                    "for a resend (the newest %d are); they are lost",
                    lost,
                    sent.capacity,
                )
            if after is not None and after[0] != sent.gen:
                log.warning("events of the analytics process before this one that the dead "
                            "publish stage had not journaled are lost with it")  # fmt: skip
            for eid, event in events:
                send_event(event, eid)
            reply = {"kind": "resend_done", "count": len(events), "lost": lost}
            ctx.send(out, {**reply, "request": header.get("request")})
            continue
        # A stream that goes offline or resets (resolution change, pts backwards) ends its
        # open tracks first, so subscribers never see a track that silently vanishes.
        if kind == "event" and header["event"]["type"] == "stream.offline":
            for event in analytics.finish(header["event"]["stream"]):
                send_event(event)
        elif kind == "reset":
            for event in analytics.finish(header["stream_id"]):
                send_event(event)
        if kind == "event":
            send_event(header["event"])
            continue
        if kind != "frame":
            ctx.send(out, header)
            eos_left -= kind == "eos"
            continue
        result = FrameResult.from_wire(header["result"], arrays)
        ctx.maybe_fault(result.frame_idx)
        for event in analytics.update(result):
            send_event(event)
        result.stage_ts["analytics"] = time.time()
        res_header, res_arrays = result.to_wire()
        header["result"] = res_header
        ctx.send(out, header, res_arrays)


def _open_journal(pub_cfg: dict[str, Any], out_dir: Path) -> Any:
    """The event journal named by ``publish.journal`` (None when it is ``off``)."""
    from pipeline.outputs import journal_path
    from stream.journal import EventJournal

    path = journal_path(pub_cfg.get("journal", "auto"), out_dir)
    if path is None:
        return None
    return EventJournal(
        path,
        synchronous=pub_cfg.get("journal_sync", "normal"),
        retention_s=pub_cfg.get("journal_retention_s"),
        max_rows=pub_cfg.get("journal_max_rows"),
        keep_s=pub_cfg.get("journal_keep_s", 600.0),
    )


def _open_kafka(pub_cfg: dict[str, Any]) -> Any:
    """The Kafka sink when ``publish.kafka_bootstrap`` is set."""
    if not pub_cfg.get("kafka_bootstrap"):
        return None
    from stream.kafka_sink import KafkaEventSink

    return KafkaEventSink(
        pub_cfg["kafka_topic"],
        {"bootstrap.servers": pub_cfg["kafka_bootstrap"], **pub_cfg.get("kafka_config", {})},
    )


def _open_mqtt(pub_cfg: dict[str, Any], journal: Any) -> Any:
    """The MQTT sink when ``publish.mqtt`` is set, started: it tails the journal in its own
    thread (config validation makes sure there is one)."""
    mqtt_cfg = pub_cfg.get("mqtt")
    if not mqtt_cfg or journal is None:
        return None
    from stream.mqtt_sink import MqttEventSink

    opts = dict(mqtt_cfg)
    secret = opts.pop("password_file", None)
    password = Path(secret).read_text(encoding="utf-8").strip() if secret else None
    return MqttEventSink(journal.path, password=password, **opts).start()


def _catch_up(jsonl: Path, journal: Any) -> None:
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


#: Journal meta keys: how far the analytics stage's events are journaled (run, [gen, n]);
#: the first seq of this run (run, seq).
_SENT_MARK = "analytics_sent"
_RUN_START = "run_start"

#: Stage latencies observed per frame: (stage, stage_ts key it ends at, key it starts at).
_LATENCY_SPANS = (
    ("decode", "decode", "capture"),
    ("infer", "infer", "decode"),
    ("analytics", "analytics", "infer"),
    ("publish", "publish", "analytics"),
    ("total", "publish", "capture"),
)


def publish_body(
    ctx: StageContext, cfg: dict[str, Any], n_sources: int, resume: dict[str, Any] | None = None
) -> None:
    """Annotate and encode frames, return ring slots, number and publish events.

    ``resume`` is given to a publish stage restarted by the supervisor: ``{"restart": N,
    "streams": {stream_id: open info}}``. It appends to events.jsonl instead of starting it
    anew (first catching it up with the journal), writes each stream's video to a new file
    ``annotated[-ID].restartN.mp4`` (the dead process's file was never finalised), knows the
    streams already open and the tracks open, and asks the analytics stage for the events
    the dead process had not journaled (see :class:`pipeline.analytics.EventGate`).
    """
    from pipeline.analytics import EventGate, OpenTracks, clip_event, clip_recorder_from_config
    from pipeline.annotate import SceneOverlay, annotate
    from stream.sinks import EventPublisher, JpegFrameFeed
    from stream.zsocket import CurveServerKeys

    out_cfg, pub_cfg = cfg["output"], cfg["publish"]
    out_dir = Path(out_cfg["dir"])
    restart = (resume or {}).get("restart", 0)
    inp = ctx.pull(ctx.endpoints.publish)
    journal = _open_journal(pub_cfg, out_dir)
    mqtt = _open_mqtt(pub_cfg, journal)
    tracks = OpenTracks()
    run_key = ctx.endpoints.control  # unique to this run: a journal's mark from another is stale
    last = None
    if journal is not None and not restart:
        journal.set_meta(_RUN_START, json.dumps({"run": run_key, "seq": journal.head + 1}))
    elif journal is not None:
        first = json.loads(journal.get_meta(_RUN_START) or "{}")
        first_seq = first.get("seq", 1) if first.get("run") == run_key else journal.head + 1
        for line in journal.open_state():  # the tracks the dead process knew open (this run's)
            event = json.loads(line)
            if event["seq"] >= first_seq:
                tracks.event(event)
        mark = json.loads(journal.get_meta(_SENT_MARK) or "{}")
        last = mark.get("eid") if mark.get("run") == run_key else None
        if out_cfg["events_file"]:
            _catch_up(out_dir / "events.jsonl", journal)
    # Restarted, with a journal: ask the analytics stage for the events after the last one
    # journaled (the dead process may have received some it never journaled).
    gate = EventGate(last, holding=journal is not None and restart > 0)
    if gate.holding:
        ask = ctx.push(ctx.endpoints.analytics)
        ask.setsockopt(zmq.LINGER, 0)  # an analytics stage already gone needs no answer
        ctx.send(ask, {"kind": "resend", "after": last, "request": restart})
    publisher = EventPublisher(
        jsonl_path=out_dir / "events.jsonl" if out_cfg["events_file"] else None,
        append=restart > 0,
        ctx=ctx.zmq,
        endpoint=pub_cfg["events"],
        wait_subscribers=pub_cfg["wait_subscribers"] if not restart else 0,
        wait_timeout_s=pub_cfg["wait_timeout_s"],
        journal=journal,
        replay_endpoint=pub_cfg.get("replay"),
        heartbeat_s=pub_cfg.get("heartbeat_s"),
        kafka=_open_kafka(pub_cfg),
        curve_secret_key_file=pub_cfg.get("curve_secret_key_file"),
        curve_clients_dir=pub_cfg.get("curve_clients_dir"),
        max_subscription_bytes=pub_cfg["max_subscription_bytes"],
        replay_limits={
            "max_message_bytes": pub_cfg["replay_max_message_bytes"],
            "max_reply_bytes": pub_cfg["replay_max_reply_bytes"],
            "hwm": pub_cfg["replay_hwm"],
            "max_clients": pub_cfg["replay_max_clients"],
        },
    )
    ctx.stats_hook = lambda metrics: _feed_health(publisher, metrics)
    feed = (
        JpegFrameFeed(
            ctx.zmq,
            pub_cfg["frames"],
            quality=pub_cfg["jpeg_quality"],
            max_message_bytes=pub_cfg["max_subscription_bytes"],
            curve=CurveServerKeys.load(
                pub_cfg.get("curve_secret_key_file"), pub_cfg.get("curve_clients_dir")
            ),
        )
        if pub_cfg["frames"]
        else None
    )
    tap = ViewerTap(ctx, quality=pub_cfg["jpeg_quality"]) if cfg["runtime"].get("http") else None
    # Alert clips: pre-roll buffers here, encoding in the recorder's own thread.
    live = cfg["runtime"].get("mode") == "live"
    clips = clip_recorder_from_config(cfg, out_dir, deterministic=not live)
    last_seen: dict[str, tuple[int, float, float]] = {}  # stream -> frame, pts, ts (live clips)
    overlay = SceneOverlay(cfg.get("zones") or [], cfg.get("lines") or [])
    mode = "a" if restart else "w"
    timings = open(out_dir / "timings.jsonl", mode) if out_cfg["timings"] else None  # noqa: SIM115
    records = open(out_dir / "detections.jsonl", mode) if out_cfg["detections"] else None  # noqa: SIM115
    reader = RingReader()
    videos: dict[str, Any] = {}
    credits: dict[str, zmq.Socket] = {}
    done_frames = 0
    last_report = 0.0
    eos_left = n_sources

    def credit_socket(sid: str) -> zmq.Socket:
        """The stream's credit socket (also for a stream opened before a restart, unknown here)."""
        if sid not in credits:
            credits[sid] = ctx.push(ctx.endpoints.credit(sid))
        return credits[sid]

    def open_stream(sid: str, info: dict[str, Any]) -> None:
        credit_socket(sid)
        if out_cfg["video"] and sid not in videos:
            videos[sid] = _video_sink(out_dir, out_cfg, sid, info, n_sources, restart)
        if clips is not None:
            tb = Fraction(*info["time_base"])
            clips.open_stream(sid, info["width"], info["height"], info["fps"], tb)
        ctx.report("open", stream_id=sid, info=info)

    def publish(event: dict[str, Any], eid: list[int] | None = None) -> None:
        if tracks.stale(event, eid[0] if eid else None):
            log.warning("dropped %s of track %s: its analytics process was restarted and its "
                        "tracks ended", event["type"], event.get("track"))  # fmt: skip
            return
        if clips is not None and event["type"] == "stream.offline":
            # The stream's clips first: each is written and announced before it goes offline.
            for fields in clips.finish_stream(event["stream"]):
                stamp = (event["frame"], event["pts"], _unix(event["ts"]))
                publish(clip_event(event["stream"], fields, *stamp))
        mark = {"run": run_key, "eid": eid}
        meta = {_SENT_MARK: json.dumps(mark)} if eid is not None and journal is not None else None
        event = publisher.publish(event, meta)
        ctx.metrics.inc("vigil_events_published", type=event["type"])
        tracks.event(event)
        overlay.event(event)
        if tap is not None:
            tap.event(event)
        if clips is not None and event["type"] == "alert":
            clips.alert(event)

    def publish_live_clips() -> None:
        for sid, fields in clips.poll() if clips is not None else []:
            frame, pts, ts = last_seen.get(sid, (None, None, time.time()))
            publish(clip_event(sid, fields, frame, pts, ts))

    def release_held(why: str) -> None:
        held = gate.release()
        log.warning("resend: %s; %d events held meanwhile journaled", why, len(held))
        for eid, event in held:
            publish(event, eid)

    for sid, info in (resume or {}).get("streams", {}).items():
        open_stream(sid, info)
    gate.start()
    try:
        while eos_left:
            if gate.holding and time.monotonic() > gate.deadline:
                release_held(f"no answer in {gate.wait_s:.0f} s (events resent later still count)")
            waiting = gate.holding or (live and clips is not None and clips.busy)
            got = ctx.recv(inp, timeout_ms=200 if waiting else None)
            if live:
                publish_live_clips()
            if got is None:
                continue
            header, arrays = got
            kind = header["kind"]
            if kind == "event":
                ctx.maybe_fault_on_event(header["event"]["type"])
                if "eid" in header:  # from the analytics stage: in order, once each
                    for eid, event in gate.offer(header["eid"], header["event"]):
                        publish(event, eid)
                else:  # the supervisor's
                    publish(header["event"])
            elif kind == "resend_done" and header.get("request") == restart:
                release_held(f"the analytics stage sent {header['count']} events again")
            elif kind == "tracks_lost":  # a restarted analytics stage: its tracker starts anew
                if gate.holding:  # what is held came from the dead analytics process: first
                    release_held("an analytics restart ends the wait")
                for event in tracks.end_all("restart", gen=header["restart"]):
                    publish(event)
            elif kind == "open":
                open_stream(header["stream_id"], header["info"])
            elif kind == "frame":
                result = FrameResult.from_wire(header["result"], arrays)
                ctx.maybe_fault(result.frame_idx)
                sid = result.stream_id
                drawn = annotate(reader.view(header["addr"]), result, overlay=overlay)
                addr = header["addr"]
                ctx.send(
                    credit_socket(sid),
                    {"slot": addr["slot"], "ring": addr["ring"], "gen": addr.get("gen")},
                )
                if sid in videos:
                    videos[sid].write(drawn, header["pts_raw"])
                if feed is not None:
                    feed.send(
                        sid, drawn, {"stream": sid, "frame": result.frame_idx, "pts": result.pts}
                    )
                if tap is not None:
                    tap.frame(sid, drawn, result)
                if clips is not None:
                    last_seen[sid] = (result.frame_idx, result.pts, result.capture_ts)
                    due = clips.frame(sid, drawn, result.pts, header["pts_raw"], result.frame_idx)
                    for fields in due:
                        publish(clip_event(sid, fields, *last_seen[sid]))
                tracks.frame(result)
                done_frames += 1
                stamps = {**result.stage_ts, "publish": time.time()}
                ctx.metrics.inc("vigil_frames_processed", stream=sid)
                for stage, end, begin in _LATENCY_SPANS:
                    if end in stamps and begin in stamps:
                        latency = max(stamps[end] - stamps[begin], 0.0)
                        ctx.metrics.observe("vigil_stage_latency_seconds", latency, stage=stage)
                if records is not None:
                    records.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
                if timings is not None:
                    timings.write(
                        json.dumps({"stream": sid, "frame": result.frame_idx, **stamps}) + "\n"
                    )
                    timings.flush()  # readable while the run goes on
                now = time.monotonic()
                if now - last_report > 0.2:
                    ctx.report("progress", frames=done_frames, events=publisher.published)
                    last_report = now
            elif kind == "eos":
                eos_left -= 1
                sid = header["stream_id"]
                if sid in videos:
                    videos.pop(sid).close()
                ctx.report(
                    "eos",
                    stream_id=sid,
                    reason=header["reason"],
                    frames_read=header["frames_read"],
                    detail=header["detail"],
                )
        if gate.holding:  # the run ended before the answer: journal what came, in order
            release_held("the run ended first")
        ctx.report("progress", frames=done_frames, events=publisher.published)
    finally:
        for video in videos.values():
            video.abort()
        if clips is not None:
            clips.close()
        publisher.close()
        if mqtt is not None:  # after the publisher: the last events are journaled by then
            mqtt.close()
        for log_file in (timings, records):
            if log_file is not None:
                log_file.close()
        if feed is not None:
            ctx.report("feed", sent=feed.sent, dropped=feed.dropped)
            feed.close()
        reader.close()


def _feed_health(publisher: Any, metrics: Any) -> None:
    """Before each stats report: restart a dead event feed thread, and say so (the supervisor
    shows ``stage publish: feed server down, restarting`` in /readyz while it is)."""
    was_down = publisher.check_feed()
    metrics.set("vigil_feed_server_down", 1 if was_down or not publisher.feed_up else 0)
    metrics.set_total("vigil_feed_server_restarts", publisher.feed_restarts)


def _unix(ts: str) -> float:
    """``"2026-11-27T06:01:02.345Z"`` -> Unix seconds (an event's ``ts`` back)."""
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _video_sink(
    out_dir: Path, out_cfg: dict[str, Any], sid: str, info: dict[str, Any], n: int, restart: int
) -> Any:
    from stream.sinks import VideoFileSink

    name = "annotated" if n == 1 else f"annotated-{sid}"
    suffix = f".restart{restart}" if restart else ""
    return VideoFileSink(
        out_dir / f"{name}{suffix}.mp4",
        width=info["width"],
        height=info["height"],
        fps=info["fps"],
        time_base=Fraction(*info["time_base"]),
        codec=out_cfg["video_codec"],
        crf=out_cfg["video_crf"],
    )


class ViewerTap:
    """Publish -> supervisor feed for the HTTP viewer (:mod:`pipeline.http`): every event, and
    annotated frames as JPEG at most ``max_fps`` per stream. Lossy by design (latest wins): a
    full queue or a frame inside the rate limit is skipped and counted, never waited for."""

    def __init__(self, ctx: StageContext, *, quality: int = 80, max_fps: float = 10.0) -> None:
        from stream.sinks import encode_jpeg  # OpenCV: imported by the publish stage only

        self._encode = encode_jpeg
        self._ctx = ctx
        self._sock = ctx.zmq.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, 64)
        self._sock.setsockopt(zmq.LINGER, 0)
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
        if not self._send([b"event", ev.dumps(event).encode()]):
            self._ctx.metrics.inc("vigil_viewer_dropped", kind="event")

    def frame(self, sid: str, rgb: Any, result: FrameResult) -> None:
        now = time.monotonic()
        if now - self._last.get(sid, 0.0) < self._interval:
            return
        jpeg = self._encode(rgb, self._quality)
        meta = {"stream": sid, "frame": result.frame_idx, "pts": result.pts}
        if jpeg is None or not self._send(
            [b"frame", sid.encode(), json.dumps(meta).encode(), jpeg]
        ):
            self._ctx.metrics.inc("vigil_viewer_dropped", kind="frame")
            return
        self._last[sid] = now
