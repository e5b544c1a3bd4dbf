"""Inference backends behind one interface: eager, torch.compile, ONNX Runtime, TensorRT.

:func:`models.runtime.accelerate.accelerate` takes a *tensor core*, an ``nn.Module`` whose
``forward`` maps one ``(B, 3, H, W) float32`` image batch to a tensor, a tuple of tensors or a
dict of tensors, and returns an ``nn.Module`` with the same call signature and output structure
that runs on the chosen backend. Model wrappers (:mod:`models.segmentation`, :mod:`models.pose`,
detectors) decide what the tensor core is; everything data-dependent (NMS, RoI pooling,
decoding) stays in torch around it.

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

Optional packages are imported lazily (:mod:`models.runtime.optional`): a missing
``onnxruntime`` or ``tensorrt`` never breaks an import; asking for that backend raises
:class:`~models.runtime.options.BackendError` with the reason, and
:func:`~models.runtime.options.backend_status` lists what is usable here.

Modules (import from them, this package re-exports nothing):

- :mod:`~models.runtime.options`: :class:`BackendOptions`, :class:`BackendError`,
  :func:`backend_status`, :func:`model_backends`;
- :mod:`~models.runtime.accelerate`: :func:`accelerate`, :func:`accelerate_backbone`;
- :mod:`~models.runtime.eager`: the eager, CUDA-graph and compiled wrappers;
- :mod:`~models.runtime.onnx`: ONNX export and :class:`OnnxRuntimeModule`;
- :mod:`~models.runtime.tensorrt`: :class:`TensorRTModule`;
- :mod:`~models.runtime.upload`: :class:`FrameUploader` (frames to the device);
- :mod:`~models.runtime.structure`: output structure (flatten / unflatten) and the cache keys;
- :mod:`~models.runtime.optional`: optional packages imported without ever failing.
"""
