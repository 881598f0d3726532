"""`bench ui` refuses what it cannot serve, quickly and by name (no server is started here)."""

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
    assert "no MLflow server answers" in capsys.readouterr().err


def test_other_schemes(capsys: pytest.CaptureFixture) -> None:
    assert main(["ui", "--tracking-uri", "postgresql://db/mlflow"]) == 2
    assert "sqlite:///" in capsys.readouterr().err


def test_run_url() -> None:
    from bench.report.ui import run_url

    assert run_url("http://127.0.0.1:5000/", "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert run_url("http://h:1", "3", "abc", "tables/leaderboard.json").endswith(
        "/#/experiments/3/runs/abc/artifacts/tables/leaderboard.json")
