"""The ``bench`` command.

Each command group lives beside the code it drives and contributes its parsers through an
``add_cli(subparsers)`` function; modules that define one keep heavy imports (torch, ray,
mlflow, DALI) inside their handlers so that ``bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.data.errors import DataError

# (command, help, module defining add_cli) -- a group's module adds its own sub-commands.
_GROUPS: list[tuple[str, str, str]] = [
    ("model", "the network: complexity accounting", "bench.model_cli"),
    ("data", "datasets: synthesise, prepare, check, compute flow", "bench.data.cli"),
    ("perf", "benchmarks that write a table", "bench.perf.cli"),
]
# Top-level commands contributed by a module (the module's add_cli adds them to the root).
_TOP_LEVEL: list[str] = [
    "bench.sweep.cli",    # bench sweep / run / sync
    "bench.report.cli",   # bench report / ui / viz
    "bench.train.cli",    # bench train (one trial, no Ray: for debugging)
]


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def add_commands_from(sub: argparse._SubParsersAction, modules: list[str]) -> None:
    """Let each module add its sub-commands; a module not (yet) in the tree is left out."""
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_cli(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, module in _GROUPS:
        group = sub.add_parser(name, help=help_)
        group.set_defaults(func=lambda args, g=group: g.print_help() or 2)
        add_commands_from(group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND"), [module])
    add_commands_from(sub, _TOP_LEVEL)
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
    except CLIError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:  # bad input data: the message names the file and line
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
