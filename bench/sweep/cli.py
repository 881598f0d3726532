"""``bench sweep FILE``, ``bench run`` and ``bench sync``: top-level commands.

Heavy imports (ray, mlflow, torch) happen inside the handlers so ``bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.resources
import re
import sys
from pathlib import Path

from bench.errors import CLIError, DataError
from bench.storage import StorageError, location
from bench.sweep.run import SweepError, run_sweep
from bench.sweep.spec import ConfigError, load_spec
from bench.tracking.sync import find_sweep_dirs, sync_sweep
from bench.tracking.uri import apply_http_env, check_tracking, resolve_tracking_uri

DEFAULT_CONFIG = "configs/default.yaml"


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a sweep file: Ray Tune over cells x modalities x seeds, tracked in MLflow",
        description="Run the sweep described by FILE (see bench/sweep/spec.py for the schema) on a "
                    "local Ray started here, or on the cluster at --address / $RAY_ADDRESS.")
    p.add_argument("file", type=Path, help="sweep YAML file")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep: run only its unfinished trials")
    _tracking_arg(p)
    p.add_argument("--storage", help="override the file's `storage:` (the storage root: a folder every node mounts, "
                        "or a URI such as s3://bucket/runs)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the sweep against this cluster (file, storage, datasets on every node, resources) "
                        "and print its plan and estimated cost; start no trial, write nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON object")
    p.add_argument("--price-per-node-hour", type=float, default=None,
                   help="with --dry-run: a node-hour's price, for the cost estimate")
    p.add_argument("--perf-table", type=Path, default=None,
                   help="`bench perf network` JSON for the estimate (default: the suite's docs/perf/network.json)")
    p.set_defaults(func=_sweep_cmd)

    r = sub.add_parser(
        "run", help="the default benchmark: synthetic data, the five cells and the order-blind control, "
                    "RGB + depth, 3 seeds, leaderboard",
        description="Generate a small synthetic IsoGD-layout dataset if missing (./data/synthetic-isogd), "
                    "run the default sweep (bench/configs/default.yaml) on a local Ray, log to MLflow "
                    "(./mlflow.db), print a leaderboard and write the report (reports/<sweep>/, and the leaderboard "
                    "runs in MLflow). A few minutes on 2 CPU cores (docs/BENCHMARKS.md).")
    r.add_argument("--out", help="storage root for the sweep's results: a folder or a URI such as "
                                 "s3://bucket/runs (default: ./runs)")
    _tracking_arg(r)
    r.add_argument("--config", type=Path, help="another sweep file instead of the bundled default")
    r.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--resume", action="store_true", help="continue the most recent interrupted `bench run`")
    r.add_argument("--no-report", action="store_true",
                   help="skip the report (`bench report`: reports/<sweep>/ and the leaderboard runs in MLflow)")
    r.set_defaults(func=_run_cmd)

    s = sub.add_parser(
        "sync", help="replay a sweep's Tune storage into MLflow (after the tracking server was down)",
        description="Re-sync every trial's metrics, artifacts and status from a sweep folder (or a "
                    "storage root holding several) into MLflow. Idempotent.")
    s.add_argument("target", help="a sweep file, a sweep folder (<storage>/<name>) or a storage root")
    _tracking_arg(s)
    s.set_defaults(func=_sync_cmd)


def _tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<cwd>/mlflow.db)")


def _load(path: Path, storage: str | None = None, name: str | None = None):
    import dataclasses

    try:
        spec = load_spec(path)
        if storage is not None:
            spec = spec.with_storage(storage)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    if name is not None:
        spec = dataclasses.replace(spec, name=name)
    return spec


def _tracking_uri(args: argparse.Namespace) -> str:
    """The store this command records to, checked: a wrong scheme, a missing driver or folder, a
    dead server raise `TrackingUnavailable` (one line, exit 2) before any data or Ray work."""
    uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking(uri)
    return uri


def _execute(spec, args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)
    try:
        out = run_sweep(spec, address=args.address, resume=args.resume, tracking_uri=uri)
    except (SweepError, DataError) as e:
        raise CLIError(str(e)) from None
    if out.interrupted:
        print("bench: sweep interrupted; continue it with --resume", file=sys.stderr)
        return 130
    if out.errors:
        print(f"bench: {out.errors} trial(s) failed; see their error.txt under {out.sweep_dir}",
              file=sys.stderr)
        return 1
    return 0


def _sweep_cmd(args: argparse.Namespace) -> int:
    spec = _load(args.file, args.storage)
    if args.dry_run:
        return _dry_run(spec, args)
    if args.json:
        raise CLIError("--json goes with --dry-run")
    return _execute(spec, args)


def _dry_run(spec, args: argparse.Namespace) -> int:
    import json

    from bench.sweep.dryrun import PERF_TABLE, format_plan, make_plan
    from bench.sweep.run import apply_quiet_env

    apply_quiet_env()
    try:
        plan = make_plan(spec, address=args.address, perf_table=args.perf_table or PERF_TABLE,
                         price_per_node_hour=args.price_per_node_hour)
    except DataError as e:
        raise CLIError(str(e)) from None
    print(json.dumps(plan.to_json(), indent=1) if args.json else format_plan(plan))
    if not plan.ok:
        if not args.json:
            for c in plan.failed():
                print(f"bench: check {c.name!r} failed: {c.detail}", file=sys.stderr)
        return 2
    return 0


def default_config_path() -> Path:
    return Path(str(importlib.resources.files("bench") / DEFAULT_CONFIG))


def _run_cmd(args: argparse.Namespace) -> int:

    spec = _load(args.config or default_config_path(), args.out)
    if args.resume:
        # the newest by the timestamp in its name (an object store keeps no folder times)
        stamped = re.compile(rf"^{re.escape(spec.name)}-\d{{8}}-\d{{6}}$")     # `bench run`'s own names
        found = sorted((p for p in spec.storage.glob(f"{spec.name}-*")
                        if stamped.match(p.name) and (p / "sweep.json").is_file()), key=lambda p: p.name)
        if not found:
            raise CLIError(f"nothing to resume: no {spec.name}-* sweep under {spec.storage}")
        name = found[-1].name
    else:
        name = f"{spec.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    import dataclasses

    rc = _execute(dataclasses.replace(spec, name=name), args)
    if rc != 0 or args.no_report:
        return rc
    # the report too, so that `bench ui` opens on the leaderboard runs after `make run`
    from bench.report.cli import report_sweep  # heavy: polars, mlflow

    res = report_sweep(sweep=name, tracking_uri=_tracking_uri(args), out=Path("reports") / name)
    print(f"report: {res.out_dir / 'report.html'}; browse it with `bench ui`")
    return 0


def _sync_cmd(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)
    try:
        target = location(args.target)
    except StorageError as e:
        raise CLIError(str(e)) from None
    if isinstance(target, Path) and target.is_file():
        target = _load(target).sweep_dir
    dirs = find_sweep_dirs(target)
    if not dirs:
        raise CLIError(f"{target}: no sweep found (expected a folder with sweep.json, or a storage root)")
    apply_http_env()
    for d in dirs:
        st = sync_sweep(d, tracking_uri=uri)
        print(f"{d}: {st.runs_created} runs created, {st.runs_found} found, {st.epochs_logged} epochs "
              f"and {st.artifacts_logged} artifacts logged"
              + (f"; unfinished: {', '.join(st.unfinished)}" if st.unfinished else ""))
    return 0
