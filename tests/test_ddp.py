"""DDP without Ray: two CPU ranks on gloo (``torch.multiprocessing`` spawn), so the ranks' agreement
can be tested in seconds.

- A batch that fails to decode on one rank only (``on_error: skip``) must not hang the others
  in DDP's all-reduce: every rank finishes the epoch and the ranks' results agree.
- The zero-weight stand-in of a rank without a batch leaves the gradient average the mean over
  the clips actually trained (same parameters as one process training their union).
- Each rank saves and restores its own RNG state; older checkpoints (rank 0's state only) give
  the other ranks a derived seed.

Every process group has a short timeout and every test a deadline, so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

WORLD = 2
PG_TIMEOUT_S = 60            # a rank waiting this long in a collective fails (gloo honours it)
DEADLINE_S = 240             # the spawned ranks must all be done by then


def _spawn(fn, tmp: Path, *args, backend: str = "gloo") -> list[dict]:
    """Run ``fn(rank, tmp, *args)`` on WORLD ranks (gloo on CPU; "nccl": rank r on cuda:r);
    returns each rank's ``result.json``."""
    import torch.multiprocessing as mp

    port = _free_port()
    ctx = mp.start_processes(_entry, args=(fn, port, tmp, args, backend), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                raise AssertionError(f"ranks still running after {DEADLINE_S} s: a hang")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    out = []
    for r in range(WORLD):
        res = json.loads((tmp / f"result{r}.json").read_text())
        assert "error" not in res, f"rank {r}: {res['error']}"
        out.append(res)
    return out


def _entry(rank: int, fn, port: int, tmp: Path, args: tuple, backend: str = "gloo") -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    torch.distributed.init_process_group(backend, rank=rank, world_size=WORLD,
                                         timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    try:
        res = fn(rank, tmp, *args)
    except BaseException:
        (tmp / f"result{rank}.json").write_text(json.dumps({"error": traceback.format_exc()}))
        raise
    finally:
        torch.distributed.destroy_process_group()
    (tmp / f"result{rank}.json").write_text(json.dumps(res))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- a corrupt file

def _train_rank(rank: int, tmp: Path, config: dict) -> dict:
    from bench.train.loop import load_checkpoint, train_loop_per_worker
    from bench.train.session import LocalSession

    session = LocalSession(tmp / f"rank{rank}", resume=False)
    session.rank, session.world_size = rank, WORLD
    history = train_loop_per_worker(config, session=session)
    out = {"history": history}
    if rank == 0:
        state = load_checkpoint(session.checkpoints[-1])
        out["rng_ranks"] = len(state["rng_ranks"])
        out["torch_states_differ"] = not torch.equal(state["rng_ranks"][0]["torch"],
                                                     state["rng_ranks"][1]["torch"])
    return out


@pytest.mark.timeout(DEADLINE_S + 60)
def test_batch_skipped_on_one_rank_does_not_hang_ddp(tmp_path):
    """Per-rank batch 1: the corrupt training clip empties one batch on the rank whose shard
    holds it, and that rank only. Both ranks finish both epochs, with the same metrics, their
    replicas in sync (the loop checks a parameter checksum), and the skipped clip counted once."""
    from bench.data.formats import load_index
    from bench.data.synth import synthesize

    root = synthesize("isogd", tmp_path / "data", num_classes=3, clips_per_class=2, valid_clips_per_class=1,
                      test_clips_per_class=1, size=(48, 32), length_scale=0.25, modalities=("rgb",),
                      progress=False)
    train = load_index("isogd", root, "train")
    assert len(train) % WORLD == 0            # no wrapped duplicate: the bad clip is in one shard
    bad = train.samples[2]
    Path(bad.paths["rgb"]).write_bytes(b"this is not a video" * 10)
    config = dict(dataset="isogd", root=str(root), modality="rgb", cell="a", preset="small", epochs=2,
                  batch_size=WORLD, seed=3, clip_len=4, image_size=32, num_workers=WORLD,
                  on_error="skip", backend="pyav")
    r0, r1 = _spawn(_train_rank, tmp_path, config)

    def comparable(h):
        return [{k: v for k, v in m.items() if k not in ("epoch_time_s", "train_clips_per_s")} for m in h]

    assert comparable(r0["history"]) == comparable(r1["history"])
    for m in r0["history"]:
        assert m["num_skipped"] == 1
        assert m["num_train_samples"] == len(train) - 1
        assert math_finite(m["train_loss"]) and math_finite(m["val_loss"])
    assert r0["rng_ranks"] == WORLD          # both ranks' RNG states are in rank 0's checkpoint


def math_finite(x: float) -> bool:
    return bool(np.isfinite(x))


# ----------------------------------------------------------------------------- the stand-in's weight

def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 4 * 4, 3))


