"""What a training run leaves behind: metric keys and the checkpoint directory layout.

No heavy imports, so the sweep, tracking and report code can name these without torch.

Each epoch reports one flat dict with `METRIC_KEYS` and leaves a checkpoint directory
(``checkpoint_epoch_NNNN`` locally and under Ray Train; ``checkpoint_NNNNNN`` in a Tune trial):

- ``state.pt`` (`STATE_FILE`): ``torch.load(path, map_location="cpu", weights_only=True)`` gives
  a dict: ``epoch`` (1-based, the epoch just finished), ``model`` (state_dict of the network,
  no DDP prefix), ``optimizer``, ``scheduler``, ``rng`` (rank 0's torch/numpy/python states), ``rng_ranks`` (every rank's, in rank order), ``config``
  (`TrainConfig.to_dict()`), ``net_config`` (the NetConfig fields), ``classes`` (names),
  ``num_classes``, ``clip_len``, ``image_size``, ``params``, ``macs_per_clip``, ``metrics``.
- ``val_scores.parquet`` (`VAL_SCORES_FILE`): one row per validation sample, in index order:
  ``sample_id`` str, ``label`` int64, ``pred`` int64, ``probs`` list<float32> (softmax).
- ``metrics.json`` (`METRICS_FILE`): the epoch's metric dict.
"""

from __future__ import annotations

# epoch: 1-based. train_*: over the clips trained this epoch (all ranks; with DDP this includes
# the loader's wrapped duplicates that even out the shards). val_*: over the validation clips
# scored (padding excluded); val_top5 is top-k with k = min(5, classes). lr: the learning rate of
# the epoch's last step. params / macs_per_clip: the network (macs via FlopCounterMode on one
# clip). num_train_samples: distinct-position clips trained this epoch, padding excluded;
# num_val_samples: rows of val_scores.parquet; num_skipped: samples the loaders skipped this
# epoch (on_error="skip"), train and validation together.
METRIC_KEYS = (
    "epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr",
    "epoch_time_s", "train_clips_per_s", "params", "macs_per_clip",
    "num_train_samples", "num_val_samples", "num_skipped",
)
STATE_FILE = "state.pt"
VAL_SCORES_FILE = "val_scores.parquet"
METRICS_FILE = "metrics.json"
CHECKPOINT_PREFIX = "checkpoint_epoch_"
