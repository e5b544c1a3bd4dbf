"""Action forecasting: an LSTM over normalised pose windows that predicts the next action.

Input: windows from :class:`models.people.pose_buffer.PoseBuffer`, ``(T, 17, 3)`` = x, y in torso
lengths relative to the last mid-hip (y down) and a visible/filled flag, sampled at ``rate_hz``.
:func:`window_features` adds per-step velocities (torso lengths per second) so the network sees
motion directly. :class:`ActionLSTM` runs a one-layer LSTM over the steps and one linear head per
horizon on the last state; each head is a softmax over the action vocabulary.

:class:`ActionForecaster` is the inference wrapper the analytics stage uses: it loads weights and
their metadata (``<weights>.json`` next to the ``.pt``: vocabulary, rate, window, horizons,
training seed, held-out accuracy), batches the windows of all tracks of a frame, and returns
:class:`models.results.ActionForecast` objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.coco17 import FLIP_INDEX
from models.results import ActionForecast

__all__ = [
    "ACTION_VOCAB",
    "DEFAULT_WEIGHTS",
    "ActionLSTM",
    "ActionForecaster",
    "window_features",
    "flip_windows",
]

#: vigil's action vocabulary (the same tuple as ``stream.sim.world.ACTIONS``; models does not
#: import stream, so it is repeated here and checked equal in the tests).
ACTION_VOCAB: tuple[str, ...] = (
    "stand",
    "walk",
    "wave",
    "sit_down",
    "sit",
    "stand_up",
    "fall",
    "lie",
)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "action_lstm.pt"


def window_features(windows: np.ndarray | torch.Tensor, rate_hz: float) -> torch.Tensor:
    """Per-step features of normalised windows.

    Args:
        windows: ``(B, T, 17, 3)`` normalised x, y (torso lengths) and visible flag.
        rate_hz: the windows' sampling rate, Hz (scales velocities to per-second units).

    Returns:
        ``(B, T, 17 * 5) float32``: x, y, flag, then vx, vy (torso lengths per second, 0 at the
        first step), flattened per step.
    """
    w = torch.as_tensor(windows, dtype=torch.float32)
    if w.ndim != 4 or tuple(w.shape[2:]) != (17, 3):
        raise ValueError(f"windows must have shape (B, T, 17, 3), got {tuple(w.shape)}")
    vel = torch.zeros_like(w[..., :2])
    vel[:, 1:] = (w[:, 1:, :, :2] - w[:, :-1, :, :2]) * rate_hz
    return torch.cat([w, vel], dim=-1).flatten(2)


def flip_windows(windows: np.ndarray) -> np.ndarray:
    """Mirror ``(..., T, 17, 3)`` normalised windows left-right (negate x, swap sides)."""
    out = windows[..., list(FLIP_INDEX), :].copy()
    out[..., 0] *= -1
    return out


class ActionLSTM(nn.Module):
    """LSTM action forecaster.

    Args:
        n_actions: size of the action vocabulary.
        n_horizons: number of output heads (one per forecast horizon).
        in_features: features per step (85 = 17 * (x, y, flag, vx, vy)).
        hidden: LSTM hidden size.
        layers: stacked LSTM layers.
        dropout: dropout before the heads (training only).
    """

    def __init__(
        self,
        *,
        n_actions: int = len(ACTION_VOCAB),
        n_horizons: int = 2,
        in_features: int = 17 * 5,
        hidden: int = 96,
        layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.config = {
            "n_actions": n_actions,
            "n_horizons": n_horizons,
            "in_features": in_features,
            "hidden": hidden,
            "layers": layers,
            "dropout": dropout,
        }
        self.proj = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.heads = nn.Linear(hidden, n_horizons * n_actions)
        self.n_actions = n_actions
        self.n_horizons = n_horizons

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, in_features)`` -> logits ``(B, n_horizons, n_actions)``."""
        h, _ = self.lstm(self.proj(x))
        last = self.drop(h[:, -1])
        return self.heads(last).view(-1, self.n_horizons, self.n_actions)


