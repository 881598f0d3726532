"""The sweep driver: datasets, Ray, one Tune experiment per stage, MLflow, the leaderboard.

Flow of `run_sweep`:

1. check the tracking store (a dead server fails here, in about a second, before Ray);
2. generate any missing synthetic dataset the sweep names (into a temporary folder renamed
   into place, so a killed generator leaves no half dataset behind);
3. open the sweep folder ``<storage>/<name>`` (``sweep.json`` holds its id: a resumed sweep
   keeps its MLflow parent run and trial runs);
4. start a local Ray, or connect to ``--address`` / ``$RAY_ADDRESS``;
5. per stage, run its Tune experiment(s) ("units"): the grid of cells x modalities x seeds
   (``tune.grid_search``), optional search distributions (Tune's BasicVariantGenerator or a
   seeded random one); with Optuna, which refuses ``grid_search`` in its space, one
   experiment per (cell, modality, seed) with ``OptunaSearch`` inside. The finetune stage's
   trial for (cell, modality, seed) starts from the matching pretrain trial's final
   checkpoint (``init_checkpoint``);
6. print and save the leaderboard.

Failures: ``FailureConfig(max_failures)`` retries a crashed trial from its last checkpoint.
``--resume`` restores each unfinished experiment with ``Tuner.restore(resume_unfinished=True,
resume_errored=True)`` and skips the finished ones. Restore granularity is Tune's
experiment snapshot period, so the driver sets ``TUNE_GLOBAL_CHECKPOINT_S=1``
(with Tune's default period a killed driver's trials can restart from epoch 0).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench.data.formats import load_index
from bench.data.synth import synthesize
from bench.errors import SweepError
from bench.sweep.leaderboard import format_table, leaderboard, to_csv
from bench.sweep.results import (
    SWEEP_YAML,
    SweepPath,
    TrialRecord,
    final_checkpoints,
    read_meta,
    read_sweep,
    read_unit,
    stage_barrier,
    write_meta,
)
from bench.sweep.spec import PER_TRIAL, StageSpec, SweepIdentity, SweepSpec, SyntheticSpec
from bench.sweep.trainable import prune_trial_dir, trainable
from bench.tracking import records
from bench.tracking.store import Tracker
from bench.tracking.uri import (
    TrackingUnavailable,
    apply_http_env,
    check_tracking,
    resolve_tracking_uri,
)
from bench.train.config import DriverConfig, TrainConfig
from bench.train.trainable import trial_resources as reserve

# Quiet, fast Ray: no auth prompt, no usage stats, the classic progress output, Tune's
# experiment snapshot every second (restore granularity), no tfevents loggers. Set before the
# driver imports Ray; a local Ray started here passes them on to its workers.
QUIET_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",   # no tfevents; Json/CSV loggers added explicitly
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
METRIC, MODE = "val_top1", "max"


@dataclass(frozen=True)
class Unit:
    """One Tune experiment of the sweep."""
    name: str
    stage: StageSpec
    combo: tuple[str, str, int] | None = None     # fixed (cell, modality, seed): one study alone
    studies: bool = False                         # every (cell, modality, seed) study of the stage
                                                  # in this one experiment (bench.sweep.search)


@dataclass
class SweepOutcome:
    sweep_dir: SweepPath
    sweep_id: str
    trials: list[TrialRecord] = field(default_factory=list)
    errors: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    num_classes: int | None = None
    leaderboard: list[Any] = field(default_factory=list)
    parent_run_id: str | None = None
    estimate: dict[str, Any] | None = None     # the dry run's (bench.sweep.dryrun), made before the start

    @property
    def ok(self) -> bool:
        return not self.errors and not self.interrupted


def apply_quiet_env() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


# ---------------------------------------------------------------------------------------------
# planning


def plan_units(spec: SweepSpec) -> list[Unit]:
    units: list[Unit] = []
    for st in spec.stages:
        if spec.search is not None and spec.search.searcher == "optuna":
            if spec.search.studies == "sequential":     # one experiment per study, one after another
                units += [Unit(f"{st.name}-{c}-{m}-s{s}", st, (c, m, s)) for c, m, s in spec.combos(st)]
            else:
                units.append(Unit(st.name, st, studies=True))
        else:
            units.append(Unit(st.name, st))
    return units


def trial_name(trial: Any) -> str:
    """``<stage>-<cell>-<modality>-s<seed>-<trial id>``: readable and unique (Tune's trial id
    carries a per-experiment random prefix). Used for the trial's folder and MLflow run."""
    c = trial.config
    return f"{c.get('stage')}-{c.get('cell')}-{c.get('modality')}-s{c.get('seed')}-{trial.trial_id}"


