"""`bench sweep --address` on a two-node local cluster: trials land on both nodes.

The nodes are started with the `ray` CLI as separate processes (head: 1 CPU + ``head_res``,
second node: 1 CPU + ``node2_res``), both on 127.0.0.1, and stopped by PID -- the processes
holding files under this test's own --temp-dir -- never with `ray stop`, which would kill
every Ray on the host (STACK_NOTES 1).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
SWEEP = """\
name: cluster
storage: {tmp}/runs
experiment: tests
datasets:
  syn:
    format: isogd
    root: {tmp}/data/syn
    synthetic: {{num_classes: 3, clips_per_class: 3, valid_clips_per_class: 1, size: [48, 32],
                length_scale: 0.3, modalities: [rgb]}}
stages:
  - {{name: pretrain, epochs: 3}}
grid: {{cells: [a, convlstm], modalities: [rgb], seeds: [0, 1]}}
preset: small
clip_len: 4
image_size: 32
train: {{batch_size: 3}}
resources: {{cpu: 1}}
max_concurrent_trials: 2
reuse_actors: false
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_under(folder: Path) -> list[int]:
    out = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd).startswith(str(folder)) for fd in (pid_dir / "fd").iterdir()):
                out.append(int(pid_dir.name))
        except OSError:
            continue
    return out


def _stop_nodes(folder: Path) -> None:
    """SIGTERM this cluster's processes, then SIGKILL what is left after a few seconds (raylet
    and gcs may ignore SIGTERM for 20 s)."""
    pids = _pids_under(folder)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)
        pids = [p for p in _pids_under(folder) if Path(f"/proc/{p}").exists()]
        if not pids:
            break


@pytest.fixture
def two_nodes():
    tmp = Path(tempfile.mkdtemp(prefix="bsc", dir="/tmp"))
    port = _free_port()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1",
                        '--resources={"head_res": 1}', "--include-dashboard=false",
                        f"--temp-dir={tmp / 'rt'}", "--disable-usage-stats"],
                       check=True, capture_output=True, text=True, env=env, timeout=120)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                        '--resources={"node2_res": 1}', "--disable-usage-stats"],
                       check=True, capture_output=True, text=True, env=env, timeout=120)
        yield tmp, f"127.0.0.1:{port}"
    finally:
        _stop_nodes(tmp / "rt")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(400)
def test_trials_run_on_both_nodes(two_nodes):
    tmp, address = two_nodes
    (tmp / "s.yaml").write_text(SWEEP.format(tmp=tmp))
    uri = f"sqlite:///{tmp}/mlflow.db"
    r = subprocess.run([sys.executable, "-m", "bench", "sweep", str(tmp / "s.yaml"), "--address", address,
                        "--tracking-uri", uri], capture_output=True, text=True, cwd=tmp, timeout=350)
    assert r.returncode == 0, r.stdout + r.stderr

    from bench.sweep.results import read_sweep

    _, trials = read_sweep(tmp / "runs" / "cluster")
    assert len(trials) == 4 and all(t.status == "TERMINATED" for t in trials)
    where = {}
    for t in trials:
        starts = [json.loads(x) for x in (t.dir / "node.json").read_text().splitlines()]
        where[t.name] = starts[-1]
    nodes = {w["node_id"] for w in where.values()}
    assert len(nodes) == 2, where                       # both nodes trained
    # the custom resources tell the nodes apart: each node_id carries one of them
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        res = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    kinds = {("head_res" in res[n]) for n in nodes}
    assert kinds == {True, False}

    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("tests").experiment_id], "tags.`bench.kind` = 'trial'")
    assert len(runs) == 4 and {r.data.tags["node_id"] for r in runs} == nodes
