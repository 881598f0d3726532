"""The sweep file schema: bundled configs validate; bad files fail naming file, line and field."""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
import textwrap
from pathlib import Path

import pytest

from bench.sweep.spec import ConfigError, load_spec, parse_spec

CONFIGS = sorted(Path(str(importlib.resources.files("bench") / "configs")).glob("*.yaml"))

MINIMAL = """\
name: t
datasets:
  syn: {format: isogd, root: data/syn}
stages:
  - {name: pretrain, epochs: 2}
"""


def _parse(text: str, tmp_path: Path):
    f = tmp_path / "sweep.yaml"
    f.write_text(textwrap.dedent(text))
    return load_spec(f, base_dir=tmp_path)


def _error(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        _parse(text, tmp_path)
    return str(e.value)


def test_bundled_configs_exist_and_validate():
    names = {p.stem for p in CONFIGS}
    assert {"default", "table1", "table2", "hpsearch"} <= names
    for p in CONFIGS:
        spec = load_spec(p)
        assert spec.name and spec.stages and spec.grid.cells


def test_table1_is_the_papers_protocol():
    from bench.models import list_cells

    spec = load_spec(Path(str(importlib.resources.files("bench") / "configs/table1.yaml")))
    assert spec.grid.cells == tuple(list_cells(include_controls=True)) and spec.grid.modalities == ("rgb",)
    pre, fine = spec.stages
    assert (pre.name, spec.datasets[pre.dataset].format, pre.epochs, pre.train.batch_size, pre.clip_len) == \
        ("pretrain", "jester", 30, 16, 16)
    assert (fine.name, spec.datasets[fine.dataset].format, fine.epochs, fine.train.batch_size, fine.clip_len) == \
        ("finetune", "isogd", 15, 8, 32)
    assert spec.preset == "paper" and pre.image_size == 112
    assert pre.train.lr == 1e-3 and pre.train.lr_end == 1e-6 and pre.train.weight_decay == 1e-4


def test_table2_and_hpsearch():
    t2 = load_spec(Path(str(importlib.resources.files("bench") / "configs/table2.yaml")))
    assert set(t2.grid.cells) == {"a", "convlstm"} and t2.grid.modalities == ("rgb", "depth", "flow")
    assert t2.stages[0].modalities == ("rgb",) and t2.stages[1].init_modality == "rgb"
    hp = load_spec(Path(str(importlib.resources.files("bench") / "configs/hpsearch.yaml")))
    assert hp.search.searcher == "optuna" and hp.scheduler.type == "asha"
    assert {"lr", "weight_decay", "batch_size"} <= set(hp.search.space)


def test_default_is_every_cell_and_the_control_rgb_depth_three_seeds():
    from bench.models import list_cells

    spec = load_spec(Path(str(importlib.resources.files("bench") / "configs/default.yaml")))
    assert spec.grid.cells == tuple(list_cells(include_controls=True))
    assert "mean" in spec.grid.cells                          # the order-blind control beside the cells
    assert set(spec.grid.modalities) >= {"rgb", "depth"} and len(spec.grid.seeds) == 3
    assert spec.preset == "small" and len(spec.grid.combos()) == 36
    ds = spec.datasets[spec.stages[0].dataset]
    assert ds.synthetic is not None          # generated when missing
    pre, fine = spec.stages                  # depth from scratch, then RGB from the depth model
    assert spec.combos(pre) == [(c, "depth", s) for c in list_cells(include_controls=True) for s in (0, 1, 2)]
    assert spec.combos(fine) == [(c, "rgb", s) for c in list_cells(include_controls=True) for s in (0, 1, 2)]
    assert fine.init_modality == "depth"
    assert spec.max_concurrent_trials == 2 and spec.reuse_actors


def test_minimal_defaults_and_relative_paths(tmp_path):
    spec = _parse(MINIMAL, tmp_path)
    assert spec.datasets["syn"].root == (tmp_path / "data/syn").resolve()
    assert spec.storage == (tmp_path / "runs").resolve()
    assert spec.sweep_dir == spec.storage / "t"
    assert spec.grid.seeds == (0,) and spec.grid.modalities == ("rgb",)
    assert spec.stages[0].dataset == "syn" and spec.stages[0].train.batch_size == 8
    assert spec.search is None and spec.scheduler is None and spec.max_failures == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML reads `1e-3` as a string; the schema takes it as the number it means.
    spec = _parse(MINIMAL + "train: {lr: 1e-3, weight_decay: 5e-5}\n", tmp_path)
    assert spec.stages[0].train.lr == pytest.approx(1e-3)


def test_unknown_cell_names_field_line_and_known_cells(tmp_path):
    from bench.models import list_cells

    msg = _error(MINIMAL + "grid:\n  cells: [a, b, e]\n", tmp_path)
    assert msg == (f"{tmp_path / 'sweep.yaml'}:7: grid.cells[2]: unknown cell 'e' "
                   f"(known: {', '.join(list_cells(include_controls=True))})")


@pytest.mark.parametrize("extra, expected", [
    ("bogus: 1\n", r"sweep.yaml:6: bogus: unknown key \(known: name, datasets, stages"),
    ("grid: {modalities: [rgb, ir]}\n", r"grid.modalities\[1\]: unknown modality 'ir'"),
    ("grid: {seeds: [0, 0]}\n", r"grid.seeds\[1\]: duplicate value 0"),
    ("preset: huge\n", r"preset: unknown preset 'huge' \(known: paper, small\)"),
    ("train: {lr: fast}\n", r"train.lr: must be a number, got the string 'fast'"),
    ("train: {cell: a}\n", r"train.cell: is set by the sweep itself"),
    ("train: {dropout: 0.1}\n", r"train.dropout: unknown key"),
    ("resources: {cpu: 0}\n", r"resources.cpu: must be > 0, got 0$"),
    ("resources: {gpu: 1.5}\n", r"resources.gpu: a fraction of a GPU must be below 1"),
    ("max_failures: -1\n", r"max_failures: must be >= 0, got -1"),
    ("clip_len: 7\n", r"clip_len: must be even"),
    ("scheduler: {grace_period: 5}\n", r"scheduler.grace_period: 5 exceeds stages\[0\] \(pretrain\) epochs 2"),
    ("search: {space: {lr: {normal: [0, 1]}}}\n", r"search.space.lr.normal: unknown distribution"),
    ("search: {space: {lr: {loguniform: [0, 1]}}}\n", r"search.space.lr.loguniform\[0\]: loguniform needs low > 0"),
    ("search: {space: {lr: {uniform: [0.1, 0.01]}}}\n", r"low must be < high"),
    ("search: {space: {clip_len: {choice: [8, 16]}}}\n", r"search.space.clip_len: cannot be searched"),
    ("search: {searcher: hyperopt, space: {lr: {choice: [0.1]}}}\n", r"search.searcher: unknown value 'hyperopt'"),
    ("search: {space: {batch_size: {uniform: [4, 8]}}}\n", r"batch_size is searched with choice"),
])
def test_bad_fields_are_named(tmp_path, extra, expected):
    msg = _error(MINIMAL + extra, tmp_path)
    assert re.search(expected, msg), msg


# Values each field accepts alone but the run cannot use: refused when the file is loaded (by
# constructing the stage's TrainConfig), at the line of the key that made the run impossible.
@pytest.mark.parametrize("extra, line, expected", [
    ("train: {lr: 0.01, lr_end: 0.5}\n", 6, r"train.lr_end: must be in \[0, lr=0.01\] .*got 0.5$"),
    ("train: {batch_size: 3}\nresources: {workers: 2}\n", 6,
     r"train.batch_size: is the global batch and must be divisible by the 2 workers .*got 3$"),
    ("train:\n  batch_size: 8\n  fail_once_at_epoch: 3\n", 8, r"train.fail_once_at_epoch: must be <= epochs=2"),
    ("resources: {gpu: 0.5, workers: 2}\n", 6, r"resources.gpu: a GPU share below 1 with workers=2 .*NCCL"),
    ("resources: {gpu: 0.5, workers: 4}\n", 6, (r"resources.gpu: a GPU share below 1 with workers=4 puts "
     r"several DDP ranks on one GPU, which NCCL refuses \(one GPU per rank\): use gpu: 1 per worker.*got 0.5$")),
    ("resources: {gpu: 2, workers: 1}\n", 6, (r"resources.gpu: gpu is per worker and a worker trains on one "
     r"GPU: gpu: 2 with workers: 1 reserves 2 GPUs and trains on 1; for 2 GPUs use workers: 2 with gpu: 1")),
    ("resources:\n  cpu: 2\n  gpu: 4\n  workers: 2\n", 8, (r"resources.gpu: .*gpu: 4 with workers: 2 "
     r"reserves 8 GPUs and trains on 2; for 8 GPUs use workers: 8 with gpu: 1")),
    ("train: {momentum: 1.0}\n", 6, r"train.momentum: must be in \[0, 1\), got 1.0$"),
    ("train: {backend: nvdec}\n", 6, r"train.backend: must be one of \['auto', 'dali-gpu'"),
    ("train: {recurrent_impl: fused}\n", 6, r"train.recurrent_impl: must be one of \['auto', 'native', 'aten', "
     r"'steploop'\], got the string 'fused'$"),
    ("train: {lr: 1e-3}\nsearch:\n  space:\n    lr_end: {uniform: [1.0e-6, 0.01]}\n", 9,
     r"search.space.lr_end: can draw lr_end=0.01, which stages\[0\] \(pretrain\) refuses: lr_end: must be in "
     r"\[0, lr=0.001\]"),
    ("resources: {workers: 2}\nsearch:\n  space:\n    batch_size: {choice: [4, 6, 9]}\n", 9,
     r"search.space.batch_size: can draw batch_size=9, .*divisible by the 2 workers"),
    ("search:\n  space:\n    lr: {loguniform: [1.0e-7, 1.0e-2]}\n", 8,
     r"search.space.lr: can draw lr=1e-07, .*lr_end: must be in \[0, lr=1e-07\]"),
])
def test_impossible_runs_fail_at_load_time(tmp_path, extra, line, expected):
    msg = _error(MINIMAL + extra, tmp_path)
    assert msg.startswith(f"{tmp_path / 'sweep.yaml'}:{line}: "), msg
    assert re.search(expected, msg), msg


def test_stage_train_errors_name_the_stage(tmp_path):
    text = MINIMAL.replace("{name: pretrain, epochs: 2}", "{name: pretrain, epochs: 2, train: {lr: 0.1, lr_end: 1}}")
    assert _error(text, tmp_path).startswith(f"{tmp_path / 'sweep.yaml'}:5: stages[0].train.lr_end: must be in")
    text = MINIMAL.replace("{name: pretrain, epochs: 2}", "{name: pretrain, epochs: 2, batch_size: 5}")
    assert "stages[0].batch_size: is the global batch" in _error(text + "resources: {workers: 2}\n", tmp_path)


def test_stage_holds_a_typed_trainconfig(tmp_path):
    """The driver holds each stage's TrainConfig from load time on: every field typed."""
    from bench.train.config import TrainConfig

    spec = _parse(MINIMAL + "train: {lr: 1e-3, amp: false}\nresources: {workers: 2, cpu: 1}\n", tmp_path)
    cfg = spec.stages[0].train
    assert isinstance(cfg, TrainConfig)
    assert (cfg.lr, cfg.amp, cfg.num_workers, cfg.epochs, cfg.batch_size, cfg.dataset) == \
        (1e-3, "off", 2, 2, 8, "isogd")
    assert cfg.root == str(tmp_path / "data" / "syn")


def test_structural_errors(tmp_path):
    assert "missing required key 'stages'" in _error("name: t\ndatasets: {s: {format: isogd, root: x}}\n", tmp_path)
    assert ":1: name: 'a b' must match" in _error(MINIMAL.replace("name: t", "name: a b"), tmp_path)
    assert "datasets.syn.format: unknown value 'ucf'" in _error(MINIMAL.replace("isogd", "ucf"), tmp_path)
    assert "stages[0].name: unknown value 'train'" in _error(MINIMAL.replace("name: pretrain", "name: train"), tmp_path)
    dup = "name: t\nname: u\n" + MINIMAL.split("\n", 1)[1]
    assert ":2: name: duplicate key" in _error(dup, tmp_path)
    assert "invalid YAML" in _error(MINIMAL + "grid: [\n", tmp_path)
    assert "must be a mapping, got a list" in _error("- 1\n", tmp_path)


def test_stage_rules(tmp_path):
    two = """\
    name: t
    datasets:
      j: {format: jester, root: j}
      i: {format: isogd, root: i}
    stages:
      - {name: STAGE1, dataset: j, epochs: 1}
      - {name: STAGE2, dataset: i, epochs: 1}
    """
    assert "pretrain must come before finetune" in _error(
        two.replace("STAGE1", "finetune").replace("STAGE2", "pretrain"), tmp_path)
    assert "stages[1].name: stage 'pretrain' appears twice" in _error(
        two.replace("STAGE1", "pretrain").replace("STAGE2", "pretrain"), tmp_path)
    spec = _parse(two.replace("STAGE1", "pretrain").replace("STAGE2", "finetune"), tmp_path)
    assert [s.name for s in spec.stages] == ["pretrain", "finetune"]
    alone = MINIMAL.replace("name: pretrain", "name: finetune")
    assert "needs 'init_from'" in _error(alone, tmp_path)
    assert _parse(alone.replace("epochs: 2}", "epochs: 2, init_from: old}"), tmp_path).stages[0].init_from \
        == (tmp_path / "old").resolve()
    assert "stages[0]: missing required key 'dataset'" in _error(
        two.replace("STAGE1", "pretrain").replace("STAGE2", "finetune").replace("dataset: j, ", ""), tmp_path)
    # finetune on depth from a pretrain that ran only RGB needs init_modality
    mods = two.replace("STAGE1", "pretrain").replace("STAGE2", "finetune") + "grid: {modalities: [rgb, depth]}\n"
    mods = mods.replace("dataset: j, epochs: 1}", "dataset: j, epochs: 1, modalities: [rgb]}")
    assert "set init_modality" in _error(mods, tmp_path)
    ok = _parse(mods.replace("dataset: i, epochs: 1}", "dataset: i, epochs: 1, init_modality: rgb}"), tmp_path)
    assert ok.combos(ok.stages[0]) == [(c, "rgb", 0) for c in ok.grid.cells]
    assert len(ok.combos(ok.stages[1])) == 2 * len(ok.grid.cells)


def test_synthetic_block_checks_modalities(tmp_path):
    text = MINIMAL.replace("root: data/syn}", "root: data/syn, synthetic: {num_classes: 4, size: [64, 48]}}")
    spec = _parse(text, tmp_path)
    assert spec.datasets["syn"].synthetic.num_classes == 4 and spec.datasets["syn"].synthetic.size == (64, 48)
    msg = _error(text + "grid: {modalities: [rgb, flow]}\n", tmp_path)
    assert "grid.modalities[1]: modality 'flow' is not generated for dataset 'syn'" in msg
    assert "synthetic.size: width and height must be even" in _error(text.replace("[64, 48]", "[65, 48]"), tmp_path)


def test_train_keys_are_trainconfig_fields():
    from bench.sweep import spec as sp
    from bench.train.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert sp.TRAIN_KEYS <= fields
    assert sp.SWEEP_OWNED <= fields
    assert set(sp.SEARCHABLE) <= sp.TRAIN_KEYS


def test_cli_reports_bad_file_with_exit_2(tmp_path, capsys):
    from bench.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text(MINIMAL + "grid: {cells: [e]}\n")
    assert main(["sweep", str(f)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:6: grid.cells[0]: unknown cell 'e' (known: convlstm, a, b, c, d, mean)" in err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the sweep file" in capsys.readouterr().err


def test_parse_spec_from_text_keeps_text():
    spec = parse_spec(MINIMAL, base_dir="/tmp")
    assert spec.text == MINIMAL and spec.source is None


def test_docstring_example_is_a_valid_sweep(tmp_path):
    from bench.sweep import spec as sp

    doc = sp.__doc__
    block = doc.split("::\n", 1)[1]
    text = textwrap.dedent("\n".join(line for line in block.splitlines()))
    spec = parse_spec(text, base_dir=tmp_path)
    assert spec.name == "demo" and spec.search.searcher == "optuna" and spec.scheduler.grace_period == 1
    assert spec.stages[0].train.lr == 0.02 and spec.stages[0].train.batch_size == 8
