"""The MLflow run layout is `bench.tracking`'s alone: params and tags come back typed, and no
other module imports mlflow."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from bench.tracking import records

REPO = Path(__file__).resolve().parents[1]


def test_params_as_mlflow_returns_them_read_back_typed() -> None:
    params = {                                       # what ``run.data.params`` holds: all strings
        "dataset": "isogd", "root": "/data/isogd", "modality": "depth", "cell": "convlstm",
        "preset": "small", "epochs": "12", "batch_size": "8", "seed": "2",
        "lr": "0.01", "weight_decay": "1e-05", "lr_end": "0", "momentum": "1.0",
        "num_classes": "None", "clip_len": "16", "init_checkpoint": "None", "fail_marker": "/tmp/m",
        "use_gpu": "True", "compile": "False", "cache_data": "false",
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
        "use_gpu": True, "compile": False, "cache_data": False,
        "sweep": {"name": "demo", "id": "demo-0001", "unit": "pretrain", "dataset": "syn"},
        # not TrainConfig fields: kept as MLflow holds them
        "storage_path": "/runs/demo/pretrain", "cpus_per_worker": "2", "max_failures": "0",
        "gpus_per_worker": "None", "retired_field": "7",
    }
    for k in ("epochs", "batch_size", "seed", "clip_len"):
        assert type(cfg[k]) is int, k
    for k in ("lr", "weight_decay", "lr_end", "momentum"):
        assert type(cfg[k]) is float, k
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
