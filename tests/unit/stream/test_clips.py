"""Alert clips (stream/clips.py): pre-roll, one clip for overlapping alerts, complete before
its event, drop policy, retention, identical reruns."""

from __future__ import annotations

import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import stream.clips as clips_mod
from pipeline.analytics import ClipPlanner
from stream.clips import ClipRecorder, apply_retention

FPS = 10.0
TB = Fraction(1, 10)


def frame_rgb(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, : (i * 3) % 64] = (i * 7) % 255  # changes every frame
    return img


def alert(frame: int, clip: str, start: float, end: float, track: int = 1) -> dict:
    return {
        "type": "alert",
        "stream": "cam1",
        "frame": frame,
        "pts": frame / FPS,
        "name": "fall",
        "track": track,
        "clip": clip,
        "snapshot": f"clips/cam1/snap-{frame}-{track}.jpg",
        "clip_start": start,
        "clip_end": end,
    }


def recorder(tmp_path: Path, **kw) -> ClipRecorder:
    rec = ClipRecorder(tmp_path, max_pre_s=1.0, deterministic=kw.pop("deterministic", True), **kw)
    rec.open_stream("cam1", 64, 48, FPS, TB)
    return rec


def run(rec: ClipRecorder, n: int, alerts: dict[int, dict]) -> list[tuple[int, dict]]:
    """Feed frames 0..n-1 (alerts just before their frame, as the publish stage sees them)."""
    out = []
    for i in range(n):
        if i in alerts:
            rec.alert(alerts[i])
        out += [(i, f) for f in rec.frame("cam1", frame_rgb(i), i / FPS, i, i)]
    return out


def decoded_pts(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.pts * f.time_base), 3) for f in c.decode(video=0)]


def test_pre_roll_is_in_the_clip(tmp_path: Path) -> None:
    """Fault: a clip that starts at the trigger (no pre-roll buffer) misses what led to it."""
    rec = recorder(tmp_path)
    try:
        done = run(rec, 40, {20: alert(20, "clips/cam1/a.mp4", 1.0, 2.5)})
    finally:
        rec.close()
    assert [i for i, _ in done] == [35]  # announced settle_s (1 s) after the clip's end
    fields = done[0][1]
    assert fields["status"] == "written" and fields["frames"] == 16  # 10 before, 1, 5 after
    assert (fields["clip_start"], fields["clip_end"]) == (1.0, 2.5)
    assert decoded_pts(tmp_path / fields["clip"]) == [round(k / FPS, 3) for k in range(16)]
    assert (tmp_path / fields["snapshot"]).stat().st_size > 0
    assert not list(tmp_path.rglob(".*partial*"))


def test_overlapping_alerts_extend_one_clip(tmp_path: Path) -> None:
    planner = ClipPlanner("cam1")

    class R:  # the FrameResult fields the planner reads
        def __init__(self, i: int) -> None:
            self.pts, self.capture_ts = i / FPS, 1_800_000_000 + i / FPS

    cfg = {"pre_s": 1.0, "post_s": 0.5}
    first = planner.plan({"name": "fall", "track": 1}, cfg, R(20))
    second = planner.plan({"name": "fall", "track": 2}, cfg, R(24))
    third = planner.plan({"name": "fall", "track": 1}, cfg, R(60))
    assert first["clip"] == second["clip"] != third["clip"]
    assert (second["clip_start"], second["clip_end"]) == (1.0, 2.9)
    rec = recorder(tmp_path)
    try:
        a1, a2 = alert(20, **_window(first)), alert(24, track=2, **_window(second))
        done = run(rec, 45, {20: a1, 24: a2})
    finally:
        rec.close()
    assert len(done) == 1 and done[0][1]["frames"] == 20  # frames 10..29
    assert [a["track"] for a in done[0][1]["alerts"]] == [1, 2]
    assert len(list((tmp_path / "clips").rglob("*.mp4"))) == 1
    assert len(list((tmp_path / "clips").rglob("*.jpg"))) == 2


def _window(plan: dict) -> dict:
    return {"clip": plan["clip"], "start": plan["clip_start"], "end": plan["clip_end"]}


def test_clip_is_complete_before_its_event(tmp_path: Path, monkeypatch) -> None:
    """Fault: announcing a clip the (slow) writer has not finished points users at nothing."""
    real = clips_mod.encode_mp4

    def slow(*args, **kw):
        time.sleep(1.0)
        real(*args, **kw)

    monkeypatch.setattr(clips_mod, "encode_mp4", slow)
    rec = recorder(tmp_path, settle_s=0.0)
    try:
        done = run(rec, 30, {20: alert(20, "clips/cam1/a.mp4", 1.0, 2.2)})
        assert [i for i, _ in done] == [22]
        assert (tmp_path / "clips/cam1/a.mp4").is_file()  # renamed into place already
        assert decoded_pts(tmp_path / "clips/cam1/a.mp4")[-1] == 1.2
    finally:
        rec.close()


