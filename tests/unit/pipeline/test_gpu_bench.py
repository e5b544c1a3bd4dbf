"""scripts/bench_gpu.py's measuring parts: steady-state figures from timings.jsonl, drops from
events.jsonl, the generated config and clips (the whole script runs in the README's command)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import av
import pytest

from pipeline.config import VigilConfig

_spec = importlib.util.spec_from_file_location(
    "bench_gpu", Path(__file__).resolve().parents[3] / "scripts" / "bench_gpu.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut by a ki')
    return path


def test_timing_stats_skip_warmup_and_drain(tmp_path: Path) -> None:
    # 10 frames/s for 10 s, 50 ms capture-to-event; the first 2 s queued for 900 ms (model load).
    rows = []
    for i in range(100):
        t = 1000.0 + i * 0.1
        lat = 0.9 if i < 20 else 0.05
        rows.append({"stream": "cam1", "frame": i, "capture": t - lat, "decode": t - lat,
                     "publish": t})  # fmt: skip
    stats = bench.timing_stats(_write(tmp_path / "timings.jsonl", rows))
    assert stats["frames"] == 100
    assert stats["fps"] == pytest.approx(10.0, rel=0.02)
    assert stats["latency_ms"]["p50"] == pytest.approx(50.0, abs=0.5)
    assert stats["latency_ms"]["p99"] == pytest.approx(50.0, abs=0.5)  # warm-up left out


def test_timing_stats_without_output(tmp_path: Path) -> None:
    assert bench.timing_stats(tmp_path / "missing.jsonl")["fps"] is None
    one = _write(tmp_path / "one.jsonl", [{"capture": 1.0, "publish": 1.1}])
    assert bench.timing_stats(one) == {"fps": None, "frames": 1, "latency_ms": {}}


def test_dropped_stats_takes_the_last_total_per_stream(tmp_path: Path) -> None:
    events = [
        {"type": "frame.dropped", "stream": "cam1", "count": 3, "total": 3},
        {"type": "frame.dropped", "stream": "cam1", "count": 4, "total": 7},
        {"type": "frame.dropped", "stream": "cam2", "count": 2, "total": 2},
        {"type": "track.start", "stream": "cam1"},
    ]
    assert bench.dropped_stats(_write(tmp_path / "events.jsonl", events)) == {"dropped": 9}


def test_graph_config_is_a_valid_vigil_config(tmp_path: Path) -> None:
    args = argparse.Namespace(backend="eager", precision=None, batch_size=None, video=False,
                              budget_s=30.0, mode="live")  # fmt: skip
    base = bench.base_config(args, "cuda", bench.GPU_MODEL, "full", "fp16")
    clips = [tmp_path / "clip0.mp4", tmp_path / "clip1.mp4"]
    cfg = VigilConfig.model_validate(bench.graph_config(clips, 5, base, tmp_path, args))
    assert [s.stream_id for s in cfg.sources] == ["cam1", "cam2", "cam3", "cam4", "cam5"]
    assert cfg.sources[2].uri == str(clips[0]) and all(s.loop for s in cfg.sources)
    assert cfg.runtime.duration_s > 30.0  # a safety net: the bench stops it after 30 s of frames
    assert cfg.output.timings and not cfg.output.video
    assert cfg.backend.precision == "fp16" and cfg.segment.enabled and cfg.pose.enabled
    assert cfg.detect.batch_size == 5


def test_make_clips_writes_h264_of_the_asked_size(tmp_path: Path) -> None:
    clips = bench.make_clips(tmp_path, 2, 64, 48, 0.5, 10)
    assert len(clips) == 2
    with av.open(str(clips[1])) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("h264", 64, 48)
        assert sum(1 for _ in c.decode(s)) == 5


def test_variant_time_limit_cuts_a_stuck_variant_off() -> None:
    """Fault: a model variant that never finishes (a compile or engine build that hangs) must
    not take the whole device call: it is cut off and the bench goes on."""
    import time

    with pytest.raises(bench._VariantTimeout):
        with bench._time_limit(0.2):
            for _ in range(600):  # 60 s unless cut off
                time.sleep(0.1)
    with bench._time_limit(30):  # a variant that finishes in time is left alone
        pass
