"""The MLflow run layout is `bench.tracking`'s alone: params and tags come back typed, and no
other module imports mlflow."""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from bench.tracking import records

REPO = Path(__file__).resolve().parents[1]


def test_params_as_mlflow_returns_them_read_back_typed() -> None:
    params = {                                       # what ``run.data.params`` holds: all strings
        "dataset": "isogd", "root": "/data/isogd", "modality": "depth", "cell": "convlstm",
        "preset": "small", "epochs": "12", "batch_size": "8", "seed": "2",
        "lr": "0.01", "weight_decay": "1e-05", "lr_end": "0", "momentum": "1.0",
        "num_classes": "None", "clip_len": "16", "init_checkpoint": "None", "fail_marker": "/tmp/m",
        "use_gpu": "True", "compile": "reduce-overhead", "cache_data": "false",
        "sweep.name": "demo", "sweep.id": "demo-0001", "sweep.unit": "pretrain", "sweep.dataset": "syn",
        "storage_path": "/runs/demo/pretrain", "cpus_per_worker": "2", "max_failures": "0",
        "gpus_per_worker": "None", "retired_field": "7",
    }
    cfg = records.parse_trial_params(params)
    assert cfg == {
        "dataset": "isogd", "root": "/data/isogd", "modality": "depth", "cell": "convlstm",
        "preset": "small", "epochs": 12, "batch_size": 8, "seed": 2,
        "lr": 0.01, "weight_decay": 1e-05, "lr_end": 0.0, "momentum": 1.0,
        "num_classes": None, "clip_len": 16, "init_checkpoint": None, "fail_marker": "/tmp/m",
        "use_gpu": True, "compile": "reduce-overhead", "cache_data": False,
        "sweep": {"name": "demo", "id": "demo-0001", "unit": "pretrain", "dataset": "syn"},
        # not TrainConfig fields: kept as MLflow holds them
        "storage_path": "/runs/demo/pretrain", "cpus_per_worker": "2", "max_failures": "0",
        "gpus_per_worker": "None", "retired_field": "7",
    }
    for k in ("epochs", "batch_size", "seed", "clip_len"):
        assert type(cfg[k]) is int, k
    for k in ("lr", "weight_decay", "lr_end", "momentum"):
        assert type(cfg[k]) is float, k
    # runs logged when `compile` was a boolean read back as the string, which TrainConfig maps
    from bench.train.config import TrainConfig

    old = records.parse_trial_params({"compile": "False"})
    assert old == {"compile": "False"}
    base = dict(dataset="isogd", root="/d", epochs=1, batch_size=1)
    assert TrainConfig(**base, compile=old["compile"]).compile == "off"
    assert TrainConfig(**base, compile="True").compile == "default"
    # a value that does not parse as its field's type stays the string (an older store's oddity)
    assert records.parse_trial_params({"epochs": "many", "use_gpu": "maybe"}) == {"epochs": "many",
                                                                               "use_gpu": "maybe"}


def _sample(hint: typing.Any) -> typing.Any:
    """A non-None value of a field's type."""
    options = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
    return {bool: True, int: 7, float: 1e-05, str: "x"}.get(options[0], "x")


def test_every_train_config_field_survives_the_round_trip() -> None:
    """Whatever fields TrainConfig has (they are added over time): write as the trackers do,
    read back, get the same values -- defaults (None included) and other values alike."""
    from bench.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    fields = dataclasses.fields(TrainConfig)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else _sample(hints[f.name])
                for f in fields}
    others = {f.name: _sample(hints[f.name]) for f in fields}
    sweep = {"name": "s", "id": "s-1", "unit": "pretrain", "dataset": "syn", "dir": "/runs/s"}
    for cfg in (defaults, others):
        cfg = {**cfg, "sweep": sweep}
        back = records.parse_trial_params(records.param_strings(records.trial_params(cfg)))
        assert back == cfg
        assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in cfg.items()}


def test_tags_read_back_typed() -> None:
    cfg = {"cell": "a", "modality": "rgb", "seed": 3, "dataset": "isogd", "stage": "pretrain",
           "root": "/nowhere", "sweep": {"name": "demo", "id": "d-1", "unit": "pretrain"}}
    written = records.trial_tags(cfg, trial_id="t1", parent_run_id="p1") | records.trial_key(cfg, "t1")
    tags = records.parse_trial_tags(written)
    assert tags["seed"] == 3 and tags["synthetic"] is False and tags["cell"] == "a"
    assert tags["preset"] is None                                  # written as "None": not in the config
    assert tags["dataset"] == "isogd" and tags["sweep"] == "demo"
    assert tags[records.PARENT_TAG] == "p1" and tags[records.TRIAL_KEY] == "t1"   # others unchanged
    assert records.parse_trial_tags({"sweep": "", "unit": "None"}) == {"sweep": None, "unit": None}


