"""`bench run`: the main job's command path (a tiny config stands in for the default, whose wall
time is measured in docs/BENCHMARKS.md; its schema is checked in test_sweep_spec.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_run_help_is_fast_and_documents_defaults():
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "--out" in r.stdout and "--tracking-uri" in r.stdout and "synthetic" in r.stdout
    r = subprocess.run([sys.executable, "-c", "import sys, bench.sweep.cli, bench.tracking; "
                        "print(sorted(m for m in ('ray', 'mlflow', 'torch') if m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"          # `bench --help` does not pay for heavy imports


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_bench_run_generates_data_trains_and_prints_a_leaderboard(tmp_path, tiny_sweep):
    # relative root and the default storage: `bench run` resolves them in its working directory
    tiny_sweep(tmp_path, name="quick", storage=None, root="data/syn", synthetic={"modalities": ["rgb", "depth"]},
               cells=["a"], modalities=["rgb", "depth"], epochs=1)
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--config", "quick.yaml"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "data/syn/SYNTHETIC.json").is_file()            # generated when missing
    assert (tmp_path / "mlflow.db").is_file()                           # the default local store
    (sweep_dir,) = list((tmp_path / "runs").glob("quick-*"))            # a fresh, timestamped sweep
    assert "leaderboard" in r.stdout and "chance level: 0.333" in r.stdout
    board = r.stdout.split("\nleaderboard", 1)[1].split("\n\n", 1)[0]     # the table, before the fused block
    lines = [x for x in board.splitlines() if x.startswith("a ")]
    assert {x.split()[1] for x in lines} == {"rgb", "depth"}
    assert "late fusion" in r.stdout and "a        rgb+depth" in r.stdout     # RGB fused with depth, one stage
    assert (sweep_dir / "leaderboard.csv").is_file()
    # the report too: its files, and the leaderboard as runs in the store `bench ui` serves
    assert (tmp_path / "reports" / sweep_dir.name / "report.html").is_file()
    from mlflow.tracking import MlflowClient

    from bench.tracking import records

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tests")
    entries = c.search_runs([exp.experiment_id], records.LEADERBOARD_FILTER)
    assert {(r.data.tags["cell"], r.data.tags["modality"]) for r in entries} >= {("a", "rgb"), ("a", "depth")}
    r2 = subprocess.run([sys.executable, "-m", "bench", "run", "--config", "quick.yaml", "--resume"],
                        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=200)
    assert r2.returncode == 0 and "pretrain: finished earlier, skipped" in r2.stdout, r2.stdout + r2.stderr
    assert len(list((tmp_path / "runs").glob("quick-*"))) == 1
