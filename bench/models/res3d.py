"""Res3D blocks 1-4 (Tran et al., "ConvNet Architecture Search for Spatiotemporal Feature
Learning", 2017), as the front end of Zhang et al., NeurIPS 2018.

    block 1: conv (3,7,7) stride (1,2,2)                  (B, 3, T, 112, 112) -> (B, 64, T, 56, 56)
    block 2: 2 residual units, 64   (unit a: 1x1x1 conv shortcut)
    block 3: 2 residual units, 128, unit a stride (2,2,2)              -> (B, 128, T/2, 28, 28)
    block 4: 2 residual units, 256, unit a 1x1x1 shortcut              -> (B, 256, T/2, 28, 28)

Every convolution has no bias and is followed by BatchNorm; "same" padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad, bias=False),
                         nn.BatchNorm3d(cout))


class ResidualUnit3d(nn.Module):
    """conv 3x3x3 -> BN -> ReLU -> conv 3x3x3 -> BN, plus the shortcut, then ReLU.

    ``projection`` gives a 1x1x1 conv + BN shortcut (the first unit of blocks 2-4)."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, projection: bool = False) -> None:
        super().__init__()
        s = (stride,) * 3
        self.conv1 = _conv_bn(cin, cout, (3, 3, 3), s)
        self.conv2 = _conv_bn(cout, cout, (3, 3, 3), (1, 1, 1))
        if projection or stride != 1 or cin != cout:
            self.shortcut: nn.Module = _conv_bn(cin, cout, (1, 1, 1), s)
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu(self.conv1(x)))
        return self.relu(y + self.shortcut(x))


class Res3D(nn.Module):
    """Blocks 1-4: (B, C_in, T, H, W) -> (B, channels[3], T/2, H/4, W/4)."""

    def __init__(self, *, in_channels: int = 3, channels: Sequence[int] = (64, 64, 128, 256)) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, c1, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(c1), nn.ReLU(inplace=True))
        self.block2 = nn.Sequential(ResidualUnit3d(c1, c2, projection=True), ResidualUnit3d(c2, c2))
        self.block3 = nn.Sequential(ResidualUnit3d(c2, c3, stride=2, projection=True), ResidualUnit3d(c3, c3))
        self.block4 = nn.Sequential(ResidualUnit3d(c3, c4, projection=True), ResidualUnit3d(c4, c4))
        self.out_channels = c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block4(self.block3(self.block2(self.stem(x))))
