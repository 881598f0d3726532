"""How a sweep file becomes Tune experiments: units, param spaces, resources (no Ray started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search import Searcher

from bench.sweep.spec import parse_spec

BASE = """\
name: p
datasets:
  j: {format: jester, root: /data/jester}
  i: {format: isogd, root: /data/isogd}
stages:
  - {name: pretrain, dataset: j, epochs: 2, modalities: [rgb], batch_size: 16, clip_len: 16}
  - {name: finetune, dataset: i, epochs: 1, init_modality: rgb, clip_len: 32}
grid: {cells: [a, convlstm], modalities: [rgb, depth], seeds: [0, 1]}
preset: small
image_size: 56
train: {lr: 0.01, weight_decay: 1.0e-4}
"""


def _resolve(space: dict, cell: str, modality: str, seed: int) -> dict:
    """What Tune would hand one trial: grid values picked, sample_from functions called."""
    from ray.tune.search.sample import Function

    cfg = {}
    for k, v in space.items():
        if isinstance(v, dict) and "grid_search" in v:
            v = {"cell": cell, "modality": modality, "seed": seed}[k]
        cfg[k] = v
    for k, v in list(cfg.items()):
        if isinstance(v, Function):
            cfg[k] = v.func(cfg)
    return cfg


def test_units_and_grid_param_space_feed_trainconfig(tmp_path):
    from bench.sweep.run import param_space, plan_units
    from bench.train.config import TrainConfig, split_config

    spec = parse_spec(BASE, base_dir=tmp_path)
    units = plan_units(spec)
    assert [u.name for u in units] == ["pretrain", "finetune"]
    table = {"a/rgb/1": "/ck/a1", "convlstm/rgb/0": "/ck/c0"}
    pre = param_space(spec, units[0], sweep_id="x", sweep_dir=tmp_path, init_table=None, num_classes={"j": 27})
    assert pre["cell"] == {"grid_search": ["a", "convlstm"]} and pre["modality"] == {"grid_search": ["rgb"]}
    assert pre["seed"] == {"grid_search": [0, 1]} and pre["num_classes"] == 27
    fine = param_space(spec, units[1], sweep_id="x", sweep_dir=tmp_path, init_table=table, num_classes={"i": 249})
    assert fine["modality"] == {"grid_search": ["rgb", "depth"]}
    cfg = _resolve(fine, "a", "depth", 1)
    assert cfg["init_checkpoint"] == "/ck/a1"                # depth starts from the RGB model
    assert "no finished pretrain trial for convlstm/rgb/1" in _resolve(fine, "convlstm", "depth", 1)["init_checkpoint"]
    train, driver = split_config(cfg)
    tc = TrainConfig.from_dict(train)                        # the trainer accepts what we build
    assert (tc.dataset, tc.root, tc.stage, tc.epochs, tc.clip_len, tc.image_size) == \
        ("isogd", "/data/isogd", "finetune", 1, 32, 56)
    assert (tc.batch_size, tc.lr, tc.weight_decay, tc.num_classes, tc.preset) == (8, 0.01, 1e-4, 249, "small")
    assert driver["storage_path"] == str(tmp_path / "finetune")
    assert cfg["sweep"] == {"name": "p", "id": "x", "unit": "finetune", "dataset": "i", "dir": str(tmp_path)}
    pre_cfg = _resolve(pre, "convlstm", "rgb", 0)
    assert TrainConfig.from_dict(split_config(pre_cfg)[0]).batch_size == 16


OPTUNA = ("search: {searcher: optuna, num_samples: 3, seed: 1, "
          "space: {lr: {loguniform: [1.0e-4, 1.0e-1]}, batch_size: {choice: [4, 8]}}}\n")


def test_optuna_sequential_runs_one_experiment_per_study(tmp_path):
    pytest.importorskip("optuna")
    from bench.sweep.run import param_space, plan_units

    spec = parse_spec(BASE + OPTUNA.replace("seed: 1,", "seed: 1, studies: sequential,"), base_dir=tmp_path)
    units = plan_units(spec)
    pre = [u.name for u in units if u.stage.name == "pretrain"]
    fine = [u.name for u in units if u.stage.name == "finetune"]
    assert pre == ["pretrain-a-rgb-s0", "pretrain-a-rgb-s1", "pretrain-convlstm-rgb-s0", "pretrain-convlstm-rgb-s1"]
    assert len(fine) == 8 and "finetune-convlstm-depth-s1" in fine
    u = next(u for u in units if u.name == "finetune-a-depth-s1")
    space = param_space(spec, u, sweep_id="x", sweep_dir=tmp_path, init_table={"a/rgb/1": "/ck"}, num_classes={})
    # no grid_search and no sample_from: Optuna rejects both
    assert (space["cell"], space["modality"], space["seed"], space["init_checkpoint"]) == ("a", "depth", 1, "/ck")
    from ray import tune

    assert isinstance(space["lr"], tune.search.sample.Float) and isinstance(space["batch_size"], tune.search.sample.Categorical)
    assert not any(isinstance(v, dict) and "grid_search" in v for v in space.values())


def test_optuna_studies_of_a_stage_share_one_experiment(tmp_path):
    """One Tune experiment per stage; StudySearcher hands out every study's trials in turn,
    each with its study's fixed values, and each study has its own seeded TPE."""
    pytest.importorskip("optuna")
    from ray.tune.search import Searcher

    from bench.sweep.run import _make_tuner, param_space, plan_units, study_values

    spec = parse_spec(BASE + OPTUNA + "scheduler: {grace_period: 1}\n", base_dir=tmp_path)
    units = plan_units(spec)
    assert [(u.name, u.studies) for u in units] == [("pretrain", True), ("finetune", True)]
    fine = units[1]
    table = {f"{c}/rgb/{s}": f"/ck/{c}{s}" for c in ("a", "convlstm") for s in (0, 1)}
    space = param_space(spec, fine, sweep_id="x", sweep_dir=tmp_path, init_table=table, num_classes={})
    assert not any(isinstance(v, dict) and "grid_search" in v for v in space.values())
    fixed = study_values(spec, fine, sweep_dir=tmp_path, init_table=table)
    assert fixed[("convlstm", "depth", 1)] == {"init_checkpoint": "/ck/convlstm1"}
    tuner = _make_tuner(spec, fine, space, [], tmp_path, study_fixed=fixed)
    cfg = tuner._local_tuner._tune_config
    searcher, scheduler = cfg.search_alg, cfg.scheduler
    assert cfg.num_samples == 8 * 3 and type(scheduler).__name__ == "StudyScheduler"
    seeds = [s._seed for s in searcher.inner]
    assert seeds == list(range(1 + 4, 1 + 4 + 8))     # after the pretrain stage's 4 studies
    drawn = [searcher.suggest(f"t{i}") for i in range(24)]
    assert searcher.suggest("t24") == Searcher.FINISHED
    combos = [(d["cell"], d["modality"], d["seed"]) for d in drawn]
    assert combos[:8] == spec.combos(fine.stage) and combos[8:16] == combos[:8]   # round-robin
    assert all(d["init_checkpoint"] == f"/ck/{d['cell']}{d['seed']}" for d in drawn)
    assert all(1e-4 <= d["lr"] <= 1e-1 and d["batch_size"] in (4, 8) for d in drawn)


