"""Resumable, verified, locked HTTP downloads of one file (the weights registry's fetcher).

:func:`download_file` streams a URL into ``.<file>.part`` beside the target, retries a cut
transfer with exponential backoff and resumes it with an HTTP ``Range`` request, checks the
sha256 (prefix), then renames atomically; an exclusive lock file makes concurrent downloads of
one file take turns. Every failure is a one-line :class:`DownloadError` that names the file, the
URL and where to place the file by hand. Knows nothing of models: :func:`models.weights.fetch`
calls it for a registry entry and turns a :class:`DownloadError` into a ``WeightsError``.

Proxy URLs in messages are redacted here by a one-line ``_redact`` (``models`` may not import
``stream``'s redaction helpers).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
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
from collections.abc import Iterator
from pathlib import Path

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

# Downloads are part of the weights registry's story: log under its name.
log = logging.getLogger("models.weights")


class DownloadError(Exception):
    """A download failed in a way another try would not fix. The message is one line."""


def download_file(
    url: str,
    target: Path,
    *,
    sha256: str = "",
    progress: bool | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Path:
    """Download ``url`` to ``target`` (``target.name`` is the file's name in every message) and
    return ``target``.

    Streams into ``.<file>.part`` beside the target with a tqdm bar (``progress=None``: only
    when stderr is a terminal), checks the sha256 (prefix; '' skips the check), then renames
    atomically, so ``target`` is never a partial or unverified file. A cut transfer (connection
    reset, short body, timeout, HTTP 5xx) is retried up to ``attempts`` times with exponential
    backoff (:data:`RETRY_BACKOFF_S`, doubled each time), resuming with an HTTP ``Range``
    request when the server supports it (else starting over); the ``.part`` file of a run that
    gave up is kept, so the next run resumes it. An exclusive lock on ``.<file>.lock`` makes
    concurrent downloads of one file (archive workers, two shells) take turns.

    Raises:
        DownloadError: one line: no network, a proxy or SSL error, an HTTP error, or retries
            used up (each names the file, the URL and the exact path to place it at), or a
            checksum mismatch (names expected vs got; the partial file is deleted).
    """
    file_name = target.name
    if progress is None:
        progress = sys.stderr.isatty()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / f".{file_name}.part"
    with _file_lock(target.parent / f".{file_name}.lock"):
        if target.is_file():  # another process finished it while we waited
            return target
        delay, attempts = RETRY_BACKOFF_S, max(1, attempts)
        for attempt in range(1, attempts + 1):
            try:
                _download(target, url, part, progress=progress, timeout_s=timeout_s)
                break
            except _Retryable as exc:
                if attempt >= attempts:
                    raise DownloadError(
                        f"could not download {file_name} from {url}: {exc} "
                        f"({attempts} attempts); run again to resume, or download it yourself "
                        f"and place it at {target}"
                    ) from None
                log.warning(
                    "download of %s cut (%s); retry %d/%d in %.1f s, resuming at %d bytes",
                    file_name, exc, attempt, attempts - 1, delay,
                    part.stat().st_size if part.exists() else 0,
                )  # fmt: skip
                time.sleep(delay)
                delay *= 2
        digest = _sha256_file(part)
        if sha256 and not digest.startswith(sha256):
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {file_name} from {url}: expected sha256 "
                f"starting with {sha256}, got {digest}; the file was deleted"
            )
        os.replace(part, target)
    return target


class _Retryable(Exception):
    """A transfer cut midway, or a transient server error: worth another try (resuming)."""


def _download(target: Path, url: str, part: Path, *, progress: bool, timeout_s: float) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size with an HTTP Range request.

    Returns once the whole body is on disk. Raises :class:`_Retryable` for a cut or transient
    failure, :class:`DownloadError` (one line) for one that another try would not fix.
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
            raise DownloadError(_proxy_message(target, url, f"HTTP 407 {exc.reason}")) from None
        raise DownloadError(
            f"could not download {target.name} from {url} (HTTP {exc.code} {exc.reason}); "
            f"download it yourself and place it at {target}"
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _connect_error(target, url, exc) from None
    with response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None and have + expected > MAX_DOWNLOAD_BYTES:
            part.unlink(missing_ok=True)
            raise DownloadError(_too_large(target, url, have + expected))
        got = 0
        try:
            with open(part, "ab" if have else "wb") as out, tqdm(
                total=None if expected is None else have + expected, initial=have, unit="B",
                unit_scale=True, unit_divisor=1024, desc=target.name, disable=not progress,
            ) as bar:  # fmt: skip
                while chunk := response.read(1 << 20):
                    if have + got + len(chunk) > MAX_DOWNLOAD_BYTES:  # no length said, or a lie
                        raise _TooLarge
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except _TooLarge:
            part.unlink(missing_ok=True)
            raise DownloadError(_too_large(target, url, have + got + 1)) from None
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise _Retryable(_reason(exc)) from None
    if expected is not None and got < expected:
        raise _Retryable(f"connection closed after {have + got} of {have + expected} bytes")


class _TooLarge(Exception):
    """The body grew past :data:`MAX_DOWNLOAD_BYTES`."""


def _too_large(target: Path, url: str, size: int) -> str:
    return (
        f"refusing to download {target.name} from {url}: {size:,} bytes or more, over the "
        f"{MAX_DOWNLOAD_BYTES:,}-byte limit for a weights file (is {URL_BASE_ENV} right?)"
    )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip() or type(reason).__name__
    return text.splitlines()[0]


def _connect_error(target: Path, url: str, exc: BaseException) -> Exception:
    """Classify a failure to get a response: no network, SSL, proxy (DownloadError) or a
    transient failure (:class:`_Retryable`)."""
    reason = getattr(exc, "reason", None) or exc
    text = _reason(exc)
    if isinstance(reason, ssl.SSLError) or isinstance(exc, ssl.SSLError):
        return DownloadError(
            f"SSL error downloading {target.name} from {url} ({text}); if a proxy or "
            f"firewall inspects TLS, point SSL_CERT_FILE at its CA bundle, or download the file "
            f"yourself and place it at {target}"
        )
    if _proxy_for(url):
        return DownloadError(_proxy_message(target, url, text))
    offline = (ConnectionRefusedError, socket.gaierror)
    unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL)
    if isinstance(reason, offline) or getattr(reason, "errno", None) in unreachable:
        return DownloadError(
            f"no network: cannot download {target.name} from {url} ({text}); download it "
            f"on a machine with network access and place it at {target}, or run with "
            f"--weights none for random weights"
        )
    if isinstance(reason, (TimeoutError, ConnectionError, http.client.HTTPException)):
        return _Retryable(text)
    return DownloadError(
        f"could not download {target.name} from {url} ({text}); "
        f"download it yourself and place it at {target}"
    )


def _proxy_for(url: str) -> str:
    """The proxy urllib would use for ``url`` ('' for none), from ``*_PROXY``/``NO_PROXY``."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme, "")
    if proxy and parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return ""
    return proxy


def _proxy_message(target: Path, url: str, reason: str) -> str:
    proxy = _proxy_for(url) or "(the configured proxy)"
    return (
        f"proxy error downloading {target.name} from {url} via {_redact(proxy)} ({reason}); "
        f"check HTTPS_PROXY / HTTP_PROXY / NO_PROXY, or download the file yourself and place "
        f"it at {target}"
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
    """Hold an exclusive ``flock`` on ``path`` (created, and removed on release); DownloadError
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
                        raise DownloadError(
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