def _combo_key(cell: Any, modality: Any, seed: Any) -> str:
    return f"{cell}/{modality}/{seed}"


class InitCheckpoint:
    """``tune.sample_from``: the pretrain checkpoint matching a finetune trial's combination."""

    def __init__(self, table: dict[str, str], modality: str | None = None) -> None:
        self.table = table
        self.modality = modality        # the pretrain modality, when not the trial's own

    def __call__(self, config: dict[str, Any]) -> str:
        key = _combo_key(config["cell"], self.modality or config["modality"], config["seed"])
        # A missing pretrain result fails that trial with this path in the message.
        return self.table.get(key, f"<no finished pretrain trial for {key}>")


class PerCombo:
    """``tune.sample_from``: a train value fixed per (cell, modality) by ``overrides:``, the
    stage's own value elsewhere."""

    def __init__(self, key: str, table: dict[str, Any], default: Any) -> None:
        self.key, self.table, self.default = key, table, default

    def __call__(self, config: dict[str, Any]) -> Any:
        return self.table.get(f"{config['cell']}/{config['modality']}", self.default)


class FailMarker:
    """``tune.sample_from``: one marker file per (cell, modality, seed) for the fail-once hook."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, config: dict[str, Any]) -> str:
        from bench.storage import location

        return str(location(self.folder) / f"fail-once-{config['cell']}-{config['modality']}-s{config['seed']}")


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """What one trial reserves (`bench.train.trainable.trial_resources`: with one worker, the
    custom resources too; with several, each worker holds them)."""
    r = spec.resources
    return reserve(workers=r.workers, use_gpu=r.use_gpu, driver=driver_config(spec))


def stage_config(spec: SweepSpec, stage: StageSpec, num_classes: dict[str, int]) -> TrainConfig:
    """The stage's `TrainConfig` with what only the data tells: the class count (unless the
    sweep file set one)."""
    cfg = stage.train
    if cfg.num_classes is None and stage.dataset in num_classes:
        cfg = cfg.replace(num_classes=num_classes[stage.dataset])
    return cfg


def driver_config(spec: SweepSpec, unit: Unit | None = None, sweep_dir: SweepPath | None = None) -> DriverConfig:
    """The driver's side of a trial from the sweep's resources; with ``unit``, the Ray Train
    storage of its multi-worker runs is the unit's folder."""
    r = spec.resources
    storage = str(sweep_dir / unit.name) if unit is not None and sweep_dir is not None else None
    return DriverConfig(storage_path=storage, max_failures=0, cpus_per_worker=r.cpu,
                        gpus_per_worker=r.gpu if r.gpu > 0 else None,
                        custom_per_worker={k: float(v) for k, v in r.custom.items()} or None)


