"""``bench perf sweep``: the time Ray Tune adds per trial, from sweeps of trivial trials.

Each trial reports ``--epochs`` results and does nothing else (or sleeps ``--work`` seconds
per epoch), so everything the sweep takes beyond the trials' own work is scheduling: actor
start-up (or reuse), result plumbing, the JSON/CSV loggers and experiment-state snapshots, and
with ``+mlflow`` the suite's MLflow callback writing one run per trial to a SQLite store.
The Tuner runs under the same TuneConfig and RunConfig as ``bench sweep``'s
(``bench.sweep.run.tune_config`` / ``run_config``: loggers, checkpoints, trial names).

    overhead per trial = (wall - ideal) * concurrency / trials,
    ideal = ceil(trials / concurrency) * epochs * work

i.e. the seconds of a trial slot each trial costs beyond its own work. The configurations are
run round-robin, ``--repeats`` times each after one warm-up sweep; medians are reported.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.errors import CLIError
from bench.perf._common import command_line, write_outputs
from bench.sweep.run import METRIC, apply_quiet_env, run_config, start_ray, tune_config

COLUMNS = ["config", "trials", "concurrency", "epochs", "work_s", "wall_s", "ideal_s",
           "overhead_per_trial_s", "trials_per_min", "vs_reuse_actors"]
CONFIGS = ("reuse-actors", "new-actor-per-trial", "reuse-actors+mlflow")


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune's overhead per trial, from sweeps of trivial trials",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--concurrency", type=int, default=None, help="trials at once (default: CPU count)")
    p.add_argument("--epochs", type=int, default=3, help="results each trial reports")
    p.add_argument("--work", type=float, default=0.0, help="seconds each trial sleeps per epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--address", default=None, help="a running Ray cluster (default: a local Ray)")
    p.add_argument("--out", type=Path, default=Path("docs/perf"))
    p.set_defaults(func=_cli)


def trivial_trial(config: dict[str, Any]) -> None:
    from ray import tune  # heavy

    for epoch in range(1, int(config["epochs"]) + 1):
        if config["work_s"]:
            time.sleep(config["work_s"])
        tune.report({"epoch": epoch, METRIC: 0.5, "val_loss": 1.0})


def run_once(config: str, *, trials: int, concurrency: int, epochs: int, work: float, storage: Path) -> float:
    """Wall seconds of ``Tuner.fit`` for one sweep of trivial trials."""
    from ray import tune  # heavy

    callbacks: list[Any] = []
    name = f"{config}-{time.monotonic_ns()}"
    if config.endswith("+mlflow"):
        from bench.tracking.callback import MLflowTrialCallback

        callbacks.append(MLflowTrialCallback(sweep_id=name, experiment="bench-perf-sweep",
                                             tracking_uri=f"sqlite:///{storage / 'mlflow.db'}",
                                             parent_run_id=None, sweep_dir=str(storage)))
    tuner = tune.Tuner(
        tune.with_resources(trivial_trial, {"cpu": 1}),
        param_space={"epochs": epochs, "work_s": work, "cell": "none", "stage": "perf",
                     "trial": tune.grid_search(list(range(trials)))},
        tune_config=tune_config(max_concurrent_trials=concurrency,
                                reuse_actors=not config.startswith("new-actor")),
        run_config=run_config(name, storage, max_failures=0, callbacks=callbacks),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if grid.num_errors or len(grid) != trials:
        raise RuntimeError(f"bench perf sweep: {config}: {grid.num_errors} of {len(grid)} trivial trials failed")
    return wall


def measure(*, configs: list[str], trials: int, concurrency: int, epochs: int, work: float, repeats: int,
            address: str | None = None, storage: Path | None = None) -> list[dict[str, Any]]:
    """Rows of the table; the sweeps (and ``+mlflow``'s SQLite store) go to ``storage``, or to
    a temporary folder removed afterwards."""
    import ray  # heavy

    apply_quiet_env()
    t0 = time.perf_counter()
    started = start_ray(address)
    init_s = time.perf_counter() - t0
    walls: dict[str, list[float]] = {c: [] for c in configs}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-perf-sweep-") as tmp:
            storage = storage or Path(tmp)
            for c in configs:                 # warm-up: imports, the MLflow schema, actor images
                run_once(c, trials=min(trials, concurrency), concurrency=concurrency, epochs=epochs, work=work,
                         storage=storage)
            for _ in range(repeats):
                for c in configs:
                    walls[c].append(run_once(c, trials=trials, concurrency=concurrency, epochs=epochs,
                                             work=work, storage=storage))
    finally:
        if started:
            ray.shutdown()
    ideal = math.ceil(trials / concurrency) * epochs * work
    rows = []
    per_trial: dict[str, float] = {}
    for c in configs:
        wall = statistics.median(walls[c])
        per_trial[c] = (wall - ideal) * concurrency / trials
        rows.append({"config": c, "trials": trials, "concurrency": concurrency, "epochs": epochs, "work_s": work,
                     "wall_s": wall, "ideal_s": ideal, "overhead_per_trial_s": per_trial[c],
                     "trials_per_min": 60 * trials / wall, "repeats": repeats,
                     "walls_s": [round(w, 3) for w in walls[c]], "ray_init_s": round(init_s, 3),
                     "ray": "cluster " + address if address else "local"})
    ref = per_trial.get("reuse-actors")
    for r in rows:
        r["vs_reuse_actors"] = r["overhead_per_trial_s"] / ref if ref else None
    return rows


def _cli(args: argparse.Namespace) -> int:
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        raise CLIError(f"--configs: unknown {', '.join(bad) or '(none given)'}; known: {', '.join(CONFIGS)}")
    concurrency = args.concurrency or os.cpu_count() or 1
    for name, v in (("trials", args.trials), ("concurrency", concurrency), ("epochs", args.epochs),
                    ("repeats", args.repeats)):
        if v < 1:
            raise CLIError(f"--{name}: must be >= 1, got {v}")
    if args.work < 0:
        raise CLIError(f"--work: must be >= 0, got {args.work}")
    rows = measure(configs=configs, trials=args.trials, concurrency=concurrency, epochs=args.epochs,
                   work=args.work, repeats=args.repeats, address=args.address)
    command = command_line(args)
    text = write_outputs(
        "sweep", rows, COLUMNS, args.out, title=f"Ray Tune overhead per trial ({rows[0]['ray']} Ray, "
        f"ray.init {rows[0]['ray_init_s']:.1f} s)", command=command,
        notes=["overhead_per_trial_s = (wall - ideal) * concurrency / trials: the seconds of a trial slot "
               "that each trial costs beyond its own work.",
               "Medians over repeats after one warm-up sweep per configuration, configurations round-robin."])
    print(text)
    return 0
