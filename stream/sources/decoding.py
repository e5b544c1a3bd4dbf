"""PyAV decoder choice (CUDA or software) and the classification of open and read errors.

Shared by the file and camera sources: :func:`hwaccel` picks PyAV's hwaccel settings,
:func:`decoder_name` says which decoder a stream ended up with, :func:`classify_error` maps
an FFmpeg/OS error to a :class:`~stream.sources.base.SourceError` reason, and
:data:`REASON_TEXT` words each reason for the user.
"""

from __future__ import annotations

from typing import Any

import av
import av.codec.hwaccel

REASON_TEXT = {
    "unreachable": "camera unreachable",
    "auth": "authentication failed (check the credentials in the URI)",
    "timeout": "no answer in time",
    "not_found": "stream not found on the server",
    "no_video": "no video stream",
    "unsupported": "unsupported stream",
    "error": "cannot open",
}


def error_text(exc: BaseException) -> str:
    """The first line of an error's text (its ``strerror`` if any), else its class name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def classify_error(exc: BaseException) -> str:
    """The :class:`~stream.sources.base.SourceError` reason for an open error (a key of
    :data:`REASON_TEXT`): ``auth``, ``not_found``, ``unreachable``, ``timeout`` or ``error``."""
    name = type(exc).__name__
    text = f"{name} {error_text(exc)}".lower()
    if "unauthorized" in text or "401" in text or "403" in text or "forbidden" in text:
        return "auth"
    if "notfound" in name.lower() or "404" in text or "not found" in text:
        return "not_found"
    if "refused" in text or "unreachable" in text or "no route" in text or "reset" in text:
        return "unreachable"
    if isinstance(exc, (av.error.ExitError, TimeoutError)) or "timed out" in text:
        return "timeout"
    return "error"


def hwaccel(decoder: str) -> Any:
    """PyAV hwaccel settings for ``decoder`` (``auto``: CUDA when a device is present)."""
    if decoder == "software" or (decoder == "auto" and not cuda_present()):
        return None
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type="cuda", allow_software_fallback=True)


def decoder_name(stream: Any) -> str:
    """``cuda`` when PyAV decodes ``stream`` on the GPU, else ``software``."""
    try:
        return "cuda" if stream.codec_context.is_hwaccel else "software"
    except AttributeError:
        return "software"


_CUDA: bool | None = None


def cuda_present() -> bool:
    """Whether a CUDA device can be used (driver loads and reports a device); cached."""
    global _CUDA
    if _CUDA is None:
        _CUDA = False
        if "cuda" in av.codec.hwaccel.hwdevices_available():
            try:
                import ctypes

                lib = ctypes.CDLL("libcuda.so.1")
                count = ctypes.c_int(0)
                _CUDA = lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0
                _CUDA = _CUDA and count.value > 0
            except OSError:
                _CUDA = False
    return _CUDA
