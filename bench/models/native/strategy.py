"""What a recurrent layer runs, chosen in one place.

``recurrence(recurrent_impl)`` turns a value of `RECURRENT_IMPLS` into the `Recurrence` a
``ConvRecurrentLayer`` is built with. The layer asks it two things:

- ``adapt(cell)``, once, after building the cell: where the C++ kernels may run (``"native"``,
  ``"auto"``), the cell's depthwise convolutions become `DepthwiseConv2d` (the same module
  with the same weight and state-dict keys, whose forward takes the C++ kernel where it
  applies); ``"native"`` fails here, with the reason, when the kernels cannot be built;
- ``run_layer(cell, xp, steps, batch)``, at every forward: the whole recurrence at once,
  (T, B, H, W, C), where a fused layer exists for the cell (variant (a): `VariantALayerFunction`)
  and applies, or None for the layer's step loop.

``implementation(net)`` names what a network, a layer or a ``NetConfig`` runs, "auto" resolved.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.models.native import loader
from bench.models.native._impls import RESOLVED_IMPLS, check_recurrent_impl
from bench.models.native.functions import (
    DepthwiseConvFunction,
    VariantALayerFunction,
    variant_a_inference,
)
from bench.models.variants import InputProjection, VariantA

_KERNEL_DTYPES = (torch.float32, torch.float64)


def visible_to_dispatch() -> bool:
    """Whether something needs to see the ATen ops: a TorchDispatchMode (``FlopCounterMode``,
    ``count_macs``) or ``torch.compile`` tracing. Neither can look into the C++ kernels (dynamo
    would break the graph at every call), so the layers take their ATen path instead."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode  # private: kept to this check

    return torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None


