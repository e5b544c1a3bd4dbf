"""The format corpus: inputs vigil did not shape, made at test time, and the checks each must pass.

Every :class:`Case` is made by one producer: Debian's ``ffmpeg`` CLI, PyAV (the bundled FFmpeg,
another version), or GStreamer's ``gst-launch-1.0``; where they differ, a container/codec is
made by two of them. Clips are tiny (160x96, 12 frames; 24 for the damaged ones, 3 at 4K), so
the whole corpus runs in CI. Nothing binary is committed: :func:`build` writes the files into a
folder (the tests cache it per session).

What a case must give (see issue 13), checked by :func:`check_video` and :func:`check_events`:

- ``expect == "ok"``: one annotated frame per frame FFmpeg decodes from the input, with
  presentation timestamps strictly increasing and equal to the input's (each frame's ``pts``
  as ffprobe reports it, FFmpeg's ``best_effort_timestamp`` where it has none, sorted into
  presentation order; for AVI, which stores no pts, frame i at i / fps), upright (rotation
  applied), odd sizes padded to even; events' ``pts`` equal those of their frame and ``ts`` =
  start + ``pts``; this through the process graph (batch) and the archive runner, and under
  ``--mode live --loop`` (stopped once every stream has looped) frame indices, ``pts`` and
  the annotated video's timestamps keep increasing across passes;
- ``expect == "exit2"``: ``vigil process`` exits 2 with one line saying why.

The reference is Debian's ``ffprobe``, not vigil's own decoder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

W, H, N = 160, 96, 12  # the corpus's usual frame size and frame count
REPO = Path(__file__).resolve().parents[2]
TS_TOL = 0.0015  # s: MP4 time bases are exact for these inputs; this allows for rounding only


@dataclass
class Case:
    """One input: ``make(path)`` writes it; ``size`` is its upright (width, height)."""

    name: str
    producer: str  # ffmpeg | pyav | gst
    suffix: str
    make: Callable[[Path], None]
    what: str
    expect: str = "ok"  # ok | exit2
    size: tuple[int, int] = (W, H)
    fast: bool = False  # in the normal test suite too
    needs: tuple[str, ...] = ()  # gst elements or ffmpeg encoders the producer needs


# --- producers ---------------------------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.strip()[-400:]}")


def _src(size: tuple[int, int] = (W, H), rate: str = "25", n: int = N) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={rate}", "-frames:v",
            str(n)]


def ff(*args: str, size: tuple[int, int] = (W, H), rate: str = "25", n: int = N,
       pre: tuple[str, ...] = ()) -> Callable[[Path], None]:
    """An ffmpeg CLI producer: testsrc2 (plus ``pre`` inputs) encoded with ``args``."""

    def make(path: Path) -> None:
        _run(["ffmpeg", "-v", "error", "-y", *pre, *_src(size, rate, n), *args, str(path)])

    return make


def gst(pipeline: str) -> Callable[[Path], None]:
    """A GStreamer producer: videotestsrc -> ``pipeline`` -> filesink."""

    def make(path: Path) -> None:
        caps = f"video/x-raw,width={W},height={H},framerate=25/1"
        _run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={N}", "pattern=ball", "!",
              caps, "!", "videoconvert", "!", *pipeline.split(), "!",
              "filesink", f"location={path}"])

    return make


def _pattern(i: int, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 50, np.uint8)
    x = (7 * i) % max(w - 30, 1)
    img[h // 4 : h // 4 + 30, x : x + 30] = (220, 60, 40)
    img[:8, :8] = 255  # a white corner: top-left of the upright picture
    return img


def pyav(codec: str, *, rate: int | Fraction = 25, size: tuple[int, int] = (W, H),
         pix_fmt: str = "yuv420p", options: dict[str, str] | None = None,
         time_base: Fraction | None = None, rotation: int = 0) -> Callable[[Path], None]:
    """A PyAV producer (its own FFmpeg build) with ``codec`` at ``rate``."""

    def make(path: Path) -> None:
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=rate, options=options or {})
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
            if time_base is not None:
                stream.time_base = time_base
            if rotation:
                stream.set_display_rotation(rotation)
            for i in range(N):
                frame = av.VideoFrame.from_ndarray(_pattern(i, *size), format="rgb24")
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))

    return make


def remux_from_non_keyframe(path: Path) -> None:
    """An H.264 MKV whose first packet is not a keyframe (a recording cut mid-GOP)."""
    whole = path.with_name(path.stem + ".whole.mkv")
    ff("-c:v", "libx264", "-bf", "0", "-g", "6", "-x264-params", "scenecut=0")(whole)
    with av.open(str(whole)) as src, av.open(str(path), "w") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for i, packet in enumerate(src.demux(s_in)):
            if packet.dts is None or i < 2:  # drop the keyframe and the next frame
                continue
            packet.stream = s_out
            dst.mux(packet)
    whole.unlink()


def corrupt_middle(path: Path) -> None:
    """An MPEG-TS with junk written over 2 KB in its middle (a damaged recording)."""
    ff("-c:v", "libx264", "-g", "4", "-bf", "0", n=24)(path)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    rng = np.random.default_rng(13)
    data[mid : mid + 2048] = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def truncated(path: Path) -> None:
    """An MKV cut off in the middle of a frame (a recorder that lost power)."""
    ff("-c:v", "libx264", "-g", "4", "-bf", "0", n=24)(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6) + 37])


def rotated(degrees: int, base: str = "mp4") -> Callable[[Path], None]:
    """libx264 with ffmpeg's ``rotate`` tag (a display matrix) of ``degrees``."""

    def make(path: Path) -> None:
        plain = path.with_name(path.stem + ".plain." + base)
        pyav("libx264")(plain)  # white top-left corner: orientation can be checked
        _run(["ffmpeg", "-v", "error", "-y", "-i", str(plain), "-c", "copy",
              "-metadata:s:v:0", f"rotate={degrees}", str(path)])
        plain.unlink()

    return make


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes())


