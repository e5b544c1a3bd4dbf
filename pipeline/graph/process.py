"""Stage processes: the child's entry point (:func:`run_stage`), its set-up, and the parent's
helpers to signal, join and clean up after them.

A stage is spawned with a picklable :class:`StageSpec` (its class, the run's config as JSON and
its arguments). The child validates the config once (:class:`pipeline.config.VigilConfig`),
builds the stage with its ``from_config`` and runs it; every exception reaches the supervisor
with its traceback through the control socket (``error``), a clean end reports ``done``.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from pipeline.config import ConfigError
from pipeline.graph.context import StageContext, Stopped
from pipeline.protocol import Endpoints, Kind

log = logging.getLogger(__name__)

#: Errors caused by the user's input or set-up, reported as one line without traceback:
#: (module, class) of the classes that are not always imported in a stage process (a class
#: whose module was never imported cannot have been raised).
_USER_ERRORS = (("stream.sources", "SourceError"), ("models.weights", "WeightsError"))


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes that are the user's error (see :func:`is_user_error`)."""
    loaded = [getattr(sys.modules[mod], name) for mod, name in _USER_ERRORS if mod in sys.modules]
    return (ConfigError, *loaded)


def is_user_error(exc: BaseException) -> bool:
    """Errors caused by the user's input or set-up, reported as one line without traceback."""
    return isinstance(exc, user_error_types())


class StageFailed(Exception):
    """A stage raised or died. ``user`` marks errors caused by input or set-up."""

    def __init__(self, stage: str, message: str, traceback: str = "", user: bool = False) -> None:
        super().__init__(f"stage {stage!r} failed: {message}")
        self.stage, self.message, self.traceback, self.user = stage, message, traceback, user


@dataclass(frozen=True)
class StageSpec:
    """What a stage process needs to build its stage: ``Stage.from_config(ctx, cfg, *args)``
    with ``stage`` naming the class (``module:Class``, imported in the child only) and
    ``plain`` the run's config as JSON (validated again, once, in the child)."""

    stage: str
    plain: dict[str, Any]
    args: tuple = ()

    def stage_class(self) -> type:
        module, _, name = self.stage.partition(":")
        return getattr(importlib.import_module(module), name)


def init_child_process(name: str, log_level: int) -> None:
    """Set up a worker process: its parent orchestrates shutdown, so a Ctrl-C or SIGTERM sent to
    the whole process group must not kill it mid-frame; logs carry the worker's name, and
    FFmpeg's own log lines show in debug only."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pipeline.logs import setup_logging  # JSON or not: the parent's VIGIL_LOG_JSON

    setup_logging(log_level, None, process=name)
    if log_level > logging.DEBUG:
        logging.getLogger("libav").setLevel(logging.CRITICAL)


def run_stage(
    name: str, spec: StageSpec, endpoints: Endpoints, stop_event: Any, log_level: int
) -> None:
    """Process entry point: build and run the stage, report ``done`` or ``error``."""
    from pipeline.config import VigilConfig

    init_child_process(name, log_level)
    ctx = StageContext(name, endpoints, stop_event)
    try:
        cfg = VigilConfig.model_validate(spec.plain)
        spec.stage_class().from_config(ctx, cfg, *spec.args).run()
        ctx.tick(force=True)
        ctx.report(Kind.DONE)
    except Stopped as exc:
        ctx.report(Kind.DONE, note=str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure goes to the supervisor
        ctx.report(
            Kind.ERROR,
            message=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            user=is_user_error(exc),
        )
        ctx.close()
        os._exit(1)
    ctx.close()


class SignalFlag:
    """SIGINT/SIGTERM caught into :attr:`caught` (the signal's name) until :meth:`restore`."""

    def __init__(self) -> None:
        self.caught: str | None = None
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.caught = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def exit_text(code: int) -> str:
    """How a process that reported nothing ended, in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without reporting an error"


def join_all(procs: dict[str, mp.Process], timeout_s: float, quiet: bool = False) -> None:
    """Join every process within ``timeout_s`` in all; kill those still alive."""
    deadline = time.monotonic() + timeout_s
    for proc in procs.values():
        proc.join(max(deadline - time.monotonic(), 0.1))
    for name, proc in procs.items():
        if proc.is_alive():
            if not quiet:
                log.warning("stage %s did not exit in time; killing it", name)
            proc.kill()
            proc.join(5.0)


def unlink_rings(names: list[str]) -> None:
    """Free the shared memory of sources that were killed before they could free it."""
    from multiprocessing import shared_memory

    for name in names:
        try:
            shared_memory.SharedMemory(name=name).unlink()
        except FileNotFoundError:
            pass
