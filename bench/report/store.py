"""The report's side of MLflow: read a sweep's trial runs, write the leaderboard run.

The run layout is `bench.tracking`'s (see `bench.tracking.store`): one parent run per sweep
(``bench.kind=sweep``, ``sweep``, ``sweep_id``), nested trial runs (``mlflow.parentRunId``,
``sweep``, ``trial_name``, ``cell``, ``modality``, ``seed``, ``dataset``, ``stage``,
``preset``, ``synthetic``; params = the trial config, ``sweep.*`` flattened; metrics per epoch
with ``step=epoch``; artifact ``val_scores.parquet`` of the final epoch).

The leaderboard is a run of its own in the sweep's experiment, so the MLflow UI shows it next
to the trials: tags ``leaderboard=true``, ``sweep``, ``sweep_id``; the report folder (Markdown,
self-contained HTML, figures, CSV) as artifacts under ``report/``; each table again through
``MlflowClient.log_table`` under ``tables/`` (pandas: MLflow rejects polars), which the UI's
artifact view renders as a sortable table; and a Markdown summary as the run's description
(``mlflow.note.content``). Every ``bench report`` writes a new leaderboard run (``log_table``
appends to an existing file, so rewriting one in place would duplicate rows); the newest is
the one `latest_leaderboard` and ``bench ui`` point at.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from bench.errors import SweepNotFound
from bench.report.trials import row_from_record, scores_num_classes, trials_frame

if TYPE_CHECKING:
    from bench.report.build import Report

VAL_SCORES = "val_scores.parquet"
LEADERBOARD_TAG = "leaderboard"


@dataclass
class SweepRef:
    name: str
    sweep_id: str
    experiment_id: str
    experiment_name: str
    parent_run_ids: list[str]


def client(tracking_uri: str) -> Any:
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # no bar per score file

    return MlflowClient(tracking_uri=tracking_uri)


def _quote(v: str) -> str:
    return "'" + str(v).replace("'", "\\'") + "'"


def _search(c: Any, exp_ids: list[str], flt: str) -> list[Any]:
    out, token = [], None
    while True:
        page = c.search_runs(exp_ids, flt, max_results=1000, page_token=token,
                             order_by=["attributes.start_time ASC"])
        out.extend(page)
        token = page.token
        if not token:
            return out


def _is_trial(run: Any) -> bool:
    t = run.data.tags
    return (t.get("bench.kind") == "trial" or ("cell" in t and "modality" in t)) and \
        t.get(LEADERBOARD_TAG) != "true" and t.get("bench.kind") != "sweep"


def _is_parent(run: Any) -> bool:
    t = run.data.tags
    return t.get("bench.kind") == "sweep" or ("sweep" in t and not _is_trial(run) and t.get(LEADERBOARD_TAG) != "true")


def find_sweep(tracking_uri: str, *, sweep: str | None = None, experiment: str | None = None) -> SweepRef:
    """The sweep to report on: by name, else the newest sweep in ``experiment`` (or anywhere).

    A sweep run twice under one name (two ``sweep_id``) reports the newest and says so."""
    c = client(tracking_uri)
    if experiment:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in c.search_experiments())
            raise SweepNotFound(f"no MLflow experiment {experiment!r} in {tracking_uri} (there are: {names})")
        exps = [exp]
    else:
        exps = list(c.search_experiments())
    ids = [e.experiment_id for e in exps]
    names = {e.experiment_id: e.name for e in exps}
    if not ids:
        raise SweepNotFound(f"the tracking store {tracking_uri} holds no experiments")
    flt = f"tags.sweep = {_quote(sweep)}" if sweep else "tags.sweep != ''"
    runs = _search(c, ids, flt)
    parents = [r for r in runs if _is_parent(r)]
    trials = [r for r in runs if _is_trial(r)]
    if not trials and not parents:
        known = sorted({r.data.tags.get("sweep", "") for r in _search(c, ids, "tags.sweep != ''")} - {""})
        what = f"sweep {sweep!r}" if sweep else "any sweep"
        raise SweepNotFound(f"no runs of {what} in {tracking_uri}"
                            + (f" experiment {experiment!r}" if experiment else "")
                            + (f"; sweeps there: {known}" if known else "; it holds no sweep runs"))
    newest = max(parents or trials, key=lambda r: r.info.start_time or 0)
    name = sweep or newest.data.tags.get("sweep", "")
    sweep_id = newest.data.tags.get("sweep_id", "")
    others = sorted({r.data.tags.get("sweep_id", "") for r in parents if r.data.tags.get("sweep") == name}
                    - {sweep_id, ""})
    if others:
        print(f"bench report: sweep {name!r} was run {len(others) + 1} times; reporting the newest "
              f"(sweep_id {sweep_id}; older: {', '.join(others)})")
    chosen = [r for r in parents if r.data.tags.get("sweep") == name
              and r.data.tags.get("sweep_id", "") == sweep_id]
    exp_id = newest.info.experiment_id
    return SweepRef(name=name, sweep_id=sweep_id, experiment_id=exp_id, experiment_name=names.get(exp_id, ""),
                    parent_run_ids=[r.info.run_id for r in chosen])


def _config_from_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow params are flat strings (``sweep.name``); nest the ``sweep.*`` keys back."""
    cfg: dict[str, Any] = {}
    for k, v in params.items():
        if k.startswith("sweep."):
            cfg.setdefault("sweep", {})[k[len("sweep."):]] = v
        else:
            cfg[k] = v
    return cfg


