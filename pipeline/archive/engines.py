"""Archive engines: who processes the inputs of a run, and where.

:class:`Engine` holds what they share (the config, the output root, the run's hooks and the
contract of :meth:`Engine.run`); :class:`SerialEngine` runs inputs one after another in this
process, :class:`ProcessEngine` in spawned worker processes, :class:`RayEngine` in Ray actors.
Every worker builds its perceiver once and reuses it for every input; every engine hands back the
same records (:func:`pipeline.archive.item.process_item`). :func:`make_engine` picks one.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.archive.inputs import ArchiveError, ArchiveInput
from pipeline.archive.item import one_line, process_item
from pipeline.archive.manifest import failed_record
from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "--engine ray needs Ray: pip install 'vigil[ray]'"
ResultFn = Callable[[dict[str, Any]], None]
FramesFn = Callable[[str, int], None]


@dataclass(frozen=True)
class RunHooks:
    """How an engine reports back to the run.

    Attributes:
        on_result: called with each input's final manifest record, in the coordinator.
        on_frames: called with (path, frames done so far) while an input runs, or None.
        stopping: True once the run should hand out no more inputs (SIGINT/SIGTERM).
    """

    on_result: ResultFn
    on_frames: FramesFn | None
    stopping: Callable[[], bool]


def make_engine(cfg: VigilConfig, root: Path, stream_id: str) -> Engine:
    """The engine ``cfg.archive`` asks for: Ray, worker processes, or this process."""
    archive = cfg.archive
    if archive.engine == "ray":
        return RayEngine(cfg, root, stream_id)
    if archive.workers > 1:
        return ProcessEngine(cfg, root, stream_id)
    return SerialEngine(cfg, root, stream_id)


class Engine:
    """The base of every engine: ``cfg``, the output ``root``, the stream id, the worker count.

    Subclasses implement :meth:`dispatch`; :meth:`run` calls it only when there is work.
    """

    def __init__(self, cfg: VigilConfig, root: Path, stream_id: str) -> None:
        self.cfg, self.root, self.stream_id = cfg, root, stream_id
        self.n = cfg.archive.workers

    def run(self, todo: Sequence[ArchiveInput], hooks: RunHooks) -> None:
        """Process ``todo`` until done or ``hooks.stopping()``; every input that was handed out
        gets exactly one ``hooks.on_result`` call. Raises :class:`ArchiveError` when the
        engine cannot start."""
        if todo:
            self.dispatch(todo, hooks)

    def dispatch(self, todo: Sequence[ArchiveInput], hooks: RunHooks) -> None:
        """Hand ``todo`` (not empty) to the workers and report through ``hooks``."""
        raise NotImplementedError

    def worker_args(self, threads: int) -> tuple[dict[str, Any], str, str, int]:
        """What a remote worker is built from: the plain config, root, stream id, threads."""
        return self.cfg.model_dump(mode="json"), str(self.root), self.stream_id, threads


def _torch_threads(cfg: VigilConfig, workers: int) -> int:
    return cfg.runtime.torch_threads or max(1, (os.cpu_count() or 1) // max(workers, 1))


class SerialEngine(Engine):
    """One file after another, in this process, with one perceiver."""

    def dispatch(self, todo: Sequence[ArchiveInput], hooks: RunHooks) -> None:
        from models.perception.build import build_perceiver_from_config

        if self.cfg.runtime.torch_threads:
            import torch

            torch.set_num_threads(self.cfg.runtime.torch_threads)
        perceiver = build_perceiver_from_config(self.cfg)
        on_frames = hooks.on_frames
        for item in todo:
            if hooks.stopping():
                break
            cb = (lambda d, _e, p=item.path: on_frames(p, d)) if on_frames else None
            hooks.on_result(
                process_item(
                    self.cfg,
                    item,
                    self.root,
                    perceiver=perceiver,
                    stream_id=self.stream_id,
                    progress_cb=cb,
                    worker="main",
                )
            )


class ArchiveWorker:
    """A worker away from the coordinator (a process or a Ray actor): it validates the plain
    config once, builds its perceiver once and processes the inputs it is handed with them."""

    def __init__(
        self, plain: dict[str, Any], root: str, stream_id: str, threads: int, name: str
    ) -> None:
        import torch

        from models.perception.build import build_perceiver_from_config

        torch.set_num_threads(threads)
        self.cfg = VigilConfig.model_validate(plain)
        self.root, self.stream_id, self.name = root, stream_id, name
        self.perceiver = build_perceiver_from_config(self.cfg)

    def process(
        self, item: dict[str, Any], progress_cb: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Process one input (an :class:`ArchiveInput` as a dict) and return its record."""
        return process_item(
            self.cfg,
            ArchiveInput(**item),
            self.root,
            perceiver=self.perceiver,
            stream_id=self.stream_id,
            progress_cb=progress_cb,
            worker=self.name,
        )


