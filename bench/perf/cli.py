"""``bench perf ...``: each benchmark lives in its own module with an ``add_cli``."""

from __future__ import annotations

import argparse

from bench.perf import cells, data, network, sweep


def add_cli(sub: argparse._SubParsersAction) -> None:
    for module in (data, cells, network, sweep):
        module.add_cli(sub)
