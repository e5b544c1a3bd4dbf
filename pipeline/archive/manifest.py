"""The archive manifest: ``DIR/manifest.jsonl``, one durable JSON line per outcome.

:class:`Manifest` appends, loads and compacts it; :func:`new_record` and :func:`failed_record`
build its lines (one field order for every engine); :func:`comparable` drops the fields that vary
from run to run.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.archive.inputs import ArchiveInput

MANIFEST = "manifest.jsonl"
#: Manifest fields that vary from run to run; everything else is the same for the same inputs.
TIMING_FIELDS = ("elapsed_s", "finished", "worker")


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
        line = _line(record).encode()
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
                f.write(_line(records[p]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A manifest record without its timing fields (:data:`TIMING_FIELDS`)."""
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


def new_record(item: ArchiveInput) -> dict[str, Any]:
    """The record of ``item`` before it is processed: ``failed``, no output, nothing counted."""
    return {
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


def finish_record(record: dict[str, Any], elapsed_s: float, worker: str) -> dict[str, Any]:
    """Add the timing fields (:data:`TIMING_FIELDS`) to ``record`` and return it."""
    record["elapsed_s"] = elapsed_s
    record["finished"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    record["worker"] = worker
    return record


def failed_record(item: ArchiveInput, why: str, worker: str) -> dict[str, Any]:
    """The record of an input whose worker died or stalled before it returned one."""
    return finish_record({**new_record(item), "error": why}, 0.0, worker)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
