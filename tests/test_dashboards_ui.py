"""`bench ui` and `bench server` refuse what they cannot serve, quickly and by name (no server is
started here; tests/test_team_server.py starts one)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench.cli import main


def test_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no tracking store at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()                      # nothing created by looking


def test_port_taken(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is taken" in capsys.readouterr().err


def test_server_that_does_not_answer(capsys: pytest.CaptureFixture, free_port) -> None:
    port = free_port()                                              # a free port nobody listens on
    assert main(["ui", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    assert f"MLflow tracking server http://127.0.0.1:{port} is not reachable" in capsys.readouterr().err


def test_other_schemes(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["ui", "--tracking-uri", "sqlit:///x.db"]) == 2
    assert "unknown scheme 'sqlit://'" in capsys.readouterr().err
    # a database store that answers: its artifacts are the team server's, so `bench server` serves it
    monkeypatch.setattr("bench.report.ui.check_tracking", lambda uri: None)
    assert main(["ui", "--tracking-uri", "postgresql://bob:pw@db/mlflow"]) == 2
    err = capsys.readouterr().err
    assert "sqlite:///" in err and "bench server --backend-store-uri postgresql://bob:***@db/mlflow" in err
    assert "pw" not in err


def test_team_server_command_is_mlflows_own(tmp_path: Path) -> None:
    """`bench server`'s mlflow argv parses with the installed MLflow's CLI, as meant."""
    from mlflow.cli import server

    from bench.report.ui import team_server_command

    cmd = team_server_command("postgresql://mlflow@127.0.0.1:5432/mlflow", str(tmp_path / "art"), host="0.0.0.0",
                              port=5001, workers=3, allowed_hosts="head-svc*,localhost*")
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    p = server.make_context("server", cmd[4:]).params
    assert p["backend_store_uri"] == "postgresql://mlflow@127.0.0.1:5432/mlflow"
    assert p["artifacts_destination"] == str(tmp_path / "art") and p["serve_artifacts"] is True
    assert p["default_artifact_root"] is None            # new experiments: mlflow-artifacts:/, through the server
    assert (p["host"], p["port"], str(p["workers"]), p["allowed_hosts"]) == ("0.0.0.0", 5001, "3", "head-svc*,localhost*")
    assert team_server_command("sqlite:///x.db", "s3://bucket/mlflow")[5:9] == [
        "sqlite:///x.db", "--artifacts-destination", "s3://bucket/mlflow", "--serve-artifacts"]


def test_team_server_refuses_what_it_cannot_serve(tmp_path: Path, capsys: pytest.CaptureFixture, free_port) -> None:
    art = str(tmp_path / "art")
    assert main(["server", "--backend-store-uri", "sqlit:///x.db", "--artifacts-destination", art]) == 2
    assert "unknown scheme 'sqlit://'" in capsys.readouterr().err
    port = free_port()
    assert main(["server", "--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{port}/mlflow",
                 "--artifacts-destination", art]) == 2
    assert f"the database server 127.0.0.1:{port} is not reachable" in capsys.readouterr().err
    assert main(["server", "--backend-store-uri", f"http://127.0.0.1:{port}", "--artifacts-destination", art]) == 2
    assert "--backend-store-uri is the database the server keeps runs in" in capsys.readouterr().err
    db = tmp_path / "mlflow.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert main(["server", "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", art,
                     "--port", str(taken)]) == 2
    assert f"port {taken} on 127.0.0.1 is taken" in capsys.readouterr().err


def test_run_url() -> None:
    from bench.report.ui import run_url

    # MLflow 3.17's UI opens on GenAI unless the address asks for the Model training view
    assert run_url("http://127.0.0.1:5000/", "3", "abc") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert run_url("http://h:1", "3", "abc", "tables/leaderboard.json").endswith(
        "/#/experiments/3/runs/abc/artifacts/tables/leaderboard.json?workflowType=machine_learning")


def test_entries_url_filters_and_sorts_the_leaderboard() -> None:
    import urllib.parse

    from bench.report.ui import entries_url, experiment_url, view_url
    from bench.tracking.records import LEADERBOARD_FILTER

    assert experiment_url("http://h:1/", "3") == "http://h:1/#/experiments/3/runs?workflowType=machine_learning"
    assert view_url("http://h:1", "3", "leaderboard") == \
        "http://h:1/#/experiments/3/runs?viewStateShareKey=leaderboard&workflowType=machine_learning"
    url = entries_url("http://h:1", "3", sweep="it's")
    path, _, query = url.partition("?")
    assert path == "http://h:1/#/experiments/3/runs"
    q = dict(urllib.parse.parse_qsl(query))
    assert q == {"searchFilter": LEADERBOARD_FILTER + " and tags.sweep = 'it\\'s'", "orderByKey": "metrics.`top1_pct`",
                 "orderByAsc": "false", "workflowType": "machine_learning"}
