"""The leaderboard: final-epoch val_top1 per cell x modality, mean/std over seeds, from the last
stage that trained each pair; reading trial folders the way Tune leaves them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.sweep.leaderboard import format_table, leaderboard, to_csv
from bench.sweep.results import TrialRecord, final_checkpoints, read_unit


def _t(stage: str, cell: str, mod: str, seed: int, finals: list[float], name: str = "") -> TrialRecord:
    res = [{"epoch": i + 1, "val_top1": v, "params": 1000, "macs_per_clip": 2e6} for i, v in enumerate(finals)]
    return TrialRecord(unit=stage, dir=Path("/nonexistent"), name=name or f"{stage}-{cell}-{mod}-s{seed}",
                       trial_id="x", config={"cell": cell, "modality": mod, "seed": seed, "stage": stage},
                       results=res, status="TERMINATED")


def test_mean_std_over_seeds_final_epoch_and_last_stage():
    trials = [
        _t("pretrain", "a", "depth", 0, [0.5, 1.0]), _t("pretrain", "a", "depth", 1, [0.9, 0.8]),
        _t("pretrain", "a", "rgb", 0, [0.1]),                   # superseded by the finetune stage
        _t("finetune", "a", "rgb", 0, [0.6, 0.7]), _t("finetune", "a", "rgb", 1, [0.9, 0.5]),
        _t("finetune", "b", "rgb", 0, [0.3, 0.2]),
    ]
    rows = {(r.cell, r.modality): r for r in leaderboard(trials)}
    d = rows[("a", "depth")]
    assert d.stage == "pretrain" and d.mean == pytest.approx(0.9) and d.std == pytest.approx(math.sqrt(0.02))
    assert d.best_mean == pytest.approx(0.95) and d.seeds == 2
    r = rows[("a", "rgb")]
    assert r.stage == "finetune" and r.mean == pytest.approx(0.6) and r.best_mean == pytest.approx(0.8)
    assert rows[("b", "rgb")].std == 0 and rows[("b", "rgb")].seeds == 1
    assert [x.cell + x.modality for x in leaderboard(trials)] == ["adepth", "argb", "brgb"]   # best first
    assert [x.stage for x in leaderboard(trials, stage="pretrain")] == ["pretrain", "pretrain"]
    text = format_table(leaderboard(trials), num_classes=4, title="T")
    assert text.splitlines()[0] == "T" and "chance level: 0.250 (1/4 classes)" in text
    csv = to_csv(leaderboard(trials), num_classes=4).splitlines()
    assert csv[1] == "a,depth,pretrain,0.900000,0.141421,0.950000,2,2,1000,2000000,0.250000"


def test_search_keeps_each_seeds_best_trial():
    trials = [_t("pretrain", "a", "rgb", 0, [0.2], "t1"), _t("pretrain", "a", "rgb", 0, [0.7], "t2"),
              _t("pretrain", "a", "rgb", 1, [0.5], "t3")]
    (row,) = leaderboard(trials)
    assert row.mean == pytest.approx(0.6) and row.seeds == 2 and row.trials == 3


def test_read_unit_and_final_checkpoints(tmp_path):
    unit = tmp_path / "pretrain"
    for name, cell, scores in (("pretrain-a-rgb-s0-abcde_00000", "a", [0.2, 0.4]),
                               ("pretrain-b-rgb-s0-abcde_00001", "b", [0.3])):
        d = unit / name
        (d / "checkpoint_000000").mkdir(parents=True)
        (d / "checkpoint_000000" / "state.pt").write_bytes(b"x")
        if len(scores) > 1:
            (d / "checkpoint_000001").mkdir()
            (d / "checkpoint_000001" / "state.pt").write_bytes(b"x")
        (d / "checkpoint_000009").mkdir()                     # no state.pt: not a usable checkpoint
        (d / "params.json").write_text(json.dumps({"cell": cell, "modality": "rgb", "seed": 0, "stage": "pretrain"}))
        lines = [json.dumps({"epoch": i + 1, "val_top1": v, "trial_id": name[-11:], "config": {}})
                 for i, v in enumerate(scores)]
        (d / "result.json").write_text("\n".join(lines) + "\n{\"epoch\": 3, \"val_")   # cut by a kill
    trials = read_unit(unit)
    assert [t.trial_id for t in trials] == ["abcde_00000", "abcde_00001"]
    assert trials[0].last_epoch == 2 and trials[0].status == "UNKNOWN" and "config" not in trials[0].results[0]
    found = final_checkpoints(trials)
    assert found[("a", "rgb", 0)] == (unit / "pretrain-a-rgb-s0-abcde_00000" / "checkpoint_000001", 0.4)
    assert found[("b", "rgb", 0)][0].name == "checkpoint_000000"


def test_search_rows_name_the_selected_configuration_and_early_stops():
    """Each seed's study selects its best full-length trial (a trial ASHA stopped early was
    judged on a shorter budget); the row says every searched key's value, the trial count and
    how many were stopped early -- in the printed table and in the CSV."""
    def trial(seed, lr, bs, finals, name):
        t = _t("pretrain", "a", "rgb", seed, finals, name=name)
        t.config.update(lr=lr, batch_size=bs, epochs=3)
        return t

    trials = [trial(0, 0.05, 8, [0.3, 0.6, 0.8], "t0"), trial(0, 0.01, 4, [0.99], "t1"),   # t1: stopped
              trial(0, 0.002, 8, [0.2, 0.3, 0.4], "t2"), trial(1, 0.03, 16, [0.5, 0.6, 0.7], "t3"),
              trial(1, 0.09, 4, [0.2, 0.25], "t4")]
    (row,) = leaderboard(trials, searched=["lr", "batch_size"])
    assert (row.trials, row.stopped, row.seeds) == (5, 2, 2)
    assert [(s.seed, s.trial, dict(s.values)) for s in row.selected] == \
        [(0, "t0", {"lr": 0.05, "batch_size": 8}), (1, "t3", {"lr": 0.03, "batch_size": 16})]
    assert row.mean == pytest.approx(0.75)
    text = format_table([row])
    assert "a rgb: 5 trials, 2 stopped early" in text
    assert "seed 0: lr=0.05, batch_size=8  (val_top1 0.800, t0)" in text
    head, line = to_csv([row]).splitlines()
    cols = dict(zip(head.split(","), line.split(",")))
    assert (cols["stopped_early"], cols["selected_trials"], cols["selected_lr"], cols["selected_batch_size"]) == \
        ("2", "t0;t3", "0.05;0.03", "8;16")
    # a seed whose trials were all stopped early still reports its best one
    (row,) = leaderboard([trial(0, 0.01, 4, [0.9], "only")], searched=["lr"])
    assert row.selected[0].trial == "only" and row.stopped == 1


def test_stage_barrier_counts_the_slots_left_idle(tmp_path):
    """Two slots; pre-train trials end at 10 and 14, fine-tune starts at 16: from 10 to 16 one
    slot idles 10..16 and the other 14..16, i.e. 8 idle slot-seconds of 2 x 26."""
    from bench.sweep.results import stage_barrier

    def trial(name, stage, start, end):
        d = tmp_path / name
        d.mkdir()
        (d / "node.json").write_text(json.dumps({"time": start}) + "\n")
        return TrialRecord(unit=stage, dir=d, name=name, trial_id=name, config={"stage": stage},
                           results=[{"epoch": 1, "timestamp": end}], status="TERMINATED")

    trials = [trial("p0", "pretrain", 0, 10), trial("p1", "pretrain", 0, 14),
              trial("f0", "finetune", 16, 26), trial("f1", "finetune", 16, 24)]
    b = stage_barrier(trials, slots=2)
    assert b["idle_slot_s"] == pytest.approx(8) and b["sweep_slot_s"] == pytest.approx(52)
    assert b["fraction"] == pytest.approx(8 / 52) and b["barrier_s"] == pytest.approx(6)
    assert stage_barrier(trials[:2], slots=2) is None
