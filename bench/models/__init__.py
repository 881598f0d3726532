"""Plain nn.Module code for the network: Res3D, the recurrent cells, the MobileNet top, and
complexity counting. Nothing here imports ray, mlflow or DALI."""

from bench.models import convlstm as _convlstm  # noqa: F401  (registers "convlstm")
from bench.models import variants as _variants  # noqa: F401  (registers "a".."d")
from bench.models._registry import (
    create_cell,
    get_cell_class,
    list_cells,
    register_cell,
    second_layer_cell,
)
from bench.models.complexity import count_macs, count_params
from bench.models.net import (
    PRESETS,
    GestureNet,
    NetConfig,
    build_network,
    paper_network,
    small_network,
)

__all__ = [
    "GestureNet", "NetConfig", "PRESETS", "build_network", "paper_network", "small_network",
    "create_cell", "get_cell_class", "list_cells", "register_cell", "second_layer_cell",
    "count_macs", "count_params",
]
