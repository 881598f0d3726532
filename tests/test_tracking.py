"""MLflow tracking without Ray: idempotent writes, the resilient callback, fail-fast probing, and
every tracking-URI mistake answered in one line by every command."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from bench.tracking.uri import (
    TrackingMisconfigured,
    TrackingUnavailable,
    check_tracking,
    default_tracking_uri,
    resolve_tracking_uri,
    shown,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_default_uri_is_absolute_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri() == default_tracking_uri()
    assert resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path.resolve()}/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri() == "http://127.0.0.1:1"
    assert resolve_tracking_uri("http://h:2") == "http://h:2"


def test_probe_fails_fast_on_a_dead_server(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"MLflow tracking server http://127.0.0.1:\d+ is not reachable"):
        check_tracking(uri)
    assert time.monotonic() - t0 < 5
    with pytest.raises(TrackingUnavailable, match="does not exist"):
        check_tracking(f"sqlite:///{tmp_path}/nope/mlflow.db")
    with pytest.raises(TrackingUnavailable, match="maintenance mode"):
        check_tracking(f"file://{tmp_path}/mlruns")
    check_tracking(f"sqlite:///{tmp_path}/mlflow.db")    # a new file in an existing folder is fine
    (tmp_path / "empty.db").write_bytes(b"")
    check_tracking(f"sqlite:///{tmp_path}/empty.db")     # an empty file: SQLite makes it a database
    with pytest.raises(TrackingMisconfigured, match="is not a SQLite database"):
        (tmp_path / "notes.db").write_text("not a database")
        check_tracking(f"sqlite:///{tmp_path}/notes.db")
    with pytest.raises(TrackingMisconfigured, match="three slashes"):
        check_tracking("sqlite://")


def test_a_password_in_a_database_uri_is_never_shown() -> None:
    assert shown("postgresql://bob:s3cret@db:5432/mlflow") == "postgresql://bob:***@db:5432/mlflow"
    assert shown("http://h:5000") == "http://h:5000"


# ----------------------------------------------------------------------------- URI mistakes, per command

def _sqlite_header(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")


def _mistake(kind: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(URI, a regex of what the one line must say) of one kind of tracking-URI mistake."""
    if kind == "unknown scheme":
        return f"sqlit:///{tmp}/x.db", r"tracking URI sqlit:///\S+x\.db: unknown scheme 'sqlit://'.*use sqlite:///"
    if kind == "unreachable server":
        uri = f"http://127.0.0.1:{_free_port()}"
        return uri, rf"MLflow tracking server {uri} is not reachable.*start it"
    if kind == "missing folder":
        return f"sqlite:///{tmp}/nope/mlflow.db", r"sqlite:///\S+/nope/mlflow\.db: folder \S+/nope does not exist; create it"
    if kind == "folder, not a file":
        (tmp / "store").mkdir()
        return f"sqlite:///{tmp}/store", r"sqlite:///\S+/store: \S+/store is a folder, not a SQLite file; name the database file"
    if kind == "unwritable file":
        db = tmp / "ro.db"
        _sqlite_header(db)
        db.chmod(0o444)
        if os.geteuid() == 0:     # root may write anything: judge by the mode bits, as another user would
            monkeypatch.setattr("bench.tracking.uri._writable", lambda p: bool(Path(p).stat().st_mode & 0o200))
        return f"sqlite:///{db}", r"sqlite:///\S+/ro\.db: \S+/ro\.db is not writable.*chmod u\+w"
    if kind == "database without its driver":
        for mod in ("psycopg", "psycopg2"):
            monkeypatch.setitem(sys.modules, mod, None)        # importing it raises ImportError
        uri = f"postgresql://mlflow:pw@127.0.0.1:{_free_port()}/mlflow"
        return uri, (r"tracking store postgresql://mlflow:\*\*\*@127\.0\.0\.1:\d+/mlflow: its Python driver "
                     r"'psycopg' is not installed; pip install 'psycopg\[binary\]'")
    raise AssertionError(kind)


MISTAKES = ["unknown scheme", "unreachable server", "missing folder", "folder, not a file", "unwritable file",
            "database without its driver"]
