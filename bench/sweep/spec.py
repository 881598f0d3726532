"""The sweep file: YAML checked once, at load time, into frozen dataclasses.

Why a schema of our own rather than handing the YAML to Ray: a typo in a 20-trial sweep must
fail in the first second with the file, the line and the field path
(``sweep.yaml:14: grid.cells[2]: unknown cell 'e' (known: convlstm, a, b, c, d)``), not
twenty minutes later inside a Ray worker. Unknown keys are rejected for the same reason.

Each stage holds its run as a `bench.train.config.TrainConfig`, built here from the file:
a ``train:`` value is checked by constructing that dataclass (for every cell and modality of
the grid, and for every corner of a search space), so a value the trial would refuse --
``lr_end`` above ``lr``, a batch the workers cannot split, a searched range that crosses a
fixed value -- fails here with the line of the key that set it. The sweep driver then hands
the dataclass to Tune as ``param_space`` (`bench.sweep.run.param_space`).

Example (every key; only ``name``, ``datasets`` and ``stages`` are required)::

    name: demo                       # [A-Za-z0-9][A-Za-z0-9_.-]*; the sweep's folder and MLflow tag
    experiment: gesturebench         # MLflow experiment name
    storage: runs                    # storage root (a folder, or s3://bucket/prefix, gs://...); the sweep lives in <storage>/<name>
    datasets:                        # name -> dataset; stages refer to them by name
      isogd:
        format: isogd                # isogd | jester | framelist
        root: data/synthetic-isogd   # relative paths are relative to the working directory
        train_split: train
        val_split: valid
        synthetic:                   # optional: `bench sweep` generates the data if root is missing
          num_classes: 6             #   (bench.data.synth.synthesize options)
          clips_per_class: 12
          valid_clips_per_class: 4
          size: [64, 48]
          codec: mjpeg
          seed: 0
          length_scale: 0.5
          modalities: [rgb, depth]
    stages:                          # pretrain, finetune, or both in that order
      - name: pretrain
        dataset: isogd               # may be left out when there is one dataset
        epochs: 3                    # each stage may override epochs, clip_len, image_size,
        batch_size: 8                #   batch_size, modalities (a subset of the grid's)
        train: {lr: 0.02}            #   and any key of `train`
      # - name: finetune             # starts each (cell, modality, seed) from the matching
      #   dataset: isogd             #   pretrain trial's final checkpoint (the best one by
      #   init_modality: rgb         #   val_top1 when a search ran several); init_modality:
      #   init_from: runs/other      #   from that modality's trial (Jester has no depth).
                                     #   Alone, it needs init_from: a previous sweep's
                                     #   folder or a checkpoint directory.
    grid:
      cells: all                     # the five cells and the controls; or a list (bench.models.list_cells(include_controls=True))
      modalities: [rgb, depth]
      seeds: [0, 1]
    preset: small                    # bench.models preset: paper | small
    epochs: 3                        # defaults for every stage
    clip_len: 8
    image_size: 48
    train:                           # any other TrainConfig field (lr, weight_decay, momentum,
      lr: 0.01                       #   backend, data_workers, ...). Test hook:
      batch_size: 8                  #   fail_once_at_epoch: N makes every trial raise once at
                                     #   epoch N (marker files in the stage's folder)
    search:                          # optional hyperparameter search; searched keys
      searcher: optuna               #   override the fixed `train` values
                                     # optuna | random | basic (Tune's BasicVariantGenerator);
                                     #   optuna runs one study per (cell, modality, seed), its own
                                     #   TPE history and ASHA brackets; all studies of a stage
                                     #   share one Tune experiment (bench.sweep.search)
      studies: concurrent            # or sequential: one Tune experiment per study (measured
                                     #   against each other by `bench perf search`)
      num_samples: 4                 # trials per (cell, modality, seed)
      seed: 0
      space:
        lr: {loguniform: [1.0e-4, 1.0e-2]}
        weight_decay: {loguniform: [1.0e-6, 1.0e-3]}
        batch_size: {choice: [8, 16]}
        momentum: {uniform: [0.8, 0.95]}
    scheduler:                       # optional early stopping on val_top1 (max) by epoch
      type: asha
      grace_period: 1
      reduction_factor: 2
    resources:                       # per trial
      cpu: 1
      gpu: 0                         # 0, 1 or a share (0.5: two trials share a GPU); at most 1
      workers: 1                     # > 1: DDP through Ray Train, cpu/gpu/custom per worker
      custom: {}                     # Ray custom resources, e.g. {node2_res: 0.1}, per worker
    max_concurrent_trials: 2
    max_failures: 2                  # retries of a crashed trial, from its last checkpoint
    reuse_actors: true
    overrides:                       # optional: train values for some (cell, modality) pairs
      - cells: [a]                   #   (default: every cell), modalities (default: all) and
        modalities: [rgb]            #   stages (default: all) select the trials; `train` is a
        train: {lr_power: 1.0}       #   train block. `bench winners` writes these from a search.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.data.formats import FORMATS
from bench.data.index import MODALITIES
from bench.data.synth import CODECS as SYNTH_CODECS
from bench.data.synth import DIFFICULTY_AXES as SYNTH_DIFFICULTY_AXES
from bench.data.synth import FORMATS as SYNTH_FORMATS
from bench.errors import ConfigError
from bench.storage import RemotePath, StorageError, is_uri, location
from bench.train.config import STAGES, ConfigFieldError, TrainConfig

# TrainConfig fields a sweep sets itself; `train:` must not (they come from the grid, the
# stages, the datasets, `preset` and `resources`).
SWEEP_OWNED = frozenset({
    "dataset", "root", "train_split", "val_split", "modality", "cell", "preset", "clip_len",
    "image_size", "epochs", "seed", "stage", "init_checkpoint", "num_workers", "use_gpu",
})
# TrainConfig fields a `train:` block may set: every other field.
TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - SWEEP_OWNED
SEARCHABLE = ("lr", "weight_decay", "batch_size", "momentum", "lr_end", "lr_power")
DISTRIBUTIONS = ("loguniform", "uniform", "choice")
SEARCHERS = ("basic", "random", "optuna")
STUDIES = ("concurrent", "sequential")
SCHEDULERS = ("asha",)
# Defaults that make a sweep reproducible without a `train:` block: the paper's protocol.
DEFAULT_BATCH_SIZE = 8
# Values the driver sets per trial (Tune's sample_from) in a stage's TrainConfig template.
PER_TRIAL = "<set per trial>"
# Searched keys: how many corners of a search space are checked against TrainConfig at most.
_MAX_CORNERS = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------
# the dataclasses


@dataclass(frozen=True)
class SyntheticSpec:
    """Options for `bench.data.synth.synthesize`, used when the dataset root is missing."""
    num_classes: int = 10
    clips_per_class: int = 20
    valid_clips_per_class: int = 5
    test_clips_per_class: int = 0
    size: tuple[int, int] | None = None       # (W, H); None -> the generator's default
    codec: str = "mjpeg"
    seed: int = 0
    length_scale: float = 1.0
    modalities: tuple[str, ...] = ("rgb", "depth")
    # difficulty axes (bench.data.synth, docs/GRADED.md): levels in 0..1; 0 / false: none
    distractor: float = 0.0
    occlusion: float = 0.0
    tempo: float = 0.0
    noise: float = 0.0
    partial: float = 0.0
    composite: bool = False
    background: float = 1.0                   # the RGB background's contrast (1: saturated colour fields)

    def synthesize_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"modalities": list(self.modalities)}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str
    root: Path                                 # absolute
    train_split: str = "train"
    val_split: str = "valid"
    synthetic: SyntheticSpec | None = None


@dataclass(frozen=True)
class StageSpec:
    name: str                                  # "pretrain" | "finetune"
    dataset: str                               # a key of SweepSpec.datasets
    epochs: int
    clip_len: int | None
    image_size: int | None
    train: TrainConfig                         # the stage's run; the driver varies cell, modality
                                               # and seed (the grid), searched keys, and the
                                               # per-trial values (PER_TRIAL)
    init_from: Path | RemotePath | None = None  # finetune alone: previous sweep dir or checkpoint
    modalities: tuple[str, ...] | None = None  # this stage's subset of grid.modalities
    init_modality: str | None = None           # finetune: start every modality from this one's
                                               # pretrain trial (Jester has no depth)
    per_combo: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
                                               # (cell, modality) -> train values of its trials
                                               # (`overrides:`; each checked as a TrainConfig)

    def config_for(self, cell: str, modality: str, seed: int) -> TrainConfig:
        """The TrainConfig of one (cell, modality, seed), per-trial values aside."""
        return self.train.replace(cell=cell, modality=modality, seed=seed,
                                  **self.per_combo.get((cell, modality), {}))


@dataclass(frozen=True)
class GridSpec:
    cells: tuple[str, ...]
    modalities: tuple[str, ...]
    seeds: tuple[int, ...]

    def combos(self, modalities: Sequence[str] | None = None) -> list[tuple[str, str, int]]:
        mods = self.modalities if modalities is None else modalities
        return [(c, m, s) for c in self.cells for m in mods for s in self.seeds]


@dataclass(frozen=True)
class Distribution:
    kind: str                                  # "loguniform" | "uniform" | "choice"
    args: tuple[Any, ...]                      # (low, high) or the choices

    def to_tune(self) -> Any:
        from ray import tune  # heavy

        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)


@dataclass(frozen=True)
class SearchSpec:
    searcher: str = "basic"
    num_samples: int = 1
    seed: int | None = None
    space: Mapping[str, Distribution] = field(default_factory=dict)
    studies: str = "concurrent"                # optuna: all studies of a stage in one experiment,
                                               # or "sequential" (one experiment per study)


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    metric: str = "val_top1"                   # fixed: the paper's metric
    mode: str = "max"
    time_attr: str = "epoch"                   # Tune's training_iteration restarts on retries


@dataclass(frozen=True)
class ResourceSpec:
    """What one trial reserves: ``cpu``/``gpu`` for its one training process, or for each of
    its ``workers`` DDP processes; plus Ray custom resources."""
    cpu: float = 1.0
    gpu: float = 0.0
    workers: int = 1
    custom: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # ``gpu`` is per training process (the trial's one, or each DDP worker's), and a process
        # trains on exactly one device: so a share below 1 packs trials, never DDP ranks, and
        # more than 1 would reserve GPUs that nothing uses.
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise ConfigFieldError("resources", "gpu", self.gpu, "a fraction of a GPU must be below 1")
        if 0 < self.gpu < 1 and self.workers > 1:
            raise ConfigFieldError("resources", "gpu", self.gpu,
                                   f"a GPU share below 1 with workers={self.workers} puts several DDP "
                                   "ranks on one GPU, which NCCL refuses (one GPU per rank): use gpu: 1 "
                                   "per worker, or workers: 1 to pack trials onto a GPU")
        if self.gpu > 1:
            g = int(self.gpu)
            raise ConfigFieldError("resources", "gpu", self.gpu,
                                   f"gpu is per worker and a worker trains on one GPU: gpu: {g} with "
                                   f"workers: {self.workers} reserves {g * self.workers} GPUs and trains "
                                   f"on {self.workers}; for {g * self.workers} GPUs use workers: "
                                   f"{g * self.workers} with gpu: 1 (DDP, one rank per GPU)")

    @property
    def use_gpu(self) -> bool:
        return self.gpu > 0


@dataclass(frozen=True)
class SweepIdentity:
    """Which sweep a trial belongs to: the ``sweep`` sub-dict of every trial's config (Tune's
    ``params.json``), from which tracking tags the trial's MLflow run."""
    name: str
    id: str
    unit: str
    dataset: str
    dir: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    datasets: Mapping[str, DatasetSpec]
    stages: tuple[StageSpec, ...]
    grid: GridSpec
    preset: str = "paper"
    experiment: str = "gesturebench"
    storage: Path | RemotePath = Path("runs")  # absolute after load; a URI's `RemotePath` (bench.storage)
    search: SearchSpec | None = None
    scheduler: SchedulerSpec | None = None
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    reuse_actors: bool = True
    source: Path | RemotePath | None = None    # the file it came from
    text: str = ""                             # the file's text (kept with the sweep's results)

    @property
    def sweep_dir(self) -> Path | RemotePath:
        return self.storage / self.name

    def stage(self, name: str) -> StageSpec | None:
        return next((s for s in self.stages if s.name == name), None)

    def modalities(self, stage: StageSpec) -> tuple[str, ...]:
        return stage.modalities or self.grid.modalities

    def combos(self, stage: StageSpec) -> list[tuple[str, str, int]]:
        return self.grid.combos(self.modalities(stage))

    def with_storage(self, storage: str | Path | RemotePath) -> SweepSpec:
        try:
            return dataclasses.replace(self, storage=location(storage))
        except StorageError as e:
            raise ConfigError(f"--storage {e}") from None

    def is_synthetic(self, dataset: str) -> bool:
        ds = self.datasets[dataset]
        return ds.synthetic is not None or (ds.root / "SYNTHETIC.json").is_file()


