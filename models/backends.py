"""Inference backends behind one interface: eager, torch.compile, ONNX Runtime, TensorRT.

:func:`accelerate` takes a *tensor core*, an ``nn.Module`` whose ``forward`` maps one
``(B, 3, H, W) float32`` image batch to a tensor, a tuple of tensors or a dict of tensors, and
returns an ``nn.Module`` with the same call signature and output structure that runs on the
chosen backend. Model wrappers (:mod:`models.segmentation`, :mod:`models.pose`, detectors)
decide what the tensor core is; everything data-dependent (NMS, RoI pooling, decoding) stays in
torch around it.

What each wrapper exports (the ONNX boundary):

- semantic segmentation (DeepLabV3, LRASPP, FCN): the whole network, logits at input size;
- torchvision detectors (Faster/Mask/Keypoint R-CNN, RetinaNet, SSDlite): the backbone with its
  FPN, i.e. image -> feature maps. Proposals, RoI heads, anchors, box decoding and NMS stay in
  torch: they are data-dependent (variable box counts) and export poorly, while the backbone
  is where most of the FLOPs are;
- OpenPifPaf: base network + CIF/CAF heads (image -> fields); the CifCaf decoder stays in
  openpifpaf's C++ extension.

Backends:

- ``eager``: plain PyTorch. On CUDA: ``precision="fp16"`` (weights and inputs in half, outputs
  back to float32), ``channels_last``, and ``cuda_graphs`` (one graph captured per static input
  shape, replayed afterwards).
- ``compile``: ``torch.compile`` of the eager module (``mode="reduce-overhead"`` on CUDA with
  ``cuda_graphs``, which also uses CUDA graphs).
- ``onnxruntime``: exported once with ``torch.onnx.export`` (TorchScript exporter, opset 17,
  dynamic batch / height / width) into ``cache_dir() / "onnx"``, keyed by model name and a
  fingerprint of its weights; CUDAExecutionProvider when the device is CUDA and ORT has it,
  else CPUExecutionProvider. Always fp32.
- ``tensorrt``: an engine built from that ONNX file when the ``tensorrt`` package imports,
  cached in ``cache_dir() / "tensorrt"`` by model + weights fingerprint + input shape +
  precision (engines are specific to one shape profile, so the shape is in the key). CUDA only.

Optional packages are imported lazily: a missing ``onnxruntime`` or ``tensorrt`` never breaks
``import models.backends``; asking for that backend raises :class:`BackendError` with the
reason, and :func:`backend_status` lists what is usable here.

:class:`FrameUploader` moves ``(H, W, 3) uint8`` frames to the device (through a reused pinned
host buffer on CUDA) and does the float conversion and normalisation there.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

LOG = logging.getLogger(__name__)

BackendName = Literal["eager", "compile", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = ("eager", "compile", "onnxruntime", "tensorrt")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
#: ONNX opset used for every export.
ONNX_OPSET = 17


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
    def from_config(cls, cfg: Any, device: str) -> BackendOptions:
        """From a mapping or object with ``name``/``backend``, ``precision``, ... fields."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        cache = get("cache_dir")
        return cls(
            backend=get("name") or get("backend") or "eager",
            device=device,
            precision=get("precision") or "fp32",
            channels_last=bool(get("channels_last", False)),
            cuda_graphs=bool(get("cuda_graphs", False)),
            compile_mode=get("compile_mode"),
            cache_dir=Path(cache) if cache else None,
            decode_threads=int(get("decode_threads", 0) or 0),
        )


def backend_status(device: str = "cpu") -> dict[str, str | None]:
    """Which backends work here: ``{name: None if usable else the reason}``."""
    cuda = torch.device(device).type == "cuda"
    status: dict[str, str | None] = {"eager": None, "compile": None}
    if not hasattr(torch, "compile"):
        status["compile"] = "this torch has no torch.compile"
    ort, why = _try_import("onnxruntime")
    if ort is None:
        status["onnxruntime"] = why
    elif cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        status["onnxruntime"] = None  # still usable: falls back to the CPU provider
    else:
        status["onnxruntime"] = None
    onnx, why_onnx = _try_import("onnx")
    if onnx is None and status["onnxruntime"] is None:
        status["onnxruntime"] = why_onnx
    trt, why_trt = _try_import("tensorrt")
    if trt is None:
        status["tensorrt"] = why_trt
    elif not cuda or not torch.cuda.is_available():
        status["tensorrt"] = "TensorRT needs a CUDA device"
    else:
        status["tensorrt"] = None
    return status


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
        return _eager(module, opts)
    if opts.backend == "compile":
        eager = _eager(module, replace(opts, cuda_graphs=False))
        mode = opts.compile_mode or ("reduce-overhead" if opts.cuda_graphs else "default")
        return _Compiled(torch.compile(eager, mode=mode, dynamic=None))
    if opts.backend == "onnxruntime":
        path = export_onnx(
            module, example, name=name, cache_dir=opts.cache_dir, static_hw=static_hw
        )
        return OnnxRuntimeModule(path, device=opts.device, structure=_structure(module, example))
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
    net.backbone = _Backbone(wrapped, getattr(inner, "out_channels", None))
    return net


class _Backbone(nn.Module):
    """An accelerated backbone that still looks like one to torchvision (``out_channels``)."""

    def __init__(self, inner: nn.Module, out_channels: int | None) -> None:
        super().__init__()
        self.inner = inner
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x)
        return out if isinstance(out, dict) else OrderedDict((str(i), t) for i, t in enumerate(out))


