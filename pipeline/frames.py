"""The per-frame path, written once: perceive -> analyse -> annotate, write, clip, publish.

Both executions of the pipeline run these same steps: the process graph runs one step per stage
(:mod:`pipeline.stages`: infer :func:`perceive_batch`, analytics :func:`analyse` and
:func:`stream_end_events`, publish :class:`PublishPath`), and the in-process runner
(:func:`pipeline.runner.process_file`) runs them all, in order, with :func:`frame_steps`. So the
same input and config give the same events and the same annotated frames by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.results import FrameResult
from pipeline.annotate import SceneOverlay, annotate
from pipeline.events import clip_event, unix_ts

Event = dict[str, Any]


def perceive_batch(perceiver: Any, rgbs: Sequence[np.ndarray], results: list[FrameResult]) -> None:
    """Infer step: run the frame model on a batch of frames; fills each result's detections,
    poses, masks and class names."""
    from models.perception.build import perceive

    outputs = perceive(perceiver, rgbs, [r.stream_id for r in results])
    names = tuple(perceiver.class_names)
    for result, (dets, poses, masks) in zip(results, outputs):
        result.detections, result.poses, result.masks = dets, poses, masks
        result.class_names = names


def analyse(analytics: Any, result: FrameResult) -> list[Event]:
    """Analytics step: the frame's events, in order (fills track ids and forecasts)."""
    return analytics.update(result)


def stream_end_events(analytics: Any, stream_id: str) -> list[Event]:
    """A stream goes offline or resets: its open tracks end first (``track.end``, then
    ``zone.exit``), so subscribers never see a track that silently vanishes."""
    return analytics.finish(stream_id)


class PublishPath:
    """Publish step: events through the publisher, the overlay and the alert clips; frames
    annotated, written to the stream's video and to its clips.

    Args:
        publish: ``publish(event, meta) -> event``, the event publisher's (numbers, journals,
            sends).
        overlay: zones and lines drawn on every frame, with their counts.
        clips: the alert clip recorder, or None when no alert asks for a clip.
        on_event: called with every event published (after the overlay saw it).
    """

    def __init__(
        self,
        publish: Callable[[Event, dict[str, str] | None], Event],
        overlay: SceneOverlay,
        clips: Any = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self._publish = publish
        self.overlay = overlay
        self.clips = clips
        self.on_event = on_event

    def publish(self, event: Event, meta: dict[str, str] | None = None) -> Event:
        """Publish one event; a ``stream.offline`` after the stream's clips (each written and
        announced before the stream goes offline); an ``alert`` starts its clip."""
        clips = self.clips
        if clips is not None and event["type"] == "stream.offline":
            stamp = (event["frame"], event["pts"], unix_ts(event["ts"]))
            for fields in clips.finish_stream(event["stream"]):
                self.publish(clip_event(event["stream"], fields, *stamp))
        event = self._publish(event, meta)
        self.overlay.event(event)
        if self.on_event is not None:
            self.on_event(event)
        if clips is not None and event["type"] == "alert":
            clips.alert(event)
        return event

    def draw(self, rgb: np.ndarray, result: FrameResult) -> np.ndarray:
        """The frame annotated: results, zones, lines and their counts."""
        return annotate(rgb, result, overlay=self.overlay)

    def write(self, drawn: Any, result: FrameResult, pts_raw: Any, video: Any = None) -> None:
        """Write an annotated frame to ``video`` (if any) and to the stream's clips (their
        ``alert.clip`` events published when due)."""
        if video is not None:
            video.write(drawn, pts_raw)
        if self.clips is not None:
            sid = result.stream_id
            for fields in self.clips.frame(sid, drawn, result.pts, pts_raw, result.frame_idx):
                self.publish(clip_event(sid, fields, result.frame_idx, result.pts,
                                        result.capture_ts))  # fmt: skip


def frame_steps(
    perceiver: Any,
    analytics: Any,
    path: PublishPath,
    frames: Sequence[Any],
    results: list[FrameResult],
    video: Any = None,
    after_frame: Callable[[], None] | None = None,
) -> None:
    """The whole path for a batch of source frames (and their bare results), in this
    process: perceive, then per frame analyse, publish its events, annotate and write it;
    ``after_frame`` is called after each."""
    perceive_batch(perceiver, [f.rgb for f in frames], results)
    for frame, result in zip(frames, results):
        for event in analyse(analytics, result):
            path.publish(event)
        if video is not None or path.clips is not None:  # else nothing would use the drawing
            path.write(path.draw(frame.rgb, result), result, frame.pts_raw, video)
        if after_frame is not None:
            after_frame()
