"""The fast subset of the format corpus (issue 13): the bug cases and a handful more, through
the process graph, the archive runner and ``--mode live --loop``;
``python -m scripts.check_formats`` runs all of it (in ``.ci/run``). Inputs are made by Debian's
ffmpeg and PyAV at test time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import corpus

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs Debian's ffmpeg/ffprobe (installed by .ci/run)",
)

FAST = [c for c in corpus.CASES if c.fast]


@pytest.fixture(scope="session")
def fast_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[corpus.Outcome, Path]:
    """Make the fast cases once per session and run every check on them."""
    work = tmp_path_factory.mktemp("formats")
    outcome, skipped = corpus.run_corpus(FAST, work)
    assert not skipped, skipped
    return outcome, work


@pytest.mark.slow
@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_case(case: corpus.Case, fast_corpus: tuple[corpus.Outcome, Path]) -> None:
    outcome, _ = fast_corpus
    checks = outcome.problems.get(case.name, {})
    want = {"graph", "archive", "live"} if case.expect == "ok" else {"exit2"}
    assert want <= set(checks), f"checks run: {sorted(checks)}"
    problems = {k: v for k, v in checks.items() if v}
    assert not problems, problems


def test_corpus_is_large_enough() -> None:
    """Issue 13: at least 25 cases, two producers where they differ, the listed kinds."""
    names = [c.name for c in corpus.CASES]
    assert len(names) >= 25 and len(set(names)) == len(names)
    assert {c.producer for c in corpus.CASES} == {"ffmpeg", "pyav", "gst"}
    for needle in ("mkv", "avi", "mp4", "mov", "webm", "ts_", "flv", "hevc", "av1", "vp8",
                   "vp9", "mjpeg", "mpeg2", "10bit", "rot90", "rot180", "rot270", "odd",
                   "4k", "one_frame", "vfr", "audio_first", "two_video", "non_keyframe",
                   "corrupt", "truncated", "30000_1001", "90k", "tb1000"):
        assert any(needle in n for n in names), needle