def audio_only(path: Path) -> None:
    _run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "pcm_s16le",
          str(path)])


def undecodable_video(path: Path) -> None:
    """A well-formed MKV whose H.264 packets hold noise: the container opens, nothing decodes."""
    whole = path.with_name(path.stem + ".whole.mkv")
    ff("-c:v", "libx264", "-bf", "0")(whole)
    rng = np.random.default_rng(2)
    with av.open(str(whole)) as src, av.open(str(path), "w") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream(  # no extradata (no SPS/PPS) and noise for packets
            "h264", rate=25
        )
        s_out.width, s_out.height = W, H
        for packet in src.demux(s_in):
            if packet.dts is None:
                continue
            junk = av.Packet(rng.integers(0, 256, packet.size, np.uint8).tobytes())
            junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
            junk.stream = s_out
            dst.mux(junk)
    whole.unlink()


X264 = ("-c:v", "libx264", "-preset", "veryfast")

CASES: list[Case] = [
    # the bug cases of issue 13
    Case("mkv_h264_tb1000_30fps", "ffmpeg", ".mkv", ff(*X264, rate="30"),
         "MKV, ms time base, 30 fps", fast=True),
    Case("avi_h264_bframes3_25fps", "ffmpeg", ".avi", ff(*X264, "-bf", "3"),
         "AVI, H.264 with 3 B-frames (pts out of order)", fast=True),
    Case("avi_mpeg4_30fps", "ffmpeg", ".avi", ff("-c:v", "mpeg4", "-bf", "2", rate="30"),
         "AVI, MPEG-4 Part 2, 1/30", fast=True),
    Case("avi_mpeg4_25fps_pyav", "pyav", ".avi", pyav("mpeg4", options={"bf": "2"}),
         "AVI, MPEG-4 Part 2, 1/25", fast=False),
    Case("mkv_h264_pyav", "pyav", ".mkv", pyav("libx264", rate=30), "MKV, 1/1000"),
    # containers and codecs
    Case("mp4_h264_bframes3", "ffmpeg", ".mp4", ff(*X264, "-bf", "3"), "MP4, 3 B-frames"),
    Case("mp4_h264_pyav", "pyav", ".mp4", pyav("libx264"), "MP4 from PyAV"),
    Case("mov_h264", "ffmpeg", ".mov", ff(*X264), "QuickTime"),
    Case("mp4_h264_10bit", "ffmpeg", ".mp4", ff(*X264, "-pix_fmt", "yuv420p10le"),
         "H.264 High 10"),
    Case("mp4_hevc", "ffmpeg", ".mp4",
         ff("-c:v", "libx265", "-x265-params", "log-level=error:bframes=3", "-tag:v", "hvc1"),
         "HEVC with B-frames"),
    Case("mkv_hevc_pyav", "pyav", ".mkv",
         pyav("libx265", options={"x265-params": "log-level=error"}), "HEVC from PyAV"),
    Case("webm_vp8", "ffmpeg", ".webm", ff("-c:v", "libvpx", "-b:v", "300k"), "VP8"),
    Case("webm_vp9", "ffmpeg", ".webm",
         ff("-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline", "realtime", "-cpu-used", "8"),
         "VP9"),
    Case("mkv_av1", "ffmpeg", ".mkv",
         ff("-c:v", "libaom-av1", "-cpu-used", "8", "-b:v", "200k", "-row-mt", "1"), "AV1"),
    Case("mp4_av1_pyav", "pyav", ".mp4", pyav("libsvtav1", size=(192, 128)), "AV1 (SVT) from PyAV",
         size=(192, 128)),
    Case("avi_mjpeg", "ffmpeg", ".avi", ff("-c:v", "mjpeg", "-q:v", "5"), "MJPEG in AVI"),
    Case("ts_h264_90k", "ffmpeg", ".ts", ff(*X264, "-bf", "2"), "MPEG-TS, 1/90000", fast=True),
    Case("ts_mpeg2_interlaced", "ffmpeg", ".ts",
         ff("-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", "-b:v", "500k"),
         "interlaced MPEG-2 in MPEG-TS"),
    Case("flv_h264", "ffmpeg", ".flv", ff(*X264, "-bf", "2"), "FLV, 1/1000, B-frames"),
    # time bases and timing
    Case("mp4_ntsc_30000_1001", "ffmpeg", ".mp4",
         ff(*X264, "-video_track_timescale", "30000", rate="30000/1001"), "29.97 fps"),
    Case("mkv_vfr", "ffmpeg", ".mkv",
         ff(*X264, "-vf", "setpts='(N+0.5*mod(N\\,2)+0.3*mod(N\\,3))/25/TB'",
            "-fps_mode", "passthrough"), "variable frame rate", fast=True),
    # sizes and orientation
    Case("mp4_odd_427x241", "ffmpeg", ".mp4",
         ff(*X264, "-pix_fmt", "yuv444p", "-vf", "format=yuv444p,crop=427:241:0:0",
            size=(428, 242)),
         "odd size (4:4:4)", size=(427, 241), fast=True),
    Case("mkv_odd_ffv1_pyav", "pyav", ".mkv", pyav("ffv1", size=(427, 241), pix_fmt="yuv444p"),
         "odd size, FFV1", size=(427, 241)),
    Case("mp4_rot90", "ffmpeg", ".mp4", rotated(90), "rotate=90", size=(H, W), fast=True),
    Case("mov_rot180", "ffmpeg", ".mov", rotated(180, "mov"), "rotate=180"),
    Case("mp4_rot270", "ffmpeg", ".mp4", rotated(270), "rotate=270", size=(H, W)),
    Case("mp4_rot90_pyav", "pyav", ".mp4", pyav("libx264", rotation=90),
         "display matrix 90 from PyAV", size=(H, W)),
    Case("mp4_one_frame", "ffmpeg", ".mp4", ff(*X264, n=1), "a single frame"),
    Case("mp4_4k", "ffmpeg", ".mp4", ff("-c:v", "libx264", "-preset", "ultrafast",
                                       size=(3840, 2160), n=3), "3840x2160",
         size=(3840, 2160)),
    # streams
    Case("mkv_audio_first", "ffmpeg", ".mkv",
         ff("-map", "0:a", "-map", "1:v", "-c:a", "pcm_s16le", *X264, "-t", "0.48",
            pre=("-f", "lavfi", "-t", "0.48", "-i", "sine")), "audio stream before the video"),
    Case("mkv_two_video", "ffmpeg", ".mkv",
         ff("-map", "1:v", "-map", "0:v", *X264,
            pre=("-f", "lavfi", "-t", "0.2", "-i", f"testsrc=size={W}x{H}:rate=25")),
         "two video streams (the first is read)"),
    # damage
    Case("mkv_starts_non_keyframe", "pyav", ".mkv", remux_from_non_keyframe,
         "starts on a P-frame", fast=True),
    Case("ts_corrupt_middle", "ffmpeg", ".ts", corrupt_middle, "2 KB of junk mid-file"),
    Case("mkv_truncated_mid_frame", "ffmpeg", ".mkv", truncated, "cut mid-frame", fast=True),
    # GStreamer
    Case("gst_avi_mjpeg", "gst", ".avi", gst("jpegenc ! avimux"), "GStreamer MJPEG AVI",
         needs=("jpegenc", "avimux")),
    Case("gst_mkv_h264", "gst", ".mkv", gst("x264enc bframes=2 ! h264parse ! matroskamux"),
         "GStreamer H.264 MKV", needs=("x264enc", "matroskamux")),
    Case("gst_mp4_h264", "gst", ".mp4", gst("x264enc bframes=3 ! h264parse ! mp4mux"),
         "GStreamer H.264 MP4", needs=("x264enc", "mp4mux")),
    Case("gst_flv_h264", "gst", ".flv", gst("x264enc ! h264parse ! flvmux"),
         "GStreamer H.264 FLV", needs=("x264enc", "flvmux")),
    # cannot be decoded: exit 2, one line
    Case("garbage_bytes", "pyav", ".mp4", garbage, "random bytes", expect="exit2", fast=True),
    Case("audio_only", "ffmpeg", ".mkv", audio_only, "no video stream", expect="exit2"),
    Case("mkv_noise_packets", "pyav", ".mkv", undecodable_video, "H.264 packets of noise",
         expect="exit2", fast=True),
]


