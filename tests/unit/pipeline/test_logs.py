"""Logs: human or JSON lines, credentials hidden, every line about a stream names it."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.logs import (
    LOG_JSON_ENV,
    make_handler,
    stream_logger,
)
from stream.redact import redact
from tests.support.videos import write_moving_box_video

SECRET = "hunter2"
URI = f"rtsp://admin:{SECRET}@cam.local:554/live"
SHOWN = "rtsp://***@cam.local:554/live"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def capture():
    """A private logger writing through vigil's handler into a buffer: (logger, read_lines)."""
    loggers: list[logging.Logger] = []

    def make(json_logs: bool, process: str = "vigil") -> tuple[logging.Logger, io.StringIO]:
        buf = io.StringIO()
        logger = logging.getLogger(f"test.logs.{len(loggers)}.{json_logs}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(make_handler(json_logs, process, buf))
        loggers.append(logger)
        return logger, buf

    yield make
    for logger in loggers:
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)


def test_json_lines_parse_and_carry_the_fields(capture):
    logger, buf = capture(True, "source:cam1")
    stream_logger(logger, "cam1").info("online: %dx%d", 640, 360)
    try:
        raise ValueError("bad frame\nsecond line")
    except ValueError:
        logger.exception("decode failed")
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert {"ts", "level", "logger", "process", "message", "stream"} <= set(first)
    assert first["ts"].endswith("Z") and datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert first["level"] == "info" and first["logger"] == logger.name
    assert first["process"] == "source:cam1" and first["stream"] == "cam1"
    assert first["message"] == "stream cam1: online: 640x360"
    assert first["pid"] == os.getpid()
    # A source stage's process names its stream even on lines that do not say it.
    assert second["level"] == "error" and second["stream"] == "cam1"
    assert "Traceback" in second["exc_info"] and "ValueError: bad frame" in second["exc_info"]


def test_json_stream_field_only_when_known(capture):
    logger, buf = capture(True, "infer")
    logger.warning("batch of %d", 4)
    stream_logger(logger, "door").warning("late frame")
    plain, about = (json.loads(x) for x in buf.getvalue().splitlines())
    assert "stream" not in plain and "exc_info" not in plain and plain["process"] == "infer"
    assert about["stream"] == "door" and about["message"] == "stream door: late frame"


def test_human_lines_keep_time_process_level_message(capture):
    logger, buf = capture(False, "source:cam1")
    stream_logger(logger, "cam1").warning("offline (%s)", "lost")
    line = buf.getvalue().rstrip("\n")
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} source:cam1 WARNING stream cam1: offline"
    assert re.fullmatch(pattern + r" \(lost\)", line), line


@pytest.mark.parametrize("json_logs", [False, True], ids=["human", "json"])
def test_a_secret_in_a_uri_never_reaches_the_output(capture, json_logs: bool):
    logger, buf = capture(json_logs, "source:cam1")
    logger.warning("opening " + URI)  # in the message itself
    logger.warning("opening %s", URI)  # in an argument
    logger.warning("sources %r", {"uri": URI, "other": "http://u:p%40ss@h/x"})  # in a repr
    logger.warning("opening %(uri)s", {"uri": URI})  # mapping arguments
    stream_logger(logger, "cam1").info("%s", URI)
    try:
        raise ConnectionError(f"cannot open {URI}: refused")
    except ConnectionError:
        logger.exception("failed: %s", URI)  # in the traceback text
    logger.error("no traceback", exc_info=(ValueError, ValueError(URI), None))
    out = buf.getvalue()
    assert SECRET not in out and "p%40ss" not in out
    assert out.count(SHOWN) >= 7
    if json_logs:
        assert all(json.loads(x) for x in out.splitlines())


@pytest.mark.parametrize(
    "uri",
    [
        "rtsp://admin:hunter2@cam:554/x",
        "rtsp://admin:p@ss@cam/x",
        "rtsps://user@cam",
        "rtsp://cam:554/x",
        "rtsp://cam/x@y",
        "/videos/a@b.mp4",
        "http://u:pw@[::1]:8080/",
    ],
)
def test_redact_text_hides_what_redact_uri_hides(uri: str):
    assert redact(uri) == redact(uri)
    assert redact(f"open {uri!r} twice: {uri}") == f"open {redact(uri)!r} twice: " + (
        redact(uri)
    )


