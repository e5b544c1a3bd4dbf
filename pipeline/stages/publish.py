"""The publish stage: annotate and encode frames, return ring slots, number and publish events.

Events go through :class:`pipeline.frames.PublishPath` (the publisher, the overlay, alert clips);
frames are drawn (``PublishPath.draw``), their ring slot goes back to the source (a credit),
then they are written to the stream's video and clips (``PublishPath.write``), the JPEG feed
and the viewer tap. After a restart it resumes: see :class:`PublishStage`.
"""

from __future__ import annotations

import json
import logging
import time
from fractions import Fraction
from typing import Any

import zmq

from models.results import FrameResult
from pipeline.annotate import SceneOverlay
from pipeline.config import VigilConfig
from pipeline.config_runtime import PublishConfig
from pipeline.config_sections import OutputConfig
from pipeline.events import clip_event
from pipeline.frames import PublishPath
from pipeline.graph.context import StageContext
from pipeline.graph.stage import Stage
from pipeline.protocol import Kind, set_options
from pipeline.stages.publish_sinks import (
    ViewerTap,
    catch_up_jsonl,
    clip_recorder_from_config,
    feed_health,
    open_frame_feed,
    open_journal,
    open_mqtt,
    open_publisher,
    video_sink,
)
from pipeline.stages.publish_state import EventGate, OpenTracks
from stream.transport import RingReader

log = logging.getLogger(__name__)

#: Journal meta keys: how far the analytics stage's events are journaled (run, [gen, n]);
#: the first seq of this run (run, seq).
SENT_MARK = "analytics_sent"
RUN_START = "run_start"

#: Stage latencies observed per frame: (stage, stage_ts key it ends at, key it starts at).
LATENCY_SPANS = (
    ("decode", "decode", "capture"),
    ("infer", "infer", "decode"),
    ("analytics", "analytics", "infer"),
    ("publish", "publish", "analytics"),
    ("total", "publish", "capture"),
)