class Recorder(Searcher):
    """An inner searcher that suggests its study's own lr and records completions (at module
    level: the StudySearcher state it lives in is pickled)."""

    def __init__(self, i):
        super().__init__(metric="val_top1", mode="max")
        self.i, self.done = i, []

    def suggest(self, trial_id):
        return {"lr": 0.1 * (self.i + 1)}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.done.append((trial_id, result["val_top1"]))


def test_study_searcher_routes_results_and_survives_a_restart(tmp_path):
    from bench.sweep.search import StudySearcher
    combos = [("a", "rgb", 0), ("b", "rgb", 0)]
    s = StudySearcher(combos, num_samples=2, make_searcher=Recorder, metric="val_top1", mode="max",
                      fixed={("b", "rgb", 0): {"init_checkpoint": "/ck"}})
    got = [s.suggest(t) for t in ("t0", "t1", "t2")]
    assert [(g["cell"], g["lr"]) for g in got] == [("a", 0.1), ("b", 0.2), ("a", 0.1)]
    assert got[1]["init_checkpoint"] == "/ck" and "init_checkpoint" not in got[0]
    s.on_trial_complete("t1", {"val_top1": 0.5})
    s.save(str(tmp_path / "state.pkl"))
    again = StudySearcher(combos, num_samples=2, make_searcher=Recorder, metric="val_top1", mode="max")
    again.restore(str(tmp_path / "state.pkl"))
    assert again.inner[1].done == [("t1", 0.5)] and again.inner[0].done == []
    assert again.suggest("t3")["cell"] == "b" and again.suggest("t4") == Searcher.FINISHED