def _find_artifact(c: Any, run_id: str, name: str, path: str | None = None, depth: int = 2) -> str | None:
    try:
        items = c.list_artifacts(run_id, path)
    except Exception:  # noqa: BLE001 -- an unreachable artifact store: the trial has no scores
        return None
    for a in items:
        if not a.is_dir and Path(a.path).name == name:
            return a.path
    if depth > 0:
        for a in items:
            if a.is_dir:
                found = _find_artifact(c, run_id, name, a.path, depth - 1)
                if found:
                    return found
    return None


def load_trials_mlflow(tracking_uri: str, ref: SweepRef, *, scores_dir: str | Path) -> pl.DataFrame:
    """The sweep's trial runs as a `bench.report.trials` table; scores are downloaded into
    ``scores_dir/<run_id>/``. A trial retried into two runs (same ``trial_name``) counts once:
    the one that got furthest."""
    c = client(tracking_uri)
    flt = f"tags.sweep = {_quote(ref.name)}"
    runs = [r for r in _search(c, [ref.experiment_id], flt) if _is_trial(r)]
    for pid in ref.parent_run_ids:       # trials that carry only the parent link
        runs.extend(r for r in _search(c, [ref.experiment_id], f"tags.mlflow.parentRunId = {_quote(pid)}")
                    if _is_trial(r))
    by_id = {r.info.run_id: r for r in runs}
    if ref.sweep_id:
        by_id = {k: r for k, r in by_id.items() if r.data.tags.get("sweep_id", ref.sweep_id) == ref.sweep_id}
    by_trial: dict[str, Any] = {}
    for r in by_id.values():
        name = r.data.tags.get("trial_name") or r.info.run_name or r.info.run_id
        prev = by_trial.get(name)
        if prev is None or r.data.metrics.get("epoch", -1) > prev.data.metrics.get("epoch", -1):
            by_trial[name] = r
    scores_dir = Path(scores_dir)
    rows = []
    for name, r in sorted(by_trial.items()):
        rid = r.info.run_id
        history = {k: [m.value for m in sorted(c.get_metric_history(rid, k), key=lambda m: m.step)]
                   for k in ("val_top1", "train_clips_per_s")}
        art = _find_artifact(c, rid, VAL_SCORES)
        local = None
        if art:
            dest = scores_dir / rid
            dest.mkdir(parents=True, exist_ok=True)
            local = Path(c.download_artifacts(rid, art, str(dest)))
        config = _config_from_params(r.data.params)
        n_cls = scores_num_classes(local) if local else None
        rows.append(row_from_record(config=config, tags=r.data.tags, final=r.data.metrics, history=history,
                                    status=r.info.status, run_id=rid, trial_name=name, scores_path=local,
                                    num_classes=n_cls))
    if not rows:
        raise SweepNotFound(f"sweep {ref.name!r} in experiment {ref.experiment_name!r} has no trial runs yet")
    return trials_frame(rows)


# ----------------------------------------------------------------------------- writing

def _for_mlflow(df: pl.DataFrame) -> Any:
    """A pandas frame MLflow's table view can show: NaN -> None (JSON null), floats rounded."""
    import pandas as pd

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


def log_leaderboard(tracking_uri: str, report: "Report", out_dir: str | Path, *, experiment: str,
                    sweep_id: str = "", summary_md: str = "") -> tuple[str, str]:
    """Write the leaderboard run; returns ``(experiment_id, run_id)``."""
    from bench.tracking.meta import provenance_tags
    from bench.tracking.store import Tracker

    tracker = Tracker(tracking_uri, experiment)   # creates the experiment beside the store if needed
    c = tracker.client
    tags = {LEADERBOARD_TAG: "true", "sweep": report.sweep, "sweep_id": sweep_id, "bench.kind": "leaderboard",
            "source": report.source[:5000], **provenance_tags()}
    if summary_md:
        tags["mlflow.note.content"] = summary_md[:60000]
    run = c.create_run(tracker.experiment_id, tags=tags,
                       run_name=f"leaderboard-{report.sweep}-{time.strftime('%Y%m%d-%H%M%S')}")
    rid = run.info.run_id
    try:
        c.log_artifacts(rid, str(out_dir), "report")
        for name, df in report.tables().items():
            if df.width:
                c.log_table(rid, _for_mlflow(df), f"tables/{name}.json")
        if not report.leaderboard.is_empty():
            best = report.leaderboard.sort("top1", descending=True).row(0, named=True)
            c.log_metric(rid, "best_top1", float(best["top1"]))
        c.log_param(rid, "num_trials", report.trials.height)
        c.log_param(rid, "num_selected", report.selected.height)
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
    flt = f"tags.{LEADERBOARD_TAG} = 'true'" + (f" and tags.sweep = {_quote(sweep)}" if sweep else "")
    runs = c.search_runs(ids, flt, max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        return None
    r = runs[0]
    return r.info.experiment_id, r.info.run_id, r.info.run_name
