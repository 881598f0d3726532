"""The leaderboard run: a report of a sweep, recorded in MLflow next to the sweep's trials.

A run of its own in the sweep's experiment, so the MLflow UI shows it beside the trials: tags
``leaderboard=true``, ``sweep``, ``sweep_id`` (`bench.tracking.records.leaderboard_tags`); the
report folder (Markdown, self-contained HTML, figures, CSV) as artifacts under ``report/``;
each table again through ``MlflowClient.log_table`` under ``tables/`` (pandas: MLflow rejects
polars), which the UI's artifact view renders as a sortable table; and a Markdown summary as
the run's description (``mlflow.note.content``).

Every report writes a new leaderboard run (``log_table`` appends to an existing file, so
rewriting one in place would duplicate rows); the newest is the one `latest_leaderboard`
and ``bench ui`` point at. What goes into the report is `bench.report`'s business: this
module takes finished tables, metrics and params.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from bench.tracking import records
from bench.tracking.reader import client
from bench.tracking.store import Tracker, quote


def table_for_mlflow(df: pl.DataFrame) -> Any:
    """A pandas frame MLflow's table view can show: NaN -> None (JSON null), floats rounded."""
    import pandas as pd  # heavy

    cols = {}
    for name, dtype in df.schema.items():
        s = df[name]
        if dtype.is_float():
            cols[name] = [None if v is None or math.isnan(v) else round(v, 4) for v in s.to_list()]
        elif dtype.is_numeric() or dtype == pl.Boolean:
            cols[name] = s.to_list()
        else:
            cols[name] = [None if v is None else str(v) for v in s.to_list()]
    return pd.DataFrame(cols, dtype=object) if cols else pd.DataFrame()


def write_leaderboard_run(tracking_uri: str, *, experiment: str, sweep: str, sweep_id: str = "",
                          source: str = "", report_dir: str | Path, tables: Mapping[str, pl.DataFrame],
                          metrics: Mapping[str, float] | None = None, params: Mapping[str, Any] | None = None,
                          summary_md: str = "") -> tuple[str, str]:
    """Write one leaderboard run; returns ``(experiment_id, run_id)``.

    ``report_dir`` goes under ``report/``, each non-empty table to ``tables/<name>.json``. The
    run ends FINISHED, or FAILED (and the error is raised) if any of it could not be logged."""
    tracker = Tracker(tracking_uri, experiment)   # creates the experiment beside the store if needed
    c = tracker.client
    tags = records.leaderboard_tags(sweep=sweep, sweep_id=sweep_id, source=source, summary_md=summary_md)
    run = c.create_run(tracker.experiment_id, tags=tags,
                       run_name=records.leaderboard_run_name(sweep, time.strftime("%Y%m%d-%H%M%S")))
    rid = run.info.run_id
    try:
        c.log_artifacts(rid, str(report_dir), records.REPORT_DIR)
        for name, df in tables.items():
            if df.width:
                c.log_table(rid, table_for_mlflow(df), f"{records.TABLES_DIR}/{name}.json")
        for k, v in (metrics or {}).items():
            c.log_metric(rid, k, float(v))
        for k, v in (params or {}).items():
            c.log_param(rid, k, v)
        c.set_terminated(rid, "FINISHED")
    except Exception:
        c.set_terminated(rid, "FAILED")
        raise
    return tracker.experiment_id, rid


def latest_leaderboard(tracking_uri: str, *, sweep: str | None = None) -> tuple[str, str, str] | None:
    """``(experiment_id, run_id, run_name)`` of the newest leaderboard run, or None."""
    c = client(tracking_uri)
    ids = [e.experiment_id for e in c.search_experiments()]
    if not ids:
        return None
    flt = f"tags.{records.LEADERBOARD_TAG} = 'true'" + (f" and tags.{records.SWEEP_TAG} = {quote(sweep)}"
                                                         if sweep else "")
    runs = c.search_runs(ids, flt, max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        return None
    r = runs[0]
    return r.info.experiment_id, r.info.run_id, r.info.run_name
