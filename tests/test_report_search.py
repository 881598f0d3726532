"""What a search found: the varying keys, Optuna's fANOVA importance per cell, the figure."""

from __future__ import annotations

import math

import polars as pl
import pytest

from bench.report.search import importance, objective_figure, searched_keys
from bench.report.trials import trials_frame


def _trials(n: int = 16) -> pl.DataFrame:
    """Cell a: the score depends on lr only (peak at 1e-2); batch_size varies and does nothing.
    Cell b: one fixed configuration (nothing searched)."""
    rows = []
    for i in range(n):
        lr = 10 ** (-4 + 3 * i / (n - 1))
        rows.append({"trial_name": f"a{i}", "dataset": "d", "stage": "pretrain", "cell": "a", "modality": "rgb",
                     "seed": i % 2, "status": "TERMINATED", "finished": True, "epochs": 4, "last_epoch": 4,
                     "stopped_early": False, "lr": lr, "batch_size": (4, 8)[(i * 7) % 2],
                     "val_top1": 0.9 - 0.25 * abs(math.log10(lr) + 2)})
    rows.append({**rows[0], "trial_name": "a-stopped", "last_epoch": 1, "stopped_early": True, "val_top1": 0.99})
    for i in range(4):
        rows.append({"trial_name": f"b{i}", "dataset": "d", "stage": "pretrain", "cell": "b", "modality": "rgb",
                     "seed": i, "status": "TERMINATED", "finished": True, "epochs": 4, "last_epoch": 4,
                     "stopped_early": False, "lr": 0.01, "batch_size": 8, "val_top1": 0.5 + 0.01 * i})
    return trials_frame(rows)


def test_importance_names_the_key_that_matters_per_cell():
    t = _trials()
    assert searched_keys(t) == ["lr", "batch_size"]
    imp = importance(t)
    a = {r["key"]: r for r in imp.filter(pl.col("cell") == "a").iter_rows(named=True)}
    assert set(a) == {"lr", "batch_size"} and a["lr"]["trials"] == 16       # the stopped trial is left out
    assert a["lr"]["importance"] > 0.8 > a["batch_size"]["importance"]
    assert sum(r["importance"] for r in a.values()) == pytest.approx(1.0)
    assert imp.filter(pl.col("cell") == "b").is_empty()                    # nothing varied for b


def test_objective_figure_plots_every_trial():
    fig = objective_figure(_trials(), "lr")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr"
    n = sum(len(c.get_offsets()) for c in ax.collections)
    assert n == 16 + 1 + 4                                                 # every finished trial, stopped included
    assert objective_figure(_trials().filter(pl.col("cell") == "b"), "lr") is None
