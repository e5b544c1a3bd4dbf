"""The fuzz harness of issue 14: one live `vigil process --loop --mode live` run with every
endpoint on (events, replay, frames, control, HTTP); bursts of generated hostile input at
each (see hostile_peers.py: seeded, a bounded number of cases); after each burst the run
still publishes heartbeats and events, answers replay HEAD, control `list` and /healthz,
restarted nothing, and all its processes together grew less than MEMORY_BOUND_BYTES (300
MiB) since it became ready."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from models.simnet.infer import DEFAULT_WEIGHTS
from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene
from tests.support import hostile_peers as hp
from tests.support.feed import free_ports
from tests.support.live_vigil import LiveVigil, log_tail

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="sim pack not trained")


class _Live:
    def __init__(self, run: LiveVigil, ep: hp.Endpoints, allowed: Path, ctx: zmq.Context):
        self.run, self.ep, self.allowed, self.ctx = run, ep, allowed, ctx
        self.baseline_rss = 0

    def assert_whole(self, after: str) -> None:
        problems = hp.check_whole(self.ctx, self.ep)
        tail = log_tail(self.run.log)
        assert self.run.proc.poll() is None, f"vigil exited after {after}:\n{tail}"
        assert not problems, f"after {after}: {problems}\n{log_tail(self.run.log)}"
        assert hp.restarts(self.ep.http_port) == 0, f"a restart after {after}"
        grown = hp.tree_rss(self.run.proc.pid) - self.baseline_rss
        assert grown < hp.MEMORY_BOUND_BYTES, f"vigil grew {grown / 2**20:.0f} MiB after {after}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Live]:
    tmp = tmp_path_factory.mktemp("fuzz")
    video = tmp / "scene.mp4"
    write_sample_video(make_scene(seed=5, duration_s=4.0, n_people=2), video)
    allowed = tmp / "videos"
    allowed.mkdir()
    (allowed / "junk.mp4").write_bytes(b"not a video at all")
    events, replay, frames, control = free_ports(4)
    http_port = int(free_ports(1)[0].rsplit(":", 1)[1])
    ep = hp.Endpoints(events, replay, frames, control, http_port)
    env = {"VIGIL__RUNTIME__ALLOWED_SOURCES": json.dumps(["rtsp://", str(allowed)])}
    args = ["--events", events, "--replay", replay, "--frames", frames, "--control", control]
    ctx = zmq.Context()
    with LiveVigil(video, tmp / "out", http_port, args, env=env) as run:
        run.wait_ready()
        state = _Live(run, ep, allowed, ctx)
        assert not hp.check_whole(ctx, ep), log_tail(run.log)
        state.baseline_rss = hp.tree_rss(run.proc.pid)
        yield state
        assert run.stop() == 0, log_tail(run.log)
    ctx.destroy(linger=0)


def test_fuzz_event_endpoint(live: _Live) -> None:
    assert hp.attack_event_xpub(live.ctx, live.ep.events, seed=1) > 150
    live.assert_whole("the event endpoint burst")


def test_fuzz_replay_endpoint(live: _Live) -> None:
    assert hp.attack_replay(live.ctx, live.ep.replay, seed=2) > 200
    live.assert_whole("the replay endpoint burst")


def test_fuzz_control_endpoint(live: _Live) -> None:
    assert hp.attack_control(live.ctx, live.ep.control, seed=3, allowed_dir=str(live.allowed)) > 100
    live.assert_whole("the control endpoint burst")
    listed = hp.http_get(live.ep.http_port, "/api/status")[1]
    assert "passwd" not in listed and "junk" not in listed  # nothing hostile was added


def test_fuzz_frame_feed(live: _Live) -> None:
    assert hp.attack_frames(live.ctx, live.ep.frames, seed=4) > 100
    live.assert_whole("the frame feed burst")


def test_fuzz_http(live: _Live) -> None:
    assert hp.attack_http(live.ep.http_port, seed=5) == 60
    live.assert_whole("the HTTP burst")
