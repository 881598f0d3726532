"""``bench report``, ``bench ui``, ``bench server`` and ``bench viz``: top-level commands.

Heavy imports (mlflow, torch, matplotlib, scipy) happen inside the handlers, so that
``bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.data.formats import FORMATS
from bench.errors import CLIError, DataError
from bench.report.ui import serve, serve_team
from bench.report.viz import render_fig3
from bench.storage import StorageError, location
from bench.tracking.uri import (
    TrackingMisconfigured,
    TrackingUnavailable,
    apply_http_env,
    check_tracking,
    resolve_tracking_uri,
    sqlite_path,
)

DEFAULT_STORAGE = Path("runs")      # bench.sweep.spec's default `storage:`
DEFAULT_OUT = Path("reports")


def add_cli(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "report", help="leaderboard of a sweep: seeds aggregated, modalities fused, published results beside",
        description="Read a sweep's trials from MLflow (or from Ray Tune's storage with --from-tune-dir), "
                    "aggregate seeds, late-fuse modalities, test differences between cells, put the "
                    "published results beside, write Markdown + HTML + figures + CSV to --out, and log "
                    "them to MLflow as a leaderboard run.")
    r.add_argument("--sweep", help="sweep name (the `sweep` tag); default: the newest sweep")
    r.add_argument("--experiment", help="MLflow experiment to look in (default: all)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<cwd>/mlflow.db)")
    r.add_argument("--from-tune-dir", metavar="DIR",
                   help="read the sweep folder DIR (<storage>/<name>, with sweep.json) instead of MLflow; "
                        "nothing is logged to MLflow unless --tracking-uri is given")
    r.add_argument("--out", type=Path, help="output folder (default: reports/<sweep>)")
    r.add_argument("--no-mlflow-log", action="store_true", help="write the files only; no leaderboard run")
    r.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="paired bootstrap resamples (2000)")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the fusion folds (0)")
    r.set_defaults(func=_report_cmd)

    u = sub.add_parser(
        "ui", help="browse runs and leaderboards: the MLflow UI on 127.0.0.1",
        description="Start the MLflow UI (`mlflow server`) over the suite's tracking store, or point at a "
                    "running server, print its address and the newest leaderboard run, and serve until "
                    "Ctrl-C. See dashboards/README.md for where each leaderboard is.")
    u.add_argument("--tracking-uri", help="store to serve (sqlite:///...; default: $MLFLOW_TRACKING_URI, else "
                                          "./mlflow.db), or http(s):// of a running server to point at")
    u.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 = any free port)")
    u.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    u.add_argument("--artifact-root", type=Path,
                   help="where new runs' artifacts go (default: mlruns/ beside the database)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /health (120)")
    u.set_defaults(func=_ui_cmd)

    t = sub.add_parser(
        "server", help="a team's MLflow tracking server: PostgreSQL for runs, an artifact root, every driver logs to it",
        description="Run `mlflow server` with its runs in a database (PostgreSQL: --backend-store-uri "
                    "postgresql://USER@HOST:PORT/DB) and artifacts proxied to --artifacts-destination (a folder "
                    "or s3://BUCKET/PREFIX), bound to 127.0.0.1 unless --host; serve until Ctrl-C. Drivers log "
                    "there with --tracking-uri http://HOST:PORT. See clusters/README.md.")
    t.add_argument("--backend-store-uri", required=True, metavar="URI",
                   help="database of runs: postgresql://USER[:PASSWORD]@HOST:PORT/DB (or sqlite:///PATH)")
    t.add_argument("--artifacts-destination", required=True, metavar="ROOT",
                   help="where artifacts go: a folder, or s3://BUCKET/PREFIX (needs boto3 and credentials)")
    t.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 on a cluster's head, inside its network)")
    t.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 = any free port)")
    t.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    t.add_argument("--allowed-hosts", metavar="LIST",
                   help="MLflow's Host-header allow-list (default: localhost and private IPs)")
    t.add_argument("--log", type=Path, metavar="FILE", help="server log (default: ./mlflow-server-PORT.log)")
    t.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /health (120)")
    t.set_defaults(func=_server_cmd)

    v = sub.add_parser(
        "viz", help="the paper's Fig. 3: the first recurrent layer's strongest feature map at every step",
        description="For a checkpoint and one clip, draw the input frames and, below, the first recurrent "
                    "layer's output channel with the largest activation sum at each time step.")
    v.add_argument("--checkpoint", required=True,
                   help="checkpoint folder (with state.pt) or state.pt; a URI too (a trial's final_checkpoint tag)")
    v.add_argument("--video", type=Path, help="a video file (RGB; a depth video reads as gray) or a frame folder")
    v.add_argument("--dataset", choices=FORMATS, help="take the clip from a dataset ...")
    v.add_argument("--root", type=Path, help="... at this root")
    v.add_argument("--split", default="valid", help="... from this split (default valid)")
    v.add_argument("--sample", help="... this sample_id (default: the first)")
    v.add_argument("--modality", help="modality of the clip (default: the checkpoint's)")
    v.add_argument("--out", type=Path, default=Path("fig3.png"), help="PNG to write (default fig3.png)")
    v.add_argument("--tracking-uri", help="log the PNG to this MLflow store ...")
    v.add_argument("--run-id", help="... as an artifact of this run")
    v.set_defaults(func=_viz_cmd)


# ----------------------------------------------------------------------------- bench report

@dataclass
class ReportOutcome:
    report: object
    out_dir: Path
    run_id: str | None
    experiment_id: str | None
    tracking_uri: str | None


def report_sweep(*, sweep: str | None = None, experiment: str | None = None, tracking_uri: str | None = None,
                 tune_dir: str | Path | None = None, out: str | Path | None = None, log_to_mlflow: bool = True,
                 n_boot: int = 2000, seed: int = 0, quiet: bool = False) -> ReportOutcome:
    """The whole of ``bench report`` as a function (``bench run`` and tests call it).

    Raises `bench.errors.CLIError` for a user error (no such sweep, no store file) and
    `TrackingUnavailable` for a tracking URI that is wrong or a store that cannot be reached
    (unless the sweep's Tune storage can be read instead)."""
    from bench.report.build import build_report  # heavy: polars
    from bench.report.render import summary_markdown, write_report  # heavy: polars
    from bench.report.trials import load_trials_tune  # heavy: polars

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))  # noqa: E731
    apply_http_env()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    explicit_uri = tracking_uri
    sweep_id = ""
    exp_name = experiment
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        if tune_dir is None:
            uri = resolve_tracking_uri(tracking_uri)
            problem, error = None, TrackingUnavailable
            try:
                check_tracking(uri)
                db = sqlite_path(uri)
                if db is not None and not db.is_file():
                    problem, error = f"no tracking store at {db}", CLIError
            except TrackingMisconfigured:
                raise                     # a wrong URI: say so rather than read something else
            except TrackingUnavailable as e:
                problem = str(e)
            fallback = DEFAULT_STORAGE / sweep if sweep else None
            if problem is None:
                from bench.report import store

                try:
                    ref = store.find_sweep(uri, sweep=sweep, experiment=experiment)
                    trials = store.load_trials_mlflow(uri, ref, scores_dir=tmp)
                except store.SweepNotFound as e:
                    problem, error = str(e), CLIError
                else:
                    name, sweep_id, exp_name = ref.name, ref.sweep_id, ref.experiment_name
                    source = f"MLflow {uri} (experiment {ref.experiment_name!r})"
            if problem is not None:
                if fallback is not None and (fallback / "sweep.json").is_file():
                    say(f"bench report: {problem}; reading Ray Tune's storage {fallback} instead "
                        f"(and not logging to that store)")
                    tune_dir = fallback
                    explicit_uri = None
                else:
                    hint = (f"; if the sweep's Ray Tune folder survives, pass --from-tune-dir <storage>/<sweep>"
                            f" (default storage: {DEFAULT_STORAGE}/)")
                    raise error(problem + hint)
        if tune_dir is not None:
            try:
                tune_dir = location(tune_dir)     # a folder or a URI (s3://bucket/runs/<sweep>)
            except StorageError as e:
                raise CLIError(f"--from-tune-dir {e}") from None
            if not (tune_dir / "sweep.json").is_file():
                raise CLIError(f"{tune_dir}: not a sweep folder (no sweep.json); expected <storage>/<sweep name>")
            trials, meta = load_trials_tune(tune_dir, scores_dir=tmp)
            name, sweep_id = meta.get("name", tune_dir.name), meta.get("sweep_id", "")
            exp_name = experiment or meta.get("experiment") or "gesturebench"
            source = f"Ray Tune storage {tune_dir}"
            uri = resolve_tracking_uri(explicit_uri) if explicit_uri else None
            if uri is not None and log_to_mlflow:
                check_tracking(uri)       # before the report is built: where it is to be logged
            if trials.is_empty():
                raise CLIError(f"{tune_dir}: the sweep has no trials yet")
        say(f"bench report: {trials.height} trial(s) of sweep {name!r} from {source}")
        report = build_report(trials, sweep=name, source=source, n_boot=n_boot, seed=seed)
        out_dir = Path(out) if out is not None else DEFAULT_OUT / name
        paths = write_report(report, out_dir)
        say(f"bench report: wrote {paths['html']} and {paths['markdown']}")
        run_id = exp_id = None
        if log_to_mlflow and uri is not None:
            from bench.report.store import log_leaderboard

            try:
                exp_id, run_id = log_leaderboard(uri, report, out_dir, experiment=exp_name or "gesturebench",
                                                 sweep_id=sweep_id, summary_md=summary_markdown(report))
            except Exception as e:  # noqa: BLE001 -- the files are written; say why MLflow failed
                raise CLIError(f"report written to {out_dir}, but logging it to MLflow {uri} failed: {e}") from e
            where = f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}" if uri.startswith("http") else \
                f"run {run_id} (browse: bench ui --tracking-uri {uri})"
            say(f"bench report: leaderboard logged to MLflow: {where}")
        elif log_to_mlflow:
            say("bench report: not logged to MLflow (records came from Tune storage; pass --tracking-uri to log)")
    return ReportOutcome(report=report, out_dir=out_dir, run_id=run_id, experiment_id=exp_id, tracking_uri=uri)


