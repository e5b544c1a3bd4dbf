"""Score zones, lines, dwell and fall alerts against the synthetic world's ground truth.

Renders the held-out scenes of :func:`stream.sim.scenes.zone_scenes` (three streams, scripted
figures walking into and out of zones, across lines both ways, and falling), runs the whole
graph (``vigil run``) on them with the ``sim`` pack's own detections and poses, and scores:

- ``zone.enter``, ``zone.exit``, ``zone.dwell`` and ``line.cross`` (with its direction) against
  events computed from the figures' true feet (the bottom centre of their ground-truth boxes,
  no debounce): an event matches when it is on the right figure (its track is the figure the
  track's boxes overlap most) within 0.5 s; precision and recall per type;
- ``alert`` (name ``fall``) against the scripted falls: an alert on the falling figure from
  2 s before the fall starts to 1 s after it ends matches; the fraction of falls alerted
  before they start, and the median lead time;
- the per-frame cost of :class:`models.zones.analytics.ZoneAnalytics` with 100 tracks, 20 zones
  and 10 lines (microseconds, median);
- what clip writing costs the pipeline: frames/s of the same run with and without clips.

Prints a table and one JSON line. ``--quick``: shorter scenes (4 s).

    PYTHONPATH=$PWD .venv/bin/python scripts/eval_zones.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models.ops import box_iou
from models.zones.analytics import ZoneAnalytics
from models.zones.geometry import points_in_polygons
from models.zones.rules import Line, Zone
from stream.sim.sample import write_sample_video
from stream.sim.scenes import zone_scenes

MATCH_S = 0.5
TYPES = ("zone.enter", "zone.exit", "zone.dwell", "line.cross")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 s scenes instead of 6 s")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="eval_zones_"))
    work.mkdir(parents=True, exist_ok=True)
    duration = 4.0 if args.quick else 6.0
    scenes = zone_scenes(duration_s=duration)
    gts, sources, zones, lines = {}, [], [], []
    for k, (scene, scene_cfg) in enumerate(scenes):
        sid = f"s{k + 1}"
        video = work / f"{sid}.mp4"
        gts[sid] = (write_sample_video(scene, video), scene, scene_cfg)
        sources.append({"uri": str(video), "stream_id": sid})
        zones += [{**z, "stream": sid, "classes": ["person"]} for z in scene_cfg["zones"]]
        lines += [{**ln, "stream": sid, "classes": ["person"]} for ln in scene_cfg["lines"]]
    runs = {}
    for name, clip in (("clips", {"pre_s": 2.0, "post_s": 2.0}), ("no_clips", None)):
        cfg = {
            "sources": sources,
            "detect": {"model": "simnet", "score_threshold": 0.4, "batch_size": 1},
            "output": {"detections": True},
            "runtime": {"progress": False},
            "zones": zones,
            "lines": lines,
            "alerts": [
                {"name": "fall", "when": {"action": "fall", "horizon_s": 0.5, "p_min": 0.6},
                 "severity": "high", "cooldown_s": 30, "clip": clip},
            ],
        }  # fmt: skip
        runs[name] = run_graph(cfg, work / name)
    events, records = runs["clips"]["events"], runs["clips"]["records"]
    scores = {t: score_type(t, events, records, gts) for t in TYPES}
    falls = score_falls(events, records, gts)
    cost = bench_zone_logic()
    fps_clips, fps_plain = runs["clips"]["fps"], runs["no_clips"]["fps"]
    clips_written = sum(
        1 for e in events if e["type"] == "alert.clip" and e["status"] == "written"
    )
    print(f"{'type':<12} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}")
    for t, s in {**scores, "alert(fall)": falls}.items():
        print(f"{t:<12} {s['tp']:>4} {s['fp']:>4} {s['fn']:>4} {s['precision']:>9.3f} "
              f"{s['recall']:>7.3f}")  # fmt: skip
    print(f"falls alerted before they start: {falls['before_start']:.2f}, median lead "
          f"{falls['median_lead_s']} s")  # fmt: skip
    print(f"zone logic, 100 tracks x 20 zones + 10 lines: {cost:.0f} us/frame")
    print(f"frames/s with clips {fps_clips:.2f}, without {fps_plain:.2f} "
          f"({clips_written} clips written)")  # fmt: skip
    out = {
        "scenes": len(scenes),
        "frames": runs["clips"]["frames"],
        "precision": {t: round(s["precision"], 3) for t, s in scores.items()},
        "recall": {t: round(s["recall"], 3) for t, s in scores.items()},
        "counts": {t: {k: s[k] for k in ("tp", "fp", "fn")} for t, s in scores.items()},
        "fall_alert": {k: falls[k] for k in ("precision", "recall", "before_start",
                                             "median_lead_s", "tp", "fp", "fn")},  # fmt: skip
        "zone_logic_us_per_frame_100_tracks_20_zones": round(cost, 1),
        "fps_with_clips": round(fps_clips, 3),
        "fps_without_clips": round(fps_plain, 3),
        "clip_fps_ratio": round(fps_clips / fps_plain, 3) if fps_plain else None,
        "clips_written": clips_written,
        "match_s": MATCH_S,
    }
    print(json.dumps(out, separators=(",", ":")))


def run_graph(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """``vigil run`` on ``cfg``; its events, per-frame records and frames/s."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(cfg_path), "--out", str(out)],
        capture_output=True, text=True, timeout=3600, env=env, cwd=root,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"vigil failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    m = re.search(r"(\d+) frames in ([\d.]+) s", proc.stderr)
    frames, seconds = (int(m.group(1)), float(m.group(2))) if m else (0, time.monotonic() - start)
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    records = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    return {"events": events, "records": records, "frames": frames, "fps": frames / seconds}


