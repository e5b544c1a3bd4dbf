"""Unit regressions of issue 13, fast: the annotated video's clock, presentation order, rotation,
odd sizes, the pixel cap. Inputs made by Debian's ffmpeg CLI (as users' files are) and PyAV."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from stream.sinks import VideoFileSink
from stream.sources import FileSource, LoopingSource, SourceError, open_source, probe_source
from tests.support import corpus

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg")


def _ffmpeg(path: Path, *args: str, size: str = "160x96", rate: str = "25", n: int = 12) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
         "-frames:v", str(n), *args, str(path)],
        check=True, timeout=120,
    )
    return path


def _video_pts(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(f.pts * f.time_base) for f in c.decode(s))


@pytest.mark.parametrize(
    ("time_base", "fps"),
    [(Fraction(1, 1000), 30.0), (Fraction(1, 25), 25.0), (Fraction(1, 30), 30.0),
     (Fraction(1, 90000), 30000 / 1001)],
    ids=["mkv_1_1000_30fps", "avi_1_25", "avi_1_30", "ts_1_90000"],
)
def test_sink_keeps_the_input_clock(tmp_path: Path, time_base: Fraction, fps: float) -> None:
    """The MP4 muxer changes the stream's time base at header time; frames must still be
    stamped in the input's (they crashed with error 22, or came out at the wrong times)."""
    sink = VideoFileSink(tmp_path / "a.mp4", width=64, height=48, fps=fps, time_base=time_base)
    want = []
    for i in range(20):
        raw = int(round(i / fps / time_base))
        sink.write(np.full((48, 64, 3), i * 10, np.uint8), raw)
        want.append(float(raw * time_base))
    sink.close()
    got = _video_pts(tmp_path / "a.mp4")
    assert len(got) == 20
    assert np.allclose(got, want, atol=1e-3), (got, want)


def test_sink_pads_odd_sizes(tmp_path: Path) -> None:
    sink = VideoFileSink(
        tmp_path / "o.mp4", width=427, height=241, fps=25, time_base=Fraction(1, 25)
    )
    for i in range(3):
        sink.write(np.full((241, 427, 3), 100, np.uint8), i)
    sink.close()
    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (428, 242)


@needs_ffmpeg
@pytest.mark.parametrize("rate", ["25", "30"])
def test_avi_bframes_in_presentation_order(tmp_path: Path, rate: str) -> None:
    """AVI + H.264 B-frames: FFmpeg hands the pts out permuted; vigil sorts them."""
    path = _ffmpeg(tmp_path / "b.avi", "-c:v", "libx264", "-bf", "3", rate=rate)
    ref = corpus.ffprobe_frames(path).pts
    src = FileSource(path)
    frames = list(src.frames())
    pts = [f.pts for f in frames]
    assert len(pts) == len(ref) == 12
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert np.allclose(pts, ref, atol=1e-6)  # AVI's clock: frame i at i / fps, from 0
    assert np.allclose(pts, [i / int(rate) for i in range(12)], atol=1e-6)
    assert [f.frame_idx for f in frames] == list(range(12))
    assert src.end is not None and src.end.reason == "eof"


@needs_ffmpeg
def test_mkv_millisecond_clock(tmp_path: Path) -> None:
    path = _ffmpeg(tmp_path / "m.mkv", "-c:v", "libx264", rate="30")
    src = FileSource(path)
    assert src.info.time_base == Fraction(1, 1000)
    assert [f.pts_raw for f in src.frames()] == [round(i * 1000 / 30) for i in range(12)]


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_is_applied(tmp_path: Path, degrees: int) -> None:
    """Frames come out as ffmpeg's CLI shows them (it applies the display matrix)."""
    path = tmp_path / f"r{degrees}.mp4"
    corpus.rotated(degrees)(path)
    upright = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    src = FileSource(path)
    w, h = (96, 160) if degrees % 180 else (160, 96)
    assert (src.info.width, src.info.height) == (w, h)
    first = next(iter(src.frames())).rgb
    want = np.frombuffer(upright, np.uint8).reshape(h, w, 3)
    assert first.shape == want.shape
    assert np.abs(first.astype(int) - want).mean() < 8


