"""SimNet's network: the project's own small perception network, trained on the synthetic world.

One fully convolutional network gives, per frame, everything the offline demo needs:

- boxes for ``person, ball, box, car`` (CenterNet-style: a centre heatmap per class at stride 4,
  sub-cell centre offset, log box size);
- COCO-17 keypoints for each person (joint displacements regressed from the person's centre,
  snapped to the nearest peak of a per-joint heatmap with its own sub-cell offset);
- a person segmentation mask (logits at stride 2).

Backbone: a small ResNet-ish encoder (strides 2..32, 16..128 channels) with an FPN-style
top-down decoder to stride 4 (32 channels) and one more step to stride 2 for the mask. About
1.0 M parameters (3.9 MB as float32); roughly 1 GFLOP for a 320x192 input.

This module holds the network (:class:`SimNet`, the registry builder :func:`simnet`) and the
constants its outputs are read with. :mod:`models.simnet.infer` runs it on frames;
:mod:`models.simnet.train` (scripts and tests only) holds the training targets and loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.coco17 import COCO17_KEYPOINTS

#: Class names indexed by ``Detections.class_id`` (no background entry).
CLASS_NAMES: tuple[str, ...] = ("person", "ball", "box", "car")
PERSON = 0
NUM_KEYPOINTS = len(COCO17_KEYPOINTS)
#: Output stride of the heatmaps, pixels of the letterboxed input.
STRIDE = 4
#: Stride of the mask logits.
MASK_STRIDE = 2
#: Longer side, pixels, the frame is scaled to by default.
DEFAULT_INPUT_SIZE = 320
#: Letterboxed inputs are padded to a multiple of this (the encoder's deepest stride).
PAD_MULTIPLE = 32

#: Input normalisation, on [0, 1] pixel values.
MEAN, STD = 0.45, 0.25


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    """Two 3x3 convs with an identity shortcut (``c`` channels in and out)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _cbr(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class SimNet(nn.Module):
    """Encoder-decoder with CenterNet-style heads (see the module docstring).

    ``forward(x)``: ``x (B, 3, H, W) float`` RGB in [0, 1], ``H``, ``W`` multiples of 32. Returns
    a dict of logits / regressions at stride 4 (``h = H / 4``, ``w = W / 4``) unless noted:

    - ``heat (B, 4, h, w)``: class centre heatmap logits;
    - ``offset (B, 2, h, w)``: centre minus its cell, cells;
    - ``size (B, 2, h, w)``: log of box width, height in cells;
    - ``kp_reg (B, 34, h, w)``: joint (x, y) minus the centre cell, cells, joint-major;
    - ``kp_heat (B, 17, h, w)``: joint heatmap logits;
    - ``kp_off (B, 34, h, w)``: joint minus its cell, cells, per joint (joint-major);
    - ``mask (B, 1, H / 2, W / 2)``: person mask logits.
    """

    def __init__(
        self,
        *,
        num_classes: int = len(CLASS_NAMES),
        num_keypoints: int = NUM_KEYPOINTS,
        widths: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128),
        neck: int = 32,
        weights: Any = None,
        weights_backbone: Any = None,
    ) -> None:
        super().__init__()
        if weights is not None or weights_backbone is not None:
            raise ValueError("SimNet has no pretrained builder weights; load a state_dict")
        c2, c4, c8, c16, c32 = widths
        self.num_classes, self.num_keypoints = num_classes, num_keypoints
        self.s2 = _cbr(3, c2, 2)
        self.s4 = nn.Sequential(_cbr(c2, c4, 2), _cbr(c4, c4))
        self.s8 = nn.Sequential(_cbr(c4, c8, 2), _Residual(c8))
        self.s16 = nn.Sequential(_cbr(c8, c16, 2), _Residual(c16), _Residual(c16))
        self.s32 = nn.Sequential(_cbr(c16, c32, 2), _Residual(c32))
        self.lat = nn.ModuleList([nn.Conv2d(c, neck, 1) for c in (c4, c8, c16, c32)])
        self.smooth = nn.ModuleList([_cbr(neck, neck) for _ in range(3)])
        self.head = _cbr(neck, 64)
        self.head_out = nn.Conv2d(64, num_classes + 4 + 5 * num_keypoints, 1)
        self.mask_lat = nn.Conv2d(c2, 16, 1)
        self.mask_up = nn.Conv2d(neck, 16, 1)
        self.mask_branch = _cbr(16, 16)
        self.mask_out = nn.Conv2d(16, 1, 1)
        prior = -math.log((1 - 0.1) / 0.1)  # heatmaps start near p = 0.1 (focal-loss init)
        kp_heat0 = num_classes + 4 + 2 * num_keypoints
        with torch.no_grad():
            self.head_out.bias[:num_classes].fill_(prior)
            self.head_out.bias[kp_heat0 : kp_heat0 + num_keypoints].fill_(prior)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - MEAN) / STD
        f2 = self.s2(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat[3](f32)
        for i, f in ((2, f16), (1, f8), (0, f4)):
            p = F.interpolate(p, size=f.shape[-2:], mode="nearest") + self.lat[i](f)
            p = self.smooth[i](p)
        d = self.head_out(self.head(p))
        m = F.interpolate(self.mask_up(p), size=f2.shape[-2:], mode="bilinear")
        m = self.mask_out(self.mask_branch(F.relu(m + self.mask_lat(f2))))
        C, J = self.num_classes, self.num_keypoints
        k0 = C + 4 + 2 * J
        return {
            "heat": d[:, :C],
            "offset": d[:, C : C + 2],
            "size": d[:, C + 2 : C + 4],
            "kp_reg": d[:, C + 4 : k0],
            "kp_heat": d[:, k0 : k0 + J],
            "kp_off": d[:, k0 + J :],
            "mask": m,
        }


def simnet(
    *, weights: Any = None, weights_backbone: Any = None, num_classes: int = len(CLASS_NAMES)
) -> SimNet:
    """Registry builder: a random-init :class:`SimNet`."""
    return SimNet(num_classes=num_classes, weights=weights, weights_backbone=weights_backbone)
