#!/usr/bin/env python
"""Hostile peers against one live vigil, endpoint by endpoint (issue 14).

Starts `vigil process <looping synthetic video> --mode live --loop` with every endpoint on
(events, replay, frames, control, HTTP), measures the event rate without attack, then attacks
each endpoint for ``--window`` seconds with the fuzz harness's generated input
(tests/support/hostile_peers.py: random bytes and multipart shapes, boundary integers, deep
and huge JSON, wrong types, oversized messages, slow readers, abandoned connections), and
prints per endpoint: the cases sent, the crashes (vigil exits, stage restarts, event feed
restarts; must be 0), the health checks failed afterwards, the growth of all vigil processes'
RSS, and the event rate during the attack against the rate without it (mean of the windows
before and after all attacks, same run). A table, then one JSON line.

It uses the harness under ``tests/``, so it runs as a module from the checkout root:

    .venv/bin/python -m scripts.bench_hostile [--window 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from stream.sim.sample import write_sample_video
from stream.sim.scenes import make_scene
from tests.support import hostile_peers as hp
from tests.support.feed import free_ports
from tests.support.live_vigil import LiveVigil, log_tail

ROOT = Path(__file__).resolve().parents[1]


def event_rate(port: int, window_s: float) -> float:
    """Events published per second over ``window_s`` (from /metrics)."""
    start, t0 = hp.events_published(port), time.monotonic()
    time.sleep(window_s)
    return (hp.events_published(port) - start) / (time.monotonic() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        video = tmp / "scene.mp4"
        write_sample_video(make_scene(seed=5, duration_s=4.0, n_people=2), video)
        allowed = tmp / "videos"
        allowed.mkdir()
        (allowed / "junk.mp4").write_bytes(b"not a video")
        events, replay, frames, control, http = free_ports(5)
        port = int(http.rsplit(":", 1)[1])
        ep = hp.Endpoints(events, replay, frames, control, port)
        env = {"VIGIL__RUNTIME__ALLOWED_SOURCES": json.dumps(["rtsp://", str(allowed)])}
        cli = ["--events", events, "--replay", replay, "--frames", frames, "--control", control]
        ctx = zmq.Context()
        rows = []
        with LiveVigil(video, tmp / "out", port, cli, env=env) as run:
            run.wait_ready()
            hp.check_whole(ctx, ep)
            before = event_rate(port, args.window)
            attacks: dict[str, Callable[[int], int]] = {
                "event XPUB": lambda s: hp.attack_event_xpub(ctx, events, s),
                "replay ROUTER": lambda s: hp.attack_replay(ctx, replay, s),
                "control REP": lambda s: hp.attack_control(ctx, control, s, str(allowed)),
                "frame feed PUB": lambda s: hp.attack_frames(ctx, frames, s),
                "HTTP": lambda s: hp.attack_http(port, s),
            }
            for seed, (name, attack) in enumerate(attacks.items()):
                rss0, restarts0 = hp.tree_rss(run.proc.pid), hp.restarts(port)
                ev0, t0 = hp.events_published(port), time.monotonic()
                cases = 0
                while time.monotonic() - t0 < args.window:
                    cases += attack(seed * 1000 + cases)
                during = (hp.events_published(port) - ev0) / (time.monotonic() - t0)
                exited = run.proc.poll() is not None
                problems = [] if exited else hp.check_whole(ctx, ep)
                crashes = int(exited) + (0 if exited else hp.restarts(port) - restarts0)
                rows.append(
                    {
                        "endpoint": name,
                        "cases": cases,
                        "crashes": crashes,
                        "checks_failed": len(problems),
                        "rss_growth_mib": round((hp.tree_rss(run.proc.pid) - rss0) / 2**20, 1),
                        "event_rate_attack": round(during, 2),
                    }
                )
                if exited:
                    print(f"vigil exited during the {name} attack:\n{log_tail(run.log)}")
                    break
            after = event_rate(port, args.window) if run.proc.poll() is None else 0.0
            rss_end = hp.tree_rss(run.proc.pid) / 2**20
            run.stop()
        ctx.destroy(linger=0)
    baseline = (before + after) / 2
    print(f"event rate without attack: {before:.2f}/s before, {after:.2f}/s after")
    print(f"{'endpoint':<16}{'cases':>7}{'crashes':>9}{'checks':>8}{'RSS MiB':>9}"
          f"{'ev/s attack':>12}{'ratio':>7}")  # fmt: skip
    for row in rows:
        row["ratio"] = round(row["event_rate_attack"] / baseline, 2) if baseline else None
        print(f"{row['endpoint']:<16}{row['cases']:>7}{row['crashes']:>9}"
              f"{row['checks_failed']:>8}{row['rss_growth_mib']:>9}"
              f"{row['event_rate_attack']:>12}{row['ratio']!s:>7}")  # fmt: skip
    result = {
        "bench": "hostile",
        "window_s": args.window,
        "event_rate_baseline": round(baseline, 2),
        "event_rate_before": round(before, 2),
        "event_rate_after": round(after, 2),
        "vigil_rss_mib_end": round(rss_end, 1),
        "crashes": sum(r["crashes"] for r in rows),
        "endpoints": rows,
    }
    print(json.dumps(result))
    return 0 if result["crashes"] == 0 and not any(r["checks_failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
