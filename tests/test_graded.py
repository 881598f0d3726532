"""`bench graded`: a sweep file at every level of a difficulty axis, then the curves (a tiny
sweep stands in for bench/configs/graded.yaml, whose run is in docs/GRADED.md)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.mark.timeout(600)
def test_graded_runs_each_level_and_writes_curves_with_intervals(tmp_path, tiny_sweep):
    tiny_sweep(tmp_path, name="g", storage="runs", root="data/syn", cells=["a", "mean"], seeds=[0, 1],
               modalities=["rgb"], epochs=1, synthetic={"num_classes": 4, "valid_clips_per_class": 3})
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    cmd = [sys.executable, "-m", "bench", "graded", "g.yaml", "--axis", "noise", "--levels", "0,1"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=560)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # one dataset and one sweep per level; the same clips, the axis set to the level
    for tag, level in (("000", 0.0), ("100", 1.0)):
        meta = json.loads((tmp_path / f"data/syn-noise-{tag}/SYNTHETIC.json").read_text())
        assert meta["options"]["noise"] == level
        assert (tmp_path / f"runs/g-noise-{tag}/sweep.json").is_file()
    lists = [(tmp_path / f"data/syn-noise-{t}/valid_list.txt").read_text() for t in ("000", "100")]
    assert lists[0] == lists[1]
    out = tmp_path / "reports/g-noise"
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert {(r["cell"], float(r["level"])) for r in rows} == {(c, lv) for c in ("a", "mean") for lv in (0.0, 1.0)}
    for r in rows:
        top1, lo, hi = float(r["top1"]), float(r["top1_ci_low"]), float(r["top1_ci_high"])
        assert 0.0 <= lo <= top1 <= hi <= 100.0
        assert r["seeds"] == "2" and r["clips"] == "12"
    drops = list(csv.DictReader((out / "drops.csv").open()))
    assert {d["cell"] for d in drops} == {"a", "mean"}
    by = {(r["cell"], float(r["level"])): float(r["top1"]) for r in rows}
    for d in drops:
        assert float(d["drop"]) == pytest.approx(by[(d["cell"], 0.0)] - by[(d["cell"], 1.0)], abs=1e-9)
        assert float(d["drop_ci_low"]) <= float(d["drop"]) <= float(d["drop_ci_high"])
        assert float(d["p_boot"]) <= float(d["p_holm"]) <= 1.0
    md = (out / "curves.md").read_text()
    assert "mean (control)" in md and "2 seed(s), 12 validation clips a seed; chance 25.0%" in md
    assert (out / "curves.png").stat().st_size > 10_000
    # the curves again without training; a level that never ran is named
    r = subprocess.run([*cmd, "--curves-only"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0 and "Drop from noise 0 to 1" in r.stdout, r.stderr
    r = subprocess.run([*cmd[:-1], "0,0.5", "--curves-only"], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120)
    assert r.returncode != 0 and "g-noise-050: level 0.5 has not run" in r.stderr
    # a finished suite resumes into nothing and redraws the curves
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.count("pretrain: finished earlier, skipped") == 2, r.stdout + r.stderr
