"""A real MLflow server that dies mid-sweep: training goes on, the driver warns, and
`bench sync` puts every result in the restarted server afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture
def start_server(stop_processes):
    """``start_server(tmp, port)``: an MLflow server in its own process group (uvicorn and huey
    children go with it when it is stopped), healthy when it is returned."""

    def start(tmp: Path, port: int) -> subprocess.Popen:
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
        stop_processes(p, grace_s=20)
        raise RuntimeError("mlflow server did not become healthy in 90 s")

    return start


@pytest.mark.timeout(480)
def test_server_dropping_mid_sweep_loses_nothing(tmp_path, tiny_sweep, free_port, start_server, stop_processes):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    file = tiny_sweep(tmp_path, name="drop", epochs=8, synthetic={"clips_per_class": 4})
    server = start_server(tmp_path, port)
    sweep = None
    try:
        sweep = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(file),
                                  "--tracking-uri", uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, cwd=tmp_path)
        out = []
        for line in sweep.stdout:
            out.append(line)
            if "epoch 1/8" in line and server.poll() is None:
                # the tracking server goes away mid-sweep, at once (SIGKILL to its group): a
                # graceful SIGTERM lets uvicorn drain its connections for seconds, long enough
                # for a fast sweep to finish before it is gone
                stop_processes(server, grace_s=0)
        sweep.wait(timeout=60)
        text = "".join(out)
        assert sweep.returncode == 0, text
        assert "MLflow failed" in text and "training continues" in text
        assert f"bench sync {tmp_path / 'runs' / 'drop'}" in text
        assert "2 trials, 0 failed" in text

        server = start_server(tmp_path, port)          # back, with whatever it had recorded
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
        if sweep is not None:
            stop_processes(sweep, grace_s=20)           # nothing to do once it has exited
        stop_processes(server, grace_s=20)