def missing_tools(case: Case) -> str:
    """Why a case cannot be made here ('' if it can)."""
    tool = {"ffmpeg": "ffmpeg", "gst": "gst-launch-1.0"}.get(case.producer)
    if tool and not shutil.which(tool):
        return f"{tool} not installed"
    if not shutil.which("ffmpeg"):  # PyAV cases use ffmpeg for some steps, ffprobe checks all
        return "ffmpeg not installed"
    for element in case.needs:
        probe = subprocess.run(["gst-inspect-1.0", element], capture_output=True, timeout=60)
        if probe.returncode != 0:
            return f"GStreamer element {element} not installed"
    return ""


def build(folder: Path, cases: list[Case]) -> dict[str, Path | str]:
    """Make each case in ``folder`` (kept when already there); name -> path, or why not made."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path | str] = {}
    for case in cases:
        path = folder / f"{case.name}{case.suffix}"
        if path.exists():
            made[case.name] = path
            continue
        why = missing_tools(case)
        if why:
            made[case.name] = why
            continue
        tmp = folder / f"tmp-{case.name}{case.suffix}"
        try:
            case.make(tmp)
        except (RuntimeError, OSError, av.error.FFmpegError, subprocess.SubprocessError) as exc:
            made[case.name] = f"producer failed: {exc}"
            continue
        tmp.replace(path)
        made[case.name] = path
    return made


# --- the reference: what Debian's FFmpeg decodes ------------------------------------------------


@dataclass
class Probe:
    """Frames FFmpeg decodes from a file's first video stream: sorted pts (s), size."""

    pts: list[float]
    width: int
    height: int
    start: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def ffprobe_frames(path: Path) -> Probe:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "frame=best_effort_timestamp_time,pts_time,width,height", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    frames = json.loads(out.stdout or "{}").get("frames", [])
    stamps = []
    for f in frames:
        t = f.get("pts_time")  # the container's pts; FFmpeg's best guess where it has none
        if t in (None, "N/A"):
            t = f.get("best_effort_timestamp_time")
        stamps.append(float(t) if t not in (None, "N/A") else float("nan"))
    if path.suffix == ".avi":  # AVI has no pts, only frame order: frame i is at i / fps
        rate = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=r_frame_rate", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, timeout=60,
        ).stdout.strip()
        stamps = [float(i / Fraction(rate)) for i in range(len(frames))]
    w = frames[0]["width"] if frames else 0
    h = frames[0]["height"] if frames else 0
    return Probe(sorted(stamps), w, h)