@needs_ffmpeg
def test_pixel_cap_refuses_8192_square(tmp_path: Path) -> None:
    """issue 14 "No resolution cap": refused on open, before any buffer is sized."""
    path = tmp_path / "huge.mkv"
    _ffmpeg(path, "-c:v", "mjpeg", "-q:v", "31", size="8192x8192", rate="5", n=2)
    with pytest.raises(SourceError) as err:
        probe_source(str(path))
    assert err.value.reason == "too_large" and "max_pixels" in str(err.value)
    with pytest.raises(SourceError):
        open_source(str(path), loop=True, max_pixels=8192 * 4320)
    src = FileSource(tmp_path / "huge.mkv", max_pixels=None)
    assert (src.info.width, src.info.height) == (8192, 8192)
    src.close()


@needs_ffmpeg
def test_cli_refuses_8192_square_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.mkv"
    _ffmpeg(path, "-c:v", "mjpeg", "-q:v", "31", size="8192x8192", rate="5", n=2)
    proc = corpus.run_vigil(["process", str(path), "--out", str(tmp_path / "o"),
                             *corpus.MODEL_ARGS], timeout_s=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "max_pixels" in lines[0] and "8192x8192" in lines[0]
    assert not (tmp_path / "o" / "annotated.mp4").exists()


@needs_ffmpeg
def test_missing_pts_are_derived_from_the_rate(tmp_path: Path) -> None:
    """Raw H.264 (an elementary stream) carries no pts: frames are spaced by the rate."""
    raw = _ffmpeg(tmp_path / "p.h264", "-c:v", "libx264", "-bf", "2", "-f", "h264")
    src = FileSource(raw)
    pts = [f.pts for f in src.frames()]
    assert len(pts) == 12
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert np.allclose(np.diff(pts), 1 / src.info.fps, atol=2e-3)


def test_looping_keeps_presentation_order(tmp_path: Path) -> None:
    path = tmp_path / "b.avi"
    corpus.pyav("mpeg4", options={"bf": "2"})(path)
    src = LoopingSource(str(path))
    pts = []
    for frame in src.frames():
        pts.append(frame.pts)
        if len(pts) == 30:
            break
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert src.passes == 3



def test_camera_over_the_pixel_cap_is_refused_and_reported_offline() -> None:
    """An RTSP camera whose frames exceed max_pixels: refused on open (reason too_large), so a
    ResilientSource reports it offline with that reason instead of ever sizing a ring."""
    from stream.sim.camera import RtspTestServer, missing_requirements
    from stream.sources import ResilientSource

    why = missing_requirements()
    if why:
        pytest.skip(why)
    server = RtspTestServer(width=320, height=240).start()
    try:
        with pytest.raises(SourceError) as err:
            open_source(server.url, open_timeout_s=20.0, max_pixels=320 * 240 - 1)
        assert err.value.reason == "too_large" and "320x240" in str(err.value)
        stop = False
        items = ResilientSource(
            server.url,
            should_stop=lambda: stop,
            open_kwargs={"open_timeout_s": 20.0, "max_pixels": 320 * 240 - 1},
            max_attempts=1,
        )
        statuses = [s for s in items if not hasattr(s, "rgb")]
        assert statuses[0].kind == "offline" and statuses[0].reason == "too_large"
        assert statuses[-1].kind == "gave_up"
        ok = open_source(server.url, open_timeout_s=20.0, max_pixels=320 * 240)
        ok.close()
    finally:
        server.stop()


@needs_ffmpeg
def test_a_refused_file_closes_its_decoder_before_its_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: a file refused on its first frame (too_large) closed the container but left the
    decoding generator suspended over it, to be finalised later over a closed container. The
    header says 320x240; the first frame decoded says 8192x8192 (a size change in-stream)."""
    path = _ffmpeg(tmp_path / "s.mkv", "-c:v", "mjpeg", size="320x240", n=2)
    events: list[str] = []

    class _Spy:  # the container, recording when it is closed
        def __init__(self, inner: object) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        def close(self) -> None:
            events.append("container")
            self._inner.close()

    real_open, real_decode = av.open, FileSource._decode

    def spy_decode(self: FileSource):  # noqa: ANN202
        try:
            yield SimpleNamespace(width=8192, height=8192)
            yield from real_decode(self)
        finally:
            events.append("decoder")

    monkeypatch.setattr(av, "open", lambda *a, **k: _Spy(real_open(*a, **k)))
    monkeypatch.setattr(FileSource, "_decode", spy_decode)
    with pytest.raises(SourceError) as err:
        FileSource(path, max_pixels=8192 * 4320)
    assert err.value.reason == "too_large"
    assert events and events[0] == "decoder" and "container" in events, events
