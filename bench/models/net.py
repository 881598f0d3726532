"""The network of Zhang et al., NeurIPS 2018:

    clip (B, 3, T, 112, 112)
      -> Res3D blocks 1-4                     (B, 256, T/2, 28, 28)
      -> recurrent layer 1 (cell)             (B, 256, T/2, 28, 28)
      -> recurrent layer 2 (cell, or (a) after b/c/d)
      -> MobileNet top per step               (B, 1024, T/2, 4, 4)
      -> average pool over (T/2, 4, 4)        (B, 1024)
      -> fully connected                      (B, classes)

One typed config describes it; ``NetConfig.preset("paper" | "small", ...)`` keeps the
paper-exact network and the CPU smoke configuration one call apart. ``recurrent_impl`` chooses
how the recurrent layers run (C++ kernels, a fused layer on ATen ops, or the per-step loop;
``bench.models.native``): the same function and weights, results equal to float rounding.

An order-blind control (``bench.models.controls``, a cell class with ``order_blind = True``)
runs Res3D on each frame alone instead (time folded into the batch: (B*T, C, 1, H, W)), so
no layer sees two frames together: its recurrent layers and top then have T steps, not T/2,
and the pooled features are a mean over frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from bench.models._registry import get_cell_class, second_layer_cell
from bench.models.mobilenet import PAPER_BLOCKS, MobileNetTop
from bench.models.native._impls import check_recurrent_impl
from bench.models.recurrent import ConvRecurrentLayer
from bench.models.res3d import Res3D

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
INITS = ("torch", "he_normal")


@dataclass(frozen=True)
class NetConfig:
    cell: str = "a"
    num_classes: int = 249
    in_channels: int = 3
    res3d_channels: tuple[int, int, int, int] = (64, 64, 128, 256)
    recurrent_channels: int = 256
    kernel_size: int = 3
    mobilenet_blocks: tuple[tuple[int, int], ...] = PAPER_BLOCKS
    frames: int = 16            # the preset's default clip length (any even length runs)
    image_size: int = 112       # the preset's default clip size
    #: how the recurrent layers run: one of bench.models.native.RECURRENT_IMPLS ("auto": the C++
    #: kernels on CPU where they build, ATen ops elsewhere)
    recurrent_impl: str = "auto"
    #: the gate nonlinearity of i, f, o (and the variants' fully connected gates): "sigmoid", as
    #: the paper's equations; "hard_sigmoid", Keras's clip(0.2 x + 0.5, 0, 1), the released
    #: code's (its layers' default ``recurrent_activation``). Runs the recurrence step by step.
    gate_activation: str = "sigmoid"
    #: weight initialisation: "torch" (the layers' defaults) or "he_normal", the released code's
    #: (truncated normal, std sqrt(2 / fan_in), on every conv and dense kernel; zero biases;
    #: ConvLSTM's forget-gate bias 1)
    init: str = "torch"

    def __post_init__(self) -> None:
        get_cell_class(self.cell)  # raises with the known names
        check_recurrent_impl(self.recurrent_impl)
        if self.gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}, got {self.gate_activation!r}")
        if self.gate_activation != "sigmoid" and self.recurrent_impl not in ("auto", "steploop"):
            raise ValueError(f"gate_activation={self.gate_activation!r} runs step by step (the fused recurrent "
                             f"kernels compute sigmoid): recurrent_impl must be auto or steploop, "
                             f"got {self.recurrent_impl!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.frames < 2 or self.frames % 2:
            raise ValueError(f"frames must be an even number >= 2, got {self.frames}")
        if len(self.res3d_channels) != 4:
            raise ValueError(f"res3d_channels needs 4 values (blocks 1-4), got {self.res3d_channels}")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> NetConfig:
        """``paper`` (the default sizes) or ``small`` (a CPU smoke configuration), with overrides."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown NetConfig field(s) {sorted(unknown)} (known: {sorted(known)})")
        return replace(base, **overrides)


PRESETS: dict[str, NetConfig] = {
    "paper": NetConfig(),
    # A quarter of the channels, a short MobileNet top, 8 frames at 56 x 56: one CPU training
    # step of a small batch takes well under a second.
    "small": NetConfig(res3d_channels=(16, 16, 32, 32), recurrent_channels=32,
                       mobilenet_blocks=((64, 1), (64, 2), (128, 1), (128, 2), (256, 2)),
                       frames=8, image_size=56),
}


