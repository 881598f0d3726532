"""Plain nn.Module code for the network: Res3D, the recurrent cells, the MobileNet top, complexity
counting, and the C++ CPU kernels of the recurrent layers (``bench.models.native``). Nothing here
imports ray, mlflow or DALI.

The names below are imported on first use, so that ``bench.models.native.RECURRENT_IMPLS`` (and
this package) can be imported without torch; the cell registry fills itself on first lookup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "create_cell": "_registry", "get_cell_class": "_registry", "is_control": "_registry",
    "list_cells": "_registry", "list_controls": "_registry", "register_cell": "_registry",
    "second_layer_cell": "_registry",
    "count_macs": "complexity", "count_params": "complexity",
    "PRESETS": "net", "GestureNet": "net", "NetConfig": "net", "build_network": "net",
    "paper_network": "net", "small_network": "net",
    "RECURRENT_IMPLS": "native._impls",
}

__all__ = [
    "PRESETS",
    "RECURRENT_IMPLS",
    "GestureNet",
    "NetConfig",
    "build_network",
    "count_macs",
    "count_params",
    "create_cell",
    "get_cell_class",
    "is_control",
    "list_cells",
    "list_controls",
    "paper_network",
    "register_cell",
    "second_layer_cell",
    "small_network",
]

if TYPE_CHECKING:
    from bench.models._registry import (
        create_cell,
        get_cell_class,
        is_control,
        list_cells,
        list_controls,
        register_cell,
        second_layer_cell,
    )
    from bench.models.complexity import count_macs, count_params
    from bench.models.native._impls import RECURRENT_IMPLS
    from bench.models.net import (
        PRESETS,
        GestureNet,
        NetConfig,
        build_network,
        paper_network,
        small_network,
    )


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "_registry":
        importlib.import_module(f"{__name__}._registry").load_builtin_cells()
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