# --- ground truth ------------------------------------------------------------------------------


def figure_of_tracks(records: list[dict], gt: dict, sid: str) -> dict[int, int]:
    """Track id -> the figure its boxes overlap most (IoU >= 0.3 votes), for stream ``sid``."""
    votes: dict[int, dict[int, int]] = {}
    frames = gt["frames"]
    for rec in records:
        if rec["stream"] != sid or rec["frame"] >= len(frames):
            continue
        people = [o for o in frames[rec["frame"]]["objects"] if o["class"] == "person"]
        rows = [i for i, t in enumerate(rec["tracks"]) if t >= 0]
        if not people or not rows:
            continue
        ious = box_iou(
            np.asarray([rec["boxes"][i] for i in rows], np.float32),
            np.asarray([o["box"] for o in people], np.float32),
        )
        for r, i in enumerate(rows):
            j = int(np.argmax(ious[r]))
            if ious[r, j] >= 0.3:
                fig = votes.setdefault(rec["tracks"][i], {})
                fig[people[j]["id"]] = fig.get(people[j]["id"], 0) + 1
    return {t: max(v, key=v.get) for t, v in votes.items()}


def truth_events(gt: dict, scene_cfg: dict) -> list[dict]:
    """Zone and line events of the figures' true feet (no debounce), with ``figure``, ``pts``."""
    w, h = gt["width"], gt["height"]
    scale = np.array([w, h], np.float64)
    zones = scene_cfg["zones"]
    polys = [np.asarray(z["polygon"], np.float64) * scale for z in zones]
    segs = [np.asarray(ln["points"], np.float64) * scale for ln in scene_cfg["lines"]]
    out: list[dict] = []
    inside: dict[tuple[int, int], float] = {}  # (figure, zone) -> entered at
    last: dict[int, np.ndarray] = {}
    last_pts = 0.0
    for frame in gt["frames"]:
        pts = frame["pts"]
        last_pts = pts
        for o in frame["objects"]:
            if o["class"] != "person":
                continue
            fig = o["id"]
            x1, _, x2, y2 = o["box"]
            feet = np.array([(x1 + x2) / 2.0, y2])
            now = points_in_polygons(feet[None], polys)[0] if polys else []
            for zi, zone in enumerate(zones):
                key = (fig, zi)
                if now[zi] and key not in inside:
                    inside[key] = pts
                    out.append({"type": "zone.enter", "figure": fig, "zone": zone["name"],
                                "pts": pts})  # fmt: skip
                    if zone.get("dwell_s"):
                        out.append({"type": "zone.dwell", "figure": fig, "zone": zone["name"],
                                    "pts": pts + zone["dwell_s"], "stay": pts})  # fmt: skip
                elif not now[zi] and key in inside:
                    _leave(out, fig, zone["name"], pts, inside.pop(key))
            if fig in last:
                for li, (p1, p2) in enumerate(segs):
                    direction = _crossing(last[fig], feet, p1, p2)
                    if direction:
                        name = scene_cfg["lines"][li]["name"]
                        out.append({"type": "line.cross", "figure": fig, "direction": direction,
                                    "line": name, "pts": pts})  # fmt: skip
            last[fig] = feet
    for (fig, zi), entered in sorted(inside.items()):
        _leave(out, fig, zones[zi]["name"], last_pts, entered)
    # A dwell happens only if the stay lasted that long (and within the video).
    exits = {(e["figure"], e["zone"], e["entered"]): e["pts"] for e in out if "entered" in e}
    return [
        e
        for e in out
        if "stay" not in e or e["pts"] <= exits[e["figure"], e["zone"], e["stay"]]
    ]


def _leave(out: list[dict], fig: int, zone: str, pts: float, entered: float) -> None:
    out.append({"type": "zone.exit", "figure": fig, "zone": zone, "pts": pts, "entered": entered})


