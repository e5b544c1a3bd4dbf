"""Frames to the device: :class:`FrameUploader` (``(H, W, 3) uint8`` frames -> a normalised
float batch, through a reused pinned host buffer on CUDA) and :func:`check_frame`."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class FrameUploader:
    """``(H, W, 3) uint8 RGB`` frames -> ``(B, 3, H, W) float32`` normalised on the device.

    Uploads uint8 (4x fewer bytes than float) through a reused pinned host buffer on CUDA, so the
    copy is asynchronous, then converts, normalises and resizes on the device.

    Args:
        device: torch device string.
        mean, std: per-channel normalisation of ``[0, 1]`` pixel values (None: none).
        pinned: use a pinned host staging buffer (CUDA only).
    """

    def __init__(
        self,
        device: str,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pinned: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.pinned = pinned and self.device.type == "cuda"
        self._mean = None if mean is None else torch.tensor(mean, device=self.device)[:, None, None]
        self._std = None if std is None else torch.tensor(std, device=self.device)[:, None, None]
        self._host: torch.Tensor | None = None
        self._lock = threading.Lock()

    def __call__(
        self, frames: Sequence[np.ndarray], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Stack same-sized frames; ``size=(h, w)`` resizes (bilinear) after normalising."""
        for f in frames:
            check_frame(f)
        h, w = frames[0].shape[:2]
        if any(f.shape[:2] != (h, w) for f in frames):
            raise ValueError("FrameUploader needs frames of one size; group them by size first")
        batch = self._upload(frames)  # (B, H, W, 3) uint8 on device
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        if size is not None and tuple(size) != (h, w):
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x.contiguous()

    def _upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        shape = (len(frames), *frames[0].shape)
        if not self.pinned:
            host = torch.from_numpy(np.stack(frames))
            return host.to(self.device)
        with self._lock:
            if self._host is None or self._host.numel() < int(np.prod(shape)):
                self._host = torch.empty(int(np.prod(shape)), dtype=torch.uint8).pin_memory()
            host = self._host[: int(np.prod(shape))].view(shape)
            np.copyto(host.numpy(), np.stack(frames))
            out = host.to(self.device, non_blocking=True)
            # The next call reuses the buffer: wait until this copy has left it.
            torch.cuda.current_stream(self.device).synchronize()
            return out


def check_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless ``frame`` is an ``(H, W, 3) uint8`` array."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got shape {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
