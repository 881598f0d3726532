"""Building blocks shared by the recurrent cells and the MobileNet top."""

from __future__ import annotations

import torch
from torch import nn


class SeparableConv2d(nn.Module):
    """Depthwise K x K convolution followed by a pointwise 1 x 1 (Chollet 2017; MobileNet).

    Parameters (no bias): K*K*C_in + C_in*C_out, the form the paper's formulas count.
    The depthwise stage has no bias; the pointwise stage carries the layer's bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride,
                                   padding=kernel_size // 2, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C)."""
    return x.mean(dim=(2, 3))
