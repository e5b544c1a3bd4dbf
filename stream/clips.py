"""Alert clips: a pre-roll buffer of annotated frames per stream, and a clip writer thread.

:class:`ClipRecorder` lives in the publish stage (and in the in-process runner). It sees every
annotated frame and every published ``alert`` event that names a clip (see
:class:`pipeline.analytics.ClipPlanner`, which fixes each clip's path and window):

- Each stream keeps the last ``max_pre_s`` seconds of annotated frames (at most
  ``buffer_bytes``; the oldest go first), so the pre-roll exists when an alert fires.
- An alert opens a clip job with the buffered frames from its ``clip_start``; the frames that
  follow are added up to ``clip_end``, while the job holds at most ``buffer_bytes`` of frames
  (beyond that the clip ends early: it stops taking frames, so memory stays bounded and batch
  reruns cut it at the same frame). An alert naming the clip already open extends it (the
  planner gave it the same path), so overlapping alerts make one clip.
- A finished job goes to one writer thread through a bounded queue (``queue_size`` jobs). Its
  policy, :class:`QueuePolicy`: ``block`` (batch: wait for room, at most ``wait_s``) or
  ``drop_newest`` (live: the pipeline never waits; the job is dropped and counted).
- The writer encodes the MP4 under a hidden ``.NAME.partial.mp4`` name and the snapshots under
  ``.NAME.partial.jpg``, renames them into place, then applies retention (age, total size).
- Completions come back as the fields of an ``alert.clip`` event (``status``: ``written``,
  ``dropped`` or ``failed``). In deterministic (batch) mode a clip is announced at the first
  frame ``settle_s`` after its end (waiting for the writer then if it is still busy, at most
  ``wait_s``) or when its stream ends, so the events are identical across reruns; in live
  mode as soon as it is written (:meth:`poll`).

Clips are encoded with fixed settings (codec, CRF, preset, one thread) and pts relative to the
clip's first frame, so the same frames give the same bytes.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ClipRecorder", "QueuePolicy", "apply_retention"]


class QueuePolicy(enum.Enum):
    """What a full clip queue does with a new job."""

    BLOCK = "block"  # wait for room (bounded by ``wait_s``), then drop: batch mode
    DROP_NEWEST = "drop_newest"  # drop the new job at once, counted: live mode


@dataclass
class _Frame:
    pts: float
    pts_raw: int
    frame_idx: int
    rgb: np.ndarray


@dataclass
class _Job:
    stream: str
    clip: str  # relative path of the MP4
    start: float
    end: float
    time_base: Fraction
    fps: float
    alerts: list[dict[str, Any]] = field(default_factory=list)  # name, track, snapshot, frame
    frames: list[_Frame] = field(default_factory=list)
    nbytes: int = 0  # of frames, capped at the recorder's buffer_bytes
    full: bool = False  # hit the cap: takes no more frames
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)  # relative path -> rgb
    status: str = "pending"
    span: tuple[float, float, int] | None = None  # first pts, last pts, frames (at submit)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Stream:
    width: int
    height: int
    fps: float
    time_base: Fraction
    buffer: deque[_Frame] = field(default_factory=deque)
    buffer_bytes: int = 0
    job: _Job | None = None
    pending: list[_Job] = field(default_factory=list)  # submitted, not yet announced


class ClipRecorder:
    """Pre-roll buffers, clip jobs and the clip writer thread of one publish stage.

    Args:
        out_dir: the output folder; clip paths are relative to it.
        max_pre_s: the longest pre-roll any alert asks for, seconds.
        deterministic: batch mode (see the module doc); also picks the queue policy.
        buffer_bytes: cap of each stream's pre-roll buffer and of each open clip's frames, bytes.
        max_age_s, max_bytes: retention of the files under ``out_dir/clips`` (None: no cap).
        queue_size: jobs waiting for the writer at most.
        settle_s: deterministic mode: announce a clip this long (stream time) after its end.
        wait_s: the longest wait for room in the queue or for a clip to be written.
        codec, crf: encoder settings.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        max_pre_s: float,
        deterministic: bool,
        buffer_bytes: int = 512 << 20,
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        queue_size: int = 4,
        settle_s: float = 1.0,
        wait_s: float = 120.0,
        codec: str = "libx264",
        crf: int = 23,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.max_pre_s = max_pre_s
        self.deterministic = deterministic
        self.policy = QueuePolicy.BLOCK if deterministic else QueuePolicy.DROP_NEWEST
        self.buffer_bytes = buffer_bytes
        self.max_age_s, self.max_bytes = max_age_s, max_bytes
        self.settle_s, self.wait_s = settle_s, wait_s
        self.codec, self.crf = codec, crf
        self.written = self.dropped = self.failed = 0
        self._streams: dict[str, _Stream] = {}
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._writer, name="clip-writer", daemon=True)
        self._thread.start()

    # --- the frame path ---------------------------------------------------------------------

    def open_stream(
        self, stream: str, width: int, height: int, fps: float, time_base: Fraction
    ) -> None:
        """Know a stream's frame size and timing (before its first frame)."""
        if stream not in self._streams:
            self._streams[stream] = _Stream(width, height, fps, Fraction(time_base))

    def alert(self, event: dict[str, Any]) -> None:
        """A published ``alert`` event: open or extend its clip (no-op without a clip)."""
        st = self._streams.get(event["stream"])
        if event.get("clip") is None or st is None:
            return
        if st.job is not None and st.job.clip != event["clip"]:
            self._submit(st, st.job)  # another clip: the planner closed the open one
        if st.job is None:
            job = _Job(
                event["stream"],
                event["clip"],
                event["clip_start"],
                event["clip_end"],
                st.time_base,
                st.fps,
            )
            job.frames = [f for f in st.buffer if f.pts >= job.start - 1e-6]
            job.nbytes = sum(f.rgb.nbytes for f in job.frames)  # <= buffer_bytes: from the buffer
            st.job = job
        st.job.end = max(st.job.end, event["clip_end"])
        st.job.alerts.append(
            {
                "name": event["name"],
                "track": event["track"],
                "snapshot": event["snapshot"],
                "frame": event["frame"],
            }
        )
        for frame in st.job.frames:  # the trigger frame is buffered already (a late alert)
            if frame.frame_idx == event["frame"]:
                st.job.snapshots[event["snapshot"]] = frame.rgb

    def frame(
        self, stream: str, rgb: np.ndarray, pts: float, pts_raw: int, frame_idx: int
    ) -> list[dict[str, Any]]:
        """One annotated frame ``(H, W, 3) uint8`` (kept by reference: do not modify it).
        Returns the fields of the ``alert.clip`` events due now."""
        st = self._streams.get(stream)
        if st is None:
            return []
        item = _Frame(float(pts), int(pts_raw), int(frame_idx), rgb)
        st.buffer.append(item)
        st.buffer_bytes += rgb.nbytes
        while st.buffer and (
            st.buffer[0].pts < item.pts - self.max_pre_s - 1e-6
            or st.buffer_bytes > self.buffer_bytes
        ):
            st.buffer_bytes -= st.buffer.popleft().rgb.nbytes
        job = st.job
        if job is not None:
            if item.pts <= job.end + 1e-6:
                if not job.full and job.nbytes + rgb.nbytes > self.buffer_bytes:
                    job.full = True  # stop here for good: the clip stays one contiguous piece
                    log.warning("clip %s ends early at pts %.3f: it holds %d MiB of frames",
                                job.clip, item.pts, self.buffer_bytes >> 20)  # fmt: skip
                if not job.full:
                    job.frames.append(item)
                    job.nbytes += rgb.nbytes
                for a in job.alerts:
                    if a["frame"] == item.frame_idx:
                        job.snapshots[a["snapshot"]] = rgb
            if item.pts >= job.end - 1e-6:
                self._submit(st, job)
        return self._due(st, item.pts)

    def finish_stream(self, stream: str) -> list[dict[str, Any]]:
        """The stream ended (or went offline): close its open clip at its last frame and
        forget its pre-roll. Deterministic mode: wait (at most ``wait_s`` each) for its clips
        and return all their ``alert.clip`` fields; live mode: those written already (the
        rest come through :meth:`poll`). The stream stays known (a camera comes back)."""
        st = self._streams.get(stream)
        if st is None:
            return []
        if st.job is not None:
            self._submit(st, st.job)
        st.buffer.clear()
        st.buffer_bytes = 0
        out = []
        for job in list(st.pending):
            if self.deterministic:
                job.done.wait(self.wait_s)
            elif not job.done.is_set():
                continue
            st.pending.remove(job)
            out.append(self._announce(job))
        return out

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        """Live mode: ``(stream, alert.clip fields)`` of the clips written since the last call."""
        out = []
        for sid, st in self._streams.items():
            for job in [j for j in st.pending if j.done.is_set()]:
                st.pending.remove(job)
                out.append((sid, self._announce(job)))
        return out

    @property
    def busy(self) -> bool:
        """Whether a clip is open or not yet announced (the caller should keep polling)."""
        return any(st.job is not None or st.pending for st in self._streams.values())

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued (at most ``timeout_s``), then stop the writer thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.error("clip writer still busy after %.0f s: queued clips are lost", timeout_s)
            return
        self._thread.join(timeout_s)

    # --- internals --------------------------------------------------------------------------

    def _submit(self, st: _Stream, job: _Job) -> None:
        st.job = None
        if job.frames:
            job.span = (job.frames[0].pts, job.frames[-1].pts, len(job.frames))
        st.pending.append(job)
        try:
            if self.policy is QueuePolicy.BLOCK:
                self._queue.put(job, timeout=self.wait_s)
            else:
                self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            job.status = "dropped"
            job.frames = []
            job.done.set()
            log.warning("clip %s dropped: the clip writer is %d clips behind (policy %s)",
                        job.clip, self._queue.maxsize, self.policy.value)  # fmt: skip

    def _due(self, st: _Stream, pts: float) -> list[dict[str, Any]]:
        if self.deterministic:
            ready = [j for j in st.pending if j.end + self.settle_s <= pts + 1e-6]
        else:
            ready = [j for j in st.pending if j.done.is_set()]
        out = []
        for job in ready:
            st.pending.remove(job)
            if not job.done.wait(self.wait_s):
                log.error("clip %s not written after %.0f s", job.clip, self.wait_s)
            out.append(self._announce(job))
        return out

    def _announce(self, job: _Job) -> dict[str, Any]:
        status = job.status if job.done.is_set() else "failed"
        first = job.alerts[0]
        return {
            "name": first["name"],
            "track": first["track"],
            "clip": job.clip if status == "written" else None,
            "snapshot": first["snapshot"] if status == "written" else None,
            "clip_start": round(job.span[0] if job.span else job.start, 6),
            "clip_end": round(job.span[1] if job.span else job.end, 6),
            "status": status,
            "frames": job.span[2] if job.span else 0,
            "alerts": [
                {"name": a["name"], "track": a["track"], "snapshot": a["snapshot"]}
                for a in job.alerts
            ],
        }

    def _writer(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(job)
                job.status = "written"
                self.written += 1
            except Exception:  # a clip that fails is reported, never takes the stage down
                log.exception("clip %s could not be written", job.clip)
                job.status = "failed"
                self.failed += 1
            finally:
                job.snapshots.clear()
                job.frames = []  # the frames' memory goes back now
                job.done.set()
            try:
                apply_retention(self.out_dir / "clips", self.max_age_s, self.max_bytes)
            except OSError as exc:
                log.warning("clip retention: %s", exc)

    def _write(self, job: _Job) -> None:
        from stream.sinks import encode_jpeg

        if not job.frames:
            raise ValueError("no frames for the clip")
        for rel, rgb in sorted(job.snapshots.items()):
            jpeg = encode_jpeg(rgb, 85)
            if jpeg is None:
                raise ValueError(f"snapshot {rel}: the JPEG encoder refused the frame")
            _write_atomic(self.out_dir / rel, jpeg)
        encode_mp4(
            self.out_dir / job.clip, job.frames, job.time_base, job.fps, self.codec, self.crf
        )


def encode_mp4(
    path: Path, frames: list[_Frame], time_base: Fraction, fps: float, codec: str, crf: int
) -> None:
    """Encode ``frames`` to ``path`` under a hidden partial name, then rename it into place.
    One encoder thread and pts relative to the first frame: the same frames, the same bytes."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    h, w = frames[0].rgb.shape[:2]
    rate = Fraction(fps).limit_denominator(1001 * 1000) if fps > 0 else Fraction(25)
    if codec not in av.codecs_available:
        codec = "mpeg4"
    # faststart: the index first, so a browser plays the clip while it downloads.
    container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        base, last = frames[0].pts_raw, None
        for f in frames:
            pts = f.pts_raw - base
            if last is not None and pts <= last:
                pts = last + 1  # encoders need strictly increasing pts
            rgb = np.ascontiguousarray(f.rgb[: stream.height, : stream.width])
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base, last = pts, time_base, pts
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        container.close()
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def apply_retention(folder: Path, max_age_s: float | None, max_bytes: int | None) -> list[Path]:
    """Delete clips and snapshots under ``folder`` older than ``max_age_s`` (by mtime), then
    the oldest until the total is at most ``max_bytes``; partial files are left alone.
    Returns the deleted paths."""
    if not folder.is_dir():
        return []
    files = []
    for p in folder.rglob("*"):
        if p.suffix in (".mp4", ".jpg") and not p.name.startswith(".") and p.is_file():
            stat = p.stat()
            files.append((stat.st_mtime, str(p), stat.st_size))
    files.sort()
    now, deleted, total = time.time(), [], sum(size for _, _, size in files)
    for mtime, name, size in files:
        too_old = max_age_s is not None and now - mtime > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            continue
        Path(name).unlink(missing_ok=True)
        total -= size
        deleted.append(Path(name))
    return deleted