class ActionForecaster:
    """Batched action forecasts for tracked people.

    Args:
        weights: ``"auto"`` (the shipped :data:`DEFAULT_WEIGHTS` if present, else random init
            with a warning in :attr:`weights_source`), ``"none"`` (random init, on purpose), or a
            path to a ``.pt`` saved by :meth:`save` (metadata read from the ``.json`` beside it).
        horizons_s: horizons to report, seconds; each must be one the weights were trained for.
            None = all of them.
        device: torch device string.
        rate_hz, window_s: used only when no metadata is loaded (random init).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a requested horizon the weights do not have.
    """

    def __init__(
        self,
        *,
        weights: str | Path = "auto",
        horizons_s: Sequence[float] | None = (0.5, 1.0),
        device: str = "cpu",
        rate_hz: float = 10.0,
        window_s: float = 2.0,
    ) -> None:
        self.device = torch.device(device)
        meta: dict[str, Any] = {
            "vocabulary": list(ACTION_VOCAB),
            "rate_hz": rate_hz,
            "window_s": window_s,
            "horizons_s": list(horizons_s) if horizons_s is not None else [0.5, 1.0],
            "model": {},
        }
        state = None
        path: Path | None = None
        if str(weights) == "auto":
            path = DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None
            self.weights_source = str(path) if path else "random (no shipped weights found)"
        elif str(weights) == "none":
            self.weights_source = "random"
        else:
            path = Path(weights)
            if not path.exists():
                raise FileNotFoundError(f"action weights not found: {path}")
            self.weights_source = str(path)
        if path is not None:
            state, meta = load_checkpoint(path)
        self.metadata = meta
        self.vocabulary: tuple[str, ...] = tuple(meta["vocabulary"])
        self.rate_hz = float(meta["rate_hz"])
        self.window_s = float(meta["window_s"])
        self.trained_horizons = tuple(float(h) for h in meta["horizons_s"])
        model_cfg = dict(meta.get("model") or {})
        model_cfg.update(n_actions=len(self.vocabulary), n_horizons=len(self.trained_horizons))
        self.model = ActionLSTM(**model_cfg)
        if state is not None:
            self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        wanted = self.trained_horizons if horizons_s is None else tuple(map(float, horizons_s))
        self._heads: list[int] = []
        for h in wanted:
            match = [i for i, th in enumerate(self.trained_horizons) if abs(th - h) < 1e-6]
            if not match:
                raise ValueError(
                    f"horizon {h} s not in the weights' horizons {list(self.trained_horizons)}"
                )
            self._heads.append(match[0])
        self.horizons_s = wanted

    @property
    def steps(self) -> int:
        """Window length ``T`` the forecaster expects."""
        return max(1, round(self.window_s * self.rate_hz))

    @torch.inference_mode()
    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """``(B, T, 17, 3)`` windows -> ``(B, len(horizons_s), n_actions)`` probabilities."""
        if len(windows) == 0:
            return np.zeros((0, len(self._heads), len(self.vocabulary)), np.float32)
        x = window_features(np.asarray(windows, np.float32), self.rate_hz).to(self.device)
        probs = torch.softmax(self.model(x), dim=-1)[:, self._heads]
        return probs.cpu().numpy()

    def forecast(self, windows: dict[int, np.ndarray]) -> list[ActionForecast]:
        """Forecast every track's action at each horizon, in one batch.

        Args:
            windows: ``{track_id: (T, 17, 3)}`` normalised windows (``T`` = :attr:`steps`).

        Returns:
            One :class:`ActionForecast` per (track, horizon), tracks in sorted id order.
        """
        ids = sorted(windows)
        if not ids:
            return []
        batch = np.stack([np.asarray(windows[i], np.float32) for i in ids])
        if batch.shape[1] != self.steps:
            raise ValueError(f"windows must have {self.steps} steps, got {batch.shape[1]}")
        probs = self.predict_proba(batch)
        out: list[ActionForecast] = []
        for b, tid in enumerate(ids):
            for k, h in enumerate(self.horizons_s):
                p = probs[b, k]
                dist = {a: float(v) for a, v in zip(self.vocabulary, p, strict=True)}
                out.append(ActionForecast(int(tid), self.vocabulary[int(p.argmax())], h, dist))
        return out

    def save(self, path: str | Path, **extra_metadata: Any) -> None:
        """Write ``path`` (state dict) and ``path.with_suffix('.json')`` (metadata)."""
        meta = {**self.metadata, **extra_metadata}
        meta["model"] = self.model.config
        save_checkpoint(self.model, path, meta)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> ActionForecaster:
        """Build a forecaster from a saved ``.pt`` (+ ``.json``)."""
        return cls(weights=path, **kwargs)


def save_checkpoint(model: ActionLSTM, path: str | Path, metadata: dict[str, Any]) -> None:
    """Save a model's state dict (float32) and its metadata JSON beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = {**metadata, "model": model.config}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a state dict and its metadata (``.json`` beside it; required)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        raise FileNotFoundError(
            f"action weights metadata not found: {meta_path} "
            f"(written by scripts/train_action.py next to {path.name})"
        )
    meta = json.loads(meta_path.read_text())
    for key in ("vocabulary", "rate_hz", "window_s", "horizons_s"):
        if key not in meta:
            raise ValueError(f"{meta_path}: metadata lacks {key!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state, meta
