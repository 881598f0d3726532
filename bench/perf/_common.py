"""Shared plumbing for the benchmarks: timing, tables, output files.

As timm's benchmark.py: warm-up apart from the measured iterations, synchronised timing on
GPU, medians, and flat dict rows that drop straight into a polars frame.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int, repeats: int,
                     device: str = "cpu") -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin so that a busy machine
    slows every candidate alike and ratios taken in one run stay meaningful."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


#: The rows ``--step-loop`` adds, as the suffix and the attributes set on a copy's modules that
#: have them: the per-step autograd loop instead of the fused variant-(a) layer, and ATen ops
#: instead of the C++ kernels (the fused layer's steps, the cells' depthwise convolutions).
FUSED_ABLATIONS = {"steploop": {"fused_layer": False}, "aten": {"native_kernels": False}}


def fused_ablations(module) -> dict[str, object]:
    """``{suffix: copy}`` of ``module``, same weights, for each of ``FUSED_ABLATIONS`` that changes
    something in it: the ``+steploop`` and ``+aten`` rows of ``bench perf``."""
    import copy

    copies = {}
    for suffix, attrs in FUSED_ABLATIONS.items():
        if not any(hasattr(m, k) and getattr(m, k) != v for m in module.modules() for k, v in attrs.items()):
            continue
        dup = copy.deepcopy(module)
        for m in dup.modules():
            for k, v in attrs.items():
                if hasattr(m, k):
                    setattr(m, k, v)
        copies[suffix] = dup
    return copies


def command_line(args: object) -> str:
    """``bench ...`` as it was called, for the table's "Command" line."""
    import shlex

    return "bench " + shlex.join(getattr(args, "argv", None) or [])


def environment() -> dict[str, object]:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine()
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": dev,
            "python": platform.python_version()}


def markdown_table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_outputs(name: str, rows: list[dict[str, object]], columns: Sequence[str], out: Path,
                  *, title: str, command: str, notes: Sequence[str] = (),
                  sections: Sequence[tuple[str, list[dict[str, object]], Sequence[str]]] = ()) -> str:
    """Write ``<out>/<name>.md`` and ``<out>/<name>.json``; return the Markdown.

    ``sections``: further ``(title, rows, columns)`` tables, after the notes; their rows go to
    the JSON under ``sections[title]``.
    """
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    md = [f"### {title}", "", f"Command: `{command}`  ", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
          "", markdown_table(rows, columns)]
    md += [""] + [f"- {n}" for n in notes] if notes else []
    for sec_title, sec_rows, sec_cols in sections:
        md += ["", f"#### {sec_title}", "", markdown_table(sec_rows, sec_cols)]
    text = "\n".join(md) + "\n"
    (out / f"{name}.md").write_text(text)
    doc: dict[str, object] = {"environment": env, "command": command, "rows": rows}
    if sections:
        doc["sections"] = {t: r for t, r, _ in sections}
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
    return text
