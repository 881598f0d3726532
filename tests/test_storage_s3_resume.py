"""Sweeps whose storage is a bucket survive what a cluster does to them (moto's S3 server on
127.0.0.1, conftest's ``s3_server``; plain ``s3://`` URIs, the endpoint from AWS_ENDPOINT_URL).

1. The driver is killed with SIGKILL mid-sweep and its working directory deleted; a driver in
   another folder, with only the sweep file, resumes from the bucket (``--resume``): the finished
   trial is not re-run, the interrupted one continues from its checkpoint, every epoch is in
   result.json and MLflow once, and MLflow has no duplicate run.
2. On a two-node ``ray start`` cluster whose worker node runs in another working directory, the
   worker node dies mid-trial (all its Ray processes killed): the trial resumes from its last
   checkpoint in the bucket on the node that is left, with no epoch lost or logged twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BENCH = [sys.executable, "-m", "bench"]


def _trial_runs(uri: str, experiment: str = "tests") -> list:
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("bench.kind") == "trial"]


def _epoch_steps(uri: str, run_id: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "val_top1"))


EPOCHS = 20      # the second trial is still running when the kill lands, 2 s after its 2nd epoch


@pytest.mark.timeout(480)
def test_driver_killed_resumes_from_the_bucket_in_another_folder(s3_server, short_tmp, tiny_sweep, kill_driver_when):
    tmp = short_tmp
    bucket = s3_server.bucket(f"gb-{uuid.uuid4().hex[:12]}")
    shared = tmp / "shared"                 # what outlives the driver's machine: data and the tracking store
    first, second = tmp / "driver1", tmp / "driver2"
    for d in (shared, first, second, tmp / "rt"):
        d.mkdir()
    sweep = tiny_sweep(first, name="s3kill", epochs=EPOCHS, storage=f"{bucket}/runs", root=shared / "data",
                       synthetic={"clips_per_class": 4}, max_concurrent_trials=1, file="sweep.yaml")
    text = sweep.read_text()
    uri = f"sqlite:///{shared}/mlflow.db"
    env = dict(os.environ, RAY_TMPDIR=str(tmp / "rt"))
    kill_driver_when([*BENCH, "sweep", "sweep.yaml", "--tracking-uri", uri],
                     lambda seen: "pretrain-convlstm" in seen[-1] and f"epoch 2/{EPOCHS}" in seen[-1],
                     cwd=first, env=env, ray_tmp=tmp / "rt")
    shutil.rmtree(first)                    # the driver's machine is gone: only the sweep file survives
    (second / "sweep.yaml").write_text(text)

    r = subprocess.run([*BENCH, "sweep", "sweep.yaml", "--tracking-uri", uri, "--resume"],
                       capture_output=True, text=True, env=env, cwd=second, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "pretrain: resuming unfinished trials" in r.stdout
    assert "pretrain-a-rgb" not in r.stdout.split("resuming unfinished trials")[1].split("leaderboard")[0]
    assert not (second / "runs").exists() and not any(second.glob("s3*"))

    from bench.sweep.results import read_sweep

    _, trials = read_sweep(f"{bucket}/runs/s3kill")
    by_cell = {t.combo[0]: t for t in trials}
    assert set(by_cell) == {"a", "convlstm"}
    for t in trials:
        assert t.status == "TERMINATED" and t.last_epoch == EPOCHS
    assert len((by_cell["a"].dir / "node.json").read_text().splitlines()) == 1
    assert [x["epoch"] for x in by_cell["a"].results] == list(range(1, EPOCHS + 1))
    assert len((by_cell["convlstm"].dir / "node.json").read_text().splitlines()) == 2
    epochs = [x["epoch"] for x in by_cell["convlstm"].results]
    assert sorted(epochs) == list(range(1, EPOCHS + 1)), epochs      # each epoch once, none lost
    runs = _trial_runs(uri)
    assert sorted(x.data.tags["cell"] for x in runs) == ["a", "convlstm"]          # no duplicate run
    for x in runs:
        assert x.info.status == "FINISHED"
        assert _epoch_steps(uri, x.info.run_id) == list(range(1, EPOCHS + 1))


# --------------------------------------------------------------------------------- two nodes
@pytest.fixture(scope="module")
def two_node_settings(s3_server):
    """Two nodes of 2 CPUs; the worker node's processes run in their own working directory. The
    S3 variables are in the environment before `ray start` (``s3_server``), so both nodes reach
    the bucket; the head notices a dead node within about two seconds."""
    fast_health = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
                   "RAY_health_check_failure_threshold": "3"}
    return {"head": {"num_cpus": 2, "resources": {"head_node": 1}, "env": fast_health},
            "worker": {"num_cpus": 2, "resources": {"worker_node": 1}, "cwd": "worker-cwd"}}


EPOCHS_2N = 12


@pytest.mark.timeout(600)
def test_worker_node_lost_mid_trial_resumes_on_the_head_from_the_bucket(two_node_ray, s3_server, tiny_sweep,
                                                                        stop_processes):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    tmp = two_node_ray.tmp
    head, worker = two_node_ray.node_with("head_node"), two_node_ray.node_with("worker_node")
    assert two_node_ray.pids("worker") and (tmp / "worker-cwd").is_dir()
    assert all(os.readlink(f"/proc/{pid}/cwd") == str(tmp / "worker-cwd") for pid in two_node_ray.pids("worker"))
    bucket = s3_server.bucket(f"gb-{uuid.uuid4().hex[:12]}")
    (tmp / "drv").mkdir()
    sweep = tiny_sweep(tmp / "drv", name="s3node", epochs=EPOCHS_2N, storage=f"{bucket}/runs", cells=["a"],
                       root=tmp / "data", synthetic={"clips_per_class": 4}, resources={"cpu": 2},
                       max_concurrent_trials=1, max_failures=3, reuse_actors=False, experiment="tests")
    uri = f"sqlite:///{tmp}/mlflow.db"

    # The head's CPUs are held while the sweep starts, so its one trial goes to the worker node.
    ray.init(address=two_node_ray.address, log_to_driver=False, logging_level="WARNING")
    try:
        @ray.remote(num_cpus=2)
        class Hold:
            def ready(self) -> bool:
                return True

        hold = Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
        assert ray.get(hold.ready.remote(), timeout=60)
        p = subprocess.Popen([*BENCH, "sweep", str(sweep), "--address", two_node_ray.address, "--tracking-uri", uri],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp / "drv",
                             env=dict(os.environ, RAY_ADDRESS=""), start_new_session=True)
        seen, killed = [], []
        try:
            for line in p.stdout:
                seen.append(line)
                if "pretrain-a-rgb" in line and f"epoch 3/{EPOCHS_2N}" in line:
                    ray.kill(hold)                    # the head can take the trial now
                    killed = two_node_ray.kill("worker")
                    break
            assert killed, "".join(seen)
            rest, _ = p.communicate(timeout=420)
            seen.append(rest)
        finally:
            stop_processes(p, grace_s=2)
    finally:
        ray.shutdown()
    log = "".join(seen)
    assert p.returncode == 0, log[-5000:]

    from bench.sweep.results import read_sweep

    _, (t,) = read_sweep(f"{bucket}/runs/s3node")
    assert t.status == "TERMINATED" and t.last_epoch == EPOCHS_2N, log[-3000:]
    starts = [json.loads(x) for x in (t.dir / "node.json").read_text().splitlines()]
    assert [s["node_id"] for s in starts] == [worker, head], starts        # started there, resumed here
    epochs = [x["epoch"] for x in t.results]
    assert sorted(epochs) == list(range(1, EPOCHS_2N + 1)), epochs       # none lost, none twice
    (run,) = _trial_runs(uri)
    assert run.info.status == "FINISHED"
    assert _epoch_steps(uri, run.info.run_id) == list(range(1, EPOCHS_2N + 1))
    assert run.data.tags["node_id"] == head and run.data.tags["starts"] == "2"
