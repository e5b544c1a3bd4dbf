"""ActionLSTM / ActionForecaster: shapes, batching, save/load, and the shipped weights' accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.people.action import (
    ACTION_VOCAB,
    DEFAULT_WEIGHTS,
    ActionForecaster,
    ActionLSTM,
    flip_windows,
    window_features,
)

torch.set_num_threads(1)


def test_model_shapes_and_features() -> None:
    w = np.random.default_rng(0).normal(size=(4, 20, 17, 3)).astype(np.float32)
    f = window_features(w, 10.0)
    assert f.shape == (4, 20, 85)
    torch.testing.assert_close(
        f[:, 1:, 3], torch.as_tensor((w[:, 1:, 0, 0] - w[:, :-1, 0, 0]) * 10)
    )
    model = ActionLSTM(n_horizons=3)
    assert model(f).shape == (4, 3, len(ACTION_VOCAB))
    with pytest.raises(ValueError, match="B, T, 17, 3"):
        window_features(w[0], 10.0)
    flipped = flip_windows(w)
    np.testing.assert_array_equal(flipped[..., 5, 0], -w[..., 6, 0])
    np.testing.assert_array_equal(flip_windows(flipped), w)


def test_forecaster_batches_and_round_trips(tmp_path: Path) -> None:
    fc = ActionForecaster(weights="none", horizons_s=(0.5, 1.0))
    rng = np.random.default_rng(1)
    windows = {7: rng.normal(size=(20, 17, 3)), 3: rng.normal(size=(20, 17, 3))}
    out = fc.forecast(windows)
    assert [(f.track_id, f.horizon_s) for f in out] == [(3, 0.5), (3, 1.0), (7, 0.5), (7, 1.0)]
    for f in out:
        assert set(f.probs) == set(ACTION_VOCAB)
        assert sum(f.probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert f.action == max(f.probs, key=f.probs.get)
    # One batch gives the same numbers as one track at a time.
    single = fc.forecast({7: windows[7]})
    assert single[0].probs == pytest.approx(out[2].probs, abs=1e-6)
    assert fc.forecast({}) == []
    path = tmp_path / "a.pt"
    fc.save(path, seed=5)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["vocabulary"] == list(ACTION_VOCAB) and meta["seed"] == 5
    again = ActionForecaster.load(path, horizons_s=(1.0,))
    assert again.forecast({7: windows[7]})[0].probs == pytest.approx(out[3].probs, abs=1e-6)
    with pytest.raises(ValueError, match="horizon 2.0"):
        ActionForecaster.load(path, horizons_s=(2.0,))
    with pytest.raises(FileNotFoundError):
        ActionForecaster(weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="20 steps"):
        fc.forecast({1: np.zeros((5, 17, 3))})


def test_vocabulary_matches_synthetic() -> None:
    world = pytest.importorskip("stream.sim.world")
    assert tuple(world.ACTIONS) == ACTION_VOCAB


def test_shipped_weights_small_with_metadata() -> None:
    assert DEFAULT_WEIGHTS.exists(), "run scripts/train_action.py --source synthetic --seed 0"
    assert DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    for key in ("vocabulary", "rate_hz", "window_s", "horizons_s", "seed", "heldout_accuracy"):
        assert key in meta


def test_shipped_weights_forecast_held_out_synthetic() -> None:
    """Shipped weights on held-out synthetic sequences (a seed training never used), through the
    live PoseBuffer path: the issue's >= 0.9 at the 0.5 s horizon, and the current action.

    Reachable because the synthetic figures announce their next action in the last ~0.75 s of a
    segment (stream.sim.motion's anticipation cues: slowing down, bending the knees, staggering,
    raising a hand, ...), as real people do."""
    sample = pytest.importorskip("stream.sim.sample")
    from models.people.pose_buffer import normalise_window, resample_track

    fc = ActionForecaster(weights="auto", horizons_s=(0.0, 0.5, 1.0))
    rng = np.random.default_rng(424242)
    x, _, y_h = sample.motion_dataset(
        rng, 500, rate_hz=fc.rate_hz, window_s=fc.window_s, horizons_s=(0.0, 0.5, 1.0)
    )
    t = np.arange(x.shape[1]) / fc.rate_hz
    windows = np.stack([normalise_window(resample_track(t, r, t)) for r in x])
    correct = fc.predict_proba(windows).argmax(-1) == y_h  # (n, 3)
    assert correct[:, 0].mean() >= 0.9, correct.mean(0)  # the current action
    assert correct[:, 1].mean() >= 0.9, correct.mean(0)  # 0.5 s ahead
