"""Which detector names vigil accepts (``detect.model``): the registry's detection models and
the project's own perceivers. Needs no torch, so the CLI and the supervisor can check a name
without loading it (:mod:`models.perception` builds the models, in the inference stage).

``detect.model: auto`` (the default) picks a detector for the device (:func:`default_detector`):
on a CPU the light one that keeps a live 640x360 camera above 5 frames/s on 2 cores, on CUDA
the stronger one. Figures: README "Weights", ``scripts/bench_default_detector.py``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from models import weights

#: Models that are not plain torchvision detectors: name -> "module:Class".
CUSTOM_PERCEIVERS: dict[str, str] = {"simnet": "models.simnet.infer:SimPerception"}

#: ``detect.model: auto`` without CUDA: COCO box mAP 21.3 for about 65 ms of CPU time per
#: 640x360 frame, a third of ``fasterrcnn_mobilenet_v3_large_320_fpn``'s (mAP 22.8, ~190 ms,
#: about 5 frames/s per free core: no margin on 2 shared cores). README "Weights": figures.
CPU_DETECTOR = "ssdlite320_mobilenet_v3_large"
#: ``detect.model: auto`` on CUDA: COCO box mAP 32.8 at 800 px, the stronger of the two.
CUDA_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
AUTO = "auto"


def check_model(name: str) -> None:
    """Raise :class:`models.weights.WeightsError` (listing known names) for an unknown model.

    ``none`` (detection off, e.g. a segmentation-only config) and ``auto`` are accepted."""
    if name in CUSTOM_PERCEIVERS or name.lower() in ("none", "off", AUTO):
        return
    entry = weights.get(name)
    if entry.task != "detection":
        raise weights.WeightsError(
            f"{name} is a {entry.task} model; detect.model needs one of: "
            + ", ".join(known_models())
        )


def known_models() -> list[str]:
    names = [e.name for e in weights.entries("detection")] + list(CUSTOM_PERCEIVERS)
    return sorted(set(names))


def default_detector(device: str) -> tuple[str, str]:
    """``(model name, one-line reason)`` for ``detect.model: auto`` on ``device``.

    Args:
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (``auto`` is probed without
            importing torch: :func:`cuda_present`).
    """
    if device == AUTO:
        cuda, why = cuda_present()
    else:
        cuda, why = device.startswith("cuda"), f"device {device}"
    if cuda:
        return CUDA_DETECTOR, (
            f"{why}: the stronger detector (COCO box mAP 32.8); set detect.model / --model to "
            "choose another"
        )
    return CPU_DETECTOR, (
        f"{why}: the light detector (about 65 ms of CPU time per 640x360 frame, 3x the 5 "
        "frames/s a live camera needs on one core; COCO box mAP 21.3); set detect.model / "
        "--model to choose another"
    )


def cuda_present() -> tuple[bool, str]:
    """Whether ``torch.cuda.is_available()`` will likely be true, and why, without importing
    torch (600 MB per process): a CUDA build of torch, an NVIDIA driver, a visible device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False, "no GPU (CUDA_VISIBLE_DEVICES hides them)"
    if not Path("/proc/driver/nvidia/version").exists():
        return False, "no GPU (no NVIDIA driver)"
    if not _torch_cuda_version():
        return False, "no GPU usable (torch is a CPU-only build)"
    return True, "CUDA device found"


def _torch_cuda_version() -> str | None:
    """``torch.version.cuda`` read from the file, not imported; None for a CPU build."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", version.read_text(), re.M)
    except OSError:
        return None
    return match.group(1) if match else None
