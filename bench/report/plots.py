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
CONFUSION_TICKS = 30     # up to this many classes the ticks name every class


def _plt() -> Any:
    import matplotlib  # heavy

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy

    return plt


def _groups(df: pl.DataFrame, by: list[str]) -> list[tuple[tuple, pl.DataFrame]]:
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in df.group_by(by, maintain_order=True)]


def _err(df: pl.DataFrame, col: str = "top1") -> np.ndarray:
    """Asymmetric error bars from the table's interval (the hierarchical bootstrap's, inside
    [0, 100]; 0 where a row has none)."""
    m = df[col].to_numpy()
    lo = np.clip(np.nan_to_num(m - df[f"{col}_ci_low"].to_numpy(), nan=0.0), 0.0, None)
    hi = np.clip(np.nan_to_num(df[f"{col}_ci_high"].to_numpy() - m, nan=0.0), 0.0, None)
    return np.vstack([lo, hi])


def _percent_axis(ax: Any) -> None:
    """Keep an accuracy axis within 0-100: no room is left for accuracies that cannot be."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(0.0, lo), min(100.0, hi))


def _boxes_overlap(a: Any, b: Any, pad: float = 0.0) -> bool:
    """Two display-space bounding boxes share area (``pad`` pixels of air required between them)."""
    return a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 + pad and b.y0 < a.y1 + pad


def _cost_ticks(ax: Any, values: list[float]) -> None:
    """Log x axis with few, compactly written ticks (``340k``, ``4.7M``): the default log
    locator labels every minor tick when the data span less than a decade, and the labels
    (``3.4x10^5 3.6x10^5 ...``) run into each other."""
    from matplotlib import ticker  # heavy

    lo, hi = min(values), max(values)
    ax.set_xscale("log")
    if hi / lo >= 10:
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        pad = (hi / lo) ** 0.08 if hi > lo else 1.3
        ax.set_xlim(lo / pad, hi * pad)
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.xaxis.set_minor_locator(ticker.NullLocator())


def _thin_ticks(ax: Any, renderer: Any) -> None:
    """Drop every other x tick until no two labels touch (a last resort after `_cost_ticks`)."""
    while True:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        if len(ticks) <= 2 or not any(_boxes_overlap(a, b, 2) for a, b in zip(boxes, boxes[1:])):
            return
        ax.set_xticks(ticks[::2])


# Where a point's label may go, in points from the point, tried in this order.
_LABEL_OFFSETS = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 14), (-6, 14), (6, -22), (-6, -22),
                  (12, -4), (-12, -4), (6, 24), (-6, 24), (6, -32), (-6, -32), (18, 8), (-18, 8)]


def _place_labels(ax: Any, points: list[tuple[float, float, str]], renderer: Any) -> None:
    """Label each point where its text overlaps no other label and stays inside the axes.

    Points at the same place (cells c and d have the same parameter count; a cell's RGB and
    depth runs can tie) get one label naming them all. Placement is greedy, in the order of
    `_LABEL_OFFSETS`; a label that finds no free place is put at the last offset tried with an
    arrow to its point. Call after the figure's layout is final: positions are in display space."""
    merged: dict[tuple[float, float], list[str]] = {}
    for x, y, text in points:
        key = (round(math.log10(x), 3), round(y, 1))
        merged.setdefault(key, [])
        if text not in merged[key]:
            merged[key].append(text)
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for (lx, y), texts in merged.items():
        x = 10 ** lx
        label = ", ".join(texts)
        for i, (dx, dy) in enumerate(_LABEL_OFFSETS):
            last = i == len(_LABEL_OFFSETS) - 1
            ann = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              ha="left" if dx >= 0 else "right", va="bottom",
                              arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"} if last else None)
            box = ann.get_window_extent(renderer)
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            if last or (inside and not any(_boxes_overlap(box, b, 1) for b in placed)):
                placed.append(box)
                break
            ann.remove()


