"""The MobileNet top (Howard et al., 2017) of Zhang et al., NeurIPS 2018, applied to every
recurrent step independently.

Depthwise-separable blocks (depthwise 3x3 -> pointwise 1x1 -> BN -> ReLU6), at the paper's size
256 s1, 256 s2 (28 -> 14), 512 s1 x 5, 1024 s2 (-> 7), 1024 s2 (-> 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.models.layers import SeparableConv2d

PAPER_BLOCKS: tuple[tuple[int, int], ...] = ((256, 1), (256, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 2))


class MobileNetTop(nn.Module):
    """(B, C, T, H, W) -> (B, C_last, T, H', W'), each time step through the same 2D blocks."""

    def __init__(self, *, in_channels: int, blocks: Sequence[tuple[int, int]] = PAPER_BLOCKS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout, stride in blocks:
            layers += [SeparableConv2d(cin, cout, 3, stride=stride, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.blocks(x.transpose(1, 2).reshape(b * t, c, h, w))   # (B, C, T, H, W) -> (B*T, C, H, W)
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)          # -> (B, C', T, H', W')
