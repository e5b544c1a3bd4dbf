"""A run's output folder (issue 14): a rerun never destroys a previous run's outputs, and a
corrupt journal or an unwritable ``--out`` is one line and exit 2, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.outputs import OutputError, set_aside_previous
from stream.journal import EventJournal

REPO = Path(__file__).resolve().parents[2]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("vigil: error: "), err
    return lines[0]


def test_a_rerun_into_the_same_out_keeps_the_previous_outputs(tiny_video: Path, tmp_path: Path):
    """Fault: a rerun truncated events.jsonl and replaced annotated.mp4 while the journal went
    on numbering, so the first run's events were left only in the journal."""
    out = tmp_path / "out"
    out.mkdir()
    before = {
        "events.jsonl": b'{"v":1,"seq":1,"type":"stream.online"}\n',
        "annotated.mp4": b"the first run's video",
        "timings.jsonl": b'{"frame":0}\n',
    }
    for name, data in before.items():
        (out / name).write_bytes(data)
    with EventJournal(out / "events.journal.sqlite") as journal:
        journal.append({"v": 1, "type": "stream.online", "stream": "cam1"})
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "process", str(tiny_video), "--out", str(out),
         "--model", "simnet", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kept = out / "previous" / "1"
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
    assert f"kept the previous run's annotated.mp4, events.jsonl, timings.jsonl in {kept}" in (
        proc.stderr
    )
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert events[0]["seq"] == 2  # the journal's numbering goes on, in the new file too
    assert (out / "annotated.mp4").stat().st_size > 1000


def test_each_rerun_gets_the_next_previous_folder_and_overwrite_deletes(tmp_path: Path):
    (tmp_path / "previous" / "7").mkdir(parents=True)  # a gap or a higher number: next is 8
    (tmp_path / "annotated-cam2.restart1.mp4").write_bytes(b"v")
    (tmp_path / "notes.txt").write_text("not an output")
    line = set_aside_previous(tmp_path, "keep")
    assert line and (tmp_path / "previous" / "8" / "annotated-cam2.restart1.mp4").is_file()
    assert (tmp_path / "notes.txt").is_file()
    assert set_aside_previous(tmp_path, "keep") is None  # nothing left to keep
    (tmp_path / "events.jsonl").write_text("{}\n")
    assert "deleted" in (set_aside_previous(tmp_path, "overwrite") or "")
    assert not (tmp_path / "events.jsonl").exists()
    (tmp_path / "events.jsonl").write_text("{}\n")
    (tmp_path / "previous").rename(tmp_path / "elsewhere")
    (tmp_path / "previous").write_text("a file where the folder goes")
    with pytest.raises(OutputError, match="cannot set aside"):
        set_aside_previous(tmp_path, "keep")


def test_overwrite_deletes_nothing_when_the_run_cannot_start(
    tiny_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Fault: --overwrite deleted the previous outputs before the model download, so an offline
    run that then failed (exit 2) had destroyed them for nothing."""
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path / "cache"))  # nothing cached: a download
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.jsonl").write_text('{"v":1,"seq":1}\n')
    args = ["process", str(tiny_video), "--out", str(out), "--overwrite", "--no-progress"]
    assert main([*args, "--model", "ssdlite320_mobilenet_v3_large", "--weights", "auto"]) == 2
    assert "no network" in one_line_error(capsys)
    assert (out / "events.jsonl").read_text() == '{"v":1,"seq":1}\n'


def test_a_journal_of_garbage_bytes_is_one_line_and_exit_2(
    tiny_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Fault: a corrupt journal ended the run with the publish stage's traceback (exit 1)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.journal.sqlite").write_bytes(bytes(range(256)) * 64)
    assert main(["process", str(tiny_video), "--out", str(out), "--model", "simnet"]) == 2
    line = one_line_error(capsys)
    assert "events.journal.sqlite" in line and "--no-journal" in line


def test_a_journal_with_a_damaged_page_is_one_line_and_exit_2(
    tiny_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A sound header with damaged pages behind it opens fine; the page check refuses it."""
    out = tmp_path / "out"
    path = out / "events.journal.sqlite"
    with EventJournal(path) as journal:
        for _ in range(2000):
            journal.append({"v": 1, "type": "objects.count", "stream": "cam1", "pad": "x" * 200})
    data = bytearray(path.read_bytes())
    data[8192 : 8192 + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    assert main(["process", str(tiny_video), "--out", str(out), "--model", "simnet"]) == 2
    assert "is corrupt" in one_line_error(capsys)


@pytest.mark.parametrize("where", ["under a file", "in sysfs"])
def test_an_unwritable_out_is_one_line_and_exit_2(
    where: str, tiny_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Fault: a read-only --out gave a traceback. Tests run as root, so chmod would not stop
    them: a path under a regular file, and sysfs (where even root cannot create a folder)."""
    if where == "under a file":
        (tmp_path / "file").write_text("a file where a folder should be")
        out = tmp_path / "file" / "out"
    else:
        out = Path("/sys/vigil-test-out")
        if not Path("/sys").is_dir() or out.exists():
            pytest.skip("no sysfs here")
    assert main(["process", str(tiny_video), "--out", str(out), "--model", "simnet"]) == 2
    assert f"{out}" in one_line_error(capsys)


def test_replay_of_a_journal_with_damaged_pages_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Fault: `vigil replay` opened a journal with a sound header, then died with sqlite's
    traceback at the first damaged page it read."""
    path = tmp_path / "events.journal.sqlite"
    with EventJournal(path) as journal:
        for _ in range(3000):
            journal.append({"v": 1, "type": "objects.count", "stream": "cam1", "pad": "x" * 200})
    data = bytearray(path.read_bytes())
    data[4096 * 40 : 4096 * 60] = b"\x5a" * (4096 * 20)
    path.write_bytes(bytes(data))
    assert main(["replay", str(path)]) == 2
    assert "malformed" in one_line_error(capsys)
