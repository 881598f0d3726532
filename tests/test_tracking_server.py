"""A real MLflow server that dies mid-sweep: training goes on, the driver warns, and
`bench sync` puts every result in the restarted server afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
SWEEP = """\
name: drop
storage: {tmp}/runs
experiment: tests
datasets:
  syn:
    format: isogd
    root: {tmp}/data/syn
    synthetic: {{num_classes: 3, clips_per_class: 4, valid_clips_per_class: 1, size: [48, 32],
                length_scale: 0.3, modalities: [rgb]}}
stages:
  - {{name: pretrain, epochs: 8}}
grid: {{cells: [a, convlstm], modalities: [rgb], seeds: [0]}}
preset: small
clip_len: 4
image_size: 32
train: {{batch_size: 3}}
max_concurrent_trials: 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp: Path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp}/server.db",
                          "--default-artifact-root", str(tmp / "art"), "--host", "127.0.0.1",
                          "--port", str(port), "--workers", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return p
        except OSError:
            time.sleep(0.5)
    _stop_server(p)
    raise RuntimeError("mlflow server did not become healthy in 90 s")


def _stop_server(p: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (uvicorn and huey children go with it)."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def _kill_server(p: subprocess.Popen) -> None:
    """The server dies at once (SIGKILL to its group): a graceful SIGTERM lets uvicorn drain its
    connections for seconds, long enough for a fast sweep to finish before it is gone."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


@pytest.mark.timeout(480)
def test_server_dropping_mid_sweep_loses_nothing(tmp_path):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    (tmp_path / "s.yaml").write_text(SWEEP.format(tmp=tmp_path))
    server = _start_server(tmp_path, port)
    try:
        sweep = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(tmp_path / "s.yaml"),
                                  "--tracking-uri", uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, cwd=tmp_path)
        out = []
        for line in sweep.stdout:
            out.append(line)
            if "epoch 1/8" in line and server.poll() is None:
                _kill_server(server)                   # the tracking server goes away mid-sweep
        sweep.wait(timeout=60)
        text = "".join(out)
        assert sweep.returncode == 0, text
        assert "MLflow failed" in text and "training continues" in text
        assert f"bench sync {tmp_path / 'runs' / 'drop'}" in text
        assert "2 trials, 0 failed" in text

        server = _start_server(tmp_path, port)          # back, with whatever it had recorded
        r = subprocess.run([sys.executable, "-m", "bench", "sync", str(tmp_path / "runs"), "--tracking-uri", uri],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

        from mlflow.tracking import MlflowClient

        c = MlflowClient(uri)
        runs = c.search_runs([c.get_experiment_by_name("tests").experiment_id], max_results=100)
        trials = [x for x in runs if x.data.tags["bench.kind"] == "trial"]
        assert len(trials) == 2 and len(runs) == 3
        for t in trials:
            assert t.info.status == "FINISHED"
            assert sorted(m.step for m in c.get_metric_history(t.info.run_id, "val_top1")) == list(range(1, 9))
            assert {a.path for a in c.list_artifacts(t.info.run_id)} == {"val_scores.parquet", "metrics.json"}
        (parent,) = [x for x in runs if x.data.tags["bench.kind"] == "sweep"]
        assert parent.info.status == "FINISHED"
    finally:
        _stop_server(server)