def _batches(idx: list[list[int]]) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 2, 4, 4, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    return [{"clip": x[i], "label": y[i], "padded": torch.zeros(len(i), dtype=torch.bool)} for i in idx]


# rank 0 holds two batches (of 3 and 1 clips), rank 1 one batch of 1 (one of its clips and its
# second batch failed): step 1 trains clips {0, 1, 5} + {3}, step 2 clip {2} alone
SHARDS = {0: [[0, 1, 5], [2]], 1: [[3]]}
UNION = [[0, 1, 5, 3], [2]]


def _weighted_rank(rank: int, tmp: Path, device: str = "cpu") -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from bench.train.loop import train_one_epoch

    dev = torch.device(device if device == "cpu" else f"cuda:{rank}")
    net = _tiny_net().to(dev)
    model = DistributedDataParallel(net, device_ids=[rank] if dev.type == "cuda" else None)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    sums = train_one_epoch(model, _batches(SHARDS[rank]), opt, sched, device=dev,
                           steps=2, channels_last=False, world=WORLD, clip_shape=(3, 2, 4, 4))[0]
    torch.distributed.all_reduce(sums)
    return {"params": [p.detach().cpu().tolist() for p in net.parameters()], "sums": sums.cpu().tolist(),
            "lr": opt.param_groups[0]["lr"], "device": str(next(net.parameters()).device)}


@pytest.mark.timeout(DEADLINE_S + 60)
def test_stand_in_step_keeps_the_gradient_a_mean_over_trained_clips(tmp_path):
    """Two ranks where one has run out of batches give the parameters of one process training
    the union of each step's clips: the stand-in adds nothing, and the partial batches are
    weighted by their clips, not per rank."""
    from bench.train.loop import train_one_epoch

    r0, r1 = _spawn(_weighted_rank, tmp_path)
    assert r0["params"] == r1["params"] and r0["lr"] == r1["lr"] == pytest.approx(0.1 * 0.25)
    net = _tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    sums = train_one_epoch(net, _batches(UNION), opt, sched, device=torch.device("cpu"), steps=2,
                           channels_last=False)[0]
    for got, want in zip(r0["params"], net.parameters()):
        np.testing.assert_allclose(np.array(got), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0["sums"], sums.tolist(), rtol=1e-6)
    assert r0["sums"][2] == 5                 # the stand-in counts in no metric


