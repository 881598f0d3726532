"""The Ray Tune trial: one training run, on one process or on a DDP worker group.

The sweep wraps `trial_fn` as ``tune.with_resources(trial_fn, trial_resources(...))``.

- ``num_workers == 1``: the loop runs right here, in the trial's process, reporting through
  `TuneSession` (``tune.report`` / ``tune.get_checkpoint``). This skips Ray Train's start-up
  (a controller and a worker group: about ten seconds), which would dominate short runs.
- ``num_workers > 1``: the trial builds and fits a ``TorchTrainer`` whose workers run
  `bench.train.loop.train_loop_per_worker` with DDP. Under Ray Train V2 a ``TorchTrainer``
  cannot be handed to ``Tuner`` directly (``TuneError: Improper 'run'``); fitting it inside
  a Tune function with ``TuneReportCallback`` is Ray's supported pattern.
  Tune then receives rank 0's metrics plus a ``checkpoint_path`` metric: the checkpoint
  directories live in Ray Train's storage, ``<storage_path>/train-<trial_id>/checkpoint_epoch_NNNN``,
  not in the Tune trial. A Tune-level retry re-runs this function with the same Train run
  name, which resumes from that run's latest checkpoint.

Config keys: the `TrainConfig` fields, plus the `DriverConfig` keys (``storage_path``,
``max_failures``, ``cpus_per_worker``, ``gpus_per_worker``, ``custom_per_worker``). The trial
turns them into the two dataclasses in its first line; sweep bookkeeping -- keys starting with
``_`` and the ``sweep`` sub-dict -- is ignored here (tracking reads it).

Ray's defaults apply to every Ray Train setting here; the test suite shortens a few for speed
(``tests/conftest.py``, ``FAST_RAY_TRAIN_ENV``), never a real run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.train.config import DriverConfig, TrainConfig, split_config
from bench.train.session import TuneSession


def trial_resources(*, workers: int, use_gpu: bool, driver: DriverConfig) -> dict[str, float]:
    """What the Tune trial itself reserves, for ``tune.with_resources(trial_fn, ...)``.

    One worker: the trial trains, so it holds the worker's CPUs (and GPU share) and the
    sweep's custom resources (``driver.custom_per_worker``). Several workers: the trial only
    drives a TorchTrainer whose workers reserve their own resources, custom ones included
    (`worker_resources`), so it takes a token CPU share (Tune rejects ``{"cpu": 0}``).
    """
    if workers > 1:
        return {"cpu": 0.01}
    res = {"cpu": driver.cpus_per_worker}
    if use_gpu:
        res["gpu"] = driver.gpus_per_worker or 1.0
    return res | dict(driver.custom_per_worker or {})


def worker_resources(*, use_gpu: bool, driver: DriverConfig) -> dict[str, float]:
    """What each Ray Train worker of a multi-worker trial reserves
    (``ScalingConfig.resources_per_worker``): its CPUs, its GPU when the run uses GPUs, and
    the sweep's custom resources (``resources.custom``), so a custom resource that pins or
    limits where training runs applies to the processes that train, not only to the driver."""
    per_worker = {"CPU": driver.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = driver.gpus_per_worker or 1.0
    return per_worker | dict(driver.custom_per_worker or {})


def scaling_config(cfg: TrainConfig, driver: DriverConfig) -> Any:
    """The ``ray.train.ScalingConfig`` of a multi-worker trial: ``cfg.num_workers`` workers of
    `worker_resources` each."""
    import ray.train  # heavy

    return ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                   resources_per_worker=worker_resources(use_gpu=cfg.use_gpu, driver=driver))


def _match_threads_to_reservation() -> None:
    """Use as many torch threads as CPUs Ray reserved for this trial: two concurrent trials
    with torch's default (all cores) each would oversubscribe the machine."""
    import ray  # heavy
    import torch  # heavy

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def trial_fn(config: dict[str, Any]) -> None:
    """Tune function trainable: train the run described by ``config`` (see module docstring)."""
    from ray import tune  # heavy

    # torch and ray load here, in the trial's process, not when the sweep driver imports this
    from bench.train.loop import run_training, train_loop_per_worker  # heavy: torch

    train_fields, driver_fields = split_config(config)
    cfg = TrainConfig.from_dict(train_fields)       # the one dict -> dataclass of the trial
    driver = DriverConfig.from_dict(driver_fields)
    if cfg.num_workers == 1:
        _match_threads_to_reservation()
        run_training(cfg, TuneSession())
        return

    import ray.train  # heavy
    from ray.train.torch import TorchTrainer  # heavy
    from ray.tune.integration.ray_train import TuneReportCallback  # heavy

    ctx = tune.get_context()
    storage = driver.storage_path or str(Path(ctx.get_trial_dir()).parent)
    trainer = TorchTrainer(
        train_loop_per_worker,          # each worker rebuilds the TrainConfig from this dict
        train_loop_config=cfg.to_dict(),
        scaling_config=scaling_config(cfg, driver),
        run_config=ray.train.RunConfig(
            # The trial id is stable across Tune retries, so a retried trial resumes this run.
            name=f"train-{ctx.get_trial_id()}",
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=driver.max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
