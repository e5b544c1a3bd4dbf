"""The output folder of a run (``--out``, ``output.dir``): checked before anything starts, and
a previous run's outputs never destroyed by accident.

- :func:`check_output_dir` creates the folder and writes a probe file in it, so a read-only,
  full or misplaced ``--out`` (a file where the folder should be) is one line (:class:`
  OutputError`; the CLI exits 2), not a stage's traceback.
- :func:`check_journal` opens the event journal the run will append to, so a corrupt one
  (garbage bytes, a truncated file) is one line too.
- :func:`set_aside_previous` deals with a previous run's outputs in the folder
  (``events.jsonl``, ``annotated*.mp4``, ``timings.jsonl``, ``detections.jsonl``):
  ``output.existing: keep`` (the default) moves them into ``DIR/previous/N/`` (N = 1, 2, ...
  in order), ``overwrite`` (``--overwrite``) deletes them. The journal is never moved: it is
  the run's durable log and its ``seq`` continues across runs, so the new ``events.jsonl``
  starts where the previous one ended.

Batch archives (``pipeline/archive/``) keep their own policy: one folder per input, redone
only when the input changed or failed (see the manifest).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: What a run writes in its folder (and a rerun would replace); the journal is not one.
# The publish stage's names only (``annotated[-ID][.restartN].mp4``), so a user's own
# ``annotated_holiday.mp4`` in a shared --out is left alone.
OUTPUT_PATTERNS = (
    "events.jsonl",
    "annotated.mp4",
    "annotated.restart*.mp4",
    "annotated-*.mp4",
    "timings.jsonl",
    "detections.jsonl",
)
PREVIOUS = "previous"


class OutputError(Exception):
    """The output folder or journal cannot be used; the message is one line for the user."""


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_output_dir(out: Path) -> None:
    """Create ``out`` if needed and prove it writable (a probe file, written and removed)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out}: {_why(exc)}") from None
    if not out.is_dir():
        raise OutputError(f"the output folder {out} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".vigil-probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write in the output folder {out}: {_why(exc)}") from None


def journal_path(journal: str, out: Path) -> Path | None:
    """The journal file ``publish.journal`` names (None for ``off``)."""
    if journal == "off":
        return None
    return out / "events.journal.sqlite" if journal == "auto" else Path(journal)


def check_journal(path: Path) -> None:
    """Open the journal for writing (creating it if missing) and check every page; a corrupt
    or unwritable journal raises :class:`OutputError` naming the file and what to do."""
    from stream.journal import EventJournal, JournalError

    try:
        EventJournal(path, check=True).close()
    except JournalError as exc:
        raise OutputError(
            f"{exc}; move it away, or choose another with --journal PATH (or --no-journal)"
        ) from None


def previous_outputs(out: Path) -> list[Path]:
    """A previous run's output files in ``out`` (see :data:`OUTPUT_PATTERNS`)."""
    if not out.is_dir():
        return []
    return sorted({p for pattern in OUTPUT_PATTERNS for p in out.glob(pattern) if p.is_file()})


def set_aside_previous(out: Path, existing: str) -> str | None:
    """Keep (``keep``: move into ``out/previous/N/``) or delete (``overwrite``) a previous
    run's outputs; returns a line saying what was done, None when there were none."""
    found = previous_outputs(out)
    if not found:
        return None
    names = ", ".join(p.name for p in found)
    try:
        if existing == "overwrite":
            for p in found:
                p.unlink()
            return f"deleted the previous run's {names} in {out} (--overwrite)"
        folder = out / PREVIOUS
        taken = [int(p.name) for p in folder.glob("*") if p.name.isdigit()]
        dest = folder / str(max(taken, default=0) + 1)
        dest.mkdir(parents=True)
        for p in found:
            os.replace(p, dest / p.name)
    except OSError as exc:
        raise OutputError(f"cannot set aside the previous outputs in {out}: {_why(exc)}") from None
    return f"kept the previous run's {names} in {dest} (--overwrite replaces them instead)"
