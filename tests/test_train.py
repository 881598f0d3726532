"""bench.train: config validation, the paper's LR schedule, checkpoints, resume, fine-tune, Ray.

Data: tiny synthetic IsoGD datasets (MJPEG, 64 x 48, a few short clips per class) written by
``bench.data.synth`` once per module; network: the ``small`` preset. A 2-epoch run takes a
few seconds on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import CLIError
from bench.train.config import DRIVER_KEYS, TrainConfig, split_config
from bench.train.layout import METRIC_KEYS
from bench.train.loop import (
    CKPT_TMP_PREFIX,
    build_model,
    load_init_weights,
    make_optimizer,
    make_scheduler,
    remove_orphan_checkpoint_dirs,
    train_loop_per_worker,
)
from bench.train.session import LocalSession

TIMING_KEYS = {"epoch_time_s", "train_clips_per_s"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    from bench.data.synth import synthesize

    base = tmp_path_factory.mktemp("train-data")
    kw = dict(clips_per_class=2, valid_clips_per_class=1, test_clips_per_class=1, size=(64, 48),
              length_scale=0.25, modalities=("rgb",), progress=False)
    return {"c4": synthesize("isogd", base / "c4", num_classes=4, seed=1, **kw),
            "c6": synthesize("isogd", base / "c6", num_classes=6, seed=2, **kw)}


def _config(root: Path, **over) -> dict:
    # clips of 4 frames at 32 x 32 (the small preset's MobileNet top ends at 1 x 1): a few
    # seconds for two epochs on 2 cores
    d = dict(dataset="isogd", root=str(root), modality="rgb", cell="a", preset="small", epochs=2,
             batch_size=4, seed=3, clip_len=4, image_size=32)
    d.update(over)
    return d


@pytest.fixture(scope="module")
def baseline(datasets, tmp_path_factory) -> LocalSession:
    """An uninterrupted 2-epoch run on the 4-class data."""
    session = LocalSession(tmp_path_factory.mktemp("baseline"), resume=False)
    train_loop_per_worker(_config(datasets["c4"]), session=session)
    return session


def _no_timing(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in TIMING_KEYS}


# ----------------------------------------------------------------------------- the loop's parts

def test_train_one_epoch_and_evaluate_on_a_fixed_loader():
    """The loop's named parts: counts over the batches, padding left out of the scores, the
    learning rate of the last step, and train_step is what trains."""
    from bench.train.loop import evaluate, train_one_epoch, train_step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 4 * 4, 3))
    x = torch.randn(6, 3, 2, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    batches = [{"clip": x[:4], "label": y[:4], "padded": torch.tensor([False] * 4)},
               {"clip": x[4:], "label": y[4:], "padded": torch.tensor([False, True]), "sample_id": ["e", "f"]}]
    batches[0]["sample_id"] = ["a", "b", "c", "d"]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    sums, last_lr = train_one_epoch(net, batches, opt, sched, device=torch.device("cpu"), steps=2,
                                    channels_last=False)
    loss_sum, correct, clips, real = sums.tolist()
    assert (clips, real) == (6.0, 5.0) and 0 <= correct <= 6 and loss_sum > 0
    assert last_lr == pytest.approx(0.05) and opt.param_groups[0]["lr"] == pytest.approx(0.025)
    va, (ids, labels, preds, probs) = evaluate(net, batches, device=torch.device("cpu"), num_classes=3,
                                               channels_last=False)
    assert ids == ["a", "b", "c", "d", "e"] and labels.tolist() == [0, 1, 2, 0, 1]
    assert va[3].item() == 5 and probs.shape == (5, 3)
    assert va[1].item() == float((preds == labels).sum())
    assert np.allclose(probs.sum(1), 1, atol=1e-6)
    before = [p.detach().clone() for p in net.parameters()]
    loss, logits = train_step(net, x, y, opt)
    assert not loss.requires_grad and logits.shape == (6, 3)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("field,value", [
    ("dataset", "ucf101"), ("modality", "infrared"), ("cell", "e"), ("preset", "huge"),
    ("clip_len", 7), ("epochs", 0), ("batch_size", -1), ("lr", 0), ("lr_end", 1.0),
    ("momentum", 1.5), ("amp", "fp8"), ("backend", "ffmpeg"), ("stage", "distill"),
    ("num_workers", 0), ("use_gpu", "yes"), ("epochs", 2.5), ("max_train_batches", 0),
    ("compile", "yes"),
])
def test_config_error_names_field(field, value):
    d = _config(Path("/data/isogd"))
    d[field] = value
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}="):
        TrainConfig.from_dict(d)


def test_config_cross_field_rules():
    base = _config(Path("/data/isogd"))
    with pytest.raises(ValueError, match=r"TrainConfig\.init_checkpoint=None: is required"):
        TrainConfig.from_dict({**base, "stage": "finetune"})
    with pytest.raises(ValueError, match=r"TrainConfig\.fail_marker=None"):
        TrainConfig.from_dict({**base, "fail_once_at_epoch": 2})
    with pytest.raises(ValueError, match=r"TrainConfig\.batch_size=6: .*divisible by the 4 workers"):
        TrainConfig.from_dict({**base, "batch_size": 6, "num_workers": 4})
    with pytest.raises(ValueError, match=r"TrainConfig\.lr_end=0.5: must be in \[0, lr=0.01\]"):
        TrainConfig.from_dict({**base, "lr": 0.01, "lr_end": 0.5})
    with pytest.raises(ValueError, match=r"TrainConfig\.fail_once_at_epoch=5: must be <= epochs="):
        TrainConfig.from_dict({**base, "fail_once_at_epoch": 5, "fail_marker": "/tmp/m"})
    with pytest.raises(ValueError, match=r"TrainConfig\.lr=inf: must be a finite number"):
        TrainConfig.from_dict({**base, "lr": float("inf")})


def test_config_error_carries_the_field():
    """The sweep loader maps the failing field to its line: the error says which field."""
    from bench.errors import ConfigError
    from bench.train.config import ConfigFieldError

    with pytest.raises(ConfigFieldError) as e:
        TrainConfig.from_dict({**_config(Path("/data/isogd")), "lr": 0.01, "lr_end": 0.5})
    assert (e.value.field, e.value.value) == ("lr_end", 0.5) and isinstance(e.value, ConfigError)
    import pickle

    again = pickle.loads(pickle.dumps(e.value))          # crosses Ray's process boundary intact
    assert (again.field, str(again)) == ("lr_end", str(e.value))


def test_config_from_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig.from_dict({**_config(Path("/data/isogd")), "lr": "1e-3", "amp": False,
                                 "channels_last": True})
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)     # PyYAML's string form of 1e-3
    assert (cfg.amp, cfg.channels_last) == ("off", "on")
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['bogus', 'lrr'\]"):
        TrainConfig.from_dict({**d, "lrr": 1e-3, "bogus": 1})
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['batch_size', 'epochs'\]"):
        TrainConfig.from_dict({"dataset": "isogd", "root": "/x"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_split_config_drops_bookkeeping():
    raw = {**_config(Path("/d")), "_trial_note": "x", "sweep": {"name": "s1"}, "storage_path": "/s",
           "max_failures": 2}
    train, driver = split_config(raw)
    assert driver == {"storage_path": "/s", "max_failures": 2}
    assert set(driver) <= set(DRIVER_KEYS)
    assert train == _config(Path("/d"))
    TrainConfig.from_dict(train)   # and the rest is a valid config


# ----------------------------------------------------------------------------- schedule

def test_lr_schedule_is_polynomial_from_lr_to_lr_end():
    cfg = TrainConfig.from_dict(_config(Path("/d")))
    p = torch.nn.Parameter(torch.zeros(3, 3))
    opt = torch.optim.SGD([p], lr=cfg.lr, momentum=0.9)
    n = 37
    sched = make_scheduler(opt, total_steps=n, lr=1e-3, lr_end=1e-6, power=0.9)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3, rel=1e-12)
    assert lrs[-1] == pytest.approx(1e-6, rel=1e-9)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    s = 10   # TF polynomial_decay with decay_steps = n - 1
    assert lrs[s] == pytest.approx((1e-3 - 1e-6) * (1 - s / (n - 1)) ** 0.9 + 1e-6, rel=1e-9)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-9)   # stays at the floor


def test_weight_decay_only_on_kernels():
    cfg = TrainConfig.from_dict(_config(Path("/d")))
    net, *_ = build_model(cfg, num_classes=4)
    opt = make_optimizer(net, cfg)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    for name, p in net.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


# ----------------------------------------------------------------------------- local training

def test_two_epochs_write_checkpoints(baseline, datasets):
    import polars as pl

    from bench.data.formats import load_index
    from bench.models import count_params

    val = load_index("isogd", datasets["c4"], "valid")
    train = load_index("isogd", datasets["c4"], "train")
    assert [m["epoch"] for m in baseline.reported] == [1, 2]
    assert [p.name for p in baseline.checkpoints] == ["checkpoint_epoch_0001", "checkpoint_epoch_0002"]
    for m, ckpt in zip(baseline.reported, baseline.checkpoints):
        assert set(m) == set(METRIC_KEYS)
        assert json.loads((ckpt / "metrics.json").read_text()) == m
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        assert state["epoch"] == m["epoch"]
        assert set(state) == {"epoch", "model", "optimizer", "scheduler", "rng", "rng_ranks", "config",
                              "net_config", "classes", "num_classes", "clip_len", "image_size", "params",
                              "macs_per_clip", "metrics"}   # as bench.train.layout documents
        assert len(state["rng_ranks"]) == 1          # one state per rank (tests/test_ddp.py: two)
        assert torch.equal(state["rng_ranks"][0]["torch"], state["rng"]["torch"])
        assert state["metrics"] == m and state["num_classes"] == 4 and len(state["classes"]) == 4
        assert (state["clip_len"], state["image_size"]) == (4, 32)
        assert TrainConfig.from_dict(state["config"]).cell == "a"
        df = pl.read_parquet(ckpt / "val_scores.parquet")
        assert df.schema == pl.Schema({"sample_id": pl.String, "label": pl.Int64, "pred": pl.Int64,
                                       "probs": pl.List(pl.Float32)})
        assert df["sample_id"].to_list() == [s.sample_id for s in val.samples]   # one row each, in order
        assert df["label"].to_list() == [s.label for s in val.samples]
        probs = np.stack(df["probs"].to_list())
        assert probs.shape == (len(val), 4)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        assert (probs.argmax(1) == df["pred"].to_numpy()).all()
        assert m["val_top1"] == pytest.approx(float((df["pred"] == df["label"]).mean()))
        assert m["val_top5"] == 1.0   # top-k with k = min(5, 4 classes) always hits
        assert m["num_val_samples"] == len(val) and m["num_train_samples"] == len(train)
        assert m["num_skipped"] == 0
        assert math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"])
        assert m["epoch_time_s"] > 0 and m["train_clips_per_s"] > 0
    net, *_ = build_model(TrainConfig.from_dict(_config(datasets["c4"])), num_classes=4)
    assert baseline.reported[0]["params"] == count_params(net)
    assert baseline.reported[0]["macs_per_clip"] > 1e6
    # the schedule reaches 1e-6 at the last step of the run
    assert baseline.reported[-1]["lr"] == pytest.approx(1e-6, rel=1e-9)
    assert 1e-6 < baseline.reported[0]["lr"] < 1e-3


def test_resume_after_injected_failure_matches_uninterrupted(baseline, datasets, tmp_path):
    """The failure hook fires once; the rerun resumes at epoch 2 and reproduces it exactly."""
    marker = tmp_path / "failed-once"
    cfg = _config(datasets["c4"], fail_once_at_epoch=2, fail_marker=str(marker))
    session = LocalSession(tmp_path / "run")
    with pytest.raises(RuntimeError, match="injected failure at epoch 2"):
        train_loop_per_worker(cfg, session=session)
    assert marker.exists()
    assert [p.name for p in session.checkpoints] == ["checkpoint_epoch_0001"]

    resumed = LocalSession(tmp_path / "run")   # a retry: same directory, resumes from the latest
    history = train_loop_per_worker(cfg, session=resumed)   # the marker exists: no second failure
    assert [m["epoch"] for m in history] == [2]
    assert _no_timing(history[0]) == _no_timing(baseline.reported[1])
    a = torch.load(baseline.checkpoints[1] / "state.pt", weights_only=True)
    b = torch.load(resumed.checkpoints[0] / "state.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_cached_data_is_decoded_once_per_process_and_changes_no_result(baseline, datasets, tmp_path, monkeypatch):
    """``cache_data``: the process's shared clip cache. A second run in the same process (the
    next trial of a reused Ray actor) decodes nothing, and both equal the uncached baseline."""
    import pipelines.decoders as dec
    from pipelines import shared_cache

    shared_cache().clear()
    calls = []
    for name, real in list(dec.DECODERS.items()):
        monkeypatch.setitem(dec.DECODERS, name, lambda req, real=real: calls.append(req.media.path) or real(req))
    cfg = _config(datasets["c4"], cache_data=True)
    runs = []
    for k in range(2):
        session = LocalSession(tmp_path / f"run{k}", resume=False)
        train_loop_per_worker(cfg, session=session)
        runs.append([_no_timing(m) for m in session.reported])
        if k == 0:
            decoded = len(calls)
    from bench.data.formats import load_index

    n = sum(len(load_index("isogd", datasets["c4"], s)) for s in ("train", "valid"))
    assert decoded == n and len(calls) == n           # each video once, over 2 runs x 2 epochs
    assert runs[0] == runs[1] == [_no_timing(m) for m in baseline.reported]


def test_checkpoint_folders_of_killed_runs_are_removed_by_the_next_run(baseline, datasets, tmp_path, monkeypatch):
    """A run SIGKILLed between writing a report's checkpoint and deleting it leaves the folder in
    the temp dir: the next run removes it (its writer's PID is gone) and leaves a live
    process's folder, and one that is not ours, alone; its own folders are gone when it ends."""
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    orphan = tmp_path / "tmp" / f"{CKPT_TMP_PREFIX}{killed.pid}-e0003-abc"
    live = tmp_path / "tmp" / f"{CKPT_TMP_PREFIX}{os.getpid()}-e0001-def"
    other = tmp_path / "tmp" / "ckpt-e0001-xyz"          # not this suite's name: never touched
    for d in (orphan, live, other):
        d.mkdir()
        (d / "state.pt").write_bytes(b"x" * 16)
    assert remove_orphan_checkpoint_dirs() == [orphan]
    assert not orphan.exists() and live.exists() and other.exists()

    orphan.mkdir()
    session = LocalSession(tmp_path / "run", resume=False)
    train_loop_per_worker(_config(datasets["c4"]), session=session)
    assert not orphan.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted([live.name, other.name])
    assert [_no_timing(m) for m in session.reported] == [_no_timing(m) for m in baseline.reported]


@pytest.mark.parametrize("value,mode", [(True, None), ("reduce-overhead", "reduce-overhead")])
def test_compile_traces_the_training_model_and_changes_no_result(baseline, datasets, tmp_path, monkeypatch,
                                                                 value, mode):
    """compile=True (or a mode: "reduce-overhead" captures CUDA graphs on a GPU) hands the
    training model to torch.compile with that mode; Dynamo really traces it here (the "eager"
    backend: inductor's C++ compilation would take a minute), and every metric matches the
    uncompiled baseline."""
    real_compile = torch.compile
    compiled = []

    def record(model, **kw):
        compiled.append((model, kw.pop("mode", None)))
        return real_compile(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", record)
    session = LocalSession(tmp_path, resume=False)
    train_loop_per_worker(_config(datasets["c4"], compile=value), session=session)
    assert len(compiled) == 1 and isinstance(compiled[0][0], torch.nn.Module) and compiled[0][1] == mode
    for ours, ref in zip(session.reported, baseline.reported, strict=True):
        ours, ref = _no_timing(ours), _no_timing(ref)
        assert set(ours) == set(ref)
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6), k


def test_finetune_replaces_only_the_classifier(baseline, datasets, tmp_path):
    init = baseline.checkpoints[-1]
    src = torch.load(init / "state.pt", weights_only=True)["model"]
    cfg = TrainConfig.from_dict(_config(datasets["c6"], stage="finetune", init_checkpoint=str(init)))
    net, *_ = build_model(cfg, num_classes=6)
    load_init_weights(net, init, cell="a", preset="small")
    got = net.state_dict()
    assert got.keys() == src.keys()
    for k, v in src.items():
        if k.startswith("classifier."):
            assert got[k].shape[0] == 6 and v.shape[0] == 4
        else:
            assert torch.equal(got[k], v), k

    # through the loop: one fine-tuning step starts from the Jester-style weights
    session = LocalSession(tmp_path / "ft", resume=False)
    train_loop_per_worker({**cfg.to_dict(), "epochs": 1, "max_train_batches": 1}, session=session)
    after = torch.load(session.checkpoints[0] / "state.pt", weights_only=True)
    assert after["model"]["classifier.weight"].shape == (6, src["classifier.weight"].shape[1])
    assert after["num_classes"] == 6 and session.reported[0]["num_train_samples"] == 4
    fresh, *_ = build_model(cfg, num_classes=6)
    k = next(n for n in src if n.startswith("res3d.") and src[n].ndim == 5)   # the first conv kernel
    moved = (after["model"][k] - src[k]).norm()
    assert moved < 0.05 * (fresh.state_dict()[k] - src[k]).norm()


def test_finetune_refuses_another_cell(baseline, datasets, tmp_path):
    cfg = _config(datasets["c6"], cell="c", stage="finetune", init_checkpoint=str(baseline.checkpoints[-1]))
    with pytest.raises(ValueError, match=r"init_checkpoint=.*checkpoint has cell='a', this run has cell='c'"):
        train_loop_per_worker(cfg, session=LocalSession(tmp_path, resume=False))


def test_missing_modality_names_the_file(datasets, tmp_path):
    from bench.errors import DataError

    # the synthetic data has RGB only: asking for depth fails on the first K_ (depth) file
    with pytest.raises(DataError, match=r"/K_\d+\.avi"):
        train_loop_per_worker(_config(datasets["c4"], modality="depth"),
                              session=LocalSession(tmp_path, resume=False))
    assert not any(tmp_path.iterdir())


@pytest.mark.gpu
def test_cuda_bf16_channels_last(datasets, tmp_path, monkeypatch):
    """On a GPU every training step runs there: parameters and batch on CUDA, the batch in
    channels_last_3d, under the autocast dtype the GPU's capability calls for (bf16 from 8.0,
    fp16 below: `bench.train.precision`); the checkpoint loads on a CPU."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from bench.train import loop
    from bench.train.precision import choose_precision

    seen = []
    real = loop.train_step

    def spy(model, x, y, optimizer, *, autocast, **kw):
        with autocast():
            seen.append((next(model.parameters()).device.type, x.device.type, x.dtype,
                         x.is_contiguous(memory_format=torch.channels_last_3d),
                         torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")))
        return real(model, x, y, optimizer, autocast=autocast, **kw)

    monkeypatch.setattr(loop, "train_step", spy)
    session = LocalSession(tmp_path, resume=False)
    train_loop_per_worker(_config(datasets["c4"], use_gpu=True, epochs=1), session=session)
    want = choose_precision("auto", torch.device("cuda", 0)).dtype
    assert seen and all(s == ("cuda", "cuda", torch.float32, True, True, want) for s in seen), seen
    m = session.reported[0]
    assert math.isfinite(m["train_loss"]) and m["num_val_samples"] == 4
    state = torch.load(session.checkpoints[0] / "state.pt", map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" for v in state["model"].values())


@pytest.mark.gpu
def test_cuda_training_steps_never_wait_for_the_device():
    """``train_one_epoch`` on CUDA under torch's sync debug mode "error": a step that copied a
    value to the host (``.item()``, ``int(tensor)``, a pageable copy) would raise; the epoch's
    sums come back on the device and hold the right counts."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from bench.train.loop import train_one_epoch

    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 4 * 4, 3)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    batches = [{"clip": torch.randn(4, 3, 2, 4, 4).pin_memory(), "label": torch.tensor([0, 1, 2, 0]),
                "padded": torch.tensor([False, False, False, True])} for _ in range(3)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums, _ = train_one_epoch(net, batches, opt, sched, device=dev, steps=3, channels_last=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sums.device == dev
    assert sums[2:].tolist() == [12.0, 9.0]


# ----------------------------------------------------------------------------- Ray

def _tune(config: dict, storage: Path, name: str, *, max_failures: int):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from bench.train.config import DriverConfig, TrainConfig, split_config
    from bench.train.trainable import trial_fn, trial_resources

    train, driver = split_config(config)
    cfg, drv = TrainConfig.from_dict(train), DriverConfig.from_dict(driver)
    tuner = tune.Tuner(
        tune.with_resources(trial_fn, trial_resources(workers=cfg.num_workers, use_gpu=cfg.use_gpu, driver=drv)),
        param_space=config,
        tune_config=tune.TuneConfig(metric="val_top1", mode="max"),
        # explicit loggers: metrics_dataframe must not depend on TUNE_DISABLE_AUTO_CALLBACK_LOGGERS,
        # which a sweep run earlier in the same process may have set
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    return tuner.fit()


@pytest.mark.ray
def test_trial_fn_one_worker_under_tune(local_ray, datasets, tmp_path):
    """One worker trains in the trial itself; the injected failure is retried by Tune and resumed."""
    marker = tmp_path / "failed-once"
    config = {**_config(datasets["c4"], fail_once_at_epoch=2, fail_marker=str(marker)),
              "_sweep_row": 7, "sweep": {"name": "t"}}
    grid = _tune(config, tmp_path / "store", "one", max_failures=1)
    result = grid[0]
    assert result.error is None, result.error
    assert marker.exists()
    assert result.metrics["epoch"] == 2 and set(METRIC_KEYS) <= set(result.metrics)
    with result.checkpoint.as_directory() as d:
        assert {"state.pt", "val_scores.parquet", "metrics.json"} <= set(os.listdir(d))
        assert torch.load(Path(d) / "state.pt", weights_only=True)["epoch"] == 2
    epochs = result.metrics_dataframe["epoch"].tolist()
    assert epochs == [1, 2]   # epoch 1 ran once: the retry resumed from its checkpoint


@pytest.mark.ray
@pytest.mark.slow
def test_trial_fn_two_workers_ddp(local_ray, datasets, tmp_path):
    """Two DDP workers (gloo, CPU) via TorchTrainer inside the trial; a Train-level retry resumes."""
    import polars as pl

    from bench.data.formats import load_index

    marker = tmp_path / "failed-once"
    store = tmp_path / "train-store"
    config = {**_config(datasets["c4"], num_workers=2, fail_once_at_epoch=2, fail_marker=str(marker)),
              "storage_path": str(store), "max_failures": 1, "cpus_per_worker": 0.5}
    grid = _tune(config, tmp_path / "store", "ddp", max_failures=0)
    result = grid[0]
    assert result.error is None, result.error
    assert marker.exists()
    m = result.metrics
    val = load_index("isogd", datasets["c4"], "valid")
    assert m["epoch"] == 2 and set(METRIC_KEYS) <= set(m)
    train = load_index("isogd", datasets["c4"], "train")
    assert m["num_val_samples"] == len(val) and m["num_train_samples"] == len(train)   # both shards
    ckpt = Path(m["checkpoint_path"])
    assert ckpt.name == "checkpoint_epoch_0002" and ckpt.is_relative_to(store)
    df = pl.read_parquet(ckpt / "val_scores.parquet")
    assert df["sample_id"].to_list() == [s.sample_id for s in val.samples]   # gathered from both ranks
    assert m["val_top1"] == pytest.approx(float((df["pred"] == df["label"]).mean()))
    assert torch.load(ckpt / "state.pt", weights_only=True)["epoch"] == 2


# ----------------------------------------------------------------------------- bench train

def _bench_train(argv: list[str]) -> int:
    import argparse

    from bench.train.cli import add_cli

    parser = argparse.ArgumentParser(prog="bench")
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.func(args)


def test_cli_train_and_resume(datasets, tmp_path, capsys):

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: isogd\nroot: {datasets['c4']}\npreset: small\nepochs: 1\nbatch_size: 4\n"
                   "max_val_batches: 1\n")
    with pytest.raises(CLIError, match=r"TrainConfig\.cell='z'"):
        _bench_train([str(cfg), "--set", "cell=z", "--out", str(tmp_path / "out")])
    with pytest.raises(CLIError, match=r"expected KEY=VALUE"):
        _bench_train([str(cfg), "--set", "cell", "--out", str(tmp_path / "out")])
    assert _bench_train([str(cfg), "--set", "max_train_batches=1", "--set", "lr=1e-3",
                         "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1: train_loss" in out and "latest: checkpoint_epoch_0001" in out
    metrics = json.loads((tmp_path / "out" / "checkpoint_epoch_0001" / "metrics.json").read_text())
    assert metrics["num_train_samples"] == 4 and metrics["num_val_samples"] == 4
    # run again: resumes after the last epoch, so nothing more is trained
    assert _bench_train([str(cfg), "--set", "max_train_batches=1", "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "resuming from" in captured.err and "epoch 1/1" not in captured.out


def test_trial_resources():
    from bench.train.config import DriverConfig
    from bench.train.trainable import trial_resources

    one = DriverConfig()
    assert trial_resources(workers=1, use_gpu=False, driver=one) == {"cpu": 1.0}
    assert trial_resources(workers=1, use_gpu=True, driver=DriverConfig(cpus_per_worker=4)) == \
        {"cpu": 4.0, "gpu": 1.0}
    assert trial_resources(workers=1, use_gpu=True, driver=DriverConfig(gpus_per_worker=0.5)) == \
        {"cpu": 1.0, "gpu": 0.5}
    assert trial_resources(workers=2, use_gpu=True, driver=one) == {"cpu": 0.01}   # the workers hold theirs
    with pytest.raises(ValueError, match=r"DriverConfig\.cpus_per_worker=0: must be a number > 0"):
        DriverConfig(cpus_per_worker=0)


def test_custom_resources_reach_every_training_process():
    """A sweep's ``resources.custom`` is reserved by the process that trains: the trial itself
    with one worker, each Ray Train worker with several (not only the trial's driver)."""
    from bench.train.config import DriverConfig
    from bench.train.trainable import scaling_config, trial_resources, worker_resources

    d = DriverConfig(cpus_per_worker=2, custom_per_worker={"train_slot": 0.5})
    assert "custom_per_worker" in DRIVER_KEYS and DriverConfig.from_dict(d.to_dict()) == d
    assert trial_resources(workers=1, use_gpu=False, driver=d) == {"cpu": 2.0, "train_slot": 0.5}
    assert trial_resources(workers=2, use_gpu=True, driver=d) == {"cpu": 0.01}
    assert worker_resources(use_gpu=True, driver=d) == {"CPU": 2.0, "GPU": 1.0, "train_slot": 0.5}
    cfg = TrainConfig.from_dict(_config(Path("/data"), num_workers=2))
    sc = scaling_config(cfg, d)
    assert sc.num_workers == 2 and sc.resources_per_worker == {"CPU": 2.0, "train_slot": 0.5}
    assert worker_resources(use_gpu=False, driver=DriverConfig()) == {"CPU": 1.0}


@pytest.mark.parametrize("over, match", [
    ({"gpus_per_worker": 2}, r"DriverConfig\.gpus_per_worker=2\.0: a training process uses one GPU"),
    ({"custom_per_worker": {"GPU": 1}}, r"custom_per_worker=.*'GPU': must name a custom resource"),
    ({"custom_per_worker": {"slot": 0}}, r"custom_per_worker=.*'slot': the amount must be a number > 0"),
    ({"custom_per_worker": ["slot"]}, r"custom_per_worker=\['slot'\]: must be a mapping"),
])
def test_driver_config_refuses(over, match):
    from bench.train.config import DriverConfig

    with pytest.raises(ValueError, match=match):
        DriverConfig(**over)


def test_fast_ray_train_settings_are_test_only():
    """The short Ray Train health-check interval is the test suite's (conftest), not the code's."""
    from bench.train import trainable

    src = Path(trainable.__file__).read_text()
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in src and not hasattr(trainable, "TRAIN_V2_FAST_ENV")
    assert os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S") == "0.1"     # tests/conftest.py