def accuracy_vs_cost(leaderboard: pl.DataFrame, *, x: str) -> Any:
    """Top-1 (mean, 95% CI) against ``x`` (``params`` or ``macs_per_clip``), one panel per
    dataset/stage; colour = cell, marker = modality, each point labelled with its cell."""
    if leaderboard.is_empty():
        return None
    plt = _plt()
    groups = _groups(leaderboard, ["dataset", "stage"])
    width = max(7.5, 5.5 * len(groups))
    fig, axes = plt.subplots(1, len(groups), figsize=(width, 4.6), squeeze=False)
    cells = sorted(leaderboard["cell"].unique().to_list())
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(cells)}
    label = {"params": "parameters (whole network)", "macs_per_clip": "multiply-adds per clip (measured)"}[x]
    to_label: list[tuple[Any, list[tuple[float, float, str]]]] = []
    for ax, ((dataset, stage), g) in zip(axes[0], groups):
        points = []
        for r, e in zip(g.iter_rows(named=True), _err(g).T):
            xv = r[x]
            if xv is None or math.isnan(xv) or xv <= 0:
                continue
            ax.errorbar([xv], [r["top1"]], yerr=[[e[0]], [e[1]]], fmt=MARKERS.get(r["modality"], "D"),
                        color=colors[r["cell"]], capsize=3, ms=7)
            points.append((float(xv), float(r["top1"]), str(r["cell"])))
        if points:
            _cost_ticks(ax, [p[0] for p in points])
        ax.set_xlabel(label)
        ax.set_ylabel("val top-1 (%)")
        _percent_axis(ax)
        ax.set_title(f"{dataset} / {stage}")
        ax.grid(alpha=0.3)
        to_label.append((ax, points))
    handles = [plt.Line2D([], [], color=colors[c], marker="o", ls="", label=f"cell {c}") for c in cells]
    handles += [plt.Line2D([], [], color="gray", marker=m, ls="", label=k) for k, m in MARKERS.items()
                if k in set(leaderboard["modality"].to_list())]
    ncol = max(1, min(len(handles), int(width // 1.3)))
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.055 * rows - 0.02))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, points in to_label:
        _thin_ticks(ax, renderer)
        _place_labels(ax, points, renderer)
    return fig


def cell_bars(leaderboard: pl.DataFrame) -> Any:
    """Per-cell bars, one group per cell and one bar per modality, 95% interval error bars (the
    hierarchical bootstrap's), chance line; the axis is 0-100, the range an accuracy has."""
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
                    lo.append(0 if math.isnan(r["top1_ci_low"]) else max(0.0, r["top1"] - r["top1_ci_low"]))
                    hi.append(0 if math.isnan(r["top1_ci_high"]) else max(0.0, r["top1_ci_high"] - r["top1"]))
            ax.bar(xs, ys, width=width * 0.95, yerr=[lo, hi], capsize=3, label=m)
        chance = g["chance"].drop_nans().drop_nulls()
        if chance.len():
            ax.axhline(float(chance[0]), color="k", ls=":", lw=1, label="chance")
        ax.set_xticks(range(len(cells)), [f"cell {c}" for c in cells])
        ax.set_ylabel("val top-1 (%), mean and 95% CI")
        ax.set_ylim(0, 100)
        ax.set_title(f"{dataset} / {stage}")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def fusion_gains(fusion: pl.DataFrame) -> Any:
    """Gain of each fusion rule over the best single modality (points), per cell, one panel per
    dataset/stage/combination; error bars = the gain's 95% bootstrap interval (seeds and clips,
    paired), the std over seeds where a table has no interval."""
    if fusion.is_empty():
        return None
    plt = _plt()
    # a fusion across stages (depth pre-trained, RGB fine-tuned) is one panel, titled without a stage
    groups = _groups(fusion, ["dataset", "stages" if "stages" in fusion.columns else "stage", "modalities"])
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
            es = [_gain_err(sub[c]) for c in cells if c in sub]
            ax.bar(xs, ys, width=width * 0.95, yerr=np.array(es).T.reshape(2, -1), capsize=3, label=rule)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(cells)), [f"cell {c}" for c in cells])
        ax.set_ylabel("top-1 gain over best single (points)")
        ax.set_title(f"{dataset} / {stage} / {mods}" if ":" not in str(stage) else f"{dataset} / {mods}")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _gain_err(r: dict[str, Any]) -> tuple[float, float]:
    lo, hi = r.get("gain_ci_low"), r.get("gain_ci_high")
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        return (max(0.0, r["gain"] - lo), max(0.0, hi - r["gain"]))
    s = r.get("gain_std")
    s = 0.0 if s is None or math.isnan(s) else s
    return (s, s)


def confusion(matrix: np.ndarray, title: str, classes: list[str] | None = None) -> Any:
    """Row-normalised confusion matrix (rows: true class), counts in the cells when small.

    ``classes``: the class names, in label order (ticks are labelled with them up to
    `CONFUSION_TICKS` classes; x labels turn 45 degrees when they are longer than a few
    characters). Without names the ticks are the label indices and the axis labels say so."""
    plt = _plt()
    c = matrix.shape[0]
    names = list(classes) if classes is not None and len(classes) == c else None
    ticks = c <= CONFUSION_TICKS
    longest = max((len(n) for n in names), default=0) if names and ticks else 2
    size = min(3 + 0.35 * c, 9) + (min(longest, 24) * 0.07 if longest > 3 else 0)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if ticks:
        for i in range(c):
            for j in range(c):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        labels = names if names else [str(i) for i in range(c)]
        fontsize = 8 if c <= 10 else 6
        ax.set_xticks(range(c), labels, fontsize=fontsize)
        ax.set_yticks(range(c), labels, fontsize=fontsize)
        if longest > 3:
            plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if not ticks:
        ax.set_xlabel(f"predicted class ({c} classes)")
    else:
        ax.set_xlabel("predicted class" + ("" if names else " (label index: no class names found)"))
    ax.set_ylabel("true class")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, width=70)), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    if ticks and longest > 3:           # 45 degrees still too tight for these names: upright
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
        if any(_boxes_overlap(a, b, 1) for a, b in zip(boxes, boxes[1:])):
            plt.setp(ax.get_xticklabels(), rotation=90, ha="center", va="top", rotation_mode="default")
            fig.tight_layout()
    return fig
