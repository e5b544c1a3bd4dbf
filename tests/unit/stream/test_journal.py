"""The event journal: gap-free seq across restarts, retention, reading, open state."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from stream.journal import EventJournal, JournalError
from tests.support.feed import event


def test_seq_is_gap_free_and_continues_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as j:
        lines = [j.append(event(count=i, total=i)) for i in range(3)]
        assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3]
    with EventJournal(path) as j:
        assert j.head == 3
        assert json.loads(j.append(event()))["seq"] == 4
        assert [e["seq"] for e in j.events_after(0)] == [1, 2, 3, 4]
        assert [e["seq"] for e in j.events_after(2, limit=1)] == [3]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_read_after_filters_types_and_pages_in_batches(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as j:
        for i in range(25):
            j.append(event("track.start" if i % 5 == 0 else "frame.dropped", track=i))
        got = [json.loads(x)["seq"] for x in j.read_after(0, types=["track."], batch=3)]
        assert got == [1, 6, 11, 16, 21]
        assert len(list(j.read_after(10, batch=4))) == 15
        assert [json.loads(x)["seq"] for x in j.read_after(10, upto=12)] == [11, 12]


def test_retention_deletes_oldest_but_keeps_window_and_head(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite", max_rows=10, keep_s=0.0, retention_s=None) as j:
        for _ in range(30):
            j.append(event())
        j.prune()
        assert len(j) == 10 and j.first == 21 and j.head == 30
    # rows younger than keep_s survive a max_rows cap
    with EventJournal(tmp_path / "k.sqlite", max_rows=5, keep_s=3600.0) as j:
        for _ in range(20):
            j.append(event())
        assert j.prune() == 0 and len(j) == 20
        # by age: everything older than retention_s goes, except the newest row (the head)
        j.keep_s, j.retention_s = 0.0, 10.0
        assert j.prune(now=10**10) == 19
        assert j.head == 20 and len(j) == 1
    with EventJournal(tmp_path / "k.sqlite") as j:  # the head never goes back
        assert json.loads(j.append(event()))["seq"] == 21


def test_open_state_has_latest_stream_status_and_open_tracks(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as j:
        j.append(event("stream.online", "a"))
        j.append(event("stream.online", "b"))
        j.append(event("track.start", "a", track=1))
        j.append(event("track.start", "a", track=2))
        j.append(event("track.end", "a", track=1))
        j.append(event("track.start", "b", track=1))
        j.append(event("stream.offline", "b"))
        state = [(e["type"], e["stream"], e.get("track")) for e in map(json.loads, j.open_state())]
    assert state == [
        ("stream.online", "a", None),
        ("track.start", "a", 2),
        ("stream.offline", "b", None),
    ]


def test_reader_is_read_only_and_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        EventJournal.open_reader(tmp_path / "none.sqlite")
    with EventJournal(tmp_path / "j.sqlite") as w:
        w.append(event())
        r = EventJournal.open_reader(tmp_path / "j.sqlite")
        w.append(event())
        assert r.head == 2  # sees the writer's commits
        with pytest.raises(JournalError, match="read-only"):
            r.append(event())
        r.close()


def test_meta_is_committed_with_its_event_or_not_at_all(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as j:
        j.append(event(), meta={"upstream": "1"})
        assert j.get_meta("upstream") == "1"
        j._db.execute("CREATE TRIGGER no_more BEFORE INSERT ON events BEGIN "
                      "SELECT RAISE(ABORT, 'disk full'); END")  # fmt: skip
        bad = event()
        with pytest.raises(sqlite3.Error, match="disk full"):
            j.append(bad, meta={"upstream": "2"})
        assert bad["seq"] is None and j.head == 1
        assert j.get_meta("upstream") == "1"  # rolled back with the event
        j._db.execute("DROP TRIGGER no_more")
        j.append(event(), meta={"upstream": "3"})
    with EventJournal(tmp_path / "j.sqlite") as j:
        assert j.head == 2 and j.get_meta("upstream") == "3"
