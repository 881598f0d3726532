"""A hyperparameter search over several studies: all of a stage's studies in one Tune
experiment (their trials overlap), each study its own trials and TPE stream, what won in the
leaderboard, and `bench winners` re-running the selection on the held-out split."""

from __future__ import annotations

import io
import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPACE = {"lr": {"loguniform": [1.0e-3, 1.0e-1]}, "batch_size": {"choice": [2, 3]}}


@pytest.fixture(scope="module")
def search(local_ray, tiny_sweep, tmp_path_factory):
    pytest.importorskip("optuna")
    from bench.sweep.run import run_sweep
    from bench.sweep.spec import load_spec

    tmp = tmp_path_factory.mktemp("search")
    spec = load_spec(tiny_sweep(
        tmp, name="hp", epochs=2, seeds=[0, 1], synthetic={"test_clips_per_class": 1},
        search={"searcher": "optuna", "num_samples": 2, "seed": 0, "space": SPACE},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}))
    uri = f"sqlite:///{tmp}/mlflow.db"
    out = io.StringIO()
    outcome = run_sweep(spec, tracking_uri=uri, stream=out, synth_workers=1)
    assert outcome.ok, out.getvalue()
    return {"spec": spec, "tmp": tmp, "uri": uri, "outcome": outcome, "log": out.getvalue()}


def _span(t) -> tuple[float, float]:
    start = json.loads((t.dir / "node.json").read_text().splitlines()[0])["time"]
    return start, max(r["timestamp"] for r in t.results)


def test_all_studies_share_one_experiment_and_overlap(search):
    o, spec = search["outcome"], search["spec"]
    studies = {}
    for t in o.trials:
        studies.setdefault(t.combo, []).append(t)
    assert set(studies) == set(spec.combos(spec.stages[0])) and {t.unit for t in o.trials} == {"pretrain"}
    assert all(len(ts) == 2 for ts in studies.values())               # num_samples per study
    assert len({t.name for t in o.trials}) == 8
    # trials of different studies ran at the same time (one experiment per study never does)
    spans = [(t.combo, *_span(t)) for t in o.trials]
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in spans for b in spans), spans
    assert all(1e-3 <= t.config["lr"] <= 1e-1 and t.config["batch_size"] in (2, 3) for t in o.trials)


def test_leaderboard_names_what_won(search):
    o = search["outcome"]
    csv = (o.sweep_dir / "leaderboard.csv").read_text().splitlines()
    head = csv[0].split(",")
    assert {"stopped_early", "selected_trials", "selected_lr", "selected_batch_size"} <= set(head)
    for line in csv[1:]:
        row = dict(zip(head, line.split(",")))
        names = row["selected_trials"].split(";")
        assert len(names) == 2                                         # one selected trial per seed
        by_name = {t.name: t for t in o.trials}
        assert [float(x) for x in row["selected_lr"].split(";")] == [by_name[n].config["lr"] for n in names]
        assert int(row["trials"]) == 4
    assert "selected configurations" in search["log"] and "stopped early" in search["log"]


def test_winners_rerun_on_the_held_out_split(search, tmp_path):
    from bench.sweep.leaderboard import leaderboard
    from bench.sweep.run import run_sweep
    from bench.sweep.spec import parse_spec
    from bench.sweep.winners import winners_file

    o = search["outcome"]
    text = winners_file(o.sweep_dir, seeds=[5, 6])
    spec = parse_spec(text, base_dir=tmp_path)
    assert spec.name == "hp-winners" and spec.search is None and spec.scheduler is None
    assert spec.grid.seeds == (5, 6) and spec.datasets["syn"].val_split == "test"
    rows = {(r.cell, r.modality): r for r in leaderboard(o.trials, searched=["lr", "batch_size"])}
    for (cell, mod), row in rows.items():
        best = max(row.selected, key=lambda s: s.val_top1)
        cfg = spec.stages[0].config_for(cell, mod, 5)
        assert (cfg.lr, cfg.batch_size) == (dict(best.values)["lr"], dict(best.values)["batch_size"])
    out = io.StringIO()
    rerun = run_sweep(spec, tracking_uri=search["uri"], stream=out)
    assert rerun.ok, out.getvalue()
    assert len(rerun.trials) == len(rows) * 2
    for t in rerun.trials:
        assert t.config["val_split"] == "test" and t.config["seed"] in (5, 6)
        assert t.final["num_val_samples"] == 3                         # the test split: 3 classes x 1 clip
        assert t.config["lr"] == spec.stages[0].config_for(t.combo[0], t.combo[1], 5).lr
    assert "scored on split 'test'" in out.getvalue()


