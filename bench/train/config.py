"""One typed description of a training run, from the sweep file to the trial worker.

`TrainConfig` is frozen and checked once, in ``__post_init__``: every field check and every
check across fields (``lr_end`` against ``lr``, the global batch against the worker count,
the clip length against the preset) raises a `ConfigFieldError` that names the field, so a
sweep file fails at load time with its file, line and field path, never inside a Ray worker.

The hand-off follows Ray's ``train_tune_interop`` pattern: the sweep driver builds each
stage's `TrainConfig` while it reads the sweep file, and Tune's ``param_space`` is
``cfg.to_dict()`` with Tune's grid and search objects put in for the varied fields; the trial
turns the dict back into the dataclass once, in its first line (`from_dict`), and passes the
object down. Nothing below the trial's entry reads training settings from a dict.

A trial's dict also carries what is not training, split off by `split_config`: the driver's
resources (`DriverConfig`: keys `DRIVER_KEYS`) and the sweep's identity (a ``sweep``
sub-dict, `bench.sweep.spec.SweepIdentity`); keys starting with ``_`` are ignored.

Defaults follow the paper's protocol (SPEC, "Training protocol") as its released code runs it:
SGD momentum 0.9, weight decay 1e-4 in torch's terms (the code's Keras ``l2(5e-5)``: the
gradient of 5e-5 * sum(w^2) is 1e-4 * w), learning rate decaying polynomially from 1e-3 to
1e-6 with power 0.9 per step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from bench.data.formats import FORMATS
from bench.data.index import MODALITIES
from bench.errors import ConfigError
from bench.models.native import RECURRENT_IMPLS
from pipelines.routing import BACKENDS

STAGES = ("pretrain", "finetune")
AMP_MODES = ("auto", "bf16", "fp16", "off")   # bench.train.precision says what each means where
CHANNELS_LAST_MODES = ("auto", "on", "off")
# torch.compile modes of the training model ("off": eager). "reduce-overhead" captures the compiled
# graphs, the recurrent loop's steps included, in CUDA graphs (one launch per graph instead of one
# per kernel: the loop's many small kernels are where a GPU step loses time); on a CPU torch skips
# the capture and it is "default".
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
ON_ERROR = ("raise", "skip")


class ConfigFieldError(ConfigError):
    """One field of a config is wrong: ``field`` names it, ``reason`` says why (mentioning any
    other field it was checked against). The sweep file loader turns it into
    ``file:line: field path: reason``."""

    def __init__(self, owner: str, field: str, value: Any, reason: str) -> None:
        self.owner, self.field, self.value, self.reason = owner, field, value, reason
        super().__init__(f"{owner}.{field}={value!r}: {reason}")

    def __reduce__(self) -> tuple:       # crosses process boundaries (Ray trial errors)
        return (type(self), (self.owner, self.field, self.value, self.reason))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training run: data, network, optimisation, distribution, and test hooks."""

    # data
    dataset: str                    # a format of bench.data.formats.FORMATS
    root: str                       # dataset root (for framelist: the folder of the list files)
    train_split: str = "train"
    val_split: str = "valid"
    modality: str = "rgb"           # one of bench.data.index.MODALITIES
    # network
    cell: str = "a"                 # one of bench.models.list_cells()
    preset: str = "paper"           # a bench.models.net.PRESETS name
    recurrent_impl: str = "auto"    # how the recurrent layers run: bench.models.native.RECURRENT_IMPLS
    gate_activation: str = "sigmoid"  # "hard_sigmoid": the released code's gates (bench.models.net.NetConfig)
    init: str = "torch"             # "he_normal": the released code's initialisation (NetConfig.init)
    num_classes: int | None = None  # None -> the training index's class count
    clip_len: int | None = None     # None -> the preset's default; must be even (Res3D halves T)
    image_size: int | None = None   # None -> the preset's default
    # optimisation
    epochs: int
    batch_size: int                 # the global batch: split evenly across num_workers
    lr: float = 1e-3
    lr_end: float = 1e-6
    lr_power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 1e-4      # torch's coefficient; = Keras l2(5e-5), the released code's
    seed: int = 0
    stage: str = "pretrain"         # "pretrain" (from scratch) | "finetune" (from init_checkpoint)
    init_checkpoint: str | None = None  # a checkpoint dir (with state.pt) or a state.pt file
    # execution
    backend: str = "auto"           # a pipelines.routing.BACKENDS name (pipelines.make_loader)
    num_workers: int = 1            # Ray Train workers; > 1 -> DistributedDataParallel
    use_gpu: bool = False
    amp: str = "auto"               # "auto": bf16 from CUDA capability 8.0, fp16 + GradScaler below, fp32 on CPU
    channels_last: str = "auto"     # "auto"/"on" -> channels_last_3d; "off" never
    compile: str = "off"            # COMPILE_MODES; true = "default" (bench perf network --compile)
    data_workers: int = 0           # decode workers inside make_loader
    cache_data: bool = False        # make_loader(cache=pipelines.shared_cache()): decoded once per process
    on_error: str = "raise"         # make_loader(on_error=...); skipped samples -> num_skipped
    # test hooks
    max_train_batches: int | None = None
    max_val_batches: int | None = None
    fail_once_at_epoch: int | None = None  # raise RuntimeError at the start of this epoch ...
    fail_marker: str | None = None         # ... unless this file exists (it is created first)

    def __post_init__(self) -> None:
        _choice(self, "dataset", FORMATS)
        _choice(self, "modality", MODALITIES)
        _choice(self, "stage", STAGES)
        _choice(self, "backend", BACKENDS)
        _choice(self, "on_error", ON_ERROR)
        # YAML and CLI hand booleans for on/off switches; normalise them to the string modes.
        for name, off_on in (("amp", ("off", "bf16")), ("channels_last", ("off", "on")), ("compile", ("off", "default"))):
            v = getattr(self, name)
            if isinstance(v, bool):
                object.__setattr__(self, name, off_on[v])
        _choice(self, "amp", AMP_MODES)
        _choice(self, "channels_last", CHANNELS_LAST_MODES)
        if self.compile in ("True", "true", "False", "false"):      # a boolean as MLflow's params kept it
            object.__setattr__(self, "compile", "default" if self.compile.lower() == "true" else "off")
        _choice(self, "compile", COMPILE_MODES)
        for name in ("root", "train_split", "val_split"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                _bad(self, name, "must be a non-empty string")
        for name in ("use_gpu", "cache_data"):
            if not isinstance(getattr(self, name), bool):
                _bad(self, name, "must be true or false")
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
            _bad(self, "batch_size", f"is the global batch and must be divisible by the "
                                     f"{self.num_workers} workers (num_workers)")
        if self.clip_len is not None and self.clip_len % 2:
            _bad(self, "clip_len", "must be even (Res3D block 3 halves the time axis)")
        for name in ("lr", "lr_end", "lr_power", "momentum", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, str):      # PyYAML reads `1e-3` (no dot) as a string
                try:
                    v = float(v)
                except ValueError:
                    _bad(self, name, "must be a number")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                _bad(self, name, "must be a finite number")
            object.__setattr__(self, name, float(v))
        if not self.lr > 0:
            _bad(self, "lr", "must be > 0")
        if not 0 <= self.lr_end <= self.lr:
            _bad(self, "lr_end", f"must be in [0, lr={self.lr:g}] (the schedule decays from lr to lr_end)")
        if not self.lr_power > 0:
            _bad(self, "lr_power", "must be > 0")
        if not 0 <= self.momentum < 1:
            _bad(self, "momentum", "must be in [0, 1)")
        if not self.weight_decay >= 0:
            _bad(self, "weight_decay", "must be >= 0")
        if self.stage == "finetune" and not self.init_checkpoint:
            _bad(self, "init_checkpoint", "is required when stage is 'finetune'")
        if self.init_checkpoint is not None and not isinstance(self.init_checkpoint, str):
            _bad(self, "init_checkpoint", "must be a path string")
        if self.fail_marker is not None and not isinstance(self.fail_marker, str):
            _bad(self, "fail_marker", "must be a path string")
        if (self.fail_once_at_epoch is None) != (self.fail_marker is None):
            _bad(self, "fail_marker", "fail_once_at_epoch and fail_marker must be given together")
        if self.fail_once_at_epoch is not None and self.fail_once_at_epoch > self.epochs:
            _bad(self, "fail_once_at_epoch", f"must be <= epochs={self.epochs} (it would never fire)")
        if self.backend == "dali-gpu" and not self.use_gpu and self.num_workers > 1:
            _bad(self, "backend", "'dali-gpu' decodes on the workers' GPUs: needs use_gpu (resources.gpu > 0)")
        # The cell registry and the presets live with the network (it imports torch): checked
        # last, lazily, so that every cheap error above is reported without paying for it.
        from bench.models import list_cells  # heavy: torch
        from bench.models.net import PRESETS  # heavy: torch

        _choice(self, "cell", tuple(list_cells(include_controls=True)))   # the paper's cells and the controls
        _choice(self, "preset", tuple(PRESETS))
        _choice(self, "recurrent_impl", tuple(RECURRENT_IMPLS))
        from bench.models.net import GATE_ACTIVATIONS, INITS  # heavy: torch

        _choice(self, "gate_activation", GATE_ACTIVATIONS)
        _choice(self, "init", INITS)
        if self.gate_activation != "sigmoid" and self.recurrent_impl not in ("auto", "steploop"):
            _bad(self, "gate_activation", f"{self.gate_activation!r} runs the recurrence step by step (the fused "
                                          f"kernels compute sigmoid): needs recurrent_impl auto or steploop, "
                                          f"not {self.recurrent_impl!r}")
        if self.clip_len is None and PRESETS[self.preset].frames % 2:
            _bad(self, "clip_len", f"the preset {self.preset!r} has an odd default clip length "
                                   f"{PRESETS[self.preset].frames}: set an even one")

    @property
    def resolved_clip_len(self) -> int:
        """The clip length trained: ``clip_len``, else the preset's."""
        from bench.models.net import PRESETS  # heavy: torch

        return self.clip_len or PRESETS[self.preset].frames

    @property
    def resolved_image_size(self) -> int:
        """The clip size trained: ``image_size``, else the preset's."""
        from bench.models.net import PRESETS  # heavy: torch

        return self.image_size or PRESETS[self.preset].image_size

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown or missing keys are an error that names them all."""
        return _from_dict(cls, d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of str/int/float/bool/None values (JSON-, Tune- and torch.save-safe)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


# Why more than one GPU per training process is refused (DriverConfig; the sweep file's
# resources.gpu, bench.sweep.spec.ResourceSpec): a process trains on one device.
GPUS_PER_PROCESS_REASON = ("a training process uses one GPU, so more than 1 per worker reserves GPUs "
                           "that nothing trains on: for N GPUs use workers: N with gpu: 1 (DDP, one "
                           "rank per GPU)")


# Keys of a trial's dict that the trial's driver reads (`DriverConfig`), not the loop.
DRIVER_KEYS = ("storage_path", "max_failures", "cpus_per_worker", "gpus_per_worker", "custom_per_worker")


@dataclass(frozen=True, kw_only=True)
class DriverConfig:
    """How a trial runs its training, beside what it trains: read by
    `bench.train.trainable.trial_fn`, never by the loop.

    - ``storage_path``: where Ray Train keeps a multi-worker run's checkpoints (None: the Tune
      experiment's folder);
    - ``max_failures``: Ray Train ``FailureConfig(max_failures)`` of a multi-worker run;
    - ``cpus_per_worker``, ``gpus_per_worker``: ``ScalingConfig.resources_per_worker``
      (``gpus_per_worker`` None: one GPU a worker when the run uses GPUs);
    - ``custom_per_worker``: Ray custom resources (name -> amount) that every training process
      reserves: the trial itself with one worker, each Ray Train worker with several (the
      sweep's ``resources.custom``).

    Each training process uses one GPU (DDP: one rank per GPU), so ``gpus_per_worker`` above 1
    is refused: it would reserve GPUs nobody trains on.
    """

    storage_path: str | None = None
    max_failures: int = 0
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    custom_per_worker: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _int(self, "max_failures", minimum=0)
        for name in ("cpus_per_worker", "gpus_per_worker"):
            v = getattr(self, name)
            if v is None and name == "gpus_per_worker":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                _bad(self, name, "must be a number > 0")
            object.__setattr__(self, name, float(v))
        if self.gpus_per_worker is not None and self.gpus_per_worker > 1:
            _bad(self, "gpus_per_worker", GPUS_PER_PROCESS_REASON)
        custom = self.custom_per_worker
        if custom is not None:
            if not isinstance(custom, Mapping):
                _bad(self, "custom_per_worker", "must be a mapping of resource name -> amount")
            out: dict[str, float] = {}
            for k, v in custom.items():
                if not isinstance(k, str) or not k or k.upper() in ("CPU", "GPU"):
                    _bad(self, "custom_per_worker", f"{k!r}: must name a custom resource (not CPU/GPU)")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    _bad(self, "custom_per_worker", f"{k!r}: the amount must be a number > 0")
                out[k] = float(v)
            object.__setattr__(self, "custom_per_worker", out or None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriverConfig:
        return _from_dict(cls, d)

    def to_dict(self) -> dict[str, Any]:
        """The keys that are set (None left out), as they stand in a trial's dict."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(train_fields, driver_fields)`` of a trial's config dict; bookkeeping is dropped.

    Dropped: keys starting with ``_`` and the ``sweep`` sub-dict (the sweep's identity).
    ``driver_fields`` holds the `DRIVER_KEYS` present. Everything else goes to `TrainConfig`.
    """
    train: dict[str, Any] = {}
    driver: dict[str, Any] = {}
    for k, v in config.items():
        if k.startswith("_") or k == "sweep":
            continue
        (driver if k in DRIVER_KEYS else train)[k] = v
    return train, driver


def _from_dict(cls: Any, d: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.name not in d and f.default is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{cls.__name__}: missing required field(s) {missing}")
    return cls(**d)


def _bad(cfg: Any, name: str, why: str) -> None:
    raise ConfigFieldError(type(cfg).__name__, name, getattr(cfg, name), why)


def _choice(cfg: Any, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in allowed:
        _bad(cfg, name, f"must be one of {list(allowed)}")


def _int(cfg: Any, name: str, *, minimum: int, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        _bad(cfg, name, "must be an integer" + (" or null" if optional else ""))
    if v < minimum:
        _bad(cfg, name, f"must be >= {minimum}")
