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

The leaderboard as MLflow's own runs table: each row of it (an aggregated cell x modality, or a
fusion of modalities) is written by `write_leaderboard_entries` as a run of its own, a child
of the leaderboard run, with its numbers as metrics, so that the UI sorts, compares and charts
them. They carry ``bench.kind=leaderboard_entry``, the sweep's name and id, the leaderboard
run's id and the report's time; ``latest=true`` only on the newest report's entries of a sweep
(the older ones are set to ``false`` when a new report is logged), so
`bench.tracking.records.LEADERBOARD_FILTER` shows one set, the newest, however often
``bench report`` ran.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from bench.tracking import records
from bench.tracking.reader import client
from bench.tracking.store import Tracker, quote

# The metric a leaderboard entry ranks on: its mean top-1 over seeds, in percent.
ENTRY_SORT_METRIC = "top1_pct"


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


def report_time() -> str:
    """``YYYYmmdd-HHMMSS``, local time: a report's stamp (run name, ``report_time`` tag)."""
    return time.strftime("%Y%m%d-%H%M%S")


def write_leaderboard_run(tracking_uri: str, *, experiment: str, sweep: str, sweep_id: str = "",
                          source: str = "", report_dir: str | Path, tables: Mapping[str, pl.DataFrame],
                          metrics: Mapping[str, float] | None = None, params: Mapping[str, Any] | None = None,
                          summary_md: str = "", stamp: str | None = None) -> tuple[str, str]:
    """Write one leaderboard run; returns ``(experiment_id, run_id)``.

    ``report_dir`` goes under ``report/``, each non-empty table to ``tables/<name>.json``. The
    run ends FINISHED, or FAILED (and the error is raised) if any of it could not be logged.
    ``stamp`` (`report_time`, the default) names the run and is its ``report_time`` tag."""
    tracker = Tracker(tracking_uri, experiment)   # creates the experiment beside the store if needed
    c = tracker.client
    stamp = stamp or report_time()
    tags = records.leaderboard_tags(sweep=sweep, sweep_id=sweep_id, source=source, summary_md=summary_md,
                                    report_time=stamp)
    run = c.create_run(tracker.experiment_id, tags=tags, run_name=records.leaderboard_run_name(sweep, stamp))
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


@dataclass
class LeaderboardEntry:
    """One row of a leaderboard, as the run `write_leaderboard_entries` makes of it.

    ``identity``: what the row is (``cell``, ``modality``, ``rule``, ``stage``, ...), written as
    tags and params; ``metrics``: its numbers (NaN and None are left out: MLflow would show
    them as values); ``data``: the dataset its numbers were measured on, as a trial config
    holds it (``dataset`` format, ``root``, ``sweep.dataset``) with the split in ``val_split``,
    logged as the run's dataset input (`bench.tracking.datasets`)."""

    name: str
    identity: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] | None = None


def write_leaderboard_entries(tracking_uri: str, *, experiment: str, leaderboard_run_id: str, sweep: str,
                              sweep_id: str = "", stamp: str = "", entries: list[LeaderboardEntry]) -> list[str]:
    """One FINISHED run per entry, nested under ``leaderboard_run_id``, tagged ``latest=true``;
    then the older entries of ``sweep`` are set ``latest=false``. Returns the new run ids."""
    from mlflow.entities import Metric, Param, RunTag  # heavy

    tracker = Tracker(tracking_uri, experiment)
    c = tracker.client
    ts = int(time.time() * 1000)
    ids = []
    for e in entries:
        tags = records.entry_tags(sweep=sweep, sweep_id=sweep_id, leaderboard_run_id=leaderboard_run_id,
                                  report_time=stamp, identity=e.identity)
        run = c.create_run(tracker.experiment_id, tags=tags, run_name=e.name)
        rid = run.info.run_id
        try:
            metrics = [Metric(k, _shown(k, float(v)), ts, 0) for k, v in e.metrics.items()
                       if v is not None and not (isinstance(v, float) and math.isnan(v))]
            params = [Param(k, str(v)[:records.MAX_PARAM_LEN]) for k, v in e.identity.items()]
            c.log_batch(rid, metrics=metrics, params=params)
            if e.data:
                tracker.log_datasets(rid, e.data, splits=[str(e.data.get("val_split") or "valid")])
            c.set_terminated(rid, "FINISHED")
        except Exception:
            c.set_terminated(rid, "FAILED")
            raise
        ids.append(rid)
    new = set(ids)
    flt = (f"tags.{records.KIND_TAG} = {quote(records.KIND_ENTRY)} and tags.{records.SWEEP_TAG} = {quote(sweep)} "
           f"and tags.{records.LATEST_TAG} = 'true'")
    for r in _all_runs(c, [tracker.experiment_id], flt):
        if r.info.run_id not in new:
            c.log_batch(r.info.run_id, tags=[RunTag(records.LATEST_TAG, "false")])
    return ids


def _shown(key: str, v: float) -> float:
    """Percent and percentage-point metrics rounded as trial runs' are (`records.PCT_DIGITS`); the
    leaderboard tables keep the report's own digits."""
    return round(v, records.PCT_DIGITS) if key.endswith(("_pct", "_pts")) else v


def _all_runs(c: Any, exp_ids: list[str], flt: str) -> list[Any]:
    out, token = [], None
    while True:
        page = c.search_runs(exp_ids, flt, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def latest_entries(tracking_uri: str, *, sweep: str | None = None, experiment_id: str | None = None) -> list[Any]:
    """The runs `records.LEADERBOARD_FILTER` shows (of ``sweep`` only, if given), best top-1 first."""
    c = client(tracking_uri)
    ids = [experiment_id] if experiment_id else [e.experiment_id for e in c.search_experiments()]
    if not ids:
        return []
    flt = records.LEADERBOARD_FILTER + (f" and tags.{records.SWEEP_TAG} = {quote(sweep)}" if sweep else "")
    return c.search_runs(ids, flt, max_results=1000, order_by=[f"metrics.{ENTRY_SORT_METRIC} DESC"])
