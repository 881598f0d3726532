"""Order-blind controls: networks that see the same frames as the cells but not their order.

Why: a cell's accuracy on its own does not say that it uses time. The synthetic data
(``bench/data/synth.py``) pairs every class with its time reversal, so a model that ignores
frame order can do no better than chance within a pair; a control trained beside the cells
(``cells: all`` in a sweep file) measures that floor on the same data, with the same trunk,
top, protocol and budget, and a cell above it is one that reads order.

``mean``: the bag of frames. Each frame goes through Res3D on its own (``order_blind``: the
network folds time into the batch, so Res3D's temporal kernels see one frame between zero
padding and no neighbour), both "recurrent" layers are a per-step separable convolution with
no state -- the candidate G_t of variant (a) with the recurrence cut out,

    H_t = tanh(W_xc * X_t + b_c)                       (* depthwise-separable)

-- and the MobileNet top runs per step, so the network's average pool over time makes the
pooled features a mean over frames of one function of a frame: invariant under any
permutation of the clip's frames, exactly (BatchNorm included, whose statistics are over all
frames of the batch). A running mean as the step's output would not be: the top is nonlinear
and sees every step, so each step's output would weigh the frames before it. Params (no
bias) = K*K*C_in + C_in*C_out, a small fraction of (a)'s.

A control is registered with ``control=True``: ``list_cells()`` keeps returning the paper's
five cells, ``list_controls()`` / ``list_cells(include_controls=True)`` name the controls.
"""

from __future__ import annotations

import torch

from bench.models._registry import register_cell
from bench.models.convlstm import RecurrentCell, State
from bench.models.layers import SeparableConv2d


@register_cell("mean", control=True)
class MeanControl(RecurrentCell):
    """Bag of frames: a per-step separable convolution, no state (see the module docstring).

    The cell signature is kept (``forward(x, state) -> (h, (h, c))``) so the layer, the network
    and the trainer take it unchanged; ``state`` is accepted and ignored, and the returned
    state is ``(h, h)``: nothing carries from one step to the next.
    """

    #: the network runs Res3D on each frame alone (``GestureNet``), so that no part of the
    #: network sees two frames together
    order_blind: bool = True

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        self.proj = SeparableConv2d(in_channels, out_channels, kernel_size)      # W_xc, b_c

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(x))                  # H_t for every step at once

    def step(self, xp: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return xp, (xp, xp)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self.check_input(x)
        return self.step(self.project_input(x), state)   # no init_state: there is no state
