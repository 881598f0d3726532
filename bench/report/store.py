"""The report's side of MLflow: a sweep's trials as the report's table, the report as a
leaderboard run.

Everything that talks to MLflow or knows its run layout is `bench.tracking`'s: finding the
sweep and reading its trial runs, typed (`bench.tracking.reader`), and writing the leaderboard
run (`bench.tracking.leaderboard`). This module only turns their records into
`bench.report.trials` rows and a `Report` into the tables, metric and params of that run,
and each row of its leaderboard and fusion tables into a leaderboard entry run (`entries`:
which column becomes which metric). It imports no mlflow.

`client`, `find_sweep`, `latest_leaderboard`, `SweepRef` and `SweepNotFound` are re-exported
under their old names for the callers that still import them from here (``bench report``,
``bench ui``, ``bench viz``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from bench.errors import SweepNotFound
from bench.report.trials import row_from_record, scores_num_classes, trials_frame
from bench.tracking.leaderboard import (
    LeaderboardEntry,
    latest_leaderboard,
    report_time,
    write_leaderboard_entries,
    write_leaderboard_run,
)
from bench.tracking.reader import SweepRef, client, find_sweep, read_trials

if TYPE_CHECKING:
    from bench.report.build import Report

__all__ = ["HISTORY", "SweepNotFound", "SweepRef", "client", "entries", "find_sweep", "latest_leaderboard",
           "load_trials_mlflow", "log_leaderboard"]

# The per-epoch metrics a trial row summarises (best val_top1, median throughput).
HISTORY = ("val_top1", "train_clips_per_s")


def load_trials_mlflow(tracking_uri: str, ref: SweepRef, *, scores_dir: str | Path) -> pl.DataFrame:
    """The sweep's trial runs as a `bench.report.trials` table; scores are downloaded into
    ``scores_dir/<run_id>/``. A trial retried into two runs counts once (see
    `bench.tracking.reader`)."""
    rows = []
    for t in read_trials(tracking_uri, ref, scores_dir=scores_dir, history=HISTORY):
        n_cls = scores_num_classes(t.scores_path) if t.scores_path else None
        rows.append(row_from_record(config=t.config, tags=t.tags, final=t.final, history=t.history,
                                    status=t.status, run_id=t.run_id, trial_name=t.name,
                                    scores_path=t.scores_path, num_classes=n_cls))
    if not rows:
        raise SweepNotFound(f"sweep {ref.name!r} in experiment {ref.experiment_name!r} has no trial runs yet")
    return trials_frame(rows)


# Leaderboard column -> entry metric. Accuracies are percent (``_pct``), differences percentage
# points (``_pts``), as in the report's tables.
SINGLE_METRICS = {
    "top1": "top1_pct", "top1_std": "top1_std_pct", "top1_ci_low": "top1_ci_low_pct",
    "top1_ci_high": "top1_ci_high_pct", "top5": "top5_pct", "seeds": "seeds", "params": "params",
    "macs_per_clip": "macs_per_clip", "train_clips_per_s": "train_clips_per_s", "chance": "chance_pct",
    "trials": "trials", "vs_convlstm": "vs_convlstm_pts", "vs_a": "vs_a_pts", "paper": "paper_top1_pct",
    "clips": "clips", "vs_convlstm_prob": "vs_convlstm_prob_better", "vs_a_prob": "vs_a_prob_better",
    "vs_convlstm_p_holm": "vs_convlstm_p_holm", "vs_a_p_holm": "vs_a_p_holm",
}
# Fusion column -> entry metric; cost (params, macs_per_clip, train_clips_per_s) is derived from
# the fused modalities' own leaderboard rows (`_fused_cost`).
FUSION_METRICS = {
    "top1": "top1_pct", "top1_std": "top1_std_pct", "top1_ci_low": "top1_ci_low_pct",
    "top1_ci_high": "top1_ci_high_pct", "top5": "top5_pct", "seeds": "seeds",
    "best_single_top1": "best_single_top1_pct", "gain": "gain_pts", "gain_std": "gain_std_pts", "n": "clips",
    "gain_ci_low": "gain_ci_low_pts", "gain_ci_high": "gain_ci_high_pts", "prob_improvement": "prob_improvement",
    "p_holm": "p_holm",
}
SINGLE_IDENTITY = ("cell", "modality", "stage", "dataset", "data", "vs_convlstm_significant", "vs_a_significant")
FUSION_IDENTITY = ("cell", "stage", "dataset", "significant_seeds", "weights")


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if math.isnan(float(v)) else float(v)


def _pct_label(v: Any) -> str:
    x = _num(v)
    return "n/a" if x is None else f"{x:.1f}%"


def _fused_cost(singles: dict[tuple, dict[str, Any]], key: tuple, modalities: list[str],
                stages: str | None = None) -> dict[str, float]:
    """Cost of a late fusion: one network per modality, run one after the other -- parameters and
    Mult-Adds add up, clips/s is 1 / sum(1 / clips/s). Left out when a modality's row lacks it.
    ``stages`` ("rgb: finetune, depth: pretrain"): the stage that trained each modality, when
    the fusion spans stages (``key`` names the latest)."""
    per = dict(part.split(": ", 1) for part in (stages or "").split(", ") if ": " in part)
    dataset, stage, cell = key
    rows = [singles.get((dataset, per.get(m, stage), cell, m)) for m in modalities]
    if any(r is None for r in rows):
        return {}
    out: dict[str, float] = {}
    for col in ("params", "macs_per_clip"):
        vals = [_num(r.get(col)) for r in rows]
        if all(v is not None for v in vals):
            out[col] = float(sum(vals))
    speeds = [_num(r.get("train_clips_per_s")) for r in rows]
    if all(v is not None and v > 0 for v in speeds):
        out["train_clips_per_s"] = 1.0 / sum(1.0 / v for v in speeds)
    return out


def _data_of(report: Report) -> dict[tuple, dict[str, Any]]:
    """(dataset, stage, cell) -> the dataset its trials were validated on, as a trial config
    holds it (for the entries' dataset inputs): from the first selected trial of each."""
    sel = report.selected
    need = {"dataset", "stage", "cell", "dataset_format", "root"}
    if sel.is_empty() or not need <= set(sel.columns):
        return {}
    out: dict[tuple, dict[str, Any]] = {}
    for r in sel.iter_rows(named=True):
        key = (r["dataset"], r["stage"], r["cell"])
        if key not in out and r["dataset_format"] and r["root"]:
            out[key] = {"dataset": r["dataset_format"], "root": r["root"], "val_split": r.get("split") or "valid",
                        "sweep": {"dataset": r["dataset"]}}
    return out


def entries(report: Report) -> list[LeaderboardEntry]:
    """Every row of the report's leaderboard (``entry=single``) and of its fusion table
    (``entry=fusion``, rule and modality combination in the identity), as entry runs; named
    ``<cell>/<modality> <top-1>% <stage>`` and ``<cell>/<modalities> <top-1>% <rule> <stage>``.
    After a search, a single entry also holds what was selected (tag and param ``selected``: per
    seed, every searched key's value) and metrics ``search_trials`` and ``stopped_early``."""
    out: list[LeaderboardEntry] = []
    data = _data_of(report)
    singles: dict[tuple, dict[str, Any]] = {}
    searched = {(r["dataset"], r["stage"], r["cell"], r["modality"]): r
                for r in (report.search.iter_rows(named=True) if report.search.height else ())}
    for r in (report.leaderboard.iter_rows(named=True) if not report.leaderboard.is_empty() else ()):
        singles[(r.get("dataset"), r.get("stage"), r.get("cell"), r.get("modality"))] = r
        identity = {"entry": "single", **{k: r[k] for k in SINGLE_IDENTITY if k in r and r[k] is not None},
                    "rule": "none"}
        metrics = {m: _num(r.get(col)) for col, m in SINGLE_METRICS.items() if _num(r.get(col)) is not None}
        won = searched.get((r.get("dataset"), r.get("stage"), r.get("cell"), r.get("modality")))
        if won is not None:      # a search: what each seed's study selected, with every searched key
            identity["selected"] = won["selected"]
            metrics |= {"search_trials": float(won["trials"]), "stopped_early": float(won["stopped_early"])}
        out.append(LeaderboardEntry(name=f"{r['cell']}/{r['modality']} {_pct_label(r.get('top1'))} {r['stage']}",
                                    identity=identity, metrics=metrics,
                                    data=data.get((r.get("dataset"), r.get("stage"), r.get("cell")))))
    for r in (report.fusion.iter_rows(named=True) if not report.fusion.is_empty() else ()):
        mods = str(r["modalities"])
        key = (r.get("dataset"), r.get("stage"), r.get("cell"))
        first = singles.get((*key, mods.split("+")[0]), {})
        identity = {"entry": "fusion", "modality": mods, "rule": r["rule"],
                    **{k: r[k] for k in FUSION_IDENTITY if k in r and r[k] not in (None, "")}}
        if first.get("data"):
            identity["data"] = first["data"]
        metrics = {m: _num(r.get(col)) for col, m in FUSION_METRICS.items() if _num(r.get(col)) is not None}
        metrics.update(_fused_cost(singles, key, mods.split("+"), r.get("stages")))
        out.append(LeaderboardEntry(
            name=f"{r['cell']}/{mods} {_pct_label(r.get('top1'))} {r['rule']} {r['stage']}",
            identity=identity, metrics=metrics, data=data.get(key)))
    return out


def log_leaderboard(tracking_uri: str, report: Report, out_dir: str | Path, *, experiment: str,
                    sweep_id: str = "", summary_md: str = "") -> tuple[str, str]:
    """Write the leaderboard run of ``report`` (its files are in ``out_dir``) and, under it, one
    entry run per leaderboard and fusion row (`entries`); returns ``(experiment_id, run_id)`` of
    the leaderboard run. Its metric ``best_top1`` (the leaderboard's best mean top-1); params
    ``num_trials``, ``num_selected``, ``num_entries``."""
    metrics = {}
    if not report.leaderboard.is_empty():
        best = report.leaderboard.sort("top1", descending=True).row(0, named=True)
        metrics["best_top1"] = float(best["top1"])
    rows = entries(report)
    stamp = report_time()
    exp_id, run_id = write_leaderboard_run(
        tracking_uri, experiment=experiment, sweep=report.sweep, sweep_id=sweep_id, source=report.source,
        report_dir=out_dir, tables=report.tables(), metrics=metrics,
        params={"num_trials": report.trials.height, "num_selected": report.selected.height,
                "num_entries": len(rows)},
        summary_md=summary_md, stamp=stamp)
    write_leaderboard_entries(tracking_uri, experiment=experiment, leaderboard_run_id=run_id, sweep=report.sweep,
                              sweep_id=sweep_id, stamp=stamp, entries=rows)
    return exp_id, run_id
