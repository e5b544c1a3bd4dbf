from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stream.redact import redact
from stream.sources import (
    FileSource,
    LoopingSource,
    SourceError,
    SourceFrame,
    StreamInfo,
    open_source,
)
from tests.support.videos import write_moving_box_video


def test_file_source_gives_every_frame_with_pts_in_seconds(tiny_video: Path):
    src = FileSource(tiny_video)
    assert (src.info.width, src.info.height, src.info.fps) == (160, 96, 10.0)
    frames = list(src.frames())
    assert [f.frame_idx for f in frames] == list(range(20))
    assert [round(f.pts, 3) for f in frames] == [round(i / 10, 3) for i in range(20)]
    assert frames[0].rgb.shape == (96, 160, 3)
    assert frames[3].capture_ts - frames[0].capture_ts == pytest.approx(0.3)
    assert src.end.reason == "eof" and src.end.frames_read == 20


def test_capture_ts_is_reproducible_across_opens(tiny_video: Path):
    a = [f.capture_ts for f in FileSource(tiny_video).frames()]
    b = [f.capture_ts for f in FileSource(tiny_video).frames()]
    assert a == b


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_bytes(b""), p)[1], "is empty"),
        (lambda p: (p.write_text("hello, I am not a video\n" * 50), p)[1], "not a readable video"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
    ],
    ids=["missing", "zero-byte", "not-video", "directory"],
)
def test_bad_files_raise_one_line_source_errors(tmp_path: Path, make, message):
    path = make(tmp_path / "input.mp4")
    with pytest.raises(SourceError, match=message) as info:
        FileSource(path)
    assert "\n" not in str(info.value)


def test_truncated_stream_yields_frames_before_the_break(tmp_path: Path):
    """Regression: a cut-off file must not be treated as a clean end nor lose its frames."""
    full = write_moving_box_video(tmp_path / "full.mp4", n_frames=60)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    src = FileSource(cut)
    frames = list(src.frames())
    assert 0 < len(frames) < 60
    assert src.end.reason == "truncated" and src.end.frames_read == len(frames)


def test_unsupported_scheme_and_credentials_are_redacted():
    with pytest.raises(SourceError, match=r"rtsp://\*\*\*@cam/x") as info:
        open_source("rtsp://admin:hunter2@cam/x")
    assert "hunter2" not in str(info.value)
    assert redact("/plain/path.mp4") == "/plain/path.mp4"


def test_truncated_stream_without_an_index_still_yields_its_frames(tmp_path: Path):
    full = write_moving_box_video(tmp_path / "full.ts", n_frames=60, codec="mpeg2video")
    cut = tmp_path / "cut.ts"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert 10 < len(list(FileSource(cut).frames())) < 60


def test_redact_uri_hides_a_password_holding_an_at_sign():
    assert redact("rtsp://admin:p@ss@cam:554/x") == "rtsp://***@cam:554/x"
    assert redact("rtsp://cam/x@y") == "rtsp://cam/x@y"  # an "@" in the path is no userinfo


# --- looping files -----------------------------------------------------------------------------


def test_looping_file_continues_pts_and_frame_indexes_across_passes(tiny_video: Path):
    """2.5 times a 20-frame 10 fps file: one continuous 10 fps stream, never pts backwards."""
    ends: list[tuple[int, str, int]] = []
    src = LoopingSource(
        str(tiny_video),
        open_kwargs={"decoder": "software"},
        on_pass_end=lambda n, end: ends.append((n, end.reason, end.frames_read)),
    )
    assert src.info.frame_count is None and src.info.fps == 10.0
    it = src.frames()
    frames = [next(it) for _ in range(50)]
    it.close()
    assert [f.frame_idx for f in frames] == list(range(50))
    assert [round(f.pts, 3) for f in frames] == [round(i / 10, 3) for i in range(50)]
    assert all(b.pts_raw > a.pts_raw for a, b in zip(frames, frames[1:]))
    assert all(f.capture_ts == pytest.approx(src.info.start_ts + f.pts) for f in frames)
    assert float(frames[-1].pts_raw * src.info.time_base) == pytest.approx(frames[-1].pts)
    # Same pixels as the file, pass after pass.
    assert (frames[20].rgb == frames[0].rgb).all() and (frames[45].rgb == frames[5].rgb).all()
    assert ends == [(1, "eof", 20), (2, "eof", 20)] and src.passes == 3
    assert src.end is not None and src.end.reason == "stopped" and src.end.frames_read == 50


def test_open_source_loop_flag_loops_files_and_image_folders(tmp_path: Path):
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((16, 24, 3), 40 * i, np.uint8))
    src = open_source(str(folder), fps=5.0, loop=True)
    assert isinstance(src, LoopingSource)
    it = src.frames()
    frames = [next(it) for _ in range(8)]
    it.close()
    assert [f.frame_idx for f in frames] == list(range(8))
    assert [f.pts_raw for f in frames] == list(range(8))
    assert [round(f.pts, 3) for f in frames] == [round(i / 5, 3) for i in range(8)]


def test_looping_source_raises_on_a_pass_without_frames_instead_of_spinning():
    opens = []

    class _Fake:
        info = StreamInfo("fake", 8, 8, 10.0, Fraction(1, 10), 2, 0.0, "fake")
        end = None

        def __init__(self, n: int) -> None:
            self.n = n

        def frames(self):
            for i in range(self.n):
                yield SourceFrame(np.zeros((8, 8, 3), np.uint8), i, i / 10, i, i / 10)

        def close(self) -> None:
            pass

    def opener(uri: str, **kwargs):
        opens.append(uri)
        return _Fake(2 if len(opens) == 1 else 0)  # the file "empties" after its first pass

    src = LoopingSource("fake.mp4", opener=opener)
    with pytest.raises(SourceError, match="pass 2 yielded no frame") as info:
        list(src.frames())
    assert len(opens) == 2 and "\n" not in str(info.value)


def test_looping_file_that_breaks_keeps_looping_over_what_it_has(tmp_path: Path):
    full = write_moving_box_video(tmp_path / "full.mp4", n_frames=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    ends = []
    src = LoopingSource(str(cut), on_pass_end=lambda n, end: ends.append(end.reason))
    it = src.frames()
    frames = [next(it) for _ in range(70)]
    it.close()
    assert ends and set(ends) == {"truncated"}
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))
