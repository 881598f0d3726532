"""The ConvLSTM variants (a)-(d) of Zhang et al., "Attention in Convolutional LSTM for Gesture
Recognition", NeurIPS 2018, Eqs. (8)-(24).

(a) gates from globally average-pooled input and hidden state, fully connected, one value per
    channel broadcast over H x W; the candidate G_t from depthwise-separable convolutions:

        i, f, o = sigma(W_x GAP(X_t) + W_h GAP(H_{t-1}) + b)
        G_t     = tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)          (* depthwise-separable)

    Params (no bias) = (K*K + 4*C_out) * (C_in + C_out).
(b) (a) applied to X~_t = A_t o X_t, A_t = softmax over H x W of
        Z_t = W_z * tanh(W_xa * X_t + W_ha * H_{t-1} + b_a)       (Z_t has one channel)
    Params = Param(a) + K*K*(C_in + 2*C_out) + (C_in + C_out)*C_out.
(c) (a) whose input gate is a channel-wise attention map
        Z_t = W_i * tanh(W_xi * X_t + W_hi * H_{t-1} + b_i),  i_t(c) = exp(Z_t(c)) / max_hw exp(Z_t(c))
    Params = Param(a) + K*K*(C_in + 2*C_out) + C_out^2.
(d) as (c) with the output gate replaced instead.

Each pair (W_x*, W_h*) is held as two modules, exactly as the equations write them; only the
input weights carry the bias, so the parameter counts are the paper's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bench.models._registry import register_cell
from bench.models.convlstm import Gates, RecurrentCell
from bench.models.layers import SeparableConv2d, global_avg_pool


class InputProjection(NamedTuple):
    """The input-only terms of one step, computed for all T steps of a layer at once."""

    x: torch.Tensor                    # X_t itself (variant b re-weights it every step)
    g: torch.Tensor | None             # W_xc * X_t + b_c
    fc: torch.Tensor | None            # W_x GAP(X_t) + b, (N, n_gates * C_out)
    att: torch.Tensor | None           # W_xa * X_t + b_a (b) or W_xi * X_t + b_i (c, d)


class GatedConvLSTMCell(RecurrentCell):
    """Variant (a), and the base of (b), (c), (d).

        X_t ---+--> GAP --> W_x --+
               |                  +--> sigma --> i, f, o  (B, C, 1, 1), broadcast over H x W
        H_t-1 -|--> GAP --> W_h --+
               |
               +--> W_xc (dw KxK, pw 1x1) --+
        H_t-1 ----> W_hc (dw KxK, pw 1x1) --+--> tanh --> G_t  (B, C, H, W)

    ``attention_gate`` ("i" or "o") replaces that gate by a channel-wise attention map
    (variants c, d); ``spatial_attention`` re-weights X_t by a softmax map first (variant b).
    Input and hidden weights are separate modules, as in the equations, so the X-terms
    (``project_input``) are computed for the whole sequence in one batched call and a step
    adds only the H-terms.
    """

    spatial_attention: bool = False
    attention_gate: str | None = None

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        k = kernel_size
        self.fc_gate_names = tuple(g for g in "ifo" if g != self.attention_gate)
        n = len(self.fc_gate_names) * out_channels
        self.cand_x = SeparableConv2d(in_channels, out_channels, k)             # W_xc, b_c
        self.cand_h = SeparableConv2d(out_channels, out_channels, k, bias=False)  # W_hc
        self.gate_x = nn.Linear(in_channels, n)                                  # W_x, b
        self.gate_h = nn.Linear(out_channels, n, bias=False)                     # W_h
        with torch.no_grad():  # the released code starts the gate weights at the constant 1/C_out
            self.gate_x.weight.fill_(1.0 / out_channels)
            self.gate_h.weight.fill_(1.0 / out_channels)
            self.gate_x.bias.zero_()
        if self.spatial_attention or self.attention_gate:
            # (b): W_xa, W_ha, b_a; (c), (d): W_xi, W_hi, b_i -- all depthwise-separable
            self.att_x = SeparableConv2d(in_channels, out_channels, k)
            self.att_h = SeparableConv2d(out_channels, out_channels, k, bias=False)
        if self.spatial_attention:      # (b): W_z, a full K x K convolution to one map
            self.att_score: nn.Module = nn.Conv2d(out_channels, 1, k, padding=k // 2, bias=False)
        if self.attention_gate:         # (c), (d): W_i, depthwise-separable
            self.att_score = SeparableConv2d(out_channels, out_channels, k, bias=False)

    def project_input(self, x: torch.Tensor) -> InputProjection:
        att = self.att_x(x) if (self.spatial_attention or self.attention_gate) else None
        if self.spatial_attention:      # G and the gates see A_t o X_t: nothing more to hoist
            return InputProjection(x, None, None, att)
        # The gates' term first: autograd then runs cand_x's backward first, and the dense gradient
        # it hands X takes GAP's broadcast gradient in place (the other order adds out of place,
        # a fresh (T*B, C, H, W) tensor).
        fc = self.gate_x(global_avg_pool(x))
        return InputProjection(x, self.cand_x(x), fc, att)

    def step_gates(self, xp: InputProjection, h: torch.Tensor) -> Gates:
        attention = None
        if self.spatial_attention:
            z = self.att_score(torch.tanh(xp.att + self.att_h(h)))               # Z_t (B, 1, H, W)
            attention = F.softmax(z.flatten(2), dim=-1).view_as(z)                # A_t over H x W
            x = attention * xp.x                                                  # X~_t = A_t o X_t
            g = torch.tanh(self.cand_x(x) + self.cand_h(h))
            z = self.gate_fn(self.gate_x(global_avg_pool(x)) + self.gate_h(global_avg_pool(h)))
        else:
            g = torch.tanh(xp.g + self.cand_h(h))
            z = self.gate_fn(xp.fc + self.gate_h(global_avg_pool(h)))           # (B, n*C_out)
        gates = dict(zip(self.fc_gate_names, z[..., None, None].chunk(len(self.fc_gate_names), dim=1)))
        if self.attention_gate:
            # exp(Z(c)) / max_hw exp(Z(c)): in (0, 1], maximum 1 in every channel
            z = self.att_score(torch.tanh(xp.att + self.att_h(h)))               # (B, C, H, W)
            gates[self.attention_gate] = torch.exp(z - z.amax(dim=(2, 3), keepdim=True))
        return Gates(gates["i"], gates["f"], gates["o"], g, attention)


@register_cell("a")
class VariantA(GatedConvLSTMCell):
    """(a): fully connected gates on GAP'd input and hidden state; separable candidate.

    A recurrent layer of (a) can also run as one fused layer with a hand-written backward
    (``bench.models.native``, chosen by ``NetConfig.recurrent_impl``); this class is the step
    it computes.
    """


@register_cell("b", second_layer="a")
class VariantB(GatedConvLSTMCell):
    """(b): (a) on the input re-weighted by a spatial softmax attention map."""

    spatial_attention = True


@register_cell("c", second_layer="a")
class VariantC(GatedConvLSTMCell):
    """(c): (a) whose input gate is a channel-wise spatial attention map."""

    attention_gate = "i"


@register_cell("d", second_layer="a")
class VariantD(GatedConvLSTMCell):
    """(d): (a) whose output gate is a channel-wise spatial attention map."""

    attention_gate = "o"