@dataclass
class _Worker:
    proc: Any
    conn: Any
    name: str
    ready: bool = False
    item: ArchiveInput | None = None
    last_beat: float = 0.0


class ProcessEngine(Engine):
    """``archive.workers`` worker processes (spawned), each with its own perceiver.

    A worker that dies (killed, segfault) or makes no progress for ``runtime.stage_timeout_s``
    is replaced; the input it held is recorded as failed with the reason.
    """

    def __init__(self, cfg: VigilConfig, root: Path, stream_id: str) -> None:
        super().__init__(cfg, root, stream_id)
        self._args = self.worker_args(_torch_threads(cfg, self.n))
        self._started = 0

    def dispatch(self, todo: Sequence[ArchiveInput], hooks: RunHooks) -> None:
        queue = deque(todo)
        workers: list[_Worker] = []
        try:
            for _ in range(min(self.n, len(queue))):
                workers.append(self._spawn())
            while workers:
                if hooks.stopping():
                    queue.clear()
                for w in workers:
                    if w.ready and w.item is None and queue:
                        w.item = queue.popleft()
                        w.last_beat = time.monotonic()
                        w.conn.send(asdict(w.item))
                for w in list(workers):  # retire idle workers once nothing is left to hand out
                    if w.ready and w.item is None and not queue:
                        self._stop(w)
                        workers.remove(w)
                if not workers:
                    break
                self._receive(workers, hooks)
                self._replace_lost(workers, queue, hooks)
        finally:
            for w in workers:
                self._stop(w, kill=True)

    @staticmethod
    def _receive(workers: list[_Worker], hooks: RunHooks) -> None:
        """Handle what the workers sent in the next half second."""
        from multiprocessing.connection import wait

        for conn in wait([w.conn for w in workers], timeout=0.5):
            w = next(w for w in workers if w.conn is conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                continue  # died: handled by _replace_lost, by its exit code
            kind = msg[0]
            w.last_beat = time.monotonic()
            if kind == "ready":
                w.ready = True
            elif kind == "fatal":
                raise ArchiveError(msg[1])
            elif kind == "progress" and hooks.on_frames is not None and w.item is not None:
                hooks.on_frames(w.item.path, msg[1])
            elif kind == "result":
                w.item = None
                hooks.on_result(msg[1])

    def _replace_lost(
        self, workers: list[_Worker], queue: deque[ArchiveInput], hooks: RunHooks
    ) -> None:
        """Fail the input of a dead or stalled worker, and start another while work is left."""
        stall_s = self.cfg.runtime.stage_timeout_s
        now = time.monotonic()
        for w in list(workers):
            dead = not w.proc.is_alive()
            stalled = w.item is not None and now - w.last_beat > stall_s
            if not dead and not stalled:
                continue
            if stalled and not dead:
                w.proc.kill()
            w.proc.join(5.0)
            why = (
                f"stalled: no frame finished in {stall_s:.0f} s; worker killed"
                if stalled and not dead
                else f"worker process died (exit code {w.proc.exitcode})"
            )
            workers.remove(w)
            w.conn.close()
            if w.item is not None:
                hooks.on_result(failed_record(w.item, why, w.name))
            elif not w.ready:
                raise ArchiveError(f"worker {w.name} could not start: {why}")
            if queue:
                workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._started += 1
        name = f"worker-{self._started}"
        proc = ctx.Process(
            target=_worker_main,
            name=f"vigil-archive-{name}",
            args=(child, *self._args, name, logging.getLogger().getEffectiveLevel()),
            daemon=True,
        )
        proc.start()
        child.close()
        return _Worker(proc, parent, name, last_beat=time.monotonic())

    @staticmethod
    def _stop(w: _Worker, kill: bool = False) -> None:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
        w.proc.join(0.1 if kill else 10.0)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(5.0)
        w.conn.close()


def _worker_main(
    conn: Any,
    plain: dict[str, Any],
    root: str,
    stream_id: str,
    threads: int,
    name: str,
    log_level: int,
) -> None:
    """A local worker process: build the perceiver once, then process inputs until told."""
    from pipeline.graph.process import init_child_process

    init_child_process(name, log_level)
    parent = os.getppid()
    try:
        worker = ArchiveWorker(plain, root, stream_id, threads, name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("fatal", one_line(f"{type(exc).__name__}: {exc}")))
        return
    conn.send(("ready", worker.perceiver.description))
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent:
                return  # the coordinator is gone
            continue
        msg = conn.recv()
        if msg is None:
            return
        conn.send(("result", worker.process(msg, _Heartbeat(conn))))


class _Heartbeat:
    """A worker's progress callback: frames done so far, to the parent at most 4 times/s."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._last = 0.0

    def __call__(self, done: int, _events: int) -> None:
        now = time.monotonic()
        if now - self._last > 0.25:
            self.conn.send(("progress", done))
            self._last = now


def import_ray() -> Any:
    """``import ray``, or :class:`ArchiveError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ArchiveError(RAY_INSTALL_HINT) from None
    return ray


class RayArchiveWorker(ArchiveWorker):
    """The body of a Ray actor: holds a loaded perceiver and processes inputs with it."""

    def __init__(self, plain: dict[str, Any], root: str, stream_id: str, threads: int) -> None:
        logging.getLogger("libav").setLevel(logging.CRITICAL)
        super().__init__(
            plain, root, stream_id, threads, f"ray:{os.uname().nodename}:{os.getpid()}"
        )

    def describe(self) -> str:
        return f"{self.name} {self.perceiver.description}"


class RayEngine(Engine):
    """``archive.workers`` Ray actors, each holding its perceiver (a GPU each where CUDA is).

    Without ``archive.ray_address`` a local Ray instance is started with ``num_cpus=workers``
    and stopped at the end. With an address, the code of ``stream``/``models``/``pipeline``
    is shipped to the cluster, and inputs and ``--out`` must be on a filesystem every node sees
    at the same path.
    """

    def __init__(self, cfg: VigilConfig, root: Path, stream_id: str) -> None:
        super().__init__(cfg, root, stream_id)
        self.ray = import_ray()

    def dispatch(self, todo: Sequence[ArchiveInput], hooks: RunHooks) -> None:
        started = self._init()
        try:
            self._run(todo, hooks)
        finally:
            if started:
                self.ray.shutdown()

    def _init(self) -> bool:
        ray = self.ray
        if ray.is_initialized():
            return False
        archive = self.cfg.archive
        common = {"logging_level": logging.WARNING, "log_to_driver": False}
        if archive.ray_address:
            import models
            import pipeline
            import stream

            runtime_env = {"py_modules": [stream, models, pipeline]}
            ray.init(address=archive.ray_address, runtime_env=runtime_env, **common)
        else:
            repo = str(Path(__file__).resolve().parents[2])
            path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
            ray.init(
                num_cpus=max(int(self.n * archive.ray_cpus_per_worker), 1),
                include_dashboard=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
                **common,
            )
        return True

    def _actor_options(self) -> dict[str, Any]:
        import torch

        cpus = self.cfg.archive.ray_cpus_per_worker
        gpus_total = self.ray.cluster_resources().get("GPU", 0)
        if gpus_total <= 0 and torch.cuda.is_available():
            gpus_total = torch.cuda.device_count()
        opts: dict[str, Any] = {"num_cpus": cpus}
        if gpus_total > 0:
            opts["num_gpus"] = 1 if self.n <= gpus_total else gpus_total / self.n
        return opts

    def _run(self, todo: Sequence[ArchiveInput], hooks: RunHooks) -> None:
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        ray = self.ray
        threads = self.cfg.runtime.torch_threads or max(
            1, int(self.cfg.archive.ray_cpus_per_worker)
        )
        actor_cls = ray.remote(**self._actor_options())(RayArchiveWorker)
        args = self.worker_args(threads)

        def new_actors(k: int) -> list[Any]:
            actors = [actor_cls.remote(*args) for _ in range(k)]
            try:
                for desc in ray.get([a.describe.remote() for a in actors], timeout=600):
                    log.info("ray actor ready: %s", desc)
            except (RayActorError, RayTaskError, GetTimeoutError) as exc:
                raise ArchiveError(f"a Ray worker could not start: {one_line(str(exc))}") from None
            return actors

        queue = deque(todo)
        idle = new_actors(min(self.n, len(queue)))
        pending: dict[Any, tuple[Any, ArchiveInput]] = {}
        while queue or pending:
            if hooks.stopping():
                queue.clear()
            while idle and queue:
                actor, item = idle.pop(), queue.popleft()
                pending[actor.process.remote(asdict(item))] = (actor, item)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, item = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except RayActorError as exc:
                    record = failed_record(item, f"Ray worker died: {one_line(str(exc))}", "ray")
                    ray.kill(actor)
                    actor = new_actors(1)[0] if queue else None
                except RayTaskError as exc:
                    record = failed_record(item, one_line(str(exc)), "ray")
                if actor is not None:
                    idle.append(actor)
                hooks.on_result(record)
