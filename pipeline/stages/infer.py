"""The infer stage: batch frames across streams and run the frame model on them (detection
with class-aware NMS, and poses and person masks where the model gives them), with
:func:`pipeline.frames.perceive_batch`. It also keeps the run's account of streams
(:class:`StreamLedger`): when to exit, and how to close the chain in a dynamic run.
"""

from __future__ import annotations

import time
from typing import Any

from models.results import FrameResult
from pipeline.config import VigilConfig
from pipeline.config_runtime import RuntimeConfig
from pipeline.config_sections import DetectConfig
from pipeline.frames import perceive_batch
from pipeline.graph.context import StageContext
from pipeline.graph.stage import Stage
from pipeline.protocol import POLL_MS, Kind, dynamic_budget, eos
from stream.transport import RingReader


class StreamLedger:
    """The infer stage's account of streams: when to exit, and how to close the chain.

    Args:
        n_sources: a static run's source count (exit after that many EOS), or None for a
            dynamic run (exit on ``shutdown`` once its streams have ended, or after
            ``drain_timeout_s`` without their EOS).
        budget: EOS the next stages wait for in a dynamic run (:func:`dynamic_budget`).
    """

    def __init__(
        self, n_sources: int | None, budget: int = 0, drain_timeout_s: float = 30.0
    ) -> None:
        self.n_sources = n_sources
        self.budget = budget
        self.drain_timeout_s = drain_timeout_s
        self.opened: set[str] = set()
        self.ended: set[str] = set()
        self.eos_sent = 0
        self.expect: set[str] | None = None
        self._deadline = float("inf")

    @property
    def poll_ms(self) -> int | None:
        """How long to block on input: forever in a static run, briefly in a dynamic one."""
        return None if self.n_sources is not None else POLL_MS

    def see(self, header: dict[str, Any]) -> None:
        kind = header["kind"]
        if kind == Kind.OPEN:
            self.opened.add(header["stream_id"])
        elif kind == Kind.EOS:
            self.ended.add(header["stream_id"])
            self.eos_sent += 1
        elif kind == Kind.SHUTDOWN:
            self.expect = set(header.get("streams", [])) | self.opened
            self._deadline = time.monotonic() + self.drain_timeout_s

    @property
    def done(self) -> bool:
        """All streams ended (static), or shut down and drained or timed out (dynamic)."""
        if self.n_sources is not None:
            return self.eos_sent >= self.n_sources
        if self.expect is None:
            return False
        return self.expect <= self.ended or time.monotonic() > self._deadline

    def closing_messages(self) -> list[dict[str, Any]]:
        """EOS for streams that never sent one (drain timeout), then fillers up to the budget."""
        if self.n_sources is not None:
            return []
        lost = "no end of stream before shutdown"
        msgs = [eos(sid, "lost", 0, lost) for sid in sorted((self.expect or set()) - self.ended)]
        fill = max(self.budget - self.eos_sent - len(msgs), 1)
        return msgs + [eos(None, "shutdown", 0, "")] * fill


class InferStage(Stage):
    """Batch frames (across streams) and run the frame model on each batch.

    Static runs end after the EOS of each of ``n_sources``; dynamic runs (``n_sources`` None: a
    control endpoint adds and removes streams) end on the supervisor's ``shutdown``.
    """

    def __init__(
        self,
        ctx: StageContext,
        cfg: VigilConfig,
        detect: DetectConfig,
        runtime: RuntimeConfig,
        n_sources: int | None,
    ) -> None:
        super().__init__(ctx)
        self.cfg, self.detect, self.runtime = cfg, detect, runtime
        self.streams = StreamLedger(
            n_sources, budget=dynamic_budget(runtime), drain_timeout_s=runtime.drain_timeout_s
        )
        self.pending: list[dict[str, Any]] = []
        self.reader: RingReader | None = None

    @classmethod
    def from_config(cls, ctx: StageContext, cfg: VigilConfig, n_sources: int | None) -> InferStage:
        return cls(ctx, cfg, cfg.detect, cfg.runtime, n_sources)

    def setup(self) -> None:
        import torch

        from models.perception.base import resolve_device
        from models.perception.build import build_perceiver_from_config

        ctx = self.ctx
        if self.runtime.torch_threads:
            torch.set_num_threads(self.runtime.torch_threads)
        device = resolve_device(self.detect.device)
        # Bind the input before the (slow) model load: a source that ends meanwhile must find a
        # peer for its frames and EOS, or they would die with it after its linger time.
        self.inp = ctx.pull(ctx.endpoints.infer)
        ctx.maybe_slow_load()
        self.perceiver = build_perceiver_from_config(self.cfg, device=device)
        what = f"{self.detect.model} on {device}: {self.perceiver.description}"
        ctx.report(Kind.INFO, detector=what)
        if device.startswith("cuda"):
            ctx.stats_hook = lambda metrics: gpu_memory(metrics, device)
        self.out = ctx.push(ctx.endpoints.analytics)
        self.reader = RingReader()

    @property
    def finished(self) -> bool:
        return self.streams.done

    @property
    def poll_ms(self) -> int | None:
        return int(self.detect.batch_wait_ms) if self.pending else self.streams.poll_ms

    def on_tick(self) -> None:
        self.flush()

    def on_message(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        if header["kind"] == Kind.FRAME:
            self.ctx.maybe_fault(header["result"]["frame_idx"])
            self.pending.append(header)
            if len(self.pending) >= self.detect.batch_size:
                self.flush()
            return
        self.flush()
        self.streams.see(header)
        if header["kind"] != Kind.SHUTDOWN:
            self.ctx.send(self.out, header)

    def on_end(self) -> None:
        self.flush()
        for header in self.streams.closing_messages():
            self.ctx.send(self.out, header)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def flush(self) -> None:
        """Run the model on the frames pending and send them on."""
        pending, ctx = self.pending, self.ctx
        if not pending:
            return
        frames = [self.reader.view(h["addr"]) for h in pending]
        results = [FrameResult.from_wire(h["result"], {}) for h in pending]
        started = time.perf_counter()
        perceive_batch(self.perceiver, frames, results)
        ctx.metrics.observe("vigil_inference_seconds", time.perf_counter() - started)
        ctx.metrics.observe("vigil_inference_batch_size", len(pending))
        now = time.time()
        for header, result in zip(pending, results):
            result.stage_ts["infer"] = now
            header["result"], arrays = result.to_wire()
            ctx.send(self.out, header, arrays)
        pending.clear()


def gpu_memory(metrics: Any, device: str) -> None:
    """CUDA memory allocated and reserved by this process, as gauges."""
    import torch

    for kind, value in (
        ("allocated", torch.cuda.memory_allocated(device)),
        ("reserved", torch.cuda.memory_reserved(device)),
    ):
        metrics.set("vigil_gpu_memory_bytes", value, device=device, kind=kind)
