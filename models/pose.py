"""Pose stage: COCO-17 human keypoints from OpenPifPaf or torchvision Keypoint R-CNN.

:class:`PoseEstimator` turns ``(H, W, 3) uint8 RGB`` frames into one
:class:`~models.results.Poses` per frame, ``keypoints (n, 17, 3)`` = x, y in the frame's
pixels and a confidence in [0, 1], in COCO-17 order (:data:`models.results.COCO17_KEYPOINTS`),
plus each pose's person box (:meth:`PoseEstimator.estimate`) so poses can be aligned with the
detector's person boxes.

Two families:

- **OpenPifPaf** (package ``openpifpaf-vita``, an optional extra: AGPL): checkpoints
  ``shufflenetv2k16``, ``shufflenetv2k30``, ``resnet50`` (the ``openpifpaf_*`` weights
  entries). The network (base net + CIF/CAF heads) runs on any backend of
  :mod:`models.runtime`; openpifpaf's CifCaf decoder (C++ extension) turns the fields into
  poses. Without a checkpoint file the network is built from scratch with random weights
  (shape and flow are right, poses are noise). Frames are resized so the longer side is
  ``input_size`` (default 641) and padded to a multiple of 16 plus 1, as openpifpaf does.
- **Keypoint R-CNN** (``keypointrcnn_resnet50_fpn``, torchvision): the fallback, always there.
  Its keypoint scores are logits; they are mapped to [0, 1] with a sigmoid.

The openpifpaf import is guarded: :func:`models.runtime.optional.openpifpaf_status` says why
it is unusable (not installed, compiled against another torch, matplotlib too new...) and
asking for an OpenPifPaf model then raises :class:`PoseUnavailable` with that reason;
importing vigil never fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import weights as weights_registry
from models.coco17 import COCO17_KEYPOINTS
from models.detection import build_weighted, set_input_size
from models.gpu_ops import batch_chunks
from models.ops import IMAGENET_MEAN, IMAGENET_STD
from models.perception.base import StridedStage, StrideSchedule, init_kwargs
from models.results import Detections, Poses
from models.runtime.accelerate import accelerate, accelerate_backbone
from models.runtime.optional import import_openpifpaf, openpifpaf_status
from models.runtime.options import BackendOptions
from models.runtime.upload import FrameUploader

LOG = logging.getLogger(__name__)

#: OpenPifPaf checkpoint names (``openpifpaf_<name>`` in the weights registry).
OPENPIFPAF_CHECKPOINTS: tuple[str, ...] = ("shufflenetv2k16", "shufflenetv2k30", "resnet50")
KEYPOINT_RCNN = "keypointrcnn_resnet50_fpn"
#: Class names of the person boxes a pose model gives (torchvision style: 1 = person).
PERSON_CLASS_NAMES: tuple[str, ...] = ("__background__", "person")
#: Longer side, pixels, OpenPifPaf inputs are resized to when ``input_size`` is None.
DEFAULT_OPENPIFPAF_SIZE = 641
#: With ``backend.decode_threads``: a batch's network runs in this many chunks, so the CPU
#: decoder works on one chunk while the device computes the next.
DECODE_CHUNKS = 2
#: Longest wait for one image's decode in the pool, s (a hung decoder fails the batch).
DECODE_TIMEOUT_S = 60.0


class PoseUnavailable(RuntimeError):
    """The requested pose backend cannot run here (e.g. openpifpaf not importable)."""


@dataclass
class PoseResult:
    """One frame's poses and the person box of each (``xyxy`` pixels, aligned rows)."""

    poses: Poses
    boxes: Detections


def pose_models() -> list[str]:
    """Names :class:`PoseEstimator` accepts (``openpifpaf`` = ``shufflenetv2k16``)."""
    return ["openpifpaf", *OPENPIFPAF_CHECKPOINTS, KEYPOINT_RCNN]


