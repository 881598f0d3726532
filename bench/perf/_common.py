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
        import torch  # heavy

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


#: The ``recurrent_impl`` values ``--step-loop`` builds rows with, beside the default ("auto"):
#: rows ``<cell>+steploop`` (autograd's per-step loop on ATen ops) and ``<cell>+aten`` (the fused
#: layer on ATen ops, no C++ kernels).
STEP_LOOP_IMPLS = ("steploop", "aten")

#: The tables' note on their ``impl`` column.
IMPL_NOTE = ("impl: what the recurrent layers ran (native: C++ kernels; aten: variant (a)'s fused layer "
             "on ATen ops, the step loop elsewhere; steploop: autograd's per-step loop on ATen ops).")


def impl_rows(base, build) -> dict[str, object]:
    """``{recurrent_impl: module}`` for each of `STEP_LOOP_IMPLS`: ``build(recurrent_impl)``,
    with ``base``'s weights, kept where it runs something (``bench.models.native.implementation``)
    that neither ``base`` nor an earlier row runs. (Cells (b)-(d) have no fused layer, so their
    "aten" layer is their "steploop" one; on CUDA every value runs the step loop.)"""
    from bench.models.native import implementation  # heavy: torch

    seen = {implementation(base)}
    rows = {}
    for impl in STEP_LOOP_IMPLS:
        module = build(impl)
        resolved = implementation(module)
        if resolved in seen:
            continue
        module.load_state_dict(base.state_dict())
        seen.add(resolved)
        rows[impl] = module
    return rows


def command_line(args: object) -> str:
    """``bench ...`` as it was called, for the table's "Command" line."""
    import shlex

    return "bench " + shlex.join(getattr(args, "argv", None) or [])


def environment() -> dict[str, object]:
    import torch  # heavy

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
