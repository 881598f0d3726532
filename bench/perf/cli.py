"""``bench perf ...``: each benchmark lives in its own module with an ``add_cli``."""

from __future__ import annotations

import argparse

_COMMANDS = ["bench.perf.data", "bench.perf.cells", "bench.perf.network", "bench.perf.sweep"]


def add_cli(sub: argparse._SubParsersAction) -> None:
    from bench.cli import add_commands_from

    add_commands_from(sub, _COMMANDS)
