"""The unit of work of an archive run: one input processed into its own output folder.

:func:`process_item` runs :func:`pipeline.runner.process_file` into ``.NAME.partial``, renames it
to ``NAME`` when complete (:func:`install`) and returns the input's manifest record. Every engine
calls it, in this process, in a worker process or in a Ray actor.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.archive.inputs import ArchiveInput
from pipeline.archive.manifest import finish_record, fsync_dir, new_record
from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

PARTIAL = ".partial"


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
    tmp = root / f".{item.name}{PARTIAL}"
    final = root / item.name
    start = time.monotonic()
    record = new_record(item)
    rmtree(tmp)
    try:
        result = process_file(
            cfg, item.path, tmp, perceiver=perceiver, progress_cb=progress_cb, stream_id=stream_id
        )
    except SourceError as exc:
        record["error"] = one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the archive
        log.debug("%s failed", item.path, exc_info=True)
        record["error"] = one_line(f"{type(exc).__name__}: {exc}")
    else:
        record.update(
            frames=result.frames,
            duration_s=result.duration_s,
            events=result.events,
            end=result.end_reason,
        )
        if result.end_reason == "truncated":
            record["error"] = one_line(
                f"truncated: {result.frames} frames read before the break ({result.end_detail})"
            )
        else:
            record["status"] = "done"
        install(tmp, final)
        record["output"] = item.name
    if record["output"] is None:
        rmtree(tmp)
        rmtree(final)  # an old output of this path would contradict its "failed" line
    return finish_record(record, round(time.monotonic() - start, 3), worker)


def install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final`` (replacing an older one), durably."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def rmtree(path: Path) -> None:
    """Remove a folder tree if it is there."""
    shutil.rmtree(path, ignore_errors=True)


def one_line(text: str) -> str:
    """``text`` on one line, at most 300 characters (for the manifest and the user)."""
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."