COMMANDS = ["run", "sweep", "report", "ui", "sync"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", MISTAKES)
def test_every_tracking_uri_mistake_is_one_line(kind, command, tmp_path, capsys, monkeypatch):
    """Each command answers each mistake with ``bench: error: <URI>: <what is wrong>; <what to do>``,
    exit 2, no traceback, and before any work (no data generated, no sweep folder)."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, says = _mistake(kind, tmp_path, monkeypatch)
    f = tmp_path / "s.yaml"
    f.write_text("name: t\ndatasets: {syn: {format: isogd, root: data/syn, synthetic: {num_classes: 2}}}\n"
                 "stages: [{name: pretrain, epochs: 1}]\npreset: small\n")
    argv = {"run": ["run", "--out", str(tmp_path / "runs")], "sweep": ["sweep", str(f)],
            "report": ["report", "--sweep", "t", "--out", str(tmp_path / "rep")], "ui": ["ui", "--port", "0"],
            "sync": ["sync", str(tmp_path)]}[command]
    rc = main([*argv, "--tracking-uri", uri])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert re.search(says, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists() and not (tmp_path / "rep").exists()


def test_sweep_with_dead_server_fails_before_any_work(tmp_path, capsys, monkeypatch):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    f = tmp_path / "s.yaml"
    f.write_text("name: t\ndatasets: {syn: {format: isogd, root: data/syn, synthetic: {num_classes: 2}}}\n"
                 "stages: [{name: pretrain, epochs: 1}]\npreset: small\n")
    port = _free_port()
    t0 = time.monotonic()
    rc = main(["sweep", str(f), "--tracking-uri", f"http://127.0.0.1:{port}"])
    assert rc == 2 and time.monotonic() - t0 < 10
    assert f"MLflow tracking server http://127.0.0.1:{port} is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()   # no data, no Ray


def test_tracker_is_idempotent(sqlite_uri):
    from bench.tracking.store import Tracker

    tr = Tracker(sqlite_uri, "exp")
    key = {"sweep_id": "s1", "trial_name": "t1"}
    run_id, created = tr.ensure_run(key=key, tags={"cell": "a"}, run_name="t1")
    again, created2 = tr.ensure_run(key=key, tags={"cell": "a"}, run_name="t1")
    assert created and not created2 and again == run_id
    assert tr.log_params(run_id, {"lr": 0.1, "sweep": {"name": "x"}, "n": None}) == []
    assert tr.log_params(run_id, {"lr": 0.1}) == []
    assert tr.log_params(run_id, {"lr": 0.2}) == ["lr"]              # reported, not overwritten
    params = tr.client.get_run(run_id).data.params
    assert params["lr"] == "0.1" and params["sweep.name"] == "x" and params["n"] == "None"
    done = tr.logged_epochs(run_id)
    res = [{"epoch": e, "val_top1": e / 10, "train_loss": 1.0 / e, "pid": 1, "done": False} for e in (1, 2)]
    assert tr.log_epochs(run_id, res, done) == [1, 2]
    res.append({"epoch": 2, "val_top1": 0.9})                         # an epoch re-run after a restore
    res.append({"epoch": 3, "val_top1": 0.25})
    assert tr.log_epochs(run_id, res, tr.logged_epochs(run_id)) == [3]
    hist = tr.client.get_metric_history(run_id, "val_top1")
    assert sorted((m.step, m.value) for m in hist) == [(1, 0.1), (2, 0.2), (3, 0.25)]
    assert "pid" not in tr.client.get_run(run_id).data.metrics       # Tune bookkeeping is not a metric
    tr.log_summary(run_id)
    m = tr.client.get_run(run_id).data.metrics
    assert m["best_val_top1"] == pytest.approx(0.25) and m["best_epoch"] == 3
    assert len(tr.find_runs(sweep_id="s1")) == 1


class FakeTrial:
    """What the callback reads from a Tune Trial."""

    def __init__(self, name: str, trial_id: str, config: dict, checkpoint_dir: Path | None = None):
        self._name, self.trial_id, self.config = name, trial_id, config
        self.checkpoint = type("Ck", (), {"path": str(checkpoint_dir)})() if checkpoint_dir else None

    def __str__(self) -> str:
        return self._name


def _ckpt(tmp_path: Path) -> Path:
    import polars as pl

    d = tmp_path / "ckpt"
    d.mkdir()
    pl.DataFrame({"sample_id": ["x"], "label": [0], "pred": [0], "probs": [[1.0, 0.0]]}).write_parquet(
        d / "val_scores.parquet")
    (d / "metrics.json").write_text(json.dumps({"epoch": 3}))
    return d


def test_callback_survives_a_dropped_server_and_a_resumed_driver(tmp_path, sqlite_uri, capsys):
    pytest.importorskip("ray")
    from bench.tracking.callback import MLflowTrialCallback
    from bench.tracking.store import Tracker

    dead = f"http://127.0.0.1:{_free_port()}"
    config = {"cell": "a", "modality": "rgb", "seed": 0, "stage": "pretrain", "root": str(tmp_path),
              "sweep": {"id": "sw1", "name": "demo", "unit": "pretrain", "dir": str(tmp_path)}}
    cb = MLflowTrialCallback(sweep_id="sw1", experiment="exp", tracking_uri=dead, parent_run_id=None,
                             sweep_dir=str(tmp_path))
    from bench.tracking.callback import configure_runtime

    # the driver's runtime settings win in setup(): another test's for this sweep id must not
    configure_runtime("sw1", tracking_uri=dead, parent_run_id=None)
    cb.setup()
    trial = FakeTrial("pretrain-a-rgb-s0-abcde_00000", "abcde_00000", config, _ckpt(tmp_path))
    cb.on_trial_start(0, [], trial)
    for ep in (1, 2):
        cb.on_trial_result(0, [], trial, {"epoch": ep, "val_top1": ep / 10})
    assert cb.missed and cb.unrecorded() == 2
    err = capsys.readouterr().err
    assert err.count("MLflow failed") == 1 and "training continues" in err   # warned once

    # the store comes back: the next result flushes everything that was missed
    cb._tracker = Tracker(sqlite_uri, "exp")
    cb._down_until = 0.0
    cb.on_trial_result(0, [], trial, {"epoch": 3, "val_top1": 0.3})
    cb.on_trial_complete(0, [], trial)
    assert cb.unrecorded() == 0
    tr = Tracker(sqlite_uri, "exp")
    (run,) = tr.find_runs(sweep_id="sw1", trial_name=str(trial))
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in tr.client.get_metric_history(run.info.run_id, "val_top1")) == [1, 2, 3]
    assert {a.path for a in tr.client.list_artifacts(run.info.run_id)} == {"val_scores.parquet", "metrics.json"}
    tags = run.data.tags
    assert (tags["cell"], tags["modality"], tags["seed"], tags["stage"], tags["sweep"]) == ("a", "rgb", "0", "pretrain", "demo")
    assert tags["synthetic"] == "false" and tags["git_commit"] and tags["version.torch"]

    # a resumed driver: a fresh (unpickled) callback continues the same run; epoch 3 re-runs
    cb2 = pickle.loads(pickle.dumps(cb))
    from bench.tracking.callback import configure_runtime

    configure_runtime("sw1", tracking_uri=sqlite_uri, parent_run_id=None)
    cb2.setup()
    cb2.on_trial_start(0, [], trial)
    assert tr.client.get_run(run.info.run_id).data.tags and \
        tr.client.get_run(run.info.run_id).info.status == "RUNNING"
    cb2.on_trial_result(0, [], trial, {"epoch": 3, "val_top1": 0.99})
    cb2.on_trial_result(0, [], trial, {"epoch": 4, "val_top1": 0.4})
    cb2.on_trial_complete(0, [], trial)
    runs = tr.find_runs(sweep_id="sw1")
    assert len(runs) == 1
    hist = tr.client.get_metric_history(run.info.run_id, "val_top1")
    assert sorted((m.step, m.value) for m in hist) == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]
    assert tr.client.get_run(run.info.run_id).info.status == "FINISHED"
