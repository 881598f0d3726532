"""``bench model complexity``: parameters and multiply-adds, the paper's figures beside ours."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from bench.errors import CLIError


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("complexity", help="parameters and multiply-adds of every cell and network",
                       description="Table 1 of the paper beside the counts measured on the modules.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32], help="clip lengths for the network rows")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--classes", type=int, default=249, help="classifier outputs (IsoGD: 249)")
    p.set_defaults(func=_complexity)


def complexity_report(*, frames: list[int], image_size: int = 112, num_classes: int = 249) -> dict:
    """``cells`` and ``network``: the paper's five cells; ``controls``: the same rows for the
    order-blind controls (``bench.models.controls``), kept apart so that Table 1 stays the
    paper's table. A control's network runs Res3D frame by frame, so it has T steps where a
    cell has T/2 (its Mult-Adds say so)."""
    from bench.models import list_cells, list_controls  # heavy: torch
    from bench.models.complexity import (  # heavy: torch
        cell_complexity,
        network_complexity,
    )

    for t in frames:
        if t < 2 or t % 2:
            raise CLIError(f"--frames: every clip length must be even and >= 2, got {t}")

    def rows(names: list[str]) -> tuple[list[dict], list[dict]]:
        return ([asdict(cell_complexity(c)) for c in names],
                [asdict(network_complexity(c, frames=t, image_size=image_size, num_classes=num_classes))
                 for c in names for t in frames])

    cells, network = rows(list_cells())
    control_cells, control_network = rows(list_controls())
    return {"setting": {"c_in": 256, "c_out": 256, "kernel": 3, "feature_map": [28, 28],
                        "network_image_size": image_size, "num_classes": num_classes},
            "cells": cells, "network": network,
            "controls": {"cells": control_cells, "network": control_network}}


def _fmt_m(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.3f}M"


def _complexity(args: argparse.Namespace) -> int:
    rep = complexity_report(frames=args.frames, image_size=args.image_size, num_classes=args.classes)
    if args.json:
        print(json.dumps(rep))
        return 0
    print("Recurrent cells: one time step of one layer, C_in = C_out = 256, K = 3, 28 x 28")
    print("| cell | params (no bias) | paper params | params (with bias) | Mult-Adds paper formula"
          " | paper Table 1 | measured Mult-Adds | measured / paper |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in rep["cells"]:
        ratio = c["macs_measured"] / c["paper_macs"] if c["paper_macs"] else float("nan")
        print(f"| {c['cell']} | {c['params_no_bias']:,} | {_fmt_m(c['paper_params'])} | {c['params']:,} "
              f"| {_fmt_m(c['macs_paper'])} | {_fmt_m(c['paper_macs'])} | {_fmt_m(c['macs_measured'])} "
              f"| {ratio:.3f} |")
    base = {n["frames"]: n["macs_measured"] for n in rep["network"] if n["cell"] == "convlstm"}
    print(f"\nWhole network at {args.image_size} x {args.image_size}, {args.classes} classes, per clip")
    print("| cell | frames | params | measured Mult-Adds | vs convlstm |")
    print("|---|---:|---:|---:|---:|")
    for n in rep["network"]:
        print(f"| {n['cell']} | {n['frames']} | {n['params']:,} | {n['macs_measured'] / 1e9:,.2f}G "
              f"| {n['macs_measured'] / base[n['frames']]:.3f} |")
    controls = rep["controls"]
    if controls["cells"]:
        print("\nOrder-blind controls (not in the paper; bench/models/controls.py): one step of one layer,"
              " and the whole network (Res3D frame by frame: T steps, not T/2)")
        print("| control | params (no bias) | params (with bias) | measured Mult-Adds |")
        print("|---|---:|---:|---:|")
        for c in controls["cells"]:
            print(f"| {c['cell']} | {c['params_no_bias']:,} | {c['params']:,} | {_fmt_m(c['macs_measured'])} |")
        print("| control | frames | params | measured Mult-Adds | vs convlstm |")
        print("|---|---:|---:|---:|---:|")
        for n in controls["network"]:
            print(f"| {n['cell']} | {n['frames']} | {n['params']:,} | {n['macs_measured'] / 1e9:,.2f}G "
                  f"| {n['macs_measured'] / base[n['frames']]:.3f} |")
    return 0
