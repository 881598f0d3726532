"""``bench perf network``: training steps per second, clips per second and peak memory per
training step of the whole network, for every cell, at the small preset and at the paper's
size; and whether the data pipeline keeps up with a training step.

A training step is what ``bench train`` runs per batch, its own ``bench.train.loop.train_step``:
forward, cross-entropy, backward, SGD with momentum, in the layouts training uses
(channels_last_3d into Res3D on every device, bf16 autocast on CUDA). Column ``impl`` names
what each row's recurrent layers ran (``bench.models.native.implementation``). The cells of one preset are timed round-robin within each repeat, so
that load from other processes falls on all of them alike; medians after warm-up.

Peak memory per step is the most memory the step holds beyond what was allocated before it
(activations saved for backward, gradients, temporaries): on CUDA from the caching
allocator's peak statistics, on CPU from the allocation events of one profiled step (torch's
profiler with ``profile_memory``: the running total of CPU tensor allocations). Model state
(weights, momentum) is reported apart.

``--data`` (on by default for the small preset) decodes and preprocesses batches of the
preset's clip shape from IsoGD-like 320x240 videos, generated in a temporary folder, with the
loader training uses (backend "auto", no worker threads), and sets the time per batch beside
the fastest cell's training step: below 1.0 the pipeline keeps up even in the training thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import CLIError
from bench.perf._common import IMPL_NOTE, command_line, impl_rows, sync, write_outputs
from bench.perf.data import _index, _write_video
from pipelines import make_loader

COLUMNS = ["preset", "cell", "impl", "batch", "clip", "step_ms", "steps_per_s", "train_clips_per_s",
           "infer_clips_per_s", "gmacs_per_clip", "train_gmac_per_s", "peak_step_mib", "model_state_mib",
           "step_vs_convlstm"]
DATA_COLUMNS = ["preset", "codec", "source", "batch", "clip", "backend", "batch_ms", "clips_per_s",
                "fastest_step_ms", "data_over_step", "keeps_up"]
DEFAULT_BATCH = {"small": 8, "paper": 1}     # paper-size on a CPU: one clip is seconds of work


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("network", help="training steps/s, clips/s and peak memory per cell and preset",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="small,paper", help="comma-separated NetConfig presets")
    p.add_argument("--cells", default=None, help="comma-separated cells (default: every registered cell)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"clips per step (default per preset: {DEFAULT_BATCH}; 8 for paper on CUDA)")
    p.add_argument("--classes", type=int, default=249, help="classifier outputs (IsoGD: 249)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd networks")
    p.add_argument("--step-loop", action="store_true",
                   help="also time each network built with recurrent_impl 'steploop' (the per-step "
                        "autograd loop on ATen ops; rows '<cell>+steploop') and 'aten' (variant (a)'s fused "
                        "layer on ATen ops; rows '<cell>+aten'), where that runs something the default does not")
    p.add_argument("--data", choices=("auto", "on", "off"), default="auto",
                   help="time the loader against the step (auto: for the small preset)")
    p.add_argument("--data-clips", type=int, default=16, help="generated videos per codec for --data")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("docs/perf"))
    p.set_defaults(func=_cli)


# ---------------------------------------------------------------------------------- one step
def _mib(n: float) -> float:
    return round(n / 2**20, 1)


@contextlib.contextmanager
def _quiet_stderr():
    """Kineto prints a line to the process's stderr at every profiler start and stop (no
    setting turns it off); the benchmark table should not drown in them."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_step_bytes(step, *, device: str) -> int:
    """Most bytes allocated at once during ``step()`` beyond those allocated before it.

    On CPU, memory allocated before the profiled region and freed inside it is not subtracted
    (the profiler never saw its size), so release it first: the network benchmark drops the
    previous step's gradients before measuring, on either device.
    """
    import torch  # heavy

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    # torch has no CPU allocator statistics; the profiler's memory events carry the running
    # total of CPU tensor allocations made inside the profiled region.
    from torch.profiler import ProfilerActivity, profile  # heavy

    with tempfile.TemporaryDirectory(prefix="bench-perf-mem-") as tmp:
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    mem = sorted((e for e in events
                  if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0),
                 key=lambda e: e["ts"])
    if not mem:
        return 0
    # The running total is kept across profiling sessions: it still counts what earlier profiled
    # regions allocated and never freed (an earlier row's gradients: paper-size (a) read 394 MiB
    # alone and 474 MiB after ConvLSTM). Measure from where it stood when this step began.
    base = mem[0]["args"]["Total Allocated"] - mem[0]["args"]["Bytes"]
    return int(max(e["args"]["Total Allocated"] for e in mem) - base)