def _python(
    tmp_path: Path, code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``code`` as a script file (spawned children re-import it) in a fresh interpreter."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_spawned_workers_follow_the_parents_json_choice(tmp_path: Path):
    """The CLI's choice reaches processes started with multiprocessing spawn (the stages)."""
    proc = _python(
        tmp_path,
        """
        import logging, multiprocessing as mp, os, sys, warnings
        sys.path.insert(0, os.getcwd())
        from pipeline.logs import setup_logging
        from pipeline.graph.process import init_child_process

        def child():
            init_child_process("infer", logging.INFO)
            logging.getLogger("pipeline.workers").info("ready %s", "rtsp://a:hunter2@h/x")

        if __name__ == "__main__":
            setup_logging("info", True)
            print(os.environ["VIGIL_LOG_JSON"])
            logging.getLogger("vigil").info("parent")
            warnings.warn("careful")  # Python warnings come out as JSON lines too
            p = mp.get_context("spawn").Process(target=child)
            p.start()
            p.join(30)
        """,
        env={LOG_JSON_ENV: ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    lines = [json.loads(x) for x in proc.stderr.splitlines()]
    by_process = {(x["process"], x["message"].splitlines()[0]) for x in lines}
    assert ("vigil", "parent") in by_process
    assert ("infer", "ready rtsp://***@h/x") in by_process
    assert any(x["logger"] == "py.warnings" and "careful" in x["message"] for x in lines)
    assert SECRET not in proc.stderr


def test_human_by_default_and_vigil_log_json_env_switches_to_json(tmp_path: Path):
    code = """
        import logging, os, sys
        sys.path.insert(0, os.getcwd())
        from pipeline.logs import setup_logging
        setup_logging("info", None, "source:cam1")
        logging.getLogger("x").info("hello %s", "rtsp://u:hunter2@h/x")
        """
    human = _python(tmp_path, code, env={LOG_JSON_ENV: ""})
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} source:cam1 INFO hello rtsp://\*\*\*@h/x\n",
        human.stderr,
    ), human.stderr
    as_json = json.loads(_python(tmp_path, code, env={LOG_JSON_ENV: "1"}).stderr)
    assert as_json["stream"] == "cam1" and as_json["message"] == "hello rtsp://***@h/x"


def test_a_bad_input_is_one_json_error_with_json_logs(tmp_path: Path):
    env = {**os.environ, LOG_JSON_ENV: ""}
    for flags, expect_json in (([], False), (["--log-json"], True)):
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *flags, "process", str(tmp_path / "no.mp4")],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        if expect_json:
            (rec,) = [json.loads(x) for x in proc.stderr.splitlines()]
            assert rec["level"] == "error" and rec["message"].startswith("error: no such file")
        else:
            assert proc.stderr.startswith("vigil: error: no such file"), proc.stderr


def test_vigil_process_log_json_gives_json_lines_naming_the_stream(tmp_path: Path):
    video = write_moving_box_video(tmp_path / "door.mp4", n_frames=5)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--log-json",
            "--log-level",
            "info",
            "process",
            str(video),
            "--out",
            str(tmp_path / "out"),
            "--stream-id",
            "door",
            "--model",
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            "--weights",
            "none",
            "--no-progress",
            "--no-video",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "VIGIL__DETECT__MAX_DETECTIONS": "8", LOG_JSON_ENV: ""},
    )
    assert proc.returncode == 0, proc.stderr
    # every line is a JSON record, the CLI's closing report ("N frames in ...") included
    records = [json.loads(x) for x in proc.stderr.splitlines()]
    closing = [r["message"] for r in records if r["logger"] == "vigil"]
    assert any(" frames in " in m for m in closing) and any("wrote " in m for m in closing)
    for rec in records:
        assert {"ts", "level", "logger", "process", "message"} <= set(rec), rec
        if "door" in rec["message"] or rec["process"] == "source:door":
            assert rec.get("stream") == "door", rec
    about = [r["message"] for r in records if r.get("stream") == "door"]
    assert any("online" in m for m in about) and any("ended (eof)" in m for m in about), about
    assert {r["process"] for r in records} >= {"vigil", "source:door"}
