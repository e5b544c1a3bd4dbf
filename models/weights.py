"""Weights registry: model name -> URL, checksum, builder, class names and preprocessing.

In the spirit of torchvision's ``models/_api.py``: one :class:`WeightsEntry` carries everything
needed to build a model, fetch its weights and interpret its outputs. Files are cached at
``cache_dir() / "weights" / entry.file_name`` (``$VIGIL_CACHE`` or ``~/.cache/vigil``).

How a stage picks its weights is one *spec* string, resolved by :func:`resolve`:

- ``"none"``: random init, on purpose.
- ``"pretrained"``: the cached file; else download it (:func:`fetch`); else :class:`WeightsError`
  naming the file and the exact path to place it at.
- a filesystem path: load that file (a state_dict, or a dict holding one under ``"state_dict"``
  or ``"model"``).
- ``"auto"``: the cached pretrained file if present, else ``<pack dir>/<model name>.pt`` from the
  first registered pack in :data:`PACKS` that has one, else random init. Never downloads.

Checksums: torchvision publishes only the first 8 hex digits of each file's sha256, in the file
name (``fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth``). ``WeightsEntry.sha256`` therefore
holds either a full 64-hex digest or such a prefix, and verification checks that the file's
digest *starts with* it, exactly as ``torch.hub.download_url_to_file(hash_prefix=...)`` does.
Cached files are verified when downloaded, not on every load.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # imported where used: reading the registry must not import torch
    import torch
    from torch import nn

Task = Literal["detection", "segmentation", "keypoints", "action"]
TASKS: tuple[str, ...] = ("detection", "segmentation", "keypoints", "action")

#: Seconds a download may wait on any one socket operation (connect, read) before giving up.
DOWNLOAD_TIMEOUT_S = 30.0

#: Model packs: pack name -> directory holding ``<model_name>.pt`` state_dicts, tried by
#: ``resolve(name, "auto")`` in insertion order when no pretrained file is cached.
PACKS: dict[str, Path] = {"sim": Path(__file__).resolve().parent / "weights" / "sim"}


class WeightsError(Exception):
    """Weights cannot be found, fetched, verified or loaded. The message is one line for a CLI."""


@dataclass(frozen=True)
class WeightsEntry:
    """Everything needed to build one model and fetch, verify and interpret its weights.

    Attributes:
        name: registry key, e.g. ``fasterrcnn_mobilenet_v3_large_fpn``.
        task: ``"detection" | "segmentation" | "keypoints" | "action"``.
        url: where the pretrained file is downloaded from ('' if there is none).
        sha256: full 64-hex sha256 of the file, or a prefix of it (torchvision publishes 8
            digits); a file matches when its digest starts with this. '' skips verification.
        file_name: name of the cached file under ``cache_dir() / "weights"``.
        builder: callable, or ``"module:function"`` import path, returning the ``nn.Module``
            with random init when called with ``weights=None, weights_backbone=None``.
        categories: class names indexed by the model's label ids (index 0 is background for
            torchvision detectors; ``"N/A"`` marks unused COCO ids).
        preprocessing: what the model expects, e.g. ``{"input": "RGB float [0, 1]",
            "min_size": 800, "max_size": 1333, "mean": (...), "std": (...)}`` (sizes in pixels).
        license: licence of the weights file as published.
        notes: free text: training recipe, caveats.
        builder_kwargs: extra keyword arguments for ``builder`` so the random-init architecture
            matches the pretrained file (e.g. ``aux_loss=True`` for DeepLabV3).
    """

    name: str
    task: Task
    url: str
    sha256: str
    file_name: str
    builder: Callable[..., nn.Module] | str
    categories: tuple[str, ...]
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    license: str = ""
    notes: str = ""
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.sha256 and not re.fullmatch(r"[0-9a-f]{1,64}", self.sha256):
            raise ValueError(
                f"sha256 must be lowercase hex (a digest or prefix), got {self.sha256!r}"
            )
        if not self.file_name or "/" in self.file_name or "\\" in self.file_name:
            raise ValueError(f"file_name must be a bare file name, got {self.file_name!r}")

    @property
    def path(self) -> Path:
        """Where the pretrained file lives in the cache (whether or not it is there)."""
        return cache_dir() / "weights" / self.file_name

    def build(self, *, seed: int | None = None, **overrides: Any) -> nn.Module:
        """Build the model with random init; ``seed`` makes it identical across processes.

        Never downloads: ``weights`` and ``weights_backbone`` are always None. The global torch
        RNG is left untouched when ``seed`` is given.
        """
        builder = _import_builder(self.builder) if isinstance(self.builder, str) else self.builder
        kwargs = {"weights": None, "weights_backbone": None, "num_classes": len(self.categories)}
        kwargs.update(self.builder_kwargs)
        kwargs.update(overrides)
        if seed is None:
            return builder(**kwargs)
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return builder(**kwargs)


@dataclass(frozen=True)
class ResolvedWeights:
    """The outcome of :func:`resolve`.

    Attributes:
        state_dict: tensors to load, or None for random init.
        source: ``"none"`` | ``"pretrained"`` | ``"path"`` | ``"pack:<name>"`` | ``"random"``
            (``"random"`` = auto found nothing).
        description: one line for logs saying what was chosen and, for random init, how to
            get real weights.
    """

    state_dict: dict[str, torch.Tensor] | None
    source: str
    description: str


class WeightsRegistry:
    """Name -> :class:`WeightsEntry`. Registering a name twice is an error."""

    def __init__(self) -> None:
        self._entries: dict[str, WeightsEntry] = {}

    def register(self, entry: WeightsEntry) -> WeightsEntry:
        if entry.name in self._entries:
            raise ValueError(f"weights entry {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> WeightsEntry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise WeightsError(f"unknown model {name!r}; known models: {known}") from None

    def entries(self, task: str | None = None) -> list[WeightsEntry]:
        """Entries in registration order, optionally only those of one ``task``."""
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        return [e for e in self._entries.values() if task is None or e.task == task]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


#: The process-wide registry, filled with the torchvision models below.
REGISTRY = WeightsRegistry()


def register(entry: WeightsEntry) -> WeightsEntry:
    """Add ``entry`` to :data:`REGISTRY`; raises ValueError if the name is taken."""
    return REGISTRY.register(entry)


def get(name: str) -> WeightsEntry:
    """Look up ``name`` in :data:`REGISTRY`; WeightsError lists the known names."""
    return REGISTRY.get(name)


def entries(task: str | None = None) -> list[WeightsEntry]:
    """Registered entries, optionally only those of one ``task``."""
    return REGISTRY.entries(task)


def cache_dir() -> Path:
    """``$VIGIL_CACHE`` if set, else ``~/.cache/vigil``; read on every call."""
    env = os.environ.get("VIGIL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vigil"


def fetch(
    name: str | WeightsEntry, *, progress: bool = True, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Download an entry's weights into the cache and return the cached path.

    Streams to a temp file beside the target with a tqdm bar, checks the sha256 (prefix), then
    renames atomically, so the cache never holds a partial or unverified file. An already
    cached file is returned as is.

    Raises:
        WeightsError: network failure (names the file and the path to place it at by hand), or
            checksum mismatch (names expected vs got; the temp file is deleted).
    """
    entry = _entry(name)
    target = entry.path
    if target.is_file():
        return target
    if not entry.url:
        raise WeightsError(f"{entry.name} has no download URL; place {entry.file_name} at {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{entry.file_name}.", suffix=".part"
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _download(entry, out, progress=progress, timeout_s=timeout_s)
        if entry.sha256 and not digest.startswith(entry.sha256):
            raise WeightsError(
                f"checksum mismatch for {entry.file_name} from {entry.url}: expected sha256 "
                f"starting with {entry.sha256}, got {digest}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve(name: str | WeightsEntry, spec: str | os.PathLike[str]) -> ResolvedWeights:
    """Turn a weights spec (``"none"``, ``"pretrained"``, ``"auto"`` or a path) into tensors.

    See the module docstring for what each spec means. ``"auto"`` never touches the network.
    """
    entry = _entry(name)
    spec_str = os.fspath(spec)
    if spec_str == "none":
        return ResolvedWeights(None, "none", f"random weights for {entry.name} (weights: none)")
    if spec_str == "pretrained":
        path = entry.path if entry.path.is_file() else fetch(entry)
        return ResolvedWeights(
            _load_file(path), "pretrained", f"pretrained {entry.name} weights from {path}"
        )
    if spec_str == "auto":
        if entry.path.is_file():
            return ResolvedWeights(
                _load_file(entry.path), "pretrained", f"pretrained {entry.name} from {entry.path}"
            )
        for pack, directory in PACKS.items():
            candidate = directory / f"{entry.name}.pt"
            if candidate.is_file():
                return ResolvedWeights(
                    _load_file(candidate), f"pack:{pack}", f"{pack} pack weights from {candidate}"
                )
        return ResolvedWeights(
            None,
            "random",
            f"random weights (no pretrained file at {entry.path}; run `vigil models fetch "
            f"{entry.name}` or place {entry.file_name} there)",
        )
    path = Path(spec_str).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (for {entry.name})")
    return ResolvedWeights(_load_file(path), "path", f"{entry.name} weights from {path}")


def load_weights(model: nn.Module, resolved: ResolvedWeights, *, name: str = "model") -> None:
    """Load ``resolved.state_dict`` into ``model`` (no-op for random init).

    Strict, except that BatchNorm ``num_batches_tracked`` buffers may be missing: torchvision's
    pretrained detectors were saved with FrozenBatchNorm2d, which has none, while the random-init
    build uses BatchNorm2d; in eval mode both compute the same thing.

    Raises:
        WeightsError: keys or shapes do not fit the model.
    """
    if resolved.state_dict is None:
        return
    try:
        result = model.load_state_dict(resolved.state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise WeightsError(f"weights do not fit {name} ({resolved.source}): {first}") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"weights do not fit {name} ({resolved.source}): {len(missing)} missing keys "
            f"{missing[:3]}, {len(result.unexpected_keys)} unexpected keys "
            f"{result.unexpected_keys[:3]}"
        )


# --- internals ----------------------------------------------------------------------------


def _entry(name: str | WeightsEntry) -> WeightsEntry:
    return name if isinstance(name, WeightsEntry) else REGISTRY.get(name)


def _import_builder(path: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"builder must be 'module:function', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)


def _download(entry: WeightsEntry, out: Any, *, progress: bool, timeout_s: float) -> str:
    """Stream ``entry.url`` into the open binary file ``out``; return the sha256 hex digest."""
    from tqdm import tqdm  # only needed when downloading

    hasher = hashlib.sha256()
    request = urllib.request.Request(entry.url, headers={"User-Agent": "vigil"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=entry.file_name, disable=not progress) as bar:  # fmt: skip
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # incl. timeouts, HTTP errors
        if isinstance(exc, urllib.error.HTTPError):
            reason: object = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"could not download {entry.file_name} from {entry.url} ({reason}); "
            f"download it yourself and place it at {entry.path}"
        ) from None
    return hasher.hexdigest()


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict saved with ``torch.save``; tensors only (``weights_only=True``)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, wrong format
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load weights from {path}: {reason}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (name -> tensor)")
    return dict(obj)


# --- the torchvision models ---------------------------------------------------------------

_TV_LICENSE = (
    "BSD-3-Clause (torchvision); trained on COCO, whose images carry their own Flickr licences"
)
_IMAGENET_NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
_RGB01 = "RGB float in [0, 1], (3, H, W); the model resizes and normalises internally"


def _register_torchvision(
    name: str, task: Task, preprocessing: dict[str, Any], **builder_kwargs: Any
) -> None:
    """Register one torchvision model, with URL and categories from its DEFAULT weights enum
    (copied into :mod:`models.torchvision_meta`, so that this import needs no torch).

    The checksum is the 8-digit sha256 prefix that torchvision puts in the file name, the same
    one ``torch.hub`` checks.
    """
    from models.torchvision_meta import TORCHVISION_MODELS

    meta = TORCHVISION_MODELS[name]
    url = str(meta["url"])
    file_name = url.rsplit("/", 1)[-1]
    match = re.search(r"-([0-9a-f]+)\.", file_name)
    register(
        WeightsEntry(
            name=name,
            task=task,
            url=url,
            sha256=match.group(1) if match else "",
            file_name=file_name,
            builder=str(meta["builder"]),
            categories=tuple(meta["categories"]),  # type: ignore[arg-type]
            preprocessing={"input": _RGB01, **preprocessing},
            license=_TV_LICENSE,
            notes=f"torchvision {meta['weights']}; recipe {meta['recipe']}",
            builder_kwargs=builder_kwargs,
        )
    )


_RCNN = {"resize": "shorter side to min_size, longer side capped at max_size", **_IMAGENET_NORM}
_SEG = {"resize": "shorter side to 520 (as trained)", "resize_size": 520, **_IMAGENET_NORM}

_register_torchvision("fasterrcnn_mobilenet_v3_large_fpn", "detection",
                      {**_RCNN, "min_size": 800, "max_size": 1333})  # fmt: skip
_register_torchvision("fasterrcnn_mobilenet_v3_large_320_fpn", "detection",
                      {**_RCNN, "min_size": 320, "max_size": 640})  # fmt: skip
_register_torchvision("fasterrcnn_resnet50_fpn_v2", "detection",
                      {**_RCNN, "min_size": 800, "max_size": 1333})  # fmt: skip
_register_torchvision("retinanet_resnet50_fpn_v2", "detection",
                      {**_RCNN, "min_size": 800, "max_size": 1333})  # fmt: skip
_register_torchvision("ssdlite320_mobilenet_v3_large", "detection",
                      {"resize": "fixed (320, 320), aspect not kept", "fixed_size": (320, 320),
                       "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})  # fmt: skip
_register_torchvision("keypointrcnn_resnet50_fpn", "keypoints",
                      {**_RCNN, "min_size": 800, "max_size": 1333})  # fmt: skip
_register_torchvision("maskrcnn_resnet50_fpn_v2", "segmentation",
                      {**_RCNN, "min_size": 800, "max_size": 1333})  # fmt: skip
_register_torchvision("deeplabv3_mobilenet_v3_large", "segmentation", _SEG, aux_loss=True)
_register_torchvision("lraspp_mobilenet_v3_large", "segmentation", _SEG)
_register_torchvision("fcn_resnet50", "segmentation", _SEG, aux_loss=True)


# --- OpenPifPaf (optional 'pose' extra) ---------------------------------------------------

_OPENPIFPAF_URL = "http://github.com/openpifpaf/torchhub/releases/download/v0.13/"
_OPENPIFPAF_PRE = {
    "input": "RGB float in [0, 1], (3, H, W), ImageNet-normalised",
    "resize": "longer side to long_edge, padded to 16k+1",
    "long_edge": 641,
    **_IMAGENET_NORM,
}


def _register_openpifpaf(checkpoint: str, file_name: str) -> None:
    """Register one OpenPifPaf COCO-17 checkpoint (openpifpaf's ``plugins/coco`` URLs).

    The files pickle the whole network (``{"model": Shell, "epoch": n}``), so
    :func:`models.pose.PoseEstimator` loads them, not :func:`resolve`. Like torch.hub (which
    openpifpaf uses with ``check_hash`` for these http URLs), the checksum is the 8-digit
    sha256 prefix at the end of the file name.
    """
    register(
        WeightsEntry(
            name=f"openpifpaf_{checkpoint}",
            task="keypoints",
            url=_OPENPIFPAF_URL + file_name,
            sha256=re.search(r"-([0-9a-f]{8})\.pkl$", file_name).group(1),  # type: ignore[union-attr]
            file_name=file_name,
            builder="models.pose:build_openpifpaf_net",
            categories=("__background__", "person"),
            preprocessing=_OPENPIFPAF_PRE,
            license="AGPL-3.0 (openpifpaf); trained on COCO keypoints",
            notes="OpenPifPaf CIF/CAF, COCO-17; needs the 'pose' extra (openpifpaf-vita)",
            builder_kwargs={"checkpoint": checkpoint},
        )
    )


_register_openpifpaf(
    "shufflenetv2k16", "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl"
)
_register_openpifpaf(
    "shufflenetv2k30", "shufflenetv2k30-210821-003923-cocokp-slurm726072-edge513-o10s-5fe1c400.pkl"
)
_register_openpifpaf(
    "resnet50", "resnet50-210830-150728-cocokp-slurm728641-edge513-o10s-ecd30da4.pkl"
)
