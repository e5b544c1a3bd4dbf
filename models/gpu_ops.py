"""Pixel and post-processing operations that run where the tensors are (CUDA or CPU).

Everything here is plain torch, device-agnostic: the same function runs on CUDA tensors in the
GPU path and on CPU tensors in tests and on machines without a GPU.

- :func:`nv12_to_rgb`: NVDEC's output format (a luma plane and an interleaved half-resolution
  chroma plane) to RGB, BT.601 / BT.709, limited or full range, with an optional resize;
- :func:`resize_rgb`: bilinear resize of RGB batches;
- :func:`nms_keep`: score threshold, class filter and class-aware NMS on the device, so only the
  kept boxes cross to the host;
- :func:`encode_jpeg`: JPEG encoding with ``torchvision.io.encode_jpeg`` (nvJPEG on CUDA
  tensors), falling back to OpenCV on the host;
- :func:`downscale_for_output`: the frame the output sinks get, at most ``max_width`` wide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

LOG = logging.getLogger(__name__)

ColorMatrix = Literal["bt601", "bt709"]

#: (Kr, Kb) luma coefficients of each colour matrix.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def yuv_to_rgb_matrix(matrix: ColorMatrix = "bt601", full_range: bool = False) -> torch.Tensor:
    """``(3, 3)`` float32 matrix ``M`` with ``rgb = M @ (y - oy, u - 128, v - 128)``, 8-bit.

    Limited ("TV") range scales luma from [16, 235] and chroma from [16, 240] to [0, 255];
    full ("PC") range takes them as they are (then ``oy = 0``)."""
    if matrix not in _KR_KB:
        raise ValueError(f"matrix must be one of {tuple(_KR_KB)}, got {matrix!r}")
    kr, kb = _KR_KB[matrix]
    kg = 1.0 - kr - kb
    ys, cs = (1.0, 1.0) if full_range else (255.0 / 219.0, 255.0 / 224.0)
    m = torch.tensor(
        [
            [ys, 0.0, 2.0 * (1.0 - kr) * cs],
            [ys, -2.0 * (1.0 - kb) * kb / kg * cs, -2.0 * (1.0 - kr) * kr / kg * cs],
            [ys, 2.0 * (1.0 - kb) * cs, 0.0],
        ],
        dtype=torch.float32,
    )
    return m


def nv12_to_rgb(
    y: torch.Tensor,
    uv: torch.Tensor,
    *,
    matrix: ColorMatrix = "bt601",
    full_range: bool = False,
    size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.uint8,
) -> torch.Tensor:
    """NV12 planes to RGB, on the planes' device.

    Args:
        y: ``(H, W)`` or ``(B, H, W)`` uint8 luma (any strides: a decoder's pitched plane).
        uv: ``(H/2, W/2, 2)`` or ``(B, H/2, W/2, 2)`` uint8 interleaved Cb, Cr.
        matrix: ``bt601`` (SD, and what FFmpeg assumes for untagged video) or ``bt709`` (HD).
        full_range: the samples use the full [0, 255] range (JPEG-style) instead of [16, 235].
        size: ``(h, w)`` output size in pixels (bilinear), None: ``(H, W)``.
        dtype: ``torch.uint8`` (rounded, clamped to [0, 255]) or a float dtype (``[0, 1]``).

    Returns:
        ``(3, h, w)`` or ``(B, 3, h, w)`` RGB, channels first, contiguous.

    Chroma is upsampled by nearest neighbour (each chroma sample covers a 2x2 luma block), as
    FFmpeg's fast paths do; differences to a bilinear upsampler are at colour edges only.
    """
    single = y.dim() == 2
    if single:
        y, uv = y.unsqueeze(0), uv.unsqueeze(0)
    if y.dim() != 3 or uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(
            f"expected y (B, H, W) and uv (B, H/2, W/2, 2), got {tuple(y.shape)} and "
            f"{tuple(uv.shape)}"
        )
    b, h, w = y.shape
    if uv.shape[0] != b or uv.shape[1] != (h + 1) // 2 or uv.shape[2] != (w + 1) // 2:
        raise ValueError(f"chroma plane {tuple(uv.shape)} does not match luma {tuple(y.shape)}")
    work = torch.float16 if y.is_cuda else torch.float32  # half is exact enough for 8-bit
    luma = y.to(work).unsqueeze(1)  # (B, 1, H, W)
    chroma = uv.to(work).permute(0, 3, 1, 2)  # (B, 2, H/2, W/2)
    chroma = chroma.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[:, :, :h, :w]
    offset_y = 0.0 if full_range else 16.0
    yuv = torch.cat([luma - offset_y, chroma - 128.0], dim=1)  # (B, 3, H, W)
    m = yuv_to_rgb_matrix(matrix, full_range).to(device=y.device, dtype=work)
    rgb = torch.einsum("ij,bjhw->bihw", m, yuv)
    if size is not None and tuple(size) != (h, w):
        rgb = nn.functional.interpolate(
            rgb.float(), size=tuple(size), mode="bilinear", align_corners=False
        )
    out = _finish(rgb, dtype)
    return out[0] if single else out


def resize_rgb(
    rgb: torch.Tensor, size: tuple[int, int], *, antialias: bool = False
) -> torch.Tensor:
    """Bilinear resize of ``(3, H, W)`` or ``(B, 3, H, W)`` RGB to ``size = (h, w)`` pixels.

    uint8 in, uint8 out (rounded); float in, float out. ``antialias`` low-passes first when
    shrinking (better output frames, slower)."""
    single = rgb.dim() == 3
    x = rgb.unsqueeze(0) if single else rgb
    if tuple(x.shape[-2:]) == tuple(size):
        return rgb
    y = nn.functional.interpolate(
        x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias
    )
    y = _finish(y, torch.uint8, scaled=False) if rgb.dtype == torch.uint8 else y.to(rgb.dtype)
    return y[0] if single else y


def _finish(rgb: torch.Tensor, dtype: torch.dtype, *, scaled: bool = True) -> torch.Tensor:
    if dtype == torch.uint8:
        return rgb.float().round_().clamp_(0, 255).to(torch.uint8).contiguous()
    out = rgb.to(dtype)
    return (out / 255.0 if scaled else out).clamp_(0, 1).contiguous()


# --- detection post-processing on the device -------------------------------------------------


def nms_keep(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    score_threshold: float,
    iou_threshold: float,
    class_ids: torch.Tensor | None = None,
    max_detections: int | None = None,
) -> torch.Tensor:
    """Indices of the boxes to keep, computed where the tensors are.

    Score threshold, optional class filter, class-aware NMS (boxes of different labels never
    suppress each other), sorted by score descending, at most ``max_detections``: the same
    result as :func:`models.detection.nms_detections` on the host, without copying the
    rejected boxes there.

    Args:
        boxes: ``(n, 4)`` xyxy pixels; scores ``(n,)``; labels ``(n,)`` integer class ids.
        class_ids: labels to keep (None: all).

    Returns:
        ``(k,)`` int64 indices into the inputs, on their device.
    """
    from torchvision.ops import batched_nms

    keep = scores >= score_threshold
    if class_ids is not None:
        keep &= torch.isin(labels, class_ids.to(labels.device))
    idx = torch.nonzero(keep).flatten()
    if idx.numel() == 0:
        return idx
    order = batched_nms(boxes[idx].float(), scores[idx].float(), labels[idx], iou_threshold)
    kept = idx[order]
    return kept[:max_detections] if max_detections is not None else kept


# --- output frames ---------------------------------------------------------------------------


def downscale_for_output(rgb: np.ndarray, max_width: int | None) -> np.ndarray:
    """``(H, W, 3) uint8`` frame at most ``max_width`` pixels wide (aspect kept, even sizes for
    H.264's 4:2:0); None or a narrower frame: the frame itself, untouched."""
    h, w = rgb.shape[:2]
    if not max_width or w <= max_width:
        return rgb
    import cv2

    nw = max(2, int(max_width) // 2 * 2)
    nh = max(2, round(h * nw / w / 2) * 2)
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)


def encode_jpeg(
    rgb: np.ndarray | torch.Tensor, quality: int = 80, *, device: str = "cpu"
) -> bytes | None:
    """One RGB frame as JPEG bytes, on ``device``.

    Args:
        rgb: ``(H, W, 3) uint8`` array, or ``(3, H, W) uint8`` tensor on any device.
        quality: 1..100.
        device: ``cpu`` (OpenCV) or ``cuda[:N]`` (``torchvision.io.encode_jpeg``, nvJPEG). A
            CUDA encode that fails (no nvJPEG in this torchvision, no device) logs the reason
            once and falls back to the host encoder.

    Returns:
        JPEG bytes, or None when the encoder refuses the frame.
    """
    if torch.device(device).type == "cuda" and _CUDA_JPEG.usable:
        try:
            t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(
                np.ascontiguousarray(rgb)
            ).permute(2, 0, 1)
            from torchvision.io import encode_jpeg as tv_encode

            data = tv_encode(t.to(device).contiguous(), quality=int(quality))
            return bytes(data.cpu().numpy().tobytes())
        except Exception as exc:  # noqa: BLE001 - any failure means: use the host encoder
            _CUDA_JPEG.disable(exc)
    host = rgb.permute(1, 2, 0).cpu().numpy() if isinstance(rgb, torch.Tensor) else rgb
    import cv2

    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(np.ascontiguousarray(host), cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, int(quality)],
    )
    return jpeg.tobytes() if ok else None


class _CudaJpegState:
    """Whether CUDA JPEG encoding still looks usable in this process (off after one failure)."""

    def __init__(self) -> None:
        self.usable = True
        self.reason: str | None = None

    def disable(self, exc: BaseException) -> None:
        self.usable = False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.reason = f"{type(exc).__name__}: {first}"
        LOG.warning("CUDA JPEG encoding unavailable (%s): encoding on the host", self.reason)


_CUDA_JPEG = _CudaJpegState()


def batch_chunks(n: int, parts: int) -> Sequence[range]:
    """``range(n)`` split into ``parts`` contiguous chunks of near-equal size (none empty)."""
    parts = max(1, min(int(parts), n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]
