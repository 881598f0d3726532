"""``bench data ...``: each sub-command lives in the module that does the work."""

from __future__ import annotations

import argparse

_COMMANDS = ["bench.data.synth", "bench.data.flow", "bench.data.prepare", "bench.data.check"]


def add_cli(sub: argparse._SubParsersAction) -> None:
    from bench.cli import add_commands_from

    add_commands_from(sub, _COMMANDS)
