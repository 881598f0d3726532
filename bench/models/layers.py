"""Building blocks shared by the recurrent cells and the MobileNet top."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        y = self.depthwise(x)
        if y.stride(1) == 1 and y.shape[1] > 1:
            # channels_last: the 1 x 1 convolution is a GEMM over the (N*H*W, C) view, as a
            # linear layer, with no copies; on CPU (MKL sgemm) forward+backward runs faster than
            # oneDNN's 1 x 1 convolution at the recurrent layers' shapes (B = 1-8, 256 channels,
            # 28 x 28; docs/BENCHMARKS.md). Same parameters, same result, in any layout.
            return F.linear(y.permute(0, 2, 3, 1), self.pointwise.weight.flatten(1),
                            self.pointwise.bias).permute(0, 3, 1, 2)
        return self.pointwise(y)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C).

    A sum scaled afterwards, not ``mean``: the backward of ``sum`` is a broadcast view of the
    (B, C) gradient, where ``mean``'s materialises a full (B, C, H, W) tensor in the default
    layout (which also turned every later gradient of a channels_last layer to NCHW).
    """
    return x.sum(dim=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))