def param_space(spec: SweepSpec, unit: Unit, *, sweep_id: str, sweep_dir: SweepPath,
                init_table: dict[str, str] | None, num_classes: dict[str, int]) -> dict[str, Any]:
    """Tune's ``param_space`` for ``unit``: the stage's `TrainConfig` as a dict, with Tune's
    grid and search objects put in for the fields that vary, plus the driver's keys and the
    sweep's identity (Ray's ``train_tune_interop`` pattern: the trial rebuilds the dataclass)."""
    from ray import tune  # heavy

    st = unit.stage
    cfg = stage_config(spec, st, num_classes)
    identity = SweepIdentity(name=spec.name, id=sweep_id, unit=unit.name, dataset=st.dataset, dir=str(sweep_dir))
    space: dict[str, Any] = cfg.to_dict() | driver_config(spec, unit, sweep_dir).to_dict()
    space["sweep"] = identity.to_dict()
    combo = dict(zip(("cell", "modality", "seed"), unit.combo)) if unit.combo is not None else None
    if unit.studies:
        # StudySearcher sets cell, modality, seed, the searched keys and the per-study values
        # (`study_values`) in each trial; the stage's own values stand here.
        space.update(zip(("cell", "modality", "seed"), spec.combos(st)[0]))
        return space
    if combo is not None:
        space.update(combo)
        space.update(st.per_combo.get((combo["cell"], combo["modality"]), {}))
    else:
        for key in sorted({k for values in st.per_combo.values() for k in values}):
            table = {f"{c}/{m}": v[key] for (c, m), v in st.per_combo.items() if key in v}
            space[key] = tune.sample_from(PerCombo(key, table, space[key]))
        space["cell"] = tune.grid_search(list(spec.grid.cells))
        space["modality"] = tune.grid_search(list(spec.modalities(st)))
        space["seed"] = tune.grid_search(list(spec.grid.seeds))
    if cfg.fail_marker == PER_TRIAL:
        marker = FailMarker(str(sweep_dir / unit.name))
        space["fail_marker"] = marker(combo) if combo is not None else tune.sample_from(marker)
    if cfg.init_checkpoint == PER_TRIAL:
        lookup = InitCheckpoint(init_table or {}, st.init_modality)
        space["init_checkpoint"] = lookup(combo) if combo is not None else tune.sample_from(lookup)
    if spec.search is not None:
        for k, dist in spec.search.space.items():
            space[k] = dist.to_tune()
    return space


