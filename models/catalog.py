"""Which detector names vigil accepts (``detect.model``): the registry's detection models and
the project's own perceivers. Needs no torch, so the CLI and the supervisor can check a name
without loading it (:mod:`models.perception` builds the models, in the inference stage)."""

from __future__ import annotations

from models import weights

#: Models that are not plain torchvision detectors: name -> "module:Class".
CUSTOM_PERCEIVERS: dict[str, str] = {"simnet": "models.simnet:SimPerception"}


def check_model(name: str) -> None:
    """Raise :class:`models.weights.WeightsError` (listing known names) for an unknown model.

    ``none`` (detection off, e.g. a segmentation-only config) is accepted."""
    if name in CUSTOM_PERCEIVERS or name.lower() in ("none", "off"):
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