def test_flatten_and_unflatten_are_inverse() -> None:
    nested = {"a": 1, "sweep": {"name": "x", "deep": {"k": None}}, "b": "None"}
    flat = records.flatten(nested)
    assert flat == {"a": 1, "sweep.name": "x", "sweep.deep.k": None, "b": "None"}
    assert records.unflatten(flat) == nested
    assert records.unflatten({"a": 1, "a.b": 2}) == {"a": 1, "a.b": 2}   # cannot nest: stays flat
    assert records.param_strings({"n": None, "s": {"v": 1.5}, "long": "x" * 7000}) == {
        "n": "None", "s.v": "1.5", "long": "x" * records.MAX_PARAM_LEN}


def test_run_kinds_old_and_new() -> None:
    trial = records.trial_key({"sweep": {"id": "d-1"}}, "t")
    parent = records.parent_key("d-1") | {"sweep": "demo"}
    board = records.leaderboard_tags(sweep="demo", sweep_id="d-1", source="x")
    assert records.is_trial(trial) and not records.is_parent(trial)
    assert records.is_parent(parent) and not records.is_trial(parent)
    assert records.is_leaderboard(board) and not records.is_trial(board) and not records.is_parent(board)
    # runs from before ``bench.kind``
    assert records.is_trial({"sweep": "demo", "cell": "a", "modality": "rgb"})
    assert records.is_parent({"sweep": "demo"})


def test_params_through_mlflow_read_back_as_written(tmp_path: Path) -> None:
    from bench.tracking.store import Tracker

    tr = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    cfg = {"dataset": "isogd", "root": "/r", "epochs": 3, "batch_size": 4, "lr": 1e-05, "use_gpu": False,
           "num_classes": None, "sweep": {"name": "demo", "id": "d-1"}, "storage_path": "/s"}
    run_id, _ = tr.ensure_run(key=records.trial_key(cfg, "t"), tags={}, run_name="t")
    tr.log_params(run_id, records.trial_params(cfg))
    back = records.parse_trial_params(tr.client.get_run(run_id).data.params)
    assert back == {**cfg, "storage_path": "/s"}


# ----------------------------------------------------------------------------- who imports mlflow