def test_study_scheduler_keeps_asha_brackets_per_study():
    """A study's trial is stopped only for being worse than its own study's: a weak cell is not
    cut because another cell does better."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from bench.sweep.search import StudyScheduler

    sched = StudyScheduler(metric="val_top1", mode="max", time_attr="epoch", max_t=4, grace_period=1,
                           reduction_factor=2)

    def trial(tid, cell):
        return SimpleNamespace(trial_id=tid, config={"cell": cell, "modality": "rgb", "seed": 0})

    strong = [trial(f"s{i}", "a") for i in range(2)]
    weak = [trial(f"w{i}", "b") for i in range(2)]
    for t in strong + weak:
        sched.on_trial_add(None, t)
    # epoch 1: study a scores 0.9 and 0.8, study b 0.3 and 0.2
    acts = {t.trial_id: sched.on_trial_result(None, t, {"epoch": 1, "val_top1": v})
            for t, v in zip(strong + weak, (0.9, 0.8, 0.3, 0.2))}
    assert acts["s0"] == acts["w0"] == TrialScheduler.CONTINUE     # each study's best goes on
    assert acts["s1"] == acts["w1"] == TrialScheduler.STOP         # each study's worse half stops
    assert sched.num_stopped == 2


@pytest.mark.parametrize("res, expected", [
    ("{cpu: 2}", {"cpu": 2.0}),
    ("{cpu: 1, gpu: 0.5}", {"cpu": 1.0, "gpu": 0.5}),                # two trials share a GPU
    ("{cpu: 4, gpu: 1, workers: 2}", {"cpu": 0.01}),                  # the DDP workers reserve their own
    ("{cpu: 1, custom: {node2_res: 0.5}}", {"cpu": 1.0, "node2_res": 0.5}),
])
def test_trial_resources(tmp_path, res, expected):
    from bench.sweep.run import param_space, plan_units, trial_resources

    spec = parse_spec(BASE + f"resources: {res}\n", base_dir=tmp_path)
    assert trial_resources(spec) == expected
    space = param_space(spec, plan_units(spec)[0], sweep_id="x", sweep_dir=tmp_path, init_table=None, num_classes={})
    assert space["num_workers"] == spec.resources.workers and space["use_gpu"] == (spec.resources.gpu > 0)
    assert space["cpus_per_worker"] == spec.resources.cpu
    if spec.resources.gpu:
        assert space["gpus_per_worker"] == spec.resources.gpu


def test_fail_once_hook_gets_a_marker_per_combination(tmp_path):
    from bench.sweep.run import param_space, plan_units

    spec = parse_spec(BASE.replace("train: {lr: 0.01", "train: {fail_once_at_epoch: 1, lr: 0.01"), base_dir=tmp_path)
    space = param_space(spec, plan_units(spec)[0], sweep_id="x", sweep_dir=tmp_path, init_table=None, num_classes={})
    m1 = _resolve(space, "a", "rgb", 0)["fail_marker"]
    m2 = _resolve(space, "a", "rgb", 1)["fail_marker"]
    assert m1 != m2 and Path(m1).parent == tmp_path / "pretrain"


def test_missing_dataset_fails_before_ray_with_its_name(tmp_path):
    import io

    from bench.sweep.run import SweepError, run_sweep

    spec = parse_spec(BASE.replace("/data/isogd", str(tmp_path / "nope")), base_dir=tmp_path)
    with pytest.raises(SweepError, match=rf"dataset 'i': root {tmp_path / 'nope'} does not exist"):
        run_sweep(spec, tracking_uri=f"sqlite:///{tmp_path}/m.db", stream=io.StringIO())
    assert not (tmp_path / "runs").exists()
    import ray

    assert not ray.is_initialized()


def test_param_space_is_the_stage_config_plus_tune_objects(tmp_path):
    """Ray's train_tune_interop hand-off: every trial's dict rebuilds into the stage's own
    TrainConfig with only the grid, searched and per-trial fields changed."""
    from ray.tune.search.sample import Domain

    from bench.sweep.run import param_space, plan_units
    from bench.train.config import TrainConfig, split_config

    text = BASE + "search: {num_samples: 1, space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}\n"
    spec = parse_spec(text, base_dir=tmp_path)
    pre, fine = plan_units(spec)
    table = {f"{c}/rgb/{s}": f"/ck/{c}{s}" for c in spec.grid.cells for s in spec.grid.seeds}
    for unit in (pre, fine):
        space = param_space(spec, unit, sweep_id="x", sweep_dir=tmp_path, init_table=table,
                            num_classes={"j": 27, "i": 249})
        stage = unit.stage.train
        varied = {k for k, v in space.items() if isinstance(v, (dict, Domain)) and k != "sweep"
                  or type(v).__name__ == "Function"}
        assert varied <= {"cell", "modality", "seed", "lr", "init_checkpoint"}, varied
        for cell in spec.grid.cells:
            for mod in spec.modalities(unit.stage):
                cfg = _resolve(space, cell, mod, 1)
                cfg["lr"] = 0.02
                tc = TrainConfig.from_dict(split_config(cfg)[0])
                expected = stage.replace(cell=cell, modality=mod, seed=1, lr=0.02,
                                         num_classes=27 if unit.name == "pretrain" else 249,
                                         **({"init_checkpoint": f"/ck/{cell}1"} if unit.name == "finetune" else {}))
                assert tc == expected


def test_overrides_fix_train_values_per_cell_and_modality(tmp_path):
    """`overrides:` (what `bench winners` writes) give some (cell, modality) pairs their own
    train values, checked as TrainConfigs at load time; the trial of each pair gets them."""
    from bench.errors import ConfigError
    from bench.sweep.run import param_space, plan_units
    from bench.train.config import TrainConfig, split_config

    text = BASE + ("overrides:\n  - {cells: [a], modalities: [depth], train: {lr: 0.05}}\n"
                   "  - {cells: [convlstm], stages: [finetune], train: {lr: 0.002, momentum: 0.8}}\n")
    spec = parse_spec(text, base_dir=tmp_path)
    pre, fine = plan_units(spec)
    assert fine.stage.per_combo[("a", "depth")] == {"lr": 0.05}
    assert fine.stage.config_for("convlstm", "rgb", 1).momentum == 0.8
    space = param_space(spec, fine, sweep_id="x", sweep_dir=tmp_path, init_table={}, num_classes={"i": 9})
    lrs = {(c, m): TrainConfig.from_dict(split_config(_resolve(space, c, m, 0))[0]).lr
           for c in ("a", "convlstm") for m in ("rgb", "depth")}
    assert lrs == {("a", "rgb"): 0.01, ("a", "depth"): 0.05, ("convlstm", "rgb"): 0.002,
                   ("convlstm", "depth"): 0.002}
    pre_space = param_space(spec, pre, sweep_id="x", sweep_dir=tmp_path, init_table=None, num_classes={"j": 9})
    assert TrainConfig.from_dict(split_config(_resolve(pre_space, "convlstm", "rgb", 0))[0]).lr == 0.01
    with pytest.raises(ConfigError, match=r"overrides\[0\].train.lr_end: must be in \[0, lr=0.01\].*for a/rgb"):
        parse_spec(BASE + "overrides:\n  - {cells: [a], train: {lr_end: 0.5}}\n", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"overrides\[0\].cells\[0\]: 'b' is not in grid.cells"):
        parse_spec(BASE + "overrides:\n  - {cells: [b], train: {lr: 0.1}}\n", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"overrides: lr is searched"):
        parse_spec(BASE + OPTUNA + "overrides:\n  - {cells: [a], train: {lr: 0.1}}\n", base_dir=tmp_path)
