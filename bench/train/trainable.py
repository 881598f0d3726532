"""The Ray Tune trial: one training run, on one process or on a DDP worker group.

The sweep wraps `trial_fn` as ``tune.with_resources(trial_fn, trial_resources(config))``.

- ``num_workers == 1``: the loop runs right here, in the trial's process, reporting through
  `TuneSession` (``tune.report`` / ``tune.get_checkpoint``). This skips Ray Train's 10-17 s
  start-up (STACK_NOTES section 1), which would dominate short runs.
- ``num_workers > 1``: the trial builds and fits a ``TorchTrainer`` whose workers run
  `bench.train.loop.train_loop_per_worker` with DDP. Under Ray Train V2 a ``TorchTrainer``
  cannot be handed to ``Tuner`` directly (``TuneError: Improper 'run'``); fitting it inside
  a Tune function with ``TuneReportCallback`` is the supported pattern (STACK_NOTES 1).
  Tune then receives rank 0's metrics plus a ``checkpoint_path`` metric: the checkpoint
  directories live in Ray Train's storage, ``<storage_path>/train-<trial_id>/checkpoint_epoch_NNNN``,
  not in the Tune trial. A Tune-level retry re-runs this function with the same Train run
  name, which resumes from that run's latest checkpoint.

Config keys: the `TrainConfig` fields, plus driver keys (`bench.train.config.DRIVER_KEYS`):
``storage_path`` (Ray Train storage of multi-worker runs; default: the Tune experiment's
directory), ``max_failures`` (Ray Train worker-group retries, default 0), ``cpus_per_worker``
(default 1), ``gpus_per_worker`` (default 1 with use_gpu). Sweep bookkeeping -- keys starting
with ``_`` and a ``sweep`` sub-dict -- is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from bench.train.config import TrainConfig, split_config

# Ray Train V2 start-up cuts measured in STACK_NOTES section 1 (13-17 s -> 9-10 s per fit).
# V2 propagates these from the process that calls fit() to its controller and workers.
TRAIN_V2_FAST_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
}


def trial_resources(config: Mapping[str, Any]) -> dict[str, float]:
    """What the Tune trial itself needs, for ``tune.with_resources(trial_fn, ...)``.

    One worker: the trial trains, so it holds the worker's CPUs (and GPU). Several workers:
    the trial only drives a TorchTrainer whose workers reserve their own resources, so it
    takes a token CPU share (Tune rejects ``{"cpu": 0}``). Reads only ``num_workers``,
    ``use_gpu``, ``cpus_per_worker`` and ``gpus_per_worker``, so ``config`` may be a
    ``param_space`` whose other fields are search spaces; these four must be plain values.
    """
    workers = config.get("num_workers", 1)
    use_gpu = config.get("use_gpu", False)
    cpus = config.get("cpus_per_worker", 1)
    gpus = config.get("gpus_per_worker", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"TrainConfig.num_workers={workers!r}: must be a plain integer >= 1 here")
    if not isinstance(use_gpu, bool):
        raise ValueError(f"TrainConfig.use_gpu={use_gpu!r}: must be a plain true/false here")
    for name, v in (("cpus_per_worker", cpus), ("gpus_per_worker", gpus)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{name}={v!r}: must be a number > 0")
    if workers > 1:
        return {"cpu": 0.01}
    res = {"cpu": float(cpus)}
    if use_gpu:
        res["gpu"] = float(gpus)
    return res


def _match_threads_to_reservation() -> None:
    """Use as many torch threads as CPUs Ray reserved for this trial: two concurrent trials
    with torch's default (all cores) each would oversubscribe the machine."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def trial_fn(config: dict[str, Any]) -> None:
    """Tune function trainable: train the run described by ``config`` (see module docstring)."""
    from ray import tune

    from bench.train.loop import train_loop_per_worker
    from bench.train.session import TuneSession

    train_fields, driver = split_config(config)
    cfg = TrainConfig.from_dict(train_fields)   # fail on a bad config before starting workers
    if cfg.num_workers == 1:
        _match_threads_to_reservation()
        train_loop_per_worker(config, session=TuneSession())
        return

    for k, v in TRAIN_V2_FAST_ENV.items():
        os.environ.setdefault(k, v)
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = tune.get_context()
    storage = driver.get("storage_path") or str(Path(ctx.get_trial_dir()).parent)
    per_worker = {"CPU": float(driver.get("cpus_per_worker", 1))}
    if cfg.use_gpu:
        per_worker["GPU"] = float(driver.get("gpus_per_worker", 1))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dict(config),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # The trial id is stable across Tune retries, so a retried trial resumes this run.
            name=f"train-{ctx.get_trial_id()}",
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=int(driver.get("max_failures", 0))),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
