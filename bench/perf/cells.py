"""``bench perf cells``: forward and forward+backward time of each recurrent cell at the paper's
shapes (C_in = C_out = 256, 28 x 28, the T/2 = 8 recurrent steps of a 16-frame clip), beside a
reference ConvLSTM in the form most open-source PyTorch implementations use, with the time
ratio to ConvLSTM next to the ratio of measured multiply-adds. Column ``impl`` names what each
row ran (``bench.models.native.implementation``: native, aten or steploop)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import CLIError
from bench.perf._common import (
    IMPL_NOTE,
    command_line,
    impl_rows,
    time_interleaved,
    write_outputs,
)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cells", help="time every recurrent cell at the paper's shapes")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=8, help="recurrent steps (T/2 of the clip)")
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cells", default=None,
                   help="comma-separated cells to time (default: every registered cell); convlstm is always timed")
    p.add_argument("--input-layout", choices=("channels_last_3d", "contiguous"), default="channels_last_3d",
                   help="memory layout of the layer's (B, C, T, H, W) input: channels_last_3d is what Res3D "
                        "hands the first recurrent layer in training (default); contiguous is NCDHW")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd layers")
    p.add_argument("--step-loop", action="store_true",
                   help="also time each cell's layer built with recurrent_impl 'steploop' (the per-step "
                        "autograd loop on ATen ops; rows '<cell>+steploop') and 'aten' (the fused layer on "
                        "ATen ops; rows '<cell>+aten'), where that runs something the default does not")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("docs/perf"))
    p.set_defaults(func=_run)


def reference_convlstm_cell(in_channels: int, out_channels: int, kernel_size: int = 3):
    """The ConvLSTM cell as the most widely used open-source PyTorch implementation writes it
    (one convolution over the concatenation, split into four gates); our own re-statement of
    that public design, kept here as the speed baseline."""
    import torch  # heavy
    from torch import nn  # heavy

    class ReferenceConvLSTMCell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden_dim = out_channels
            self.conv = nn.Conv2d(in_channels + out_channels, 4 * out_channels, kernel_size,
                                  padding=kernel_size // 2, bias=True)

        def forward(self, x, state):
            h_cur, c_cur = state
            combined = torch.cat([x, h_cur], dim=1)
            cc_i, cc_f, cc_o, cc_g = torch.split(self.conv(combined), self.hidden_dim, dim=1)
            i, f, o, g = torch.sigmoid(cc_i), torch.sigmoid(cc_f), torch.sigmoid(cc_o), torch.tanh(cc_g)
            c_next = f * c_cur + i * g
            h_next = o * torch.tanh(c_next)
            return h_next, (h_next, c_next)

    return ReferenceConvLSTMCell()


def check_cells(cells: list[str]) -> list[str]:
    from bench.models import list_cells  # heavy: torch

    unknown = [c for c in cells if c not in list_cells()]
    if unknown:
        raise ValueError(f"unknown cell(s) {', '.join(unknown)}; registered: {', '.join(list_cells())}")
    return cells


def measure(*, batch: int = 1, steps: int = 8, channels: int = 256, size: int = 28, repeats: int = 7,
            warmup: int = 2, device: str = "cpu", compile: bool = False,
            cells: list[str] | None = None, input_layout: str = "channels_last_3d",
            step_loop: bool = False) -> list[dict[str, object]]:
    import torch  # heavy

    from bench.models import count_macs, list_cells  # heavy: torch
    from bench.models.native import implementation  # heavy: torch
    from bench.models.recurrent import ConvRecurrentLayer  # heavy: torch

    torch.manual_seed(0)
    x = torch.randn(batch, channels, steps, size, size, device=device)
    if input_layout == "channels_last_3d":      # as Res3D's output reaches the first layer in training
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def ref_layer():
        cell = reference_convlstm_cell(channels, channels).to(device)

        def run(seq):
            h = c = seq.new_zeros(batch, channels, size, size)
            out = []
            for t in range(seq.shape[2]):
                h, (h, c) = cell(seq[:, :, t], (h, c))
                out.append(h)
            return torch.stack(out, 2)
        run.module = cell
        return run

    names = list_cells() if cells is None else ["convlstm"] + [c for c in check_cells(cells) if c != "convlstm"]
    def layer(name: str, recurrent_impl: str = "auto"):
        return ConvRecurrentLayer(name, in_channels=channels, out_channels=channels,
                                  recurrent_impl=recurrent_impl).to(device)

    layers: dict[str, object] = {"reference-convlstm": ref_layer()}
    for name in names:
        layers[name] = layer(name)
    if step_loop:
        for name in names:
            for impl, other in impl_rows(layers[name], lambda impl, name=name: layer(name, impl)).items():
                layers[f"{name}+{impl}"] = other
    if compile:
        for name in names:
            layers[f"{name}+compile"] = torch.compile(layers[name])
    # the reference is a Python loop over ATen ops
    impls = {k: "steploop" if k == "reference-convlstm" else implementation(v) for k, v in layers.items()}

    def fwd(layer):
        def f():
            with torch.no_grad():
                layer(x)
        return f

    def fwd_bwd(layer):
        xg = x.clone().requires_grad_(True)
        # The gradient arrives in the layout the layer hands forward, as the next layer's
        # backward returns it (``.sum().backward()`` would feed a broadcast gradient that no
        # network produces).
        grad = torch.randn_like(layer(x))
        module = getattr(layer, "module", layer)

        def f():
            # as a training step: gradients set to None first, so none is accumulated into
            module.zero_grad(set_to_none=True)
            xg.grad = None
            layer(xg).backward(grad)
        return f

    t_fwd = time_interleaved({k: fwd(v) for k, v in layers.items()}, warmup=warmup, repeats=repeats, device=device)
    t_fb = time_interleaved({k: fwd_bwd(v) for k, v in layers.items()}, warmup=warmup, repeats=repeats, device=device)

    def macs(name: str) -> int:
        base = name.split("+")[0]
        mod = layers[base]
        with torch.device("meta"):
            if base == "reference-convlstm":
                m = reference_convlstm_cell(channels, channels)
                xm, hm = torch.empty(batch, channels, size, size), torch.empty(batch, channels, size, size)
                return count_macs(m, xm, (hm, hm)) * steps
            m = ConvRecurrentLayer(base, in_channels=channels, out_channels=channels)
            return count_macs(m, torch.empty(x.shape))
        del mod

    rows = []
    base_fb, base_f, base_macs = t_fb["convlstm"], t_fwd["convlstm"], macs("convlstm")
    for name in layers:
        m = macs(name)
        mac_ratio = base_macs / m
        speedup = base_fb / t_fb[name]
        rows.append({"cell": name, "impl": impls[name], "fwd_ms": t_fwd[name] * 1e3, "fwd_bwd_ms": t_fb[name] * 1e3,
                     "macs": m, "mac_ratio_vs_convlstm": mac_ratio,
                     "fwd_speedup_vs_convlstm": base_f / t_fwd[name], "fwd_bwd_speedup_vs_convlstm": speedup,
                     "speedup_over_mac_ratio": speedup / mac_ratio,
                     "vs_reference_fwd_bwd": t_fb["reference-convlstm"] / t_fb[name]})
    return rows


COLUMNS = ["cell", "impl", "fwd_ms", "fwd_bwd_ms", "macs", "mac_ratio_vs_convlstm", "fwd_speedup_vs_convlstm",
           "fwd_bwd_speedup_vs_convlstm", "speedup_over_mac_ratio", "vs_reference_fwd_bwd"]


def _run(args: argparse.Namespace) -> int:
    import torch  # heavy


    cells = [c.strip() for c in args.cells.split(",") if c.strip()] if args.cells else None
    try:
        check_cells(cells or [])            # before any work, naming the flag
    except ValueError as e:
        raise CLIError(f"--cells: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows = measure(batch=args.batch, steps=args.steps, channels=args.channels, size=args.size,
                   repeats=args.repeats, warmup=args.warmup, device=device, compile=args.compile,
                   cells=cells, input_layout=args.input_layout, step_loop=args.step_loop)
    text = write_outputs(
        "cells", rows, COLUMNS, args.out, title=f"Recurrent cells: one layer, {args.steps} steps, "
        f"B={args.batch}, C={args.channels}, {args.size}x{args.size}, {device}, input {args.input_layout}",
        command=command_line(args),
        notes=["Medians over repeats after warm-up, all cells timed round-robin in one run.",
               IMPL_NOTE,
               ("speedup_over_mac_ratio: the fraction of the multiply-add saving that shows up as time "
                "(1.0 = time falls as fast as multiply-adds)."),
               "vs_reference_fwd_bwd > 1: faster than the reference single-convolution ConvLSTM."])
    print(text)
    return 0
