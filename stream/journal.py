"""The event journal: an embedded, durable, append-only log of every published event.

:class:`EventJournal` keeps events in one SQLite file in WAL mode, table
``events(seq INTEGER PRIMARY KEY, type, stream, ts, json)``:

- ``seq`` is assigned here, gap-free, and continues after a restart (next = max + 1 on open;
  retention never deletes the newest row, so the head can never go back).
- :meth:`EventJournal.append` commits before it returns, and :class:`stream.sinks.EventPublisher`
  publishes only after that, so any event a subscriber has seen can be replayed.
- ``ts`` is the wall-clock time (unix seconds) at which the event was journaled; retention
  uses it (the event's own ``ts`` may come from a file's timestamps).
- Retention deletes the oldest rows older than ``retention_s`` or beyond ``max_rows``, but
  never a row younger than ``keep_s`` (the window a subscriber may be away and still resume)
  and never the newest row.

Durability: ``synchronous=NORMAL`` (the default) makes every committed event survive a crash
of the process (SIGKILL, segfault, OOM kill): in WAL mode a commit is a ``write()`` into the
WAL file, which the kernel keeps. Only a power loss or kernel crash can lose the last few
commits, and then a restarted publisher could reuse their ``seq``. ``synchronous=FULL``
closes that hole with one ``fsync`` per event (a few hundred microseconds on SSD, milliseconds
on disks) — choose it when the journal must survive power loss. See ``scripts/bench_events.py``.

Readers (the replay server, ``vigil replay``) open their own read-only connection with
``EventJournal.open_reader``; WAL lets them read while the publisher writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from stream import events as ev

log = logging.getLogger(__name__)

Synchronous = Literal["normal", "full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    stream TEXT,
    ts REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_INSERT = "INSERT INTO events(seq, type, stream, ts, json) VALUES (?, ?, ?, ?, ?)"
_SET_META = "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)"

#: Event types that make up the open state of the feed (see :func:`open_state`).
STATE_TYPES = ("stream.online", "stream.offline", "track.start", "track.end")


class JournalError(Exception):
    """The journal file cannot be opened or used; the message names the file."""


class EventJournal:
    """An append-only SQLite journal of events; see the module docstring.

    Args:
        path: the SQLite file (created with its folder if missing).
        synchronous: ``"normal"`` (survives process crashes) or ``"full"`` (survives power
            loss, one fsync per event).
        retention_s: delete rows journaled longer ago than this (None: keep by age forever).
        max_rows: keep at most this many rows (None: no cap).
        keep_s: never delete rows younger than this, whatever ``max_rows`` says.
        prune_every_s: how often :meth:`append` applies retention, seconds.
        readonly: open for reading only (no schema change, no appends).
        check: also run SQLite's ``quick_check`` over every page on open (linear in the
            file's size, about a second per few hundred MB), so a corrupt file is refused
            now rather than at some later append or read.

    A file that is not a journal (garbage bytes, a truncated or damaged database) or cannot
    be written raises :class:`JournalError` naming the file and the cause.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "normal",
        retention_s: float | None = 7 * 24 * 3600.0,
        max_rows: int | None = 1_000_000,
        keep_s: float = 600.0,
        prune_every_s: float = 10.0,
        readonly: bool = False,
        check: bool = False,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, not {max_rows}")
        self.path = Path(path)
        self.readonly = readonly
        self.retention_s = retention_s
        self.max_rows = max_rows
        self.keep_s = keep_s
        self.prune_every_s = prune_every_s
        self._db = None  # type: ignore[assignment]
        try:
            if readonly:
                if not self.path.exists():
                    raise JournalError(f"no journal at {self.path}")
                uri = f"file:{self.path.resolve()}?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA busy_timeout=5000")
            if check:
                row = self._db.execute("PRAGMA quick_check(1)").fetchone()
                if not row or row[0] != "ok":
                    what = " ".join(str(row[0]).split()) if row else "unreadable"
                    raise JournalError(f"event journal {self.path} is corrupt ({what})")
            self._last_seq = self._read_head()
        except (sqlite3.Error, OSError, JournalError) as exc:
            self.close()
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"cannot open event journal {self.path}: {exc}") from exc
        self._next_prune = time.monotonic() + prune_every_s
        self.appended = 0

    @classmethod
    def open_reader(cls, path: str | Path) -> EventJournal:
        """A read-only view of a journal another process or thread writes."""
        return cls(path, readonly=True)

    # -- writing ---------------------------------------------------------------------------

    @property
    def head(self) -> int:
        """The highest ``seq`` ever journaled (0 for a new journal). Readers re-read it."""
        if self.readonly:
            self._last_seq = self._read_head()
        return self._last_seq

    def append(self, event: dict[str, Any], meta: dict[str, str] | None = None) -> str:
        """Give ``event`` the next ``seq`` (in place), commit it, return its JSON line.

        The row is committed when this returns; a failure leaves ``seq`` unassigned. ``meta``
        values (:meth:`set_meta`) are committed in the same transaction, e.g. how far an
        upstream stage's numbering has been journaled.
        """
        if self.readonly:
            raise JournalError(f"journal {self.path} is open read-only")
        seq = self._last_seq + 1
        event["seq"] = seq
        line = ev.dumps(event)
        row = (seq, event.get("type", ""), event.get("stream"), time.time(), line)
        try:
            if not meta:  # autocommit: the INSERT is its own transaction, committed on return
                self._db.execute(_INSERT, row)
            else:
                with self._transaction():
                    self._db.execute(_INSERT, row)
                    self._db.executemany(_SET_META, list(meta.items()))
        except sqlite3.Error:
            event["seq"] = None
            raise
        self._last_seq = seq
        self.appended += 1
        if time.monotonic() >= self._next_prune:
            self.prune()
        return line

    def prune(self, now: float | None = None) -> int:
        """Apply retention now; returns the number of rows deleted."""
        if self.readonly:
            return 0
        now = time.time() if now is None else now
        self._next_prune = time.monotonic() + self.prune_every_s
        protect_after = now - self.keep_s  # rows journaled after this are never deleted
        cut = 0  # delete rows with seq <= cut
        if self.retention_s is not None:
            row = self._db.execute(
                "SELECT max(seq) FROM events WHERE ts < ?",
                (min(now - self.retention_s, protect_after),),
            ).fetchone()
            cut = max(cut, row[0] or 0)
        if self.max_rows is not None:
            row = self._db.execute(
                "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?", (self.max_rows,)
            ).fetchone()
            if row is not None:
                young = self._db.execute(
                    "SELECT min(seq) FROM events WHERE ts >= ?", (protect_after,)
                ).fetchone()[0]
                cut = max(cut, row[0] if young is None else min(row[0], young - 1))
        cut = min(cut, self._last_seq - 1)  # the newest row always stays
        if cut <= 0:
            return 0
        deleted = self._db.execute("DELETE FROM events WHERE seq <= ?", (cut,)).rowcount
        if deleted:
            log.debug(
                "journal %s: retention deleted %d events up to seq %d", self.path, deleted, cut
            )
        return deleted

    # -- reading ---------------------------------------------------------------------------

    @property
    def first(self) -> int:
        """The oldest ``seq`` still held (``head + 1`` when the journal is empty)."""
        row = self._db.execute("SELECT min(seq) FROM events").fetchone()
        return row[0] if row[0] is not None else self.head + 1

    def read_after(
        self,
        seq: int,
        limit: int | None = None,
        *,
        types: tuple[str, ...] | list[str] | None = None,
        upto: int | None = None,
        batch: int = 500,
    ) -> Iterator[str]:
        """JSON lines of the events with ``seq`` > ``seq``, in order.

        Args:
            seq: start after this sequence number (0: from the oldest held).
            limit: at most this many lines (None: all).
            types: only events whose type starts with one of these prefixes.
            upto: stop after this ``seq`` (inclusive).
            batch: rows fetched per query; the iterator holds no transaction between batches,
                so the writer is never blocked by a slow consumer.
        """
        left = limit
        after = seq
        while left is None or left > 0:
            n = batch if left is None else min(batch, left)
            sql = "SELECT seq, type, json FROM events WHERE seq > ?"
            params: list[Any] = [after]
            if upto is not None:
                sql += " AND seq <= ?"
                params.append(upto)
            rows = self._db.execute(sql + " ORDER BY seq LIMIT ?", (*params, n)).fetchall()
            if not rows:
                return
            for row_seq, row_type, line in rows:
                after = row_seq
                if types and not any(row_type.startswith(t) for t in types):
                    continue
                yield line
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
            if len(rows) < n:
                return

    def events_after(self, seq: int, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Like :meth:`read_after`, parsed into dicts."""
        for line in self.read_after(seq, limit):
            yield json.loads(line)

    def open_state(self) -> list[str]:
        """JSON lines of the open state at :attr:`head`; see :func:`open_state`."""
        state = OpenState()
        rows = self._db.execute(
            "SELECT json FROM events WHERE type IN (?, ?, ?, ?) ORDER BY seq", STATE_TYPES
        )
        for (line,) in rows:
            state.apply(json.loads(line), line)
        return state.lines()

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL back into the file)."""
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> EventJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_head(self) -> int:
        try:
            row = self._db.execute("SELECT max(seq) FROM events").fetchone()
        except sqlite3.OperationalError:  # a reader opened before the writer made the schema
            return 0
        return row[0] or 0

    def get_meta(self, key: str) -> str | None:
        """A value another component keeps in the journal (e.g. Kafka's delivered seq)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(_SET_META, (key, value))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT; on any failure (COMMIT's too) roll back what SQLite left open."""
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


class OpenState:
    """The state a late joiner needs: per stream its latest ``stream.online``/``.offline``,
    and the tracks started and not yet ended (a stream going offline ends its tracks).

    Fed events in ``seq`` order with :meth:`apply`; :meth:`lines` gives the events that make
    up the state, in ``seq`` order.
    """

    def __init__(self) -> None:
        self._streams: dict[Any, tuple[int, str]] = {}
        self._tracks: dict[tuple[Any, Any], tuple[int, str]] = {}

    def apply(self, event: dict[str, Any], line: str) -> None:
        kind = event.get("type")
        if kind not in STATE_TYPES:
            return
        stream, seq = event.get("stream"), event.get("seq") or 0
        if kind == "stream.online" or kind == "stream.offline":
            self._streams[stream] = (seq, line)
            if kind == "stream.offline":
                for key in [k for k in self._tracks if k[0] == stream]:
                    del self._tracks[key]
        elif kind == "track.start":
            self._tracks[(stream, event.get("track"))] = (seq, line)
        else:
            self._tracks.pop((stream, event.get("track")), None)

    def lines(self) -> list[str]:
        items = sorted([*self._streams.values(), *self._tracks.values()])
        return [line for _seq, line in items]
