"""Metrics of a run: counted in the stage processes, gathered by the supervisor, served in
Prometheus' text format (``/metrics``, see :mod:`pipeline.http`).

Each stage keeps a :class:`StageMetrics` (plain dicts: no lock, no dependency) and sends a
snapshot of it, cumulative since the process started, with its ``stats`` report about once a
second (:meth:`pipeline.graph.context.StageContext.tick`). The supervisor's
:class:`RunMetrics` keeps the newest snapshot of each stage and, when a stage dies, folds its
last snapshot into a base, so counters and histograms stay monotonic across restarts, as
Prometheus expects.

Every metric is declared in :data:`METRICS` (type, help, label names; histograms also their
buckets), so that stages and the supervisor agree and names follow Prometheus' naming guide:
prefix ``vigil_``, base units (seconds, bytes), ``_total`` on counters.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


#: Every metric vigil exports (names without the ``_total`` a counter gets in the text format).
METRICS: dict[str, MetricSpec] = {
    "vigil_frames_in": MetricSpec(
        "counter", "Frames decoded from the source (live: before any drop).", ("stream",)
    ),
    "vigil_frames_processed": MetricSpec(
        "counter", "Frames through the whole graph (annotated and published).", ("stream",)
    ),
    "vigil_frames_dropped": MetricSpec(
        "counter",
        "Frames not processed: live (latest frame wins), keyframe (before the first keyframe "
        "of a connection), restart (lost in a stage that crashed).",
        ("stream", "reason"),
    ),
    "vigil_reconnects": MetricSpec("counter", "Camera reconnection attempts.", ("stream",)),
    "vigil_queue_depth": MetricSpec(
        "gauge", "Frames of the stream in flight in the graph (ring slots taken).", ("stream",)
    ),
    "vigil_queue_capacity": MetricSpec(
        "gauge", "Most frames of the stream in flight at once (ring slots usable).", ("stream",)
    ),
    "vigil_stage_latency_seconds": MetricSpec(
        "histogram",
        "Time a frame spent in each stage, queueing included (decode: capture to decoded; "
        "infer, analytics, publish: from the previous stage's end; total: capture to published).",
        ("stage",),
        _LATENCY_BUCKETS,
    ),
    "vigil_inference_batch_size": MetricSpec(
        "histogram", "Frames per inference batch.", (), (1, 2, 4, 8, 16, 32, 64)
    ),
    "vigil_inference_seconds": MetricSpec(
        "histogram", "Wall time of one inference batch.", (), _LATENCY_BUCKETS
    ),
    "vigil_events_published": MetricSpec(
        "counter", "Events published (journaled first when a journal is on).", ("type",)
    ),
    "vigil_viewer_dropped": MetricSpec(
        "counter", "Events and frames the viewer's feed skipped (its queue was full).", ("kind",)
    ),
    "vigil_gpu_memory_bytes": MetricSpec(
        "gauge", "CUDA memory of the inference process.", ("device", "kind")
    ),
    "vigil_stage_restarts": MetricSpec(
        "counter", "Stage processes restarted by the supervisor.", ("stage", "reason")
    ),
    "vigil_stage_up": MetricSpec("gauge", "1 while the stage's process runs.", ("stage",)),
    "vigil_stage_last_report_age_seconds": MetricSpec(
        "gauge", "Seconds since the stage last reported (stalled when large).", ("stage",)
    ),
    "vigil_stream_up": MetricSpec(
        "gauge", "1 while the stream delivers frames (state streaming).", ("stream",)
    ),
    "vigil_stream_fps": MetricSpec(
        "gauge", "Frames per second through the graph over the last few seconds.", ("stream",)
    ),
    "vigil_ready": MetricSpec("gauge", "1 when /readyz says ready.", ()),
    "vigil_feed_server_down": MetricSpec(
        "gauge", "1 when the publish stage found its event feed thread dead (restarting it).", ()
    ),
    "vigil_feed_server_restarts": MetricSpec(
        "counter", "Event feed threads (events, heartbeats, replay) restarted.", ()
    ),
    "vigil_downstream_blocked": MetricSpec(
        "counter",
        "Times a source waited runtime.blocked_warn_s for a free ring slot (downstream blocked).",
        ("stream",),
    ),
    "vigil_frame_feed_frames": MetricSpec(
        "gauge", "Frames of the JPEG frame feed, sent or dropped, at its end.", ("outcome",)
    ),
}

Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: dict[str, Any]) -> Key:
    spec = METRICS.get(name)
    if spec is None:
        raise KeyError(f"unknown metric {name!r}; declare it in pipeline.metrics.METRICS")
    if set(labels) != set(spec.labels):
        raise ValueError(f"{name} takes labels {spec.labels}, got {sorted(labels)}")
    return name, tuple((k, str(labels[k])) for k in spec.labels)


class StageMetrics:
    """A stage process's own counters, gauges and histograms (single-threaded use)."""

    def __init__(self) -> None:
        self.counters: dict[Key, float] = {}
        self.gauges: dict[Key, float] = {}
        self.histograms: dict[Key, list[Any]] = {}  # [bucket counts..., +Inf], sum

    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        key = _key(name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def set_total(self, name: str, value: float, **labels: Any) -> None:
        """A counter whose running total the stage already keeps."""
        self.counters[_key(name, labels)] = float(value)

    def set(self, name: str, value: float, **labels: Any) -> None:
        self.gauges[_key(name, labels)] = float(value)

    def observe(self, name: str, value: float, **labels: Any) -> None:
        key = _key(name, labels)
        buckets = METRICS[name].buckets
        hist = self.histograms.get(key)
        if hist is None:
            hist = self.histograms[key] = [[0] * (len(buckets) + 1), 0.0]
        hist[0][bisect.bisect_left(buckets, value)] += 1
        hist[1] += float(value)

    def snapshot(self) -> dict[str, list[Any]]:
        """JSON-able, cumulative since the process started."""
        return {
            "counters": [[n, dict(lb), v] for (n, lb), v in self.counters.items()],
            "gauges": [[n, dict(lb), v] for (n, lb), v in self.gauges.items()],
            "histograms": [
                [n, dict(lb), list(h[0]), h[1]] for (n, lb), h in self.histograms.items()
            ],
        }


class RunMetrics:
    """The supervisor's view: newest snapshot per stage, plus what dead incarnations counted.

    Thread-safe: the supervisor's loop updates it, the HTTP thread reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, StageMetrics] = {}
        self._base = StageMetrics()  # counters and histograms of stage processes that died
        self.own = StageMetrics()  # the supervisor's own: restarts, stage and stream gauges

    def update(self, stage: str, snapshot: dict[str, list[Any]]) -> None:
        metrics = StageMetrics()
        for name, labels, value in snapshot.get("counters", []):
            metrics.counters[_key(name, labels)] = float(value)
        for name, labels, value in snapshot.get("gauges", []):
            metrics.gauges[_key(name, labels)] = float(value)
        for name, labels, counts, total in snapshot.get("histograms", []):
            metrics.histograms[_key(name, labels)] = [list(counts), float(total)]
        with self._lock:
            self._current[stage] = metrics

    def stage_gone(self, stage: str) -> None:
        """``stage``'s process ended: keep its counts, forget its gauges."""
        with self._lock:
            dead = self._current.pop(stage, None)
            if dead is None:
                return
            for key, value in dead.counters.items():
                self._base.counters[key] = self._base.counters.get(key, 0.0) + value
            for key, (counts, total) in dead.histograms.items():
                base = self._base.histograms.setdefault(key, [[0] * len(counts), 0.0])
                base[0] = [a + b for a, b in zip(base[0], counts)]
                base[1] += total

    def value(self, name: str, **labels: Any) -> float:
        """A counter's total or a gauge's value, summed over the label values not given (e.g.
        every ``reason`` of ``vigil_frames_dropped`` for one ``stream``); 0 when never reported."""
        spec = METRICS.get(name)
        if spec is None or not set(labels) <= set(spec.labels):
            _key(name, labels)  # raises, naming the metric or its labels
        wanted = {(k, str(v)) for k, v in labels.items()}
        total = 0.0
        with self._lock:
            for part in (self._base, self.own, *self._current.values()):
                for values in (part.counters, part.gauges):
                    for (n, lb), v in values.items():
                        if n == name and wanted <= set(lb):
                            total += v
        return total

    def merged(self) -> StageMetrics:
        """Everything summed: bases, the live stages and the supervisor's own."""
        out = StageMetrics()
        with self._lock:
            parts = [self._base, self.own, *self._current.values()]
            for part in parts:
                for key, value in part.counters.items():
                    out.counters[key] = out.counters.get(key, 0.0) + value
                for key, value in part.gauges.items():
                    out.gauges[key] = out.gauges.get(key, 0.0) + value
                for key, (counts, total) in part.histograms.items():
                    hist = out.histograms.setdefault(key, [[0] * len(counts), 0.0])
                    hist[0] = [a + b for a, b in zip(hist[0], counts)]
                    hist[1] += total
        _floor_frames_in(out.counters)
        return out

    # --- prometheus_client custom collector --------------------------------------------

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        merged = self.merged()
        for name, spec in METRICS.items():
            labels = list(spec.labels)
            if spec.kind == "counter":
                family = CounterMetricFamily(name, spec.help, labels=labels)
                for (n, lb), value in sorted(merged.counters.items()):
                    if n == name:
                        family.add_metric([v for _, v in lb], value)
            elif spec.kind == "gauge":
                family = GaugeMetricFamily(name, spec.help, labels=labels)
                for (n, lb), value in sorted(merged.gauges.items()):
                    if n == name:
                        family.add_metric([v for _, v in lb], value)
            else:
                family = HistogramMetricFamily(name, spec.help, labels=labels)
                for (n, lb), (counts, total) in sorted(merged.histograms.items()):
                    if n != name:
                        continue
                    cumulative, running = [], 0
                    for bound, count in zip([*spec.buckets, float("inf")], counts):
                        running += count
                        cumulative.append((_le(bound), running))
                    family.add_metric([v for _, v in lb], cumulative, total)
            yield family

    def registry(self) -> Any:
        """A prometheus_client registry with these metrics and the supervisor's process
        metrics (``process_*``: memory, CPU, open files of the supervisor)."""
        from prometheus_client import CollectorRegistry, ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        ProcessCollector(registry=registry)
        return registry


def _floor_frames_in(counters: dict[Key, float]) -> None:
    """Snapshots come from different processes at different moments, so a source's report can
    be up to a second older than the publish stage's: its ``vigil_frames_in`` would read below
    the frames already processed. Every processed frame, and every frame dropped after decoding
    (live, restart), came in, so that sum is a true lower bound; frames in is raised to it. Both
    are monotonic, so the result is too."""
    for (name, labels), value in list(counters.items()):
        if name != "vigil_frames_in":
            continue
        stream = dict(labels)["stream"]
        floor = counters.get(_key("vigil_frames_processed", {"stream": stream}), 0.0)
        for reason in ("live", "restart"):
            floor += counters.get(
                _key("vigil_frames_dropped", {"stream": stream, "reason": reason}), 0.0
            )
        counters[name, labels] = max(value, floor)


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)
