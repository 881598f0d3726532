"""The sweep's storage as an ``s3://`` URI, against a real S3 protocol server on 127.0.0.1
(moto's server mode, started by conftest's ``s3_server``).

- `bench.storage` on the bucket: what the sweep's readers and writers rely on;
- a two-stage sweep with ``storage: s3://...`` (the fine-tune trials start from the pre-train
  checkpoints in the bucket, the fail-once hook's retry restores from one), then
  ``bench report --from-tune-dir s3://...`` and ``bench sync s3://...`` into an empty store;
  nothing of the sweep is written to the local disk.

The driver killed mid-sweep and resumed from the bucket on another working directory, and a
worker node lost mid-trial on two nodes: tests/test_storage_s3_resume.py.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def _bucket(s3_server) -> str:
    return s3_server.bucket(f"gb-{uuid.uuid4().hex[:12]}")


def test_remote_paths_read_write_list_and_rename_on_the_server(s3_server, tmp_path):
    from bench.storage import RemotePath, local_copy, location, write_text_atomic
    from bench.sweep.results import read_meta, write_meta

    root = location(_bucket(s3_server) + "/runs")
    assert isinstance(root, RemotePath) and not root.exists()
    write_meta(root / "sw", {"name": "sw", "units": {}})
    assert read_meta(str(root / "sw")) == {"name": "sw", "units": {}}
    (root / "sw" / "u" / "t1" / "result.json").write_text('{"epoch": 1}\n')
    (root / "sw" / "u" / "t2" / "params.json").write_text("{}")
    assert [p.name for p in (root / "sw").iterdir()] == ["sweep.json", "u"]
    assert [p.is_dir() for p in (root / "sw").iterdir()] == [False, True]
    assert [str(p) for p in root.glob("*/sweep.json")] == [f"{root}/sw/sweep.json"]
    assert [p.name for p in (root / "sw" / "u").glob("t*")] == ["t1", "t2"]
    write_text_atomic(root / "sw" / "u" / "t1" / "result.json", '{"epoch": 2}\n')
    assert (root / "sw" / "u" / "t1" / "result.json").read_text() == '{"epoch": 2}\n'
    moved = (root / "sw" / "u").rename(root / "sw" / ".u.abandoned")
    assert not (root / "sw" / "u").exists() and (moved / "t2" / "params.json").is_file()
    with local_copy(moved) as d:
        assert sorted(p.name for p in d.iterdir()) == ["t1", "t2"] and (d / "t1" / "result.json").is_file()
    with pytest.raises(FileNotFoundError, match=r"s3://.*/nothing: no such file"):
        (root / "nothing").read_text()
    # Ray reports checkpoints by their path on the filesystem (bucket/key): mapped back to the URI
    assert moved.at_fs_path(moved.fs_path + "/t1") == moved / "t1"


def test_bench_storage_refuses_a_missing_bucket_with_the_reason(s3_server):
    from bench.storage import location

    with pytest.raises(OSError, match="bucket does not exist|NoSuchBucket|NO_SUCH_BUCKET"):
        (location(f"s3://gb-missing-{uuid.uuid4().hex[:8]}/runs") / "x").write_text("x")


@pytest.fixture(scope="module")
def s3_sweep(s3_server, local_ray, tiny_sweep, tmp_path_factory):
    """A two-stage sweep whose storage is a bucket: pretrain 3 epochs (every trial fails once at
    epoch 2 and is retried from its checkpoint), finetune 1 epoch from each pretrain checkpoint."""
    from bench.sweep.run import run_sweep
    from bench.sweep.spec import load_spec

    tmp = tmp_path_factory.mktemp("s3sweep")
    bucket = _bucket(s3_server)
    file = tiny_sweep(tmp, name="s3two", storage=f"{bucket}/runs",
                      stages=[{"name": "pretrain", "epochs": 3, "train": {"fail_once_at_epoch": 2}},
                              {"name": "finetune", "epochs": 1}],
                      train={"batch_size": 3, "lr": 0.01}, resources={"cpu": 1}, max_failures=2)
    spec = load_spec(file)
    uri = f"sqlite:///{tmp}/mlflow.db"
    out = io.StringIO()
    outcome = run_sweep(spec, tracking_uri=uri, stream=out, synth_workers=1)
    return {"spec": spec, "file": file, "uri": uri, "outcome": outcome, "log": out.getvalue(), "tmp": tmp,
            "bucket": bucket}


def test_two_stage_sweep_keeps_everything_in_the_bucket(s3_sweep, s3_server):
    from bench.storage import RemotePath
    from bench.sweep.results import read_sweep

    o, log = s3_sweep["outcome"], s3_sweep["log"]
    assert o.ok, log
    assert str(o.sweep_dir) == f"{s3_sweep['bucket']}/runs/s3two" and isinstance(o.sweep_dir, RemotePath)
    # nothing of the sweep on the local disk: no runs/ folder, no `s3:` folder
    assert not (s3_sweep["tmp"] / "runs").exists() and not (s3_sweep["tmp"] / "s3:").exists()
    assert not (Path.cwd() / "s3:").exists()
    meta, trials = read_sweep(f"{s3_sweep['bucket']}/runs/s3two")      # a reader with only the URI
    assert meta["units"]["pretrain"]["state"] == meta["units"]["finetune"]["state"] == "done"
    assert sorted((t.stage, t.combo[0], t.status) for t in trials) == [
        ("finetune", "a", "TERMINATED"), ("finetune", "convlstm", "TERMINATED"),
        ("pretrain", "a", "TERMINATED"), ("pretrain", "convlstm", "TERMINATED")]
    keys = s3_server.keys(s3_sweep["bucket"].removeprefix("s3://"), "runs/s3two/")
    assert {"runs/s3two/sweep.json", "runs/s3two/sweep.yaml", "runs/s3two/leaderboard.csv"} <= set(keys)
    pre = {t.combo: t for t in trials if t.stage == "pretrain"}
    for t in pre.values():
        # the fail-once retry restored epoch 1's checkpoint from the bucket: each epoch once
        assert [r["epoch"] for r in t.results] == [1, 2, 3]
        assert len((t.dir / "node.json").read_text().splitlines()) == 2
        assert (t.checkpoint / "state.pt").is_file() and (t.checkpoint / "val_scores.parquet").is_file()
    for t in (t for t in trials if t.stage == "finetune"):
        # the fine-tune trial started from its pretrain trial's final checkpoint, named by URI
        assert t.config["init_checkpoint"] == str(pre[t.combo].checkpoint)
        assert t.config["init_checkpoint"].startswith(s3_sweep["bucket"] + "/runs/s3two/pretrain/")
        assert t.final["epoch"] == 1
    csv = (o.sweep_dir / "leaderboard.csv").read_text().splitlines()
    assert csv[0].startswith("cell,modality") and len(csv) == 3


def test_mlflow_runs_carry_the_bucket_checkpoints_and_artifacts(s3_sweep):
    from mlflow import MlflowClient

    c = MlflowClient(s3_sweep["uri"])
    exp = c.get_experiment_by_name("tests")
    runs = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("bench.kind") == "trial"]
    assert len(runs) == 4
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["final_checkpoint"].startswith(s3_sweep["bucket"] + "/runs/s3two/")
        assert {a.path for a in c.list_artifacts(r.info.run_id)} == {"val_scores.parquet", "metrics.json"}
        assert r.data.tags["starts"] == ("2" if r.data.tags["stage"] == "pretrain" else "1")


def test_report_from_the_bucket_matches_the_sweep(s3_sweep, tmp_path, capsys):
    from bench.cli import main

    sweep_uri = f"{s3_sweep['bucket']}/runs/s3two"
    rc = main(["report", "--from-tune-dir", sweep_uri, "--out", str(tmp_path / "rep"), "--no-mlflow-log"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"4 trial(s) of sweep 's3two' from Ray Tune storage {sweep_uri}" in err
    html = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    finals = {t.combo[0]: t.final["val_top1"] for t in s3_sweep["outcome"].trials if t.stage == "finetune"}
    for cell, v in finals.items():
        assert f"{100 * v:.1f}" in md, (cell, v)
    assert "s3two" in html
    # per-sample scores came from the bucket (copied next to the report, read as local files)
    assert "no per-sample scores" not in md
    from bench.report.trials import load_trials_tune

    trials, meta = load_trials_tune(sweep_uri, scores_dir=tmp_path / "scores")
    assert meta["name"] == "s3two" and trials.height == 4
    assert all(Path(p).is_file() and Path(p).parent == tmp_path / "scores" for p in trials["scores_path"])


def test_sync_from_the_bucket_into_an_empty_store(s3_sweep, capsys):
    from bench.cli import main

    uri2 = f"sqlite:///{s3_sweep['tmp']}/synced.db"
    storage = f"{s3_sweep['bucket']}/runs"
    assert main(["sync", storage, "--tracking-uri", uri2]) == 0
    out = capsys.readouterr().out
    assert f"{storage}/s3two: 4 runs created, 0 found, 8 epochs and 8 artifacts logged" in out
    assert main(["sync", storage + "/s3two", "--tracking-uri", uri2]) == 0
    assert "0 runs created, 4 found, 0 epochs" in capsys.readouterr().out
    from mlflow import MlflowClient

    c = MlflowClient(uri2)
    runs = c.search_runs([c.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 5
    assert json.loads(json.dumps([r.info.status for r in runs])).count("FINISHED") == 5


def test_dry_run_checks_the_bucket_is_shared_and_writable(s3_sweep, capsys):
    from bench.cli import main

    capsys.readouterr()
    assert main(["sweep", str(s3_sweep["file"]), "--storage", f"{s3_sweep['bucket']}/other", "--dry-run",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    storage = [c for c in plan["checks"] if c["name"] == "storage"]
    assert storage and all(c["ok"] for c in storage), storage
    assert any("writable" in c["detail"] and f"{s3_sweep['bucket']}/other" in c["detail"] for c in storage)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_run_out_in_a_bucket_then_resume_finds_it_there(s3_server, tmp_path, tiny_sweep):
    """`bench run --out s3://...`: the timestamped sweep lives in the bucket, and `--resume`
    finds the newest one there (object stores keep no folder times: the name's timestamp)."""
    import os
    import subprocess
    import sys

    bucket = _bucket(s3_server)
    tiny_sweep(tmp_path, name="quick", storage=None, root="data/syn", cells=["a"], epochs=1)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    cmd = [sys.executable, "-m", "bench", "run", "--config", "quick.yaml", "--out", f"{bucket}/runs", "--no-report"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not (tmp_path / "runs").exists()
    names = sorted({k.split("/")[1] for k in s3_server.keys(bucket.removeprefix("s3://"), "runs/")} - {""})
    assert len(names) == 1 and names[0].startswith("quick-")
    assert f"results: {bucket}/runs/{names[0]}" in r.stdout
    r2 = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=200)
    assert r2.returncode == 0 and "pretrain: finished earlier, skipped" in r2.stdout, r2.stdout + r2.stderr
    assert f"sweep {names[0]} " in r2.stdout


def test_an_unreachable_bucket_is_one_error_line_naming_the_uri(s3_server, free_port, capsys):
    from bench.cli import main

    from bench.storage import location

    uri = f"s3://gb-x/runs?endpoint_override=127.0.0.1:{free_port()}&scheme=http"
    for argv in (["sync", uri, "--tracking-uri", "sqlite:////tmp/gb-unused.db"],
                 ["report", "--from-tune-dir", str(location(uri) / "sw"), "--no-mlflow-log"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("bench: error: s3://gb-x/runs") and "cannot" in err and "Traceback" not in err, err


def test_credentials_in_a_storage_uri_are_refused(tmp_path, tiny_sweep):
    from bench.errors import ConfigError
    from bench.sweep.spec import load_spec

    with pytest.raises(ConfigError, match=r"storage: .*credentials in a storage URI are refused.*AWS_ACCESS_KEY_ID"):
        load_spec(tiny_sweep(tmp_path, storage="s3://AKIA:secret@bucket/runs"))
    with pytest.raises(ConfigError) as e:
        load_spec(tiny_sweep(tmp_path, storage="s3://AKIA:secret@bucket/runs"))
    assert "secret" not in str(e.value)
