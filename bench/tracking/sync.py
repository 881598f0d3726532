"""`bench sync`: replay a sweep's Ray Tune storage into MLflow, idempotently.

Why: Ray's storage (checkpoints, ``result.json``) is where a sweep's results really live; the
MLflow record can fall behind when the tracking server drops mid-sweep, or be wanted in
another store (a laptop's SQLite file -> the team's server). Sync finds or creates the same
runs the live callback would (keyed by ``sweep_id`` + ``trial_name``), logs only the epochs
that are missing (with their percent twins, `bench.tracking.records.pct_metrics`), the dataset
inputs, the run name with its top-1, re-logs the final artifacts and sets the final status. Running it twice
changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.storage import RemotePath, location
from bench.sweep.results import read_sweep
from bench.tracking import records
from bench.tracking.store import Tracker

_STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}


@dataclass
class SyncStats:
    sweep_dir: Path | RemotePath
    parent_run_id: str = ""
    runs_created: int = 0
    runs_found: int = 0
    epochs_logged: int = 0
    artifacts_logged: int = 0
    unfinished: list[str] = field(default_factory=list)


def find_sweep_dirs(target: str | Path | RemotePath) -> list[Path | RemotePath]:
    """``target`` is a sweep folder (with sweep.json) or a storage root holding several; a local
    path or a URI (``s3://bucket/runs``)."""
    t = location(target)
    if (t / "sweep.json").is_file():
        return [t]
    return sorted(p.parent for p in t.glob("*/sweep.json"))


def sync_sweep(sweep_dir: str | Path | RemotePath, *, tracking_uri: str, experiment: str | None = None) -> SyncStats:
    sweep_dir = location(sweep_dir)
    meta, trials = read_sweep(sweep_dir)
    tracker = Tracker(tracking_uri, experiment or meta.get("experiment") or "gesturebench")
    stats = SyncStats(sweep_dir=sweep_dir)
    units = meta.get("units", {})
    all_done = bool(units) and all(u.get("state") == "done" for u in units.values())
    parent_id, _ = tracker.ensure_run(
        key=records.parent_key(meta["sweep_id"]),
        tags=records.parent_tags(name=meta["name"], stages=meta.get("stages", []),
                                 spec_file=meta.get("spec_file")),
        run_name=meta["name"], running=False)
    stats.parent_run_id = parent_id
    for t in trials:
        run_id, created = tracker.ensure_run(
            key=records.trial_key(t.config, t.name),
            tags=records.trial_tags(t.config, trial_id=t.trial_id, parent_run_id=parent_id)
            | records.node_tags(t.dir),
            run_name=records.trial_run_name(t.config), running=False)
        stats.runs_created += created
        stats.runs_found += not created
        tracker.log_params(run_id, records.trial_params(t.config))
        tracker.log_datasets(run_id, t.config)
        done = tracker.logged_epochs(run_id)
        stats.epochs_logged += len(tracker.log_epochs(run_id, t.results, done))
        tracker.name_run(run_id, t.config)
        final = _STATUS.get(t.status)
        if final is None:
            stats.unfinished.append(t.name)
            continue
        tracker.log_summary(run_id)
        ck = t.checkpoint
        stats.artifacts_logged += len(tracker.log_artifacts(run_id, records.final_files(ck)))
        tags = {"last_epoch": str(max(done or {0}))}
        if ck:
            tags["final_checkpoint"] = str(ck)
        tracker.set_tags(run_id, tags)
        tracker.set_status(run_id, final)
    lb = sweep_dir / "leaderboard.csv"
    if lb.is_file():
        tracker.log_text(parent_id, lb.read_text(), "leaderboard.csv")
    if (sweep_dir / "sweep.yaml").is_file():
        tracker.log_text(parent_id, (sweep_dir / "sweep.yaml").read_text(), "sweep.yaml")
    errors = sum(t.status == "ERROR" for t in trials)
    tracker.set_tags(parent_id, {"trials": len(trials), "failed_trials": errors})
    if all_done and not stats.unfinished:
        tracker.set_status(parent_id, "FAILED" if errors else "FINISHED")
    return stats
