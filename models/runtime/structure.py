"""What the backends share: a tensor core's output structure (tensor, tuple or dict) flattened
for ONNX / TensorRT and rebuilt after, and the cache keys (weights fingerprint, cache folder) of
exported files."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn


class FlatOutputs(nn.Module):
    """Flatten a module's outputs to a tuple of tensors (what ONNX export needs)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.inner(x)))


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """A tensor, a dict of tensors (in key order) or a sequence of tensors, as a list."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [out[k] for k in out]
    return list(out)


def output_structure(module: nn.Module, example: torch.Tensor) -> tuple[str, Any]:
    """``("tensor", None)`` | ``("dict", keys)`` | ``("tuple", n)`` of ``module(example)``."""
    cached = getattr(module, "_vigil_structure", None)
    if cached is not None:
        return cached
    with torch.inference_mode():
        out = module(example[:1])
    if isinstance(out, torch.Tensor):
        structure: tuple[str, Any] = ("tensor", None)
    elif isinstance(out, dict):
        structure = ("dict", tuple(out))
    else:
        structure = ("tuple", len(out))
    module._vigil_structure = structure  # type: ignore[assignment]
    return structure


def unflatten_outputs(tensors: list[torch.Tensor], structure: tuple[str, Any]) -> Any:
    """The inverse of :func:`flatten_outputs` for a structure from :func:`output_structure`."""
    kind, meta = structure
    if kind == "tensor":
        return tensors[0]
    if kind == "dict":
        return OrderedDict(zip(meta, tensors))
    return tuple(tensors)


def map_tensors(out: Any, fn: Any) -> Any:
    """``fn`` applied to every tensor of a tensor / dict / tuple / list output, same structure."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, dict):
        return OrderedDict((k, fn(v)) for k, v in out.items())
    return type(out)(fn(t) for t in out) if isinstance(out, tuple) else [fn(t) for t in out]


def to_float(out: Any) -> Any:
    """Floating-point tensors of an output as float32 (others unchanged)."""
    return map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)


def fingerprint(module: nn.Module, extra: str = "") -> str:
    """12 hex digits over the module's class, parameter/buffer names, shapes and values."""
    h = hashlib.sha256(type(module).__name__.encode() + extra.encode())
    with torch.no_grad():
        for k, v in module.state_dict().items():
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def cache_root(cache_dir: Path | None) -> Path:
    """``cache_dir``, or vigil's cache folder (:func:`models.weights.cache_dir`)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from models.weights import cache_dir as vigil_cache

    return vigil_cache()
