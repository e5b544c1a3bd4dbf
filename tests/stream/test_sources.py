from __future__ import annotations

from pathlib import Path

import pytest

from stream.sources import FileSource, SourceError, open_source, redact_uri
from tests.conftest import write_moving_box_video


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
    assert redact_uri("/plain/path.mp4") == "/plain/path.mp4"


def test_truncated_stream_without_an_index_still_yields_its_frames(tmp_path: Path):
    full = write_moving_box_video(tmp_path / "full.ts", n_frames=60, codec="mpeg2video")
    cut = tmp_path / "cut.ts"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert 10 < len(list(FileSource(cut).frames())) < 60
