"""The report's side of MLflow: a sweep's trials as the report's table, the report as a
leaderboard run.

Everything that talks to MLflow or knows its run layout is `bench.tracking`'s: finding the
sweep and reading its trial runs, typed (`bench.tracking.reader`), and writing the leaderboard
run (`bench.tracking.leaderboard`). This module only turns their records into
`bench.report.trials` rows and a `Report` into the tables, metric and params of that run.
It imports no mlflow.

`client`, `find_sweep`, `latest_leaderboard`, `SweepRef` and `SweepNotFound` are re-exported
under their old names for the callers that still import them from here (``bench report``,
``bench ui``, ``bench viz``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from bench.errors import SweepNotFound
from bench.report.trials import row_from_record, scores_num_classes, trials_frame
from bench.tracking.leaderboard import latest_leaderboard, write_leaderboard_run
from bench.tracking.reader import SweepRef, client, find_sweep, read_trials

if TYPE_CHECKING:
    from bench.report.build import Report

__all__ = ["HISTORY", "SweepNotFound", "SweepRef", "client", "find_sweep", "latest_leaderboard",
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


def log_leaderboard(tracking_uri: str, report: Report, out_dir: str | Path, *, experiment: str,
                    sweep_id: str = "", summary_md: str = "") -> tuple[str, str]:
    """Write the leaderboard run of ``report`` (its files are in ``out_dir``); returns
    ``(experiment_id, run_id)``. Metric ``best_top1`` (the leaderboard's best mean top-1);
    params ``num_trials``, ``num_selected``."""
    metrics = {}
    if not report.leaderboard.is_empty():
        best = report.leaderboard.sort("top1", descending=True).row(0, named=True)
        metrics["best_top1"] = float(best["top1"])
    return write_leaderboard_run(
        tracking_uri, experiment=experiment, sweep=report.sweep, sweep_id=sweep_id, source=report.source,
        report_dir=out_dir, tables=report.tables(), metrics=metrics,
        params={"num_trials": report.trials.height, "num_selected": report.selected.height},
        summary_md=summary_md)