def study_values(spec: SweepSpec, unit: Unit, *, sweep_dir: SweepPath, init_table: dict[str, str] | None
                 ) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The values of a study's trials that its (cell, modality, seed) decides: the fine-tune
    checkpoint and the fail-once marker."""
    cfg = unit.stage.train
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for c, m, s in spec.combos(unit.stage):
        combo = {"cell": c, "modality": m, "seed": s}
        values: dict[str, Any] = dict(unit.stage.per_combo.get((c, m), {}))
        if cfg.fail_marker == PER_TRIAL:
            values["fail_marker"] = FailMarker(str(sweep_dir / unit.name))(combo)
        if cfg.init_checkpoint == PER_TRIAL:
            values["init_checkpoint"] = InitCheckpoint(init_table or {}, unit.stage.init_modality)(combo)
        out[(c, m, s)] = values
    return out


# ---------------------------------------------------------------------------------------------
# datasets


def prepare_datasets(spec: SweepSpec, *, stream: TextIO, workers: int | None = None) -> dict[str, int]:
    """Generate missing synthetic datasets; return dataset name -> class count (read from the
    training split, so a wrong root fails here, before Ray starts)."""
    used = {st.dataset for st in spec.stages}
    out: dict[str, int] = {}
    for name in sorted(used):
        ds = spec.datasets[name]
        missing = not ds.root.exists() or (ds.root.is_dir() and not any(ds.root.iterdir()))
        if missing:
            if ds.synthetic is None:
                raise SweepError(f"dataset {name!r}: root {ds.root} does not exist (give the real "
                                 f"dataset's path, or a `synthetic:` block to generate one)")
            _generate(ds.format, ds.root, ds.synthetic.synthesize_kwargs(), stream=stream,
                      workers=workers or os.cpu_count() or 1)
        elif ds.synthetic is not None:
            check_synthetic_options(name, ds.root, ds.synthetic.synthesize_kwargs())
        index = load_index(ds.format, ds.root, ds.train_split)
        if not len(index):
            raise SweepError(f"dataset {name!r}: split {ds.train_split!r} under {ds.root} is empty")
        out[name] = index.num_classes
    return out


def check_synthetic_options(name: str, root: Path, wanted: dict[str, Any]) -> None:
    """A synthetic dataset already under ``root`` must be the one the sweep file describes:
    a folder left by an earlier version of the file (other classes, sizes or difficulty) would
    otherwise be trained on without a word. SweepError naming each differing option; a folder
    without SYNTHETIC.json (real data at a synthetic block's root) is the user's, and used."""
    manifest = root / "SYNTHETIC.json"
    if not manifest.is_file():
        return
    try:
        have = json.loads(manifest.read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"dataset {name!r}: {manifest}: cannot read the generator's options ({e})") from None
    # an option added to the generator after the folder was written is absent from its manifest:
    # the folder was generated with the option's default (each new option's default is the old
    # behaviour, byte for byte)
    defaults = {f.name: f.default for f in dataclasses.fields(SyntheticSpec)}

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return float(a) == float(b)
        return a == b

    diff = []
    for key, want in wanted.items():
        got = have.get(key, defaults.get(key))
        if want is not None and not same(got, want):        # None: the generator's default
            diff.append(f"{key}: {got!r} there, {want!r} in the sweep file")
    if diff:
        raise SweepError(f"dataset {name!r}: {root} holds a synthetic dataset generated with other options "
                         f"({'; '.join(diff)}); delete the folder to have it generated again, or give "
                         f"the dataset another root")


def _generate(fmt: str, root: Path, kwargs: dict[str, Any], *, stream: TextIO, workers: int) -> None:
    t0 = time.monotonic()
    print(f"generating synthetic {fmt} dataset in {root} ({kwargs['num_classes']} classes) ...",
          file=stream, flush=True)
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        synthesize(fmt, tmp, workers=workers, progress=True, **kwargs)
        if root.exists():            # an empty folder
            root.rmdir()
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"generated {root} in {time.monotonic() - t0:.1f} s", file=stream, flush=True)


# ---------------------------------------------------------------------------------------------
# the sweep folder


def check_sweep_dir(spec: SweepSpec, *, resume: bool) -> None:
    """Fail before any work when the folder does not fit the request."""
    d = spec.sweep_dir
    if resume:
        if not (d / "sweep.json").is_file():
            raise SweepError(f"nothing to resume: {d} holds no sweep (run without --resume to start it)")
        if read_meta(d).get("name") != spec.name:
            raise SweepError(f"{d}/sweep.json belongs to sweep {read_meta(d).get('name')!r}, not {spec.name!r}")
    elif d.exists() and any(d.iterdir()):
        raise SweepError(f"{d} already holds a sweep named {spec.name!r}: pass --resume to continue it, "
                         f"or change `name:` / --storage, or delete the folder")


def open_sweep_dir(spec: SweepSpec, *, resume: bool) -> dict[str, Any]:
    check_sweep_dir(spec, resume=resume)
    d = spec.sweep_dir
    if resume:
        meta = read_meta(d)
        saved = (d / SWEEP_YAML).read_text() if (d / SWEEP_YAML).is_file() else None
        if saved is not None and spec.text and saved != spec.text:
            print(f"bench: warning: the sweep file differs from the one this sweep started with "
                  f"({d / SWEEP_YAML}); unfinished trials keep their original settings",
                  file=sys.stderr)
        return meta
    d.mkdir(parents=True, exist_ok=True)
    meta = {
        "sweep_id": uuid.uuid4().hex[:16],
        "name": spec.name,
        "experiment": spec.experiment,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "spec_file": str(spec.source) if spec.source else None,
        "stages": [s.name for s in spec.stages],
        "units": {u.name: {"stage": u.stage.name, "state": "pending"} for u in plan_units(spec)},
    }
    if spec.text:
        (d / SWEEP_YAML).write_text(spec.text)
    write_meta(d, meta)
    return meta


# ---------------------------------------------------------------------------------------------
# Ray


def preflight(spec: SweepSpec, *, stream: TextIO) -> tuple[SweepSpec, Any]:
    """The dry run's checks on the cluster Ray is connected to (`bench.sweep.dryrun`), before
    anything is written: raise `SweepError` naming the first that fails; with
    ``max_concurrent_trials`` unset, the sweep runs as many trials at once as fit."""
    import dataclasses

    from bench.sweep.dryrun import make_plan, ray_nodes, require

    # the estimate calibrates only where a few steps take a second or two (else: the dry run's)
    plan = make_plan(spec, nodes=ray_nodes(), max_calibration_gmac=30.0)
    require(plan)
    if spec.max_concurrent_trials is None and plan.max_concurrent_trials:
        spec = dataclasses.replace(spec, max_concurrent_trials=plan.max_concurrent_trials)
        print(f"max_concurrent_trials unset: {spec.max_concurrent_trials}, what fits the cluster",
              file=stream, flush=True)
    e = plan.estimate
    if e.get("wall_s") is not None:
        print(f"plan: {plan.trials} trials, {spec.max_concurrent_trials} at once; estimated wall {e['wall_s']:.0f} s, "
              f"{e['cpu_hours']:.3f} CPU-hours, {e['gpu_hours']:.3f} GPU-hours (from {e['source']})",
              file=stream, flush=True)
    return spec, plan


def start_ray(address: str | None) -> bool:
    """Connect to ``address`` / ``$RAY_ADDRESS`` or start a local Ray; False if Ray was already
    initialised in this process (then the caller keeps it running)."""
    import ray  # heavy

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise SweepError(f"cannot start or reach {where}: {e}") from None
    return True


# ---------------------------------------------------------------------------------------------
# running


def _study_seed(spec: SweepSpec, stage: StageSpec, combo: tuple[str, str, int]) -> int | None:
    """Each study's own reproducible stream: the search seed plus the study's index over the
    sweep's stages (the same seed whether the studies run at once or one after another)."""
    if spec.search is None or spec.search.seed is None:
        return None
    offset = 0
    for st in spec.stages:
        if st is stage:
            return spec.search.seed + offset + spec.combos(st).index(combo)
        offset += len(spec.combos(st))
    raise ValueError(f"stage {stage.name!r} is not in the sweep")


def _make_tuner(spec: SweepSpec, unit: Unit, space: dict[str, Any], callbacks: list[Any], sweep_dir: SweepPath,
                study_fixed: dict[tuple[str, str, int], dict[str, Any]] | None = None) -> Any:
    from ray import tune  # heavy

    search_alg = None
    num_samples = 1
    if spec.search is not None:
        num_samples = spec.search.num_samples
        if spec.search.searcher == "optuna":
            import optuna  # heavy
            from ray.tune.search.optuna import OptunaSearch  # heavy

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            if unit.studies:
                from bench.sweep.search import StudySearcher  # heavy: ray

                combos = spec.combos(unit.stage)
                space_tune = {k: d.to_tune() for k, d in spec.search.space.items()}
                search_alg = StudySearcher(
                    combos, num_samples=num_samples, fixed=study_fixed, metric=METRIC, mode=MODE,
                    make_searcher=lambda i: OptunaSearch(space=space_tune, metric=METRIC, mode=MODE,
                                                         seed=_study_seed(spec, unit.stage, combos[i])))
                num_samples *= len(combos)
            else:
                search_alg = OptunaSearch(seed=_study_seed(spec, unit.stage, unit.combo))
        elif spec.search.searcher == "random":
            from ray.tune.search import BasicVariantGenerator  # heavy

            search_alg = BasicVariantGenerator(random_state=spec.search.seed)
    scheduler = None
    if spec.scheduler is not None:
        from ray.tune.schedulers import ASHAScheduler  # heavy

        asha = dict(time_attr=spec.scheduler.time_attr, max_t=unit.stage.epochs,
                    grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor)
        if unit.studies:        # brackets per study: a trial is compared with its own study's
            from bench.sweep.search import StudyScheduler  # heavy: ray

            scheduler = StudyScheduler(metric=METRIC, mode=MODE, **asha)
        else:
            scheduler = ASHAScheduler(**asha)

    return tune.Tuner(
        trainable(trial_resources(spec)),
        param_space=space,
        tune_config=tune_config(num_samples=num_samples, search_alg=search_alg, scheduler=scheduler,
                                max_concurrent_trials=spec.max_concurrent_trials,
                                reuse_actors=spec.reuse_actors),
        run_config=run_config(unit.name, sweep_dir, max_failures=spec.max_failures, callbacks=callbacks),
    )


def tune_config(**kw: Any) -> Any:
    """The TuneConfig every sweep runs under (metric, mode, trial names), with ``kw`` on top."""
    from ray import tune  # heavy

    return tune.TuneConfig(metric=METRIC, mode=MODE, trial_name_creator=trial_name,
                           trial_dirname_creator=trial_name, **kw)


KEEP_CHECKPOINTS = 2


def run_config(name: str, storage: Path, *, max_failures: int, callbacks: list[Any]) -> Any:
    """The RunConfig every sweep runs under: JSON and CSV result logs, each trial's newest
    `KEEP_CHECKPOINTS` checkpoints kept by `CheckpointRetention` rather than Tune's
    ``num_to_keep``, which can delete the one a restore needs (`bench.sweep.trainable`)."""
    from ray import tune  # heavy
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # heavy

    from bench.sweep.retention import CheckpointRetention  # heavy: ray

    return tune.RunConfig(
        name=name, storage_path=str(storage), verbose=0,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[*callbacks, CheckpointRetention(KEEP_CHECKPOINTS), JsonLoggerCallback(), CSVLoggerCallback()])


def _unit_total(spec: SweepSpec, unit: Unit) -> int:
    n = spec.search.num_samples if spec.search is not None else 1
    return n if unit.combo is not None else n * len(spec.combos(unit.stage))


def run_sweep(spec: SweepSpec, *, address: str | None = None, resume: bool = False,
              tracking_uri: str | None = None, stream: TextIO | None = None,
              synth_workers: int | None = None) -> SweepOutcome:
    """Run (or ``resume``) ``spec``; see the module docstring. Raises `SweepError` for user
    errors found before any training starts."""
    apply_quiet_env()
    stream = stream or sys.stdout
    t0 = time.monotonic()

    uri = resolve_tracking_uri(tracking_uri)
    try:
        check_tracking(uri)
    except TrackingUnavailable as e:
        raise SweepError(str(e)) from None
    apply_http_env()
    check_sweep_dir(spec, resume=resume)
    num_classes = prepare_datasets(spec, stream=stream, workers=synth_workers)

    from bench.tracking.callback import (  # heavy: pandas, pyarrow, ray
        MLflowTrialCallback,
        configure_runtime,
    )

    tracker = Tracker(uri, spec.experiment)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    # MLflow's first contact (imports, creating a new SQLite schema: seconds) overlaps Ray's start.
    from concurrent.futures import ThreadPoolExecutor

    from ray import tune  # heavy

    with ThreadPoolExecutor(max_workers=1) as pool:
        warm = pool.submit(_guarded, lambda: tracker.experiment_id, "opening the experiment", stream)
        try:
            started = start_ray(address)
        finally:
            warm.result()
    try:
        spec, plan = preflight(spec, stream=stream)
    except BaseException:
        if started:
            import ray  # heavy

            ray.shutdown()
        raise

    meta = open_sweep_dir(spec, resume=resume)
    sweep_dir, sweep_id = spec.sweep_dir, meta["sweep_id"]
    outcome = SweepOutcome(sweep_dir=sweep_dir, sweep_id=sweep_id)
    outcome.estimate = plan.estimate
    meta["estimate"] = plan.estimate
    print(f"sweep {spec.name} ({sweep_id}): {sweep_dir}; tracking: {uri} (experiment {spec.experiment!r})",
          file=stream, flush=True)

    def open_parent() -> str | None:
        pid = _guarded(lambda: tracker.ensure_run(
            key=records.parent_key(sweep_id),
            tags=records.parent_tags(name=spec.name, stages=[s.name for s in spec.stages],
                                     spec_file=str(spec.source) if spec.source else None),
            run_name=spec.name)[0], "creating the sweep's parent run", stream)
        if pid and not resume and spec.text:
            _guarded(lambda: tracker.log_text(pid, spec.text, "sweep.yaml"), "logging sweep.yaml", stream)
        return pid

    parent_id = open_parent()
    outcome.parent_run_id = parent_id
    meta["parent_run_id"] = parent_id
    meta["tracking_uri"] = uri
    write_meta(sweep_dir, meta)
    configure_runtime(sweep_id, tracking_uri=uri, parent_run_id=parent_id)

    try:
        for unit in plan_units(spec):
            state = meta["units"].setdefault(unit.name, {"stage": unit.stage.name, "state": "pending"})
            unit_dir = sweep_dir / unit.name
            if state.get("state") == "done" and not state.get("errors"):
                print(f"{unit.name}: finished earlier, skipped", file=stream, flush=True)
                continue
            callbacks = [
                _progress(unit, _unit_total(spec, unit), stream),
                MLflowTrialCallback(sweep_id=sweep_id, experiment=spec.experiment, tracking_uri=uri,
                                    parent_run_id=parent_id, sweep_dir=str(sweep_dir)),
            ]
            if resume and tune.Tuner.can_restore(str(unit_dir)):
                print(f"{unit.name}: resuming unfinished trials", file=stream, flush=True)
                tuner = tune.Tuner.restore(str(unit_dir), trainable=trainable(trial_resources(spec)),
                                           resume_unfinished=True, resume_errored=True)
            else:
                if unit_dir.exists():
                    # killed before Tune's first experiment snapshot: nothing to restore
                    unit_dir.rename(unit_dir.with_name(f".{unit.name}.abandoned-{int(time.time())}"))
                init_table = None
                if unit.stage.name == "finetune":
                    init_table = _init_table(spec, unit.stage, sweep_dir, meta)
                space = param_space(spec, unit, sweep_id=sweep_id, sweep_dir=sweep_dir,
                                    init_table=init_table, num_classes=num_classes)
                fixed = (study_values(spec, unit, sweep_dir=sweep_dir, init_table=init_table)
                         if unit.studies else None)
                print(f"{unit.name}: {_unit_total(spec, unit)} trials "
                      f"({unit.stage.dataset}, {unit.stage.epochs} epochs)", file=stream, flush=True)
                tuner = _make_tuner(spec, unit, space, callbacks, sweep_dir, study_fixed=fixed)
            state["state"] = "running"
            write_meta(sweep_dir, meta)
            tuner.fit()
            trials = read_unit(unit_dir)
            for t in trials:     # after Tune's last upload: result.json names each trial's newest
                try:
                    prune_trial_dir(t.dir, KEEP_CHECKPOINTS)
                except OSError as e:
                    print(f"bench: warning: could not delete old checkpoints of {t.dir}: {e}", file=stream)
            unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
            errors = [t for t in trials if t.status == "ERROR"]
            state["errors"] = len(errors)
            if unfinished:
                state["state"] = "interrupted"
                write_meta(sweep_dir, meta)
                outcome.interrupted = True
                print(f"{unit.name}: {len(unfinished)} trial(s) did not finish; continue with --resume",
                      file=stream, flush=True)
                break
            state["state"] = "done"
            write_meta(sweep_dir, meta)
    finally:
        if started:
            import ray  # heavy

            ray.shutdown()

    _, outcome.trials = read_sweep(sweep_dir)
    outcome.errors = sum(t.status == "ERROR" for t in outcome.trials)
    last = spec.stages[-1]
    outcome.num_classes = num_classes.get(last.dataset)
    outcome.leaderboard = leaderboard(outcome.trials, searched=list(spec.search.space) if spec.search else ())
    outcome.wall_s = time.monotonic() - t0
    csv = to_csv(outcome.leaderboard, num_classes=outcome.num_classes)
    (sweep_dir / "leaderboard.csv").write_text(csv)
    split = spec.datasets[last.dataset].val_split
    title = (f"\nleaderboard: {spec.name} on {last.dataset}, scored on split {split!r} (the last stage "
             f"that trained each cell x modality)")
    print(format_table(outcome.leaderboard, num_classes=outcome.num_classes, title=title), file=stream)
    barrier = stage_barrier(outcome.trials, slots=spec.max_concurrent_trials) if spec.max_concurrent_trials else None
    if barrier is not None:
        print(f"stage barrier: {barrier['idle_slot_s']:.0f} slot-seconds idle while the fine-tune stage waited for "
              f"the last pre-train trials ({100 * barrier['fraction']:.1f}% of the sweep's "
              f"{barrier['sweep_slot_s']:.0f} slot-seconds)", file=stream)
    est = outcome.estimate.get("wall_s") if outcome.estimate else None
    print(f"{len(outcome.trials)} trials, {outcome.errors} failed, wall time {outcome.wall_s:.0f} s"
          + (f" (estimated {est:.0f} s before the start, from {outcome.estimate['source']})" if est else "")
          + f"; results: {sweep_dir}", file=stream, flush=True)
    if parent_id:
        status = "KILLED" if outcome.interrupted else ("FAILED" if outcome.errors else "FINISHED")

        def _close() -> None:
            tracker.log_text(parent_id, csv, "leaderboard.csv")
            tracker.set_tags(parent_id, {"trials": len(outcome.trials), "failed_trials": outcome.errors})
            tracker.set_status(parent_id, status)

        _guarded(_close, "closing the sweep's parent run", stream)
    return outcome


def _progress(unit: Unit, total: int, stream: TextIO) -> Any:
    from bench.sweep.progress import ProgressPrinter  # heavy: pandas, pyarrow, ray

    return ProgressPrinter(unit=unit.name, total=total, stream=stream)


def _guarded(fn: Any, what: str, stream: TextIO) -> Any:
    """MLflow calls of the driver itself: a store that dropped must not stop the sweep."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        print(f"bench: warning: MLflow failed while {what} ({type(e).__name__}: "
              f"{str(e).splitlines()[0][:200] if str(e) else ''}); continuing", file=stream, flush=True)
        return None


def _init_table(spec: SweepSpec, stage: StageSpec, sweep_dir: SweepPath, meta: dict[str, Any]) -> dict[str, str]:
    """(cell/modality/seed) -> pretrain checkpoint for the finetune stage."""
    if stage.init_from is None:
        trials = [t for u in meta["units"] if meta["units"][u]["stage"] == "pretrain"
                  for t in read_unit(sweep_dir / u) if (sweep_dir / u).is_dir()]
        src = sweep_dir
    else:
        src = stage.init_from
        if (src / "state.pt").is_file() or src.name == "state.pt":
            from bench.sweep.spec import MODALITIES

            return {_combo_key(c, m, s): str(src) for c, m, s in spec.grid.combos(MODALITIES)}
        if not (src / "sweep.json").is_file():
            raise SweepError(f"init_from {src}: neither a checkpoint (state.pt) nor a sweep folder (sweep.json)")
        from bench.sweep.results import read_sweep

        trials = read_sweep(src)[1]
    found = final_checkpoints(trials, stage="pretrain")
    table = {_combo_key(*k): str(v[0]) for k, v in found.items()}
    mod = stage.init_modality
    needed = sorted({_combo_key(c, mod or m, s) for c, m, s in spec.combos(stage)})
    missing = [k for k in needed if k not in table]
    if len(missing) == len(needed):
        raise SweepError(f"finetune: no finished pretrain trial with a checkpoint in {src}")
    if missing:
        print(f"bench: warning: finetune: no pretrain checkpoint for {', '.join(missing)} in {src}; "
              f"those trials will fail", file=sys.stderr)
    return table
