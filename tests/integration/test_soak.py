"""scripts/soak.py: the slope maths on known series, and one short real soak of a looping file."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
assert _spec is not None and _spec.loader is not None
soak = importlib.util.module_from_spec(_spec)
sys.modules["soak"] = soak  # dataclasses look their module up
_spec.loader.exec_module(soak)


def test_least_squares_slope_recovers_a_known_line():
    rng = random.Random(0)
    ts = [float(t) for t in range(0, 600, 5)]
    ys = [100.0 + 0.02 * t + rng.uniform(-0.5, 0.5) for t in ts]
    assert soak.least_squares_slope(ts, ys) == pytest.approx(0.02, abs=5e-4)
    assert soak.least_squares_slope([0.0, 1.0, 2.0], [5.0, 5.0, 5.0]) == 0.0
    assert soak.least_squares_slope([1.0, 3.0], [2.0, -2.0]) == pytest.approx(-2.0)


def test_least_squares_slope_needs_two_distinct_times():
    assert soak.least_squares_slope([], []) is None
    assert soak.least_squares_slope([3.0], [1.0]) is None
    assert soak.least_squares_slope([3.0, 3.0], [1.0, 2.0]) is None
    with pytest.raises(ValueError, match="2 times but 1 values"):
        soak.least_squares_slope([1.0, 2.0], [1.0])


def _series() -> list:
    """Model loading until 60 s (RSS climbing fast), then a 1 MB/min leak, then the drain."""
    samples = []
    for t in range(0, 660, 10):
        if t < 60:
            rss, children = 50.0 + 20.0 * t, t // 20
        elif t <= 600:
            rss, children = 1500.0 + (t - 60) / 60.0, 5
        else:
            rss, children = 300.0, 1
        samples.append(soak.Sample(float(t), rss, 100 + (t >= 60) * 20, 40, children))
    return samples


def test_summary_fits_slopes_after_the_warmup_and_before_the_drain():
    samples = _series()
    stats = soak.summarize(samples, warmup_s=60, end_s=600)
    assert stats["rss_mb"]["slope_per_h"] == pytest.approx(60.0)  # 1 MB/min
    assert stats["fds"]["slope_per_h"] == pytest.approx(0.0)
    assert stats["rss_mb"]["first"] == 50.0 and stats["rss_mb"]["last"] == 300.0
    assert stats["rss_mb"]["min"] == 50.0 and stats["rss_mb"]["max"] == pytest.approx(1509.0)
    assert stats["children"]["max"] == 5
    # Without the window the warm-up and the drain would dominate the fit.
    assert soak.summarize(samples, 0)["rss_mb"]["slope_per_h"] != pytest.approx(60.0, abs=10)
    table = soak.format_table(stats)
    assert table.splitlines()[0].split() == ["metric", "first", "last", "min", "max", "slope/h"]
    assert [row.split()[0] for row in table.splitlines()[1:]] == list(soak.METRICS)


def test_result_line_has_the_documented_fields():
    line = soak.result_line(_series(), 60, 10, frames=1234, exit_code=0)
    for key in (
        "minutes", "samples", "rss_mb_start", "rss_mb_end", "rss_slope_mb_per_h",
        "fds_slope_per_h", "threads_slope_per_h", "frames", "exit_code",
    ):  # fmt: skip
        assert key in line, key
    assert line["minutes"] == 10 and line["samples"] == 66 and line["samples_fit"] == 55
    assert line["rss_mb_start"] == 1500.0 and line["rss_mb_end"] == 300.0
    assert line["rss_slope_mb_per_h"] == pytest.approx(60.0)
    assert line["threads_slope_per_h"] == 0.0 and line["frames"] == 1234
    json.dumps(line)
    empty = soak.result_line([], 60, 1, frames=None, exit_code=1)
    assert empty["samples"] == 0 and empty["rss_slope_mb_per_h"] is None


def test_frames_are_read_from_vigils_closing_line():
    text = "x INFO y\nvigil: 812 frames in 60.2 s (13.5 frames/s), 40 events\nvigil: wrote a\n"
    assert soak.frames_reported(text) == 812
    assert soak.frames_reported("vigil: error: no such file: a.mp4\n") is None


def test_vigil_command_passes_the_soak_flags():
    args = soak.parse_args(
        ["--minutes", "2", "--http", "127.0.0.1:8089", "--model", "simnet", "--", "--device", "cpu"]
    )
    cmd = soak.vigil_command(args, Path("v.mp4"), Path("out"))
    assert cmd[1:5] == ["-m", "pipeline.cli", "process", "v.mp4"]
    joined = " ".join(cmd)
    for part in ("--loop", "--mode live", "--duration 120", "--no-video", "--out out"):
        assert part in joined
    assert "--http 127.0.0.1:8089" in joined and "--model simnet" in joined
    assert cmd[-2:] == ["--device", "cpu"]


@pytest.mark.slow
def test_soak_runs_vigil_on_a_looping_file_and_prints_the_json_line(tmp_path: Path):
    from stream.sim.sample import write_sample_video
    from stream.sim.scenes import make_scene

    video = tmp_path / "scene.mp4"
    write_sample_video(
        make_scene(seed=1, width=320, height=192, fps=10.0, duration_s=2.0, n_people=2), video
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--minutes",
            "0.75",  # the model load is in it: time enough for seconds of frames
            "--interval",
            "2",
            "--warmup-s",
            "5",
            "--input",
            str(video),
            "--out",
            str(out),
            "--",
            "--model",
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            "--weights",
            "none",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "VIGIL__DETECT__MAX_DETECTIONS": "8"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["exit_code"] == 0 and line["minutes"] == 0.75 and not line["interrupted"]
    assert line["samples"] >= 10 and line["samples_fit"] >= 5
    assert line["rss_mb_start"] > 50 and line["rss_mb_end"] > 0
    for key in ("rss_slope_mb_per_h", "fds_slope_per_h", "threads_slope_per_h"):
        assert isinstance(line[key], float), key
    assert line["frames"] and line["frames"] > 0
    assert "slope/h" in proc.stdout and "rss_mb" in proc.stdout
    # The 20-frame file was played over and over: one stream, its clock always going forward.
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    offline = [e for e in events if e["type"] == "stream.offline"]
    assert len(offline) == 1 and offline[0]["reason"] == "stopped"
    assert offline[0]["frames_read"] > 20
    stamped = [(e["frame"], e["pts"]) for e in events if e["frame"] is not None]
    assert all(b >= a for a, b in zip(stamped, stamped[1:]))
    assert max(p for _, p in stamped) > 2.0
