"""``bench data ...``: each sub-command lives in the module that does the work."""

from __future__ import annotations

import argparse
import importlib

_COMMANDS = ["bench.data.synth", "bench.data.flow", "bench.data.prepare", "bench.data.check"]


def add_cli(sub: argparse._SubParsersAction) -> None:
    for module in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_cli(sub)
