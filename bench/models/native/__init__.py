"""The C++ CPU kernels of the recurrent layers and everything that decides when they run.

- ``_impls.py``: `RECURRENT_IMPLS`, the values of ``NetConfig.recurrent_impl`` (no torch import);
- ``csrc/variant_a.cpp``: the kernels (variant (a)'s fused steps, the depthwise convolution);
- ``loader.py``: builds them with the system compiler, caches and loads them (ctypes);
- ``functions.py``: the autograd functions over them (`VariantALayerFunction`,
  `DepthwiseConvFunction`), each with its ATen path;
- ``strategy.py``: `recurrence(recurrent_impl)`, the strategy a recurrent layer is built with,
  and `implementation(net)`, which names what a network runs.

Importing this package (or ``RECURRENT_IMPLS`` from it) loads neither torch nor the kernels:
every other name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bench.models.native._impls import (
    RECURRENT_IMPLS,
    RESOLVED_IMPLS,
    check_recurrent_impl,
)

_LAZY = {
    "NativeKernels": "loader", "build": "loader", "cache_dir": "loader", "clear_cache": "loader",
    "disabled": "loader", "load": "loader", "require": "loader",
    "DepthwiseConvFunction": "functions", "VariantALayerFunction": "functions", "fast_tanh": "functions",
    "variant_a_inference": "functions",
    "FUSED_LAYERS": "strategy", "DepthwiseConv2d": "strategy", "Recurrence": "strategy",
    "implementation": "strategy", "recurrence": "strategy", "visible_to_dispatch": "strategy",
}

__all__ = [
    "FUSED_LAYERS",
    "RECURRENT_IMPLS",
    "RESOLVED_IMPLS",
    "DepthwiseConv2d",
    "DepthwiseConvFunction",
    "NativeKernels",
    "Recurrence",
    "VariantALayerFunction",
    "build",
    "cache_dir",
    "check_recurrent_impl",
    "clear_cache",
    "disabled",
    "fast_tanh",
    "implementation",
    "load",
    "recurrence",
    "require",
    "variant_a_inference",
    "visible_to_dispatch",
]

if TYPE_CHECKING:
    from bench.models.native.functions import (
        DepthwiseConvFunction,
        VariantALayerFunction,
        fast_tanh,
        variant_a_inference,
    )
    from bench.models.native.loader import (
        NativeKernels,
        build,
        cache_dir,
        clear_cache,
        disabled,
        load,
        require,
    )
    from bench.models.native.strategy import (
        FUSED_LAYERS,
        DepthwiseConv2d,
        Recurrence,
        implementation,
        recurrence,
        visible_to_dispatch,
    )


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
