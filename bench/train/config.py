"""One typed description of a training run, from the sweep file to the trial worker.

`TrainConfig` is frozen and checked once, in ``__post_init__``, so a bad value fails at the
boundary (sweep file, CLI flag) with a ValueError naming the field -- never deep inside a Ray
worker twenty seconds later. The trial receives it as a plain dict (Ray Tune's ``param_space``
must be a dict) and turns it back into the dataclass in its first line (`from_dict`).

Defaults follow the paper's protocol (SPEC, "Training protocol"): SGD momentum 0.9, weight
decay 5e-5, learning rate decaying polynomially from 1e-3 to 1e-6 with power 0.9 per step.

Sweep bookkeeping in a trial's config dict is not part of the run: keys starting with ``_``,
a ``sweep`` sub-dict, and the driver keys in `DRIVER_KEYS` (read by
`bench.train.trainable.trial_fn`, not by the loop) are split off by `split_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

DATASETS = ("isogd", "jester", "framelist")
MODALITIES = ("rgb", "depth", "flow")
PRESETS = ("paper", "small")
STAGES = ("pretrain", "finetune")
BACKENDS = ("auto", "dali-gpu", "dali-cpu", "pyav", "opencv")
AMP_MODES = ("auto", "bf16", "off")
CHANNELS_LAST_MODES = ("auto", "on", "off")
ON_ERROR = ("raise", "skip")

# Keys a trial's config may carry for the driver (trainable.trial_fn) rather than the loop:
#   storage_path   -- where Ray Train keeps a multi-worker run's checkpoints (the sweep's storage)
#   max_failures   -- Ray Train FailureConfig(max_failures) for a multi-worker run
#   cpus_per_worker, gpus_per_worker -- ScalingConfig resources_per_worker of a multi-worker run
DRIVER_KEYS = ("storage_path", "max_failures", "cpus_per_worker", "gpus_per_worker")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training run: data, network, optimisation, distribution, and test hooks."""

    # data
    dataset: str                    # "isogd" | "jester" | "framelist"
    root: str                       # dataset root (for framelist: the folder of the list files)
    train_split: str = "train"
    val_split: str = "valid"
    modality: str = "rgb"
    # network
    cell: str = "a"                 # one of bench.models.list_cells()
    preset: str = "paper"           # "paper" | "small"
    num_classes: int | None = None  # None -> the training index's class count
    clip_len: int | None = None     # None -> the preset's default; must be even (Res3D halves T)
    image_size: int | None = None   # None -> the preset's default
    # optimisation
    epochs: int
    batch_size: int
    lr: float = 1e-3
    lr_end: float = 1e-6
    lr_power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 5e-5
    seed: int = 0
    stage: str = "pretrain"         # "pretrain" (from scratch) | "finetune" (from init_checkpoint)
    init_checkpoint: str | None = None  # a checkpoint dir (with state.pt) or a state.pt file
    # execution
    backend: str = "auto"           # pipelines.make_loader backend
    num_workers: int = 1            # Ray Train workers; > 1 -> DistributedDataParallel
    use_gpu: bool = False
    amp: str = "auto"               # "auto" -> bf16 autocast on CUDA, off on CPU; "off" never
    channels_last: str = "auto"     # "auto"/"on" -> channels_last_3d on CUDA; "off" never
    compile: bool = False           # torch.compile the training model (bench perf network --compile)
    data_workers: int = 0           # decode workers inside make_loader
    cache_data: bool = False        # make_loader(cache=...)
    on_error: str = "raise"         # make_loader(on_error=...); skipped samples -> num_skipped
    # test hooks
    max_train_batches: int | None = None
    max_val_batches: int | None = None
    fail_once_at_epoch: int | None = None  # raise RuntimeError at the start of this epoch ...
    fail_marker: str | None = None         # ... unless this file exists (it is created first)

    def __post_init__(self) -> None:
        _choice(self, "dataset", DATASETS)
        _choice(self, "modality", MODALITIES)
        _choice(self, "preset", PRESETS)
        _choice(self, "stage", STAGES)
        _choice(self, "backend", BACKENDS)
        _choice(self, "on_error", ON_ERROR)
        # YAML and CLI hand booleans for on/off switches; normalise them to the string modes.
        for name, off_on in (("amp", ("off", "bf16")), ("channels_last", ("off", "on"))):
            v = getattr(self, name)
            if isinstance(v, bool):
                object.__setattr__(self, name, off_on[v])
        _choice(self, "amp", AMP_MODES)
        _choice(self, "channels_last", CHANNELS_LAST_MODES)
        for name in ("root", "train_split", "val_split"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                _bad(name, v, "must be a non-empty string")
        for name in ("use_gpu", "cache_data", "compile"):
            if not isinstance(getattr(self, name), bool):
                _bad(name, getattr(self, name), "must be true or false")
        _int(self, "epochs", minimum=1)
        _int(self, "batch_size", minimum=1)
        _int(self, "seed", minimum=0)
        _int(self, "num_workers", minimum=1)
        _int(self, "data_workers", minimum=0)
        _int(self, "num_classes", minimum=2, optional=True)
        _int(self, "clip_len", minimum=2, optional=True)
        _int(self, "image_size", minimum=8, optional=True)
        _int(self, "max_train_batches", minimum=1, optional=True)
        _int(self, "max_val_batches", minimum=1, optional=True)
        _int(self, "fail_once_at_epoch", minimum=1, optional=True)
        if self.batch_size % self.num_workers:
            _bad("batch_size", self.batch_size,
                 f"is the global batch and must be divisible by num_workers={self.num_workers}")
        if self.clip_len is not None and self.clip_len % 2:
            _bad("clip_len", self.clip_len, "must be even (Res3D block 3 halves the time axis)")
        for name in ("lr", "lr_end", "lr_power", "momentum", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, str):      # PyYAML reads `1e-3` (no dot) as a string
                try:
                    v = float(v)
                except ValueError:
                    _bad(name, v, "must be a number")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                _bad(name, v, "must be a number")
            object.__setattr__(self, name, float(v))
        if not self.lr > 0:
            _bad("lr", self.lr, "must be > 0")
        if not 0 <= self.lr_end <= self.lr:
            _bad("lr_end", self.lr_end, f"must be in [0, lr={self.lr}]")
        if not self.lr_power > 0:
            _bad("lr_power", self.lr_power, "must be > 0")
        if not 0 <= self.momentum < 1:
            _bad("momentum", self.momentum, "must be in [0, 1)")
        if not self.weight_decay >= 0:
            _bad("weight_decay", self.weight_decay, "must be >= 0")
        if self.stage == "finetune" and not self.init_checkpoint:
            _bad("init_checkpoint", self.init_checkpoint, "is required when stage is 'finetune'")
        if self.init_checkpoint is not None and not isinstance(self.init_checkpoint, str):
            _bad("init_checkpoint", self.init_checkpoint, "must be a path string")
        if (self.fail_once_at_epoch is None) != (self.fail_marker is None):
            _bad("fail_marker", self.fail_marker,
                 "fail_once_at_epoch and fail_marker must be given together")
        if self.num_workers > 1 and self.backend == "dali-gpu" and not self.use_gpu:
            _bad("backend", self.backend, "needs use_gpu=true")
        # The cell registry lives with the network (it imports torch): checked last, lazily,
        # so that every cheap error above is reported without paying for the import.
        from bench.models import list_cells

        cells = list(list_cells())
        if self.cell not in cells:
            _bad("cell", self.cell, f"must be one of {cells}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys are an error that names them all."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in d and f.default is dataclasses.MISSING)
        if missing:
            raise ValueError(f"TrainConfig: missing required field(s) {missing}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of str/int/float/bool/None values (JSON-, Tune- and torch.save-safe)."""
        return dataclasses.asdict(self)


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(train_fields, driver_fields)`` of a trial's config dict; bookkeeping is dropped.

    Dropped: keys starting with ``_`` and a ``sweep`` sub-dict (the sweep helper's records).
    ``driver_fields`` holds the `DRIVER_KEYS` present. Everything else goes to `TrainConfig`.
    """
    train: dict[str, Any] = {}
    driver: dict[str, Any] = {}
    for k, v in config.items():
        if k.startswith("_") or k == "sweep":
            continue
        (driver if k in DRIVER_KEYS else train)[k] = v
    return train, driver


def _bad(name: str, value: Any, why: str) -> None:
    raise ValueError(f"TrainConfig.{name}={value!r}: {why}")


def _choice(cfg: TrainConfig, name: str, allowed: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in allowed:
        _bad(name, v, f"must be one of {list(allowed)}")


def _int(cfg: TrainConfig, name: str, *, minimum: int, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        _bad(name, v, "must be an integer" + (" or null" if optional else ""))
    if v < minimum:
        _bad(name, v, f"must be >= {minimum}")