def test_winners_refuses_what_it_cannot_select_from(search, tmp_path):
    """Not a sweep folder; a sweep that ran no search; seeds that cannot be a grid: each a one-line
    error that says why, and no file."""
    import shutil

    import yaml

    from bench.errors import CLIError
    from bench.sweep.winners import winners_file

    with pytest.raises(CLIError, match="not a sweep folder"):
        winners_file(tmp_path, seeds=[0])
    plain = tmp_path / "plain"
    shutil.copytree(search["outcome"].sweep_dir, plain)
    doc = yaml.safe_load((plain / "sweep.yaml").read_text())
    doc.pop("search")
    (plain / "sweep.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(CLIError, match=r"ran no search \(no `search:`\): nothing was selected"):
        winners_file(plain, seeds=[0])
    with pytest.raises(CLIError, match=r"--seeds: distinct seeds >= 0, got \[1, 1\]"):
        winners_file(search["outcome"].sweep_dir, seeds=[1, 1])


@pytest.mark.timeout(400)
def test_killed_driver_resumes_every_study_without_running_a_trial_twice(short_tmp, tiny_sweep, kill_driver_when):
    """SIGKILL the driver of a two-study search in its second trial; --resume continues: each
    study ends with exactly its num_samples trials, the finished trial is not re-run and the
    interrupted one continues from its checkpoint."""
    import os
    import subprocess
    import sys

    pytest.importorskip("optuna")
    tmp = short_tmp
    sweep = tiny_sweep(tmp, name="killhp", epochs=30, synthetic={"clips_per_class": 4}, max_concurrent_trials=1,
                       search={"searcher": "optuna", "num_samples": 2, "seed": 0, "space": SPACE})
    uri = f"sqlite:///{tmp}/mlflow.db"
    env = dict(os.environ, RAY_TMPDIR=str(tmp / "rt"))
    (tmp / "rt").mkdir()
    bench = [sys.executable, "-m", "bench", "sweep", str(sweep), "--tracking-uri", uri]
    # the first trial is done and the second reported its 2nd epoch: kill -9
    seen = kill_driver_when(bench, lambda seen: sum(" done: val_top1" in x for x in seen) == 1
                            and "epoch 2/30" in seen[-1], cwd=tmp, env=env, ray_tmp=tmp / "rt")
    first = next(x.split("]", 1)[1].split()[0] for x in seen if " done: val_top1" in x)   # "[ 7.5s] NAME done: ..."

    r = subprocess.run([*bench, "--resume"], capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pretrain: resuming unfinished trials" in r.stdout

    from bench.sweep.results import read_sweep

    _, trials = read_sweep(tmp / "runs" / "killhp")
    per_study: dict = {}
    for t in trials:
        per_study.setdefault(t.combo, []).append(t)
    assert sorted(per_study) == [("a", "rgb", 0), ("convlstm", "rgb", 0)], [t.name for t in trials]
    assert all(len(ts) == 2 for ts in per_study.values()), {k: [t.name for t in v] for k, v in per_study.items()}
    assert all(t.status == "TERMINATED" and t.last_epoch == 30 for t in trials)
    starts = {t.name: len((t.dir / "node.json").read_text().splitlines()) for t in trials}
    assert starts[first] == 1                              # finished before the kill: not re-run
    assert sorted(starts.values()) == [1, 1, 1, 2]         # only the interrupted trial started twice
    for t in trials:                                       # and no epoch ran twice in any trial
        epochs = [res["epoch"] for res in t.results]
        assert sorted(set(epochs)) == list(range(1, 31)) and epochs.count(1) == 1