def measure(*, presets: list[str], cells: list[str], batch: int | None = None, classes: int = 249,
            repeats: int = 5, warmup: int = 1, device: str = "cpu", compile: bool = False,
            memory: bool = True, step_loop: bool = False) -> list[dict[str, Any]]:
    import torch  # heavy

    from bench.models import count_macs  # heavy: torch
    from bench.models.native import implementation  # heavy: torch
    from bench.models.net import NetConfig, build_network  # heavy: torch
    from bench.train.loop import train_step  # heavy: torch

    on_cuda = device.startswith("cuda")
    autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda
                else contextlib.nullcontext)
    rows: list[dict[str, Any]] = []
    for preset in presets:
        b = batch or (8 if on_cuda else DEFAULT_BATCH.get(preset, 1))
        runs: dict[str, dict[str, Any]] = {}
        for cell in cells:
            cfg = NetConfig.preset(preset, cell=cell, num_classes=classes)
            shape = (b, 3, cfg.frames, cfg.image_size, cfg.image_size)
            with torch.device("meta"):
                macs = count_macs(build_network(cfg).eval(), torch.empty(1, *shape[1:]))

            def network(recurrent_impl: str, cfg=cfg):
                net = build_network(replace(cfg, recurrent_impl=recurrent_impl)).to(device)
                for m in net.modules():    # as training: 5-D kernels in channels_last_3d
                    if isinstance(m, torch.nn.Conv3d):
                        m.to(memory_format=torch.channels_last_3d)
                return net

            def sgd(net):                  # tiny lr: weights stay sane
                return torch.optim.SGD(net.parameters(), lr=1e-6, momentum=0.9)

            torch.manual_seed(0)
            net = network(cfg.recurrent_impl)
            opt = sgd(net)
            x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last_3d)
            y = torch.randint(0, classes, (b,), device=device)
            variants = {cell: (net, net, opt)}
            if compile:
                variants[f"{cell}+compile"] = (net, torch.compile(net), opt)
            for impl, other in (impl_rows(net, network) if step_loop else {}).items():
                variants[f"{cell}+{impl}"] = (other, other, sgd(other))
            for name, (owner, model, optim) in variants.items():
                t0 = time.perf_counter()
                train_step(model, x, y, optim, autocast=autocast)   # first call (compiles if asked)
                sync(device)
                first_s = time.perf_counter() - t0
                runs[name] = {"net": owner, "model": model, "opt": optim, "x": x, "y": y, "macs": macs,
                              "impl": implementation(model),
                              "first_s": first_s, "train": [], "infer": [], "clip": f"{cfg.frames}x{cfg.image_size}"}

        def train(r):
            return lambda: train_step(r["model"], r["x"], r["y"], r["opt"], autocast=autocast)

        def infer(r):
            def f():
                r["model"].eval()
                with torch.no_grad(), autocast():
                    r["model"](r["x"])
                r["model"].train()
            return f

        for kind, make in (("train", train), ("infer", infer)):
            for r in runs.values():
                for _ in range(warmup):
                    make(r)()
            sync(device)
            for _ in range(repeats):
                for r in runs.values():
                    fn = make(r)
                    t0 = time.perf_counter()
                    fn()
                    sync(device)
                    r[kind].append(time.perf_counter() - t0)
        base = statistics.median(runs["convlstm"]["train"]) if "convlstm" in runs else None
        for name, r in runs.items():
            step = statistics.median(r["train"])
            infer_s = statistics.median(r["infer"])
            state = sum(p.numel() * p.element_size() for p in r["net"].parameters())
            state += sum(v.numel() * v.element_size() for s in r["opt"].state.values()
                         for v in s.values() if torch.is_tensor(v))
            row = {"preset": preset, "cell": name, "impl": r["impl"], "batch": b, "clip": r["clip"], "device": device,
                   "step_ms": step * 1e3, "steps_per_s": 1 / step, "train_clips_per_s": b / step,
                   "infer_clips_per_s": b / infer_s, "gmacs_per_clip": r["macs"] / 1e9,
                   # forward + backward = 3x the forward multiply-adds
                   "train_gmac_per_s": 3 * r["macs"] * b / step / 1e9,
                   "peak_step_mib": None, "model_state_mib": _mib(state),
                   "step_vs_convlstm": base / step if base else None,
                   "first_step_s": r["first_s"], "repeats": repeats}
            if memory:   # from weights + momentum, the previous step's gradients released first
                r["opt"].zero_grad(set_to_none=True)
                row["peak_step_mib"] = _mib(peak_step_bytes(train(r), device=device))
            rows.append(row)
        runs.clear()
        if on_cuda:
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------- data
def data_vs_step(rows: list[dict[str, Any]], *, preset: str, batch: int, clips: int,
                 repeats: int) -> list[dict[str, Any]]:
    """Seconds per batch of the training loader on generated IsoGD-like videos, beside the
    fastest cell's training step of ``preset`` from ``rows``."""
    from bench.models.net import NetConfig  # heavy: torch

    steps = [r["step_ms"] for r in rows if r["preset"] == preset and "+" not in r["cell"]]
    fastest = min(steps) if steps else None
    cfg = NetConfig.preset(preset)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-net-data-") as tmp:
        for codec, ext in (("mjpeg", ".avi"), ("mpeg4", ".avi")):
            d = Path(tmp) / codec
            d.mkdir()
            paths = [d / f"v{i:03d}{ext}" for i in range(clips)]
            for i, p in enumerate(paths):
                _write_video(p, codec, 40, 320, 240, seed=i)    # IsoGD: 320x240, median 38 frames
            index = _index(codec, d, paths, [40] * clips)
            loader = make_loader(index, clip_len=cfg.frames, size=cfg.image_size, batch_size=batch,
                                 train=True, seed=0, num_workers=0)
            times = []
            for epoch in range(repeats + 1):               # epoch 0 warms up
                loader.set_epoch(epoch)
                it = iter(loader)
                while True:
                    t0 = time.perf_counter()
                    try:
                        next(it)
                    except StopIteration:
                        break
                    if epoch:
                        times.append(time.perf_counter() - t0)
            per_batch = statistics.median(times) * 1e3
            ratio = per_batch / fastest if fastest else None
            out.append({"preset": preset, "codec": codec, "source": "320x240, 40 frames", "batch": batch,
                        "clip": f"{cfg.frames}x{cfg.image_size}", "backend": loader.backend,
                        "batch_ms": per_batch, "clips_per_s": batch / per_batch * 1e3,
                        "fastest_step_ms": fastest, "data_over_step": ratio,
                        "keeps_up": None if ratio is None else ("yes" if ratio < 1 else "no")})
    return out


