"""Where a training loop reports to: one small interface, three drivers.

The loop (`bench.train.loop`) must run the same code in three places, which differ only in
how a checkpoint is kept and found again and how many processes share the work:

- `LocalSession`: no Ray. Checkpoints are kept in a directory (``checkpoint_epoch_0001``, ...)
  and the latest one there is resumed from. Used by tests and for debugging a run by hand.
- `TuneSession`: inside a Ray Tune function trainable (one process per trial); reports with
  ``tune.report`` and resumes from ``tune.get_checkpoint()`` (a retried or restored trial).
- `TrainSession`: inside a Ray Train worker (``TorchTrainer``, DDP); reports with
  ``ray.train.report`` on EVERY rank (Ray waits for all ranks at each report), while only
  rank 0 hands over the checkpoint directory.

Only this module and `bench.train.trainable` import ray, and only inside the Ray sessions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

from bench.train.layout import CHECKPOINT_PREFIX, METRICS_FILE, STATE_FILE


class Session:
    """What the loop needs from its driver. Subclasses fill in the Ray or local specifics."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoint files and prints."""
        return self.rank == 0

    def device(self, *, use_gpu: bool) -> Any:
        """The torch device this process trains on."""
        import torch  # heavy

        if use_gpu and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        if use_gpu:
            # A Ray GPU resource is a reservation, not a device (a simulated or mislabelled node):
            # train on the CPU rather than assume CUDA exists, and say so.
            logging.getLogger(__name__).warning("use_gpu=True but torch sees no CUDA device; training on CPU")
        return torch.device("cpu")

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[Path | None]:
        """The checkpoint directory to resume from, or None for a fresh start."""
        yield None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Hand over one epoch's metrics and (rank 0) its checkpoint directory.

        The directory may be deleted by the caller once this returns."""
        raise NotImplementedError


class LocalSession(Session):
    """Single process, no Ray: checkpoints are copied to ``directory/checkpoint_epoch_NNNN``.

    ``resume=True`` continues from the newest checkpoint found there (as a Ray retry would);
    ``reported`` collects the metric dicts in order, ``checkpoints`` the directories written.
    """

    def __init__(self, directory: str | Path, *, resume: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.reported: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in self.directory.glob(f"{CHECKPOINT_PREFIX}*")
                       if (p / STATE_FILE).is_file())
        return found[-1] if found else None

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[Path | None]:
        yield self.latest_checkpoint() if self.resume else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.reported.append(dict(metrics))
        if checkpoint_dir is None:
            return
        dest = self.directory / f"{CHECKPOINT_PREFIX}{int(metrics['epoch']):04d}"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(checkpoint_dir, dest)
        self.checkpoints.append(dest)


class TuneSession(Session):
    """Inside a Ray Tune function trainable: one process, ``tune.report`` / ``tune.get_checkpoint``.

    (Ray 2.60 fails a trial that calls ``ray.train.report`` from a Tune function, so the Tune
    equivalents are used here.)
    """

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[Path | None]:
        from ray import tune  # heavy

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        from ray import tune  # heavy

        ckpt = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)


class TrainSession(Session):
    """Inside a Ray Train worker: rank and world size from ``ray.train.get_context()``."""

    def __init__(self) -> None:
        import ray.train  # heavy

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()

    def device(self, *, use_gpu: bool) -> Any:
        import torch  # heavy

        if not (use_gpu and torch.cuda.is_available()):
            return super().device(use_gpu=use_gpu)
        import ray.train.torch  # heavy

        return ray.train.torch.get_device()   # the GPU Ray assigned to this worker

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[Path | None]:
        import ray.train  # heavy

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train  # heavy

        # Every rank must call report (it is a barrier); only rank 0 passes a checkpoint, so
        # it is uploaded once.
        if checkpoint_dir is not None and self.is_main:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)),
                             checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{int(metrics['epoch']):04d}")
        else:
            ray.train.report(metrics)


def read_metrics(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of a checkpoint directory (the epoch it closes)."""
    return json.loads((Path(checkpoint_dir) / METRICS_FILE).read_text())
