"""`bench model complexity`: exact parameter counts, the paper's Mult-Adds, measured counts."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from bench.cli import main
from bench.models import create_cell, list_cells, small_network
from bench.models.complexity import count_macs, count_params, network_complexity

TABLE1_PARAMS = {"convlstm": 4_718_592, "a": 528_896, "b": 666_880, "c": 601_344, "d": 601_344}
TABLE1_MACS_M = {"convlstm": 3700, "a": 415, "b": 522, "c": 472, "d": 472}


@pytest.fixture(scope="module")
def report() -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["model", "complexity", "--json"]) == 0
    return json.loads(buf.getvalue())


def test_cells_match_table_1(report: dict) -> None:
    rows = {r["cell"]: r for r in report["cells"]}
    assert list(rows) == list_cells()
    for cell, params in TABLE1_PARAMS.items():
        assert rows[cell]["params_no_bias"] == params
        assert rows[cell]["macs_paper"] == params * 28 * 28
        assert abs(rows[cell]["macs_paper"] / (TABLE1_MACS_M[cell] * 1e6) - 1) < 0.005


def test_measured_macs_are_what_the_module_executes(report: dict) -> None:
    rows = {r["cell"]: r for r in report["cells"]}
    hw, k, c = 28 * 28, 3, 256
    # ConvLSTM: one full K x K conv, so the paper's formula is exact
    assert rows["convlstm"]["macs_measured"] == rows["convlstm"]["macs_paper"]
    # (a): depthwise + pointwise over [X, H] at every position, the FC gates once
    assert rows["a"]["macs_measured"] == k * k * 2 * c * hw + 2 * c * c * hw + 2 * c * 3 * c
    # counted on real tensors (not meta), a small cell gives the same count as its meta twin
    for name in list_cells():
        cell = create_cell(name, in_channels=4, out_channels=6)
        x, h = torch.randn(1, 4, 5, 5), torch.randn(1, 6, 5, 5)
        with torch.device("meta"):
            twin = create_cell(name, in_channels=4, out_channels=6)
        assert count_macs(cell, x, (h, h)) == count_macs(twin, x.to("meta"), (h.to("meta"), h.to("meta")))
    assert rows["a"]["macs_measured"] < rows["c"]["macs_measured"] < rows["convlstm"]["macs_measured"]


def test_cells_rows_agree_with_the_modules(report: dict) -> None:
    for r in report["cells"]:
        with torch.device("meta"):
            m = create_cell(r["cell"], in_channels=256, out_channels=256, kernel_size=3)
        assert r["params"] == count_params(m)
        assert r["params_no_bias"] == count_params(m, bias=False)


def test_network_rows_for_every_cell_at_16_and_32_frames(report: dict) -> None:
    rows = {(r["cell"], r["frames"]): r for r in report["network"]}
    assert set(rows) == {(c, t) for c in list_cells() for t in (16, 32)}
    for cell in list_cells():
        r16, r32 = rows[(cell, 16)], rows[(cell, 32)]
        assert r16["params"] == r32["params"]
        assert 1.99 < r32["macs_measured"] / r16["macs_measured"] < 2.0   # all but the classifier scale with T
    assert rows[("a", 16)]["macs_measured"] < rows[("convlstm", 16)]["macs_measured"]


def test_network_count_on_meta_equals_count_on_real_tensors() -> None:
    torch.manual_seed(0)
    net = small_network(cell="b", num_classes=5).eval()
    real = count_macs(net, torch.randn(1, 3, 4, 32, 32))
    meta = network_complexity("b", frames=4, image_size=32, preset="small", num_classes=5)
    assert meta.macs_measured == real
    assert meta.params == count_params(net)


def test_readable_table_puts_paper_beside_measured(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "complexity", "--frames", "16"]) == 0
    out = capsys.readouterr().out
    assert "| convlstm | 4,718,592 | 4.719M |" in out
    assert "| a | 528,896 | 0.529M |" in out and "3,700.000M" in out
    assert "measured / paper" in out


def test_odd_frames_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "complexity", "--frames", "15"]) == 2
    assert "--frames" in capsys.readouterr().err


def test_data_errors_survive_pickling() -> None:
    import pickle

    from bench.errors import DataError

    e = pickle.loads(pickle.dumps(DataError("lists/train.txt", "expected 3 fields", line=7)))
    assert (str(e), e.path, e.line) == ("lists/train.txt:7: expected 3 fields", "lists/train.txt", 7)
