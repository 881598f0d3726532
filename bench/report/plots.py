"""The report's figures (matplotlib, Agg backend: no display, same pixels everywhere).

Each function returns a Figure or None when its table is empty; `bench.report.render` saves
them as PNG and embeds them in the HTML as base64, so the report is one file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from bench.data.index import MODALITIES

MARKERS = {"rgb": "o", "depth": "s", "flow": "^"}


def _plt() -> Any:
    import matplotlib  # heavy

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy

    return plt


def _groups(df: pl.DataFrame, by: list[str]) -> list[tuple[tuple, pl.DataFrame]]:
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in df.group_by(by, maintain_order=True)]


def _err(df: pl.DataFrame, col: str = "top1") -> np.ndarray:
    """Asymmetric error bars from the t interval (0 where a single seed gives none)."""
    m = df[col].to_numpy()
    lo = np.nan_to_num(m - df[f"{col}_ci_low"].to_numpy(), nan=0.0)
    hi = np.nan_to_num(df[f"{col}_ci_high"].to_numpy() - m, nan=0.0)
    return np.vstack([lo, hi])


def accuracy_vs_cost(leaderboard: pl.DataFrame, *, x: str) -> Any:
    """Top-1 (mean, 95% CI) against ``x`` (``params`` or ``macs_per_clip``), one panel per
    dataset/stage; colour = cell, marker = modality."""
    if leaderboard.is_empty():
        return None
    plt = _plt()
    groups = _groups(leaderboard, ["dataset", "stage"])
    width = max(7.5, 5.5 * len(groups))
    fig, axes = plt.subplots(1, len(groups), figsize=(width, 4.6), squeeze=False)
    cells = sorted(leaderboard["cell"].unique().to_list())
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(cells)}
    label = {"params": "parameters (whole network)", "macs_per_clip": "multiply-adds per clip (measured)"}[x]
    for ax, ((dataset, stage), g) in zip(axes[0], groups):
        for r, e in zip(g.iter_rows(named=True), _err(g).T):
            xv = r[x]
            if xv is None or math.isnan(xv):
                continue
            ax.errorbar([xv], [r["top1"]], yerr=[[e[0]], [e[1]]], fmt=MARKERS.get(r["modality"], "D"),
                        color=colors[r["cell"]], capsize=3, ms=7)
            ax.annotate(r["cell"], (xv, r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("val top-1 (%)")
        ax.set_title(f"{dataset} / {stage}")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[c], marker="o", ls="", label=f"cell {c}") for c in cells]
    handles += [plt.Line2D([], [], color="gray", marker=m, ls="", label=k) for k, m in MARKERS.items()
                if k in set(leaderboard["modality"].to_list())]
    ncol = max(1, min(len(handles), int(width // 1.3)))
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.055 * rows - 0.02))
    return fig


def cell_bars(leaderboard: pl.DataFrame) -> Any:
    """Per-cell bars, one group per cell and one bar per modality, 95% CI error bars, chance line."""
    if leaderboard.is_empty():
        return None
    plt = _plt()
    groups = _groups(leaderboard, ["dataset", "stage"])
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, ((dataset, stage), g) in zip(axes[0], groups):
        cells = sorted(g["cell"].unique().to_list(), key=lambda c: (c != "convlstm", c))
        mods = [m for m in MODALITIES if m in g["modality"].to_list()] + \
               sorted(set(g["modality"].to_list()) - set(MODALITIES))
        width = 0.8 / max(len(mods), 1)
        for j, m in enumerate(mods):
            sub = g.filter(pl.col("modality") == m)
            by_cell = {r["cell"]: r for r in sub.iter_rows(named=True)}
            xs, ys, lo, hi = [], [], [], []
            for i, c in enumerate(cells):
                if c in by_cell:
                    r = by_cell[c]
                    xs.append(i + (j - (len(mods) - 1) / 2) * width)
                    ys.append(r["top1"])
                    lo.append(0 if math.isnan(r["top1_ci_low"]) else r["top1"] - r["top1_ci_low"])
                    hi.append(0 if math.isnan(r["top1_ci_high"]) else r["top1_ci_high"] - r["top1"])
            ax.bar(xs, ys, width=width * 0.95, yerr=[lo, hi], capsize=3, label=m)
        chance = g["chance"].drop_nans().drop_nulls()
        if chance.len():
            ax.axhline(float(chance[0]), color="k", ls=":", lw=1, label="chance")
        ax.set_xticks(range(len(cells)), [f"cell {c}" for c in cells])
        ax.set_ylabel("val top-1 (%), mean and 95% CI over seeds")
        ax.set_title(f"{dataset} / {stage}")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def fusion_gains(fusion: pl.DataFrame) -> Any:
    """Gain of each fusion rule over the best single modality (points), per cell, one panel per
    dataset/stage/combination; error bars = std over seeds."""
    if fusion.is_empty():
        return None
    plt = _plt()
    groups = _groups(fusion, ["dataset", "stage", "modalities"])
    cols = min(len(groups), 3)
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    rules = ["mean", "product", "fitted"]
    for ax, ((dataset, stage, mods), g) in zip(axes.flat, groups):
        cells = sorted(g["cell"].unique().to_list(), key=lambda c: (c != "convlstm", c))
        width = 0.8 / len(rules)
        for j, rule in enumerate(rules):
            sub = {r["cell"]: r for r in g.filter(pl.col("rule") == rule).iter_rows(named=True)}
            xs = [i + (j - 1) * width for i, c in enumerate(cells) if c in sub]
            ys = [sub[c]["gain"] for c in cells if c in sub]
            es = [0 if math.isnan(sub[c]["gain_std"]) else sub[c]["gain_std"] for c in cells if c in sub]
            ax.bar(xs, ys, width=width * 0.95, yerr=es, capsize=3, label=rule)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(cells)), [f"cell {c}" for c in cells])
        ax.set_ylabel("top-1 gain over best single (points)")
        ax.set_title(f"{dataset} / {stage} / {mods}")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def confusion(matrix: np.ndarray, title: str) -> Any:
    """Row-normalised confusion matrix (rows: true class), counts in the cells when small."""
    plt = _plt()
    c = matrix.shape[0]
    size = min(3 + 0.35 * c, 9)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, width=70)), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    return fig