class PublishStage(Stage):
    """Annotate and encode frames, return ring slots, number and publish events.

    ``resume`` is given to a publish stage restarted by the supervisor: ``{"restart": N,
    "streams": {stream_id: open info}}``. It appends to events.jsonl instead of starting it
    anew (first catching it up with the journal), writes each stream's video to a new file
    ``annotated[-ID].restartN.mp4`` (the dead process's file was never finalised), knows the
    streams already open and the tracks open, and asks the analytics stage for the events
    the dead process had not journaled (see :class:`pipeline.stages.publish_state.EventGate`).
    """

    def __init__(
        self,
        ctx: StageContext,
        cfg: VigilConfig,
        output: OutputConfig,
        publish: PublishConfig,
        *,
        live: bool,
        viewer: bool,
        n_sources: int,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx)
        self.cfg, self.out_cfg, self.pub_cfg = cfg, output, publish
        self.live, self.viewer, self.n_sources = live, viewer, n_sources
        self.resume = resume or {}
        self.restart = self.resume.get("restart", 0)
        self.eos_left = n_sources
        self.videos: dict[str, Any] = {}
        self.credits: dict[str, zmq.Socket] = {}
        self.last_seen: dict[str, tuple[int, float, float]] = {}  # stream -> frame, pts, ts
        self.done_frames = 0
        self.last_report = 0.0
        self.journal = self.mqtt = self.publisher = self.feed = self.clips = None
        self.timings = self.records = self.reader = None

    @classmethod
    def from_config(
        cls, ctx: StageContext, cfg: VigilConfig, n_sources: int, resume: dict | None = None
    ) -> PublishStage:
        return cls(
            ctx,
            cfg,
            cfg.output,
            cfg.publish,
            live=cfg.runtime.mode == "live",
            viewer=cfg.runtime.http is not None,
            n_sources=n_sources,
            resume=resume,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def setup(self) -> None:
        ctx, out, pub, restart = self.ctx, self.out_cfg, self.pub_cfg, self.restart
        out_dir = out.dir
        self.inp = ctx.pull(ctx.endpoints.publish)
        self.reader = RingReader()
        journal = self.journal = open_journal(pub, out_dir)
        self.mqtt = open_mqtt(pub, journal)
        self.tracks = OpenTracks()
        self.run_key = ctx.endpoints.control  # unique to this run: another run's mark is stale
        last = self._resume_journal() if journal is not None else None
        # Restarted, with a journal: ask the analytics stage for the events after the last one
        # journaled (the dead process may have received some it never journaled).
        self.gate = EventGate(last, holding=journal is not None and restart > 0)
        if self.gate.holding:
            # an analytics stage already gone needs no answer
            ask = set_options(ctx.push(ctx.endpoints.analytics), linger_ms=0)
            ctx.send(ask, {"kind": Kind.RESEND, "after": last, "request": restart})
        jsonl = out_dir / "events.jsonl" if out.events_file else None
        self.publisher = open_publisher(ctx, pub, jsonl, journal, restart)
        ctx.stats_hook = lambda metrics: feed_health(self.publisher, metrics)
        self.feed = open_frame_feed(ctx, pub)
        self.tap = ViewerTap(ctx, quality=pub.jpeg_quality) if self.viewer else None
        # Alert clips: pre-roll buffers here, encoding in the recorder's own thread.
        self.clips = clip_recorder_from_config(self.cfg, out_dir, deterministic=not self.live)
        overlay = SceneOverlay.from_config(self.cfg)
        self.path = PublishPath(self.publisher.publish, overlay, self.clips, self._published)
        mode = "a" if restart else "w"
        if out.timings:
            self.timings = open(out_dir / "timings.jsonl", mode)  # noqa: SIM115
        if out.detections:
            self.records = open(out_dir / "detections.jsonl", mode)  # noqa: SIM115
        for sid, info in self.resume.get("streams", {}).items():
            self._open_stream(sid, info)
        self.gate.start()

    def _resume_journal(self) -> list[int] | None:
        """A new run marks where it starts; a restarted stage reads back the tracks open in
        this run, catches events.jsonl up and returns the last analytics eid journaled."""
        journal = self.journal
        if not self.restart:
            journal.set_meta(RUN_START, json.dumps({"run": self.run_key, "seq": journal.head + 1}))
            return None
        first = json.loads(journal.get_meta(RUN_START) or "{}")
        first_seq = first.get("seq", 1) if first.get("run") == self.run_key else journal.head + 1
        for line in journal.open_state():  # the tracks the dead process knew open (this run's)
            event = json.loads(line)
            if event["seq"] >= first_seq:
                self.tracks.event(event)
        mark = json.loads(journal.get_meta(SENT_MARK) or "{}")
        if self.out_cfg.events_file:
            catch_up_jsonl(self.out_cfg.dir / "events.jsonl", journal)
        return mark.get("eid") if mark.get("run") == self.run_key else None

    @property
    def finished(self) -> bool:
        return not self.eos_left

    @property
    def poll_ms(self) -> int | None:
        waiting = self.gate.holding or (self.live and self.clips is not None and self.clips.busy)
        return 200 if waiting else None

    def on_tick(self) -> None:
        self._housekeeping()

    def on_message(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        self._housekeeping()
        kind = header["kind"]
        if kind == Kind.EVENT:
            self.ctx.maybe_fault_on_event(header["event"]["type"])
            if "eid" in header:  # from the analytics stage: in order, once each
                for eid, event in self.gate.offer(header["eid"], header["event"]):
                    self.publish(event, eid)
            else:  # the supervisor's
                self.publish(header["event"])
        elif kind == Kind.RESEND_DONE and header.get("request") == self.restart:
            self._release_held(f"the analytics stage sent {header['count']} events again")
        elif kind == Kind.TRACKS_LOST:  # a restarted analytics stage: its tracker starts anew
            if self.gate.holding:  # what is held came from the dead analytics process: first
                self._release_held("an analytics restart ends the wait")
            for event in self.tracks.end_all("restart", gen=header["restart"]):
                self.publish(event)
        elif kind == Kind.OPEN:
            self._open_stream(header["stream_id"], header["info"])
        elif kind == Kind.FRAME:
            self._frame(header, arrays)
        elif kind == Kind.EOS:
            self._eos(header)

    def on_end(self) -> None:
        if self.gate.holding:  # the run ended before the answer: journal what came, in order
            self._release_held("the run ended first")
        self._report_progress()

    def close(self) -> None:
        for video in self.videos.values():
            video.abort()
        if self.clips is not None:
            self.clips.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.mqtt is not None:  # after the publisher: the last events are journaled by then
            self.mqtt.close()
        for log_file in (self.timings, self.records):
            if log_file is not None:
                log_file.close()
        if self.feed is not None:
            self.ctx.report(Kind.FEED, sent=self.feed.sent, dropped=self.feed.dropped)
            self.feed.close()
        if self.reader is not None:
            self.reader.close()

    # --- events ---------------------------------------------------------------------------

    def publish(self, event: dict[str, Any], eid: list[int] | None = None) -> None:
        if self.tracks.stale(event, eid[0] if eid else None):
            log.warning("dropped %s of track %s: its analytics process was restarted and its "
                        "tracks ended", event["type"], event.get("track"))  # fmt: skip
            return
        mark = {"run": self.run_key, "eid": eid}
        has_mark = eid is not None and self.journal is not None
        self.path.publish(event, {SENT_MARK: json.dumps(mark)} if has_mark else None)

    def _published(self, event: dict[str, Any]) -> None:
        self.ctx.metrics.inc("vigil_events_published", type=event["type"])
        self.tracks.event(event)
        if self.tap is not None:
            self.tap.event(event)

    def _housekeeping(self) -> None:
        """Every turn: end a resend wait that took too long; live: publish finished clips."""
        gate = self.gate
        if gate.holding and time.monotonic() > gate.deadline:
            why = f"no answer in {gate.wait_s:.0f} s (events resent later still count)"
            self._release_held(why)
        if self.live and self.clips is not None:
            for sid, fields in self.clips.poll():
                frame, pts, ts = self.last_seen.get(sid, (None, None, time.time()))
                self.publish(clip_event(sid, fields, frame, pts, ts))

    def _release_held(self, why: str) -> None:
        held = self.gate.release()
        log.warning("resend: %s; %d events held meanwhile journaled", why, len(held))
        for eid, event in held:
            self.publish(event, eid)

    # --- streams and frames ---------------------------------------------------------------

    def _credit_socket(self, sid: str) -> zmq.Socket:
        """The stream's credit socket (also for a stream opened before a restart)."""
        if sid not in self.credits:
            self.credits[sid] = self.ctx.push(self.ctx.endpoints.credit(sid))
        return self.credits[sid]

    def _open_stream(self, sid: str, info: dict[str, Any]) -> None:
        self._credit_socket(sid)
        if self.out_cfg.video and sid not in self.videos:
            self.videos[sid] = video_sink(
                self.out_cfg.dir, self.out_cfg, sid, info, self.n_sources, self.restart
            )
        if self.clips is not None:
            tb = Fraction(*info["time_base"])
            self.clips.open_stream(sid, info["width"], info["height"], info["fps"], tb)
        self.ctx.report(Kind.OPEN, stream_id=sid, info=info)

    def _frame(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        ctx = self.ctx
        result = FrameResult.from_wire(header["result"], arrays)
        ctx.maybe_fault(result.frame_idx)
        sid, addr = result.stream_id, header["addr"]
        rgb = self.reader.view(addr)
        drawn = self.path.draw(rgb, result)
        credit = {"slot": addr["slot"], "ring": addr["ring"], "gen": addr.get("gen")}
        ctx.send(self._credit_socket(sid), credit)  # the ring slot is free again
        if self.clips is not None:
            self.last_seen[sid] = (result.frame_idx, result.pts, result.capture_ts)
        self.path.write(drawn, result, header["pts_raw"], self.videos.get(sid))
        if self.feed is not None:
            meta = {"stream": sid, "frame": result.frame_idx, "pts": result.pts}
            self.feed.send(sid, drawn, meta)
        if self.tap is not None:
            self.tap.frame(sid, drawn, result)
        self.tracks.frame(result)
        self.done_frames += 1
        self._account(result)

    def _account(self, result: FrameResult) -> None:
        """Metrics, detections.jsonl, timings.jsonl and progress of a published frame."""
        ctx, sid = self.ctx, result.stream_id
        stamps = {**result.stage_ts, "publish": time.time()}
        ctx.metrics.inc("vigil_frames_processed", stream=sid)
        for stage, end, begin in LATENCY_SPANS:
            if end in stamps and begin in stamps:
                latency = max(stamps[end] - stamps[begin], 0.0)
                ctx.metrics.observe("vigil_stage_latency_seconds", latency, stage=stage)
        if self.records is not None:
            self.records.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
        if self.timings is not None:
            self.timings.write(
                json.dumps({"stream": sid, "frame": result.frame_idx, **stamps}) + "\n"
            )
            self.timings.flush()  # readable while the run goes on
        now = time.monotonic()
        if now - self.last_report > 0.2:
            self._report_progress()
            self.last_report = now

    def _report_progress(self) -> None:
        self.ctx.report(Kind.PROGRESS, frames=self.done_frames, events=self.publisher.published)

    def _eos(self, header: dict[str, Any]) -> None:
        self.eos_left -= 1
        sid = header["stream_id"]
        if sid in self.videos:
            self.videos.pop(sid).close()
        self.ctx.report(
            Kind.EOS,
            stream_id=sid,
            reason=header["reason"],
            frames_read=header["frames_read"],
            detail=header["detail"],
        )
