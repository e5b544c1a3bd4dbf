"""ONNX export of a tensor core (cached by weights fingerprint) and :class:`OnnxRuntimeModule`,
which runs the exported file with ONNX Runtime behind the module's own call signature."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.runtime.optional import one_line, try_import
from models.runtime.options import BackendError
from models.runtime.structure import (
    FlatOutputs,
    cache_root,
    fingerprint,
    output_structure,
    unflatten_outputs,
)

LOG = logging.getLogger(__name__)

#: ONNX opset used for every export.
ONNX_OPSET = 17


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    *,
    name: str,
    cache_dir: Path | None = None,
    dynamic: bool = True,
    static_hw: bool = False,
) -> Path:
    """Export ``module`` (fp32, on CPU) to ONNX once; return the cached file.

    The file name holds the model name and a fingerprint of its weights and of the export
    settings, so changed weights never reuse a stale file. Outputs are named ``out0..outN`` in
    the flattened order of :func:`models.runtime.structure.flatten_outputs`.
    """
    onnx_mod, why = try_import("onnx")
    if onnx_mod is None:
        raise BackendError(f"cannot export {name} to ONNX: {why}")
    structure = output_structure(module, example)
    kind, meta = structure
    n_out = 1 if kind == "tensor" else (len(meta) if kind == "dict" else int(meta))
    key = fingerprint(module, extra=f"{ONNX_OPSET}:{dynamic}:{static_hw}:{example.shape[1:]}")
    shape_tag = "x".join(map(str, example.shape))
    shape_tag = (
        ("dyn" if not static_hw else f"dynx{shape_tag.split('x', 1)[1]}") if dynamic else shape_tag
    )
    path = cache_root(cache_dir) / "onnx" / f"{name}-{shape_tag}-{key}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    cpu_module = FlatOutputs(module).cpu().float().eval()
    output_names = [f"out{i}" for i in range(n_out)]
    axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        axes = {"input": {0: "batch"} if static_hw else {0: "batch", 2: "height", 3: "width"}}
        axes.update({o: {0: "batch"} for o in output_names})
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                cpu_module,
                (example.detach().cpu().float(),),
                str(tmp),
                input_names=["input"],
                output_names=output_names,
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                dynamo=False,  # TorchScript exporter: fast and robust for these conv nets
            )
        onnx_mod.checker.check_model(str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        raise BackendError(f"ONNX export of {name} failed: {one_line(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    LOG.info("exported %s to %s", name, path)
    return path


class OnnxRuntimeModule(nn.Module):
    """Run an ONNX file with ONNX Runtime; same call signature as the exported module.

    Args:
        path: the ``.onnx`` file (one input ``input``, outputs ``out0..``).
        device: CUDA device -> CUDAExecutionProvider when ORT has it (else CPU, with a log line).
        structure: the output structure recorded by
            :func:`models.runtime.structure.output_structure`.
    """

    def __init__(self, path: Path, *, device: str, structure: tuple[str, Any]) -> None:
        super().__init__()
        ort, why = try_import("onnxruntime")
        if ort is None:
            raise BackendError(f"onnxruntime backend unavailable: {why}")
        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                cuda_opts = {"device_id": self.device.index or 0}
                providers.insert(0, ("CUDAExecutionProvider", cuda_opts))
            else:
                LOG.warning("onnxruntime has no CUDAExecutionProvider here; running on CPU")
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        self.providers = self.session.get_providers()
        self.path = path
        self.structure = structure

    def forward(self, x: torch.Tensor) -> Any:
        arr = x.detach().float().contiguous().cpu().numpy()
        outs = self.session.run(None, {"input": arr})
        tensors = [torch.from_numpy(np.asarray(o)).to(self.device) for o in outs]
        return unflatten_outputs(tensors, self.structure)