def _report_cmd(args: argparse.Namespace) -> int:
    from bench.report.render import LEADERBOARD_COLS, markdown_table  # heavy: polars

    if args.bootstrap < 1:
        raise CLIError(f"--bootstrap {args.bootstrap}: needs at least one resample")
    try:
        res = report_sweep(sweep=args.sweep, experiment=args.experiment, tracking_uri=args.tracking_uri,
                           tune_dir=args.from_tune_dir, out=args.out, log_to_mlflow=not args.no_mlflow_log,
                           n_boot=args.bootstrap, seed=args.seed)
    except DataError as e:          # a broken score table: names the file
        raise CLIError(str(e)) from None
    keep = ("data", "stage", "cell", "modality", "seeds", "top-1 % (mean ± std)", "95% CI",
            "vs convlstm (pts)", "vs a (pts)")
    print(markdown_table(res.report.leaderboard, [c for c in LEADERBOARD_COLS if c[0] in keep]))
    for n in res.report.notes:
        print(f"note: {n}")
    return 0


# ----------------------------------------------------------------------------- bench ui

def _ui_cmd(args: argparse.Namespace) -> int:
    return serve(tracking_uri=args.tracking_uri, host=args.host, port=args.port,
                 artifact_root=args.artifact_root, timeout=args.timeout)


