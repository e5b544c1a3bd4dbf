"""Run a tensor core on the chosen backend: :func:`accelerate` (any tensor core) and
:func:`accelerate_backbone` (a torchvision detector's backbone + FPN, the rest left in torch).

See :mod:`models.runtime` for the backends and what each model exports.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from models.runtime.eager import Compiled, eager_module
from models.runtime.onnx import OnnxRuntimeModule, export_onnx
from models.runtime.options import BackendError, BackendOptions, backend_status
from models.runtime.structure import output_structure
from models.runtime.tensorrt import TensorRTModule


def accelerate(
    module: nn.Module,
    example: torch.Tensor,
    *,
    name: str,
    options: BackendOptions,
    static_hw: bool = False,
) -> nn.Module:
    """Wrap a tensor core so it runs on ``options.backend``.

    Args:
        module: tensor core, ``forward(x: (B, 3, H, W) float32) -> Tensor | tuple | dict``.
        example: an input of the shape the model will mostly see (export / capture / engine
            profile); on any device.
        name: model name for cache keys and messages.
        options: backend, device, precision and CUDA options.
        static_hw: the model bakes its input height / width into the graph (OpenPifPaf's
            heads do), so ONNX keeps only the batch dynamic; callers pad to ``example``'s size.

    Returns:
        A module on ``options.device`` with the same output structure, outputs float32.

    Raises:
        BackendError: the backend's package is missing, it needs CUDA, or export failed.
    """
    opts = options.effective()
    device = torch.device(opts.device)
    module = module.eval().to(device)
    example = example.to(device=device, dtype=torch.float32)
    if opts.backend == "eager":
        return eager_module(module, opts)
    if opts.backend == "compile":
        eager = eager_module(module, replace(opts, cuda_graphs=False))
        mode = opts.compile_mode or ("reduce-overhead" if opts.cuda_graphs else "default")
        return Compiled(torch.compile(eager, mode=mode, dynamic=None))
    if opts.backend == "onnxruntime":
        path = export_onnx(
            module, example, name=name, cache_dir=opts.cache_dir, static_hw=static_hw
        )
        structure = output_structure(module, example)
        return OnnxRuntimeModule(path, device=opts.device, structure=structure)
    if opts.backend == "tensorrt":
        reason = backend_status(opts.device)["tensorrt"]
        if reason:
            raise BackendError(f"tensorrt backend unavailable for {name}: {reason}")
        return TensorRTModule.build(module, example, name=name, options=opts)
    raise BackendError(f"unknown backend {opts.backend!r}")  # pragma: no cover


def accelerate_backbone(
    net: nn.Module, example: torch.Tensor, *, name: str, options: BackendOptions
) -> nn.Module:
    """Run a torchvision detector's ``backbone`` (with its FPN) on ``options.backend``.

    The ONNX / TensorRT boundary for detectors: image batch -> feature maps. The model's own
    transform (resize, normalise, pad), RPN / anchors, RoI heads, box decoding and NMS stay in
    torch. Plain eager fp32 leaves ``net`` untouched (no wrapper, no overhead).

    Args:
        net: a torchvision detection model with ``.backbone`` (Faster / Mask / Keypoint R-CNN,
            RetinaNet, SSD), modified in place.
        example: ``(1, 3, H, W)`` a typical *transformed* input (padded to a multiple of 32).

    Returns:
        ``net``, on ``options.device``.
    """
    opts = options.effective()
    net = net.eval().to(opts.device)
    if opts.is_plain:
        return net
    h, w = (int(-(-s // 32) * 32) for s in example.shape[-2:])
    example = torch.rand(1, 3, h, w)
    inner = net.backbone
    wrapped = accelerate(inner, example, name=f"{name}.backbone", options=opts)
    net.backbone = AcceleratedBackbone(wrapped, getattr(inner, "out_channels", None))
    return net


class AcceleratedBackbone(nn.Module):
    """An accelerated backbone that still looks like one to torchvision (``out_channels``)."""

    def __init__(self, inner: nn.Module, out_channels: int | None) -> None:
        super().__init__()
        self.inner = inner
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x)
        return out if isinstance(out, dict) else OrderedDict((str(i), t) for i, t in enumerate(out))
