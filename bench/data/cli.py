"""``bench data ...``: each sub-command lives in the module that does the work."""

from __future__ import annotations

import argparse

from bench.data import check, flow, prepare, synth


def add_cli(sub: argparse._SubParsersAction) -> None:
    for module in (synth, flow, prepare, check):
        module.add_cli(sub)
