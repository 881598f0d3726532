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

A sum of two convolutions of X and H is one convolution of [X, H]: depthwise kernels act per
channel and the pointwise 1 x 1 of the concatenation adds the two pointwise results, so each
pair (W_x*, W_h*) is computed as one SeparableConv2d over the concatenation, with the same
parameters, and the GAP'd gates as one Linear over [GAP(X), GAP(H)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models._registry import register_cell
from bench.models.convlstm import Gates, RecurrentCell
from bench.models.layers import SeparableConv2d, global_avg_pool


class GatedConvLSTMCell(RecurrentCell):
    """Variant (a), and the base of (b), (c), (d).

        X_t ----+--> GAP --+
                |          +--> FC --sigma--> i, f, o  (B, C, 1, 1), broadcast over H x W
        H_t-1 --+--> GAP --+
                |
                +--> [X, H] --dw KxK--> pw 1x1 --tanh--> G_t  (B, C, H, W)

    ``attention_gate`` ("i" or "o") replaces that gate by a channel-wise attention map
    (variants c, d); ``spatial_attention`` re-weights X_t by a softmax map first (variant b).
    """

    spatial_attention: bool = False
    attention_gate: str | None = None

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        both = in_channels + out_channels
        self.fc_gate_names = tuple(g for g in "ifo" if g != self.attention_gate)
        self.candidate = SeparableConv2d(both, out_channels, kernel_size)
        self.gate_fc = nn.Linear(both, len(self.fc_gate_names) * out_channels)
        with torch.no_grad():  # the released code starts the gate weights at the constant 1/C_out
            self.gate_fc.weight.fill_(1.0 / out_channels)
            self.gate_fc.bias.zero_()
        if self.spatial_attention:      # (b): W_xa, W_ha depthwise-separable; W_z full K x K to 1 map
            self.att_hidden = SeparableConv2d(both, out_channels, kernel_size)
            self.att_score = nn.Conv2d(out_channels, 1, kernel_size, padding=kernel_size // 2, bias=False)
        if self.attention_gate:         # (c), (d): W_xi, W_hi and W_i all depthwise-separable
            self.att_hidden = SeparableConv2d(both, out_channels, kernel_size)
            self.att_score = SeparableConv2d(out_channels, out_channels, kernel_size, bias=False)

    def attention_map(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(b): A_t, (B, 1, H, W), a softmax over all H x W positions."""
        z = self.att_score(torch.tanh(self.att_hidden(torch.cat([x, h], dim=1))))  # (B, 1, H, W)
        return F.softmax(z.flatten(2), dim=-1).view_as(z)

    def channel_attention(self, xh: torch.Tensor) -> torch.Tensor:
        """(c), (d): exp(Z(c)) / max_hw exp(Z(c)), in (0, 1] with maximum 1 in every channel."""
        z = self.att_score(torch.tanh(self.att_hidden(xh)))                         # (B, C, H, W)
        return torch.exp(z - z.amax(dim=(2, 3), keepdim=True))

    def gates(self, x: torch.Tensor, h: torch.Tensor) -> Gates:
        attention = None
        if self.spatial_attention:
            attention = self.attention_map(x, h)
            x = attention * x                                                        # X~_t = A_t o X_t
        xh = torch.cat([x, h], dim=1)                                                # (B, C_in+C_out, H, W)
        g = torch.tanh(self.candidate(xh))
        z = torch.sigmoid(self.gate_fc(global_avg_pool(xh)))                         # (B, n*C_out)
        fc = dict(zip(self.fc_gate_names, z[..., None, None].chunk(len(self.fc_gate_names), dim=1)))
        if self.attention_gate:
            fc[self.attention_gate] = self.channel_attention(xh)
        return Gates(fc["i"], fc["f"], fc["o"], g, attention)


@register_cell("a")
class VariantA(GatedConvLSTMCell):
    """(a): fully connected gates on GAP'd input and hidden state; separable candidate."""


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
