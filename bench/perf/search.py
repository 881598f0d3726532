"""``bench perf search``: how full a hyperparameter search keeps its trial slots, with the
studies one Tune experiment after another ("sequential", one experiment per study) against all
studies of a stage in one experiment ("concurrent", `bench.sweep.search`), side by side.

    slot utilisation = sum of the trials' running seconds / (slots x wall seconds)

Trials are stand-ins that sleep ``--work`` seconds per epoch and report a validation score
that depends on their learning rate, so Optuna's suggestions and ASHA's early stops are the
real ones and the trials mostly wait: the local Ray may then declare more CPUs than the
machine has (``--slots 2,16``: this machine's two cores, and a simulated 16-slot cluster).
Each (cell, modality, seed) study runs ``--samples`` trials; the two modes run the same
studies with the same seeds, alternately, ``--repeats`` times after one warm-up search that
starts the slots' worker processes; medians are reported.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.errors import CLIError
from bench.perf._common import command_line, write_outputs
from bench.sweep.run import METRIC, MODE, apply_quiet_env, run_config, tune_config

COLUMNS = ["slots", "studies", "trials", "mode", "wall_s", "trial_s", "utilisation", "stopped_early",
           "vs_sequential"]
MODES = ("sequential", "concurrent")


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="slot utilisation of a search: studies one after another vs all at once",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", default="2,16", help="comma-separated trial slots (local Ray CPUs), one table row "
                                                   "pair each (default: 2,16)")
    p.add_argument("--cells", type=int, default=2, help="cells (studies = cells x seeds)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--samples", type=int, default=4, help="trials per study")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--work", type=float, default=1.0, help="seconds a trial sleeps per epoch")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("docs/perf"))
    p.set_defaults(func=_cli)


def stand_in_trial(config: dict[str, Any]) -> None:
    """Sleeps ``work_s`` per epoch; its score peaks at lr = 1e-2 and grows with the epochs."""
    from ray import tune  # heavy

    quality = max(0.0, 1.0 - abs(math.log10(config["lr"]) + 2.0) / 2.0)
    for epoch in range(1, int(config["epochs"]) + 1):
        time.sleep(config["work_s"])
        tune.report({"epoch": epoch, METRIC: quality * epoch / config["epochs"]})


def run_search(mode: str, *, combos: list[tuple[str, str, int]], samples: int, epochs: int, work: float,
               slots: int, storage: Path) -> dict[str, Any]:
    """One search in ``mode``; its wall seconds, trial seconds and early stops."""
    import optuna  # heavy
    from ray import tune  # heavy
    from ray.tune.schedulers import ASHAScheduler  # heavy
    from ray.tune.search.optuna import OptunaSearch  # heavy

    from bench.sweep.search import StudyScheduler, StudySearcher  # heavy: ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": tune.loguniform(1e-4, 1.0)}
    asha = dict(time_attr="epoch", max_t=epochs, grace_period=1, reduction_factor=2)
    base = {"epochs": epochs, "work_s": work, "stage": "perf"}
    trainable = tune.with_resources(stand_in_trial, {"cpu": 1})

    def fit(name: str, param_space: dict[str, Any], search_alg: Any, scheduler: Any, num_samples: int) -> Any:
        tuner = tune.Tuner(trainable, param_space=param_space,
                           tune_config=tune_config(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                                   max_concurrent_trials=slots, reuse_actors=True),
                           run_config=run_config(name, storage, max_failures=0, callbacks=[]))
        return tuner.fit()

    t0 = time.perf_counter()
    grids = []
    tag = time.monotonic_ns()
    if mode == "sequential":
        for i, (c, m, s) in enumerate(combos):
            grids.append(fit(f"seq-{tag}-{i}", {**base, "cell": c, "modality": m, "seed": s, **space},
                             OptunaSearch(metric=METRIC, mode=MODE, seed=i), ASHAScheduler(**asha), samples))
    else:
        searcher = StudySearcher(combos, num_samples=samples, metric=METRIC, mode=MODE,
                                 make_searcher=lambda i: OptunaSearch(space=space, metric=METRIC, mode=MODE, seed=i))
        grids.append(fit(f"conc-{tag}", {**base, "cell": combos[0][0], "modality": combos[0][1], "seed": combos[0][2]},
                         searcher, StudyScheduler(metric=METRIC, mode=MODE, **asha), samples * len(combos)))
    wall = time.perf_counter() - t0
    results = [r for g in grids for r in g]
    if any(r.error for r in results) or len(results) != samples * len(combos):
        raise RuntimeError(f"bench perf search: {mode}: {sum(bool(r.error) for r in results)} of "
                           f"{len(results)} stand-in trials failed")
    trial_s = sum(float(r.metrics.get("time_total_s", 0.0)) for r in results)
    stopped = sum(int(r.metrics.get("epoch", epochs)) < epochs for r in results)
    return {"wall_s": wall, "trial_s": trial_s, "stopped_early": stopped}


def measure(*, slots: list[int], cells: int, seeds: int, samples: int, epochs: int, work: float,
            repeats: int) -> list[dict[str, Any]]:
    import ray  # heavy

    apply_quiet_env()
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    combos = [(f"cell{c}", "rgb", s) for c in range(cells) for s in range(seeds)]
    rows: list[dict[str, Any]] = []
    for n in slots:
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            with tempfile.TemporaryDirectory(prefix="bench-perf-search-") as tmp:
                # warm-up: start the slots' worker processes (Ray keeps them for later actors), so
                # neither mode pays their start-up, which on a machine with fewer cores than slots
                # is not waiting but computing
                run_search("concurrent", combos=combos[:1], samples=n, epochs=1, work=0.0, slots=n,
                           storage=Path(tmp))
                for _ in range(repeats):
                    for mode in MODES:
                        runs[mode].append(run_search(mode, combos=combos, samples=samples, epochs=epochs, work=work,
                                                     slots=n, storage=Path(tmp)))
        finally:
            ray.shutdown()
        per_mode = {}
        for mode in MODES:
            wall = statistics.median(r["wall_s"] for r in runs[mode])
            trial_s = statistics.median(r["trial_s"] for r in runs[mode])
            per_mode[mode] = {"slots": n, "studies": len(combos), "trials": samples * len(combos), "mode": mode,
                              "wall_s": wall, "trial_s": trial_s, "utilisation": trial_s / (n * wall),
                              "stopped_early": statistics.median(r["stopped_early"] for r in runs[mode]),
                              "epochs": epochs, "work_s": work, "repeats": repeats,
                              "walls_s": [round(r["wall_s"], 2) for r in runs[mode]]}
        for mode in MODES:
            per_mode[mode]["vs_sequential"] = per_mode["sequential"]["wall_s"] / per_mode[mode]["wall_s"]
            rows.append(per_mode[mode])
    return rows


def _cli(args: argparse.Namespace) -> int:
    try:
        slots = [int(x) for x in args.slots.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--slots: comma-separated integers, got {args.slots!r}") from None
    for name, v in (("cells", args.cells), ("seeds", args.seeds), ("samples", args.samples),
                    ("epochs", args.epochs), ("repeats", args.repeats), *(("slots", s) for s in slots)):
        if v < 1:
            raise CLIError(f"--{name}: must be >= 1, got {v}")
    if not slots:
        raise CLIError("--slots: give at least one slot count")
    if args.work < 0:
        raise CLIError(f"--work: must be >= 0, got {args.work}")
    rows = measure(slots=slots, cells=args.cells, seeds=args.seeds, samples=args.samples, epochs=args.epochs,
                   work=args.work, repeats=args.repeats)
    text = write_outputs(
        "search", rows, COLUMNS, args.out, title="Hyperparameter search: slot utilisation, studies one after another "
        "vs all at once", command=command_line(args),
        notes=["utilisation = the trials' running seconds (Tune's time_total_s) / (slots x wall); vs_sequential: "
               "the sequential search's wall time over this row's.",
               "Stand-in trials sleep work_s per epoch (so a local Ray may declare more slots than cores) and score "
               "by their learning rate; Optuna (TPE) per study, ASHA per study (grace 1, reduction 2).",
               "sequential: one Tune experiment per (cell, modality, seed) study, one after another; concurrent: "
               "bench.sweep.search's one experiment per stage."])
    print(text)
    return 0
