"""OpenPifPaf's CPU decoder in a thread pool (``backend.decode_threads``), overlapping the
network's next chunk: same poses, same order, decode on the pool's threads, errors surface."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from models.perception.build import build_perceiver_from_config
from models.pose import PoseEstimator
from models.runtime.optional import openpifpaf_status
from pipeline.config import VigilConfig
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene

pytestmark = pytest.mark.skipif(
    openpifpaf_status() is not None, reason=f"openpifpaf unusable: {openpifpaf_status()}"
)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    scene = make_scene(5, width=160, height=96, n_people=2)
    return [render_frame(scene, i)[0] for i in range(5)]


def _recording(est: PoseEstimator) -> list[tuple[str, float]]:
    """Wrap the estimator's decode: record (thread name, fields checksum) per image."""
    calls: list[tuple[str, float]] = []
    inner = est._impl.decode

    def decode(fields, scale, decoder=None):
        calls.append((threading.current_thread().name, float(sum(f.sum() for f in fields))))
        return inner(fields, scale, decoder=decoder)

    est._impl.decode = decode
    return calls


def test_pooled_decode_equals_inline(frames: list[np.ndarray]) -> None:
    torch.manual_seed(0)
    inline = PoseEstimator(model="shufflenetv2k16", weights="none", input_size=129,
                           score_threshold=0.0)  # fmt: skip
    pooled = PoseEstimator(model="shufflenetv2k16", weights="none", input_size=129,
                           score_threshold=0.0, backend=_opts(2))  # fmt: skip
    assert inline._impl.pool is None and pooled._impl.pool is not None
    calls_inline, calls_pooled = _recording(inline), _recording(pooled)
    want, got = inline.estimate(frames), pooled.estimate(frames)
    assert len(got) == len(want) == 5
    for w, g in zip(want, got):
        np.testing.assert_allclose(g.poses.keypoints, w.poses.keypoints, atol=1e-3)
    # The same image reached each decode call, in order (chunks stitched back correctly) ...
    np.testing.assert_allclose([c[1] for c in calls_pooled], [c[1] for c in calls_inline],
                               rtol=1e-4)  # fmt: skip
    # ... and the pooled decodes ran on the pool's threads, not the caller's.
    assert all(name.startswith("pifpaf-decode") for name, _ in calls_pooled)
    assert all(not name.startswith("pifpaf-decode") for name, _ in calls_inline)


def test_decoder_error_in_pool_reaches_the_caller(frames: list[np.ndarray]) -> None:
    """Fault: the CPU decoder raises in a pool thread: the batch fails loudly, no hang."""
    est = PoseEstimator(model="shufflenetv2k16", weights="none", input_size=129, backend=_opts(2))

    def broken(fields, scale, decoder=None):
        raise RuntimeError("decoder exploded")

    est._impl.decode = broken
    with pytest.raises(RuntimeError, match="decoder exploded"):
        est.estimate(frames[:3])


def test_decode_threads_reach_the_pose_stage_from_config() -> None:
    cfg = {
        "detect": {"model": "none"},
        "pose": {"enabled": True, "model": "shufflenetv2k16", "weights": "none",
                 "input_size": 129},
        "backend": {"name": "eager", "decode_threads": 3},
    }  # fmt: skip
    perceiver = build_perceiver_from_config(VigilConfig.model_validate(cfg), device="cpu")
    assert perceiver.pose._impl.pool._max_workers == 3
    cfg["backend"]["decode_threads"] = 0
    perceiver = build_perceiver_from_config(VigilConfig.model_validate(cfg), device="cpu")
    assert perceiver.pose._impl.pool is None


def _opts(threads: int):
    from models.runtime.options import BackendOptions

    return BackendOptions("eager", device="cpu", decode_threads=threads)
