"""A recurrent layer: one cell unrolled over time, returning the whole sequence."""

from __future__ import annotations

import torch
from torch import nn

from bench.models._registry import create_cell
from bench.models.convlstm import cell_state_like
from bench.models.native import recurrence


class ConvRecurrentLayer(nn.Module):
    """(B, C_in, T, H, W) -> (B, C_out, T, H, W); the loop over time is the only loop.

    ``recurrent_impl`` (one of ``bench.models.native.RECURRENT_IMPLS``, default "auto") picks
    the strategy (``self.recurrence``) that adapts the cell when it is built and may run the
    whole recurrence at once; where it does not, the layer loops over the cell's steps.
    """

    def __init__(self, cell: str, *, in_channels: int, out_channels: int, kernel_size: int = 3,
                 recurrent_impl: str = "auto") -> None:
        super().__init__()
        self.recurrence = recurrence(recurrent_impl)
        self.cell = self.recurrence.adapt(create_cell(cell, in_channels=in_channels, out_channels=out_channels,
                                                      kernel_size=kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        steps = x.permute(2, 0, 1, 3, 4).reshape(t * b, c, h, w)       # (B, C, T, H, W) -> (T*B, C, H, W)
        self.cell.check_input(steps)
        # The cell's layout: on CPU the depthwise and 1x1 convolutions run faster in NHWC, and
        # ConvLSTM's dense K x K convolutions train faster in NCHW (docs/BENCHMARKS.md).
        fmt = torch.channels_last if self.cell.channels_last else torch.contiguous_format
        steps = steps.contiguous(memory_format=fmt)
        # The input-only terms of every step in one batched call; the loop does the rest.
        xp = self.cell.project_input(steps)
        whole = self.recurrence.run_layer(self.cell, xp, t, b)
        if whole is not None:                                          # (T, B, H, W, C_out)
            return whole.permute(1, 4, 0, 2, 3)
        # unbind, not xs[i]: one backward node for the sequence instead of a full-size zero
        # gradient per indexed step.
        per_step = [None if v is None else v.unflatten(0, (t, b)).unbind(0) for v in _fields(xp)]
        zeros = x.new_zeros(b, self.cell.out_channels, h, w).contiguous(memory_format=fmt)
        state = (zeros, cell_state_like(zeros))          # C in float32 under autocast
        out = []
        for i in range(t):
            h_t, state = self.cell.step(_refold(xp, [v[i] if v is not None else None for v in per_step]),
                                        state)
            out.append(h_t)
        if not self.cell.channels_last:
            return torch.stack(out, dim=2)                            # -> (B, C_out, T, H, W)
        # Stored (T, B, H, W, C) and returned as a (B, C_out, T, H, W) view: the next layer's
        # (T*B, C, H, W) channels_last input is then a view too, and the gradient it hands back
        # reaches every step in channels_last (an NCHW gradient would turn each step's backward
        # into mixed-layout element-wise ops, several times slower on CPU).
        return torch.stack([o.permute(0, 2, 3, 1) for o in out], dim=0).permute(1, 4, 0, 2, 3)


def _fields(xp: object) -> list[torch.Tensor | None]:
    return list(xp) if isinstance(xp, tuple) else [xp]


def _refold(xp: object, values: list[torch.Tensor | None]) -> object:
    return type(xp)(*values) if isinstance(xp, tuple) else values[0]

