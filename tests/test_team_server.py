"""A team's tracking server, as MLflow is deployed in production, on 127.0.0.1: PostgreSQL from
Debian's packages (dashboards/install_postgres.sh) holds the runs, a local folder the artifacts;
`bench server` runs `mlflow server` over them; a tiny sweep logs to it over HTTP and `bench
report` reads it back and writes the leaderboard entry runs there."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def pg_bin() -> Path:
    """PostgreSQL's binaries; installed from Debian's packages when missing (skip if that fails)."""
    if _pg_bin() is None:
        r = subprocess.run(["sh", str(ROOT / "dashboards" / "install_postgres.sh")], capture_output=True,
                           text=True, timeout=600, check=False)
        if _pg_bin() is None:
            pytest.skip(f"PostgreSQL is not installed and dashboards/install_postgres.sh could not install it "
                        f"(exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]})")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install -e '.[test]'")
    return _pg_bin()


@pytest.fixture
def postgres(pg_bin: Path, free_port) -> Iterator[str]:
    """A private PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1, with an
    empty database ``mlflow`` of user ``mlflow`` (trust auth): its URI. PostgreSQL refuses to run
    as root, so as root the cluster belongs to, and runs as, the ``postgres`` user."""
    d = Path(tempfile.mkdtemp(prefix="gb-pg-", dir="/tmp"))     # short: the unix socket lives in it
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(d, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    d.chmod(0o700)
    data, port = d / "data", free_port()

    def pg(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([*as_user, str(pg_bin / tool), *args], capture_output=True, text=True, timeout=timeout,
                           cwd=d, check=False)
        assert r.returncode == 0, f"{tool} {' '.join(args)}: {r.stdout[-1500:]}\n{r.stderr[-1500:]}"
        return r

    started = False
    try:
        pg("initdb", "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-instructions")
        pg("pg_ctl", "-D", str(data), "-l", str(d / "postgres.log"), "-w", "-t", "60",
           "-o", f"-k {d} -p {port} -h 127.0.0.1", "start")
        started = True
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(d, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def team_server(postgres: str, tmp_path: Path, free_port, stop_processes) -> Iterator[dict]:
    """`bench server` over ``postgres``, artifacts in ``tmp_path/artifacts``; healthy when handed over."""
    port = free_port()
    art = tmp_path / "artifacts"
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "server", "--backend-store-uri", postgres,
                             "--artifacts-destination", str(art), "--port", str(port), "--workers", "1",
                             "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while not _healthy(url):
            assert proc.poll() is None, f"bench server exited {proc.returncode}: {proc.stdout.read()}"
            assert time.monotonic() < deadline, f"bench server not healthy in 150 s: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield {"url": url, "artifacts": art, "proc": proc, "log": log}
    finally:
        # SIGTERM: `bench server` stops mlflow's own process group (uvicorn, job runner), then exits
        assert not stop_processes(proc, grace_s=30), "bench server left processes behind"
        assert not stop_processes(tmp_path), f"processes naming {tmp_path} still alive"
        out = proc.stdout.read() if proc.stdout else ""
        assert "bench server: stopping" in out, out


@pytest.mark.timeout(600)
def test_team_server_on_postgres(team_server: dict, tiny_sweep, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from bench.tracking.records import EXPERIMENT_KIND_TAG, LEADERBOARD_FILTER

    uri = team_server["url"]
    sweep = tiny_sweep(tmp_path, name="team", epochs=2, seeds=(0, 1))
    r = subprocess.run([sys.executable, "-m", "bench", "sweep", str(sweep), "--tracking-uri", uri],
                       capture_output=True, text=True, cwd=tmp_path, timeout=420, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "4 trials, 0 failed" in r.stdout
    assert "MLflow failed" not in r.stdout + r.stderr

    r = subprocess.run([sys.executable, "-m", "bench", "report", "--sweep", "team", "--tracking-uri", uri,
                        "--out", str(tmp_path / "report"), "--bootstrap", "100"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "4 trial(s) of sweep 'team' from MLflow http://127.0.0.1:" in r.stderr
    assert "leaderboard logged to MLflow" in r.stderr
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert any("| a " in line for line in table) and any("| convlstm " in line for line in table), r.stdout

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("tests")
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert exp.artifact_location.startswith("mlflow-artifacts:")          # uploads go through the server
    runs = c.search_runs([exp.experiment_id], "tags.bench.kind = 'trial'")
    assert sorted(re.sub(r" \d+\.\d% ", " ", x.info.run_name) for x in runs) == [
        "a/rgb/s0 pretrain", "a/rgb/s1 pretrain", "convlstm/rgb/s0 pretrain", "convlstm/rgb/s1 pretrain"]
    for t in runs:
        assert t.info.status == "FINISHED"
        assert t.info.run_name.split()[1] == f"{100 * t.data.metrics['val_top1']:.1f}%"
        assert t.data.metrics["val_top1_pct"] == pytest.approx(100 * t.data.metrics["val_top1"], abs=1e-3)
        assert {i.dataset.name for i in t.inputs.dataset_inputs} == {"syn (synthetic)"}
    entries = c.search_runs([exp.experiment_id], LEADERBOARD_FILTER + " and tags.sweep = 'team'",
                            order_by=["metrics.top1_pct DESC"])
    assert sorted(e.data.tags["cell"] for e in entries) == ["a", "convlstm"]
    for e in entries:
        m = e.data.metrics
        assert {"top1_pct", "top1_ci_low_pct", "top1_ci_high_pct", "seeds", "params", "macs_per_clip",
                "train_clips_per_s"} <= set(m), m
        assert m["seeds"] == 2 and m["params"] > 0
        assert m["top1_ci_low_pct"] <= m["top1_pct"] <= m["top1_ci_high_pct"]
        assert [i.dataset.name for i in e.inputs.dataset_inputs] == ["syn (synthetic)"]
    # the artifacts are in the server's artifact root, written by the server (not by the trials)
    scores = list(team_server["artifacts"].rglob("val_scores.parquet"))
    assert len(scores) == 4, sorted(team_server["artifacts"].rglob("*"))[:20]
    assert list(team_server["artifacts"].rglob("leaderboard.json"))
