"""Hyperparameter search over many studies at once: one Tune experiment per stage.

A search runs one study per (cell, modality, seed): each keeps its own Optuna TPE history, so
cells do not share a model of the objective, and its own ASHA brackets, so a weak cell's
trials are compared with its own and not stopped for being worse than another cell's. Running
the studies one Tune experiment after another leaves most of a cluster idle (each experiment
holds at most ``max_concurrent_trials`` trials, and its tail holds fewer), so here they share
one experiment per stage through Tune's own contracts:

- `StudySearcher` (a Tune ``Searcher``) holds one inner searcher per study and hands out their
  suggestions in turn, each completed with the study's fixed values (cell, modality, seed, the
  fine-tune checkpoint); results and completions go back to the study that suggested the trial.
  Its state (every study's) is saved with Tune's experiment snapshot, so ``--resume`` continues
  every study where it was.
- `StudyScheduler` (a Tune ``TrialScheduler``) keeps one ASHA scheduler per study and routes
  each trial's events to its study's.

Both key a trial by `study_key` of its config.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

Combo = tuple[str, str, int]


class _PickledState:
    """Tune's save/restore of a searcher or scheduler: the whole state, every study's in it."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def study_key(config: dict[str, Any]) -> str:
    """The study a trial belongs to: ``cell/modality/seed``."""
    return f"{config['cell']}/{config['modality']}/{config['seed']}"


class StudySearcher(_PickledState, Searcher):
    """Many studies, one experiment: each (cell, modality, seed) has its own inner searcher
    (made by ``make_searcher(index)``) and ``num_samples`` trials; ``fixed[combo]`` is merged
    into each of its suggestions. Suggestions go round-robin over the studies that have
    trials left, so all studies progress at the same pace and the cluster fills with every
    study's trials at once."""

    def __init__(self, combos: Sequence[Combo], *, num_samples: int, make_searcher: Callable[[int], Searcher],
                 fixed: dict[Combo, dict[str, Any]] | None = None, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.combos = [tuple(c) for c in combos]
        self.num_samples = num_samples
        self.inner = [make_searcher(i) for i in range(len(self.combos))]
        self.fixed = {tuple(k): dict(v) for k, v in (fixed or {}).items()}
        self.suggested = [0] * len(self.combos)        # trials handed out per study
        self.owner: dict[str, int] = {}                 # trial id -> study index
        self._next = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True        # metric, mode and every study's space are set at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        n = len(self.combos)
        if all(s >= self.num_samples for s in self.suggested):
            return Searcher.FINISHED
        for step in range(n):
            i = (self._next + step) % n
            if self.suggested[i] >= self.num_samples:
                continue
            config = self.inner[i].suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                continue
            self._next = (i + 1) % n
            self.suggested[i] += 1
            self.owner[trial_id] = i
            cell, modality, seed = self.combos[i]
            return {**config, "cell": cell, "modality": modality, "seed": seed, **self.fixed.get(self.combos[i], {})}
        return None        # every study with trials left waits for results

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.inner[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.owner:
            self.inner[self.owner[trial_id]].on_trial_complete(trial_id, result=result, error=error)


class StudyScheduler(_PickledState, FIFOScheduler):
    """One ASHA scheduler per study (``ASHAScheduler(**asha)``), created at a study's first
    trial; trials start first-in first-out, as under ASHA."""

    def __init__(self, *, metric: str, mode: str, **asha: Any) -> None:
        super().__init__()
        self._metric, self._mode = metric, mode
        self._asha_kwargs = asha
        self._studies: dict[str, ASHAScheduler] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _study(self, trial: Any) -> ASHAScheduler:
        key = study_key(trial.config)
        if key not in self._studies:
            self._studies[key] = ASHAScheduler(metric=self._metric, mode=self._mode, **self._asha_kwargs)
        return self._studies[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._study(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._study(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._study(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        study = self._study(trial)
        if trial.trial_id in study._trial_info:
            study.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        study = self._study(trial)
        if trial.trial_id in study._trial_info:
            study.on_trial_remove(tune_controller, trial)

    @property
    def num_stopped(self) -> int:
        return sum(s._num_stopped for s in self._studies.values())

    def debug_string(self) -> str:
        return f"ASHA per study ({len(self._studies)} studies): num_stopped={self.num_stopped}"