# ---------------------------------------------------------------------------------- CLI
def _cli(args: argparse.Namespace) -> int:
    import torch  # heavy

    from bench.models import list_cells  # heavy: torch
    from bench.models.net import PRESETS  # heavy: torch

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    cells = [c.strip() for c in args.cells.split(",")] if args.cells else list_cells()
    for name, given, known in (("--presets", presets, list(PRESETS)), ("--cells", cells, list_cells())):
        bad = [v for v in given if v not in known]
        if bad or not given:
            raise CLIError(f"{name}: unknown {', '.join(bad) or '(none given)'}; known: {', '.join(known)}")
    for name in ("repeats", "batch", "classes", "data_clips"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CLIError(f"--{name.replace('_', '-')}: must be >= 1, got {v}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows = measure(presets=presets, cells=cells, batch=args.batch, classes=args.classes, repeats=args.repeats,
                   warmup=args.warmup, device=device, compile=args.compile, step_loop=args.step_loop)
    data_rows: list[dict[str, Any]] = []
    for preset in presets:
        if args.data == "on" or (args.data == "auto" and preset == "small"):
            b = next(r["batch"] for r in rows if r["preset"] == preset)
            data_rows += data_vs_step(rows, preset=preset, batch=b, clips=args.data_clips,
                                      repeats=max(1, min(args.repeats, 3)))
    command = command_line(args)
    notes = [("step: bench.train.loop.train_step (forward, cross-entropy, backward, SGD step), medians over "
              "repeats after warm-up, cells of a preset timed round-robin in one run; step_vs_convlstm > 1: "
              "faster than ConvLSTM."),
             IMPL_NOTE,
             "train_gmac_per_s counts 3x the forward multiply-adds per clip (forward + backward).",
             ("peak_step_mib: the most memory held during one step beyond what was allocated before it; "
              "model_state_mib: weights + momentum.")]
    if data_rows:
        notes.append("Data: the training loader (backend auto, no worker threads) on generated 320x240 "
                     "videos; data_over_step < 1: a batch is decoded and preprocessed faster than the "
                     "fastest cell of the preset trains on it.")
    text = write_outputs("network", rows, COLUMNS, args.out,
                         title=f"Whole network: training and inference throughput, {device}",
                         command=command, notes=notes,
                         sections=[("Data pipeline against the training step", data_rows, DATA_COLUMNS)]
                         if data_rows else [])
    print(text)
    return 0
