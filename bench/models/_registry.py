"""The recurrent-cell registry: every cell is created, listed and tested by name.

As timm's ``_block_registry`` and torchvision's ``register_model``: one dict, a decorator that
refuses duplicate names, and a factory with one keyword-only signature for every cell.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

_CELLS: dict[str, type[nn.Module]] = {}
# The second recurrent layer of each network: attention cells (b, c, d) are followed by (a).
_SECOND_LAYER: dict[str, str] = {}

T = TypeVar("T", bound=type[nn.Module])


def register_cell(name: str, *, second_layer: str | None = None) -> Callable[[T], T]:
    """Register a cell class under ``name``; ``second_layer`` names the cell stacked above it
    (itself when omitted)."""

    def wrap(cls: T) -> T:
        if name in _CELLS:
            raise ValueError(f"a recurrent cell named {name!r} is already registered ({_CELLS[name].__name__})")
        _CELLS[name] = cls
        _SECOND_LAYER[name] = second_layer or name
        cls.cell_name = name
        return cls

    return wrap


def list_cells() -> list[str]:
    """Registered cell names, in registration order (convlstm, a, b, c, d)."""
    return list(_CELLS)


def get_cell_class(name: str) -> type[nn.Module]:
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
