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

The nodes are stopped by PID (the processes whose command line or open files name this test's
own ``--temp-dir``), never with ``ray stop``, which would kill every Ray on the host
(STACK_NOTES section 1).
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

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_using(tag: str) -> list[int]:
    """PIDs of this user's processes whose command line or open files mention ``tag``."""
    me, uid, out = os.getpid(), os.getuid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if d.stat().st_uid != uid:
                continue
            hit = tag in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not hit:
                for fd in (d / "fd").iterdir():
                    try:
                        if tag in os.readlink(fd):
                            hit = True
                            break
                    except OSError:
                        continue
        except OSError:
            continue
        if hit:
            out.append(int(d.name))
    return out


def _stop_nodes(tag: str, *, grace_s: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL what is left after ``grace_s`` (raylet and gcs have ignored
    SIGTERM for over 20 s here). Returns the PIDs still alive at the end (should be none)."""
    pids = _pids_using(tag)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 10.0)
        while time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and _alive(p)]
            if not pids:
                return []
            time.sleep(0.2)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ray_start(*args: str) -> None:
    r = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


@pytest.fixture(scope="module")
def two_nodes():
    """Address, node ids and a GPU-task probe of a two-node cluster this fixture owns."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("simulated GPUs only make sense where torch sees no real one")
    import ray

    if ray.is_initialized():          # a leak from another module would hijack `--address`
        ray.shutdown()
    # A short, unique temp dir: Ray's unix socket paths must stay under ~107 characters, and
    # the unique name is how the finaliser finds exactly this cluster's processes.
    tmp = tempfile.mkdtemp(prefix="gb-mn-", dir="/tmp")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        _ray_start("--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false",
                   f"--temp-dir={tmp}", '--resources={"head_node": 1}', "--disable-usage-stats")
        _ray_start(f"--address={address}", "--num-cpus=2", "--num-gpus=2", '--resources={"gpu_node": 1}',
                   f"--temp-dir={tmp}", "--disable-usage-stats")
        ray.init(address=address, log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2, f"expected the head and the worker node alive, got {len(nodes)} node(s)"

        def _probe() -> dict:     # local: cloudpickle ships it by value (tests/ is no package)
            import torch

            return {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": ray.get_gpu_ids(),
                    "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "cuda": torch.cuda.is_available()}

        probe = ray.get(ray.remote(num_cpus=0.5, num_gpus=0.5)(_probe).remote(), timeout=120)
        ray.shutdown()                # the sweep connects by itself, through --address
        yield {"address": address, "nodes": nodes, "probe": probe,
               "head": next(n["NodeID"] for n in nodes if n["Resources"].get("head_node")),
               "worker": next(n["NodeID"] for n in nodes if n["Resources"].get("gpu_node"))}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        left = _stop_nodes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"Ray processes of this test still alive: {left}"


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


def test_sweep_with_fractional_gpus_runs_on_the_gpu_node_on_cpu(two_nodes, tmp_path, capsys):
    import torch

    from bench.cli import main
    from bench.sweep.results import read_sweep

    address, head_id, worker_id = two_nodes["address"], two_nodes["head"], two_nodes["worker"]
    sweep = tmp_path / "mn.yaml"
    sweep.write_text(f"""\
name: multinode
storage: {tmp_path / 'runs'}
datasets:
  tiny:
    format: isogd
    root: {tmp_path / 'data'}
    synthetic: {{num_classes: 3, clips_per_class: 2, valid_clips_per_class: 1, size: [64, 48],
                 length_scale: 0.25, modalities: [rgb], seed: 0}}
stages: [pretrain]
preset: small
epochs: 1
grid: {{cells: [a], modalities: [rgb], seeds: [0, 1]}}
train: {{batch_size: 2, max_train_batches: 1, max_val_batches: 1}}
resources: {{cpu: 0.5, gpu: 0.5}}
max_failures: 0
reuse_actors: false
""")
    rc = main(["sweep", str(sweep), "--address", address,
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    out = capsys.readouterr()
    sweep_dir = tmp_path / "runs" / "multinode"
    _, trials = read_sweep(sweep_dir)
    errors = {t.name: (t.dir / "error.txt").read_text()[-1500:] for t in trials if (t.dir / "error.txt").is_file()}
    assert rc == 0 and not errors, f"bench sweep exited {rc}; trial errors: {errors}\n{out.out[-3000:]}{out.err[-3000:]}"
    assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials)

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
