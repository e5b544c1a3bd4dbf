"""A real `vigil process ... --http` run in a subprocess, for the tests of issue #9 (metrics,
health, restarts, the viewer): started in its own process group, polled over HTTP with bounded
waits, always stopped (SIGTERM, then SIGKILL of the group) on exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 120  # imports and model load on a busy 2-core CPU


def log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class LiveVigil:
    """``with LiveVigil(video, out, port, extra_args, env) as run: run.wait_ready() ...``"""

    def __init__(
        self,
        video: Path,
        out: Path,
        port: int,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        duration_s: float = 600,  # a safety net only: the tests stop it themselves
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.out = out
        self.log = out.parent / f"{out.name}.log"
        self.cmd = [
            sys.executable, "-m", "pipeline.cli", "process", str(video), "--out", str(out),
            "--http", f"127.0.0.1:{port}", "--loop", "--mode", "live", "--duration",
            str(duration_s), "--model", "simnet", "--no-progress", *(args or []),
        ]  # fmt: skip
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LiveVigil:
        with open(self.log, "wb") as log_file:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=REPO,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(HTTP status, body); status 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as res:
                return res.status, res.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return 0, ""

    def status(self, timeout: float = 30) -> dict[str, Any]:
        """/api/status, retried through a busy moment (fails the test if it never answers)."""
        return json.loads(
            self.wait_for("/api/status", lambda: self._answer("/api/status"), timeout)
        )

    def pid(self, stage: str) -> int:
        """The pid of ``stage``'s current process."""
        return {s["name"]: s["pid"] for s in self.status()["stages"]}[stage]

    def wait_restarted(self, stage: str, old_pid: int | None = None, timeout: float = 120) -> None:
        """Until ``stage`` has been restarted once and its new process (not ``old_pid``) runs."""

        def restarted() -> bool:
            new = {s["name"]: s for s in self.status()["stages"]}[stage]
            return new["restarts"] == 1 and new["alive"] and new["pid"] != old_pid

        self.wait_for(f"{stage} restarted", restarted, timeout)

    def _answer(self, path: str) -> str | None:
        code, body = self.get(path)
        return body if code == 200 else None

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float) -> Any:
        """Poll ``condition`` every 0.5 s until truthy; fail naming ``what`` (with the log)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"vigil exited ({self.proc.returncode}) waiting for {what}:\n"
                            f"{log_tail(self.log)}")  # fmt: skip
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout} s:\n{log_tail(self.log)}")
            time.sleep(0.5)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        self.wait_for("/readyz 200", lambda: self.get("/readyz")[0] == 200, timeout)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; the exit status (fails the test if vigil does not exit in time)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"vigil still running {timeout} s after SIGTERM:\n{log_tail(self.log)}")
