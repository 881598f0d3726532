"""A tiny sweep end to end on a local Ray: pretrain (every trial fails once) then finetune.

One sweep serves every test here (module fixture): 2 cells x RGB x 1 seed, pretrain 3 epochs
with the fail-once hook at epoch 2, then finetune 1 epoch from each pretrain checkpoint.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def tiny(local_ray, tiny_sweep, tmp_path_factory):
    from bench.sweep.run import run_sweep
    from bench.sweep.spec import load_spec

    tmp = tmp_path_factory.mktemp("sweep")
    file = tiny_sweep(tmp, stages=[{"name": "pretrain", "epochs": 3, "train": {"fail_once_at_epoch": 2}},
                                   {"name": "finetune", "epochs": 1}],
                      train={"batch_size": 3, "lr": 0.01}, resources={"cpu": 1}, max_failures=2)
    spec = load_spec(file)
    uri = f"sqlite:///{tmp}/mlflow.db"
    out = io.StringIO()
    outcome = run_sweep(spec, tracking_uri=uri, stream=out, synth_workers=1)
    return {"spec": spec, "file": file, "uri": uri, "outcome": outcome, "log": out.getvalue(), "tmp": tmp}


def test_every_trial_finishes_and_retry_resumes_from_checkpoint(tiny):
    o = tiny["outcome"]
    assert o.ok and o.errors == 0, tiny["log"]
    by_stage = {}
    for t in o.trials:
        by_stage.setdefault(t.stage, []).append(t)
    assert len(by_stage["pretrain"]) == 2 and len(by_stage["finetune"]) == 2
    for t in o.trials:
        assert t.status == "TERMINATED"
        assert t.name.startswith(f"{t.stage}-{t.combo[0]}-rgb-s0-")
    for t in by_stage["pretrain"]:
        # the hook raised at the start of epoch 2; the retry resumed from epoch 1's checkpoint,
        # so epoch 1 ran once (a restart from scratch would report it twice)
        assert [r["epoch"] for r in t.results] == [1, 2, 3]
        starts = (t.dir / "node.json").read_text().splitlines()
        assert len(starts) == 2
        assert Path(t.config["fail_marker"]).is_file()
    log = tiny["log"]
    assert log.count("failed; retrying from its last checkpoint") == 2


def test_each_trial_keeps_its_newest_two_checkpoints(tiny):
    """Retention (`CheckpointRetention`, then a last pass after the stage): pretrain's three
    epochs leave checkpoints 2 and 3, the last the one its result.json names last."""
    for t in (t for t in tiny["outcome"].trials if t.stage == "pretrain"):
        names = sorted(p.name for p in t.dir.glob("checkpoint_*"))
        assert len(names) == 2, names
        assert names[-1] == t.results[-1]["checkpoint_dir_name"] == t.checkpoint.name


def test_finetune_starts_from_the_matching_pretrain_checkpoint(tiny):
    trials = tiny["outcome"].trials
    pre = {t.combo: t for t in trials if t.stage == "pretrain"}
    for t in (t for t in trials if t.stage == "finetune"):
        init = Path(t.config["init_checkpoint"])
        assert init == pre[t.combo].checkpoint
        assert (init / "state.pt").is_file() and init.parent == pre[t.combo].dir
        assert t.final["epoch"] == 1 and t.config["epochs"] == 1


def test_leaderboard_printed_and_saved(tiny):
    o = tiny["outcome"]
    assert {(r.cell, r.modality) for r in o.leaderboard} == {("a", "rgb"), ("convlstm", "rgb")}
    finals = {t.combo[0]: t.final["val_top1"] for t in o.trials if t.stage == "finetune"}
    for r in o.leaderboard:
        assert r.mean == pytest.approx(finals[r.cell]) and r.seeds == 1 and r.std == 0
    assert "chance level: 0.333 (1/3 classes)" in tiny["log"]
    csv = (o.sweep_dir / "leaderboard.csv").read_text().splitlines()
    assert csv[0].startswith("cell,modality,stage,val_top1_mean") and len(csv) == 3
    assert all(r.stage == "finetune" for r in o.leaderboard)


def _runs(uri: str, experiment: str = "tests"):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return c, c.search_runs([exp.experiment_id], max_results=1000)


def test_mlflow_parent_and_nested_runs(tiny):
    import polars as pl

    c, runs = _runs(tiny["uri"])
    parents = [r for r in runs if r.data.tags.get("bench.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("bench.kind") == "trial"]
    assert len(parents) == 1 and len(trials) == 4          # no duplicate despite the retries
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep"] == "tiny" and parent.data.tags["stages"] == "pretrain,finetune"
    assert parent.data.tags["git_commit"] and parent.data.tags["version.ray"] == "2.60.0"
    assert {a.path for a in c.list_artifacts(parent.info.run_id)} >= {"leaderboard.csv", "sweep.yaml"}
    for r in trials:
        t = r.data.tags
        assert t["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
        assert t["synthetic"] == "true" and t["dataset"] == "syn" and t["preset"] == "small"
        assert t["cell"] in ("a", "convlstm") and t["modality"] == "rgb" and t["seed"] == "0"
        epochs = 3 if t["stage"] == "pretrain" else 1
        # every epoch exactly once, step = epoch
        for key in ("epoch", "val_top1", "train_loss"):
            assert sorted(m.step for m in c.get_metric_history(r.info.run_id, key)) == list(range(1, epochs + 1))
        p = r.data.params
        assert p["lr"] == "0.01" and p["batch_size"] == "3" and p["cell"] == t["cell"] and p["sweep.name"] == "tiny"
        assert r.data.metrics["params"] > 0 and r.data.metrics["macs_per_clip"] > 0
        assert t["node_id"] and t["last_epoch"] == str(epochs)
        arts = {a.path for a in c.list_artifacts(r.info.run_id)}
        assert arts == {"val_scores.parquet", "metrics.json"}
        local = c.download_artifacts(r.info.run_id, "val_scores.parquet", str(tiny["tmp"] / f"dl-{r.info.run_id}"))
        df = pl.read_parquet(local)
        assert df.columns == ["sample_id", "label", "pred", "probs"] and df.height == 3
        assert r.data.metrics["val_top1"] == pytest.approx(float((df["pred"] == df["label"]).mean()))


def test_sync_restores_everything_into_an_empty_store(tiny):
    from bench.tracking.sync import sync_sweep

    uri2 = f"sqlite:///{tiny['tmp']}/empty.db"
    st = sync_sweep(tiny["outcome"].sweep_dir, tracking_uri=uri2)
    assert st.runs_created == 4 and st.epochs_logged == 2 * 3 + 2 * 1 and st.artifacts_logged == 8
    assert st.unfinished == []
    c1, runs1 = _runs(tiny["uri"])
    c2, runs2 = _runs(uri2)
    assert len(runs2) == len(runs1) == 5
    def summary(c, runs):
        out = {}
        for r in runs:
            if r.data.tags.get("bench.kind") != "trial":
                continue
            out[r.data.tags["trial_name"]] = (
                r.info.status, r.data.params,
                sorted((m.step, round(m.value, 6)) for m in c.get_metric_history(r.info.run_id, "val_top1")),
                sorted(a.path for a in c.list_artifacts(r.info.run_id)))
        return out
    assert summary(c2, runs2) == summary(c1, runs1)
    again = sync_sweep(tiny["outcome"].sweep_dir, tracking_uri=uri2)      # idempotent
    assert (again.runs_created, again.runs_found, again.epochs_logged) == (0, 4, 0)
    assert len(_runs(uri2)[1]) == 5


def test_sync_cli_takes_the_sweep_file_or_the_storage_root(tiny, capsys):
    from bench.cli import main

    uri3 = f"sqlite:///{tiny['tmp']}/cli.db"
    assert main(["sync", str(tiny["file"]), "--tracking-uri", uri3]) == 0
    assert "4 runs created, 0 found, 8 epochs and 8 artifacts logged" in capsys.readouterr().out
    assert main(["sync", str(tiny["tmp"] / "runs"), "--tracking-uri", uri3]) == 0
    assert "0 runs created, 4 found, 0 epochs" in capsys.readouterr().out
    assert main(["sync", str(tiny["tmp"] / "nothing-here"), "--tracking-uri", uri3]) == 2
    assert "no sweep found" in capsys.readouterr().err


def test_resuming_a_finished_sweep_runs_nothing_and_rerun_is_refused(tiny):
    from bench.errors import SweepError
    from bench.sweep.run import run_sweep

    out = io.StringIO()
    o = run_sweep(tiny["spec"], resume=True, tracking_uri=tiny["uri"], stream=out)
    assert o.ok and "pretrain: finished earlier, skipped" in out.getvalue()
    assert len(_runs(tiny["uri"])[1]) == 5
    with pytest.raises(SweepError, match="already holds a sweep named 'tiny': pass --resume"):
        run_sweep(tiny["spec"], tracking_uri=tiny["uri"], stream=io.StringIO())
    meta = json.loads((tiny["outcome"].sweep_dir / "sweep.json").read_text())
    assert meta["units"] == {"pretrain": {"stage": "pretrain", "state": "done", "errors": 0},
                             "finetune": {"stage": "finetune", "state": "done", "errors": 0}}


def test_optuna_search_with_asha(tiny, tiny_sweep):
    pytest.importorskip("optuna")
    from bench.sweep.run import run_sweep
    from bench.sweep.spec import load_spec

    tmp = tiny["tmp"]
    spec = load_spec(tiny_sweep(
        tmp, name="search", experiment="tests-search", epochs=2, cells=["a"], seeds=[3], train=None,
        datasets={"syn": {"format": "isogd", "root": str(tmp / "data" / "syn")}},   # the tiny sweep's data
        search={"searcher": "optuna", "num_samples": 3, "seed": 0,
                "space": {"lr": {"loguniform": [1.0e-3, 1.0e-1]}, "batch_size": {"choice": [2, 3]}}},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}))
    out = io.StringIO()
    o = run_sweep(spec, tracking_uri=tiny["uri"], stream=out)
    assert o.ok, out.getvalue()
    assert len(o.trials) == 3 and {t.unit for t in o.trials} == {"pretrain"}   # the stage's one experiment
    lrs = [t.config["lr"] for t in o.trials]
    assert len(set(lrs)) == 3 and all(1e-3 <= x <= 1e-1 for x in lrs)
    assert {t.config["batch_size"] for t in o.trials} <= {2, 3}
    assert all(t.config["seed"] == 3 and t.config["cell"] == "a" for t in o.trials)
    assert all(1 <= t.last_epoch <= 2 for t in o.trials)        # ASHA may stop some after epoch 1
    c, runs = _runs(tiny["uri"], "tests-search")
    trials = [r for r in runs if r.data.tags["bench.kind"] == "trial"]
    assert len(trials) == 3 and {float(r.data.params["lr"]) for r in trials} == set(lrs)