# ---------------------------------------------------------------------------------------------
# loading


def load_spec(path: str | Path, *, base_dir: str | Path | None = None) -> SweepSpec:
    """Read and check a sweep file; relative paths in it resolve against ``base_dir`` (cwd)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sweep file ({e.strerror or e})") from None
    return parse_spec(text, source=path, base_dir=base_dir)


def parse_spec(text: str, *, source: str | Path | RemotePath = "<sweep>", base_dir: str | Path | None = None
               ) -> SweepSpec:
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    data = _to_python(node, (), lines, loader, source) if node is not None else None
    ctx = _Ctx(str(source), lines)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    spec = _build(data, ctx, base.resolve())
    if source == "<sweep>":
        where = None
    else:
        where = source if isinstance(source, RemotePath) else location(source) if is_uri(source) else Path(source)
    return dataclasses.replace(spec, source=where, text=text)


def _to_python(node: Any, path: tuple, lines: dict[tuple, int], loader: Any, source: Any) -> Any:
    """YAML node -> plain Python, recording each value's line under its field path."""
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for k, v in node.value:
            key = loader.construct_object(k, deep=True)
            if key in out:
                raise ConfigError(f"{source}:{k.start_mark.line + 1}: {_fmt(path + (key,))}: "
                                     "duplicate key")
            out[key] = _to_python(v, path + (key,), lines, loader, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, path + (i,), lines, loader, source) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _fmt(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


@dataclass(frozen=True)
class _Ctx:
    source: str
    lines: Mapping[tuple, int]

    def error(self, path: tuple, why: str) -> ConfigError:
        p = path
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {_fmt(path)}: {why}")


def _mapping(ctx: _Ctx, value: Any, path: tuple, *, required: Sequence[str] = (),
             optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(path, f"must be a mapping, got {_kind(value)}")
    known = list(required) + list(optional)
    for k in value:
        if k not in known:
            raise ctx.error(path + (k,), f"unknown key (known: {', '.join(known)})")
    for k in required:
        if k not in value:
            raise ctx.error(path, f"missing required key {k!r}")
    return value


def _kind(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: f"the string {v!r}", bool: f"{v}"}.get(type(v), repr(v))


def _int(ctx: _Ctx, v: Any, path: tuple, *, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.error(path, f"must be an integer, got {_kind(v)}")
    if minimum is not None and v < minimum:
        raise ctx.error(path, f"must be >= {minimum}, got {v}")
    return v


def _float(ctx: _Ctx, v: Any, path: tuple, *, minimum: float | None = None,
           positive: bool = False) -> float:
    if isinstance(v, str):            # PyYAML reads `1e-3` (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            raise ctx.error(path, f"must be a number, got {_kind(v)}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ctx.error(path, f"must be a number, got {_kind(v)}")
    if positive and not v > 0:
        raise ctx.error(path, f"must be > 0, got {v}")
    if minimum is not None and v < minimum:
        raise ctx.error(path, f"must be >= {minimum}, got {v}")
    return float(v)


def _str(ctx: _Ctx, v: Any, path: tuple, *, choices: Sequence[str] | None = None) -> str:
    if not isinstance(v, str) or not v:
        raise ctx.error(path, f"must be a non-empty string, got {_kind(v)}")
    if choices is not None and v not in choices:
        raise ctx.error(path, f"unknown value {v!r} (known: {', '.join(choices)})")
    return v


def _bool(ctx: _Ctx, v: Any, path: tuple) -> bool:
    if not isinstance(v, bool):
        raise ctx.error(path, f"must be true or false, got {_kind(v)}")
    return v


def _list(ctx: _Ctx, v: Any, path: tuple, *, nonempty: bool = True) -> list[Any]:
    if not isinstance(v, list):
        raise ctx.error(path, f"must be a list, got {_kind(v)}")
    if nonempty and not v:
        raise ctx.error(path, "must not be empty")
    return v


def _unique(ctx: _Ctx, items: list[Any], path: tuple) -> None:
    seen: set[Any] = set()
    for i, x in enumerate(items):
        if x in seen:
            raise ctx.error(path + (i,), f"duplicate value {x!r}")
        seen.add(x)


def _path(v: Any, base: Path) -> Path:
    p = Path(v).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


_TOP_REQUIRED = ("name", "datasets", "stages")
_TOP_OPTIONAL = ("experiment", "storage", "grid", "preset", "epochs", "clip_len", "image_size", "overrides",
                 "train", "search", "scheduler", "resources", "max_concurrent_trials",
                 "max_failures", "reuse_actors")


def _build(data: Any, ctx: _Ctx, base: Path) -> SweepSpec:
    top = _mapping(ctx, data, (), required=_TOP_REQUIRED, optional=_TOP_OPTIONAL)
    name = _str(ctx, top["name"], ("name",))
    if not _NAME_RE.match(name):
        raise ctx.error(("name",), f"{name!r} must match {_NAME_RE.pattern} (it names a folder)")
    experiment = _str(ctx, top.get("experiment", "gesturebench"), ("experiment",))
    storage_v = _str(ctx, top.get("storage", "runs"), ("storage",))
    try:
        storage = location(storage_v, base=base)
    except StorageError as e:
        raise ctx.error(("storage",), str(e)) from None

    preset = _str(ctx, top.get("preset", "paper"), ("preset",))
    from bench.models import PRESETS  # heavy: torch

    if preset not in PRESETS:
        raise ctx.error(("preset",), f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")

    datasets = _datasets(ctx, top["datasets"], base)
    grid = _grid(ctx, top.get("grid", {}))
    train_defaults = _train_block(ctx, top.get("train", {}), ("train",))
    defaults = {
        "epochs": _int(ctx, top["epochs"], ("epochs",), minimum=1) if "epochs" in top else None,
        "clip_len": _clip_len(ctx, top["clip_len"], ("clip_len",)) if top.get("clip_len") is not None else None,
        "image_size": (_int(ctx, top["image_size"], ("image_size",), minimum=8)
                       if top.get("image_size") is not None else None),
    }
    resources = _resources(ctx, top.get("resources", {}))
    stages = _stages(ctx, top["stages"], datasets, grid, top, defaults, train_defaults, base,
                     preset=preset, resources=resources)

    # every grid modality must exist in every stage's dataset when we generate it ourselves
    for i, st in enumerate(stages):
        syn = datasets[st.dataset].synthetic
        if syn is not None:
            for j, m in enumerate(grid.modalities):
                if m not in syn.modalities and m in (st.modalities or grid.modalities):
                    raise ctx.error(("grid", "modalities", j),
                                    f"modality {m!r} is not generated for dataset {st.dataset!r} "
                                    f"(its synthetic.modalities: {list(syn.modalities)})")

    if top.get("overrides") is not None:
        stages = _overrides(ctx, top["overrides"], stages, grid)
    search = _search(ctx, top["search"]) if top.get("search") is not None else None
    if search is not None:
        for i, st in enumerate(stages):
            _check_search(ctx, search, st, i)
            for (c, m), values in st.per_combo.items():
                both = sorted(set(values) & set(search.space))
                if both:
                    raise ctx.error(("overrides",), f"{', '.join(both)} is searched (search.space) and "
                                    f"fixed for {c}/{m}: drop one")
    scheduler = _scheduler(ctx, top["scheduler"]) if top.get("scheduler") is not None else None
    if scheduler is not None:
        for i, st in enumerate(stages):
            if scheduler.grace_period > st.epochs:
                raise ctx.error(("scheduler", "grace_period"),
                                f"{scheduler.grace_period} exceeds stages[{i}] ({st.name}) epochs "
                                f"{st.epochs}")
    mct = top.get("max_concurrent_trials")
    if mct is not None:
        mct = _int(ctx, mct, ("max_concurrent_trials",), minimum=1)
    max_failures = _int(ctx, top.get("max_failures", 2), ("max_failures",), minimum=0)
    reuse = _bool(ctx, top.get("reuse_actors", True), ("reuse_actors",))
    return SweepSpec(name=name, datasets=datasets, stages=stages, grid=grid, preset=preset,
                     experiment=experiment, storage=storage, search=search, scheduler=scheduler,
                     resources=resources, max_concurrent_trials=mct, max_failures=max_failures,
                     reuse_actors=reuse)


def _clip_len(ctx: _Ctx, v: Any, path: tuple) -> int:
    n = _int(ctx, v, path, minimum=2)
    if n % 2:
        raise ctx.error(path, f"must be even (Res3D halves the time axis), got {n}")
    return n


def _datasets(ctx: _Ctx, v: Any, base: Path) -> dict[str, DatasetSpec]:
    path = ("datasets",)
    if not isinstance(v, dict) or not v:
        raise ctx.error(path, f"must be a non-empty mapping of name -> dataset, got {_kind(v)}")
    out: dict[str, DatasetSpec] = {}
    for name, d in v.items():
        p = path + (name,)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ctx.error(p, f"dataset name {name!r} must match {_NAME_RE.pattern}")
        _mapping(ctx, d, p, required=("format", "root"),
                 optional=("train_split", "val_split", "synthetic"))
        fmt = _str(ctx, d["format"], p + ("format",), choices=FORMATS)
        root = _path(_str(ctx, d["root"], p + ("root",)), base)
        syn = None
        if d.get("synthetic") is not None:
            if fmt not in SYNTH_FORMATS:
                raise ctx.error(p + ("synthetic",),
                                f"the generator writes {', '.join(SYNTH_FORMATS)} layouts, not {fmt!r}")
            syn = _synthetic(ctx, d["synthetic"], p + ("synthetic",))
        out[name] = DatasetSpec(
            name=name, format=fmt, root=root,
            train_split=_str(ctx, d.get("train_split", "train"), p + ("train_split",)),
            val_split=_str(ctx, d.get("val_split", "valid"), p + ("val_split",)),
            synthetic=syn)
    return out


def _synthetic(ctx: _Ctx, v: Any, path: tuple) -> SyntheticSpec:
    keys = [f.name for f in dataclasses.fields(SyntheticSpec)]
    if v is True:
        return SyntheticSpec()
    _mapping(ctx, v, path, optional=keys)
    kw: dict[str, Any] = {}
    for k in ("num_classes", "clips_per_class", "valid_clips_per_class", "test_clips_per_class", "seed"):
        if k in v:
            kw[k] = _int(ctx, v[k], path + (k,),
                         minimum=2 if k == "num_classes" else (1 if k == "clips_per_class" else 0))
    if "size" in v:
        s = _list(ctx, v["size"], path + ("size",))
        if len(s) != 2:
            raise ctx.error(path + ("size",), f"must be [width, height], got {s}")
        w, h = (_int(ctx, x, path + ("size", i), minimum=32) for i, x in enumerate(s))
        if w % 2 or h % 2:
            raise ctx.error(path + ("size",), f"width and height must be even, got {w}x{h}")
        kw["size"] = (w, h)
    if "codec" in v:
        kw["codec"] = _str(ctx, v["codec"], path + ("codec",), choices=SYNTH_CODECS)
    if "length_scale" in v:
        kw["length_scale"] = _float(ctx, v["length_scale"], path + ("length_scale",), positive=True)
    if "modalities" in v:
        mods = _list(ctx, v["modalities"], path + ("modalities",))
        for i, m in enumerate(mods):
            _str(ctx, m, path + ("modalities", i), choices=("rgb", "depth"))
        _unique(ctx, mods, path + ("modalities",))
        if "rgb" not in mods:
            raise ctx.error(path + ("modalities",), "must include 'rgb'")
        kw["modalities"] = tuple(mods)
    for k in (*SYNTH_DIFFICULTY_AXES, "background"):     # levels in 0..1 (background: the scene's)
        if k in v:
            x = _float(ctx, v[k], path + (k,), minimum=0)
            if x > 1:
                raise ctx.error(path + (k,), f"must be in 0..1, got {x}")
            kw[k] = x
    if "composite" in v:
        c = v["composite"]
        if not isinstance(c, bool) and not (isinstance(c, int) and c in (0, 1)):
            raise ctx.error(path + ("composite",), f"must be true/false or 0/1, got {_kind(c)}")
        kw["composite"] = bool(c)
    return SyntheticSpec(**kw)


def _grid(ctx: _Ctx, v: Any) -> GridSpec:
    path = ("grid",)
    _mapping(ctx, v, path, optional=("cells", "modalities", "seeds"))
    from bench.models import list_cells  # heavy: torch

    # "all" is the paper's cells and the order-blind controls (bench/models/controls.py): a
    # control trained beside the cells on the same data is the floor that says whether a cell
    # reads frame order. An explicit list may name a control too.
    known = list_cells(include_controls=True)
    cells_v = v.get("cells", "all")
    if cells_v == "all":
        cells = list(known)
    else:
        cells = _list(ctx, cells_v, path + ("cells",))
        for i, c in enumerate(cells):
            if not isinstance(c, str) or c not in known:
                raise ctx.error(path + ("cells", i), f"unknown cell {c!r} (known: {', '.join(known)})")
        _unique(ctx, cells, path + ("cells",))
    mods = _list(ctx, v.get("modalities", ["rgb"]), path + ("modalities",))
    for i, m in enumerate(mods):
        if m not in MODALITIES:
            raise ctx.error(path + ("modalities", i),
                            f"unknown modality {m!r} (known: {', '.join(MODALITIES)})")
    _unique(ctx, mods, path + ("modalities",))
    seeds = _list(ctx, v.get("seeds", [0]), path + ("seeds",))
    for i, s in enumerate(seeds):
        _int(ctx, s, path + ("seeds", i), minimum=0)
    _unique(ctx, seeds, path + ("seeds",))
    return GridSpec(tuple(cells), tuple(mods), tuple(seeds))


def _train_block(ctx: _Ctx, v: Any, path: tuple) -> dict[str, Any]:
    """The keys of a ``train:`` block as written; their values are checked by `TrainConfig`."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ctx.error(path, f"must be a mapping, got {_kind(v)}")
    for k in v:
        if k in SWEEP_OWNED:
            raise ctx.error(path + (k,), "is set by the sweep itself (use the top-level or stage key, or grid)")
        if k not in TRAIN_KEYS:
            raise ctx.error(path + (k,), f"unknown key (known: {', '.join(sorted(TRAIN_KEYS))})")
    return dict(v)


def _field_path(f: str, *, stage: Mapping[str, Any], i: int, top: Mapping[str, Any], dataset: str) -> tuple:
    """Where in the sweep file a TrainConfig field of stage ``i`` was set (or would be)."""
    if f in (stage.get("train") or {}):
        return ("stages", i, "train", f)
    if f in stage and f in ("epochs", "clip_len", "image_size", "batch_size"):
        return ("stages", i, f)
    if f in (top.get("train") or {}):
        return ("train", f)
    if f in top and f in ("epochs", "clip_len", "image_size", "preset"):
        return (f,)
    where = {"num_workers": ("resources", "workers"), "use_gpu": ("resources", "gpu"),
             "cell": ("grid", "cells"), "seed": ("grid", "seeds"),
             "modality": ("stages", i, "modalities") if "modalities" in stage else ("grid", "modalities"),
             "dataset": ("datasets", dataset, "format"), "root": ("datasets", dataset, "root"),
             "train_split": ("datasets", dataset, "train_split"),
             "val_split": ("datasets", dataset, "val_split"),
             "init_checkpoint": ("stages", i, "init_from")}
    return where.get(f, ("stages", i, "train", f) if f in TRAIN_KEYS else ("stages", i))


def _stage_config(ctx: _Ctx, fields: dict[str, Any], *, grid: GridSpec, modalities: Sequence[str],
                  stage: Mapping[str, Any], i: int, top: Mapping[str, Any], dataset: str) -> TrainConfig:
    """The stage's `TrainConfig`, checked for every cell and modality of the grid: a bad value
    fails here, at load time, at the line that set it."""
    def build(**kw: Any) -> TrainConfig:
        try:
            return TrainConfig(**(fields | kw))
        except ConfigFieldError as e:
            path = _field_path(e.field, stage=stage, i=i, top=top, dataset=dataset)
            raise ctx.error(path, f"{e.reason}, got {_kind(e.value)}") from None
        except TypeError as e:            # a field TrainConfig does not know (cannot happen from YAML)
            raise ctx.error(("stages", i), str(e)) from None

    cfg = build(cell=grid.cells[0], modality=modalities[0], seed=grid.seeds[0])
    for cell in grid.cells[1:]:
        build(cell=cell, modality=modalities[0], seed=grid.seeds[0])
    for m in modalities[1:]:
        build(cell=grid.cells[0], modality=m, seed=grid.seeds[0])
    return cfg


def _stages(ctx: _Ctx, v: Any, datasets: Mapping[str, DatasetSpec], grid: GridSpec, top: Mapping[str, Any],
            defaults: Mapping[str, Any], train_defaults: Mapping[str, Any], base: Path, *, preset: str,
            resources: ResourceSpec) -> tuple[StageSpec, ...]:
    path = ("stages",)
    items = _list(ctx, v, path)
    out: list[StageSpec] = []
    for i, s in enumerate(items):
        p = path + (i,)
        if isinstance(s, str):        # shorthand: `- pretrain` when there is a single dataset
            s = {"name": s}
        _mapping(ctx, s, p, required=("name",),
                 optional=("dataset", "epochs", "clip_len", "image_size", "batch_size",
                           "modalities", "init_from", "init_modality", "train"))
        name = _str(ctx, s["name"], p + ("name",), choices=STAGES)
        if "dataset" in s:
            ds = _str(ctx, s["dataset"], p + ("dataset",))
            if ds not in datasets:
                raise ctx.error(p + ("dataset",), f"unknown dataset {ds!r} (defined: {', '.join(datasets)})")
        elif len(datasets) == 1:
            ds = next(iter(datasets))
        else:
            raise ctx.error(p, f"missing required key 'dataset' (defined: {', '.join(datasets)})")
        epochs = s.get("epochs", defaults["epochs"])
        if epochs is None:
            raise ctx.error(p, "missing 'epochs' (set it here or at the top level)")
        epochs = _int(ctx, epochs, p + ("epochs",) if "epochs" in s else ("epochs",), minimum=1)
        clip_len = (_clip_len(ctx, s["clip_len"], p + ("clip_len",))
                    if s.get("clip_len") is not None else defaults["clip_len"])
        image_size = (_int(ctx, s["image_size"], p + ("image_size",), minimum=8)
                      if s.get("image_size") is not None else defaults["image_size"])
        train = dict(train_defaults) | _train_block(ctx, s.get("train", {}), p + ("train",))
        if "batch_size" in s:
            train["batch_size"] = _int(ctx, s["batch_size"], p + ("batch_size",), minimum=1)
        train.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        init_from = None
        if s.get("init_from") is not None:
            if name != "finetune":
                raise ctx.error(p + ("init_from",), "only a finetune stage starts from a checkpoint")
            try:
                init_from = location(_str(ctx, s["init_from"], p + ("init_from",)), base=base)
            except StorageError as e:
                raise ctx.error(p + ("init_from",), str(e)) from None
        mods = None
        if s.get("modalities") is not None:
            mods = _list(ctx, s["modalities"], p + ("modalities",))
            for j, m in enumerate(mods):
                if m not in grid.modalities:
                    raise ctx.error(p + ("modalities", j),
                                    f"{m!r} is not in grid.modalities {list(grid.modalities)}")
            _unique(ctx, mods, p + ("modalities",))
            mods = tuple(mods)
        init_mod = None
        if s.get("init_modality") is not None:
            if name != "finetune":
                raise ctx.error(p + ("init_modality",), "only a finetune stage starts from a checkpoint")
            init_mod = _str(ctx, s["init_modality"], p + ("init_modality",), choices=MODALITIES)
        d = datasets[ds]
        fields = dict(train, dataset=d.format, root=str(d.root), train_split=d.train_split,
                      val_split=d.val_split, preset=preset, epochs=epochs, clip_len=clip_len,
                      image_size=image_size, stage=name, num_workers=resources.workers,
                      use_gpu=resources.use_gpu)
        if name == "finetune":       # each trial's from its pretrain trial (or from init_from)
            fields["init_checkpoint"] = PER_TRIAL
        if fields.get("fail_once_at_epoch") is not None and fields.get("fail_marker") is None:
            fields["fail_marker"] = PER_TRIAL
        cfg = _stage_config(ctx, fields, grid=grid, modalities=mods or grid.modalities, stage=s, i=i,
                            top=top, dataset=ds)
        out.append(StageSpec(name=name, dataset=ds, epochs=epochs, clip_len=clip_len,
                             image_size=image_size, train=cfg, init_from=init_from,
                             modalities=mods, init_modality=init_mod))
    names = [s.name for s in out]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ctx.error(path + (i, "name"), f"stage {n!r} appears twice")
    if names == ["finetune", "pretrain"]:
        raise ctx.error(path, "pretrain must come before finetune")
    if names == ["finetune"] and out[0].init_from is None:
        raise ctx.error(path + (0,), "a finetune stage without a pretrain stage needs 'init_from' "
                        "(a previous sweep's folder or a checkpoint directory)")
    if len(out) == 2:
        pre, fine = out
        need = {fine.init_modality} if fine.init_modality else set(fine.modalities or grid.modalities)
        have = set(pre.modalities or grid.modalities)
        if not need <= have:
            raise ctx.error(path + (1,), f"finetune starts from pretrain modalities {sorted(need)} but "
                            f"the pretrain stage runs only {sorted(have)} (set init_modality)")
    if len(out) == 2 and out[1].init_from is not None:
        raise ctx.error(path + (1, "init_from"), "the finetune stage starts from this sweep's pretrain "
                        "trials; drop init_from or the pretrain stage")
    return tuple(out)


def _distribution(ctx: _Ctx, key: str, v: Any, path: tuple) -> Distribution:
    if not isinstance(v, dict) or len(v) != 1:
        raise ctx.error(path, f"must be one of {{{': [...], '.join(DISTRIBUTIONS)}: [...]}}, got {_kind(v)}")
    kind, args = next(iter(v.items()))
    if kind not in DISTRIBUTIONS:
        raise ctx.error(path + (kind,), f"unknown distribution (known: {', '.join(DISTRIBUTIONS)})")
    p = path + (kind,)
    args = _list(ctx, args, p)
    integer = key == "batch_size"
    if kind == "choice":
        vals = [(_int(ctx, a, p + (i,), minimum=1) if integer else _float(ctx, a, p + (i,), minimum=0))
                for i, a in enumerate(args)]
        _unique(ctx, vals, p)
        return Distribution(kind, tuple(vals))
    if integer:
        raise ctx.error(p, "batch_size is searched with choice: [...]")
    if len(args) != 2:
        raise ctx.error(p, f"must be [low, high], got {args}")
    lo, hi = (_float(ctx, a, p + (i,), minimum=0) for i, a in enumerate(args))
    if not lo < hi:
        raise ctx.error(p, f"low must be < high, got [{lo}, {hi}]")
    if kind == "loguniform" and not lo > 0:
        raise ctx.error(p + (0,), f"loguniform needs low > 0, got {lo}")
    if key == "momentum" and hi >= 1:
        raise ctx.error(p + (1,), f"momentum must stay below 1, got {hi}")
    return Distribution(kind, (lo, hi))


def _search(ctx: _Ctx, v: Any) -> SearchSpec:
    path = ("search",)
    _mapping(ctx, v, path, required=("space",), optional=("searcher", "num_samples", "seed", "studies"))
    searcher = _str(ctx, v.get("searcher", "basic"), path + ("searcher",), choices=SEARCHERS)
    num = _int(ctx, v.get("num_samples", 1), path + ("num_samples",), minimum=1)
    seed = _int(ctx, v["seed"], path + ("seed",), minimum=0) if v.get("seed") is not None else None
    space_v = v["space"]
    if not isinstance(space_v, dict) or not space_v:
        raise ctx.error(path + ("space",), f"must be a non-empty mapping, got {_kind(space_v)}")
    space: dict[str, Distribution] = {}
    for k, d in space_v.items():
        if k not in SEARCHABLE:
            raise ctx.error(path + ("space", k), f"cannot be searched (searchable: {', '.join(SEARCHABLE)})")
        space[k] = _distribution(ctx, k, d, path + ("space", k))
    if searcher == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ctx.error(path + ("searcher",), "optuna is not installed (pip install optuna)") from None
    studies = _str(ctx, v.get("studies", "concurrent"), path + ("studies",), choices=STUDIES)
    return SearchSpec(searcher=searcher, num_samples=num, seed=seed, space=space, studies=studies)


def _overrides(ctx: _Ctx, v: Any, stages: tuple[StageSpec, ...], grid: GridSpec) -> tuple[StageSpec, ...]:
    """Attach each ``overrides:`` entry's train values to the (cell, modality) pairs it selects,
    checking every resulting TrainConfig (later entries win where two select one pair)."""
    path = ("overrides",)
    per_stage: list[dict[tuple[str, str], dict[str, Any]]] = [{} for _ in stages]
    for j, o in enumerate(_list(ctx, v, path)):
        p = path + (j,)
        _mapping(ctx, o, p, required=("train",), optional=("cells", "modalities", "stages"))
        cells = _list(ctx, o.get("cells", list(grid.cells)), p + ("cells",))
        for k, c in enumerate(cells):
            if c not in grid.cells:
                raise ctx.error(p + ("cells", k), f"{c!r} is not in grid.cells {list(grid.cells)}")
        mods = _list(ctx, o.get("modalities", list(grid.modalities)), p + ("modalities",))
        for k, m in enumerate(mods):
            if m not in grid.modalities:
                raise ctx.error(p + ("modalities", k), f"{m!r} is not in grid.modalities {list(grid.modalities)}")
        names = _list(ctx, o.get("stages", [st.name for st in stages]), p + ("stages",))
        for k, n in enumerate(names):
            if n not in [st.name for st in stages]:
                raise ctx.error(p + ("stages", k), f"unknown stage {n!r} (this sweep runs "
                                f"{', '.join(st.name for st in stages)})")
        train = _train_block(ctx, o["train"], p + ("train",))
        for i, st in enumerate(stages):
            if st.name not in names:
                continue
            for c in cells:
                for m in mods:
                    per_stage[i].setdefault((c, m), {}).update(train)
                    if m not in (st.modalities or grid.modalities):
                        continue
                    try:
                        st.train.replace(cell=c, modality=m, **per_stage[i][(c, m)])
                    except ConfigFieldError as e:
                        f = e.field if e.field in train else next(iter(train), None)
                        raise ctx.error(p + ("train", f) if f else p,
                                        f"{e.reason}, got {_kind(e.value)} (for {c}/{m} in stage {st.name})") from None
    return tuple(dataclasses.replace(st, per_combo={k: dict(v) for k, v in per_stage[i].items()})
                 for i, st in enumerate(stages))


def _check_search(ctx: _Ctx, search: SearchSpec, stage: StageSpec, i: int) -> None:
    """Refuse a search space that can draw a value the stage's `TrainConfig` rejects: every
    corner of the space (both bounds of each range, every choice) is built as a config, so
    bounds that cross a fixed value (``lr`` below ``lr_end``) or a batch the workers cannot
    split fail here. The checks are bounds and divisibility, so the corners decide them."""
    import itertools

    keys = list(search.space)
    values = [list(search.space[k].args) for k in keys]
    corners = itertools.islice(itertools.product(*values), _MAX_CORNERS)
    for corner in corners:
        draw = dict(zip(keys, corner))
        try:
            stage.train.replace(**draw)
        except ConfigFieldError as e:
            key = e.field if e.field in draw else keys[0]
            drawn = ", ".join(f"{k}={v!r}" for k, v in draw.items())
            raise ctx.error(("search", "space", key),
                            f"can draw {drawn}, which stages[{i}] ({stage.name}) refuses: "
                            f"{e.field}: {e.reason}, got {_kind(e.value)}") from None


def _scheduler(ctx: _Ctx, v: Any) -> SchedulerSpec:
    path = ("scheduler",)
    _mapping(ctx, v, path, optional=("type", "grace_period", "reduction_factor"))
    typ = _str(ctx, v.get("type", "asha"), path + ("type",), choices=SCHEDULERS)
    gp = _int(ctx, v.get("grace_period", 1), path + ("grace_period",), minimum=1)
    rf = _float(ctx, v.get("reduction_factor", 2), path + ("reduction_factor",))
    if not rf > 1:
        raise ctx.error(path + ("reduction_factor",), f"must be > 1, got {rf}")
    return SchedulerSpec(type=typ, grace_period=gp, reduction_factor=rf)


def _resources(ctx: _Ctx, v: Any) -> ResourceSpec:
    path = ("resources",)
    _mapping(ctx, v, path, optional=("cpu", "gpu", "workers", "custom"))
    cpu = _float(ctx, v.get("cpu", 1), path + ("cpu",), positive=True)
    gpu = _float(ctx, v.get("gpu", 0), path + ("gpu",), minimum=0)
    workers = _int(ctx, v.get("workers", 1), path + ("workers",), minimum=1)
    custom_v = v.get("custom") or {}
    if not isinstance(custom_v, dict):
        raise ctx.error(path + ("custom",), f"must be a mapping of resource -> amount, got {_kind(custom_v)}")
    custom: dict[str, float] = {}
    for k, x in custom_v.items():
        if not isinstance(k, str) or k.upper() in ("CPU", "GPU"):
            raise ctx.error(path + ("custom", k), "use resources.cpu / resources.gpu for these")
        custom[k] = _float(ctx, x, path + ("custom", k), positive=True)
    try:
        return ResourceSpec(cpu=cpu, gpu=gpu, workers=workers, custom=custom)
    except ConfigFieldError as e:
        raise ctx.error(path + (e.field,), f"{e.reason}, got {_kind(e.value)}") from None
