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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import importlib
import logging
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from models.ops import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # imported where used: reading the registry must not import torch
    import torch
    from torch import nn

Task = Literal["detection", "segmentation", "keypoints", "action"]
TASKS: tuple[str, ...] = ("detection", "segmentation", "keypoints", "action")

#: Seconds a download may wait on any one socket operation (connect, read) before giving up.
DOWNLOAD_TIMEOUT_S = 30.0
#: Tries of one download before giving up on a cut transfer; each resumes where the last ended.
DOWNLOAD_ATTEMPTS = 4
#: Seconds before the first retry of a cut download; doubled before each next one.
RETRY_BACKOFF_S = 1.0
# Largest file a download may write (torchvision's detectors are under 200 MB): a wrong or
# hostile VIGIL_WEIGHTS_URL_BASE must not fill the disk before the checksum is checked.
MAX_DOWNLOAD_BYTES = 1 << 30
#: Seconds to wait for another process that is downloading the same file.
LOCK_TIMEOUT_S = 1800.0
#: Environment variable: download from this base URL + "/" + file name instead of each entry's
#: own URL (a mirror, an internal file server, or a test server on 127.0.0.1).
URL_BASE_ENV = "VIGIL_WEIGHTS_URL_BASE"

log = logging.getLogger(__name__)

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

    Streams into ``.<file>.part`` beside the target with a tqdm bar (``progress=None``: only
    when stderr is a terminal), checks the sha256 (prefix), then renames atomically, so the
    cache never holds a partial or unverified file. A cut transfer (connection reset, short
    body, timeout, HTTP 5xx) is retried up to ``attempts`` times with exponential backoff
    (:data:`RETRY_BACKOFF_S`, doubled each time), resuming with an HTTP ``Range`` request when
    the server supports it (else starting over); the ``.part`` file of a run that gave up is
    kept, so the next run resumes it. An exclusive lock on ``.<file>.lock`` makes concurrent
    fetches of one file (archive workers, two shells) take turns. An already cached file is
    returned as is.

    Raises:
        WeightsError: one line: no network, a proxy or SSL error, an HTTP error, or retries
            used up (each names the file, the URL and the exact path to place it at), or a
            checksum mismatch (names expected vs got; the partial file is deleted).
    """
    entry = _entry(name)
    target = entry.path
    if target.is_file():
        return target
    url = download_url(entry)
    if not url:
        raise WeightsError(f"{entry.name} has no download URL; place {entry.file_name} at {target}")
    if progress is None:
        progress = sys.stderr.isatty()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / f".{entry.file_name}.part"
    with _file_lock(target.parent / f".{entry.file_name}.lock"):
        if target.is_file():  # another process finished it while we waited
            return target
        delay, attempts = RETRY_BACKOFF_S, max(1, attempts)
        for attempt in range(1, attempts + 1):
            try:
                _download(entry, url, part, progress=progress, timeout_s=timeout_s)
                break
            except _Retryable as exc:
                if attempt >= attempts:
                    raise WeightsError(
                        f"could not download {entry.file_name} from {url}: {exc} "
                        f"({attempts} attempts); run again to resume, or download it yourself "
                        f"and place it at {target}"
                    ) from None
                log.warning(
                    "download of %s cut (%s); retry %d/%d in %.1f s, resuming at %d bytes",
                    entry.file_name, exc, attempt, attempts - 1, delay,
                    part.stat().st_size if part.exists() else 0,
                )  # fmt: skip
                time.sleep(delay)
                delay *= 2
        digest = _sha256_file(part)
        if entry.sha256 and not digest.startswith(entry.sha256):
            part.unlink(missing_ok=True)
            raise WeightsError(
                f"checksum mismatch for {entry.file_name} from {url}: expected sha256 "
                f"starting with {entry.sha256}, got {digest}; the file was deleted"
            )
        os.replace(part, target)
    return target


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


class _Retryable(Exception):
    """A transfer cut midway, or a transient server error: worth another try (resuming)."""


def _download(
    entry: WeightsEntry, url: str, part: Path, *, progress: bool, timeout_s: float
) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size with an HTTP Range request.

    Returns once the whole body is on disk. Raises :class:`_Retryable` for a cut or transient
    failure, :class:`WeightsError` (one line) for one that another try would not fix.
    """
    from tqdm import tqdm  # only needed when downloading

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "vigil"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        # A new opener per download: its ProxyHandler reads *_PROXY now, not at first use.
        response = urllib.request.build_opener().open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # the partial file is not a prefix we can extend
            part.unlink(missing_ok=True)
            raise _Retryable("server refused the resume range; starting over") from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        if exc.code == 407:
            raise WeightsError(_proxy_message(entry, url, f"HTTP 407 {exc.reason}")) from None
        raise WeightsError(
            f"could not download {entry.file_name} from {url} (HTTP {exc.code} {exc.reason}); "
            f"download it yourself and place it at {entry.path}"
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _connect_error(entry, url, exc) from None
    with response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None and have + expected > MAX_DOWNLOAD_BYTES:
            part.unlink(missing_ok=True)
            raise WeightsError(_too_large(entry, url, have + expected))
        got = 0
        try:
            with open(part, "ab" if have else "wb") as out, tqdm(
                total=None if expected is None else have + expected, initial=have, unit="B",
                unit_scale=True, unit_divisor=1024, desc=entry.file_name, disable=not progress,
            ) as bar:  # fmt: skip
                while chunk := response.read(1 << 20):
                    if have + got + len(chunk) > MAX_DOWNLOAD_BYTES:  # no length said, or a lie
                        raise _TooLarge
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except _TooLarge:
            part.unlink(missing_ok=True)
            raise WeightsError(_too_large(entry, url, have + got + 1)) from None
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise _Retryable(_reason(exc)) from None
    if expected is not None and got < expected:
        raise _Retryable(f"connection closed after {have + got} of {have + expected} bytes")


class _TooLarge(Exception):
    """The body grew past :data:`MAX_DOWNLOAD_BYTES`."""


def _too_large(entry: WeightsEntry, url: str, size: int) -> str:
    return (
        f"refusing to download {entry.file_name} from {url}: {size:,} bytes or more, over the "
        f"{MAX_DOWNLOAD_BYTES:,}-byte limit for a weights file (is {URL_BASE_ENV} right?)"
    )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip() or type(reason).__name__
    return text.splitlines()[0]


def _connect_error(entry: WeightsEntry, url: str, exc: BaseException) -> Exception:
    """Classify a failure to get a response: no network, SSL, proxy (WeightsError) or a
    transient failure (:class:`_Retryable`)."""
    reason = getattr(exc, "reason", None) or exc
    text = _reason(exc)
    if isinstance(reason, ssl.SSLError) or isinstance(exc, ssl.SSLError):
        return WeightsError(
            f"SSL error downloading {entry.file_name} from {url} ({text}); if a proxy or "
            f"firewall inspects TLS, point SSL_CERT_FILE at its CA bundle, or download the file "
            f"yourself and place it at {entry.path}"
        )
    if _proxy_for(url):
        return WeightsError(_proxy_message(entry, url, text))
    offline = (ConnectionRefusedError, socket.gaierror)
    unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL)
    if isinstance(reason, offline) or getattr(reason, "errno", None) in unreachable:
        return WeightsError(
            f"no network: cannot download {entry.file_name} from {url} ({text}); download it "
            f"on a machine with network access and place it at {entry.path}, or run with "
            f"--weights none for random weights"
        )
    if isinstance(reason, (TimeoutError, ConnectionError, http.client.HTTPException)):
        return _Retryable(text)
    return WeightsError(
        f"could not download {entry.file_name} from {url} ({text}); "
        f"download it yourself and place it at {entry.path}"
    )