# --- the checks ---------------------------------------------------------------------------------


def _increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def check_video(case: Case, ref: Probe, video: Path) -> list[str]:
    """Problems with an annotated video against the input's reference ([] = none)."""
    if not video.exists():
        return [f"no {video.name}"]
    got = ffprobe_frames(video)
    problems = []
    if len(got.pts) != len(ref.pts):
        problems.append(f"{len(got.pts)} annotated frames, input has {len(ref.pts)}")
    if not _increasing(got.pts):
        problems.append("annotated pts not strictly increasing")
    n = min(len(got.pts), len(ref.pts))
    bad = [i for i in range(n) if not abs(got.pts[i] - ref.pts[i]) <= TS_TOL]
    if bad:
        i = bad[0]
        problems.append(
            f"{len(bad)} annotated pts differ from the input's, first at frame {i}: "
            f"{got.pts[i]:.4f} != {ref.pts[i]:.4f}"
        )
    want = (case.size[0] + case.size[0] % 2, case.size[1] + case.size[1] % 2)
    if (got.width, got.height) != want:
        problems.append(f"annotated size {got.width}x{got.height}, want {want[0]}x{want[1]}")
    return problems


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def check_events(events: list[dict[str, Any]], ref: Probe, *, batch: bool = True) -> list[str]:
    """Events of one stream: pts of each event = its frame's input pts, ts = start + pts,
    frames_read = the input's frame count (batch); pts non-decreasing in order."""
    problems = []
    online = [e for e in events if e["type"] == "stream.online"]
    offline = [e for e in events if e["type"] == "stream.offline"]
    if not online:
        problems.append("no stream.online event")
    if batch:
        if len(offline) != 1:
            problems.append(f"{len(offline)} stream.offline events")
        elif offline[0]["frames_read"] != len(ref.pts):
            problems.append(f"frames_read {offline[0]['frames_read']}, input has {len(ref.pts)}")
    stamped = [e for e in events if e.get("frame") is not None and e.get("pts") is not None]
    offsets = [_epoch(e["ts"]) - e["pts"] for e in stamped]
    if offsets and max(offsets) - min(offsets) > 0.002:
        problems.append("events' ts - pts not constant (ts disagrees with the video)")
    pts = [e["pts"] for e in stamped]
    if any(b < a for a, b in zip(pts, pts[1:])):
        problems.append("events' pts go backwards")
    if batch:
        for e in stamped:
            if e["frame"] >= len(ref.pts) or abs(e["pts"] - ref.pts[e["frame"]]) > TS_TOL:
                problems.append(f"{e['type']} at frame {e['frame']}: pts {e['pts']} is not the "
                                "input's")
                break
    return problems


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- running vigil ------------------------------------------------------------------------------

