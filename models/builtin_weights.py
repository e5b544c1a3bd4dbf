"""The weights entries vigil ships: torchvision's detectors, keypoint and segmentation models, and
the OpenPifPaf COCO-17 checkpoints (the optional 'pose' extra).

Each entry is the keyword arguments of a :class:`models.weights.WeightsEntry`, in registration
order (:data:`BUILTIN_ENTRIES`); :mod:`models.weights` registers them when it is imported. Plain
data, so reading it imports no torch (torchvision's metadata is copied into
:mod:`models.torchvision_meta`).
"""

from __future__ import annotations

import re
from typing import Any

from models.ops import IMAGENET_MEAN, IMAGENET_STD
from models.torchvision_meta import TORCHVISION_MODELS

# --- the torchvision models ---------------------------------------------------------------

_TV_LICENSE = (
    "BSD-3-Clause (torchvision); trained on COCO, whose images carry their own Flickr licences"
)
_IMAGENET_NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
_RGB01 = "RGB float in [0, 1], (3, H, W); the model resizes and normalises internally"


def _torchvision(
    name: str, task: str, preprocessing: dict[str, Any], **builder_kwargs: Any
) -> dict[str, Any]:
    """One torchvision model, with URL and categories from its DEFAULT weights enum (copied into
    :mod:`models.torchvision_meta`, so that this import needs no torch).

    The checksum is the 8-digit sha256 prefix that torchvision puts in the file name, the same
    one ``torch.hub`` checks.
    """
    meta = TORCHVISION_MODELS[name]
    url = str(meta["url"])
    file_name = url.rsplit("/", 1)[-1]
    match = re.search(r"-([0-9a-f]+)\.", file_name)
    return {
        "name": name,
        "task": task,
        "url": url,
        "sha256": match.group(1) if match else "",
        "file_name": file_name,
        "builder": str(meta["builder"]),
        "categories": tuple(meta["categories"]),  # type: ignore[arg-type]
        "preprocessing": {"input": _RGB01, **preprocessing},
        "license": _TV_LICENSE,
        "notes": f"torchvision {meta['weights']}; recipe {meta['recipe']}",
        "builder_kwargs": builder_kwargs,
    }


_RCNN = {"resize": "shorter side to min_size, longer side capped at max_size", **_IMAGENET_NORM}
_SEG = {"resize": "shorter side to 520 (as trained)", "resize_size": 520, **_IMAGENET_NORM}

_TORCHVISION = (
    _torchvision("fasterrcnn_mobilenet_v3_large_fpn", "detection",
                 {**_RCNN, "min_size": 800, "max_size": 1333}),
    _torchvision("fasterrcnn_mobilenet_v3_large_320_fpn", "detection",
                 {**_RCNN, "min_size": 320, "max_size": 640}),
    _torchvision("fasterrcnn_resnet50_fpn_v2", "detection",
                 {**_RCNN, "min_size": 800, "max_size": 1333}),
    _torchvision("retinanet_resnet50_fpn_v2", "detection",
                 {**_RCNN, "min_size": 800, "max_size": 1333}),
    _torchvision("ssdlite320_mobilenet_v3_large", "detection",
                 {"resize": "fixed (320, 320), aspect not kept", "fixed_size": (320, 320),
                  "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}),
    _torchvision("keypointrcnn_resnet50_fpn", "keypoints",
                 {**_RCNN, "min_size": 800, "max_size": 1333}),
    _torchvision("maskrcnn_resnet50_fpn_v2", "segmentation",
                 {**_RCNN, "min_size": 800, "max_size": 1333}),
    _torchvision("deeplabv3_mobilenet_v3_large", "segmentation", _SEG, aux_loss=True),
    _torchvision("lraspp_mobilenet_v3_large", "segmentation", _SEG),
    _torchvision("fcn_resnet50", "segmentation", _SEG, aux_loss=True),
)  # fmt: skip


# --- OpenPifPaf (optional 'pose' extra) ---------------------------------------------------

_OPENPIFPAF_URL = "http://github.com/openpifpaf/torchhub/releases/download/v0.13/"
_OPENPIFPAF_PRE = {
    "input": "RGB float in [0, 1], (3, H, W), ImageNet-normalised",
    "resize": "longer side to long_edge, padded to 16k+1",
    "long_edge": 641,
    **_IMAGENET_NORM,
}


def _openpifpaf(checkpoint: str, file_name: str) -> dict[str, Any]:
    """One OpenPifPaf COCO-17 checkpoint (openpifpaf's ``plugins/coco`` URLs).

    The files pickle the whole network (``{"model": Shell, "epoch": n}``), so
    :func:`models.pose.PoseEstimator` loads them, not :func:`models.weights.resolve`. Like
    torch.hub (which openpifpaf uses with ``check_hash`` for these http URLs), the checksum is
    the 8-digit sha256 prefix at the end of the file name.
    """
    return {
        "name": f"openpifpaf_{checkpoint}",
        "task": "keypoints",
        "url": _OPENPIFPAF_URL + file_name,
        "sha256": re.search(r"-([0-9a-f]{8})\.pkl$", file_name).group(1),  # type: ignore[union-attr]
        "file_name": file_name,
        "builder": "models.pose:build_openpifpaf_net",
        "categories": ("__background__", "person"),
        "preprocessing": _OPENPIFPAF_PRE,
        "license": "AGPL-3.0 (openpifpaf); trained on COCO keypoints",
        "notes": "OpenPifPaf CIF/CAF, COCO-17; needs the 'pose' extra (openpifpaf-vita)",
        "builder_kwargs": {"checkpoint": checkpoint},
    }


_OPENPIFPAF = (
    _openpifpaf(
        "shufflenetv2k16",
        "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl",
    ),
    _openpifpaf(
        "shufflenetv2k30",
        "shufflenetv2k30-210821-003923-cocokp-slurm726072-edge513-o10s-5fe1c400.pkl",
    ),
    _openpifpaf("resnet50", "resnet50-210830-150728-cocokp-slurm728641-edge513-o10s-ecd30da4.pkl"),
)

#: Keyword arguments of every built-in :class:`models.weights.WeightsEntry`, in registration
#: order: the torchvision models, then the OpenPifPaf checkpoints.
BUILTIN_ENTRIES: tuple[dict[str, Any], ...] = _TORCHVISION + _OPENPIFPAF
