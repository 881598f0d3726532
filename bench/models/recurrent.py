"""A recurrent layer: one cell unrolled over time, returning the whole sequence."""

from __future__ import annotations

import torch
from torch import nn

from bench.models._registry import create_cell


class ConvRecurrentLayer(nn.Module):
    """(B, C_in, T, H, W) -> (B, C_out, T, H, W); the loop over time is the only loop."""

    def __init__(self, cell: str, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = create_cell(cell, in_channels=in_channels, out_channels=out_channels,
                                kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.permute(2, 0, 1, 3, 4).contiguous()                 # (B, C, T, H, W) -> (T, B, C, H, W)
        state = None
        out = []
        for x_t in steps:
            h, state = self.cell(x_t, state)
            out.append(h)
        return torch.stack(out, dim=2)                                # -> (B, C_out, T, H, W)
