"""Bodies of the stage processes (see :mod:`pipeline.stages` for the message protocol)."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from models.results import FrameResult
from pipeline.analytics import offline_event, online_event
from pipeline.stages import StageContext
from stream.transport import FrameRing, RingReader


def source_body(ctx: StageContext, cfg: dict[str, Any], src: dict[str, Any]) -> None:
    """Decode one source into the shared-memory ring; lossless: wait for a free slot."""
    from stream.sources import open_source

    stream_id = src["stream_id"]
    source = open_source(src["uri"])
    info = source.info
    out = ctx.push(ctx.endpoints.infer)
    credits = ctx.pull(ctx.endpoints.credit(stream_id))
    slots = cfg["runtime"]["ring_slots"]
    ring = FrameRing.create(slots, info.width * info.height * 3)
    ctx.report("ring", name=ring.name)
    free = list(range(slots))
    ctx.send(
        out,
        {
            "kind": "open",
            "stream_id": stream_id,
            "info": {
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
                "codec": info.codec,
                "time_base": [info.time_base.numerator, info.time_base.denominator],
                "frame_count": info.frame_count,
                "start_ts": info.start_ts,
            },
        },
    )
    last = None
    stopped = False
    try:
        for frame in source.frames():
            if last is None:
                _send_event(
                    ctx,
                    out,
                    online_event(stream_id, src["uri"], info, frame),
                )
            while not free and not ctx.stopping():
                msg = ctx.recv(credits, timeout_ms=200)
                if msg is not None:
                    free.append(msg[0]["slot"])
            if ctx.stopping():
                stopped = True
                break
            ctx.maybe_fault(frame.frame_idx)
            h, w = frame.rgb.shape[:2]
            if (w, h) != (info.width, info.height):
                raise _source_error(
                    f"{src['uri']}: frame size changed from "
                    f"{info.width}x{info.height} to {w}x{h} at frame {frame.frame_idx}"
                )
            slot = free.pop(0)
            ring.write(slot, frame.rgb)
            result = FrameResult(
                stream_id,
                frame.frame_idx,
                frame.pts,
                frame.capture_ts,
                w,
                h,
                stage_ts={"decode": time.time()},
            )
            header, _ = result.to_wire()
            ctx.send(
                out,
                {
                    "kind": "frame",
                    "addr": ring.address(slot, frame.rgb.shape),
                    "pts_raw": frame.pts_raw,
                    "result": header,
                },
            )
            last = frame
        frames_read = (last.frame_idx + 1) if last is not None else 0
        if stopped:
            reason, detail = "stopped", "stopped on request"
        else:
            end = source.end
            reason, detail = (end.reason, end.detail) if end else ("eof", "")
        _send_event(
            ctx,
            out,
            offline_event(stream_id, last, reason, frames_read, detail),
        )
        ctx.send(
            out,
            {
                "kind": "eos",
                "stream_id": stream_id,
                "reason": reason,
                "frames_read": frames_read,
                "detail": detail,
            },
        )
        # Keep the ring alive until every slot is back: downstream still reads from it.
        deadline = time.monotonic() + cfg["runtime"]["drain_timeout_s"]
        while len(free) < slots and time.monotonic() < deadline:
            msg = ctx.recv(credits, timeout_ms=200)
            if msg is not None:
                free.append(msg[0]["slot"])
    finally:
        source.close()
        ring.close()


def _source_error(message: str) -> Exception:
    from stream.sources import SourceError

    return SourceError(message)


def _send_event(ctx: StageContext, sock: Any, event: dict[str, Any]) -> None:
    ctx.send(sock, {"kind": "event", "event": event})


def infer_body(ctx: StageContext, cfg: dict[str, Any], n_sources: int) -> None:
    """Batch frames (across streams) and run the frame model: detection with class-aware NMS,
    and poses and person masks where the model gives them."""
    import torch

    from models.perception import build_perceiver

    rt, det_cfg = cfg["runtime"], cfg["detect"]
    if rt["torch_threads"]:
        torch.set_num_threads(rt["torch_threads"])
    device = resolve_device(det_cfg["device"])
    perceiver = build_perceiver(
        model=det_cfg["model"],
        weights=det_cfg["weights"],
        device=device,
        score_threshold=det_cfg["score_threshold"],
        iou_threshold=det_cfg["iou_threshold"],
        classes=det_cfg["classes"],
        input_size=det_cfg["input_size"],
        max_detections=det_cfg["max_detections"],
        seed=det_cfg["seed"],
    )
    ctx.report("info", detector=f"{det_cfg['model']} on {device}: {perceiver.description}")
    class_names = list(perceiver.class_names)
    inp, out = ctx.pull(ctx.endpoints.infer), ctx.push(ctx.endpoints.analytics)
    reader = RingReader()
    batch_size, wait_ms = det_cfg["batch_size"], det_cfg["batch_wait_ms"]
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        outputs = perceiver([reader.view(h["addr"]) for h in pending])
        now = time.time()
        for header, (dets, poses, masks) in zip(pending, outputs):
            header["result"]["class_names"] = class_names
            header["result"]["stage_ts"]["infer"] = now
            ctx.send(out, header, {**dets.to_wire(), **poses.to_wire(), **masks.to_wire()})
        pending.clear()

    eos_left = n_sources
    try:
        while eos_left:
            msg = ctx.recv(inp, timeout_ms=int(wait_ms) if pending else None)
            if msg is None:
                flush()
                continue
            header, _ = msg
            if header["kind"] == "frame":
                ctx.maybe_fault(header["result"]["frame_idx"])
                pending.append(header)
                if len(pending) >= batch_size:
                    flush()
                continue
            flush()
            ctx.send(out, header)
            eos_left -= header["kind"] == "eos"
    finally:
        reader.close()


def resolve_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def analytics_body(ctx: StageContext, cfg: dict[str, Any], n_sources: int) -> None:
    """Per-stream analytics (see :class:`pipeline.analytics.StreamAnalytics`) on each frame."""
    from pipeline.analytics import StreamAnalytics

    inp, out = ctx.pull(ctx.endpoints.analytics), ctx.push(ctx.endpoints.publish)
    analytics = StreamAnalytics(cfg["people"])
    eos_left = n_sources
    while eos_left:
        header, arrays = ctx.recv(inp)
        if header["kind"] == "event" and header["event"]["type"] == "stream.offline":
            for event in analytics.finish(header["event"]["stream"]):
                _send_event(ctx, out, event)
        if header["kind"] != "frame":
            ctx.send(out, header)
            eos_left -= header["kind"] == "eos"
            continue
        result = FrameResult.from_wire(header["result"], arrays)
        ctx.maybe_fault(result.frame_idx)
        for event in analytics.update(result):
            _send_event(ctx, out, event)
        result.stage_ts["analytics"] = time.time()
        res_header, res_arrays = result.to_wire()
        header["result"] = res_header
        ctx.send(out, header, res_arrays)


def publish_body(ctx: StageContext, cfg: dict[str, Any], n_sources: int) -> None:
    """Annotate and encode frames, return ring slots, number and publish events."""
    import zmq

    from pipeline.annotate import annotate
    from stream.sinks import EventPublisher, JpegFrameFeed, VideoFileSink

    out_cfg, pub_cfg = cfg["output"], cfg["publish"]
    out_dir = Path(out_cfg["dir"])
    inp = ctx.pull(ctx.endpoints.publish)
    publisher = EventPublisher(
        jsonl_path=out_dir / "events.jsonl" if out_cfg["events_file"] else None,
        ctx=ctx.zmq,
        endpoint=pub_cfg["events"],
        wait_subscribers=pub_cfg["wait_subscribers"],
        wait_timeout_s=pub_cfg["wait_timeout_s"],
    )
    feed = (
        JpegFrameFeed(ctx.zmq, pub_cfg["frames"], quality=pub_cfg["jpeg_quality"])
        if pub_cfg["frames"]
        else None
    )
    timings = open(out_dir / "timings.jsonl", "w") if out_cfg["timings"] else None  # noqa: SIM115
    reader = RingReader()
    videos: dict[str, VideoFileSink] = {}
    credits: dict[str, zmq.Socket] = {}
    done_frames = 0
    last_report = 0.0
    eos_left = n_sources
    try:
        while eos_left:
            header, arrays = ctx.recv(inp)
            kind = header["kind"]
            if kind == "event":
                publisher.publish(header["event"])
            elif kind == "open":
                sid, info = header["stream_id"], header["info"]
                credits[sid] = ctx.push(ctx.endpoints.credit(sid))
                if out_cfg["video"]:
                    name = "annotated.mp4" if n_sources == 1 else f"annotated-{sid}.mp4"
                    videos[sid] = VideoFileSink(
                        out_dir / name,
                        width=info["width"],
                        height=info["height"],
                        fps=info["fps"],
                        time_base=Fraction(*info["time_base"]),
                        codec=out_cfg["video_codec"],
                        crf=out_cfg["video_crf"],
                    )
            elif kind == "frame":
                result = FrameResult.from_wire(header["result"], arrays)
                ctx.maybe_fault(result.frame_idx)
                sid = result.stream_id
                drawn = annotate(reader.view(header["addr"]), result)
                ctx.send(credits[sid], {"slot": header["addr"]["slot"]})
                if sid in videos:
                    videos[sid].write(drawn, header["pts_raw"])
                if feed is not None:
                    feed.send(
                        sid, drawn, {"stream": sid, "frame": result.frame_idx, "pts": result.pts}
                    )
                done_frames += 1
                if timings is not None:
                    stamps = {**result.stage_ts, "publish": time.time()}
                    timings.write(
                        json.dumps({"stream": sid, "frame": result.frame_idx, **stamps}) + "\n"
                    )
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
        ctx.report("progress", frames=done_frames, events=publisher.published)
    finally:
        for video in videos.values():
            video.abort()
        publisher.close()
        if timings is not None:
            timings.close()
        if feed is not None:
            ctx.report("feed", sent=feed.sent, dropped=feed.dropped)
            feed.close()
        reader.close()
