"""Nothing open by accident (issue 14): binding HTTP or a ZeroMQ endpoint beyond loopback needs
a token (HTTP) or CURVE (ZeroMQ); without it the run is refused with one line and exit 2
before anything starts, unless --insecure, which logs a warning per exposed endpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from pipeline import access
from pipeline.access import ExposureError, check_exposure, is_loopback, read_token
from pipeline.cli import main
from pipeline.config import load_config


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True),
        ("[::1]", True), ("0.0.0.0", False), ("*", False), ("::", False), ("10.0.0.7", False),
        ("eth0", False), ("vigil.example.org", False),
    ],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool):
    assert is_loopback(host) is loopback


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Stand-in for the run itself: records the config it got (after the CLI's checks) and
    applies the real run's own exposure check, which logs the --insecure warnings."""
    from pipeline.graph import supervisor

    configs: list[Any] = []

    def fake_run(cfg: Any, progress_total: int | None = None) -> supervisor.RunSummary:
        check_exposure(cfg)
        configs.append(cfg)
        return supervisor.RunSummary()

    monkeypatch.setattr(supervisor, "run_pipeline", fake_run)
    return configs


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        (["--http", "0.0.0.0:8080"], "runtime.http_token_file"),
        (["--http", "[::]:8080"], "runtime.http_token_file"),
        (["--events", "tcp://*:5555"], "publish.curve_secret_key_file"),
        (["--frames", "tcp://0.0.0.0:5556"], "publish.curve_secret_key_file"),
        (["--replay", "tcp://10.0.0.7:5557"], "publish.curve_secret_key_file"),
        (["--control", "tcp://eth0:5560"], "publish.curve_secret_key_file"),
    ],
)
def test_binding_beyond_loopback_unprotected_is_refused(
    flags: list[str],
    key: str,
    tiny_video: Path,
    tmp_path: Path,
    ran: list[Any],
    capsys: pytest.CaptureFixture[str],
):
    """Fault: every endpoint would bind any address it was given, with no protection and no
    warning (HTTP had no authentication at all; frames and control no CURVE)."""
    out = tmp_path / "out"
    assert main(["process", str(tiny_video), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vigil: error: refusing"), err
    assert key in err and flags[1] in err and "--insecure" in err
    assert not ran and not out.exists()  # nothing started, nothing written


def test_loopback_needs_nothing_and_insecure_warns(
    tiny_video: Path,
    tmp_path: Path,
    ran: list[Any],
    caplog: pytest.LogCaptureFixture,
):
    common = ["process", str(tiny_video), "--out", str(tmp_path / "out"), "--weights", "none"]
    loopback = ["--http", "127.0.0.1:0", "--events", "tcp://localhost:5555"]
    assert main([*common, *loopback, "--replay", "tcp://[::1]:5556"]) == 0
    with caplog.at_level(logging.WARNING, logger=access.__name__):
        flags = ["--http", "0.0.0.0:8080", "--events", "tcp://*:5555", "--insecure"]
        assert main([*common, *flags]) == 0
    assert ran[-1].runtime.insecure
    warned = [r.getMessage() for r in caplog.records if r.name == access.__name__]
    assert len(warned) == 2 and all("insecure" in w for w in warned), warned


def test_the_insecure_config_key_and_protection_let_a_run_bind_beyond_loopback(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    key = tmp_path / "server.key_secret"
    key.write_text("(a certificate)")
    protected = load_config(
        overrides={
            "runtime.http": "0.0.0.0:8080",
            "runtime.http_token_file": str(token),
            "publish.events": "tcp://*:5555",
            "publish.curve_secret_key_file": str(key),
        }
    )
    check_exposure(protected)
    assert read_token(token) == "s3cret-token"
    open_ = load_config(overrides={"runtime.http": "0.0.0.0:8080"})
    with pytest.raises(ExposureError):
        check_exposure(open_)
    insecure = {"runtime.http": "0.0.0.0:8080", "runtime.insecure": True}
    check_exposure(load_config(overrides=insecure))


@pytest.mark.parametrize("content", [b"", b"  \n", b"two words", b"\xff\xfe", None])
def test_an_unusable_token_file_is_one_line_and_exit_2(
    content: bytes | None,
    tiny_video: Path,
    tmp_path: Path,
    ran: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    token = tmp_path / "token"
    if content is not None:
        token.write_bytes(content)
    monkeypatch.setenv("VIGIL__RUNTIME__HTTP_TOKEN_FILE", str(token))
    argv = ["process", str(tiny_video), "--out", str(tmp_path / "out"), "--http", "0.0.0.0:0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runtime.http_token_file" in err, err
    assert not ran
