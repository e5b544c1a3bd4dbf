"""The TensorRT backend: :class:`TensorRTModule`, an engine built from the exported ONNX file
for one static input shape and cached by weights fingerprint, shape and precision."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from models.runtime.eager import eager_module
from models.runtime.onnx import ONNX_OPSET, export_onnx
from models.runtime.options import BackendError, BackendOptions
from models.runtime.structure import cache_root, fingerprint, output_structure, unflatten_outputs

LOG = logging.getLogger(__name__)


class TensorRTModule(nn.Module):
    """A TensorRT engine built from the exported ONNX file, for one static input shape.

    Engines are cached at ``cache_dir / "tensorrt" / {name}-{fingerprint}-{BxCxHxW}-{precision}
    .engine``; other shapes fall back to the eager module (logged once).
    """

    def __init__(self, engine: Any, fallback: nn.Module, shape: tuple[int, ...], structure: Any):
        super().__init__()
        import tensorrt as trt

        self.trt = trt
        self.engine = engine
        self.context = engine.create_execution_context()
        self.fallback = fallback
        self.shape = shape
        self.structure = structure
        self._warned = False

    @classmethod
    def build(
        cls, module: nn.Module, example: torch.Tensor, *, name: str, options: BackendOptions
    ) -> TensorRTModule:
        import tensorrt as trt

        shape = tuple(example.shape)
        key = fingerprint(module, extra=f"{ONNX_OPSET}")
        tag = "x".join(map(str, shape))
        engine_name = f"{name}-{key}-{tag}-{options.precision}.engine"
        path = cache_root(options.cache_dir) / "tensorrt" / engine_name
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if not path.is_file():
            onnx_path = export_onnx(
                module, example, name=name, cache_dir=options.cache_dir, dynamic=False
            )
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(onnx_path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
            if options.precision == "fp16":
                config.set_flag(trt.BuilderFlag.FP16)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise BackendError(f"TensorRT engine build failed for {name} at {tag}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(bytes(serialized))
            os.replace(tmp, path)
            LOG.info("built TensorRT engine %s", path)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"cannot load TensorRT engine {path}")
        fallback = eager_module(module, replace(options, backend="eager", cuda_graphs=False))
        return cls(engine, fallback, shape, output_structure(module, example))

    def forward(self, x: torch.Tensor) -> Any:
        if tuple(x.shape) != self.shape:
            if not self._warned:
                LOG.warning("TensorRT engine is for %s, got %s: eager", self.shape, tuple(x.shape))
                self._warned = True
            return self.fallback(x)
        trt = self.trt
        x = x.float().contiguous()
        stream = torch.cuda.current_stream(x.device)
        outputs: list[torch.Tensor] = []
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT:
                self.context.set_tensor_address(tname, x.data_ptr())
                continue
            shape = tuple(self.context.get_tensor_shape(tname))
            dtype = _TRT_DTYPES[str(self.engine.get_tensor_dtype(tname)).split(".")[-1]]
            out = torch.empty(shape, dtype=dtype, device=x.device)
            self.context.set_tensor_address(tname, out.data_ptr())
            outputs.append(out)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execution failed")
        return unflatten_outputs([o.float() for o in outputs], self.structure)


_TRT_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32,
               "INT64": torch.int64, "BOOL": torch.bool}  # fmt: skip
