"""Bad input exits non-zero with one line naming the problem, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def vigil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=60
    )


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vigil: error:") and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path: Path):
    _one_line_error(
        vigil("process", str(tmp_path / "nope.mp4"), "--out", str(tmp_path)), "no such file"
    )


def test_zero_byte_file(tmp_path: Path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _one_line_error(vigil("process", str(tmp_path / "empty.mp4")), "is empty (0 bytes)")


def test_file_that_is_not_video(tmp_path: Path):
    (tmp_path / "notes.mp4").write_text("definitely not a video\n" * 100)
    _one_line_error(vigil("process", str(tmp_path / "notes.mp4")), "not a readable video")


def test_unknown_config_key(tmp_path: Path, tiny_video: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  modle: x\n")
    _one_line_error(
        vigil("process", str(tiny_video), "--config", str(cfg)), "detect.modle: unknown key"
    )


@pytest.mark.parametrize("endpoint", ["localhost:5555", "tcp://127.0.0.1:99999"])
def test_bad_endpoint(tiny_video: Path, endpoint: str):
    _one_line_error(vigil("process", str(tiny_video), "--events", endpoint), "bad endpoint")


def test_unknown_model(tiny_video: Path, tmp_path: Path):
    _one_line_error(
        vigil(
            "process", str(tiny_video), "--out", str(tmp_path), "--model", "yolo99", "--no-progress"
        ),
        "yolo99",
    )


def test_missing_weights_file_names_the_path(tiny_video: Path, tmp_path: Path):
    proc = vigil(
        "process",
        str(tiny_video),
        "--out",
        str(tmp_path),
        "--weights",
        str(tmp_path / "w.pth"),
        "--no-progress",
    )
    _one_line_error(proc, str(tmp_path / "w.pth"))


def test_help_explains_commands():
    proc = vigil("--help")
    assert proc.returncode == 0
    for word in ("process", "run", "demo", "subscribe", "models"):
        assert word in proc.stdout
    proc = vigil("process", "--help")
    assert "--events" in proc.stdout and "--out" in proc.stdout


def test_unreadable_mqtt_password_file_is_one_line(tiny_video: Path, tmp_path: Path):
    """The publish stage read it only once running: a missing file crashed that stage (a
    traceback, restarts, exit 1) instead of one line and exit 2."""
    cfg = tmp_path / "mqtt.yaml"
    missing = tmp_path / "no-such-password"
    cfg.write_text(f"publish:\n  mqtt:\n    password_file: {missing}\n")
    out = str(tmp_path / "o")
    proc = vigil("process", str(tiny_video), "--config", str(cfg), "--out", out, "--weights=none")
    _one_line_error(proc, "publish.mqtt.password_file")