VIGIL = [sys.executable, "-m", "pipeline.cli"]
MODEL_ARGS = ["--model", "simnet", "--device", "cpu", "--no-progress"]


def vigil_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("VIGIL__RUNTIME__TORCH_THREADS", "1")
    return env


def run_vigil(args: list[str], timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args], capture_output=True, text=True, timeout=timeout_s, env=vigil_env(),
        cwd=REPO,
    )


def graph_config(path: Path, inputs: dict[str, Path], out: Path, *, live: bool) -> Path:
    """A `vigil run` config with one source per case (stream id = case name)."""
    import yaml

    cfg = {
        "sources": [{"uri": str(p), "stream_id": name, "loop": live} for name, p in inputs.items()],
        "detect": {"model": "simnet", "device": "cpu"},
        "runtime": {"mode": "live" if live else "batch", "max_streams": max(16, len(inputs)),
                    "ring_slots": 4},
        "output": {"dir": str(out), "timings": live},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Outcome:
    """Per case and check (graph, archive, live, exit2): the problems found."""

    problems: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def add(self, case: str, check: str, problems: list[str]) -> None:
        self.problems.setdefault(case, {})[check] = problems

    def failed(self) -> list[str]:
        return sorted(c for c, checks in self.problems.items() if any(checks.values()))


def check_graph(cases: list[Case], files: dict[str, Path], refs: dict[str, Probe], work: Path,
                outcome: Outcome, chunk: int = 10) -> None:
    """`vigil run` (the process graph, batch mode) over the cases, ``chunk`` streams per run."""
    names = [c.name for c in cases]
    by_name = {c.name: c for c in cases}
    for start in range(0, len(names), chunk):
        group = names[start : start + chunk]
        out = work / f"graph{start}"
        cfg = graph_config(work / f"graph{start}.yaml", {n: files[n] for n in group}, out,
                           live=False)
        proc = run_vigil(["run", str(cfg), *MODEL_ARGS])
        events = read_events(out / "events.jsonl")
        for name in group:
            if proc.returncode != 0:
                outcome.add(name, "graph", [f"exit {proc.returncode}: {_last(proc.stderr)}"])
                continue
            video = out / (f"annotated-{name}.mp4" if len(group) > 1 else "annotated.mp4")
            mine = [e for e in events if e.get("stream") == name]
            outcome.add(name, "graph", check_video(by_name[name], refs[name], video)
                        + check_events(mine, refs[name]))


def check_archive(cases: list[Case], files: dict[str, Path], refs: dict[str, Probe], work: Path,
                  outcome: Outcome) -> None:
    """One archive run (`vigil process A B ... --out`) over every case."""
    out = work / "archive"
    proc = run_vigil(["process", *[str(files[c.name]) for c in cases], "--out", str(out),
                      *MODEL_ARGS])
    manifest = {}
    if (out / "manifest.jsonl").exists():
        for line in (out / "manifest.jsonl").read_text().splitlines():
            rec = json.loads(line)
            manifest[Path(rec["path"]).name] = rec
    for case in cases:
        rec = manifest.get(files[case.name].name)
        if rec is None:
            outcome.add(case.name, "archive",
                        [f"not in the manifest (exit {proc.returncode}: {_last(proc.stderr)})"])
            continue
        if rec["status"] != "done":
            outcome.add(case.name, "archive", [f"{rec['status']}: {rec.get('error')}"])
            continue
        folder = Path(rec["output"])
        if not folder.is_absolute():
            folder = out / folder
        problems = check_video(case, refs[case.name], folder / "annotated.mp4")
        problems += check_events(read_events(folder / "events.jsonl"), refs[case.name])
        if rec["frames"] != len(refs[case.name].pts):
            problems.append(f"manifest frames {rec['frames']}, input has "
                            f"{len(refs[case.name].pts)}")
        outcome.add(case.name, "archive", problems)


def _frames_seen(path: Path) -> dict[str, list[int]]:
    """Frame indices per stream in a timings.jsonl that is still being written."""
    seen: dict[str, list[int]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the line being written
                continue
            seen.setdefault(rec["stream"], []).append(rec["frame"])
    return seen


def check_live(cases: list[Case], files: dict[str, Path], refs: dict[str, Probe], work: Path,
               outcome: Outcome, timeout_s: float = 600.0, chunk: int = 20) -> None:
    """`--mode live --loop`, stopped (SIGTERM) once every stream has looped (a frame index
    past its input's frame count), at most ``timeout_s``: exit 0; every stream online; frame
    indices and the annotated video's pts strictly increasing across passes; events' ``pts``
    never back and ``ts`` on the stream's clock."""
    import signal
    import time

    names = [c.name for c in cases]
    for start in range(0, len(names), chunk):
        group = names[start : start + chunk]
        out = work / f"live{start}"
        cfg = graph_config(work / f"live{start}.yaml", {n: files[n] for n in group}, out,
                           live=True)
        proc = subprocess.Popen(
            [*VIGIL, "run", str(cfg), *MODEL_ARGS], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=vigil_env(), cwd=REPO,
        )
        deadline = time.monotonic() + timeout_s
        seen: dict[str, list[int]] = {}
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                seen = _frames_seen(out / "timings.jsonl")
                if all(max(seen.get(n, [-1])) >= len(refs[n].pts) for n in group):
                    break
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        seen = _frames_seen(out / "timings.jsonl")
        events = read_events(out / "events.jsonl")
        for name in group:
            if proc.returncode != 0:
                outcome.add(name, "live", [f"exit {proc.returncode}: {_last(err)}"])
                continue
            problems = []
            frames = seen.get(name, [])
            if not frames or max(frames) < len(refs[name].pts):
                problems.append(f"did not loop: frames {frames[-3:]} in {timeout_s:.0f} s")
            if not _increasing([float(f) for f in frames]):
                problems.append("frame indices not strictly increasing")
            video = out / (f"annotated-{name}.mp4" if len(group) > 1 else "annotated.mp4")
            got = ffprobe_frames(video).pts if video.exists() else []
            if len(got) < 2 or not _increasing(got):
                problems.append(f"annotated video: {len(got)} frames, pts not increasing")
            mine = [e for e in events if e.get("stream") == name]
            outcome.add(name, "live", problems + check_events(mine, refs[name], batch=False))


def check_exit2(case: Case, path: Path, work: Path, outcome: Outcome) -> None:
    """`vigil process BAD --out`: exit 2 and one line on stderr naming the file."""
    proc = run_vigil(["process", str(path), "--out", str(work / f"bad-{case.name}"), *MODEL_ARGS],
                     timeout_s=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit {proc.returncode}, want 2: {_last(proc.stderr)}")
    elif len(lines) != 1 or path.name not in lines[0]:
        problems.append(f"want one line naming the file, got {lines!r}")
    outcome.add(case.name, "exit2", problems)


def _last(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_corpus(cases: list[Case], work: Path, *,
               log: Callable[[str], None] = lambda s: None) -> tuple[Outcome, dict[str, str]]:
    """Make the cases under ``work`` and run every check; returns the outcome and the cases
    skipped (name -> why: a producer not installed here)."""
    made = build(work / "inputs", cases)
    skipped = {n: str(v) for n, v in made.items() if not isinstance(v, Path)}
    ready = [c for c in cases if isinstance(made[c.name], Path)]
    files = {c.name: made[c.name] for c in ready}
    outcome = Outcome()
    for name, why in skipped.items():
        if why.startswith("producer failed"):
            outcome.add(name, "make", [why])
    good = [c for c in ready if c.expect == "ok"]
    refs = {c.name: ffprobe_frames(files[c.name]) for c in good}
    for case in good:
        if not refs[case.name].pts:
            outcome.add(case.name, "reference", ["ffprobe decodes no frame"])
    good = [c for c in good if refs[c.name].pts]
    log(f"{len(ready)} inputs made; graph (batch) ...")
    check_graph(good, files, refs, work, outcome)
    log("archive ...")
    check_archive(good, files, refs, work, outcome)
    log("live --loop ...")
    check_live(good, files, refs, work, outcome)
    for case in ready:
        if case.expect == "exit2":
            check_exit2(case, files[case.name], work, outcome)
    return outcome, {n: w for n, w in skipped.items() if not w.startswith("producer failed")}
