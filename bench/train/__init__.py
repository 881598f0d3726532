"""Training: the paper's protocol as one loop, driven locally, by a Tune trial, or by Ray Train.

- `bench.train.config`: `TrainConfig`, the typed run description (validated once).
- `bench.train.layout`: metric keys and the checkpoint directory layout.
- `bench.train.session`: where the loop reports (`LocalSession`, `TuneSession`, `TrainSession`).
- `bench.train.loop`: `train_loop_per_worker(config)`, the loop itself.
- `bench.train.trainable`: `trial_fn(config)`, the Tune function trainable of the sweeps.
- `bench.train.cli`: ``bench train``, one run in-process for debugging.

Importing this package is cheap (no torch, no ray).
"""

from bench.train.config import DRIVER_KEYS, TrainConfig, split_config
from bench.train.layout import (
           CHECKPOINT_PREFIX,
           METRIC_KEYS,
           METRICS_FILE,
           STATE_FILE,
           VAL_SCORES_FILE,
)

__all__ = ["CHECKPOINT_PREFIX", "DRIVER_KEYS", "METRICS_FILE", "METRIC_KEYS", "STATE_FILE",
           "TrainConfig", "VAL_SCORES_FILE", "split_config"]
