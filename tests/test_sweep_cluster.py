"""`bench sweep --address` on a two-node local cluster: trials land on both nodes.

The nodes are conftest's `two_node_ray`: started with the `ray` CLI as separate processes (head:
1 CPU + ``head_node``, second node: 1 CPU + ``worker_node``), both on 127.0.0.1, and stopped by
PID -- the processes naming the cluster's own temp dir -- never with `ray stop`, which would
kill every Ray on the host.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(400)
def test_trials_run_on_both_nodes(two_node_ray, tiny_sweep):
    tmp, address = two_node_ray.tmp, two_node_ray.address
    # 4 one-CPU trials, 2 at a time, on two one-CPU nodes: both nodes must train
    sweep = tiny_sweep(tmp, name="cluster", seeds=[0, 1], resources={"cpu": 1}, reuse_actors=False)
    uri = f"sqlite:///{tmp}/mlflow.db"
    r = subprocess.run([sys.executable, "-m", "bench", "sweep", str(sweep), "--address", address,
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
    kinds = {("head_node" in res[n]) for n in nodes}
    assert kinds == {True, False}

    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("tests").experiment_id], "tags.`bench.kind` = 'trial'")
    assert len(runs) == 4 and {r.data.tags["node_id"] for r in runs} == nodes
