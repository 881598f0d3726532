"""The Ray Tune callback that records every trial of a sweep in MLflow, from the driver.

Why our own callback rather than ``ray.air.integrations.mlflow.MLflowLoggerCallback``: that
one opens a new run for every restored trial, logs re-executed epochs
twice, and dies with the tracking server. This one

- finds a trial's run by its tags (``sweep_id`` + ``trial_name``) before creating one, so a
  retried trial, a resumed sweep (``bench sweep --resume``) and `bench sync` all continue
  the same run;
- logs each epoch once, with ``step=epoch``: the epochs already in MLflow are read when the
  run is (re)opened, and an epoch re-run after a restore is skipped;
- keeps every result in memory until MLflow took it: if the server drops, training goes on
  (Ray's storage keeps checkpoints and result.json), a warning says so once, and the next
  successful call flushes what was missed; `bench sync` catches up whatever is left;
- names the run ``<cell>/<modality>/s<seed> <top-1>% <stage>`` (`records.trial_run_name`,
  renamed as epochs arrive) and logs the trial's splits as MLflow dataset inputs;
- logs the final epoch's ``val_scores.parquet`` and ``metrics.json`` as artifacts and ends
  the run FINISHED (or FAILED).

It is pickled into the experiment's ``tuner.pkl`` and unpickled by ``Tuner.restore``, which
takes no new callbacks: `configure_runtime` lets the resuming driver point it at this
session's tracking URI and parent run.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback

from bench.storage import RemotePath, location
from bench.tracking import records
from bench.tracking.store import Tracker
from bench.tracking.uri import apply_http_env

# sweep_id -> {"tracking_uri": ..., "parent_run_id": ...}: set by the driver before fit(),
# read in setup(); wins over the values pickled with a restored experiment.
_RUNTIME: dict[str, dict[str, Any]] = {}
RETRY_AFTER_S = 20.0


def configure_runtime(sweep_id: str, *, tracking_uri: str, parent_run_id: str | None) -> None:
    _RUNTIME[sweep_id] = {"tracking_uri": tracking_uri, "parent_run_id": parent_run_id}


def _trial_name(trial: Any) -> str:
    return str(trial)


def _checkpoint_dir(trial: Any, results: list[dict[str, Any]]) -> str | None:
    """The final checkpoint: Tune's (one-worker trials) or Ray Train's (DDP trials report a
    ``checkpoint_path``)."""
    ck = getattr(trial, "checkpoint", None)
    if ck is not None and getattr(ck, "path", None):
        return ck.path
    for r in reversed(results):
        if r.get("checkpoint_path"):
            return str(r["checkpoint_path"])
    return None


class MLflowTrialCallback(Callback):
    def __init__(self, *, sweep_id: str, experiment: str, tracking_uri: str,
                 parent_run_id: str | None, sweep_dir: str, stream: Any = None) -> None:
        self.sweep_id = sweep_id
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.sweep_dir = sweep_dir
        self._stream = stream
        self._reset()

    def _reset(self) -> None:
        self._tracker: Tracker | None = None
        self._runs: dict[str, str] = {}             # trial_id -> run_id
        self._logged: dict[str, set[int]] = {}      # trial_id -> epochs in MLflow
        self._results: dict[str, list[dict[str, Any]]] = {}
        self._trials: dict[str, Any] = {}            # trial_id -> Trial
        self._final: dict[str, tuple[Any, str]] = {}  # trial_id -> (trial, status) not yet recorded
        self._down_until = 0.0
        self._warned = False
        self.missed = False                          # something could not be recorded

    def __getstate__(self) -> dict[str, Any]:
        keep = ("sweep_id", "experiment", "tracking_uri", "parent_run_id", "sweep_dir")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stream = None
        self._reset()

    # -- Tune hooks

    def setup(self, **info: Any) -> None:
        rt = _RUNTIME.get(self.sweep_id, {})
        self.tracking_uri = rt.get("tracking_uri", self.tracking_uri)
        self.parent_run_id = rt.get("parent_run_id", self.parent_run_id)
        apply_http_env()
        self._tracker = Tracker(self.tracking_uri, self.experiment)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._results.setdefault(trial.trial_id, [])
        self._trials[trial.trial_id] = trial
        self._guard("opening the trial's run", lambda: self._open(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._trials[trial.trial_id] = trial
        self._results.setdefault(trial.trial_id, []).append(
            {k: v for k, v in result.items() if k != "config"})
        self._flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials[trial.trial_id] = trial
        self._final[trial.trial_id] = (trial, "FINISHED")
        self._flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials[trial.trial_id] = trial
        self._final[trial.trial_id] = (trial, "FAILED")
        self._flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._down_until = 0.0                       # one last try for anything pending
        self._flush()
        if self.unrecorded():
            self._say(f"bench: some results could not be recorded in MLflow ({self.tracking_uri}); "
                      f"they are safe in {self.sweep_dir}: run `bench sync {self.sweep_dir}` "
                      f"once the tracking store is back")

    def unrecorded(self) -> int:
        """Epochs and trial endings not (yet) in MLflow."""
        n = len(self._final)
        for tid, results in self._results.items():
            done = self._logged.get(tid, set())
            n += sum(1 for r in results if r.get("epoch") is not None and int(r["epoch"]) not in done)
        return n

    # -- internals

    def _say(self, msg: str) -> None:
        print(msg, file=self._stream or sys.stderr, flush=True)

    def _guard(self, what: str, fn: Any) -> bool:
        if time.monotonic() < self._down_until:
            self.missed = True
            return False
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 -- any tracking failure must not stop training
            self.missed = True
            self._down_until = time.monotonic() + RETRY_AFTER_S
            if not self._warned:
                self._warned = True
                self._say(f"bench: warning: MLflow failed while {what} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); training continues and "
                          f"results stay in {self.sweep_dir}; retrying every {RETRY_AFTER_S:.0f} s")
            return False

    def _open(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid in self._runs:
            self._tracker.set_status(self._runs[tid], "RUNNING")
            return self._runs[tid]
        cfg = trial.config
        name = _trial_name(trial)
        run_id, _ = self._tracker.ensure_run(
            key=records.trial_key(cfg, name),
            tags=records.trial_tags(cfg, trial_id=tid, parent_run_id=self.parent_run_id),
            run_name=records.trial_run_name(cfg))
        conflicts = self._tracker.log_params(run_id, records.trial_params(cfg))
        if conflicts:
            self._say(f"bench: warning: run {name}: params {conflicts} already recorded with other values")
        try:
            self._tracker.log_datasets(run_id, cfg)
        except Exception as e:  # noqa: BLE001 -- the Dataset column is a convenience, the metrics are not
            self._say(f"bench: warning: run {name}: dataset inputs not logged ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''})")
        self._logged[tid] = self._tracker.logged_epochs(run_id)
        self._runs[tid] = run_id
        return run_id

    def _flush(self) -> None:
        for tid, results in self._results.items():
            if tid not in self._runs:
                trial = self._trials.get(tid)
                if trial is None or not self._guard("opening the trial's run", lambda t=trial: self._open(t)):
                    continue
            run_id = self._runs[tid]
            todo = [r for r in results if r.get("epoch") is not None and int(r["epoch"]) not in self._logged[tid]]
            if todo and not self._guard("logging metrics", lambda: self._log(tid, run_id, todo)):
                continue
        for tid, (trial, status) in list(self._final.items()):
            if tid not in self._runs:
                continue
            if self._guard("finishing the trial's run", lambda t=trial, s=status: self._finish(t, s)):
                del self._final[tid]

    def _log(self, tid: str, run_id: str, todo: list[dict[str, Any]]) -> None:
        self._tracker.log_epochs(run_id, todo, self._logged[tid])
        trial = self._trials.get(tid)
        if trial is not None:
            self._tracker.name_run(run_id, trial.config)

    def _finish(self, trial: Any, status: str) -> None:
        tid = trial.trial_id
        run_id = self._runs[tid]
        results = self._results.get(tid, [])
        self._tracker.log_summary(run_id)
        self._tracker.name_run(run_id, trial.config)
        root = location(self.sweep_dir)
        ck: Any = _checkpoint_dir(trial, results)
        if ck and isinstance(root, RemotePath):      # Ray names it by its path in the bucket
            try:
                ck = root.at_fs_path(ck)
            except ValueError:                       # not under the sweep's storage: not ours to log
                ck = None
        self._tracker.log_artifacts(run_id, records.final_files(ck))
        tags = records.node_tags(root / _unit(trial) / _trial_name(trial))
        tags["last_epoch"] = str(max(self._logged.get(tid) or {0}))
        if ck:
            tags["final_checkpoint"] = str(ck)
        self._tracker.set_tags(run_id, tags)
        self._tracker.set_status(run_id, status)


def _unit(trial: Any) -> str:
    return str((trial.config.get("sweep") or {}).get("unit", ""))
