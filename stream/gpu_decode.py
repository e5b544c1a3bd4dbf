"""Decode video files into RGB tensors on a device: NVDEC to CUDA memory, no host round trip.

:class:`DeviceDecoder` yields :class:`DeviceFrame` s whose ``rgb`` is a ``(3, H, W) uint8``
tensor on the requested device. Backends, tried in this order by ``backend="auto"`` on CUDA:

- ``pyav``: PyAV's CUDA hwaccel with ``is_hw_owned=True``: NVDEC writes NV12 surfaces in
  device memory, PyAV hands each plane over through DLPack (``VideoPlane.__dlpack__``), and
  :func:`models.gpu_ops.nv12_to_rgb` converts (and resizes) on the GPU. A stream the hardware
  cannot decode falls back to software frames, uploaded as NV12 (1.5 bytes per pixel);
- ``torchcodec``: ``torchcodec.decoders.VideoDecoder(device="cuda")`` (RGB on the device);
- ``pynvvideocodec``: NVIDIA's ``PyNvVideoCodec.SimpleDecoder`` with device memory, handed
  over through DLPack.

On CPU (and as ``backend="software"``) frames are decoded in software, converted to NV12 and
go through the very same DLPack + :func:`nv12_to_rgb` code, so that path is tested on machines
without a GPU. Optional packages are imported lazily; a backend that cannot be used is
skipped with its reason logged and kept in :attr:`DeviceDecoder.skipped`.

This is a building block for GPU streams (decode in the inference process, pixels never
leave the device); the multi-process graph still decodes in the source processes into shared
memory (see README, "GPU").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.gpu_ops import ColorMatrix, nv12_to_rgb

LOG = logging.getLogger(__name__)

#: Backends in the order ``auto`` tries them on CUDA.
CUDA_BACKENDS: tuple[str, ...] = ("pyav", "torchcodec", "pynvvideocodec")
BACKENDS: tuple[str, ...] = (*CUDA_BACKENDS, "software")


class DecoderUnavailable(RuntimeError):
    """No decoder backend can decode to the requested device; the message says why (one line
    per backend tried)."""


@dataclass
class DeviceFrame:
    """One decoded frame on the device.

    Attributes:
        rgb: ``(3, H, W) uint8`` RGB tensor on the decoder's device (``H, W`` = the ``size``
            asked for, else the stream's).
        frame_idx: 0-based index in decode order.
        pts: presentation time in seconds (None when the container has none).
        on_device: the pixels never went through host memory (NVDEC to device).
    """

    rgb: torch.Tensor
    frame_idx: int
    pts: float | None
    on_device: bool


def decoder_status(device: str = "cuda") -> dict[str, str | None]:
    """``{backend: None if it may be used on device, else the reason}``; imports lazily."""
    cuda = torch.device(device).type == "cuda"
    status: dict[str, str | None] = {"software": None}
    for name in CUDA_BACKENDS:
        if not cuda:
            status[name] = "needs a CUDA device"
        elif not torch.cuda.is_available():
            status[name] = "torch sees no CUDA device"
        else:
            status[name] = _import_reason(name)
    return status


class DeviceDecoder:
    """Decode one video file into RGB tensors on ``device``.

    Args:
        path: a video file FFmpeg reads.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        backend: ``auto`` (CUDA: the first usable of :data:`CUDA_BACKENDS`; CPU: software),
            or one of :data:`BACKENDS`.
        size: ``(h, w)`` output size in pixels (resized on the device), None: the stream's.
        matrix: colour matrix for NV12 -> RGB (None: from the stream's tags, BT.601 when
            untagged, as FFmpeg assumes).
        threads: software decoding threads (0: FFmpeg's choice).

    Raises:
        DecoderUnavailable: the named backend (or, for ``auto``, every backend) is unusable;
            ``FileNotFoundError`` for a missing file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cuda",
        backend: str = "auto",
        size: tuple[int, int] | None = None,
        matrix: ColorMatrix | None = None,
        threads: int = 0,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such video file: {self.path}")
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend must be auto or one of {BACKENDS}, got {backend!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device() if
                                       torch.cuda.is_available() else 0)  # fmt: skip
        self.size = tuple(size) if size else None
        self.matrix = matrix
        self.threads = threads
        self.skipped: dict[str, str] = {}
        status = decoder_status(str(self.device))
        order = ([*CUDA_BACKENDS, "software"] if self.device.type == "cuda" else ["software"]) \
            if backend == "auto" else [backend]  # fmt: skip
        for name in order:
            reason = status.get(name)
            if reason is None:
                self.backend = name
                break
            self.skipped[name] = reason
            LOG.info("decoder %s unusable for %s: %s", name, self.device, reason)
        else:
            raise DecoderUnavailable(
                "; ".join(f"{k}: {v}" for k, v in self.skipped.items())
                or f"no decoder backend for {self.device}"
            )

    def frames(self) -> Iterator[DeviceFrame]:
        """Every frame of the file, in decode order, as :class:`DeviceFrame` s."""
        if self.backend in ("pyav", "software"):
            yield from self._pyav_frames(hw=self.backend == "pyav")
        elif self.backend == "torchcodec":
            yield from self._torchcodec_frames()
        else:
            yield from self._pynvvideocodec_frames()

    __iter__ = frames

    # --- PyAV ---------------------------------------------------------------------------------

    def _pyav_frames(self, *, hw: bool) -> Iterator[DeviceFrame]:
        import av

        options: dict[str, Any] = {}
        if hw:
            from av.codec.hwaccel import HWAccel

            # is_hw_owned: the decoded surfaces stay in device memory (read through DLPack).
            options["hwaccel"] = HWAccel(
                device_type="cuda",
                device=str(self.device.index or 0),
                allow_software_fallback=True,
                is_hw_owned=True,
            )
        with av.open(str(self.path), mode="r", timeout=10.0, **options) as container:
            stream = container.streams.video[0]
            if not hw:
                stream.thread_type = "AUTO"
                if self.threads:
                    stream.codec_context.thread_count = self.threads
            tb = stream.time_base
            for idx, frame in enumerate(container.decode(stream)):
                rgb, on_device = self._pyav_to_rgb(frame)
                pts = float(frame.pts * tb) if frame.pts is not None and tb else None
                yield DeviceFrame(rgb=rgb, frame_idx=idx, pts=pts, on_device=on_device)

    def _pyav_to_rgb(self, frame: Any) -> tuple[torch.Tensor, bool]:
        matrix = self.matrix or _matrix_of(frame)
        full = _full_range(frame)
        if frame.format.name == "cuda":
            # FFmpeg copies the NVDEC surface on its own stream: wait for it before reading.
            torch.cuda.synchronize(self.device)
            y = torch.from_dlpack(frame.planes[0].__dlpack__())
            uv = torch.from_dlpack(frame.planes[1].__dlpack__())
            if uv.dtype != torch.uint8:  # 10-bit surfaces (P010): keep the 8 high bits
                y, uv = (y >> 8).to(torch.uint8), (uv >> 8).to(torch.uint8)
            rgb = nv12_to_rgb(y, uv, matrix=matrix, full_range=full, size=self.size)
            return rgb, True
        # Software frame (CPU path, or hardware fallback): NV12 on the host, same conversion.
        nv12 = frame if frame.format.name == "nv12" else frame.reformat(format="nv12")
        y = torch.from_dlpack(nv12.planes[0].__dlpack__())
        uv = torch.from_dlpack(nv12.planes[1].__dlpack__())
        if self.device.type != "cpu":
            y = y.to(self.device, non_blocking=False)
            uv = uv.to(self.device, non_blocking=False)
        rgb = nv12_to_rgb(y, uv, matrix=matrix, full_range=full, size=self.size)
        return rgb, False

    # --- torchcodec / PyNvVideoCodec ----------------------------------------------------------

    def _torchcodec_frames(self) -> Iterator[DeviceFrame]:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(str(self.path), device=str(self.device))
        for idx in range(len(decoder)):
            frame = decoder.get_frame_at(idx)
            rgb = self._resized(frame.data)
            yield DeviceFrame(rgb=rgb, frame_idx=idx, pts=float(frame.pts_seconds), on_device=True)

    def _pynvvideocodec_frames(self) -> Iterator[DeviceFrame]:
        import PyNvVideoCodec as nvc

        decoder = nvc.SimpleDecoder(
            str(self.path),
            gpu_id=self.device.index or 0,
            use_device_memory=True,
            output_color_type=nvc.OutputColorType.RGBP,
        )
        for idx in range(len(decoder)):
            planar = torch.from_dlpack(decoder[idx])  # (3, H, W) uint8 on the device
            yield DeviceFrame(rgb=self._resized(planar), frame_idx=idx, pts=None, on_device=True)

    def _resized(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.size is None or tuple(rgb.shape[-2:]) == self.size:
            return rgb
        from models.gpu_ops import resize_rgb

        return resize_rgb(rgb, self.size)


def _matrix_of(frame: Any) -> ColorMatrix:
    """BT.709 for streams tagged so (AVCOL_SPC_BT709 = 1); BT.601 otherwise, FFmpeg's default."""
    return "bt709" if int(getattr(frame, "colorspace", 2) or 2) == 1 else "bt601"


def _full_range(frame: Any) -> bool:
    """AVCOL_RANGE_JPEG (2) is full range; unspecified (0) and MPEG (1) are limited."""
    return int(getattr(frame, "color_range", 0) or 0) == 2


def _import_reason(name: str) -> str | None:
    """None when backend ``name``'s package imports (and says it can decode on CUDA)."""
    try:
        if name == "pyav":
            import av.codec.hwaccel

            if "cuda" not in av.codec.hwaccel.hwdevices_available():
                return "this PyAV's FFmpeg has no CUDA hwdevice"
            from av.codec.hwaccel import HWAccel

            if "is_hw_owned" not in (HWAccel.__init__.__doc__ or "") and not hasattr(
                HWAccel, "is_hw_owned"
            ):
                return f"PyAV {av.__version__} cannot keep frames on the device (needs >= 16)"
            return None
        if name == "torchcodec":
            import torchcodec.decoders  # noqa: F401

            return None
        if name == "pynvvideocodec":
            import PyNvVideoCodec  # noqa: F401

            return None
    except Exception as exc:  # noqa: BLE001 - an optional package: any import failure = unusable
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return f"unknown backend {name!r}"
