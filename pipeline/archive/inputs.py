"""Archive inputs: the files, folders, globs and ``@list.txt`` files a batch run is given.

:func:`expand_inputs` turns them into :class:`ArchiveInput` s, each with a stable, unique output
folder name (:func:`output_name`); :func:`is_single_file` tells a plain ``vigil process FILE``
from a batch. :class:`ArchiveError` is the one-line error every part of an archive run raises.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: File extensions a directory input is scanned for (case-insensitive).
VIDEO_EXTENSIONS = ("mp4", "mkv", "avi", "mov", "ts", "webm", "m4v", "mpg", "mpeg")
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