# --- frames to device ---------------------------------------------------------------------


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
            _check_frame(f)
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


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got shape {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")


# --- eager / compile ----------------------------------------------------------------------


class _Eager(nn.Module):
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
        return _to_float(self.inner(x))


class _CudaGraphs(nn.Module):
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
        return _map_tensors(static_out, lambda t: t.clone())


class _Compiled(nn.Module):
    def __init__(self, compiled: Any) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, x: torch.Tensor) -> Any:
        return self.compiled(x)


def _eager(module: nn.Module, opts: BackendOptions) -> nn.Module:
    eager: nn.Module = _Eager(module, opts)
    if opts.cuda_graphs and opts.is_cuda and torch.cuda.is_available():
        eager = _CudaGraphs(eager)
    return eager


# --- ONNX export and ONNX Runtime ---------------------------------------------------------


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
    the flattened order of :func:`_flatten`.
    """
    onnx_mod, why = _try_import("onnx")
    if onnx_mod is None:
        raise BackendError(f"cannot export {name} to ONNX: {why}")
    structure = _structure(module, example)
    kind, meta = structure
    n_out = 1 if kind == "tensor" else (len(meta) if kind == "dict" else int(meta))
    key = _fingerprint(module, extra=f"{ONNX_OPSET}:{dynamic}:{static_hw}:{example.shape[1:]}")
    shape_tag = "x".join(map(str, example.shape))
    shape_tag = (
        ("dyn" if not static_hw else f"dynx{shape_tag.split('x', 1)[1]}") if dynamic else shape_tag
    )
    path = _cache_root(cache_dir) / "onnx" / f"{name}-{shape_tag}-{key}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    cpu_module = _Flat(module).cpu().float().eval()
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
        raise BackendError(f"ONNX export of {name} failed: {_one_line(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    LOG.info("exported %s to %s", name, path)
    return path


class OnnxRuntimeModule(nn.Module):
    """Run an ONNX file with ONNX Runtime; same call signature as the exported module.

    Args:
        path: the ``.onnx`` file (one input ``input``, outputs ``out0..``).
        device: CUDA device -> CUDAExecutionProvider when ORT has it (else CPU, with a log line).
        structure: the output structure recorded by :func:`_structure`.
    """

    def __init__(self, path: Path, *, device: str, structure: tuple[str, Any]) -> None:
        super().__init__()
        ort, why = _try_import("onnxruntime")
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
        return _unflatten(tensors, self.structure)


# --- TensorRT -----------------------------------------------------------------------------


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
        key = _fingerprint(module, extra=f"{ONNX_OPSET}")
        tag = "x".join(map(str, shape))
        engine_name = f"{name}-{key}-{tag}-{options.precision}.engine"
        path = _cache_root(options.cache_dir) / "tensorrt" / engine_name
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
        fallback = _eager(module, replace(options, backend="eager", cuda_graphs=False))
        return cls(engine, fallback, shape, _structure(module, example))

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
        return _unflatten([o.float() for o in outputs], self.structure)


_TRT_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32,
               "INT64": torch.int64, "BOOL": torch.bool}  # fmt: skip


# --- internals ----------------------------------------------------------------------------


class _Flat(nn.Module):
    """Flatten a module's outputs to a tuple of tensors (what ONNX export needs)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_flatten(self.inner(x)))


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [out[k] for k in out]
    return list(out)


def _structure(module: nn.Module, example: torch.Tensor) -> tuple[str, Any]:
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


def _unflatten(tensors: list[torch.Tensor], structure: tuple[str, Any]) -> Any:
    kind, meta = structure
    if kind == "tensor":
        return tensors[0]
    if kind == "dict":
        return OrderedDict(zip(meta, tensors))
    return tuple(tensors)


def _map_tensors(out: Any, fn: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, dict):
        return OrderedDict((k, fn(v)) for k, v in out.items())
    return type(out)(fn(t) for t in out) if isinstance(out, tuple) else [fn(t) for t in out]


def _to_float(out: Any) -> Any:
    return _map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)


def _fingerprint(module: nn.Module, extra: str = "") -> str:
    """12 hex digits over the module's class, parameter/buffer names, shapes and values."""
    h = hashlib.sha256(type(module).__name__.encode() + extra.encode())
    with torch.no_grad():
        for k, v in module.state_dict().items():
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from models.weights import cache_dir as vigil_cache

    return vigil_cache()


def _try_import(name: str) -> tuple[Any, str | None]:
    """Import an optional package: ``(module, None)`` or ``(None, reason)``; never raises."""
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return None, f"{name} is not importable ({_one_line(exc)}); install it to use it"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def model_backends(entry: Any) -> str:
    """What backends a weights entry runs on, for ``vigil models list`` (one short string).

    ``backbone`` marks detectors, whose ONNX / TensorRT part is the backbone + FPN (see the
    module docstring); custom perceivers (``simnet``) run eager only.
    """
    builder = entry.builder if isinstance(entry.builder, str) else ""
    if builder.startswith("models.pose:"):
        from models.pose import openpifpaf_status

        usable = openpifpaf_status() is None
        return "eager,compile,onnxruntime,tensorrt" + ("" if usable else " (needs pose extra)")
    if not builder.startswith("torchvision."):
        return "eager"
    if entry.task == "segmentation" and "rcnn" not in entry.name:
        return "eager,compile,onnxruntime,tensorrt"
    return "eager,compile,onnxruntime,tensorrt (backbone)"
