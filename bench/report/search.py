"""What a hyperparameter search found, per cell: the objective against each searched key and
how much each key mattered.

``searched_keys`` are the `bench.report.trials.SEARCHED` columns that vary among a group's
trials. `importance` fits Optuna's own evaluator (``optuna.importance.get_param_importances``,
fANOVA) to the full-length trials of each (dataset, stage, cell, modality) -- all its seeds'
studies pooled -- by rebuilding them as a study of completed trials: the distributions are the
observed ranges (log-scaled where a key spans more than a decade), the objective is the final
val_top1 in percent. Trials the scheduler stopped early are shown on the figure but left out
of the importance: their score is at a shorter budget. A group needs at least
`MIN_TRIALS` full-length trials, one varying key and scores that differ.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from bench.report.trials import SEARCHED

GROUP = ("dataset", "stage", "cell", "modality")
MIN_TRIALS = 4


def searched_keys(trials: pl.DataFrame) -> list[str]:
    """The searchable keys whose value differs between trials of one group (what a search varied)."""
    keys = []
    for k in SEARCHED:
        if k not in trials.columns:
            continue
        varies = trials.group_by(list(GROUP)).agg(pl.col(k).drop_nulls().n_unique().alias("n"))
        if varies.height and int(varies["n"].max() or 0) > 1:
            keys.append(k)
    return keys


def _distribution(values: list[float], *, integer: bool) -> Any:
    import optuna  # heavy

    if integer:
        return optuna.distributions.CategoricalDistribution(sorted({int(v) for v in values}))
    lo, hi = min(values), max(values)
    log = lo > 0 and hi / lo > 10
    return optuna.distributions.FloatDistribution(lo, hi, log=log)


def importance(trials: pl.DataFrame, keys: list[str] | None = None) -> pl.DataFrame:
    """One row per (dataset, stage, cell, modality, key): ``importance`` (fANOVA, summing to 1
    over a group's keys) and ``trials`` (the full-length trials it was fitted on)."""
    import optuna  # heavy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keys = searched_keys(trials) if keys is None else keys
    rows: list[dict[str, Any]] = []
    full = trials.filter(pl.col("finished") & ~pl.col("stopped_early").fill_null(False)
                         & pl.col("val_top1").is_not_null() & ~pl.col("val_top1").is_nan())
    for group, g in full.group_by(list(GROUP), maintain_order=True):
        varying = [k for k in keys if g[k].drop_nulls().n_unique() > 1]
        if g.height < MIN_TRIALS or not varying:
            continue
        dists = {k: _distribution(g[k].drop_nulls().to_list(), integer=g.schema[k].is_integer()) for k in varying}
        study = optuna.create_study(direction="maximize")
        for r in g.iter_rows(named=True):
            if any(r[k] is None or (isinstance(r[k], float) and math.isnan(r[k])) for k in varying):
                continue
            params = {k: (int(r[k]) if g.schema[k].is_integer() else float(r[k])) for k in varying}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=100 * r["val_top1"]))
        values = [tr.value for tr in study.trials]
        if len(values) < MIN_TRIALS or max(values) == min(values):
            continue               # every trial scored the same: nothing to apportion
        scores = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        for k in varying:
            rows.append({**dict(zip(GROUP, group)), "key": k, "importance": float(scores.get(k, 0.0)),
                         "trials": len(study.trials)})
    schema = {**{c: pl.String for c in GROUP}, "key": pl.String, "importance": pl.Float64, "trials": pl.Int64}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def objective_figure(trials: pl.DataFrame, key: str) -> Any:
    """Final val_top1 (%) against ``key``, one colour per (cell, modality); full-length trials
    as dots, trials stopped early as crosses. None when the key does not vary."""
    from bench.report.plots import _plt

    t = trials.filter(pl.col("finished") & pl.col(key).is_not_null() & pl.col("val_top1").is_not_null())
    if t.height < 2 or t[key].n_unique() < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for (cell, mod), g in t.group_by(["cell", "modality"], maintain_order=True):
        full = g.filter(~pl.col("stopped_early").fill_null(False))
        stopped = g.filter(pl.col("stopped_early").fill_null(False))
        line = ax.scatter(full[key].to_list(), (full["val_top1"] * 100).to_list(), label=f"{cell} / {mod}", s=24)
        if stopped.height:
            ax.scatter(stopped[key].to_list(), (stopped["val_top1"] * 100).to_list(), marker="x", s=24,
                       color=line.get_facecolor()[0])
    values = [v for v in t[key].to_list() if v is not None]
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel("final val top-1 (%)")
    ax.set_title(f"objective against {key} (x: stopped early)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
