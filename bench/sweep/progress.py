"""One line per epoch and per trial event, as trials run.

Why not Tune's table reporter: with 20 concurrent short trials it redraws a wide table every
few seconds; a sweep log should read as a history ("which trial did what when"), and lines
survive being piped to a file.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


class ProgressPrinter(Callback):
    def __init__(self, *, unit: str, total: int | None, stream: Any = None) -> None:
        self.unit = unit
        self.total = total
        self._stream = stream
        self._t0 = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        return {"unit": self.unit, "total": self.total}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def setup(self, **info: Any) -> None:
        self._t0 = time.monotonic()

    def _say(self, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:7.1f}s] {text}", file=self._stream or sys.stdout, flush=True)

    def _count(self, trials: list, trial: Any) -> str:
        # from Tune's trial list, so a resumed sweep counts the trials finished before it
        done = {t.trial_id for t in trials if str(t.status) in ("TERMINATED", "ERROR")} | {trial.trial_id}
        total = max(self.total or 0, len(trials))
        return f"{len(done)}/{total}"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{trial} started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        ep, total = result.get("epoch"), trial.config.get("epochs")
        self._say(f"{trial} epoch {ep}/{total}: train_loss {_fmt(result.get('train_loss'), '.3f')} "
                  f"val_top1 {_fmt(result.get('val_top1'), '.3f')} "
                  f"({_fmt(result.get('epoch_time_s'), '.1f')} s, "
                  f"{_fmt(result.get('train_clips_per_s'), '.1f')} clips/s)")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{trial} failed; retrying from its last checkpoint")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        early = last.get("epoch") is not None and last.get("epoch") < trial.config.get("epochs", 0)
        self._say(f"{trial} done{' (stopped early by the scheduler)' if early else ''}: val_top1 "
                  f"{_fmt(last.get('val_top1'), '.3f')} [{self._count(trials, trial)} trials of {self.unit}]")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{trial} FAILED (retries exhausted); see {trial.path}/error.txt "
                  f"[{self._count(trials, trial)} trials of {self.unit}]")
