"""Operating vigil (issue #9): /metrics, /healthz, /readyz and stage restarts, on a real
`vigil process --http` run of a looping synthetic video in live mode (see live_vigil.py).

- /metrics parses as Prometheus text and has the families the issue lists, with live values;
- /readyz turns 503, naming the stalled source, when the source hangs (fault injection), and
  the run then fails on the hung stage (sources are not restarted);
- a stage SIGKILLed from outside is restarted with backoff: /api/status and /metrics count the
  restart, a `stage.restart` event is published (seq stays gap-free), frames flow again and
  /readyz is ready again; SIGTERM then still exits 0.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from models.simnet.infer import DEFAULT_WEIGHTS
from pipeline.metrics import METRICS, RunMetrics, StageMetrics
from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene
from tests.support.live_vigil import LiveVigil, log_tail


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    video = tmp_path_factory.mktemp("operate") / "scene.mp4"
    write_sample_video(make_scene(seed=5, duration_s=4.0, n_people=2), video)
    return video


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(sample name, sorted labels): value}, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


# --- unit: the metrics model -------------------------------------------------------------


def test_counters_stay_monotonic_across_a_restart_and_gauges_do_not_linger() -> None:
    run = RunMetrics()
    first = StageMetrics()
    first.inc("vigil_frames_processed", 5, stream="cam1")
    first.observe("vigil_inference_batch_size", 3)
    first.set("vigil_queue_depth", 2, stream="cam1")
    run.update("publish", first.snapshot())
    run.stage_gone("publish")  # crashed; the new process counts from zero
    second = StageMetrics()
    second.inc("vigil_frames_processed", 2, stream="cam1")
    run.update("publish", second.snapshot())
    assert run.value("vigil_frames_processed", stream="cam1") == 7
    assert run.value("vigil_queue_depth", stream="cam1") == 0

    from prometheus_client import generate_latest

    parsed = samples(generate_latest(run.registry()).decode())
    assert value(parsed, "vigil_frames_processed_total", stream="cam1") == 7
    assert value(parsed, "vigil_inference_batch_size_bucket", le="2.0") == 0
    assert value(parsed, "vigil_inference_batch_size_bucket", le="4.0") == 1
    assert value(parsed, "vigil_inference_batch_size_count") == 1


def test_value_sums_over_the_labels_not_given() -> None:
    run = RunMetrics()
    source = StageMetrics()
    source.set_total("vigil_frames_dropped", 3, stream="cam1", reason="live")
    source.set_total("vigil_frames_dropped", 2, stream="cam1", reason="restart")
    source.set_total("vigil_frames_dropped", 7, stream="cam2", reason="live")
    run.update("source:cam1", source.snapshot())
    assert run.value("vigil_frames_dropped", stream="cam1") == 5
    assert run.value("vigil_frames_dropped", stream="cam1", reason="live") == 3
    assert run.value("vigil_frames_dropped") == 12
    with pytest.raises(ValueError, match="labels"):
        run.value("vigil_frames_dropped", camera="cam1")


def test_frames_in_never_reads_below_what_later_stages_accounted_for() -> None:
    # the source reported before the publish stage's newer report: raw 16 in, 18 processed
    run = RunMetrics()
    source = StageMetrics()
    source.set_total("vigil_frames_in", 16, stream="cam1")
    source.set_total("vigil_frames_dropped", 6, stream="cam1", reason="live")
    source.set_total("vigil_frames_dropped", 4, stream="cam1", reason="keyframe")  # never in
    run.update("source:cam1", source.snapshot())
    publish = StageMetrics()
    publish.inc("vigil_frames_processed", 18, stream="cam1")
    run.update("publish", publish.snapshot())
    merged = run.merged().counters
    assert merged["vigil_frames_in", (("stream", "cam1"),)] == 24  # 18 processed + 6 dropped
    source.set_total("vigil_frames_in", 40, stream="cam1")  # the source's next report
    run.update("source:cam1", source.snapshot())
    assert run.merged().counters["vigil_frames_in", (("stream", "cam1"),)] == 40


def test_restarted_publish_stage_catches_events_jsonl_up_with_the_journal(tmp_path: Path):
    from pipeline.stages.publish_sinks import catch_up_jsonl
    from stream import events as ev
    from stream.journal import EventJournal

    jsonl = tmp_path / "events.jsonl"
    with EventJournal(tmp_path / "j.sqlite") as journal:
        lines = [
            journal.append(
                ev.make_event("track.start", "a", frame=i, pts=i, ts=0.0, track=i, label="person")
            )  # fmt: skip
            for i in range(4)
        ]
        # killed after journaling 3 and 4, halfway through writing 3 to the file
        jsonl.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
        catch_up_jsonl(jsonl, journal)
        assert jsonl.read_text() == "".join(line + "\n" for line in lines)
        catch_up_jsonl(jsonl, journal)  # nothing to do
        assert jsonl.read_text().count("\n") == 4


def test_metric_names_follow_the_naming_guide() -> None:
    for name, spec in METRICS.items():
        assert name.startswith("vigil_"), name
        assert not name.endswith("_total"), f"{name}: the counter's _total is added on export"
        if spec.kind == "histogram":
            assert list(spec.buckets) == sorted(spec.buckets), name
    with pytest.raises(ValueError, match="labels"):
        StageMetrics().inc("vigil_frames_processed")  # its label is missing
    with pytest.raises(KeyError, match="declare it"):
        StageMetrics().inc("vigil_nonsense")


# --- a real run ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")
def test_metrics_health_and_status_of_a_live_run(
    scene_video: Path, tmp_path: Path, free_port: int
) -> None:
    with LiveVigil(scene_video, tmp_path / "out", free_port) as run:
        run.wait_ready()
        assert run.get("/healthz") == (200, "ok\n")
        run.wait_for(
            "frames through the graph",
            lambda: value(
                samples(run.get("/metrics")[1]), "vigil_frames_processed_total", stream="cam1"
            ),  # fmt: skip
            60,
        )
        code, text = run.get("/metrics")
        assert code == 200
        parsed = samples(text)
        names = {name for name, _ in parsed}
        for family in (
            "vigil_frames_in_total", "vigil_frames_processed_total", "vigil_frames_dropped_total",
            "vigil_reconnects_total", "vigil_queue_depth", "vigil_queue_capacity",
            "vigil_stage_latency_seconds_bucket", "vigil_inference_batch_size_bucket",
            "vigil_inference_seconds_count", "vigil_events_published_total", "vigil_stage_up",
            "vigil_stream_up", "vigil_stream_fps", "vigil_ready", "process_resident_memory_bytes",
        ):  # fmt: skip
            assert family in names, f"{family} missing from /metrics:\n{text[:3000]}"
        assert value(parsed, "vigil_frames_in_total", stream="cam1") > 0  # (its floor: above)
        for stage in ("decode", "infer", "analytics", "publish", "total"):
            assert value(parsed, "vigil_stage_latency_seconds_count", stage=stage) > 0, stage
        assert value(parsed, "vigil_events_published_total", type="stream.online") == 1
        assert value(parsed, "vigil_queue_capacity", stream="cam1") == 2  # live_inflight
        for stage in ("source:cam1", "infer", "analytics", "publish"):
            assert value(parsed, "vigil_stage_up", stage=stage) == 1, stage

        status = run.status()
        assert status["ready"] and status["reasons"] == []
        (stream,) = status["streams"]
        assert stream["stream_id"] == "cam1" and stream["state"] == "streaming"
        assert stream["frames"] > 0 and stream["fps"] >= 0
        assert {s["name"] for s in status["stages"]} == {
            "source:cam1", "infer", "analytics", "publish"
        }  # fmt: skip
        assert run.get("/snapshot/cam1.jpg")[0] == 200
        assert run.get("/snapshot/nope.jpg")[0] == 404
        assert run.get("/nope")[0] == 404
        assert run.stop() == 0, log_tail(run.log)


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")
def test_readyz_names_a_stalled_source_then_the_run_fails_on_it(
    scene_video: Path, tmp_path: Path, free_port: int
) -> None:
    env = {
        # 10 s into the stream at 15 frames/s: time enough to see it ready first
        "VIGIL_INJECT_FAULT": "source:150:hang",
        "VIGIL__RUNTIME__READY_TIMEOUT_S": "3",
        "VIGIL__RUNTIME__STAGE_TIMEOUT_S": "20",
    }
    with LiveVigil(scene_video, tmp_path / "out", free_port, env=env) as run:
        run.wait_ready()

        def unready_naming_the_source() -> str | None:
            code, body = run.get("/readyz")
            named = "stage source:cam1" in body or "stream cam1" in body
            return body if code == 503 and named else None

        body = run.wait_for("/readyz 503 naming the source", unready_naming_the_source, 60)
        assert "stalled" in body or "no frame" in body, body
        assert run.get("/healthz")[0] == 200  # the process is alive; it is not ready
        status = run.status()
        assert not status["ready"] and status["reasons"]
        rc = run.proc.wait(timeout=90)
    assert rc == 1
    assert "stage 'source:cam1' failed: hung: no report for" in run.log.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")
def test_a_slow_model_load_is_not_a_stall(scene_video: Path, tmp_path: Path, free_port: int):
    """The model loads for longer than stage_timeout_s (TensorRT builds engines for minutes):
    /readyz says so, and the stall clock only starts once it is loaded."""
    env = {"VIGIL_INJECT_FAULT": "infer:load:sleep10", "VIGIL__RUNTIME__STAGE_TIMEOUT_S": "5"}
    with LiveVigil(scene_video, tmp_path / "out", free_port, env=env) as run:
        loading = run.wait_for(
            "/readyz 503 for the model load",
            lambda: (lambda r: r[1] if r[0] == 503 and "loading the model" in r[1] else None)(
                run.get("/readyz")
            ),
            60,
        )
        assert "stage infer" in loading, loading
        run.wait_ready()
        frames = run.status()["streams"][0]["frames"]
        run.wait_for("frames flowing", lambda: run.status()["streams"][0]["frames"] > frames, 30)
        assert run.stop() == 0, log_tail(run.log)
    assert "stalled" not in run.log.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")
@pytest.mark.parametrize("stage", ["infer", "analytics", "publish"])
def test_stage_killed_from_outside_is_restarted_and_everything_recovers(
    stage: str, scene_video: Path, tmp_path: Path, free_port: int
) -> None:
    out = tmp_path / "out"
    # The analytics stage must die while it tracks people: it kills itself at frame 45 (3 s
    # in, both figures tracked), the others are SIGKILLed from here once the run is ready.
    env = {"VIGIL_INJECT_FAULT": "analytics:45:kill"} if stage == "analytics" else None
    with LiveVigil(scene_video, out, free_port, env=env) as run:
        old_pid = None
        if stage != "analytics":
            run.wait_ready()
            old_pid = run.pid(stage)
            os.kill(old_pid, signal.SIGKILL)
        run.wait_restarted(stage, old_pid)
        frames = run.status()["streams"][0]["frames"]
        run.wait_for("frames flowing again", lambda: run.status()["streams"][0]["frames"]
                     > frames + 5, 90)  # fmt: skip
        run.wait_ready(90)
        parsed = samples(run.get("/metrics")[1])
        assert value(parsed, "vigil_stage_restarts_total", stage=stage, reason="died") == 1
        assert run.stop() == 0, log_tail(run.log)

    events = read_events(out)
    restarts = [e for e in events if e["type"] == "stage.restart"]
    assert [(e["stage"], e["reason"], e["attempt"]) for e in restarts] == [(stage, "died", 1)]
    assert "SIGKILL" in restarts[0]["detail"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must stay gap-free"
    assert events[-1]["type"] == "stream.offline"  # the drain still closed the stream
    # No event lost to the restart: every track that started ended, once.
    assert open_tracks(events) == set(), "every track.start needs its track.end"
    ended_by_restart = [e for e in events if e["type"] == "track.end" and e.get("reason")]
    if stage == "analytics":  # the tracks the dead tracker had open were ended for it
        assert ended_by_restart and {e["reason"] for e in ended_by_restart} == {"restart"}
        assert all(e["seq"] > restarts[0]["seq"] for e in ended_by_restart)
    else:
        assert ended_by_restart == []


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")
def test_events_a_killed_publish_stage_had_received_are_not_lost(
    scene_video: Path, tmp_path: Path, free_port: int
) -> None:
    """The publish stage dies holding the first track.start, received but not journaled (and
    whatever was queued behind it): the restarted one gets them again from the analytics stage,
    each once, so every track still starts and ends."""
    out = tmp_path / "out"
    env = {"VIGIL_INJECT_FAULT": "publish:event=track.start:kill"}
    with LiveVigil(scene_video, out, free_port, env=env) as run:
        run.wait_restarted("publish")
        run.wait_ready(90)
        run.wait_for("a track.end after the restart", lambda: any(
            e["type"] == "track.end" for e in read_events(out)
        ), 60)  # fmt: skip
        assert run.stop() == 0, log_tail(run.log)
    events = read_events(out)
    restarts = [(e["stage"], e["reason"]) for e in events if e["type"] == "stage.restart"]
    assert restarts == [("publish", "died")]
    assert open_tracks(events) == set()  # none lost (ended unstarted), none twice, all ended
    assert sum(e["type"] == "track.start" for e in events) >= 1
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert "resend: " in run.log.read_text()


def read_events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]  # a line being written


def open_tracks(events: list[dict]) -> set[tuple[str, int]]:
    """(stream, track) started and not ended; a track started twice or ended unstarted fails."""
    open_ = set()
    for e in events:
        key = (e["stream"], e.get("track"))
        if e["type"] == "track.start":
            assert key not in open_, f"track started twice: {e}"
            open_.add(key)
        elif e["type"] == "track.end":
            assert key in open_, f"track ended but never started: {e}"
            open_.remove(key)
    return open_
