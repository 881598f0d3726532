"""Reading a sweep back out of MLflow: which sweep, its trial runs typed, their score files.

The other half of `bench.tracking.store`: what the sweep's writers recorded (the layout of
`bench.tracking.records`) is decoded here, once, so that `bench report` gets plain typed
records and never sees MLflow's entities, its filter syntax or its all-strings params.

Which runs count:
- a sweep is found by its ``sweep`` tag; run twice under one name (two ``sweep_id``), the
  newest execution is read, and a line says so;
- its trials are the trial runs carrying that name, plus those that carry only the link to a
  parent run of it (``mlflow.parentRunId``);
- a trial retried into two runs (same ``trial_name``) counts once: the one that got furthest
  (the highest ``epoch`` metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bench.errors import SweepNotFound
from bench.tracking import records
from bench.tracking.store import quote


@dataclass
class SweepRef:
    """One execution of a sweep in a store: where its runs are."""

    name: str
    sweep_id: str
    experiment_id: str
    experiment_name: str
    parent_run_ids: list[str]


@dataclass
class TrialRun:
    """A trial as MLflow holds it, decoded: nothing here needs MLflow to be read further."""

    run_id: str
    name: str                               # ``trial_name`` tag, else the run's name
    status: str                             # MLflow's: FINISHED, FAILED, RUNNING, ...
    config: dict[str, Any]                  # `records.parse_trial_params` of the run's params
    tags: dict[str, Any]                    # `records.parse_trial_tags` of the run's tags
    final: dict[str, float]                 # each metric's last value
    history: dict[str, list[float]] = field(default_factory=dict)   # asked-for metrics, by step
    scores_path: Path | None = None         # the downloaded ``val_scores.parquet``, if it has one


def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri`` (no progress bar per downloaded score file)."""
    import os

    from mlflow.tracking import MlflowClient  # heavy

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(tracking_uri=tracking_uri)


def training_experiments(tracking_uri: str) -> list[tuple[str, str]]:
    """``(experiment_id, name)`` of the experiments tagged as model training
    (`records.EXPERIMENT_KIND_TAG`: the suite's), oldest first."""
    c = client(tracking_uri)
    exps = c.search_experiments(filter_string=f"tags.`{records.EXPERIMENT_KIND_TAG}` = {quote(records.EXPERIMENT_KIND)}")
    return sorted(((e.experiment_id, e.name) for e in exps), key=lambda x: int(x[0]) if x[0].isdigit() else 0)


def _search(c: Any, exp_ids: list[str], flt: str) -> list[Any]:
    """Every run matching ``flt``, oldest first, across result pages."""
    out, token = [], None
    while True:
        page = c.search_runs(exp_ids, flt, max_results=1000, page_token=token,
                             order_by=["attributes.start_time ASC"])
        out.extend(page)
        token = page.token
        if not token:
            return out


def find_sweep(tracking_uri: str, *, sweep: str | None = None, experiment: str | None = None) -> SweepRef:
    """The sweep to read: by name, else the newest sweep in ``experiment`` (or anywhere).

    A sweep run twice under one name (two ``sweep_id``) reads the newest and says so."""
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
    tag = records.SWEEP_TAG
    flt = f"tags.{tag} = {quote(sweep)}" if sweep else f"tags.{tag} != ''"
    runs = _search(c, ids, flt)
    parents = [r for r in runs if records.is_parent(r.data.tags)]
    trials = [r for r in runs if records.is_trial(r.data.tags)]
    if not trials and not parents:
        known = sorted({r.data.tags.get(tag, "") for r in _search(c, ids, f"tags.{tag} != ''")} - {""})
        what = f"sweep {sweep!r}" if sweep else "any sweep"
        raise SweepNotFound(f"no runs of {what} in {tracking_uri}"
                            + (f" experiment {experiment!r}" if experiment else "")
                            + (f"; sweeps there: {known}" if known else "; it holds no sweep runs"))
    newest = max(parents or trials, key=lambda r: r.info.start_time or 0)
    name = sweep or newest.data.tags.get(tag, "")
    sweep_id = newest.data.tags.get(records.SWEEP_KEY, "")
    others = sorted({r.data.tags.get(records.SWEEP_KEY, "") for r in parents if r.data.tags.get(tag) == name}
                    - {sweep_id, ""})
    if others:
        print(f"bench report: sweep {name!r} was run {len(others) + 1} times; reporting the newest "
              f"(sweep_id {sweep_id}; older: {', '.join(others)})")
    chosen = [r for r in parents if r.data.tags.get(tag) == name
              and r.data.tags.get(records.SWEEP_KEY, "") == sweep_id]
    exp_id = newest.info.experiment_id
    return SweepRef(name=name, sweep_id=sweep_id, experiment_id=exp_id, experiment_name=names.get(exp_id, ""),
                    parent_run_ids=[r.info.run_id for r in chosen])


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


def _trial_runs(c: Any, ref: SweepRef) -> dict[str, Any]:
    """trial name -> the run that counts for it."""
    flt = f"tags.{records.SWEEP_TAG} = {quote(ref.name)}"
    runs = [r for r in _search(c, [ref.experiment_id], flt) if records.is_trial(r.data.tags)]
    for pid in ref.parent_run_ids:       # trials that carry only the parent link
        runs.extend(r for r in _search(c, [ref.experiment_id], f"tags.{records.PARENT_TAG} = {quote(pid)}")
                    if records.is_trial(r.data.tags))
    by_id = {r.info.run_id: r for r in runs}
    if ref.sweep_id:
        by_id = {k: r for k, r in by_id.items()
                 if r.data.tags.get(records.SWEEP_KEY, ref.sweep_id) == ref.sweep_id}
    by_trial: dict[str, Any] = {}
    epoch = records.EPOCH_METRIC
    for r in by_id.values():
        name = r.data.tags.get(records.TRIAL_KEY) or r.info.run_name or r.info.run_id
        prev = by_trial.get(name)
        if prev is None or r.data.metrics.get(epoch, -1) > prev.data.metrics.get(epoch, -1):
            by_trial[name] = r
    return by_trial


def read_trials(tracking_uri: str, ref: SweepRef, *, scores_dir: str | Path,
                history: Iterable[str] = ()) -> list[TrialRun]:
    """The sweep's trials, by name; each one's ``val_scores.parquet`` (if it logged one) is
    downloaded into ``scores_dir/<run_id>/``, and the metrics named in ``history`` are read
    per epoch. Empty when the sweep has no trial runs (yet)."""
    c = client(tracking_uri)
    scores_dir = Path(scores_dir)
    history = tuple(history)
    out = []
    for name, r in sorted(_trial_runs(c, ref).items()):
        rid = r.info.run_id
        hist = {k: [m.value for m in sorted(c.get_metric_history(rid, k), key=lambda m: m.step)] for k in history}
        art = _find_artifact(c, rid, records.VAL_SCORES)
        local = None
        if art:
            dest = scores_dir / rid
            dest.mkdir(parents=True, exist_ok=True)
            local = Path(c.download_artifacts(rid, art, str(dest)))
        out.append(TrialRun(run_id=rid, name=name, status=r.info.status,
                            config=records.parse_trial_params(r.data.params),
                            tags=records.parse_trial_tags(r.data.tags), final=dict(r.data.metrics),
                            history=hist, scores_path=local))
    return out