def _imports_of(source: str) -> list[str]:
    """Every module ``source`` imports, wherever (function bodies included), by statement or by
    ``importlib.import_module`` / ``__import__`` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append(node.args[0].value)
    return found


def _is_mlflow(module: str) -> bool:
    return module == "mlflow" or module.startswith("mlflow.")


def test_the_import_finder_sees_through_comments_and_strings() -> None:
    src = ('# import mlflow\n"from mlflow import x"\nimport mlflowish\n'
           'def f():\n    from mlflow.tracking import MlflowClient\n'
           'def g():\n    import importlib\n    importlib.import_module("mlflow.entities")\n')
    assert [m for m in _imports_of(src) if _is_mlflow(m)] == ["mlflow.tracking", "mlflow.entities"]


@pytest.mark.parametrize("package", ["bench", "pipelines"])
def test_only_bench_tracking_imports_mlflow(package: str) -> None:
    tracking = REPO / "bench" / "tracking"
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    offenders = {}
    for f in files:
        if f.is_relative_to(tracking):
            continue
        hits = [m for m in _imports_of(f.read_text(encoding="utf-8")) if _is_mlflow(m)]
        if hits:
            offenders[str(f.relative_to(REPO))] = hits
    assert offenders == {}, f"only bench/tracking/ may import mlflow: {offenders}"


# ----------------------------------------------------------------------------- what the MLflow UI shows

def _synthetic_root(tmp: Path) -> Path:
    """An IsoGD-layout root with its list files and a SYNTHETIC.json (no videos: nothing reads them)."""
    root = tmp / "data" / "syn"
    root.mkdir(parents=True)
    (root / "train_list.txt").write_text("train/001/M_00001.avi train/001/K_00001.avi 1\n"
                                         "train/001/M_00002.avi train/001/K_00002.avi 2\n")
    (root / "valid_list.txt").write_text("valid/001/M_00003.avi valid/001/K_00003.avi 1\n")
    (root / "SYNTHETIC.json").write_text('{"generator": "bench.data.synth"}')
    return root


def test_experiments_open_on_model_training(tmp_path: Path) -> None:
    """MLflow 3's UI opens an experiment on its runs table when ``mlflow.experimentKind`` says
    model training: every experiment the suite creates has it, one it finds gets it, and one a
    person switched on purpose keeps that choice."""
    from mlflow.tracking import MlflowClient

    from bench.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    new = Tracker(uri, "fresh").experiment_id
    assert c.get_experiment(new).tags[records.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = c.create_experiment("older")                      # made before the suite tagged experiments
    assert records.EXPERIMENT_KIND_TAG not in c.get_experiment(old).tags
    assert Tracker(uri, "older").experiment_id == old
    assert c.get_experiment(old).tags[records.EXPERIMENT_KIND_TAG] == "custom_model_development"
    chosen = c.create_experiment("genai", tags={records.EXPERIMENT_KIND_TAG: "genai_development"})
    assert Tracker(uri, "genai").experiment_id == chosen
    assert c.get_experiment(chosen).tags[records.EXPERIMENT_KIND_TAG] == "genai_development"

    # the runs-table views the UI opens with ?viewStateShareKey=: filter, sort, visible columns
    for exp_id in (new, old, chosen):
        tags = c.get_experiment(exp_id).tags
        board = json.loads(tags[records.VIEW_TAG_PREFIX + records.LEADERBOARD_VIEW])
        assert board["searchFilter"] == records.LEADERBOARD_FILTER and board["orderByAsc"] is False
        assert board["orderByKey"] == "metrics.`top1_pct`" and "metrics.`top1_ci_low_pct`" in board["selectedColumns"]
        trials = json.loads(tags[records.VIEW_TAG_PREFIX + records.TRIALS_VIEW])
        assert trials["searchFilter"] == "tags.bench.kind = 'trial'" and "metrics.`val_top1_pct`" in trials["selectedColumns"]
        c.search_runs([exp_id], board["searchFilter"])             # both filters are valid MLflow searches
        c.search_runs([exp_id], trials["searchFilter"])


class _Trial:
    def __init__(self, name: str, trial_id: str, config: dict, checkpoint: Path | None = None) -> None:
        self._name, self.trial_id, self.config = name, trial_id, config
        self.checkpoint = type("Ck", (), {"path": str(checkpoint)})() if checkpoint else None

    def __str__(self) -> str:
        return self._name


def test_a_trial_run_says_what_it_is_and_its_top1_in_percent(tmp_path: Path) -> None:
    """Without choosing a column, the runs table shows the run name (cell/modality/seed, top-1 %,
    stage) and the Dataset column (name, digest, split as context); ``val_top1_pct`` sits
    beside ``val_top1``."""
    pytest.importorskip("ray")
    from mlflow.tracking import MlflowClient

    from bench.tracking.callback import MLflowTrialCallback, configure_runtime
    from bench.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = _synthetic_root(tmp_path)
    cfg = {"cell": "a", "modality": "rgb", "seed": 1, "stage": "finetune", "dataset": "isogd", "root": str(root),
           "train_split": "train", "val_split": "valid",
           "sweep": {"id": "sw1", "name": "demo", "unit": "finetune", "dataset": "syn", "dir": str(tmp_path)}}
    configure_runtime("sw1", tracking_uri=uri, parent_run_id=None)
    cb = MLflowTrialCallback(sweep_id="sw1", experiment="exp", tracking_uri=uri, parent_run_id=None,
                             sweep_dir=str(tmp_path))
    cb.setup()
    trial = _Trial("finetune-a-rgb-s1-abcde_00000", "abcde_00000", cfg)
    cb.on_trial_start(0, [], trial)
    c = MlflowClient(uri)
    (run,) = c.search_runs([c.get_experiment_by_name("exp").experiment_id])
    assert run.info.run_name == "a/rgb/s1 finetune"                  # before any epoch: no number yet
    cb.on_trial_result(0, [], trial, {"epoch": 1, "val_top1": 0.5})
    cb.on_trial_result(0, [], trial, {"epoch": 2, "val_top1": 41 / 48, "val_top5": 1.0})
    cb.on_trial_complete(0, [], trial)
    run = c.get_run(run.info.run_id)
    assert run.info.run_name == "a/rgb/s1 85.4% finetune"            # the last epoch's, as the report ranks
    assert run.data.tags[records.TRIAL_KEY] == str(trial)             # the key that finds the run again
    m = run.data.metrics
    assert m["val_top1"] == pytest.approx(41 / 48) and m["val_top1_pct"] == 85.417   # rounded for the UI's cells
    assert m["val_top5_pct"] == 100.0 and m["best_val_top1_pct"] == 85.417
    assert [x.value for x in sorted(c.get_metric_history(run.info.run_id, "val_top1_pct"), key=lambda x: x.step)] \
        == [50.0, 85.417]

    inputs = run.inputs.dataset_inputs
    by_split = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
    assert set(by_split) == {"train", "valid"}
    for split, i in by_split.items():
        assert i.dataset.name == "syn (synthetic)"
        assert {t.key: t.value for t in i.tags}["synthetic"] == "true"
        assert len(i.dataset.digest) == 10
        profile = json.loads(i.dataset.profile)
        assert profile["split"] == split and profile["synthetic"] is True and profile["digest_of"] == "list files"
    assert by_split["train"].dataset.digest != by_split["valid"].dataset.digest
    assert json.loads(by_split["train"].dataset.profile)["samples"] == 2

    # logged again (a resumed trial, bench sync): nothing added; a changed list: a new digest
    tr = Tracker(uri, "exp")
    tr.log_datasets(run.info.run_id, cfg)
    assert len(c.get_run(run.info.run_id).inputs.dataset_inputs) == 2
    from bench.tracking.datasets import trial_datasets

    before = trial_datasets(cfg)[0].digest
    (root / "train_list.txt").write_text("train/001/M_00001.avi train/001/K_00001.avi 1\n")
    assert trial_datasets(cfg)[0].digest != before
    real = {**cfg, "root": str(tmp_path / "elsewhere"), "sweep": {**cfg["sweep"], "dataset": "isogd"}}
    (ref, _) = trial_datasets(real)                                  # unreadable here: described, not read
    assert ref.name == "isogd" and not ref.synthetic and ref.profile["digest_of"] == "description"


def _report(sweep: str = "demo", top1_a: float = 85.4, root: Path | None = None) -> Any:
    """A `Report` with a leaderboard of three rows (a/rgb, a/depth, convlstm/rgb) and one fusion row."""
    import polars as pl

    from bench.report.build import Report

    nan = float("nan")
    lb = pl.DataFrame({
        "cell": ["a", "a", "convlstm"], "modality": ["rgb", "depth", "rgb"], "top1": [top1_a, 90.0, 80.0],
        "top1_std": [1.0, 0.0, 2.0], "top1_ci_low": [76.4, 90.0, 62.0], "top1_ci_high": [94.4, 90.0, 98.0],
        "seeds": [2, 2, 2], "data": ["SYNTHETIC isogd (valid)"] * 3, "stage": ["pretrain"] * 3,
        "dataset": ["syn"] * 3, "top5": [100.0, 100.0, nan], "params": [3.4e5, 3.4e5, 3.6e5],
        "macs_per_clip": [1.0e7, 1.0e7, 2.0e7], "train_clips_per_s": [50.0, 50.0, 40.0], "chance": [25.0] * 3,
        "trials": [2, 2, 2], "vs_convlstm": [5.4, nan, nan], "vs_convlstm_significant": ["0/2", "n/a", "-"],
        "vs_a": [nan, nan, -5.4], "vs_a_significant": ["-", "-", "0/2"], "paper": [nan] * 3})
    fusion = pl.DataFrame({
        "dataset": ["syn"], "stage": ["pretrain"], "cell": ["a"], "modalities": ["rgb+depth"], "rule": ["fitted"],
        "seeds": [2], "top1": [93.0], "top1_std": [1.0], "top1_ci_low": [84.0], "top1_ci_high": [100.0],
        "top5": [100.0], "best_single_top1": [90.0], "gain": [3.0], "gain_std": [1.0],
        "significant_seeds": ["0/2"], "weights": ["rgb=0.40 depth=0.60"], "n": [12]})
    trials = pl.DataFrame({"run_id": ["r1", "r2"], "scores_path": ["", ""], "dataset": ["syn", "syn"],
                           "stage": ["pretrain"] * 2, "cell": ["a", "convlstm"], "dataset_format": ["isogd"] * 2,
                           "root": [str(root or "/nowhere")] * 2, "split": ["valid"] * 2})
    empty = pl.DataFrame()
    return Report(sweep=sweep, source="test", trials=trials, selected=trials, excluded=empty, leaderboard=lb,
                  significance=empty, fusion_runs=empty, fusion=fusion, comparison=empty, baselines=empty)


def test_the_leaderboard_is_mlflows_runs_table(tmp_path: Path) -> None:
    """Each leaderboard row is a run of its own under the leaderboard run; `LEADERBOARD_FILTER`
    shows exactly the newest report's rows, with their numbers as metrics (sortable, comparable);
    an older report's rows stay, told apart by their leaderboard run and ``latest=false``; the
    reader still finds the sweep's trials and parent, also in the layout before these tags."""
    from mlflow.tracking import MlflowClient

    from bench.report.store import log_leaderboard
    from bench.tracking.reader import find_sweep, read_trials

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    # a sweep written before bench.kind, run names and percent metrics existed
    exp = c.create_experiment("gesturebench")
    parent = c.create_run(exp, tags={"sweep": "demo"}, run_name="demo").info.run_id
    old = c.create_run(exp, tags={"sweep": "demo", "cell": "a", "modality": "rgb", "seed": "0", "stage": "pretrain",
                                  "trial_name": "pretrain-a-rgb-s0-x_00000", records.PARENT_TAG: parent},
                       run_name="pretrain-a-rgb-s0-x_00000").info.run_id
    c.log_metric(old, "val_top1", 0.75, step=1)
    c.log_metric(old, "epoch", 1, step=1)
    c.set_terminated(old, "FINISHED")

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("# demo\n")
    _, first = log_leaderboard(uri, _report(top1_a=70.0), out, experiment="gesturebench", sweep_id="d-1")
    root = _synthetic_root(tmp_path)
    exp_id, second = log_leaderboard(uri, _report(root=root), out, experiment="gesturebench", sweep_id="d-1")

    shown = c.search_runs([exp_id], records.LEADERBOARD_FILTER + " and tags.sweep = 'demo'",
                          order_by=["metrics.top1_pct DESC"])
    assert [r.info.run_name for r in shown] == ["a/rgb+depth 93.0% fitted pretrain", "a/depth 90.0% pretrain",
                                                "a/rgb 85.4% pretrain", "convlstm/rgb 80.0% pretrain"]
    for r in shown:
        t = r.data.tags
        assert t[records.LEADERBOARD_RUN_TAG] == second and records.PARENT_TAG not in t   # flat in the table
        assert t["bench.kind"] == "leaderboard_entry" and t["latest"] == "true" and t["sweep_id"] == "d-1"
        assert t["report_time"] == c.get_run(second).data.tags["report_time"]
        assert r.info.status == "FINISHED"
    a_rgb = next(r for r in shown if r.info.run_name.startswith("a/rgb 85"))
    assert a_rgb.data.metrics == pytest.approx({
        "top1_pct": 85.4, "top1_std_pct": 1.0, "top1_ci_low_pct": 76.4, "top1_ci_high_pct": 94.4, "top5_pct": 100.0,
        "seeds": 2, "params": 3.4e5, "macs_per_clip": 1.0e7, "train_clips_per_s": 50.0, "chance_pct": 25.0,
        "trials": 2, "vs_convlstm_pts": 5.4})                        # NaN columns are left out
    assert a_rgb.data.params["cell"] == "a" and a_rgb.data.params["rule"] == "none"
    assert a_rgb.data.tags["entry"] == "single" and a_rgb.data.tags["modality"] == "rgb"
    (data,) = a_rgb.inputs.dataset_inputs                          # the Dataset column: what it was measured on
    assert data.dataset.name == "syn (synthetic)" and {t.key: t.value for t in data.tags}["mlflow.data.context"] == "valid"
    fused = shown[0]
    assert [i.dataset.digest for i in fused.inputs.dataset_inputs] == [data.dataset.digest]
    assert fused.data.tags["entry"] == "fusion" and fused.data.tags["rule"] == "fitted"
    assert fused.data.tags["modality"] == "rgb+depth" and fused.data.tags["data"] == "SYNTHETIC isogd (valid)"
    assert fused.data.metrics["gain_pts"] == 3.0 and fused.data.metrics["clips"] == 12
    assert fused.data.metrics["params"] == 6.8e5 and fused.data.metrics["macs_per_clip"] == 2.0e7
    assert fused.data.metrics["train_clips_per_s"] == pytest.approx(25.0)   # two networks, one after the other

    older = c.search_runs([exp_id], f"tags.bench.kind = 'leaderboard_entry' and tags.leaderboard_run_id = '{first}'")
    assert len(older) == 4 and {r.data.tags["latest"] for r in older} == {"false"}
    board = c.get_run(second)                                        # the leaderboard run keeps its own record
    assert board.data.metrics["best_top1"] == 90.0 and board.data.params["num_entries"] == "4"
    assert {a.path for a in c.list_artifacts(second)} >= {"report", "tables"}

    from bench.tracking.leaderboard import latest_entries

    assert [r.info.run_id for r in latest_entries(uri, sweep="demo")] == [r.info.run_id for r in shown]
    ref = find_sweep(uri, sweep="demo")
    assert ref.parent_run_ids == [parent]
    (trial,) = read_trials(uri, ref, scores_dir=tmp_path / "scores")
    assert trial.run_id == old and trial.final["val_top1"] == 0.75
