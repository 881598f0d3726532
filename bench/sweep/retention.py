"""`CheckpointRetention`: the Tune callback that deletes a sweep trial's old checkpoints.

Why not Tune's ``CheckpointConfig(num_to_keep)``: it can delete every checkpoint that the stored
snapshot and result.json name (`bench.sweep.trainable`'s module docstring), and a driver killed
then leaves a trial that cannot be restored. Imported by the sweep driver only (imports Ray)."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from bench.sweep.trainable import prune_checkpoints

log = logging.getLogger(__name__)


class CheckpointRetention(Callback):
    """Keeps each trial's newest ``keep`` checkpoints and the newest its stored result.json
    names (`prune_checkpoints`), pruning when a trial registers a checkpoint."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        storage = getattr(trial, "storage", None)
        if storage is None:
            return
        try:
            prune_checkpoints(storage.storage_filesystem, storage.trial_fs_path, self.keep)
        except OSError as e:      # space kept, nothing lost: the next checkpoint tries again
            log.warning("could not delete old checkpoints of %s: %s", trial, e)
