"""``bench train``: one run in this process, without Ray -- for debugging a config by hand.

    bench train run.yaml --out runs/debug
    bench train --set dataset=isogd --set root=data/synth --set preset=small \\
        --set epochs=2 --set batch_size=4 --out runs/debug

The config is a YAML (or JSON) mapping of `TrainConfig` fields; ``--set key=value`` entries
(values parsed as YAML) override it. Checkpoints go to ``OUT/checkpoint_epoch_NNNN``, and a
second invocation with the same ``--out`` resumes from the newest one (``--fresh`` ignores
them). Sweeps, several workers and retries belong to ``bench sweep`` / ``bench run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import CLIError
from bench.train.config import TrainConfig, split_config
from bench.train.session import LocalSession


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one config in this process (no Ray), for debugging",
                       description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("config", nargs="?", type=Path, help="YAML/JSON file of TrainConfig fields")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field (value parsed as YAML); repeatable")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed if present)")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints already in --out")
    p.set_defaults(func=_handler)


def load_config(path: Path | None, sets: list[str]) -> dict[str, Any]:
    """The config dict of a file plus ``KEY=VALUE`` overrides (CLIError on a malformed one)."""
    import yaml

    config: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise CLIError(f"{path}: cannot read the config: {e}") from None
        if not isinstance(loaded, dict):
            raise CLIError(f"{path}: expected a mapping of TrainConfig fields, got {type(loaded).__name__}")
        config.update(loaded)
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CLIError(f"--set {item!r}: expected KEY=VALUE")
        config[key.strip()] = yaml.safe_load(value) if value else None
    return config


def _handler(args: argparse.Namespace) -> int:
    raw = load_config(args.config, args.sets)
    try:
        cfg = TrainConfig.from_dict(split_config(raw)[0])
    except ValueError as e:
        raise CLIError(str(e)) from None
    if cfg.num_workers > 1:
        raise CLIError(f"TrainConfig.num_workers={cfg.num_workers}: `bench train` runs one process; "
                       "use `bench run` / `bench sweep` for DDP")

    from bench.train.loop import run_training  # heavy: torch

    class PrintingSession(LocalSession):
        def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            super().report(metrics, checkpoint_dir)
            print(f"epoch {metrics['epoch']}/{cfg.epochs}: train_loss {metrics['train_loss']:.4f} "
                  f"train_top1 {metrics['train_top1']:.4f} val_loss {metrics['val_loss']:.4f} "
                  f"val_top1 {metrics['val_top1']:.4f} val_top5 {metrics['val_top5']:.4f} "
                  f"lr {metrics['lr']:.3g} ({metrics['epoch_time_s']:.1f} s, "
                  f"{metrics['train_clips_per_s']:.1f} clips/s)", flush=True)

    session = PrintingSession(args.out, resume=not args.fresh)
    resumed = session.latest_checkpoint() if session.resume else None
    if resumed is not None:
        print(f"resuming from {resumed}", file=sys.stderr)
    run_training(cfg, session)
    last = session.latest_checkpoint()
    print(f"checkpoints: {args.out} (latest: {last.name if last else 'none'})")
    return 0
