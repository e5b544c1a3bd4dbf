"""The eager-PyTorch backends: fp16 / channels_last (:class:`EagerModule`), CUDA-graph replay
per input shape (:class:`CudaGraphs`) and a ``torch.compile`` holder (:class:`Compiled`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from models.runtime.options import BackendOptions
from models.runtime.structure import map_tensors, to_float


class EagerModule(nn.Module):
    """The module on its device with fp16 / channels_last applied; outputs back to float32."""

    def __init__(self, module: nn.Module, opts: BackendOptions) -> None:
        super().__init__()
        self.dtype = torch.float16 if opts.precision == "fp16" else torch.float32
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        module = module.to(dtype=self.dtype)
        if opts.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.inner = module

    def forward(self, x: torch.Tensor) -> Any:
        x = x.to(dtype=self.dtype, memory_format=self.memory_format)
        return to_float(self.inner(x))


class CudaGraphs(nn.Module):
    """Replay one captured CUDA graph per input shape (static shapes only).

    The first call with a new shape warms up on a side stream and captures; later calls copy
    the input into the static buffer and replay. Outputs are cloned (the graph owns its buffers).
    """

    def __init__(self, inner: nn.Module, max_graphs: int = 8) -> None:
        super().__init__()
        self.inner = inner
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = OrderedDict()

    def forward(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key not in self._graphs:
            if len(self._graphs) >= self.max_graphs:
                return self.inner(x)
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.inner(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.inner(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return map_tensors(static_out, lambda t: t.clone())


class Compiled(nn.Module):
    """A ``torch.compile`` result held as a module."""

    def __init__(self, compiled: Any) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, x: torch.Tensor) -> Any:
        return self.compiled(x)


def eager_module(module: nn.Module, opts: BackendOptions) -> nn.Module:
    """``module`` as the eager backend runs it (CUDA graphs on top when asked for and there)."""
    eager: nn.Module = EagerModule(module, opts)
    if opts.cuda_graphs and opts.is_cuda and torch.cuda.is_available():
        eager = CudaGraphs(eager)
    return eager