class GestureNet(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.res3d = Res3D(in_channels=cfg.in_channels, channels=cfg.res3d_channels)
        c = cfg.recurrent_channels
        impl = cfg.recurrent_impl if cfg.gate_activation == "sigmoid" else "steploop"
        self.rnn1 = ConvRecurrentLayer(cfg.cell, in_channels=self.res3d.out_channels, out_channels=c,
                                       kernel_size=cfg.kernel_size, recurrent_impl=impl)
        self.rnn2 = ConvRecurrentLayer(second_layer_cell(cfg.cell), in_channels=c, out_channels=c,
                                       kernel_size=cfg.kernel_size, recurrent_impl=impl)
        if cfg.gate_activation == "hard_sigmoid":
            for layer in (self.rnn1, self.rnn2):
                layer.cell.gate_fn = keras_hard_sigmoid
        self.top = MobileNetTop(in_channels=c, blocks=cfg.mobilenet_blocks)
        self.classifier = nn.Linear(self.top.out_channels, cfg.num_classes)
        if cfg.init == "he_normal":
            he_normal_(self)
        #: Res3D frame by frame (an order-blind control): a 3-D kernel over one frame between
        #: zero padding sees that frame only, whatever the clip's order
        self.frame_wise = bool(getattr(get_cell_class(cfg.cell), "order_blind", False))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> pooled features (B, C_top)."""
        if x.ndim != 5 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected a clip (B, {self.cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        t = x.shape[2]
        if t < 2 or t % 2:
            raise ValueError(f"the clip length T must be even (Res3D halves it), got T={t}")
        if self.frame_wise:
            b = x.shape[0]
            y = self.res3d(x.transpose(1, 2).flatten(0, 1).unsqueeze(2))     # (B*T, C_res, 1, H/4, W/4)
            y = y.squeeze(2).unflatten(0, (b, t)).transpose(1, 2)             # (B, C_res, T, H/4, W/4)
        else:
            y = self.res3d(x)                   # (B, C_res, T/2, H/4, W/4)
        y = self.rnn2(self.rnn1(y))             # (B, C_rnn, T/2, H/4, W/4)
        y = self.top(y)                         # (B, C_top, T/2, h, w)
        return y.mean(dim=(2, 3, 4))            # average pool over (T/2, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def keras_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras's ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1). Not torch's ``F.hardsigmoid``, whose
    slope is 1/6 (clip(x / 6 + 0.5, 0, 1))."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


@torch.no_grad()
def he_normal_(net: nn.Module) -> None:
    """The released code's initialisation (Keras 2.0 ``he_normal``: a normal truncated at two
    standard deviations, std sqrt(2 / fan_in), without the later Keras's 0.88 correction) on
    every convolution and linear kernel; biases zero; ConvLSTM's forget-gate bias 1 (Keras's
    ``unit_forget_bias``, the released ConvLSTM2D's default). BatchNorm keeps (1, 0)."""
    from bench.models.convlstm import ConvLSTMCell

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in)
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                m.bias.zero_()
    for m in net.modules():
        if isinstance(m, ConvLSTMCell):
            c = m.out_channels
            m.conv_x.bias[c:2 * c].fill_(1.0)


def build_network(cfg: NetConfig) -> GestureNet:
    return GestureNet(cfg)


def paper_network(*, cell: str = "a", num_classes: int = 249, in_channels: int = 3,
                  recurrent_impl: str = "auto") -> GestureNet:
    """Res3D + two recurrent layers + MobileNet at the paper's sizes."""
    return build_network(NetConfig.preset("paper", cell=cell, num_classes=num_classes, in_channels=in_channels,
                                          recurrent_impl=recurrent_impl))


def small_network(*, cell: str = "a", num_classes: int = 10, in_channels: int = 3,
                  recurrent_impl: str = "auto") -> GestureNet:
    """The same architecture at CPU smoke-test sizes."""
    return build_network(NetConfig.preset("small", cell=cell, num_classes=num_classes, in_channels=in_channels,
                                          recurrent_impl=recurrent_impl))
