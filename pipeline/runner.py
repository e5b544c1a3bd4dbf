"""Process one video file in this process: decode -> perceive -> analytics -> annotate -> encode.

:func:`process_file` is the single-process twin of the process graph
(:func:`pipeline.graph.supervisor.run_pipeline`) for one file. It runs the graph's own per-frame
path (:mod:`pipeline.frames`: the same steps, in the same order, with the same batches), so for
the same input and config it writes the same ``events.jsonl`` bytes and an ``annotated.mp4``
with the same frame count and ``pts``. It exists for batch archives: a worker
(a local process or a Ray actor) builds its perceiver once and passes it to every file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.results import FrameResult
from pipeline.analytics import StreamAnalytics
from pipeline.config import VigilConfig
from pipeline.config_sections import SourceConfig
from pipeline.events import offline_event, online_event
from pipeline.frames import PublishPath, frame_steps, stream_end_events
from pipeline.stages.publish_sinks import clip_recorder_from_config

#: ``progress_cb(frames_done_in_this_file, events_so_far)``, called after every frame.
ProgressCallback = Callable[[int, int], None]


@dataclass
class FileResult:
    """What :func:`process_file` did with one input.

    Attributes:
        input: the input path, as given.
        frames: frames decoded and processed (all of them: the runner is lossless).
        events: events written to ``events.jsonl`` (``seq`` runs 1..events).
        duration_s: media duration, seconds: last frame's ``pts`` minus the first's plus one
            frame period (0 when no frame was read).
        end_reason: why decoding stopped: ``eof`` or ``truncated`` (read error after some
            frames; every frame before the break is processed).
        end_detail: one line about the end (empty for ``eof``).
        elapsed_s: wall-clock seconds this call took.
        detector: the perceiver's description.
        video: the annotated video written (None with ``output.video: false``).
        events_file: the events file written (None with ``output.events_file: false``).
    """

    input: str
    frames: int
    events: int
    duration_s: float
    end_reason: str
    end_detail: str
    elapsed_s: float
    detector: str
    video: Path | None
    events_file: Path | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (paths as strings)."""
        d = asdict(self)
        d["video"] = str(self.video) if self.video else None
        d["events_file"] = str(self.events_file) if self.events_file else None
        return d


def process_file(
    cfg: VigilConfig,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    perceiver: Any = None,
    analytics_factory: Callable[[], StreamAnalytics] | None = None,
    progress_cb: ProgressCallback | None = None,
    stream_id: str | None = None,
) -> FileResult:
    """Process ``input_path`` into ``out_dir`` (``annotated.mp4``, ``events.jsonl``).

    Args:
        cfg: the run's config; ``detect``, ``people`` and ``output`` apply (``output.dir`` and
            ``publish`` do not: outputs go to ``out_dir`` and nothing is published).
        input_path: a video file.
        out_dir: output folder (created if missing).
        perceiver: a loaded perceiver to reuse (built from ``cfg.detect`` when None).
        analytics_factory: makes the per-file analytics (default: ``StreamAnalytics`` of
            ``cfg.people``); called once per file so no tracker state leaks between files.
        progress_cb: called after every frame with (frames done, events so far).
        stream_id: stream name in events (default: the first configured source's, else
            ``cam1``, as ``vigil process`` does). The first configured source also gives the
            decoder options (``decoder``, ``fps``).

    Raises:
        stream.sources.SourceError: the file is missing, empty, not a video, holds no decodable
            frame, or changes frame size midway (the annotated video is then not kept).
    """
    from models.perception.build import build_perceiver_from_config
    from pipeline.annotate import SceneOverlay
    from stream.sinks import EventPublisher, VideoFileSink
    from stream.sources import SourceError, open_source

    start = time.monotonic()
    uri = str(input_path)
    # Source options (decoder, fps of image folders) as the graph's source stage takes them.
    src = cfg.sources[0] if cfg.sources else SourceConfig(uri=uri)
    if stream_id is None:
        stream_id = src.stream_id
    out = Path(out_dir)
    # SourceError: nothing written
    source = open_source(uri, decoder=src.decoder, fps=src.fps, max_pixels=src.max_pixels)
    info = source.info
    if perceiver is None:
        perceiver = build_perceiver_from_config(cfg)
    analytics = analytics_factory() if analytics_factory else StreamAnalytics.from_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    video_path = out / "annotated.mp4" if cfg.output.video else None
    events_path = out / "events.jsonl" if cfg.output.events_file else None
    publisher = EventPublisher(jsonl_path=events_path)
    # Alert clips as the graph's publish stage in batch mode writes them (same events, in order).
    clips = clip_recorder_from_config(cfg, out, deterministic=True)
    if clips is not None:
        clips.open_stream(stream_id, info.width, info.height, info.fps, info.time_base)
    path = PublishPath(publisher.publish, SceneOverlay.from_config(cfg), clips)

    video = None
    done = 0
    first = last = None
    ok = False
    try:
        if video_path is not None:
            video = VideoFileSink(
                video_path,
                width=info.width,
                height=info.height,
                fps=info.fps,
                time_base=info.time_base,
                codec=cfg.output.video_codec,
                crf=cfg.output.video_crf,
            )
        batch: list[Any] = []

        def frame_done() -> None:
            nonlocal done
            done += 1
            if progress_cb is not None:
                progress_cb(done, publisher.published)

        def flush() -> None:
            results = [
                FrameResult(stream_id, f.frame_idx, f.pts, f.capture_ts, info.width, info.height)
                for f in batch
            ]
            frame_steps(perceiver, analytics, path, batch, results, video, frame_done)
            batch.clear()

        for frame in source.frames():
            if first is None:
                first = frame
                event = online_event(stream_id, uri, info, frame)
                event["decoder"] = getattr(source, "decoder", "") or "software"
                path.publish(event)
            h, w = frame.rgb.shape[:2]
            if (w, h) != (info.width, info.height):
                raise SourceError(
                    f"{uri}: frame size changed from {info.width}x{info.height} to {w}x{h} "
                    f"at frame {frame.frame_idx}"
                )
            batch.append(frame)
            last = frame
            # Same batches as the graph's infer stage in batch mode: full batches, then the rest.
            if len(batch) >= cfg.detect.batch_size:
                flush()
        if batch:
            flush()
        frames_read = last.frame_idx + 1 if last is not None else 0
        end = source.end
        reason, detail = (end.reason, end.detail) if end else ("eof", "")
        for event in stream_end_events(analytics, stream_id):
            path.publish(event)
        path.publish(offline_event(stream_id, last, reason, frames_read, detail))
        if video is not None:
            video.close()
            video = None
        ok = True
    finally:
        if video is not None:
            video.abort()
        if clips is not None:
            clips.close()
        publisher.close()
        source.close()
        if not ok and events_path is not None:
            events_path.unlink(missing_ok=True)
    duration = 0.0
    if first is not None and last is not None:
        duration = last.pts - first.pts + (1.0 / info.fps if info.fps > 0 else 0.0)
    return FileResult(
        input=uri,
        frames=done,
        events=publisher.published,
        duration_s=round(duration, 3),
        end_reason=reason,
        end_detail=detail,
        elapsed_s=round(time.monotonic() - start, 3),
        detector=str(getattr(perceiver, "description", "")),
        video=video_path,
        events_file=events_path,
    )