def _crossing(a: np.ndarray, b: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> str | None:
    d = p2 - p1
    sa = np.sign(d[0] * (a[1] - p1[1]) - d[1] * (a[0] - p1[0]))
    sb = np.sign(d[0] * (b[1] - p1[1]) - d[1] * (b[0] - p1[0]))
    if sa == 0 or sb == 0 or sa == sb:
        return None
    e = b - a
    den = e[0] * d[1] - e[1] * d[0]
    w = p1 - a
    u = (w[0] * e[1] - w[1] * e[0]) / den
    return ("in" if sb < 0 else "out") if 0 <= u <= 1 else None


def score_type(kind: str, events: list[dict], records: list[dict], gts: dict) -> dict:
    tp = fp = fn = 0
    for sid, (gt, _scene, scene_cfg) in gts.items():
        fig_of = figure_of_tracks(records, gt, sid)
        truth = [e for e in truth_events(gt, scene_cfg) if e["type"] == kind]
        pred = [e for e in events if e["type"] == kind and e["stream"] == sid]
        used = set()
        for p in pred:
            fig = fig_of.get(p["track"])
            best = None
            for i, t in enumerate(truth):
                if i in used or t["figure"] != fig or abs(t["pts"] - p["pts"]) > MATCH_S:
                    continue
                if kind == "line.cross" and (t["line"], t["direction"]) != (p["line"],
                                                                            p["direction"]):
                    continue  # fmt: skip
                if kind != "line.cross" and t["zone"] != p["zone"]:
                    continue
                if best is None or abs(t["pts"] - p["pts"]) < abs(truth[best]["pts"] - p["pts"]):
                    best = i
            if best is None:
                fp += 1
            else:
                used.add(best)
                tp += 1
        fn += len(truth) - len(used)
    return _pr(tp, fp, fn)


def score_falls(events: list[dict], records: list[dict], gts: dict) -> dict:
    tp = fp = fn = 0
    leads, before = [], 0
    for sid, (gt, scene, _cfg) in gts.items():
        fig_of = figure_of_tracks(records, gt, sid)
        falls = [(f.figure_id, s.start_s, s.end_s) for f in scene.figures for s in f.segments
                 if s.action == "fall"]  # fmt: skip
        alerts = [e for e in events if e["type"] == "alert" and e["stream"] == sid
                  and e["name"] == "fall"]  # fmt: skip
        matched = set()
        for a in alerts:
            hit = next((k for k, (fig, start, end) in enumerate(falls)
                        if fig_of.get(a["track"]) == fig and start - 2.0 <= a["pts"] <= end + 1.0),
                       None)  # fmt: skip
            if hit is None:
                fp += 1
                continue
            if hit not in matched:
                matched.add(hit)
                lead = falls[hit][1] - a["pts"]
                leads.append(lead)
                before += lead > 0
            tp += 1
        fn += len(falls) - len(matched)
    out = _pr(tp, fp, fn)
    out["before_start"] = round(before / max(len(leads) + (fn), 1), 3)
    out["median_lead_s"] = round(statistics.median(leads), 3) if leads else None
    return out


def _pr(tp: int, fp: int, fn: int) -> dict:
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }


# --- cost -------------------------------------------------------------------------------------


def bench_zone_logic(n_tracks: int = 100, n_zones: int = 20, n_frames: int = 300) -> float:
    """Median microseconds of one :meth:`ZoneAnalytics.update` with ``n_tracks`` moving tracks,
    ``n_zones`` hexagonal zones and 10 lines on a 1920x1080 frame."""
    rng = np.random.default_rng(0)
    zones = []
    for k in range(n_zones):
        cx, cy, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.15)
        ang = np.linspace(0, 2 * np.pi, 7)[:-1]
        poly = tuple((float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in ang)
        zones.append(Zone(f"z{k}", poly, inertia_frames=3, dwell_s=5.0))
    lines = [Line(f"l{k}", ((0.1 * k, 0.0), (0.1 * k, 1.0))) for k in range(10)]
    za = ZoneAnalytics(zones, lines, [], 1920, 1080)
    pos = rng.uniform([0, 0], [1920, 1080], size=(n_tracks, 2))
    vel = rng.normal(0, 8, size=(n_tracks, 2))
    tids = np.arange(1, n_tracks + 1)
    labels = ["person"] * n_tracks
    times = []
    for f in range(n_frames):
        pos = (pos + vel) % [1920, 1080]
        xyxy = np.concatenate([pos - [20, 80], pos + [20, 0]], axis=1).astype(np.float32)
        t0 = time.perf_counter()
        za.update(f / 30.0, xyxy, labels, tids)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[20:]) * 1e6


if __name__ == "__main__":
    main()