def _proxy_for(url: str) -> str:
    """The proxy urllib would use for ``url`` ('' for none), from ``*_PROXY``/``NO_PROXY``."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme, "")
    if proxy and parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return ""
    return proxy


def _proxy_message(entry: WeightsEntry, url: str, reason: str) -> str:
    proxy = _proxy_for(url) or "(the configured proxy)"
    return (
        f"proxy error downloading {entry.file_name} from {url} via {_redact(proxy)} ({reason}); "
        f"check HTTPS_PROXY / HTTP_PROXY / NO_PROXY, or download the file yourself and place "
        f"it at {entry.path}"
    )


def _redact(url: str) -> str:
    """``http://user:secret@host:3128`` -> ``http://***@host:3128`` (no credentials in logs)."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, and removed on release); WeightsError
    after ``timeout_s`` of waiting. A lock file removed by its previous holder while we waited
    is detected (inode changed) and the lock taken again on the new file."""
    import fcntl

    deadline = time.monotonic() + timeout_s
    while True:
        f = open(path, "a")  # noqa: SIM115 (closed below, on every path)
        try:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WeightsError(
                            f"another process has been downloading into {path.parent} for "
                            f"over {timeout_s:.0f} s (lock {path}); wait for it, or delete "
                            "the lock file"
                        ) from None
                    time.sleep(0.2)
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    path.unlink(missing_ok=True)  # before unlocking: waiters then re-check
                return
        finally:
            f.close()  # releases the lock


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
_IMAGENET_NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
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
