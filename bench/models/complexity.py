"""Parameter and multiply-add accounting, exact and measured.

The paper's Table 1 prints Mult-Adds as params x H x W for one time step of one layer. That
overstates the cells whose gates are fully connected on GAP'd vectors (an FC gate costs
C_in*C_out multiply-adds, not x H*W), so we report both: the paper's formula and the count
measured on the module by torch's FlopCounterMode (which counts every executed conv / matmul,
grouped convolutions included; elementwise ops are not counted, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Table 1 of the paper: (params in M, Mult-Adds in M) at C_in = C_out = 256, K = 3, 28 x 28.
PAPER_TABLE1: dict[str, tuple[float, float]] = {
    "convlstm": (4.719, 3700.0),
    "a": (0.529, 415.0),
    "b": (0.667, 522.0),
    "c": (0.601, 472.0),
    "d": (0.601, 472.0),
}


def count_params(module: nn.Module, *, bias: bool = True) -> int:
    """Parameters of ``module``; ``bias=False`` leaves out every bias, as the paper's formulas do."""
    return sum(p.numel() for name, p in module.named_parameters()
               if bias or name.rsplit(".", 1)[-1] != "bias")


def count_macs(module: nn.Module, *inputs: object) -> int:
    """Multiply-adds of the operations ``module(*inputs)`` executes (FlopCounterMode counts 2 per MAC).

    Works on meta tensors, so a paper-size network is counted without allocating it."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def formula_params(cell: str, *, c_in: int, c_out: int, k: int) -> int:
    """The parameter formulas of SPEC / the paper (biases left out), and of the controls
    (``bench.models.controls``: "mean" is one separable convolution, K*K*C_in + C_in*C_out)."""
    a = (k * k + 4 * c_out) * (c_in + c_out)
    return {
        "convlstm": k * k * (c_in + c_out) * c_out * 4,
        "a": a,
        "b": a + k * k * (c_in + 2 * c_out) + (c_in + c_out) * c_out,
        "c": a + k * k * (c_in + 2 * c_out) + c_out * c_out,
        "d": a + k * k * (c_in + 2 * c_out) + c_out * c_out,
        "mean": k * k * c_in + c_in * c_out,
    }[cell]


@dataclass(frozen=True)
class CellComplexity:
    cell: str
    params_no_bias: int
    params: int
    macs_paper: int
    macs_measured: int
    paper_params: int | None
    paper_macs: int | None


def cell_complexity(cell: str, *, c_in: int = 256, c_out: int = 256, k: int = 3, hw: int = 28) -> CellComplexity:
    """One time step of one layer at the paper's setting."""
    from bench.models._registry import create_cell  # cycle: the registry imports the cells

    with torch.device("meta"):
        m = create_cell(cell, in_channels=c_in, out_channels=c_out, kernel_size=k).eval()
        x = torch.empty(1, c_in, hw, hw)
        state = (torch.empty(1, c_out, hw, hw), torch.empty(1, c_out, hw, hw))
    no_bias = count_params(m, bias=False)
    paper = PAPER_TABLE1.get(cell) if (c_in, c_out, k, hw) == (256, 256, 3, 28) else None
    return CellComplexity(
        cell=cell, params_no_bias=no_bias, params=count_params(m),
        macs_paper=no_bias * hw * hw, macs_measured=count_macs(m, x, state),
        paper_params=round(paper[0] * 1e6) if paper else None,
        paper_macs=round(paper[1] * 1e6) if paper else None)


@dataclass(frozen=True)
class NetworkComplexity:
    cell: str
    frames: int
    image_size: int
    params: int
    macs_measured: int


def network_complexity(cell: str, *, frames: int, image_size: int = 112, preset: str = "paper",
                       num_classes: int = 249) -> NetworkComplexity:
    """Whole-network parameters and multiply-adds per clip, counted on meta tensors."""
    from bench.models.net import NetConfig, build_network  # cycle: net imports complexity

    cfg = NetConfig.preset(preset, cell=cell, num_classes=num_classes)
    with torch.device("meta"):
        net = build_network(cfg).eval()
        x = torch.empty(1, cfg.in_channels, frames, image_size, image_size)
    return NetworkComplexity(cell=cell, frames=frames, image_size=image_size,
                             params=count_params(net), macs_measured=count_macs(net, x))
