"""The ``bench`` command.

Each command group lives beside the code it drives and adds its parsers through an
``add_cli(subparsers)`` function, imported here by name. Those modules keep heavy imports
(torch, ray, mlflow, DALI) inside their handlers, so ``bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from bench import model_cli
from bench.data import cli as data_cli
from bench.errors import USER_ERRORS
from bench.perf import cli as perf_cli
from bench.report import cli as report_cli
from bench.sweep import cli as sweep_cli
from bench.sweep import graded, winners
from bench.train import cli as train_cli

# (command, help, add_cli of the group's sub-commands)
_GROUPS = [
    ("model", "the network: complexity accounting", model_cli.add_cli),
    ("data", "datasets: synthesise, prepare, check, compute flow", data_cli.add_cli),
    ("perf", "benchmarks that write a table", perf_cli.add_cli),
]
# Top-level commands: bench sweep / run / sync, bench graded, bench winners, bench report / ui / viz, bench train.
_TOP_LEVEL = [sweep_cli.add_cli, graded.add_cli, winners.add_cli, report_cli.add_cli, train_cli.add_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, add_cli in _GROUPS:
        group = sub.add_parser(name, help=help_)
        group.set_defaults(func=lambda args, g=group: g.print_help() or 2)
        add_cli(group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND"))
    for add_cli in _TOP_LEVEL:
        add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv                     # the command line as given (benchmarks record it)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except USER_ERRORS as e:             # bad input: the message names the file, line or field
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
