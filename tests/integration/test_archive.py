"""Batch archives: `vigil process` with many inputs, the manifest, resume, workers and Ray."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.archive.inputs import ArchiveError, expand_inputs, is_single_file
from pipeline.archive.manifest import MANIFEST, Manifest, comparable
from pipeline.cli import build_parser, main
from tests.support.videos import write_moving_box_video

CONFIG = """\
detect:
  model: fasterrcnn_mobilenet_v3_large_320_fpn
  weights: none
  score_threshold: 0.0
  input_size: 96
runtime:
  progress: false
"""


def vigil(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """`vigil ARGS` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def vigil_here(*args: str) -> tuple[int, str]:
    """`vigil ARGS` in this process (no interpreter and torch start-up): (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, err.getvalue()


def _records(out: Path) -> dict[str, dict]:
    return Manifest(out / MANIFEST).load()


def _by_name(out: Path) -> dict[str, dict]:
    return {Path(p).name: r for p, r in _records(out).items()}


def _events(out: Path) -> dict[str, bytes]:
    return {
        Path(r["path"]).name: (out / r["output"] / "events.jsonl").read_bytes()
        for r in _records(out).values()
        if r["output"]
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good clips, a truncated one (8 of 20 frames readable), a corrupt one (no frame
    decodes), a zero-byte file, a text file with a video extension and a non-video file."""
    root = tmp_path_factory.mktemp("archive") / "in"
    (root / "sub").mkdir(parents=True)
    write_moving_box_video(root / "a.mp4", n_frames=8)
    write_moving_box_video(root / "sub" / "b.mkv", n_frames=6)
    full = write_moving_box_video(root.parent / "full.mp4", n_frames=20).read_bytes()
    (root / "trunc.mp4").write_bytes(full[: int(len(full) * 0.8)])
    (root / "corrupt.mp4").write_bytes(full[: len(full) // 2])
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.mov").write_text("not a video\n")
    (root / "readme.txt").write_text("not an input\n")
    (root.parent / "fast.yaml").write_text(CONFIG)
    return root


def _cfg(inputs: Path) -> list[str]:
    return ["--config", str(inputs.parent / "fast.yaml")]


@pytest.fixture(scope="module")
def serial_run(inputs: Path) -> tuple[int, str, Path]:
    out = inputs.parent / "out-serial"
    return (*vigil_here("process", str(inputs), "--out", str(out), *_cfg(inputs)), out)


# --- inputs and manifest (no model) ---------------------------------------------------------


def test_inputs_expand_folders_globs_and_lists_with_stable_unique_names(tmp_path: Path) -> None:
    (tmp_path / "cams" / "x").mkdir(parents=True)
    for rel in ("cams/x/a.mp4", "cams/x/a.MKV", "cams/b.ts", "cams/x/c.txt", "d.mov"):
        (tmp_path / rel).write_bytes(b"0")
    out = tmp_path / "cams" / "out"  # an output folder inside the archive is never input
    out.mkdir()
    (out / "annotated.mp4").write_bytes(b"0")
    lst = tmp_path / "list.txt"
    lst.write_text("# my archive\n\nd.mov\ncams/x/a.mp4\n")  # relative to the list file
    got = expand_inputs(
        [str(tmp_path / "cams"), str(tmp_path / "*.mov"), f"@{lst}"], out_dir=out, cwd=tmp_path
    )
    rels = [i.rel for i in got]
    assert rels == ["cams/b.ts", "cams/x/a.MKV", "cams/x/a.mp4", "d.mov"]  # dedup, sorted dir
    assert len({i.name for i in got}) == len(got)
    again = expand_inputs([str(tmp_path / "cams" / "x" / "a.mp4")], cwd=tmp_path)
    assert again[0].name == got[2].name and got[2].name.startswith("cams__x__a.mp4-")
    assert got[0].size == 1 and got[0].mtime_ns == (tmp_path / "cams/b.ts").stat().st_mtime_ns
    with pytest.raises(ArchiveError, match="no video file matches"):
        expand_inputs([str(tmp_path / "*.avi")])
    with pytest.raises(ArchiveError, match="cannot read input list"):
        expand_inputs([f"@{tmp_path / 'missing.txt'}"])
    assert is_single_file([str(tmp_path / "d.mov")]) and is_single_file(["missing.mp4"])
    assert not is_single_file([str(tmp_path / "cams")]) and not is_single_file(["a", "b"])
    assert not is_single_file([str(tmp_path / "*.mov")]) and not is_single_file([f"@{lst}"])


def test_manifest_ignores_a_torn_last_line_and_the_last_line_per_path_wins(
    tmp_path: Path,
) -> None:
    """A kill during an append leaves a partial line: it is ignored, and the next append starts
    on a line of its own instead of being glued to it."""
    m = Manifest(tmp_path / "manifest.jsonl")
    m.append({"path": "/a", "status": "failed"})
    m.append({"path": "/a", "status": "done"})
    m.close()
    with open(m.path, "a") as f:
        f.write('{"path": "/b", "sta')
    assert {p: r["status"] for p, r in m.load().items()} == {"/a": "done"}
    m.append({"path": "/b", "status": "done"})
    m.close()
    assert {p: r["status"] for p, r in m.load().items()} == {"/a": "done", "/b": "done"}
    m.compact(["/b", "/a"])
    assert [json.loads(x)["path"] for x in m.path.read_text().splitlines()] == ["/b", "/a"]


def test_engine_ray_without_ray_installed_exits_2_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(["process", str(tmp_path), "--out", str(tmp_path / "o"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'vigil[ray]'" in err and len(err.strip().splitlines()) == 1


def test_process_help_documents_archive_exit_codes() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["process"]  # noqa: SLF001
    text = " ".join(sub.format_help().split())
    assert "exit status: 0 all inputs done (or skipped); 1" in text and "--workers" in text


# --- whole runs ------------------------------------------------------------------------------


def test_archive_records_every_input_and_marks_bad_ones_failed(
    serial_run: tuple[int, str, Path], inputs: Path
) -> None:
    rc, err, out = serial_run
    assert rc == 1, err  # some inputs failed
    recs = _by_name(out)
    assert {n: r["status"] for n, r in recs.items()} == {
        "a.mp4": "done",
        "b.mkv": "done",
        "corrupt.mp4": "failed",
        "notes.mov": "failed",
        "trunc.mp4": "failed",
        "zero.mp4": "failed",
    }
    assert (recs["a.mp4"]["frames"], recs["b.mkv"]["frames"]) == (8, 6)
    assert recs["a.mp4"]["duration_s"] == pytest.approx(0.8)
    assert "empty (0 bytes)" in recs["zero.mp4"]["error"]
    assert "not a readable video" in recs["notes.mov"]["error"]
    assert "no frame could be decoded" in recs["corrupt.mp4"]["error"]
    # A truncated file keeps the outputs of the frames it had, but is not "done".
    assert recs["trunc.mp4"]["error"].startswith("truncated: 8 frames read")
    assert recs["trunc.mp4"]["frames"] == 8 and recs["trunc.mp4"]["output"]
    for rec in recs.values():
        assert "\n" not in (rec["error"] or "")
        assert rec["size"] == Path(rec["path"]).stat().st_size
        if rec["output"]:
            folder = out / rec["output"]
            lines = (folder / "events.jsonl").read_text().splitlines()
            assert len(lines) == rec["events"] and (folder / "annotated.mp4").is_file()
            assert json.loads(lines[-1])["type"] == "stream.offline"
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert folders == {r["output"] for r in recs.values() if r["output"]}  # no .partial left
    assert len((out / MANIFEST).read_text().splitlines()) == 6  # one line per input
    assert "2 done, 0 skipped, 4 failed" in err
    assert "vigil: failed: " + str(inputs / "zero.mp4") + " is empty (0 bytes)" in err


def test_rerun_skips_done_inputs_retries_failed_and_redoes_changed_ones(
    serial_run: tuple[int, str, Path], inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(serial_run[2], out)
    before = _by_name(out)
    mtime = {
        n: (out / r["output"] / "annotated.mp4").stat().st_mtime_ns
        for n, r in before.items()
        if r["output"]
    }
    b = inputs / "sub" / "b.mkv"
    os.utime(b, ns=(time.time_ns(), time.time_ns()))  # same size, new mtime: b.mkv changed
    try:
        rc, err = vigil_here("process", str(inputs), "--out", str(out), *_cfg(inputs))
    finally:
        os.utime(b, ns=(before["b.mkv"]["mtime_ns"],) * 2)
    assert rc == 1, err
    after = _by_name(out)
    assert after["a.mp4"]["status"] == "skipped" and after["b.mkv"]["status"] == "done"
    assert comparable(after["a.mp4"]) == {**comparable(before["a.mp4"]), "status": "skipped"}
    assert (out / after["a.mp4"]["output"] / "annotated.mp4").stat().st_mtime_ns == mtime["a.mp4"]
    assert (out / after["b.mkv"]["output"] / "annotated.mp4").stat().st_mtime_ns > mtime["b.mkv"]
    for name in ("trunc.mp4", "corrupt.mp4", "zero.mp4", "notes.mov"):  # retried
        assert after[name]["status"] == "failed"
        assert after[name]["finished"] > before[name]["finished"]
    assert "1 done, 1 skipped, 4 failed" in err


def test_killed_run_resumes_without_redoing_finished_inputs(inputs: Path, tmp_path: Path) -> None:
    """SIGKILL the CLI right after its first manifest line: the rerun skips what was done,
    finishes the rest, and no folder that looks complete was left half-written."""
    # the later clips are longer, so the kill lands before they are done on a busy machine too
    clips = [
        str(write_moving_box_video(tmp_path / f"k{i}.mp4", n_frames=8 if i == 0 else 60))
        for i in range(3)
    ]
    out = tmp_path / "out"
    manifest = out / MANIFEST
    args = ["process", *clips, "--out", str(out), *_cfg(inputs)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists() and manifest.read_bytes().count(b"\n") >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, stderr
    first = {p: r for p, r in _records(out).items() if r["status"] == "done"}
    assert 1 <= len(first) < 3, "the kill should land while inputs are still to do"
    for folder in (p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        last = (folder / "events.jsonl").read_text().splitlines()[-1]  # complete, if present
        assert json.loads(last)["type"] == "stream.offline" and (folder / "annotated.mp4").exists()
    mtimes = {p: (out / r["output"] / "events.jsonl").stat().st_mtime_ns for p, r in first.items()}

    rc, err = vigil_here(*args)
    assert rc == 0, err
    recs = _records(out)
    assert {p: recs[p]["status"] for p in first} == dict.fromkeys(first, "skipped")
    assert sum(r["status"] == "done" for r in recs.values()) == 3 - len(first)
    for p in first:
        assert (out / recs[p]["output"] / "events.jsonl").stat().st_mtime_ns == mtimes[p]
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def _same_as_serial(out: Path, serial: Path) -> None:
    assert _events(out) == _events(serial) and len(_events(out)) == 3
    assert [comparable(r) for r in _records(out).values()] == [
        comparable(r) for r in _records(serial).values()
    ]


def test_two_workers_give_the_same_outputs_and_manifest_as_serial(
    serial_run: tuple[int, str, Path], inputs: Path
) -> None:
    out = inputs.parent / "out-workers2"
    rc, err = vigil_here("process", str(inputs), "--out", str(out), "--workers", "2", *_cfg(inputs))
    assert rc == 1, err
    _same_as_serial(out, serial_run[2])
    assert {r["worker"] for r in _records(out).values()} <= {"worker-1", "worker-2"}


def test_ray_engine_gives_the_same_outputs_and_manifest_as_local(
    serial_run: tuple[int, str, Path], inputs: Path
) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vigil[ray]')")
    out = inputs.parent / "out-ray"
    proc = vigil(
        "process", str(inputs), "--out", str(out), "--engine", "ray", "--workers", "2",
        *_cfg(inputs), timeout=240,
    )  # fmt: skip
    if proc.returncode not in (0, 1) and "Ray" in proc.stderr and "start" in proc.stderr:
        pytest.skip(f"a local Ray instance cannot start here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 1, proc.stderr
    _same_as_serial(out, serial_run[2])
    assert all(r["worker"].startswith("ray:") for r in _records(out).values() if r["output"])
