"""The recurrent-cell registry: every cell is created, listed and tested by name.

As timm's ``_block_registry`` and torchvision's ``register_model``: one dict, a decorator that
refuses duplicate names, and a factory with one keyword-only signature for every cell. The
built-in cells (``convlstm.py``, ``variants.py``) register when those modules are imported,
which every lookup below makes sure of first.

Controls (``controls.py``) live in the same registry, so that the network, the sweep and the
trainer build them by name like any cell, but they are flagged ``control=True`` and
``list_cells()`` leaves them out: "every cell" means the paper's five (Table 1, the cell tests,
the perf tables), and a control is asked for by name or with ``include_controls=True``. A
control answers a question about the cells (does order matter on this data?), it is not one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

_CELLS: dict[str, type[nn.Module]] = {}
# The second recurrent layer of each network: attention cells (b, c, d) are followed by (a).
_SECOND_LAYER: dict[str, str] = {}
# Names registered with control=True (a subset of _CELLS).
_CONTROLS: set[str] = set()
# Registered in this order: convlstm, then a, b, c, d, then the controls.
_BUILTIN_MODULES = ("bench.models.convlstm", "bench.models.variants", "bench.models.controls")

T = TypeVar("T", bound="type[nn.Module]")


def register_cell(name: str, *, second_layer: str | None = None, control: bool = False) -> Callable[[T], T]:
    """Register a cell class under ``name``; ``second_layer`` names the cell stacked above it
    (itself when omitted); ``control=True`` registers a control (see the module docstring)."""

    def wrap(cls: T) -> T:
        if name in _CELLS:
            raise ValueError(f"a recurrent cell named {name!r} is already registered ({_CELLS[name].__name__})")
        _CELLS[name] = cls
        _SECOND_LAYER[name] = second_layer or name
        if control:
            _CONTROLS.add(name)
        cls.cell_name = name
        return cls

    return wrap


def load_builtin_cells() -> None:
    """Import the modules of the built-in cells (registering them), if not done yet."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_cells(*, include_controls: bool = False) -> list[str]:
    """Registered cell names, in registration order (convlstm, a, b, c, d); with
    ``include_controls``, the controls after them (everything ``create_cell`` builds)."""
    load_builtin_cells()
    return [n for n in _CELLS if include_controls or n not in _CONTROLS]


def list_controls() -> list[str]:
    """The registered controls, in registration order ("mean")."""
    load_builtin_cells()
    return [n for n in _CELLS if n in _CONTROLS]


def is_control(name: str) -> bool:
    """Whether ``name`` is a registered control rather than a cell (unknown names raise)."""
    get_cell_class(name)
    return name in _CONTROLS


def get_cell_class(name: str) -> type[nn.Module]:
    load_builtin_cells()
    try:
        return _CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r} (known: {', '.join(_CELLS)})") from None


def second_layer_cell(name: str) -> str:
    """The cell of the second recurrent layer in a network whose first layer is ``name``."""
    get_cell_class(name)
    return _SECOND_LAYER[name]


def create_cell(name: str, *, in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
    """Build a registered cell; every cell takes exactly these arguments."""
    return get_cell_class(name)(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
