"""Idempotent MLflow writes for sweeps: every operation can be repeated without duplicating.

Why keyed by tags rather than remembered run ids: a sweep's driver may be killed and resumed,
a trial retried, or the whole record replayed by `bench sync` into another store. Each of
them finds "its" run again by the tags ``sweep_id`` + ``trial_name`` (Ray's
MLflowLoggerCallback opens a fresh run on restore), and logs an epoch's metrics only
when that epoch (the ``epoch`` metric's step) is not there yet, so no epoch is lost or
logged twice whatever was interrupted where.

The run layout (tag names, kinds, how params are flattened) is `bench.tracking.records`'s;
this module only writes it. Every experiment it creates or writes to is tagged as a model
training experiment (``mlflow.experimentKind``), so MLflow 3's UI opens it on the runs table.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from bench.storage import RemotePath, local_copy
from bench.tracking import records
from bench.tracking.records import EPOCH_METRIC, param_strings
from bench.tracking.uri import sqlite_path

# Tune's own bookkeeping in a result dict: not metrics of the model.
TUNE_KEYS = frozenset({
    "timestamp", "pid", "training_iteration", "iterations_since_restore", "time_since_restore",
    "time_this_iter_s", "time_total_s", "done", "should_checkpoint", "trial_id", "date",
    "hostname", "node_ip", "config", "checkpoint_dir_name", "experiment_tag",
})
EPOCH_KEY = EPOCH_METRIC
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def quote(v: str) -> str:
    """``v`` as a string literal of MLflow's search filter syntax."""
    return "'" + str(v).replace("'", "\\'") + "'"


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite-or-NaN model metrics of one Tune result (bookkeeping dropped)."""
    out: dict[str, float] = {}
    for k, v in result.items():
        if k in TUNE_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and math.isinf(v):
            continue
        out[k] = float(v)
    return out


def _view_tags() -> dict[str, str]:
    import json

    return {records.VIEW_TAG_PREFIX + k: json.dumps(v, separators=(",", ":")) for k, v in records.ui_views().items()}


class Tracker:
    """One MLflow experiment, written through ``MlflowClient`` (no fluent global state: the
    Tune driver logs many trials at once)."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._exp_id: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import logging

            from mlflow.tracking import MlflowClient  # heavy

            # "Creating initial MLflow database tables..." on every new SQLite store
            for name in ("mlflow.store.db.utils", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- experiment and runs

    @property
    def experiment_id(self) -> str:
        if self._exp_id is None:
            from mlflow.exceptions import MlflowException  # heavy

            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = None
                db = sqlite_path(self.tracking_uri)
                if db is not None:
                    # artifacts beside the database, wherever the command runs from
                    location = (db.parent / "mlruns" / self.experiment).as_uri()
                try:
                    self._exp_id = self.client.create_experiment(
                        self.experiment, artifact_location=location,
                        tags={records.EXPERIMENT_KIND_TAG: records.EXPERIMENT_KIND, **_view_tags()})
                except MlflowException:          # created concurrently
                    exp = self.client.get_experiment_by_name(self.experiment)
                    self._exp_id = exp.experiment_id
                    self._mark_kind(exp)
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._exp_id = exp.experiment_id
                self._mark_kind(exp)
        return self._exp_id

    def _mark_kind(self, exp: Any) -> None:
        """Tag an experiment made elsewhere (or before this tag existed) as model training; a kind
        someone chose on purpose (the UI's toggle writes the same tag) is left alone. Store the
        suite's views of its runs table (`records.ui_views`) where they are missing or older."""
        tags = exp.tags or {}
        kind = tags.get(records.EXPERIMENT_KIND_TAG, "")
        if not kind or kind.endswith("_inferred") or kind == "no_inferred_type":
            self.client.set_experiment_tag(exp.experiment_id, records.EXPERIMENT_KIND_TAG, records.EXPERIMENT_KIND)
        for key, value in _view_tags().items():
            if tags.get(key) != value:
                self.client.set_experiment_tag(exp.experiment_id, key, value)

    def find_runs(self, **tags: str) -> list[Any]:
        flt = " and ".join(f"tags.{k} = {quote(v)}" for k, v in tags.items())
        return self.client.search_runs([self.experiment_id], flt, max_results=1000,
                                       order_by=["attributes.start_time ASC"])

    def ensure_run(self, *, key: Mapping[str, str], tags: Mapping[str, str], run_name: str,
                   running: bool = True) -> tuple[str, bool]:
        """(run_id, created): the run whose tags match ``key``, created when there is none.

        ``running``: mark an existing run RUNNING again (a resumed trial), so that a run left
        RUNNING by a killed driver and then finished reads FINISHED in the end."""
        runs = self.find_runs(**key)
        if runs:
            run = runs[0]                 # the earliest, should an older tool have made two
            run_id = run.info.run_id
            if running and run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            self.set_tags(run_id, {k: v for k, v in tags.items() if run.data.tags.get(k) != str(v)})
            return run_id, False
        run = self.client.create_run(self.experiment_id, tags={**tags, **key}, run_name=run_name)
        if not running:
            self.client.update_run(run.info.run_id, status="SCHEDULED")
        return run.info.run_id, True

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag  # heavy

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> list[str]:
        """Log the params not yet on the run; return the keys whose stored value differs
        (MLflow params are immutable, so a changed value is reported, not written)."""
        from mlflow.entities import Param  # heavy

        existing = self.client.get_run(run_id).data.params
        flat = param_strings(params)
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        conflicts = [k for k, v in flat.items() if k in existing and existing[k] != v]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])
        return conflicts

    def set_status(self, run_id: str, status: str) -> None:
        if status in TERMINAL:
            self.client.set_terminated(run_id, status)
        else:
            self.client.update_run(run_id, status=status)

    # -- metrics and artifacts

    def logged_epochs(self, run_id: str) -> set[int]:
        return {int(m.step) for m in self.client.get_metric_history(run_id, EPOCH_KEY)}

    def log_epoch(self, run_id: str, result: Mapping[str, Any]) -> None:
        """One epoch's metrics with ``step=epoch``; the ``epoch`` metric goes LAST in the batch:
        it is what marks the epoch as logged."""
        from mlflow.entities import Metric  # heavy

        step = int(result[EPOCH_KEY])
        ts = int(float(result.get("timestamp") or time.time()) * 1000)
        metrics = epoch_metrics(result)
        metrics.pop(EPOCH_KEY, None)
        metrics.update(records.pct_metrics({k: v for k, v in metrics.items() if not math.isnan(v)}))
        batch = [Metric(k, v, ts, step) for k, v in sorted(metrics.items())]
        batch.append(Metric(EPOCH_KEY, float(step), ts, step))
        self.client.log_batch(run_id, metrics=batch)

    def log_epochs(self, run_id: str, results: Iterable[Mapping[str, Any]], done: set[int]) -> list[int]:
        """Log every result whose epoch is not in ``done`` (updated in place); returns the epochs
        written. A repeated epoch (a trial re-running it after a restore) keeps its first record."""
        written: list[int] = []
        for r in results:
            ep = r.get(EPOCH_KEY)
            if ep is None or int(ep) in done:
                continue
            self.log_epoch(run_id, r)
            done.add(int(ep))
            written.append(int(ep))
        return written

    def log_summary(self, run_id: str) -> None:
        """``best_val_top1`` / ``best_epoch`` at the last step, from the run's own history (a
        resumed driver only holds the epochs it saw): what a leaderboard sorts on."""
        from mlflow.entities import Metric  # heavy

        hist = [m for m in self.client.get_metric_history(run_id, "val_top1") if not math.isnan(m.value)]
        if not hist:
            return
        best = max(hist, key=lambda m: (m.value, -m.step))
        last = max(m.step for m in hist)
        ts = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[
            Metric("best_val_top1", float(best.value), ts, last),
            Metric("best_val_top1" + records.PCT_SUFFIX, round(100.0 * float(best.value), records.PCT_DIGITS), ts, last),
            Metric("best_epoch", float(best.step), ts, last)])

    def name_run(self, run_id: str, config: Mapping[str, Any]) -> str:
        """Rename a trial's run to `records.trial_run_name` with its latest ``val_top1`` (the last
        epoch's: what the report ranks on); returns the name."""
        run = self.client.get_run(run_id)
        top1 = run.data.metrics.get(records.TOP1_METRIC)
        name = records.trial_run_name(config, top1)
        if run.info.run_name != name:
            self.client.update_run(run_id, name=name)
        return name

    def log_datasets(self, run_id: str, config: Mapping[str, Any], splits: Iterable[str] | None = None) -> int:
        """The trial's splits (or ``splits``) as MLflow dataset inputs (`bench.tracking.datasets`);
        returns how many. MLflow keeps one record per dataset and per run input, so repeating
        this is harmless."""
        from bench.tracking.datasets import dataset_inputs, trial_datasets

        refs = trial_datasets(config, None if splits is None else list(splits))
        if refs:
            self.client.log_inputs(run_id, datasets=dataset_inputs(refs))
        return len(refs)

    def log_artifacts(self, run_id: str, files: Iterable[Path | RemotePath]) -> list[str]:
        """Log each file that exists (from a bucket through a temporary local copy)."""
        logged = []
        for f in files:
            if f.is_file():
                with local_copy(f) as local:
                    self.client.log_artifact(run_id, str(local))
                logged.append(f.name)
        return logged

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)
