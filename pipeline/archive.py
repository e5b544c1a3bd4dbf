"""Batch archives: many recorded videos, resumable, in parallel, locally or on Ray.

``vigil process A.mp4 B.mkv archive/ 'cams/*/2026-*.mp4' @list.txt --out DIR`` expands its
inputs (:func:`expand_inputs`), then processes every video with :func:`pipeline.runner.
process_file` into its own folder under ``DIR`` (:attr:`ArchiveInput.name`), and records each
outcome in ``DIR/manifest.jsonl`` (:class:`Manifest`).

Crash safety: each input is written into ``DIR/.NAME.partial`` and renamed to ``DIR/NAME`` only
when complete; then its manifest line is appended with one ``write`` + ``fsync``. A kill at any
moment loses at most the inputs in flight; the next run removes stale ``.partial`` folders,
skips inputs already ``done`` with the same identity (size and mtime) and retries the rest.

Engines: ``local`` with ``workers == 1`` runs files one after another in this process;
``local`` with ``workers > 1`` runs that many worker processes; ``ray`` runs that many Ray actors
(a local Ray instance, or the cluster at ``ray_address``). Every worker builds its perceiver
once and reuses it for every file; every engine writes the same outputs and manifest.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

#: File extensions a directory input is scanned for (case-insensitive).
VIDEO_EXTENSIONS = ("mp4", "mkv", "avi", "mov", "ts", "webm", "m4v", "mpg", "mpeg")
MANIFEST = "manifest.jsonl"
#: Manifest fields that vary from run to run; everything else is the same for the same inputs.
TIMING_FIELDS = ("elapsed_s", "finished", "worker")
RAY_INSTALL_HINT = "--engine ray needs Ray: pip install 'vigil[ray]'"
_LOCK = ".vigil-archive.lock"
_PARTIAL = ".partial"
_GLOB_MAGIC = re.compile(r"[*?[]")


class ArchiveError(Exception):
    """An archive run that cannot start (no inputs, out dir busy, Ray missing); one line."""


@dataclass(frozen=True)
class ArchiveInput:
    """One input video of an archive run.

    Attributes:
        path: absolute path (the manifest's key).
        rel: the path relative to the folder it was found in (a directory input's parent, or the
            current folder), for display and naming.
        name: the input's output folder under ``--out``: ``rel`` made filename-safe plus a short
            hash of ``path``, so it is unique and the same on every run.
        size: bytes (None if the file is missing).
        mtime_ns: modification time, ns (None if the file is missing).
    """

    path: str
    rel: str
    name: str
    size: int | None
    mtime_ns: int | None

    @property
    def identity(self) -> tuple[int | None, int | None]:
        return self.size, self.mtime_ns


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


# --- inputs --------------------------------------------------------------------------------


def is_single_file(specs: Sequence[str]) -> bool:
    """True when ``specs`` is one plain file path (not a folder, glob or @list): the graph runs
    on it as ``vigil process FILE`` always did (a missing file keeps its usual error)."""
    if len(specs) != 1:
        return False
    spec = specs[0]
    if spec.startswith("@") or Path(spec).is_dir():
        return False
    return Path(spec).is_file() or not _GLOB_MAGIC.search(spec)


def expand_inputs(
    specs: Sequence[str],
    *,
    out_dir: str | Path | None = None,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    cwd: str | Path | None = None,
) -> list[ArchiveInput]:
    """Expand files, directories (recursive, by extension), globs and ``@list.txt`` files.

    A list file holds one spec per line (files, folders or globs; blank lines and ``#``
    comments ignored; relative paths are relative to the list file). Files named explicitly are
    kept whatever their extension (a missing one too: it is recorded as failed); files found
    by a folder or glob must have a video extension. Anything under ``out_dir`` is ignored, so
    an output folder inside the archive is never taken for input. Order: as given, folders
    sorted; duplicates (same absolute path) are kept once.

    Raises:
        ArchiveError: a glob matches nothing, a folder holds no video, a list file is missing.
    """
    exts = {e.lower().lstrip(".") for e in extensions}
    base = Path(cwd or os.getcwd()).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else None
    found: list[tuple[Path, str]] = []

    def is_video(p: Path) -> bool:
        return p.suffix.lower().lstrip(".") in exts

    def outside_out(p: Path) -> bool:
        return out is None or not (p == out or out in p.parents)

    def add_spec(spec: str, rel_to: Path, depth: int) -> None:
        if spec.startswith("@"):
            if depth > 4:
                raise ArchiveError(f"{spec}: list files nested too deep")
            list_path = _absolute(spec[1:], rel_to)
            try:
                lines = list_path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ArchiveError(f"cannot read input list {list_path}: {exc.strerror}") from None
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    add_spec(line, list_path.parent, depth + 1)
            return
        path = _absolute(spec, rel_to)
        if path.is_dir():
            videos = sorted(
                p
                for p in path.rglob("*")
                if is_video(p) and p.is_file() and outside_out(p.resolve())
            )
            if not videos:
                raise ArchiveError(f"no video files ({', '.join(sorted(exts))}) under {spec}")
            for p in videos:
                found.append((p, str(p.relative_to(path.parent))))
            return
        if path.exists() or not _GLOB_MAGIC.search(spec):
            found.append((path, _relative(path, base)))
            return
        matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
        matches = [m for m in matches if m.is_file() and is_video(m) and outside_out(m.resolve())]
        if not matches:
            raise ArchiveError(f"no video file matches {spec}")
        found.extend((m, _relative(m, base)) for m in matches)

    for spec in specs:
        add_spec(spec, base, 0)
    inputs: list[ArchiveInput] = []
    seen: set[str] = set()
    for path, rel in found:
        key = str(path.resolve())
        if key in seen:
            continue
        seen.add(key)
        try:
            st = os.stat(key)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime_ns = None
        inputs.append(ArchiveInput(key, rel, output_name(rel, key), size, mtime_ns))
    return inputs


def output_name(rel: str, path: str) -> str:
    """The output folder name of an input: ``cams/a b.mp4`` -> ``cams__a_b.mp4-1f2e3d4c``."""
    parts = [p for p in Path(rel).parts if p not in ("/", "..", ".")]
    safe = "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts).lstrip(".") or "input"
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe[-150:]}-{digest}"


def _absolute(spec: str, rel_to: Path) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() else rel_to / path


def _relative(path: Path, base: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(base))
    except ValueError:
        return str(resolved)


# --- manifest ------------------------------------------------------------------------------


class Manifest:
    """``DIR/manifest.jsonl``: one JSON object per line, the last line of a path wins.

    Lines are appended with a single ``write`` and ``fsync``, so a kill leaves at worst one torn
    last line, which :meth:`load` ignores (and :meth:`open` terminates before appending).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """The latest record of every path (unparseable lines are skipped)."""
        records: dict[str, dict[str, Any]] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return records
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("path"), str):
                records[rec["path"]] = rec
        return records

    def open(self) -> None:
        """Open for appending (after ending a torn last line, so the next line stays whole)."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (one write, then fsync)."""
        if self._fd is None:
            self.open()
        assert self._fd is not None
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, line)
        if written != len(line):  # a short write on a full disk: say so, do not leave half
            raise OSError(errno.ENOSPC, f"short write to {self.path}")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def compact(self, order: Sequence[str]) -> None:
        """Rewrite atomically with one line per path: ``order`` first, then any others."""
        records = self.load()
        paths = [p for p in order if p in records]
        paths += sorted(set(records) - set(paths))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for p in paths:
                f.write(json.dumps(records[p], ensure_ascii=False, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A manifest record without its timing fields (:data:`TIMING_FIELDS`)."""
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


# --- the unit of work: one input into its folder ---------------------------------------------


def process_item(
    cfg: VigilConfig,
    item: ArchiveInput,
    out_root: str | Path,
    *,
    perceiver: Any,
    stream_id: str = "cam1",
    progress_cb: Callable[[int, int], None] | None = None,
    worker: str = "",
) -> dict[str, Any]:
    """Process one input into ``out_root/.NAME.partial``, rename it to ``out_root/NAME`` when
    complete, and return its manifest record (status ``done`` or ``failed`` with a one-line
    ``error``; a truncated file is ``failed`` but keeps the outputs of the frames it had)."""
    from pipeline.runner import process_file
    from stream.sources import SourceError

    root = Path(out_root)
    tmp = root / f".{item.name}{_PARTIAL}"
    final = root / item.name
    start = time.monotonic()
    record: dict[str, Any] = {
        "path": item.path,
        "status": "failed",
        "frames": 0,
        "duration_s": 0.0,
        "events": 0,
        "error": None,
        "output": None,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "end": None,
    }
    _rmtree(tmp)
    try:
        result = process_file(
            cfg, item.path, tmp, perceiver=perceiver, progress_cb=progress_cb, stream_id=stream_id
        )
    except SourceError as exc:
        record["error"] = _one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the archive
        log.debug("%s failed", item.path, exc_info=True)
        record["error"] = _one_line(f"{type(exc).__name__}: {exc}")
    else:
        record.update(
            frames=result.frames,
            duration_s=result.duration_s,
            events=result.events,
            end=result.end_reason,
        )
        if result.end_reason == "truncated":
            record["error"] = _one_line(
                f"truncated: {result.frames} frames read before the break ({result.end_detail})"
            )
        else:
            record["status"] = "done"
        _install(tmp, final)
        record["output"] = item.name
    if record["output"] is None:
        _rmtree(tmp)
        _rmtree(final)  # an old output of this path would contradict its "failed" line
    record["elapsed_s"] = round(time.monotonic() - start, 3)
    record["finished"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    record["worker"] = worker
    return record


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final`` (replacing an older one), durably."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        _rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."


# --- the run -------------------------------------------------------------------------------


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

        engine = _make_engine(cfg, root, stream_id)
        engine.run(
            todo,
            on_result=on_result,
            on_frames=bar.frames if bar is not None else None,
            stopping=signals.is_set,
        )
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
        if p.name.startswith(".") and p.is_dir() and p.name.endswith((_PARTIAL, ".old")):
            _rmtree(p)


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


# --- engines -------------------------------------------------------------------------------

ResultFn = Callable[[dict[str, Any]], None]
FramesFn = Callable[[str, int], None]


def _make_engine(cfg: VigilConfig, root: Path, stream_id: str) -> Any:
    archive = cfg.archive
    if archive.engine == "ray":
        return RayEngine(cfg, root, stream_id)
    if archive.workers > 1:
        return ProcessEngine(cfg, root, stream_id)
    return SerialEngine(cfg, root, stream_id)


def _torch_threads(cfg: VigilConfig, workers: int) -> int:
    return cfg.runtime.torch_threads or max(1, (os.cpu_count() or 1) // max(workers, 1))


class SerialEngine:
    """One file after another, in this process, with one perceiver."""

    def __init__(self, cfg: VigilConfig, root: Path, stream_id: str) -> None:
        self.cfg, self.root, self.stream_id = cfg, root, stream_id

    def run(
        self,
        todo: Sequence[ArchiveInput],
        *,
        on_result: ResultFn,
        on_frames: FramesFn | None,
        stopping: Callable[[], bool],
    ) -> None:
        if not todo:
            return
        from models.perception import build_perceiver_from_config

        if self.cfg.runtime.torch_threads:
            import torch

            torch.set_num_threads(self.cfg.runtime.torch_threads)
        perceiver = build_perceiver_from_config(self.cfg)
        for item in todo:
            if stopping():
                break
            cb = (lambda d, _e, p=item.path: on_frames(p, d)) if on_frames else None
            on_result(
                process_item(
                    self.cfg,
                    item,
                    self.root,
                    perceiver=perceiver,
                    stream_id=self.stream_id,
                    progress_cb=cb,
                    worker="main",
                )
            )


@dataclass
class _Worker:
    proc: Any
    conn: Any
    name: str
    ready: bool = False
    item: ArchiveInput | None = None
    last_beat: float = 0.0


class ProcessEngine:
    """``archive.workers`` worker processes (spawned), each with its own perceiver.

    A worker that dies (killed, segfault) or makes no progress for ``runtime.stage_timeout_s``
    is replaced; the input it held is recorded as failed with the reason.
    """

    def __init__(self, cfg: VigilConfig, root: Path, stream_id: str) -> None:
        self.cfg, self.root, self.stream_id = cfg, root, stream_id
        self.n = cfg.archive.workers
        self._plain = cfg.model_dump(mode="json")
        self._threads = _torch_threads(cfg, self.n)
        self._started = 0

    def run(
        self,
        todo: Sequence[ArchiveInput],
        *,
        on_result: ResultFn,
        on_frames: FramesFn | None,
        stopping: Callable[[], bool],
    ) -> None:
        from multiprocessing.connection import wait

        queue = deque(todo)
        workers: list[_Worker] = []
        stall_s = self.cfg.runtime.stage_timeout_s
        try:
            for _ in range(min(self.n, len(queue))):
                workers.append(self._spawn())
            while workers:
                if stopping():
                    queue.clear()
                for w in workers:
                    if w.ready and w.item is None and queue:
                        w.item = queue.popleft()
                        w.last_beat = time.monotonic()
                        w.conn.send(asdict(w.item))
                for w in list(workers):  # retire idle workers once nothing is left to hand out
                    if w.ready and w.item is None and not queue:
                        self._stop(w)
                        workers.remove(w)
                if not workers:
                    break
                for conn in wait([w.conn for w in workers], timeout=0.5):
                    w = next(w for w in workers if w.conn is conn)
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):
                        continue  # died: handled below by its exit code
                    kind = msg[0]
                    w.last_beat = time.monotonic()
                    if kind == "ready":
                        w.ready = True
                    elif kind == "fatal":
                        raise ArchiveError(msg[1])
                    elif kind == "progress" and on_frames is not None and w.item is not None:
                        on_frames(w.item.path, msg[1])
                    elif kind == "result":
                        w.item = None
                        on_result(msg[1])
                now = time.monotonic()
                for w in list(workers):
                    dead = not w.proc.is_alive()
                    stalled = w.item is not None and now - w.last_beat > stall_s
                    if not dead and not stalled:
                        continue
                    if stalled and not dead:
                        w.proc.kill()
                    w.proc.join(5.0)
                    why = (
                        f"stalled: no frame finished in {stall_s:.0f} s; worker killed"
                        if stalled and not dead
                        else f"worker process died (exit code {w.proc.exitcode})"
                    )
                    workers.remove(w)
                    w.conn.close()
                    if w.item is not None:
                        on_result(_failed_record(w.item, why, w.name))
                    elif not w.ready:
                        raise ArchiveError(f"worker {w.name} could not start: {why}")
                    if queue:
                        workers.append(self._spawn())
        finally:
            for w in workers:
                self._stop(w, kill=True)

    def _spawn(self) -> _Worker:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._started += 1
        name = f"worker-{self._started}"
        proc = ctx.Process(
            target=_worker_main,
            name=f"vigil-archive-{name}",
            args=(
                child,
                self._plain,
                str(self.root),
                self.stream_id,
                self._threads,
                name,
                logging.getLogger().getEffectiveLevel(),
            ),
            daemon=True,
        )
        proc.start()
        child.close()
        return _Worker(proc, parent, name, last_beat=time.monotonic())

    @staticmethod
    def _stop(w: _Worker, kill: bool = False) -> None:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
        w.proc.join(0.1 if kill else 10.0)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(5.0)
        w.conn.close()


def _worker_main(
    conn: Any,
    plain: dict[str, Any],
    root: str,
    stream_id: str,
    threads: int,
    name: str,
    log_level: int,
) -> None:
    """A local worker process: build the perceiver once, then process inputs until told."""
    from pipeline.graph.process import init_child_process

    init_child_process(name, log_level)
    import torch

    from models.perception import build_perceiver_from_config

    torch.set_num_threads(threads)
    cfg = VigilConfig.model_validate(plain)
    parent = os.getppid()
    try:
        perceiver = build_perceiver_from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("fatal", _one_line(f"{type(exc).__name__}: {exc}")))
        return
    conn.send(("ready", perceiver.description))
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent:
                return  # the coordinator is gone
            continue
        msg = conn.recv()
        if msg is None:
            return
        item = ArchiveInput(**msg)
        beat = _Heartbeat(conn)
        record = process_item(
            cfg, item, root, perceiver=perceiver, stream_id=stream_id, progress_cb=beat, worker=name
        )
        conn.send(("result", record))


class _Heartbeat:
    """A worker's progress callback: frames done so far, to the parent at most 4 times/s."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._last = 0.0

    def __call__(self, done: int, _events: int) -> None:
        now = time.monotonic()
        if now - self._last > 0.25:
            self.conn.send(("progress", done))
            self._last = now


def _failed_record(item: ArchiveInput, why: str, worker: str) -> dict[str, Any]:
    return {
        "path": item.path,
        "status": "failed",
        "frames": 0,
        "duration_s": 0.0,
        "events": 0,
        "error": why,
        "output": None,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "end": None,
        "elapsed_s": 0.0,
        "finished": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "worker": worker,
    }


def import_ray() -> Any:
    """``import ray``, or :class:`ArchiveError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ArchiveError(RAY_INSTALL_HINT) from None
    return ray


class RayArchiveWorker:
    """The body of a Ray actor: holds a loaded perceiver and processes inputs with it."""

    def __init__(self, plain: dict[str, Any], root: str, stream_id: str, threads: int) -> None:
        import torch

        from models.perception import build_perceiver_from_config

        logging.getLogger("libav").setLevel(logging.CRITICAL)
        torch.set_num_threads(threads)
        self.cfg = VigilConfig.model_validate(plain)
        self.root, self.stream_id = root, stream_id
        self.perceiver = build_perceiver_from_config(self.cfg)
        self.name = f"ray:{os.uname().nodename}:{os.getpid()}"

    def describe(self) -> str:
        return f"{self.name} {self.perceiver.description}"

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        return process_item(
            self.cfg,
            ArchiveInput(**item),
            self.root,
            perceiver=self.perceiver,
            stream_id=self.stream_id,
            worker=self.name,
        )


class RayEngine:
    """``archive.workers`` Ray actors, each holding its perceiver (a GPU each where CUDA is).

    Without ``archive.ray_address`` a local Ray instance is started with ``num_cpus=workers``
    and stopped at the end. With an address, the code of ``stream``/``models``/``pipeline``
    is shipped to the cluster, and inputs and ``--out`` must be on a filesystem every node sees
    at the same path.
    """

    def __init__(self, cfg: VigilConfig, root: Path, stream_id: str) -> None:
        self.cfg, self.root, self.stream_id = cfg, root, stream_id
        self.ray = import_ray()
        self.n = cfg.archive.workers

    def run(
        self,
        todo: Sequence[ArchiveInput],
        *,
        on_result: ResultFn,
        on_frames: FramesFn | None,
        stopping: Callable[[], bool],
    ) -> None:
        if not todo:
            return
        ray = self.ray
        started = self._init()
        try:
            self._run(ray, todo, on_result, stopping)
        finally:
            if started:
                ray.shutdown()

    def _init(self) -> bool:
        ray = self.ray
        if ray.is_initialized():
            return False
        archive = self.cfg.archive
        common = {"logging_level": logging.WARNING, "log_to_driver": False}
        if archive.ray_address:
            import models
            import pipeline
            import stream

            runtime_env = {"py_modules": [stream, models, pipeline]}
            ray.init(address=archive.ray_address, runtime_env=runtime_env, **common)
        else:
            repo = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
            ray.init(
                num_cpus=max(int(self.n * archive.ray_cpus_per_worker), 1),
                include_dashboard=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
                **common,
            )
        return True

    def _actor_options(self) -> dict[str, Any]:
        import torch

        cpus = self.cfg.archive.ray_cpus_per_worker
        gpus_total = self.ray.cluster_resources().get("GPU", 0)
        if gpus_total <= 0 and torch.cuda.is_available():
            gpus_total = torch.cuda.device_count()
        opts: dict[str, Any] = {"num_cpus": cpus}
        if gpus_total > 0:
            opts["num_gpus"] = 1 if self.n <= gpus_total else gpus_total / self.n
        return opts

    def _run(
        self,
        ray: Any,
        todo: Sequence[ArchiveInput],
        on_result: ResultFn,
        stopping: Callable[[], bool],
    ) -> None:
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        plain = self.cfg.model_dump(mode="json")
        threads = self.cfg.runtime.torch_threads or max(
            1, int(self.cfg.archive.ray_cpus_per_worker)
        )
        actor_cls = ray.remote(**self._actor_options())(RayArchiveWorker)
        args = (plain, str(self.root), self.stream_id, threads)

        def new_actors(k: int) -> list[Any]:
            actors = [actor_cls.remote(*args) for _ in range(k)]
            try:
                for desc in ray.get([a.describe.remote() for a in actors], timeout=600):
                    log.info("ray actor ready: %s", desc)
            except (RayActorError, RayTaskError, GetTimeoutError) as exc:
                raise ArchiveError(f"a Ray worker could not start: {_one_line(str(exc))}") from None
            return actors

        queue = deque(todo)
        idle = new_actors(min(self.n, len(queue)))
        pending: dict[Any, tuple[Any, ArchiveInput]] = {}
        while queue or pending:
            if stopping():
                queue.clear()
            while idle and queue:
                actor, item = idle.pop(), queue.popleft()
                pending[actor.process.remote(asdict(item))] = (actor, item)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, item = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except RayActorError as exc:
                    record = _failed_record(item, f"Ray worker died: {_one_line(str(exc))}", "ray")
                    ray.kill(actor)
                    actor = new_actors(1)[0] if queue else None
                except RayTaskError as exc:
                    record = _failed_record(item, _one_line(str(exc)), "ray")
                if actor is not None:
                    idle.append(actor)
                on_result(record)


def summary_line(summary: ArchiveSummary, out_dir: str | Path) -> str:
    """One line for the user (``vigil: `` is prepended): counts, throughput, the manifest."""
    return (
        f"archive: {summary.done} done, {summary.skipped} skipped, {summary.failed} failed "
        f"in {summary.seconds:.1f} s ({summary.files_per_s:.2f} files/s, "
        f"{summary.frames_per_s:.1f} frames/s); manifest {Path(out_dir) / MANIFEST}"
    )


if __name__ == "__main__":  # pragma: no cover - `python -m pipeline.archive` is not an entry point
    sys.exit("use: vigil process INPUT... --out DIR")
