"""``bench perf ...``: each benchmark lives in its own module with an ``add_cli``."""

from __future__ import annotations

import argparse

from bench.perf import cells, data, network, search, sweep


def add_cli(sub: argparse._SubParsersAction) -> None:
    for module in (data, cells, network, sweep, search):
        module.add_cli(sub)
