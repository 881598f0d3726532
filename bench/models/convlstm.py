"""ConvLSTM (Shi et al., NeurIPS 2015), Eqs. (1)-(6) of Zhang et al., NeurIPS 2018.

    i_t = sigma(W_xi * X_t + W_hi * H_{t-1} + b_i)
    f_t = sigma(W_xf * X_t + W_hf * H_{t-1} + b_f)
    o_t = sigma(W_xo * X_t + W_ho * H_{t-1} + b_o)
    G_t = tanh (W_xc * X_t + W_hc * H_{t-1} + b_c)
    C_t = f_t o C_{t-1} + i_t o G_t
    H_t = o_t o tanh(C_t)

Parameters without biases: K*K*(C_in + C_out)*C_out*4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from bench.models._registry import register_cell


class Gates(NamedTuple):
    """The gates of one step, each broadcastable to (B, C_out, H, W)."""

    i: torch.Tensor
    f: torch.Tensor
    o: torch.Tensor
    g: torch.Tensor
    attention: torch.Tensor | None = None  # variant (b): (B, 1, H, W), sums to 1 over H x W


State = tuple[torch.Tensor, torch.Tensor]

_HALF = (torch.float16, torch.bfloat16)


def cell_state_like(h0: torch.Tensor) -> torch.Tensor:
    """The initial cell state C_0 for an initial H_0: zeros in float32 when H_0 is half
    precision (see `RecurrentCell.step`), else ``h0`` itself."""
    return h0.float() if h0.dtype in _HALF else h0


class RecurrentCell(nn.Module):
    """One step of a convolutional LSTM; subclasses compute the gates.

    Every registered cell shares this constructor and ``forward(x, state) -> (h, (h, c))``.

    A step splits in two: ``project_input(x)`` computes whatever depends on the input alone,
    and ``step(xp, (h, c))`` the rest. A recurrent layer knows every input of the sequence up
    front, so it projects all T inputs in one batched call and loops over ``step`` only (as
    cuDNN's LSTM hoists its input GEMM); ``forward`` chains the two for a single step.
    """

    cell_name: str = ""
    #: the nonlinearity of the i, f, o gates (``NetConfig.gate_activation`` replaces it per cell)
    gate_fn = staticmethod(torch.sigmoid)
    #: run the recurrent layer in channels_last (NHWC) rather than NCHW (see ConvRecurrentLayer)
    channels_last: bool = True

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size

    def project_input(self, x: torch.Tensor) -> object:
        """The input-only part of a step, for any batch of inputs (B*T, C_in, H, W)."""
        return x

    def step_gates(self, xp: object, h: torch.Tensor) -> Gates:
        raise NotImplementedError

    def gates(self, x: torch.Tensor, h: torch.Tensor) -> Gates:
        """The gates of one step from the raw input (for inspection and tests)."""
        return self.step_gates(self.project_input(x), h)

    def init_state(self, x: torch.Tensor) -> State:
        b, _, height, width = x.shape
        z = x.new_zeros(b, self.out_channels, height, width)
        return z, cell_state_like(z)

    def step(self, xp: object, state: State) -> tuple[torch.Tensor, State]:
        """One step. The cell state C stays in float32 when the gates are float16/bfloat16
        (autocast): the sums ``f o C + i o G`` over T steps are where half precision loses most
        (a bfloat16 C keeps 8 bits of mantissa); H, which feeds convolutions, keeps the gates'
        dtype."""
        h, c = state
        gt = self.step_gates(xp, h)
        c = torch.addcmul(gt.f * c, gt.i, gt.g)          # f o C_{t-1} + i o G_t (float32 if C is)
        h = (gt.o * torch.tanh(c)).to(gt.o.dtype)
        return h, (h, c)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects input (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self.check_input(x)
        return self.step(self.project_input(x), self.init_state(x) if state is None else state)


@register_cell("convlstm")
class ConvLSTMCell(RecurrentCell):
    """Eqs. (1)-(6) with W_x* and W_h* as two K x K convolutions, each producing all four gates:

        X_t   --conv_x KxK (+ b)--+
                                  +--> (i, f, o, G) --sigma/tanh--> C_t, H_t
        H_t-1 --conv_h KxK -------+

    The same function and parameter count as the common form (one convolution over
    [X_t, H_{t-1}]), but the X-half depends on the input alone, so a recurrent layer computes
    it for all T steps in one batched convolution (``project_input``) and a step convolves
    H only -- as cuDNN's LSTM hoists its input GEMM. ``bench perf cells`` times it against the
    common single-convolution form.
    """

    # oneDNN's dense 3x3 convolution backward is slower in NHWC than in NCHW on CPU (256 -> 1024
    # channels, 28 x 28, batch 1 and 8; docs/BENCHMARKS.md), and nothing else in this cell gains
    # from NHWC.
    channels_last = False

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        pad = kernel_size // 2
        self.conv_x = nn.Conv2d(in_channels, 4 * out_channels, kernel_size, padding=pad)              # W_x*, b
        self.conv_h = nn.Conv2d(out_channels, 4 * out_channels, kernel_size, padding=pad, bias=False)  # W_h*
        with torch.no_grad():
            # Initialised as the single convolution over [X, H] would be (its fan-in is
            # (C_in + C_out) * K * K, so its bound is smaller than either half's own default).
            fused = nn.Conv2d(in_channels + out_channels, 4 * out_channels, kernel_size)
            self.conv_x.weight.copy_(fused.weight[:, :in_channels])
            self.conv_h.weight.copy_(fused.weight[:, in_channels:])
            # forget-gate bias 1 (Keras' unit_forget_bias, the released code's default)
            self.conv_x.bias.zero_()
            self.conv_x.bias[out_channels:2 * out_channels].fill_(1.0)

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_x(x)                                # W_x* X_t + b, (N, 4*C_out, H, W)

    def step_gates(self, xp: torch.Tensor, h: torch.Tensor) -> Gates:
        i, f, o, g = (xp + self.conv_h(h)).chunk(4, dim=1)
        return Gates(self.gate_fn(i), self.gate_fn(f), self.gate_fn(o), torch.tanh(g))