class PoseEstimator(StridedStage[PoseResult]):
    """Human poses with OpenPifPaf or Keypoint R-CNN, on any backend.

    Args:
        model: ``openpifpaf`` / ``shufflenetv2k16`` / ``shufflenetv2k30`` / ``resnet50``
            (OpenPifPaf) or ``keypointrcnn_resnet50_fpn``.
        weights: ``"auto"`` | ``"pretrained"`` | ``"none"`` | path. OpenPifPaf accepts its own
            checkpoint files (pickled ``{"model": Shell}``, checksum-verified when fetched) or
            a state_dict of the network.
        device: torch device string.
        input_size: OpenPifPaf: longer side in pixels; Keypoint R-CNN: shorter side (its
            ``min_size``). None: the model's default.
        stride: run on every ``stride``-th frame per stream, reuse the last poses in between.
        score_threshold: keep poses whose score is at least this.
        max_poses: at most this many poses per frame (highest scores first).
        backend: :class:`BackendOptions` or a backend name.
        fallback: model to use when OpenPifPaf is unavailable (None: raise instead).
        seed: seed of the random init.

    Raises:
        PoseUnavailable: an OpenPifPaf model was asked for, openpifpaf does not import and
            ``fallback`` is None.
    """

    def __init__(
        self,
        *,
        model: str = "shufflenetv2k16",
        weights: str = "auto",
        device: str = "cpu",
        input_size: int | None = None,
        stride: int = 1,
        score_threshold: float = 0.1,
        max_poses: int = 50,
        backend: BackendOptions | str = "eager",
        fallback: str | None = None,
        seed: int = 0,
    ) -> None:
        if model == "openpifpaf":
            model = OPENPIFPAF_CHECKPOINTS[0]
        if model not in pose_models():
            raise ValueError(f"unknown pose model {model!r}; pose models: {pose_models()}")
        if input_size is not None and input_size < 32:
            raise ValueError(f"input_size must be >= 32 pixels, got {input_size}")
        self.device = torch.device(device)
        self.backend = BackendOptions.on_device(backend, self.device)
        self.score_threshold = float(score_threshold)
        self.max_poses = int(max_poses)
        self.schedule = StrideSchedule(stride)
        self.note = ""
        if model in OPENPIFPAF_CHECKPOINTS and openpifpaf_status() is not None:
            reason = f"OpenPifPaf unavailable: {openpifpaf_status()}"
            if fallback is None:
                raise PoseUnavailable(f"{reason}; choose pose model {KEYPOINT_RCNN}")
            LOG.warning("%s; using %s instead", reason, fallback)
            self.note = f" ({reason}; fell back to {fallback})"
            model = fallback
        self.model_name = model
        if model in OPENPIFPAF_CHECKPOINTS:
            self._impl: _PoseImpl = _OpenPifPaf(model, weights, input_size, self.backend, seed)
        else:
            self._impl = _KeypointRcnn(model, weights, input_size, self.backend, seed)
            self._impl.net.roi_heads.detections_per_img = self.max_poses
        self.family = self._impl.family
        self.description = f"{model} ({self.backend.backend}): {self._impl.description}{self.note}"

    @classmethod
    def from_config(cls, section: Any, *, device: str, backend: BackendOptions) -> PoseEstimator:
        """From the ``pose`` config section (``pipeline.config.PoseConfig``), on ``backend``."""
        return cls(**init_kwargs(cls, section, device=device, backend=backend))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names for the ``class_id`` of the person boxes (1 = person)."""
        return PERSON_CLASS_NAMES

    #: ``estimate(frames, stream_ids=None)``: one :class:`PoseResult` per frame (poses and
    #: their person boxes, sorted by score, descending); ``stage(frames)`` gives the poses.
    estimate = StridedStage.run

    def output(self, result: PoseResult) -> Poses:
        return result.poses

    def __repr__(self) -> str:
        return (f"PoseEstimator(model={self.model_name!r}, backend={self.backend.backend!r}, "
                f"stride={self.schedule.stride})")  # fmt: skip

    def infer_group(self, frames: Sequence[np.ndarray]) -> list[PoseResult]:
        out = []
        for kp, score, boxes in self._impl(frames):
            keep = score >= self.score_threshold
            order = np.argsort(-score[keep], kind="stable")[: self.max_poses]
            box = None if boxes is None else boxes[keep][order]
            out.append(_result(kp[keep][order], score[keep][order], box))
        return out


# --- implementations ----------------------------------------------------------------------


_Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None]


class _PoseImpl:
    family: str
    description: str

    def __call__(self, frames: Sequence[np.ndarray]) -> list[_Raw]:
        """Same-sized frames -> per frame ``(keypoints (n, 17, 3), score (n,), boxes (n, 4) or
        None)`` in the frame's pixels (None: boxes from the keypoints)."""
        raise NotImplementedError


