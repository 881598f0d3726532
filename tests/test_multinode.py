"""A two-node Ray cluster on 127.0.0.1 with simulated GPUs on the worker node only.

`ray start --head` (1 CPU, no GPU) and `ray start --address` (2 CPUs, 2 GPUs, custom resource
``gpu_node``) as two real Ray nodes, as on a cluster; then `bench sweep FILE --address ...`
(the real CLI, in this process) runs a tiny sweep whose trials ask for half a GPU each.

What is checked:
- where the trials ran: the node id each trial recorded (``node.json``) is the worker node's,
  and Ray assigned it 0.5 GPU;
- that nothing assumed a GPU because a resource said so: the GPUs are Ray's bookkeeping only
  (the process gets ``CUDA_VISIBLE_DEVICES`` but torch sees no CUDA device), so the trials must
  train on the CPU -- the saved weights are CPU tensors, and no trial failed.

The nodes are conftest's `two_node_ray`, stopped by PID (the processes whose command line or
open files name the cluster's own ``--temp-dir``), never with ``ray stop``, which would kill
every Ray on the host.
"""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_node_settings():
    """`two_node_ray`'s nodes here: the head with 1 CPU and no GPU, the worker with 2 CPUs and
    2 simulated GPUs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("simulated GPUs only make sense where torch sees no real one")
    return {"head": {"num_cpus": 1, "num_gpus": 0, "resources": {"head_node": 1}},
            "worker": {"num_cpus": 2, "num_gpus": 2, "resources": {"gpu_node": 1}}}


@pytest.fixture(scope="module")
def two_nodes(two_node_ray):
    """Address, node ids and a GPU-task probe of the two-node cluster."""
    import ray

    ray.init(address=two_node_ray.address, log_to_driver=False)
    try:
        def _probe() -> dict:     # local: cloudpickle ships it by value (tests/ is no package)
            import torch

            return {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": ray.get_gpu_ids(),
                    "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "cuda": torch.cuda.is_available()}

        probe = ray.get(ray.remote(num_cpus=0.5, num_gpus=0.5)(_probe).remote(), timeout=120)
    finally:
        ray.shutdown()                # the sweep connects by itself, through --address
    return {"address": two_node_ray.address, "nodes": two_node_ray.nodes, "probe": probe,
            "head": two_node_ray.node_with("head_node"), "worker": two_node_ray.node_with("gpu_node")}


def test_gpu_resource_is_not_a_gpu(two_nodes):
    """The premise: two nodes, GPUs only on the worker; a task holding a simulated GPU lands
    there and gets CUDA_VISIBLE_DEVICES, yet torch sees no CUDA device."""
    by_id = {n["NodeID"]: n["Resources"] for n in two_nodes["nodes"]}
    assert len(by_id) == 2
    assert not by_id[two_nodes["head"]].get("GPU") and by_id[two_nodes["worker"]]["GPU"] == 2
    got = two_nodes["probe"]
    assert got["node"] == two_nodes["worker"]
    assert len(got["gpu_ids"]) == 1 and got["cvd"] in ("0", "1")
    assert got["cuda"] is False


def test_sweep_with_fractional_gpus_runs_on_the_gpu_node_on_cpu(two_nodes, tmp_path, capsys, tiny_sweep):
    import torch

    from bench.cli import main
    from bench.sweep.results import read_sweep

    address, head_id, worker_id = two_nodes["address"], two_nodes["head"], two_nodes["worker"]
    sweep = tiny_sweep(tmp_path, name="multinode", experiment=None, clip_len=None, image_size=None,
                       max_concurrent_trials=None, root=tmp_path / "data",
                       synthetic={"clips_per_class": 2, "size": [64, 48], "length_scale": 0.25, "seed": 0},
                       stages=[{"name": "pretrain", "epochs": 1}], cells=["a"], seeds=[0, 1],
                       train={"batch_size": 2, "max_train_batches": 1, "max_val_batches": 1},
                       resources={"cpu": 0.5, "gpu": 0.5}, max_failures=0, reuse_actors=False)
    rc = main(["sweep", str(sweep), "--address", address,
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    out = capsys.readouterr()
    sweep_dir = tmp_path / "runs" / "multinode"
    _, trials = read_sweep(sweep_dir)
    errors = {t.name: (t.dir / "error.txt").read_text()[-1500:] for t in trials if (t.dir / "error.txt").is_file()}
    assert rc == 0 and not errors, f"bench sweep exited {rc}; trial errors: {errors}\n{out.out[-3000:]}{out.err[-3000:]}"
    assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials)
    # the preflight ran on the cluster: 4 half-GPU trials fit the worker's 2 GPUs, but its 2 CPUs
    # hold 4 half-CPU trials too; the head's 1 CPU has no GPU -- so 4 at once
    assert "max_concurrent_trials unset: 4, what fits the cluster" in out.out, out.out[-3000:]
    assert "estimated" in out.out.splitlines()[-1]

    for t in trials:
        # where it ran: every (re)start of the trial on the worker node, holding half a GPU
        lines = [json.loads(x) for x in (t.dir / "node.json").read_text().splitlines() if x.strip()]
        assert lines, f"{t.name}: no node.json"
        for line in lines:
            assert line["node_id"] == worker_id != head_id, f"{t.name} ran on {line['node_id']}"
            assert line["resources"].get("GPU") == pytest.approx(0.5)
        assert t.config["use_gpu"] is True          # the trial did ask for a GPU ...
        final = t.final
        assert final is not None and final["epoch"] == 1 and 0.0 <= final["val_top1"] <= 1.0
        # ... and trained on the CPU: the checkpointed weights are CPU tensors (a CUDA tensor
        # could not even be loaded here, where torch has no CUDA).
        ckpt = t.checkpoint
        assert ckpt is not None, f"{t.name}: no checkpoint"
        state = torch.load(ckpt / "state.pt", weights_only=True)
        devices = {v.device.type for v in state["model"].values() if isinstance(v, torch.Tensor)}
        assert devices == {"cpu"}, f"{t.name}: weights on {devices}"


def test_dry_run_checks_storage_and_datasets_on_every_node(two_nodes, tmp_path, capsys, tiny_sweep):
    """`--dry-run --address`: the storage marker is read back and the dataset index agrees on
    both nodes; the plan counts the cluster's resources; nothing is written."""
    from bench.cli import main
    from bench.data.synth import synthesize

    gen = {"num_classes": 3, "clips_per_class": 2, "valid_clips_per_class": 1, "size": [48, 32],
           "length_scale": 0.25, "modalities": ["rgb"]}
    synthesize("isogd", tmp_path / "data", workers=1, **gen)
    sweep = tiny_sweep(tmp_path, name="dry", experiment=None, max_concurrent_trials=None, root=tmp_path / "data",
                       synthetic=gen, cells=["a", "convlstm"], seeds=[0, 1], resources={"cpu": 0.5, "gpu": 0.5})
    before = sorted(p for p in tmp_path.rglob("*"))
    rc = main(["sweep", str(sweep), "--dry-run", "--json", "--address", two_nodes["address"]])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    plan = json.loads(out.out)
    checks = {c["name"]: c for c in plan["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert "shared by all 2 nodes" in checks["storage"]["detail"]
    assert "on all 2 nodes" in checks["datasets"]["detail"]
    assert plan["cluster"]["nodes"] == 2 and plan["cluster"]["resources"]["GPU"] == 2
    assert plan["trials"] == 4 and plan["max_concurrent_trials"] == 4
    assert sorted(p for p in tmp_path.rglob("*")) == before        # the marker is gone, no runs/
