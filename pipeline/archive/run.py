"""Batch archives: many recorded videos, resumable, in parallel, locally or on Ray.

``vigil process A.mp4 B.mkv archive/ 'cams/*/2026-*.mp4' @list.txt --out DIR`` expands its
inputs (:func:`pipeline.archive.inputs.expand_inputs`), then processes every video with
:func:`pipeline.runner.process_file` into its own folder under ``DIR``
(:attr:`~pipeline.archive.inputs.ArchiveInput.name`), and records each outcome in
``DIR/manifest.jsonl`` (:class:`~pipeline.archive.manifest.Manifest`).

Crash safety: each input is written into ``DIR/.NAME.partial`` and renamed to ``DIR/NAME`` only
when complete; then its manifest line is appended with one ``write`` + ``fsync``. A kill at any
moment loses at most the inputs in flight; the next run removes stale ``.partial`` folders,
skips inputs already ``done`` with the same identity (size and mtime) and retries the rest.

Engines (:mod:`pipeline.archive.engines`): ``local`` with ``workers == 1`` runs files one after
another in this process; ``local`` with ``workers > 1`` runs that many worker processes; ``ray``
runs that many Ray actors (a local Ray instance, or the cluster at ``ray_address``). Every engine
writes the same outputs and manifest. This module holds the run itself: the lock on ``DIR``, the
resume decision, signals, progress bars and the summary.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.archive.engines import RunHooks, make_engine
from pipeline.archive.inputs import ArchiveError, ArchiveInput
from pipeline.archive.item import PARTIAL, rmtree
from pipeline.archive.manifest import MANIFEST, Manifest
from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

_LOCK = ".vigil-archive.lock"


@dataclass
class ArchiveSummary:
    """Counts of one archive run (``records`` holds the final manifest line of each input)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_archive(
    cfg: VigilConfig,
    inputs: Sequence[ArchiveInput],
    out_dir: str | Path,
    *,
    stream_id: str = "cam1",
    progress: bool | None = None,
) -> ArchiveSummary:
    """Process ``inputs`` into ``out_dir`` with ``cfg.archive``'s engine; resumable.

    Inputs ``done`` (or ``skipped``) in the manifest with the same size and mtime, whose output
    folder exists, are skipped (a ``skipped`` line repeats their counts); all others are
    processed. SIGINT/SIGTERM stop handing out inputs; the ones in flight finish and are
    recorded (a second signal stops at once). Raises :class:`ArchiveError` when the run cannot
    start.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    lock = _lock(root)
    manifest = Manifest(root / MANIFEST)
    summary = ArchiveSummary()
    signals = _StopFlag()
    bar = None
    start = time.monotonic()
    try:
        _clean_stale(root)
        previous = manifest.load()
        manifest.open()
        todo: list[ArchiveInput] = []
        for item in inputs:
            rec = previous.get(item.path)
            if (
                rec is not None
                and rec.get("status") in ("done", "skipped")
                and (rec.get("size"), rec.get("mtime_ns")) == item.identity
                and rec.get("output")
                and (root / rec["output"]).is_dir()
            ):
                skipped = {**rec, "status": "skipped", "elapsed_s": 0.0, "worker": ""}
                skipped["finished"] = datetime.now(UTC).isoformat(timespec="milliseconds")
                manifest.append(skipped)
                summary.skipped += 1
            else:
                todo.append(item)
        show = cfg.runtime.progress and sys.stderr.isatty() if progress is None else progress
        bar = _ArchiveProgress(todo, len(inputs), summary.skipped) if show and todo else None

        def on_result(record: dict[str, Any]) -> None:
            manifest.append(record)
            summary.frames += record["frames"]
            if record["status"] == "done":
                summary.done += 1
            else:
                summary.failed += 1
                log.info("failed: %s: %s", record["path"], record["error"])
            if bar is not None:
                bar.file_done(record)

        hooks = RunHooks(on_result, bar.frames if bar is not None else None, signals.is_set)
        make_engine(cfg, root, stream_id).run(todo, hooks)
        summary.interrupted = signals.is_set() and summary.done + summary.failed < len(todo)
        manifest.close()
        manifest.compact([i.path for i in inputs])
        records = manifest.load()
        summary.records = [records[i.path] for i in inputs if i.path in records]
    finally:
        summary.seconds = time.monotonic() - start
        if bar is not None:
            bar.close()
        signals.restore()
        manifest.close()
        os.close(lock)
    return summary


def _lock(root: Path) -> int:
    import fcntl

    fd = os.open(root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ArchiveError(f"another vigil is writing to {root} (lock {root / _LOCK})") from None
    return fd


def _clean_stale(root: Path) -> None:
    """Remove the ``.NAME.partial`` / ``.NAME.old`` folders a killed run left behind."""
    for p in root.iterdir():
        if p.name.startswith(".") and p.is_dir() and p.name.endswith((PARTIAL, ".old")):
            rmtree(p)


class _StopFlag:
    """SIGINT/SIGTERM: stop handing out work (first signal); default behaviour after that."""

    def __init__(self) -> None:
        self._set = False
        self._old: dict[int, Any] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._old = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self._set = True
        log.warning(
            "%s: finishing the files in flight, then stopping (again to stop now)",
            signal.Signals(signum).name,
        )
        self.restore()

    def is_set(self) -> bool:
        return self._set

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


class _ArchiveProgress:
    """Two tqdm bars on a terminal: files (with ETA) and frames (frames/s, ETA)."""

    def __init__(self, todo: Sequence[ArchiveInput], total_files: int, skipped: int) -> None:
        from tqdm import tqdm

        total_frames = 0
        for item in todo:  # headers only: cheap next to decoding
            total_frames += _probe_frames(item.path)
        self.files = tqdm(
            total=total_files, initial=skipped, unit="file", desc="files", position=0,
            dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        self.frame_bar = tqdm(
            total=total_frames or None, unit="frame", desc="frames", position=1,
            dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        self._live: dict[str, int] = {}

    def frames(self, path: str, done: int) -> None:
        """A worker reports ``done`` frames of ``path`` so far."""
        self.frame_bar.update(done - self._live.get(path, 0))
        self._live[path] = done

    def file_done(self, record: dict[str, Any]) -> None:
        self.frames(record["path"], record["frames"])
        self._live.pop(record["path"], None)
        self.files.update(1)

    def close(self) -> None:
        self.frame_bar.close()
        self.files.close()


def _probe_frames(path: str) -> int:
    from stream.sources import SourceError, open_source

    try:
        source = open_source(path)
    except (SourceError, OSError):
        return 0
    try:
        return source.info.frame_count or 0
    finally:
        source.close()


def summary_line(summary: ArchiveSummary, out_dir: str | Path) -> str:
    """One line for the user (``vigil: `` is prepended): counts, throughput, the manifest."""
    return (
        f"archive: {summary.done} done, {summary.skipped} skipped, {summary.failed} failed "
        f"in {summary.seconds:.1f} s ({summary.files_per_s:.2f} files/s, "
        f"{summary.frames_per_s:.1f} frames/s); manifest {Path(out_dir) / MANIFEST}"
    )