def test_live_full_queue_drops_newest_and_counts(tmp_path: Path, monkeypatch) -> None:
    """Fault: a slow clip writer must never make the live frame path wait."""
    gate = threading.Event()
    real = clips_mod.encode_mp4

    def stuck(*args, **kw):
        gate.wait(30)
        real(*args, **kw)

    monkeypatch.setattr(clips_mod, "encode_mp4", stuck)
    rec = recorder(tmp_path, deterministic=False, queue_size=1)
    try:
        alerts = {i: alert(i, f"clips/cam1/c{i}.mp4", i / FPS, i / FPS) for i in (12, 14, 16, 18)}
        done = run(rec, 13, alerts)
        deadline = time.monotonic() + 30
        while not rec._queue.empty() and time.monotonic() < deadline:  # the writer took it
            time.sleep(0.01)
        for i in range(13, 20):  # returns although the writer is stuck
            if i in alerts:
                rec.alert(alerts[i])
            done += [(i, f) for f in rec.frame("cam1", frame_rgb(i), i / FPS, i, i)]
        # One in the writer, one queued, two dropped: announced at once as dropped.
        assert rec.dropped == 2
        assert sorted(f["status"] for _, f in done) == ["dropped", "dropped"]
        gate.set()
        deadline = time.monotonic() + 60
        written: list = []
        while len(written) < 2 and time.monotonic() < deadline:
            written += rec.poll()
            time.sleep(0.05)
        assert sorted(f["status"] for _, f in written) == ["written", "written"]
    finally:
        gate.set()
        rec.close()


def test_reruns_write_identical_clips(tmp_path: Path) -> None:
    outs = []
    for k in range(2):
        rec = recorder(tmp_path / str(k))
        try:
            run(rec, 40, {20: alert(20, "clips/cam1/a.mp4", 1.0, 2.5)})
        finally:
            rec.close()
        outs.append((tmp_path / str(k) / "clips/cam1/a.mp4").read_bytes())
    assert outs[0] == outs[1]


def test_retention_by_age_and_total_size(tmp_path: Path) -> None:
    folder = tmp_path / "clips" / "cam1"
    folder.mkdir(parents=True)
    now = time.time()
    for name, age, size in (("old.mp4", 100, 10), ("a.mp4", 30, 40), ("b.jpg", 20, 40),
                            ("c.mp4", 10, 40), (".x.partial.mp4", 500, 10)):  # fmt: skip
        p = folder / name
        p.write_bytes(b"x" * size)
        os.utime(p, (now - age, now - age))
    deleted = apply_retention(tmp_path / "clips", max_age_s=60, max_bytes=90)
    assert sorted(p.name for p in deleted) == ["a.mp4", "old.mp4"]
    assert sorted(p.name for p in folder.iterdir()) == [".x.partial.mp4", "b.jpg", "c.mp4"]


@pytest.mark.parametrize("deterministic", [True, False])
def test_stream_end_closes_and_announces_open_clip(tmp_path: Path, deterministic: bool) -> None:
    rec = recorder(tmp_path, deterministic=deterministic)
    try:
        run(rec, 25, {20: alert(20, "clips/cam1/a.mp4", 1.0, 5.0)})
        done = rec.finish_stream("cam1")
        deadline = time.monotonic() + 60
        while not deterministic and not done and time.monotonic() < deadline:
            done = [f for _, f in rec.poll()]  # live: announced once written, never waited for
            time.sleep(0.05)
        (fields,) = done
    finally:
        rec.close()
    assert fields["status"] == "written" and fields["clip_end"] == 2.4 and fields["frames"] == 15


def test_re_firing_alert_opens_a_new_clip_after_max_s() -> None:
    """Fault: an alert that keeps re-firing extended one clip for ever (memory without end)."""
    planner = ClipPlanner("cam1")

    class R:
        def __init__(self, i: int) -> None:
            self.pts, self.capture_ts = i / FPS, 1_800_000_000 + i / FPS

    cfg = {"pre_s": 1.0, "post_s": 1.0, "max_s": 4.0}
    plans = [planner.plan({"name": "fall", "track": 1}, cfg, R(i)) for i in range(20, 80, 5)]
    assert len({p["clip"] for p in plans}) > 1
    for p in plans:
        assert p["clip_end"] - p["clip_start"] <= 4.0 + 1e-6
    assert plans[0]["clip"] == plans[1]["clip"]  # overlapping alerts still share a clip


def test_open_clip_holds_at_most_the_byte_cap(tmp_path: Path) -> None:
    """Fault: every frame of an open clip was kept in memory, with no cap (only pre-roll had)."""
    per_frame = frame_rgb(0).nbytes
    got = []
    for rerun in ("a", "b"):
        out = tmp_path / rerun
        rec = recorder(out, buffer_bytes=12 * per_frame)
        peak = 0
        real_frame = rec.frame

        def frame(*args, rec=rec, real_frame=real_frame):
            nonlocal peak
            done = real_frame(*args)
            job = rec._streams["cam1"].job
            peak = max(peak, sum(f.rgb.nbytes for f in job.frames) if job else 0)
            return done

        rec.frame = frame
        try:
            done = run(rec, 55, {20: alert(20, "clips/cam1/a.mp4", 1.0, 4.0)})
        finally:
            rec.close()
        assert peak <= 12 * per_frame
        assert [i for i, _ in done] == [50]  # still announced after its planned end
        fields = done[0][1]
        assert fields["status"] == "written" and fields["frames"] == 12  # frames 10..21
        assert decoded_pts(out / fields["clip"]) == [round(k / FPS, 3) for k in range(12)]
        got.append((fields, (out / fields["clip"]).read_bytes()))
    assert got[0] == got[1]  # batch reruns cut the clip at the same frame
