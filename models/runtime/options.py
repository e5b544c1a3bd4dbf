"""How to run a tensor core: :class:`BackendOptions`, :class:`BackendError`, and what is usable
here (:func:`backend_status`, :func:`model_backends` for ``vigil models list``).

See :mod:`models.runtime` for what each backend does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from models.runtime.optional import openpifpaf_status, try_import

BackendName = Literal["eager", "compile", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = ("eager", "compile", "onnxruntime", "tensorrt")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")


class BackendError(RuntimeError):
    """A backend cannot be used (package missing, wrong device, export failed); one line."""


@dataclass(frozen=True)
class BackendOptions:
    """How to run a tensor core.

    Attributes:
        backend: ``eager`` | ``compile`` | ``onnxruntime`` | ``tensorrt``.
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
        precision: ``fp32`` | ``fp16`` (fp16: CUDA only; eager, compile and TensorRT).
        channels_last: NHWC memory format for convolutions (CUDA eager / compile).
        cuda_graphs: capture and replay CUDA graphs for static input shapes (CUDA only).
        compile_mode: ``torch.compile`` mode (None: ``reduce-overhead`` with CUDA graphs,
            else ``default``).
        cache_dir: where ONNX files and TensorRT engines go (None: ``$VIGIL_CACHE`` or
            ``~/.cache/vigil``).
        decode_threads: OpenPifPaf: threads running the CPU CifCaf decoder while the network
            computes the batch's next chunk (0: decode inline, after the whole batch).
    """

    backend: str = "eager"
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False
    compile_mode: str | None = None
    cache_dir: Path | None = None
    decode_threads: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def is_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def is_plain(self) -> bool:
        """Eager fp32 without CUDA extras: models run exactly as built, with no wrapper."""
        o = self.effective()
        return (
            o.backend == "eager"
            and o.precision == "fp32"
            and not (o.cuda_graphs or o.channels_last)
        )

    def effective(self) -> BackendOptions:
        """These options with the CUDA-only ones turned off on CPU (fp16, graphs, NHWC)."""
        if self.is_cuda:
            return self
        return replace(self, precision="fp32", cuda_graphs=False, channels_last=False)

    @classmethod
    def on_device(cls, backend: BackendOptions | str, device: torch.device | str) -> BackendOptions:
        """``backend`` (options, or a backend name with defaults) moved to ``device``."""
        opts = backend if isinstance(backend, BackendOptions) else cls(backend=backend)
        return replace(opts, device=str(device))

    @classmethod
    def from_config(cls, cfg: Any, device: str) -> BackendOptions:
        """From a ``backend`` config section (``pipeline.config.BackendConfig``: attributes)."""
        return cls(
            backend=cfg.name,
            device=device,
            precision=cfg.precision,
            channels_last=bool(cfg.channels_last),
            cuda_graphs=bool(cfg.cuda_graphs),
            compile_mode=cfg.compile_mode,
            cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
            decode_threads=int(cfg.decode_threads),
        )


def backend_status(device: str = "cpu") -> dict[str, str | None]:
    """Which backends work here: ``{name: None if usable else the reason}``."""
    cuda = torch.device(device).type == "cuda"
    status: dict[str, str | None] = {"eager": None, "compile": None}
    if not hasattr(torch, "compile"):
        status["compile"] = "this torch has no torch.compile"
    ort, why = try_import("onnxruntime")
    if ort is None:
        status["onnxruntime"] = why
    elif cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        status["onnxruntime"] = None  # still usable: falls back to the CPU provider
    else:
        status["onnxruntime"] = None
    onnx, why_onnx = try_import("onnx")
    if onnx is None and status["onnxruntime"] is None:
        status["onnxruntime"] = why_onnx
    trt, why_trt = try_import("tensorrt")
    if trt is None:
        status["tensorrt"] = why_trt
    elif not cuda or not torch.cuda.is_available():
        status["tensorrt"] = "TensorRT needs a CUDA device"
    else:
        status["tensorrt"] = None
    return status


def model_backends(entry: Any) -> str:
    """What backends a weights entry runs on, for ``vigil models list`` (one short string).

    ``backbone`` marks detectors, whose ONNX / TensorRT part is the backbone + FPN (see
    :mod:`models.runtime`); custom perceivers (``simnet``) run eager only.
    """
    builder = entry.builder if isinstance(entry.builder, str) else ""
    if builder.startswith("models.pose:"):
        usable = openpifpaf_status() is None
        return "eager,compile,onnxruntime,tensorrt" + ("" if usable else " (needs pose extra)")
    if not builder.startswith("torchvision."):
        return "eager"
    if entry.task == "segmentation" and "rcnn" not in entry.name:
        return "eager,compile,onnxruntime,tensorrt"
    return "eager,compile,onnxruntime,tensorrt (backbone)"
