"""Optional packages (onnx, onnxruntime, tensorrt, openpifpaf) imported without ever failing.

:func:`try_import` gives ``(module, None)`` or ``(None, reason)``; :func:`openpifpaf_status`
says why OpenPifPaf is unusable here. A leaf module: both the backends
(:mod:`models.runtime.options`) and the pose stage (:mod:`models.pose`) import it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

LOG = logging.getLogger(__name__)

_OPENPIFPAF: tuple[Any, str | None] | None = None


def try_import(name: str) -> tuple[Any, str | None]:
    """Import an optional package: ``(module, None)`` or ``(None, reason)``; never raises."""
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return None, f"{name} is not importable ({one_line(exc)}); install it to use it"


def one_line(exc: BaseException) -> str:
    """``"ExcType: first line of the message"`` (the type alone when there is no message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def openpifpaf_status() -> str | None:
    """None if openpifpaf imports, else the reason (one line). Cached after the first call."""
    _, reason = import_openpifpaf()
    return reason


def import_openpifpaf() -> tuple[Any, str | None]:
    """``(module, None)`` or ``(None, reason)``; never raises; logs the reason once.

    openpifpaf-vita 0.14.2 calls ``matplotlib.cm.get_cmap``, removed in matplotlib 3.9; when
    matplotlib is newer, the old name is pointed at ``matplotlib.colormaps.get_cmap`` first.
    """
    global _OPENPIFPAF
    if _OPENPIFPAF is not None:
        return _OPENPIFPAF
    try:
        try:
            import matplotlib
            import matplotlib.cm

            if not hasattr(matplotlib.cm, "get_cmap"):
                matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap  # type: ignore[attr-defined]
        except ImportError:
            pass  # openpifpaf imports matplotlib lazily in the parts vigil uses
        import openpifpaf

        _OPENPIFPAF = (openpifpaf, None)
    except Exception as exc:  # ImportError, or a broken build (undefined symbol, ABI)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"openpifpaf does not import ({type(exc).__name__}: {text}); install the "
        reason += "'pose' extra: pip install --no-build-isolation openpifpaf-vita==0.14.2"
        LOG.warning("%s", reason)
        _OPENPIFPAF = (None, reason)
    return _OPENPIFPAF