@pytest.mark.gpu
@pytest.mark.timeout(DEADLINE_S + 60)
def test_nccl_ddp_step_across_two_gpus_matches_gloo_on_cpu(tmp_path):
    """The same two uneven ranks on NCCL, one GPU each: the ranks agree, each trained on its own
    GPU, and the parameters are gloo's on the CPU (to float rounding: cuDNN/cuBLAS sum in
    another order)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    (tmp_path / "gloo").mkdir()
    (tmp_path / "nccl").mkdir()
    cpu0, _ = _spawn(_weighted_rank, tmp_path / "gloo")
    g0, g1 = _spawn(_weighted_rank, tmp_path / "nccl", "cuda", backend="nccl")
    assert (g0["device"], g1["device"]) == ("cuda:0", "cuda:1")
    assert g0["params"] == g1["params"] and g0["sums"] == g1["sums"]
    for got, want in zip(g0["params"], cpu0["params"]):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g0["sums"], cpu0["sums"], rtol=1e-4)


# ----------------------------------------------------------------------------- RNG state per rank

def _draws() -> list:
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()]


def _rng_rank(rank: int, tmp: Path) -> dict:
    from bench.train.loop import rank_rng_states, restore_rng

    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    for _ in range(rank + 1):             # the ranks' streams part (as different batches would)
        _draws()
    states = rank_rng_states(WORLD)
    expected = _draws()                   # what this rank draws next, after the save
    if rank == 0:
        torch.save({"epoch": 1, "rng": states[0], "rng_ranks": states}, tmp / "new.pt")
        torch.save({"epoch": 1, "rng": states[0]}, tmp / "old.pt")   # before per-rank states
    torch.distributed.barrier()
    torch.manual_seed(99)                  # anything: restore must undo it
    new = torch.load(tmp / "new.pt", map_location="cpu", weights_only=True)
    source = restore_rng(new, rank=rank, seed=5)
    after_new = _draws()
    old = torch.load(tmp / "old.pt", map_location="cpu", weights_only=True)
    old_source = restore_rng(old, rank=rank, seed=5)
    after_old = _draws()
    restore_rng(old, rank=rank, seed=5)
    return {"source": source, "expected": expected, "after_new": after_new, "old_source": old_source,
            "after_old": after_old, "after_old_again": _draws(),
            "torch_state": states[rank]["torch"].tolist()}


@pytest.mark.timeout(DEADLINE_S + 60)
def test_each_rank_restores_its_own_rng_state(tmp_path):
    r0, r1 = _spawn(_rng_rank, tmp_path)
    assert r0["torch_state"] != r1["torch_state"] and r0["expected"] != r1["expected"]
    for r in (r0, r1):
        assert r["source"] == "own" and r["after_new"] == r["expected"]
    # a checkpoint with rank 0's state only: rank 0 gets it, rank 1 a derived seed (not rank 0's
    # stream, and the same again on a second restore)
    assert (r0["old_source"], r1["old_source"]) == ("rank0", "derived")
    assert r0["after_old"] == r0["expected"]
    assert r1["after_old"] != r0["expected"] and r1["after_old"] == r1["after_old_again"]


def test_rng_ranks_in_a_one_process_checkpoint(tmp_path):
    """save_checkpoint writes ``rng_ranks`` (one entry without DDP) that loads weights_only."""
    from bench.train.loop import rank_rng_states, restore_rng

    torch.manual_seed(1)
    states = rank_rng_states(1)
    want = torch.rand(2).tolist()
    torch.save({"epoch": 3, "rng": states[0], "rng_ranks": states}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert restore_rng(state, rank=0, seed=0) == "own" and torch.rand(2).tolist() == want


# ----------------------------------------------------------------------------- custom resources on Ray

@pytest.fixture(scope="module")
def local_ray_settings() -> dict:
    return {"num_cpus": 2, "resources": {"train_slot": 2}}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_custom_resource_is_reserved_by_each_ray_train_worker(local_ray, tmp_path):
    """The ScalingConfig a multi-worker trial builds makes every Ray Train worker hold the
    sweep's custom resource (here 1 of the node's 2 ``train_slot``s each)."""
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from bench.train.config import DriverConfig, TrainConfig
    from bench.train.trainable import scaling_config

    def record_assigned(config: dict) -> None:    # local: Ray's workers cannot import this module
        import json
        from pathlib import Path

        import ray
        import ray.train

        rank = ray.train.get_context().get_world_rank()
        got = ray.get_runtime_context().get_assigned_resources()
        Path(config["out"], f"worker{rank}.json").write_text(json.dumps(got))

    cfg = TrainConfig(dataset="isogd", root="/data", preset="small", epochs=1, batch_size=2, num_workers=2)
    driver = DriverConfig(cpus_per_worker=0.5, custom_per_worker={"train_slot": 1})
    TorchTrainer(record_assigned, train_loop_config={"out": str(tmp_path)},
                 scaling_config=scaling_config(cfg, driver),
                 run_config=RunConfig(name="custom", storage_path=str(tmp_path / "store"))).fit()
    for r in range(2):
        got = json.loads((tmp_path / f"worker{r}.json").read_text())
        assert got.get("train_slot") == 1 and got.get("CPU") == 0.5, got