def _server_cmd(args: argparse.Namespace) -> int:
    return serve_team(backend_store_uri=args.backend_store_uri, artifacts_destination=args.artifacts_destination,
                      host=args.host, port=args.port, workers=args.workers, allowed_hosts=args.allowed_hosts,
                      timeout=args.timeout, log_path=args.log)


# ----------------------------------------------------------------------------- bench viz

def _viz_cmd(args: argparse.Namespace) -> int:
    if (args.video is None) == (args.dataset is None):
        raise CLIError("give either --video PATH or --dataset FORMAT --root DIR [--sample ID]")
    if args.dataset is not None and args.root is None:
        raise CLIError("--dataset needs --root")
    if args.tracking_uri and not args.run_id:
        raise CLIError("--tracking-uri needs --run-id (the run to log the figure to)")
    from bench.storage import local_copy

    try:
        with local_copy(args.checkpoint) as checkpoint:     # from a bucket: a temporary local copy
            out = render_fig3(checkpoint=checkpoint, video=args.video, dataset=args.dataset, root=args.root,
                              split=args.split, sample=args.sample, modality=args.modality, out=args.out,
                              tracking_uri=args.tracking_uri, run_id=args.run_id)
    except (FileNotFoundError, ValueError) as e:   # DataError is a ValueError: it names the file
        raise CLIError(str(e)) from None
    print(out.png)
    if out.logged:
        print(f"logged to MLflow run {args.run_id} as {out.logged}")
    return 0