class _KeypointRcnn(_PoseImpl):
    family = "keypointrcnn"

    def __init__(
        self, model: str, weights: str, input_size: int | None, opts: BackendOptions, seed: int
    ) -> None:
        net, resolved = build_weighted(weights_registry.get(model), weights, seed)
        if input_size is not None:
            set_input_size(net, int(input_size))
        net.roi_heads.score_thresh = 0.05  # PoseEstimator applies its own threshold
        size = int(max(net.transform.min_size))
        accelerate_backbone(net, torch.rand(1, 3, size, size * 4 // 3), name=model, options=opts)
        self.net = net.eval().to(opts.device)
        self.uploader = FrameUploader(opts.device)
        self.description = resolved.description

    def __call__(self, frames: Sequence[np.ndarray]) -> list[_Raw]:
        with torch.inference_mode():
            outputs = self.net(list(self.uploader(frames)))
        results = []
        for o in outputs:
            kp = o["keypoints"].float().cpu().numpy().copy()  # (n, 17, 3): x, y, visibility
            if len(kp):
                kp[:, :, 2] = torch.sigmoid(o["keypoints_scores"].float()).cpu().numpy()
            boxes = o["boxes"].float().cpu().numpy()
            results.append((kp.reshape(-1, 17, 3), o["scores"].float().cpu().numpy(), boxes))
        return results


class _OpenPifPaf(_PoseImpl):
    """OpenPifPaf network (base + CIF/CAF heads) on a backend, CifCaf decoder on the CPU."""

    family = "openpifpaf"

    def __init__(
        self, name: str, weights: str, input_size: int | None, opts: BackendOptions, seed: int
    ) -> None:
        openpifpaf, _ = import_openpifpaf()
        self.opp = openpifpaf
        entry = weights_registry.get(f"openpifpaf_{name}")
        net, self.description = _load_openpifpaf_net(openpifpaf, entry, weights, seed)
        self.head_metas = list(net.head_metas)
        self.decoder = openpifpaf.decoder.factory(self.head_metas)
        self.long_edge = int(input_size or DEFAULT_OPENPIFPAF_SIZE)
        side = _pad16(self.long_edge)
        # The heads bake their field size into traced graphs: exported backends get one square
        # canvas (side x side) that every resized frame is padded into; eager pads tightly.
        self.canvas = None if opts.is_plain else (side, side)
        example = torch.rand(1, 3, side, side)
        if not opts.is_plain:  # in-place ops on views do not trace/compile cleanly
            for head in net.head_nets:
                head.inplace_ops = False
        self.core = accelerate(
            OpenPifPafCore(net), example, name=f"openpifpaf_{name}", options=opts, static_hw=True
        )
        self.uploader = FrameUploader(opts.device, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        threads = int(getattr(opts, "decode_threads", 0) or 0)
        self.pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pifpaf-decode")
            if threads > 0
            else None
        )
        self._local = threading.local()

    def __call__(self, frames: Sequence[np.ndarray]) -> list[_Raw]:
        h, w = frames[0].shape[:2]
        scale = self.long_edge / max(h, w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        sc = (rh / h, rw / w)
        with torch.inference_mode():
            x = self.uploader(frames, size=(rh, rw))
            # Pad right / bottom to 16k+1 (zeros = the mean colour after normalisation).
            ph, pw = self.canvas or (_pad16(rh), _pad16(rw))
            x = nn.functional.pad(x, (0, pw - rw, 0, ph - rh))
            if self.pool is None or len(frames) < 2:
                fields = [f.float().cpu() for f in self.core(x)]
                return [self.decode([f[i] for f in fields], sc) for i in range(len(frames))]
            # Overlap: the pool decodes chunk k on the CPU while the network runs chunk k + 1.
            futures = []
            for chunk in batch_chunks(len(frames), DECODE_CHUNKS):
                fields = [f.float().cpu() for f in self.core(x[chunk.start : chunk.stop])]
                futures += [self.pool.submit(self._decode_in_pool, [f[i] for f in fields], sc)
                            for i in range(len(chunk))]  # fmt: skip
        return [f.result(timeout=DECODE_TIMEOUT_S) for f in futures]

    def _decode_in_pool(self, fields: Sequence[torch.Tensor], scale: tuple[float, float]) -> _Raw:
        # One decoder per pool thread: the CifCaf decoder keeps per-call state.
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = self._local.decoder = self.opp.decoder.factory(self.head_metas)
        return self.decode(fields, scale, decoder=decoder)

    def decode(
        self, fields: Sequence[torch.Tensor], scale: tuple[float, float], decoder: Any = None
    ) -> _Raw:
        """One image's CIF/CAF fields -> COCO-17 keypoints in frame pixels.

        Args:
            fields: per head, ``(n_fields, n_components, h, w)`` CPU tensors as the network
                gives them in eval mode.
            scale: ``(sy, sx)`` network-input pixels per frame pixel.
        """
        annotations = (decoder or self.decoder)(list(fields))
        kps = [np.asarray(a.data, np.float32) for a in annotations]
        kp = np.stack(kps) if kps else np.zeros((0, 17, 3), np.float32)
        kp[:, :, 0] /= scale[1]
        kp[:, :, 1] /= scale[0]
        kp[:, :, 2] = np.clip(kp[:, :, 2], 0.0, 1.0)
        return kp, np.asarray([a.score for a in annotations], np.float32), None


class OpenPifPafCore(nn.Module):
    """An openpifpaf ``Shell`` as a tensor core: image batch -> tuple of head fields."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net(x))


def build_openpifpaf_net(
    *, checkpoint: str = "shufflenetv2k16", seed: int | None = None, **_: Any
) -> nn.Module:
    """A COCO-17 OpenPifPaf network (CIF + CAF heads) with random weights; no downloads.

    Registry builder for the ``openpifpaf_*`` entries (``weights`` / ``num_classes`` keyword
    arguments from :meth:`WeightsEntry.build` are accepted and ignored).

    Raises:
        PoseUnavailable: openpifpaf does not import.
    """
    openpifpaf, reason = import_openpifpaf()
    if openpifpaf is None:
        raise PoseUnavailable(f"OpenPifPaf unavailable: {reason}")
    head_metas = openpifpaf.plugins.coco.CocoKp().head_metas
    factory = openpifpaf.network.Factory(base_name=checkpoint)
    if seed is None:
        net, _ = factory.factory(head_metas=head_metas)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, _ = factory.factory(head_metas=head_metas)
    return net.eval()


# --- internals ----------------------------------------------------------------------------


def _load_openpifpaf_net(
    openpifpaf: Any, entry: weights_registry.WeightsEntry, weights: str, seed: int
) -> tuple[nn.Module, str]:
    """The network for ``entry`` and a line saying which weights it has."""
    checkpoint = entry.name.removeprefix("openpifpaf_")
    path = None
    if weights == "pretrained":
        path = entry.path if entry.path.is_file() else weights_registry.fetch(entry)
    elif weights == "auto" and entry.path.is_file():
        path = entry.path
    elif weights not in ("auto", "none"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise weights_registry.WeightsError(f"weights file not found: {path} ({entry.name})")
    net = build_openpifpaf_net(checkpoint=checkpoint, seed=seed)
    if path is None:
        how = (
            "weights: none"
            if weights == "none"
            else (
                f"no checkpoint at {entry.path}; run `vigil models fetch {entry.name}` or place "
                f"{entry.file_name} there"
            )
        )
        return net, f"random weights for {entry.name} ({how})"
    # openpifpaf checkpoints pickle the whole network (checksum-verified by fetch), so they
    # cannot be loaded with weights_only; plain state_dicts can.
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        loaded = obj["model"]
        openpifpaf.network.model_migration.model_migration(loaded)
        return loaded.eval(), f"{entry.name} checkpoint from {path}"
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    resolved = weights_registry.ResolvedWeights(dict(state), "path", str(path))
    weights_registry.load_weights(net, resolved, name=entry.name)
    return net, f"{entry.name} weights from {path}"


def _pad16(n: int) -> int:
    """Smallest ``16 k + 1 >= n`` (OpenPifPaf's input size rule)."""
    return ((max(n, 1) - 1 + 15) // 16) * 16 + 1


def _result(kp: np.ndarray, score: np.ndarray, boxes: np.ndarray | None) -> PoseResult:
    poses = Poses(kp.astype(np.float32).reshape(-1, len(COCO17_KEYPOINTS), 3), score)
    if boxes is not None:
        return PoseResult(poses, Detections(boxes, poses.score, np.ones(len(poses), np.int64)))
    boxes = np.zeros((len(poses), 4), np.float32)
    for i, k in enumerate(poses.keypoints):
        vis = k[:, 2] > 0
        xy = k[vis, :2] if vis.any() else k[:, :2]
        boxes[i] = (*xy.min(axis=0), *xy.max(axis=0))
    det = Detections(boxes, poses.score, np.ones(len(poses), np.int64))
    return PoseResult(poses, det)
