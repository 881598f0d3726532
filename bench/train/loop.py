"""The training loop: the paper's protocol, one code path for a test, a Tune trial and DDP.

Protocol (SPEC, "Training protocol"; Zhang et al., NeurIPS 2018, and their released code):
SGD with momentum 0.9 and weight decay (Keras l2(5e-5), torch 1e-4), cross-entropy, learning rate decaying
polynomially from 1e-3 to 1e-6 with power 0.9 at every step over the whole run; top-1 and
top-5 accuracy on the validation split after every epoch.

Choices the paper leaves open, made here:
- Weight decay applies to kernels (every parameter with more than one dimension: conv
  kernels, fully connected weights) and not to BatchNorm scales/shifts or biases, as the
  released Keras code puts its L2 regulariser on kernels only. Note the scale: Keras
  ``l2(5e-5)`` adds 5e-5 * sum(w^2) to the loss, whose gradient is 1e-4 * w; torch's
  ``weight_decay=c`` adds c * w. ``TrainConfig.weight_decay`` is torch's coefficient, so the
  released code's value is 1e-4 (the default).
- ``batch_size`` is the global batch: with ``world_size`` DDP workers each takes
  ``batch_size // world_size`` clips a step, so the protocol does not change with the worker count.
- With DDP the loader evens out the shards with wrapped duplicates (``batch["padded"]``, as
  torch's DistributedSampler does), so every rank runs the same number of steps and the
  gradient all-reduces pair up and every rank's learning-rate schedule is identical. Training
  uses the duplicates; validation leaves them out of every metric and of ``val_scores``.
  BatchNorm statistics stay per rank (no SyncBN).
- Skipped samples (``on_error: skip``) cannot desynchronise the ranks: every rank runs exactly
  the agreed number of steps, a rank left without a batch steps on a zero-weight stand-in, and
  the loss is weighted so the averaged gradient is the mean over the clips actually trained
  (`train_one_epoch`).
- Each rank's RNG state is saved in the checkpoint and restored on that rank (`rank_rng_states`,
  `restore_rng`).
- Mixed precision by the GPU's capability (`bench.train.precision`: bf16 autocast from compute
  capability 8.0, fp16 with a GradScaler below, fp32 on the CPU or on request), cuDNN's
  autotuner on CUDA; channels_last_3d everywhere.

Every epoch leaves a checkpoint directory (see `save_checkpoint`):
``state.pt``, ``val_scores.parquet``, ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.index import DatasetIndex
from bench.data.sampling import batch_clips
from bench.errors import DataError
from bench.models import NetConfig, build_network, count_macs, count_params
from bench.storage import RemotePath, local_copy, location
from bench.train.config import TrainConfig, split_config
from bench.train.layout import METRIC_KEYS, METRICS_FILE, STATE_FILE, VAL_SCORES_FILE
from bench.train.precision import Precision, choose_precision
from bench.train.session import Session, TrainSession

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- entry point

def train_loop_per_worker(config: Mapping[str, Any], *, session: Session | None = None) -> list[dict[str, Any]]:
    """Train one run described by ``config`` (a `TrainConfig` dict; bookkeeping keys ignored).

    ``session`` is where metrics and checkpoints go; None means "inside a Ray Train worker"
    (how ``TorchTrainer`` calls it). Returns the metric dicts of the epochs run here.
    """
    train_fields, _ = split_config(config)
    cfg = TrainConfig.from_dict(train_fields)
    return run_training(cfg, session if session is not None else TrainSession())


# ----------------------------------------------------------------------------- building blocks

def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on kernels only (ndim > 1), not on BN or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum)


def make_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, lr: float, lr_end: float,
                   power: float) -> torch.optim.lr_scheduler.LambdaLR:
    """TF's ``polynomial_decay`` per step: lr_s = (lr - lr_end) * (1 - s / (N - 1))^power + lr_end.

    torch's PolynomialLR decays to 0, not to a floor, and reaches it one step after the last;
    LambdaLR expresses the paper's schedule exactly: step 0 trains at ``lr`` and the last
    step (N - 1) at ``lr_end``. Step the scheduler after every optimizer step.
    """
    last = max(total_steps - 1, 1)

    def factor(step: int) -> float:
        frac = min(step, last) / last
        return ((lr - lr_end) * (1.0 - frac) ** power + lr_end) / lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_model(cfg: TrainConfig, *, num_classes: int) -> tuple[nn.Module, Any, int, int]:
    """``(network, NetConfig, clip_len, image_size)``, the clip shape from the preset when unset."""
    clip_len, size = cfg.resolved_clip_len, cfg.resolved_image_size
    net_cfg = NetConfig.preset(cfg.preset, cell=cfg.cell, num_classes=num_classes, frames=clip_len,
                               image_size=size, recurrent_impl=cfg.recurrent_impl,
                               gate_activation=cfg.gate_activation, init=cfg.init)
    return build_network(net_cfg), net_cfg, clip_len, size


def load_init_weights(net: nn.Module, path: str | Path, *, cell: str, preset: str) -> None:
    """Fine-tune start: every weight from ``path`` except the classifier (``net.classifier``).

    The checkpoint must come from the same cell and preset; all other parameters and buffers
    must match exactly (strict), so a wrong checkpoint fails loudly instead of half-loading.
    """
    p = location(path)                  # a local path, or a URI in the sweep's storage (s3://...)
    state_path = p / STATE_FILE if p.is_dir() else p
    if not state_path.is_file():
        raise ValueError(f"TrainConfig.init_checkpoint={str(path)!r}: no {STATE_FILE} there")
    with local_copy(state_path) as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    src = state.get("config", {})
    for field, want in (("cell", cell), ("preset", preset)):
        if src.get(field) != want:
            raise ValueError(f"TrainConfig.init_checkpoint={str(path)!r}: checkpoint has {field}="
                             f"{src.get(field)!r}, this run has {field}={want!r}")
    weights = {k: v for k, v in state["model"].items() if not k.startswith("classifier.")}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    cls_keys = {f"classifier.{k}" for k in net.classifier.state_dict()}
    if set(missing) != cls_keys or unexpected:
        raise ValueError(f"TrainConfig.init_checkpoint={str(path)!r}: weights do not fit the network "
                         f"(missing {sorted(set(missing) - cls_keys)}, unexpected {sorted(unexpected)})")


def rng_state() -> dict[str, Any]:
    """torch / numpy / python RNG states as tensors, ints, floats, lists (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal],
                   "gauss_next": [] if gauss_next is None else [float(gauss_next)]},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"][0] if py["gauss_next"] else None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_rng_states(world: int) -> list[dict[str, Any]]:
    """Every rank's `rng_state`, in rank order (a collective: every rank calls it).

    With one process, ``[rng_state()]``. Gathered with ``all_gather_object`` so rank 0, which
    writes the checkpoint, holds the others' states too (a state is a few kilobytes)."""
    mine = rng_state()
    if world == 1:
        return [mine]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def derived_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed a rank starts its RNGs from when the checkpoint it resumes holds no state of
    its own (one written before per-rank states were saved, or by fewer ranks): a function of
    the run's seed, the epoch resumed after and the rank, so it is reproducible and differs
    across ranks."""
    return int(np.random.SeedSequence([seed, epoch, rank, 0x52A4]).generate_state(1)[0])


def restore_rng(state: Mapping[str, Any], *, rank: int, seed: int) -> str:
    """Set this rank's RNGs from a checkpoint ``state``; returns where they came from.

    - ``state["rng_ranks"][rank]`` when the checkpoint holds this rank's own state ("own");
    - else, on rank 0, ``state["rng"]`` (rank 0's state; every checkpoint has it) ("rank0");
    - else (a checkpoint from before per-rank states, or one saved by fewer ranks) the RNGs are
      seeded with `derived_seed` (seed, epoch, rank) ("derived"): never rank 0's state, which
      would make every rank draw rank 0's numbers.
    """
    per_rank = state.get("rng_ranks") or []
    if rank < len(per_rank):
        set_rng_state(per_rank[rank])
        return "own"
    if rank == 0:
        set_rng_state(state["rng"])
        return "rank0"
    s = derived_seed(seed, int(state["epoch"]), rank)
    torch.manual_seed(s)            # seeds CUDA's generators too
    np.random.seed(s)
    random.seed(s)
    return "derived"


def write_val_scores(path: Path, *, sample_ids: list[str], labels: np.ndarray, preds: np.ndarray,
                     probs: np.ndarray) -> None:
    """Per-sample validation scores: sample_id str, label int64, pred int64, probs list<float32>."""
    import pyarrow as pa  # heavy
    import pyarrow.parquet as pq  # heavy

    probs = np.ascontiguousarray(probs, dtype=np.float32)
    n, c = probs.shape if probs.ndim == 2 else (0, 0)
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32) if n else np.zeros(1, np.int32))
    table = pa.table({
        "sample_id": pa.array(sample_ids, type=pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "pred": pa.array(np.asarray(preds, dtype=np.int64)),
        "probs": pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1))),
    })
    pq.write_table(table, path)


def save_checkpoint(directory: Path, *, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig, net_cfg: Any,
                    classes: list[str], num_classes: int, clip_len: int, image_size: int, params: int,
                    macs: int, metrics: dict[str, Any], val_scores: dict[str, Any],
                    rng_ranks: list[dict[str, Any]] | None = None,
                    grad_scaler: torch.amp.GradScaler | None = None) -> None:
    """Write the epoch's checkpoint directory, the layout the sweep and report code read
    (`bench.train.layout`):

    - ``state.pt``: model, optimizer, scheduler, epoch, rng, config, ... (`load_checkpoint`);
      ``rng`` is this process's RNG state, ``rng_ranks`` every rank's (`rank_rng_states`,
      gathered by the caller; default ``[rng]``);
    - ``val_scores.parquet``: the epoch's per-sample validation scores (`write_val_scores`);
    - ``metrics.json``: the epoch's metric dict.
    """
    state = {
        "epoch": epoch,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "net_config": dataclasses.asdict(net_cfg),
        "classes": list(classes),
        "num_classes": num_classes,
        "clip_len": clip_len,
        "image_size": image_size,
        "params": params,
        "macs_per_clip": macs,
        "metrics": metrics,
    }
    state["rng_ranks"] = list(rng_ranks) if rng_ranks is not None else [state["rng"]]
    if grad_scaler is not None:          # fp16: the dynamic loss scale goes on where it was
        state["grad_scaler"] = grad_scaler.state_dict()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / STATE_FILE)
    write_val_scores(directory / VAL_SCORES_FILE, **val_scores)
    (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=1, sort_keys=True))


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint directory, on the CPU (tensors and plain values only)."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def restore_checkpoint(state: Mapping[str, Any], *, net: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int = 0,
                       seed: int = 0) -> int:
    """Continue from ``state`` (`load_checkpoint`): weights, optimiser, schedule and this rank's
    RNGs (`restore_rng`) as they were after its epoch; returns the epoch to run next."""
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state, rank=rank, seed=seed)
    return int(state["epoch"]) + 1


def check_labels(index: DatasetIndex, num_classes: int) -> None:
    """Training and validation need a label in ``[0, num_classes)`` on every sample."""
    for s in index.samples:
        if not 0 <= s.label < num_classes:
            where, _, line = s.source.rpartition(":")
            path, lineno = (where, int(line)) if line.isdigit() else (s.source or str(index.root), None)
            raise DataError(path, f"sample {s.sample_id!r} of split {index.split!r} has label {s.label}, "
                                  f"outside [0, {num_classes}) (unlabelled splits cannot train or validate)",
                            line=lineno)


# ----------------------------------------------------------------------------- the loop

# A report's checkpoint is written to a temporary folder, handed to the session (which copies it
# to the trial's storage) and deleted. A process killed in between (SIGKILL, OOM) leaves it behind,
# so the folder names its writer's PID and the next run removes those whose writer is gone.
CKPT_TMP_PREFIX = "gesturebench-ckpt-p"


def remove_orphan_checkpoint_dirs(root: str | Path | None = None) -> list[Path]:
    """Delete the temporary checkpoint folders under ``root`` (default: the temp dir) whose
    writing process no longer exists; returns them. A folder of a live process (or of another
    user's, which this one cannot signal) is left alone."""
    removed: list[Path] = []
    base = Path(root if root is not None else tempfile.gettempdir())
    try:
        candidates = list(base.glob(f"{CKPT_TMP_PREFIX}*-e*"))
    except OSError:
        return removed
    for path in candidates:
        pid_text = path.name[len(CKPT_TMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or not path.is_dir():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue                                  # alive
        except ProcessLookupError:
            pass                                      # gone: the folder is an orphan
        except (PermissionError, OverflowError):
            continue                                  # alive, another user's; or not a pid
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def run_training(cfg: TrainConfig, session: Session, *,
                 make_loader: Callable[..., Any] | None = None,
                 load_index: Callable[..., DatasetIndex] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) ``cfg`` under ``session``; returns the metric dicts reported here.

    ``make_loader`` / ``load_index`` default to ``pipelines.make_loader`` and
    ``bench.data.formats.load_index`` (overridable to test the loop in isolation).
    """
    remove_orphan_checkpoint_dirs()
    if make_loader is None:
        from pipelines import make_loader
    if load_index is None:
        from bench.data.formats import load_index
    world = session.world_size
    if world > 1 and not torch.distributed.is_initialized():
        raise RuntimeError(f"world_size={world} but torch.distributed is not initialised")
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size={cfg.batch_size}: must be divisible by the "
                         f"{world} workers (it is the global batch)")
    device = session.device(use_gpu=cfg.use_gpu)
    on_cuda = device.type == "cuda"
    precision = choose_precision(cfg.amp, device)
    # channels_last_3d pays on CUDA and on CPU alike (oneDNN: the small preset's Res3D
    # forward+backward 1.35-1.5x faster measured on this 2-core CPU), so "auto" means on.
    use_cl = cfg.channels_last in ("auto", "on")

    # Determinism on CPU: seeded RNGs and deterministic kernels (warn_only: an op without a
    # deterministic implementation warns instead of failing the run). Restored afterwards,
    # since the setting is process-global.
    prev_det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if not on_cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:                 # one clip shape per run: cuDNN autotunes each convolution once
        torch.backends.cudnn.benchmark = True
    if session.rank == 0:
        log.info("precision: %s", precision.reason)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    try:
        return _run(cfg, session, device=device, precision=precision, use_cl=use_cl, make_loader=make_loader,
                    load_index=load_index)
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        torch.backends.cudnn.benchmark = prev_bench


def _run(cfg: TrainConfig, session: Session, *, device: torch.device, precision: Precision, use_cl: bool,
         make_loader: Callable[..., Any], load_index: Callable[..., DatasetIndex]) -> list[dict[str, Any]]:
    rank, world = session.rank, session.world_size
    dist = world > 1

    # -- data
    # Only the trained modality is read: an RGB run must not need the depth files.
    train_index = load_index(cfg.dataset, cfg.root, cfg.train_split, modalities=(cfg.modality,))
    val_index = load_index(cfg.dataset, cfg.root, cfg.val_split, modalities=(cfg.modality,))
    for idx, split_field in ((train_index, "train_split"), (val_index, "val_split")):
        if len(idx) == 0:
            raise ValueError(f"TrainConfig.{split_field}={idx.split!r}: no samples under {cfg.root}")
        if cfg.modality not in idx.modalities:
            raise ValueError(f"TrainConfig.modality={cfg.modality!r}: split {idx.split!r} of {cfg.root} "
                             f"has modalities {list(idx.modalities)}")
    num_classes = cfg.num_classes
    if num_classes is None:
        num_classes = train_index.num_classes or 1 + max(s.label for s in train_index.samples)
    check_labels(train_index, num_classes)
    check_labels(val_index, num_classes)

    # -- network (seeded above: the same seed gives the same initial weights)
    net, net_cfg, clip_len, size = build_model(cfg, num_classes=num_classes)
    params = int(count_params(net))

    with session.restore_dir() as d:
        resume_state = load_checkpoint(d) if d is not None else None
    if resume_state is None and cfg.stage == "finetune":
        load_init_weights(net, cfg.init_checkpoint, cell=cfg.cell, preset=cfg.preset)

    if resume_state is not None and "macs_per_clip" in resume_state:
        macs = int(resume_state["macs_per_clip"])
    else:
        # Counted on a meta-device twin: no memory, no compute, and no draw from the RNGs.
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            twin = build_network(net_cfg).eval()
            clip = torch.empty(1, 3, clip_len, size, size)
        macs = int(count_macs(twin, clip))
        del twin

    # -- loaders: each rank reads its shard; batch_size is global
    from pipelines import shared_cache

    per_rank_batch = cfg.batch_size // world
    loader_kw = dict(modality=cfg.modality, clip_len=clip_len, size=size, batch_size=per_rank_batch,
                     seed=cfg.seed, backend=cfg.backend, rank=rank, world_size=world,
                     on_error=cfg.on_error, num_workers=cfg.data_workers,
                     # one decode per process: the next trial of a reused actor finds the clips
                     cache=shared_cache() if cfg.cache_data else False,
                     # uint8 to the device, finished there (bench.data.sampling.batch_clips)
                     device_preprocess=True)
    train_loader = make_loader(train_index, train=True, **loader_kw)
    val_loader = make_loader(val_index, train=False, **loader_kw)
    steps = len(train_loader)
    if cfg.max_train_batches is not None:
        steps = min(steps, cfg.max_train_batches)
    if dist:   # the loader pads shards to equal length; the minimum guards against any other loader
        steps = int(_all_reduce(torch.tensor([steps], device=device), "min").item())
    if steps < 1:
        raise ValueError(f"TrainConfig.batch_size={cfg.batch_size}: no training batch on rank {rank}")
    total_steps = cfg.epochs * steps

    # -- model on device, optimiser, schedule
    net.to(device)
    if use_cl:
        for m in net.modules():   # only the 5-D conv kernels take channels_last_3d
            if isinstance(m, nn.Conv3d):
                m.to(memory_format=torch.channels_last_3d)
    optimizer = make_optimizer(net, cfg)
    scheduler = make_scheduler(optimizer, total_steps=total_steps, lr=cfg.lr, lr_end=cfg.lr_end,
                               power=cfg.lr_power)
    start_epoch = 1
    if resume_state is not None:
        start_epoch = restore_checkpoint(resume_state, net=net, optimizer=optimizer, scheduler=scheduler,
                                         rank=rank, seed=cfg.seed)
        if rank == 0:
            log.info("resuming %s/%s at epoch %d", cfg.cell, cfg.modality, start_epoch)
    model: nn.Module = net
    if dist:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile != "off":
        # Off by default: on this 2-core CPU it buys nothing for training (bench perf network
        # --compile: -1% to +9% per step, after ~70 s of compilation per process). Compiling
        # the DDP wrapper lets Dynamo split graphs at DDP's bucket boundaries. Validation and
        # checkpoints use the plain module. "reduce-overhead" replays CUDA graphs on a GPU
        # (`bench.train.config.COMPILE_MODES`); torch skips the capture on a CPU.
        model = torch.compile(model, mode=None if cfg.compile == "default" else cfg.compile)

    autocast = precision.autocast()
    scaler = precision.grad_scaler()
    if scaler is not None and resume_state is not None and resume_state.get("grad_scaler"):
        scaler.load_state_dict(resume_state["grad_scaler"])
    val_pos = {s.sample_id: i for i, s in enumerate(val_index.samples)}
    history: list[dict[str, Any]] = []

    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.fail_once_at_epoch == epoch and rank == 0:
            _inject_failure(epoch, location(cfg.fail_marker))
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        tr, last_lr = train_one_epoch(model, train_loader, optimizer, scheduler, device=device, steps=steps,
                                      channels_last=use_cl, autocast=autocast, world=world,
                                      clip_shape=(3, clip_len, size, size), scaler=scaler)
        if dist:
            tr = _all_reduce(tr, "sum")
            _check_replicas_in_sync(net, world)
        tr_loss_sum, tr_correct, tr_n, tr_real = tr.tolist()   # (waits for the GPU: honest timing)
        train_time = time.perf_counter() - t0

        # the unwrapped network: no DDP collectives, shards may differ in size
        va, rows = evaluate(net, val_loader, device=device, num_classes=num_classes, channels_last=use_cl,
                            autocast=autocast, max_batches=cfg.max_val_batches)
        if dist:
            va = _all_reduce(va, "sum")
        va_loss_sum, va_top1, va_topk, va_n = va.tolist()
        skipped = {sid for sid, _ in (*train_loader.skipped, *val_loader.skipped)}
        num_skipped = len(skipped)
        if dist:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, (rows, num_skipped))
            num_skipped = sum(g[1] for g in gathered)
            parts = [g[0] for g in gathered]
            rows = ([s for pt in parts for s in pt[0]], np.concatenate([pt[1] for pt in parts]),
                    np.concatenate([pt[2] for pt in parts]), np.concatenate([pt[3] for pt in parts]))
        order = np.argsort([val_pos.get(s, len(val_pos)) for s in rows[0]], kind="stable")
        val_scores = {"sample_ids": [rows[0][i] for i in order], "labels": rows[1][order],
                      "preds": rows[2][order], "probs": rows[3][order]}
        epoch_time = time.perf_counter() - t0

        metrics = {
            "epoch": epoch,
            "train_loss": tr_loss_sum / max(tr_n, 1),
            "train_top1": tr_correct / max(tr_n, 1),
            "val_loss": va_loss_sum / va_n if va_n else math.nan,
            "val_top1": va_top1 / va_n if va_n else math.nan,
            "val_top5": va_topk / va_n if va_n else math.nan,
            "lr": float(last_lr),
            "epoch_time_s": epoch_time,
            "train_clips_per_s": tr_n / train_time if train_time > 0 else math.nan,
            "params": params,
            "macs_per_clip": macs,
            "num_train_samples": int(tr_real),
            "num_val_samples": int(va_n),
            "num_skipped": int(num_skipped),
        }
        assert set(metrics) == set(METRIC_KEYS), "bench.train.layout.METRIC_KEYS is the contract"
        ckpt_dir: Path | None = None
        rng_ranks = rank_rng_states(world)      # every rank's, before rank 0 writes them
        if rank == 0:
            ckpt_dir = Path(tempfile.mkdtemp(prefix=f"{CKPT_TMP_PREFIX}{os.getpid()}-e{epoch:04d}-"))
            save_checkpoint(ckpt_dir, epoch=epoch, net=net, optimizer=optimizer, scheduler=scheduler,
                            cfg=cfg, net_cfg=net_cfg, classes=list(train_index.classes),
                            num_classes=num_classes, clip_len=clip_len, image_size=size, params=params,
                            macs=macs, metrics=metrics, val_scores=val_scores, rng_ranks=rng_ranks,
                            grad_scaler=scaler)
        try:
            session.report(metrics, ckpt_dir)
        finally:
            if ckpt_dir is not None:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
        history.append(metrics)
        if rank == 0:
            log.info("epoch %d/%d: train_loss %.4f val_top1 %.4f (%.1f s)", epoch, cfg.epochs,
                     metrics["train_loss"], metrics["val_top1"], epoch_time)
    return history


# ----------------------------------------------------------------------------- one step, one epoch

def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, *,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               autocast: Callable[[], Any] = contextlib.nullcontext,
               weight: float = 1.0, scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch already on the device and in its layout: forward,
    cross-entropy (in float32 under autocast), backward, SGD step, then the per-step schedule.

    ``weight`` scales the mean loss that is back-propagated (`train_one_epoch` uses it to keep
    DDP's gradient average a mean over clips when ranks hold different numbers of them; 0: a
    stand-in batch that contributes nothing). Returns ``(loss, logits)``, detached, the loss
    unweighted. ``scaler`` (fp16, `bench.train.precision`): the loss is scaled before backward
    and the step skipped when the scaled gradients overflowed. `bench perf network` times this
    very function.
    """
    with autocast():
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    objective = loss if weight == 1.0 else loss * weight
    if scaler is None:
        objective.backward()
        optimizer.step()
    else:
        scaler.scale(objective).backward()
        scaler.step(optimizer)
        scaler.update()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits.detach()


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, *, device: torch.device, steps: int,
                    channels_last: bool, autocast: Callable[[], Any] = contextlib.nullcontext,
                    world: int = 1, clip_shape: tuple[int, ...] | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, float]:
    """Train ``steps`` steps on ``loader``'s batches. Returns this rank's float64 sums on
    ``device``, ``[loss * clips, correct, clips, clips that are not padding]`` (all-reduce them
    for DDP), and the learning rate of the last step. Nothing in a step waits for the device
    (the metrics stay device tensors, the counts Python ints) but, with DDP, the ranks' clip
    counts below, and the GradScaler's overflow check under fp16.

    With ``world > 1`` (DDP) the ranks agree on every step, so none can wait in DDP's gradient
    all-reduce for a rank that is not there (a hang until the process-group timeout):

    - Every rank runs exactly ``steps`` steps (the caller agrees on ``steps``: the minimum of
      the ranks' ``len(loader)``). The loader may yield fewer batches than its ``len()``: a
      batch whose samples all failed to decode (``on_error: skip``) is left out on that rank
      only. A rank whose batches have run out steps on a **zero-weight stand-in** (one clip of
      zeros of ``clip_shape``, loss weight 0): it takes part in the all-reduce with zero
      gradients, and its optimiser and schedule step with the others', so replicas, momentum
      buffers and learning rates stay identical. The stand-in's forward leaves no trace: the
      network's buffers (BatchNorm running statistics) are put back afterwards, and it counts
      in no metric.
    - Before each step the ranks all-reduce how many clips each holds (one 1-element
      all-reduce). Each rank weights its mean loss by ``world * n_rank / n_total``, so DDP's
      average of the ranks' gradients is the mean over every clip trained in the step, however
      the clips are spread (a rank whose batch lost some samples does not over-weight the
      rest). With equal batches, the normal case, the weight is exactly 1 (nothing changes).
      When no rank holds a clip, nobody runs the network; only the schedule steps, so the
      learning rate stays a function of the step index on every rank.

    Why not ``torch.distributed.algorithms.Join`` (torch's answer to uneven inputs): a joined
    rank shadows the all-reduces but does not step its optimiser or scheduler, so momentum
    buffers and learning rates drift apart (DDP re-broadcasts only the parameters, at the end),
    and ``Join`` only covers ranks that run out at the end of the epoch. The stand-in keeps the
    ranks in lockstep with the same code path as a normal step.
    """
    model.train()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    clips = real_clips = 0
    last_lr = optimizer.param_groups[0]["lr"]
    batches = iter(loader)
    for _ in range(steps):
        batch = next(batches, None)
        n = 0 if batch is None else int(batch["label"].shape[0])
        if batch is not None and "clip" in batch:
            clip_shape = tuple(batch["clip"].shape[1:])
        total, weight = n, 1.0
        if world > 1:
            counts = torch.tensor([n, int(n == 0)], dtype=torch.int64, device=device)
            counts = _all_reduce(counts, "sum").tolist()
            total, empty_ranks = int(counts[0]), int(counts[1])
            if empty_ranks or total != n * world:
                weight = world * n / total if total else 0.0
        last_lr = optimizer.param_groups[0]["lr"]
        if total == 0:                  # no rank holds a clip: nothing to train, keep the schedule
            scheduler.step()
            continue
        if n == 0:
            if clip_shape is None:
                raise ValueError("train_one_epoch: a stand-in step needs clip_shape (no batch seen yet)")
            x = torch.zeros((1, *clip_shape), device=device)
            y = torch.zeros(1, dtype=torch.int64, device=device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            kept = [b.detach().clone() for b in model.buffers()]
            train_step(model, x, y, optimizer, scheduler=scheduler, autocast=autocast, weight=0.0, scaler=scaler)
            with torch.no_grad():
                for b, old in zip(model.buffers(), kept):
                    b.copy_(old)
            continue
        x = batch_clips(batch, device)
        y = batch["label"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        loss, logits = train_step(model, x, y, optimizer, scheduler=scheduler, autocast=autocast, weight=weight,
                                  scaler=scaler)
        real = int((~batch["padded"]).sum()) if "padded" in batch else n     # a CPU tensor: no device sync
        # loss and hits stay on the device (no host synchronisation inside a step); the counts
        # are Python ints, added to the sums once, after the last step
        sums[0] += loss.double() * n
        sums[1] += (logits.argmax(1) == y).sum()
        clips += n
        real_clips += real
    sums[2] += clips                    # a Python scalar into a device tensor: no copy, no sync
    sums[3] += real_clips
    return sums, last_lr


def evaluate(net: nn.Module, loader: Any, *, device: torch.device, num_classes: int, channels_last: bool,
             autocast: Callable[[], Any] = contextlib.nullcontext, max_batches: int | None = None
             ) -> tuple[torch.Tensor, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]:
    """Score ``loader`` (padding left out); returns this rank's float64 sums on ``device``,
    ``[loss * clips, top-1 hits, top-k hits, clips]`` with k = min(5, classes), and its rows
    ``(sample_ids, labels, preds, probs)`` in loader order."""
    net.eval()
    topk = min(5, num_classes)
    ids: list[str] = []
    labels, preds, probs = [], [], []
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            keep = ~batch["padded"] if "padded" in batch else torch.ones(len(batch["label"]), dtype=torch.bool)
            if not bool(keep.any()):
                continue
            x = batch_clips(batch, device)[keep.to(device)]
            y = batch["label"][keep].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with autocast():
                logits = net(x)
            logits = logits.float()
            top = logits.topk(topk, dim=1).indices
            hit = top == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 hit[:, 0].sum().double(), hit.any(1).sum().double(),
                                 torch.tensor(float(y.shape[0]), dtype=torch.float64, device=device)])
            ids.extend(sid for sid, k in zip(batch["sample_id"], keep.tolist()) if k)
            labels.append(y.cpu().numpy())
            preds.append(top[:, 0].cpu().numpy())
            probs.append(logits.softmax(1).cpu().numpy())
    rows = (ids, _cat(labels, np.int64), _cat(preds, np.int64), _cat(probs, np.float32).reshape(-1, num_classes))
    return sums, rows


def _inject_failure(epoch: int, marker: Path | RemotePath) -> None:
    """The ``fail_once_at_epoch`` test hook: raise once, leaving ``marker`` so a retry goes on."""
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    raise RuntimeError(f"injected failure at epoch {epoch} (TrainConfig.fail_once_at_epoch; "
                       f"marker {marker} now exists, so a retry goes on)")


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    ops = {"sum": torch.distributed.ReduceOp.SUM, "min": torch.distributed.ReduceOp.MIN}
    torch.distributed.all_reduce(t, op=ops[op])
    return t


def _check_replicas_in_sync(net: nn.Module, world: int) -> None:
    """DDP keeps the replicas identical (same averaged gradients, same steps); a cheap guard
    that this held: a float64 checksum of the parameters must agree bit for bit on every rank."""
    total = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    lo, hi = total.clone(), total.clone()
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise RuntimeError(f"DDP replicas diverged across {world} ranks: parameter checksum "
                           f"{lo.item()!r} .. {hi.item()!r}")


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

