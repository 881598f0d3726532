"""``bench perf ...``: each benchmark lives in its own module with an ``add_cli``."""

from __future__ import annotations

import argparse
import importlib

_COMMANDS = ["bench.perf.data", "bench.perf.cells", "bench.perf.network", "bench.perf.sweep"]


def add_cli(sub: argparse._SubParsersAction) -> None:
    for module in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_cli(sub)
