"""``bench winners``: turn a finished search into a confirmed, reportable number.

Selecting a configuration on the validation split and reporting that same split overstates
it. `winners_file` writes a sweep file that fixes, per (cell, modality) and stage, the
configuration the search selected -- every searched key's value, from the best full-length
trial by final validation top-1 over the search's seeds (`bench.sweep.leaderboard`) -- as
``overrides:``, drops the search and its scheduler, trains it with more seeds, and scores it
on a labelled held-out split (``val_split`` of each dataset the stages use: ``test`` by
default). ``--run`` runs it at once. The synthetic generator writes labelled test clips
(``test_clips_per_class``); for real IsoGD a labelled test list can be supplied.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
from pathlib import Path
from typing import Any

import yaml

from bench.data.formats import load_index
from bench.errors import CLIError, ConfigError, DataError
from bench.storage import StorageError, location
from bench.sweep.cli import _execute
from bench.sweep.leaderboard import leaderboard
from bench.sweep.results import SWEEP_JSON, SWEEP_YAML, read_sweep
from bench.sweep.spec import load_spec, parse_spec


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("winners", help="re-run a search's selected configurations with more seeds on a held-out split",
                       description=__doc__.splitlines()[0], epilog=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="the search's sweep folder (<storage>/<name>, with sweep.json; a folder or a URI)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the re-run (default: 0 1 2)")
    p.add_argument("--split", default="test", help="labelled held-out split the re-run is scored on (default: test)")
    p.add_argument("--out", type=Path, help="sweep file to write (default: ./<sweep name>-winners.yaml)")
    p.add_argument("--run", action="store_true", help="run the written sweep file now (as `bench sweep FILE`)")
    p.add_argument("--address", help="Ray cluster address for --run (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for --run")
    p.set_defaults(func=_cli)


def winners_file(sweep_dir: Path, *, seeds: list[int], split: str = "test", base_dir: Path | None = None) -> str:
    """The re-run's sweep file as YAML text (see the module docstring)."""
    sweep_dir = location(sweep_dir)
    if not (sweep_dir / SWEEP_JSON).is_file() or not (sweep_dir / SWEEP_YAML).is_file():
        raise CLIError(f"{sweep_dir}: not a sweep folder (needs {SWEEP_JSON} and {SWEEP_YAML})")
    text = (sweep_dir / SWEEP_YAML).read_text()
    spec = parse_spec(text, source=sweep_dir / SWEEP_YAML, base_dir=base_dir)
    if spec.search is None:
        raise CLIError(f"{sweep_dir}: sweep {spec.name!r} ran no search (no `search:`): nothing was selected")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise CLIError(f"--seeds: distinct seeds >= 0, got {seeds}")
    searched = list(spec.search.space)
    _, trials = read_sweep(sweep_dir)
    overrides: list[dict[str, Any]] = []
    cells: list[str] = []
    for st in spec.stages:
        rows = leaderboard([t for t in trials if t.stage == st.name], stage=st.name, searched=searched)
        for row in rows:
            chosen = [s for s in row.selected if not math.isnan(s.val_top1)]
            if not chosen:
                continue
            best = max(chosen, key=lambda s: s.val_top1)
            overrides.append({"cells": [row.cell], "modalities": [row.modality], "stages": [st.name],
                              "train": {k: v for k, v in best.values}})
            if row.cell not in cells:
                cells.append(row.cell)
    if not overrides:
        raise CLIError(f"{sweep_dir}: no finished trial of sweep {spec.name!r} to select from")
    data = yaml.safe_load(text)
    data["name"] = f"{spec.name}-winners"
    data.pop("search", None)
    data.pop("scheduler", None)
    grid = data.setdefault("grid", {})
    grid["cells"] = [c for c in spec.grid.cells if c in cells]
    grid["seeds"] = list(seeds)
    data["overrides"] = overrides
    for name in sorted({st.dataset for st in spec.stages}):
        ds = spec.datasets[name]
        _check_labelled(name, ds.format, ds.root, split)
        data["datasets"][name]["val_split"] = split
    head = (f"# Written by `bench winners` from {sweep_dir} on {_dt.date.today().isoformat()}: the configuration\n"
            f"# the search selected per (cell, modality) and stage (searched keys: {', '.join(searched)}; the\n"
            f"# best full-length trial by final validation top-1 over the search's seeds), re-run with seeds\n"
            f"# {list(seeds)} and scored on the held-out {split!r} split (selected on "
            f"{', '.join(sorted({d.val_split for d in spec.datasets.values()}))}).\n")
    out = head + yaml.safe_dump(data, sort_keys=False)
    parse_spec(out, base_dir=base_dir)            # what we write loads, or we say why here
    return out


def _check_labelled(name: str, fmt: str, root: Path, split: str) -> None:
    try:
        index = load_index(fmt, root, split)
    except (DataError, ValueError, OSError) as e:
        raise CLIError(f"dataset {name!r}: no {split!r} split to score the winners on ({e}); the synthetic "
                       f"generator writes one with test_clips_per_class > 0, real IsoGD needs a labelled list") from None
    if not len(index) or any(s.label < 0 for s in index.samples):
        raise CLIError(f"dataset {name!r}: split {split!r} under {root} is empty or unlabelled: the winners "
                       "must be scored on labelled held-out clips")


def _cli(args: argparse.Namespace) -> int:
    try:
        sweep = location(args.sweep)
    except StorageError as e:
        raise CLIError(str(e)) from None
    text = winners_file(sweep, seeds=args.seeds, split=args.split)
    out = args.out or Path(f"{sweep.name}-winners.yaml")
    out.write_text(text)
    print(f"wrote {out}")
    if not args.run:
        print(f"run it with: bench sweep {out}")
        return 0
    try:
        spec = load_spec(out)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    args.resume = False
    return _execute(spec, args)
