"""Weights registry: model name -> URL, checksum, builder, class names and preprocessing.

In the spirit of torchvision's ``models/_api.py``: one :class:`WeightsEntry` carries everything
needed to build a model, fetch its weights and interpret its outputs. Files are cached at
``cache_dir() / "weights" / entry.file_name`` (``$VIGIL_CACHE`` or ``~/.cache/vigil``).

How a stage picks its weights is one *spec* string, resolved by :func:`resolve`:

- ``"none"``: random init, on purpose.
- ``"pretrained"``: the cached file; else download it (:func:`fetch`); else :class:`WeightsError`
  naming the file, its URL and the exact path to place it at.
- a filesystem path: load that file (a state_dict, or a dict holding one under ``"state_dict"``
  or ``"model"``).
- ``"auto"``: the cached pretrained file if present, else ``<pack dir>/<model name>.pt`` from the
  first registered pack in :data:`PACKS` that has one, else download it as ``"pretrained"``
  does. Random init only for an entry with no URL (the caller decides; simnet makes it an
  error), never as a silent fallback for a failed download.

Downloads come from ``entry.url``, or from ``$VIGIL_WEIGHTS_URL_BASE/<file name>`` when that
variable is set (:func:`download_url`: a mirror, or a test server on 127.0.0.1).

Checksums: torchvision publishes only the first 8 hex digits of each file's sha256, in the file
name (``fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth``). ``WeightsEntry.sha256`` therefore
holds either a full 64-hex digest or such a prefix, and verification checks that the file's
digest *starts with* it, exactly as ``torch.hub.download_url_to_file(hash_prefix=...)`` does.
Cached files are verified when downloaded, not on every load.

The download itself (resume, retries, lock, checksum) is :mod:`models.download`; the built-in
torchvision and OpenPifPaf entries, registered when this module is imported, are
:mod:`models.builtin_weights`. Importing this module does not import torch.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from models.builtin_weights import BUILTIN_ENTRIES
from models.download import (
    DOWNLOAD_ATTEMPTS,
    DOWNLOAD_TIMEOUT_S,
    URL_BASE_ENV,
    DownloadError,
    download_file,
)

if TYPE_CHECKING:  # imported where used: reading the registry must not import torch
    import torch
    from torch import nn

Task = Literal["detection", "segmentation", "keypoints", "action"]
TASKS: tuple[str, ...] = ("detection", "segmentation", "keypoints", "action")


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
            (``"random"`` = auto found nothing for an entry without a download URL).
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


def download_url(name: str | WeightsEntry) -> str:
    """The URL an entry is downloaded from: ``entry.url``, or, when ``$VIGIL_WEIGHTS_URL_BASE``
    is set, that base + ``/`` + the file name (a mirror, an offline file server, a test server).
    '' when the entry has no URL."""
    entry = _entry(name)
    if not entry.url:
        return ""
    base = os.environ.get(URL_BASE_ENV, "").strip()
    return f"{base.rstrip('/')}/{entry.file_name}" if base else entry.url


def fetch(
    name: str | WeightsEntry,
    *,
    progress: bool | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Path:
    """Download an entry's weights into the cache and return the cached path.

    :func:`models.download.download_file` does the work: a ``.part`` file, a tqdm bar
    (``progress=None``: only when stderr is a terminal), retries that resume, a lock, the sha256
    (prefix) check and an atomic rename, so the cache never holds a partial or unverified file.
    An already cached file is returned as is.

    Raises:
        WeightsError: one line: no download URL, no network, a proxy or SSL error, an HTTP
            error, or retries used up (each names the file, the URL and the exact path to place
            it at), or a checksum mismatch (names expected vs got; the partial file is deleted).
    """
    entry = _entry(name)
    target = entry.path
    if target.is_file():
        return target
    url = download_url(entry)
    if not url:
        raise WeightsError(f"{entry.name} has no download URL; place {entry.file_name} at {target}")
    try:
        return download_file(
            url,
            target,
            sha256=entry.sha256,
            progress=progress,
            timeout_s=timeout_s,
            attempts=attempts,
        )
    except DownloadError as exc:
        raise WeightsError(str(exc)) from None


def resolve(name: str | WeightsEntry, spec: str | os.PathLike[str]) -> ResolvedWeights:
    """Turn a weights spec (``"none"``, ``"pretrained"``, ``"auto"`` or a path) into tensors.

    See the module docstring for what each spec means. ``"auto"`` and ``"pretrained"``
    download a missing file (:func:`fetch`); call :func:`prefetch` first to do that up front.
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
        pack_file = _pack_file(entry)
        if pack_file is not None:
            pack, candidate = pack_file
            return ResolvedWeights(
                _load_file(candidate), f"pack:{pack}", f"{pack} pack weights from {candidate}"
            )
        if not entry.url:  # nothing to download: the caller decides (simnet: an error)
            return ResolvedWeights(
                None,
                "random",
                f"random weights (no file at {entry.path} and no download URL for {entry.name})",
            )
        path = fetch(entry)
        return ResolvedWeights(
            _load_file(path), "pretrained", f"pretrained {entry.name} weights from {path}"
        )
    path = Path(spec_str).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (for {entry.name})")
    return ResolvedWeights(_load_file(path), "path", f"{entry.name} weights from {path}")


def prefetch(name: str | WeightsEntry, spec: str | os.PathLike[str]) -> Path | None:
    """Download now what :func:`resolve` would download for ``spec`` (None: nothing to fetch).

    The CLI calls this before it starts the pipeline's processes, so that the progress bar is
    on the user's terminal and a failure is a one-line exit 2, not a failed stage.
    """
    entry = _entry(name)
    return fetch(entry) if needs_download(entry, spec) else None


def needs_download(name: str | WeightsEntry, spec: str | os.PathLike[str]) -> bool:
    """Whether :func:`resolve` with ``spec`` would download (no cached file, no pack file)."""
    entry = _entry(name)
    spec_str = os.fspath(spec)
    if spec_str not in ("auto", "pretrained") or not entry.url or entry.path.is_file():
        return False
    return spec_str == "pretrained" or _pack_file(entry) is None


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


def _pack_file(entry: WeightsEntry) -> tuple[str, Path] | None:
    """``(pack name, file)`` of the first pack in :data:`PACKS` holding ``<name>.pt``."""
    for pack, directory in PACKS.items():
        candidate = directory / f"{entry.name}.pt"
        if candidate.is_file():
            return pack, candidate
    return None


def _import_builder(path: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"builder must be 'module:function', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)


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


for _spec in BUILTIN_ENTRIES:
    register(WeightsEntry(**_spec))