def _kernels_may_run(x: torch.Tensor) -> bool:
    """The conditions every C++ kernel needs of its input, beyond the ones of its module."""
    return (x.device.type == "cpu" and x.dtype in _KERNEL_DTYPES and not torch.is_autocast_enabled("cpu")
            and not visible_to_dispatch())


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (stride 1, zero padding K // 2, odd square K, no bias) whose
    forward goes through the C++ kernels (`DepthwiseConvFunction`) for a channels_last float32
    or float64 CPU input outside autocast, ``torch.compile`` and dispatch modes, and through
    ``nn.Conv2d`` anywhere else. ``kernels_required`` (``recurrent_impl="native"``): a missing
    kernel is an error rather than a fallback to ATen.

    `adapt` turns a module into one in place (``module.__class__``, as
    ``torch.nn.utils.parametrize`` does), so its parameters and state-dict keys stay as they are.
    """

    kernels_required: bool = False

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        """Whether the C++ depthwise kernel computes what ``conv`` does."""
        if type(conv) is not nn.Conv2d:
            return False
        k = conv.kernel_size
        return (conv.groups == conv.in_channels == conv.out_channels and conv.in_channels > 1
                and k[0] == k[1] and k[0] % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
                and conv.padding == (k[0] // 2, k[1] // 2) and conv.padding_mode == "zeros"
                and conv.bias is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.stride(1) == 1 and _kernels_may_run(x):
            kernels = loader.require() if self.kernels_required else loader.load()
            if kernels is not None:
                return DepthwiseConvFunction.apply(x, self.weight, kernels)
        return super().forward(x)


def _variant_a_layer(rec: Recurrence, cell: VariantA, xp: InputProjection, steps: int,
                     batch: int) -> torch.Tensor | None:
    """Variant (a)'s whole recurrence: in training through `VariantALayerFunction` (a hand-written
    backward; C++ steps where the kernels run, ATen ops elsewhere), in inference through the same
    forward with the C++ steps, keeping only the previous step (without the kernels, inference
    keeps the step loop). CPU outside autocast only: elsewhere the step loop."""
    g = xp.g
    if g.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return None
    kernels = rec.kernels() if _kernels_may_run(g) else None
    training = torch.is_grad_enabled()
    if not training and kernels is None:
        return None
    _, c, h, w = g.shape
    xg = g.permute(0, 2, 3, 1).reshape(steps, batch, h, w, c)   # a view: g is channels_last
    args = (xg.contiguous(), xp.fc.reshape(steps, batch, -1).contiguous(), cell.cand_h.depthwise.weight,
            cell.cand_h.pointwise.weight.flatten(1), cell.gate_h.weight, kernels)
    return VariantALayerFunction.apply(*args) if training else variant_a_inference(*args)


#: The cells with a fused layer, by exact class (a subclass may change the step), and the
#: function that runs it.
FUSED_LAYERS: dict[type[nn.Module], Callable[..., torch.Tensor | None]] = {VariantA: _variant_a_layer}


@dataclass(frozen=True)
class Recurrence:
    """How a recurrent layer runs, for one value of ``recurrent_impl`` (see ``_impls.py``)."""

    setting: str

    def __post_init__(self) -> None:
        check_recurrent_impl(self.setting, owner="ConvRecurrentLayer")

    def kernels(self) -> loader.NativeKernels | None:
        """The C++ kernels this setting runs on: required ("native"), where they build ("auto"),
        never ("aten", "steploop")."""
        if self.setting == "native":
            return loader.require()
        if self.setting == "auto":
            return loader.load()
        return None

    def adapt(self, cell: nn.Module) -> nn.Module:
        """``cell``, its depthwise convolutions turned into `DepthwiseConv2d` where the kernels
        may run; for "native", first the kernels themselves (a RuntimeError that says why they
        are not there)."""
        if self.setting == "native":
            loader.require()
        if self.setting in ("native", "auto"):
            for m in cell.modules():
                if DepthwiseConv2d.fits(m):
                    m.__class__ = DepthwiseConv2d
                    m.kernels_required = self.setting == "native"
        return cell

    def run_layer(self, cell: nn.Module, xp: object, steps: int, batch: int) -> torch.Tensor | None:
        """The whole recurrence of ``cell`` over the ``steps`` projected inputs ``xp``, as
        (T, B, H, W, C), or None: the layer then loops over ``cell.step``."""
        fused = FUSED_LAYERS.get(type(cell))
        if fused is None or self.setting == "steploop":
            return None
        return fused(self, cell, xp, steps, batch)

    def resolve(self, cell: nn.Module, *, device: torch.device | str, dtype: torch.dtype,
                autocast: bool = False, compiled: bool = False) -> str:
        """What a layer of ``cell`` runs in training on ``device`` with ``dtype`` parameters: one
        of `RESOLVED_IMPLS`."""
        if self.setting == "steploop":
            return "steploop"
        cpu = torch.device(device).type == "cpu" and not autocast
        fused = type(cell) in FUSED_LAYERS
        has_kernels = fused or any(isinstance(m, DepthwiseConv2d) for m in cell.modules())
        if (cpu and has_kernels and dtype in _KERNEL_DTYPES and not compiled
                and self.kernels() is not None):
            return "native"
        return "aten" if cpu and fused else "steploop"


def recurrence(recurrent_impl: str = "auto") -> Recurrence:
    """The strategy for one value of ``recurrent_impl``; an unknown value is a ValueError that
    names the allowed ones."""
    return Recurrence(recurrent_impl)


def implementation(target: object, *, device: torch.device | str | None = None,
                   autocast: bool = False) -> str:
    """What ``target`` runs: "native" (C++ kernels), "aten" (variant (a)'s fused layer on ATen
    ops) or "steploop" (autograd's per-step loop on ATen ops), with "auto" resolved against the
    device, the parameters' dtype and whether the kernels build.

    ``target``: a module holding recurrent layers (a network, a ``ConvRecurrentLayer``, a
    ``torch.compile``'d one: compiled code runs no C++ kernels), or a ``NetConfig`` (resolved on
    ``device``, default CPU). ``device`` defaults to where the module's parameters are;
    ``autocast``: the layers run under CPU autocast. A network whose layers differ (cell (b)
    under "aten": a step loop, then (a)'s fused layer) reports the most specialised of them,
    in the order native, aten, steploop: "native" means some C++ kernel runs in it.
    """
    from bench.models.net import NetConfig, build_network  # cycle: both build on this strategy
    from bench.models.recurrent import ConvRecurrentLayer

    if isinstance(target, NetConfig):
        with torch.device("meta"):
            net = build_network(target)
        return implementation(net, device=device or "cpu", autocast=autocast)
    if not isinstance(target, nn.Module):
        raise TypeError(f"implementation() takes a module or a NetConfig, not {type(target).__name__}")
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")    # no compiled module without it
    compiled = eval_frame is not None and isinstance(target, eval_frame.OptimizedModule)
    found = []
    for m in target.modules():
        if isinstance(m, ConvRecurrentLayer):
            p = next(m.cell.parameters())
            found.append(m.recurrence.resolve(m.cell, device=device or p.device, dtype=p.dtype,
                                              autocast=autocast, compiled=compiled))
    if not found:
        raise ValueError(f"{type(target).__name__} holds no recurrent layer (ConvRecurrentLayer)")
    return min(found, key=RESOLVED_IMPLS.index)

