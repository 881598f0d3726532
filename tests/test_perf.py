"""bench perf cells / network / sweep: what the tables report is measured, not made up
(tiny shapes; the figures themselves are in docs/BENCHMARKS.md, never asserted as times)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bench.cli import main
from bench.models import count_macs, create_cell
from bench.models.recurrent import ConvRecurrentLayer
from bench.perf import cells as perf_cells
from bench.perf import network as perf_net

#: What variant (a) runs by default: its fused layer with the C++ kernels, unless they are off.
KERNELS = os.environ.get("GESTUREBENCH_NATIVE") != "0"
DEFAULT_A = "native" if KERNELS else "aten"
needs_kernels = pytest.mark.skipif(not KERNELS, reason="GESTUREBENCH_NATIVE=0: the C++ kernels are turned off")


# ------------------------------------------------------------------------------------ cells
def test_convlstm_computes_what_the_reference_single_convolution_cell_computes():
    """The reference is the speed baseline; ours splits its kernel into W_x* and W_h*."""
    torch.manual_seed(0)
    c_in, c_out = 5, 7
    ref = perf_cells.reference_convlstm_cell(c_in, c_out)
    ours = create_cell("convlstm", in_channels=c_in, out_channels=c_out)
    with torch.no_grad():
        ours.conv_x.weight.copy_(ref.conv.weight[:, :c_in])
        ours.conv_h.weight.copy_(ref.conv.weight[:, c_in:])
        ours.conv_x.bias.copy_(ref.conv.bias)
    # the reference orders its gates i, f, o, g like ours
    x, h, c = torch.randn(2, c_in, 6, 6), torch.randn(2, c_out, 6, 6), torch.randn(2, c_out, 6, 6)
    h_ref, (_, c_ref) = ref(x, (h, c))
    h_out, (_, c_out_) = ours(x, (h, c))
    torch.testing.assert_close(h_out, h_ref)
    torch.testing.assert_close(c_out_, c_ref)
    assert count_macs(ours, x, (h, c)) == count_macs(ref, x, (h, c))


def test_convlstm_initialises_like_the_single_convolution_form():
    """Both halves drawn with the fused kernel's fan-in, (C_in + C_out) * K * K."""
    torch.manual_seed(0)
    cell = create_cell("convlstm", in_channels=64, out_channels=64)
    bound = 1 / (128 * 9) ** 0.5            # kaiming_uniform(a=sqrt(5)) of nn.Conv2d
    for w in (cell.conv_x.weight.detach(), cell.conv_h.weight.detach()):
        assert w.abs().max() <= bound
        assert w.std() == pytest.approx(bound / 3 ** 0.5, rel=0.02)   # uniform(-b, b)
    assert cell.conv_x.bias[64:128].eq(1).all() and cell.conv_x.bias[:64].eq(0).all()


def test_cells_rows_put_time_ratios_beside_mac_ratios():
    rows = perf_cells.measure(batch=1, steps=2, channels=8, size=6, repeats=1, warmup=0, cells=["a"])
    by = {r["cell"]: r for r in rows}
    assert list(by) == ["reference-convlstm", "convlstm", "a"]
    assert by["reference-convlstm"]["macs"] == by["convlstm"]["macs"]
    with torch.device("meta"):
        layer = ConvRecurrentLayer("a", in_channels=8, out_channels=8)
        assert by["a"]["macs"] == count_macs(layer, torch.empty(1, 8, 2, 6, 6))
    a = by["a"]
    assert a["mac_ratio_vs_convlstm"] == pytest.approx(by["convlstm"]["macs"] / a["macs"])
    assert a["fwd_bwd_speedup_vs_convlstm"] == pytest.approx(by["convlstm"]["fwd_bwd_ms"] / a["fwd_bwd_ms"])
    assert a["speedup_over_mac_ratio"] == pytest.approx(
        a["fwd_bwd_speedup_vs_convlstm"] / a["mac_ratio_vs_convlstm"])
    assert all(r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in rows)


@needs_kernels
def test_cells_step_loop_rows_time_the_same_layer_built_with_the_other_impls():
    rows = perf_cells.measure(batch=1, steps=2, channels=8, size=6, repeats=1, warmup=0, cells=["a", "b"],
                              step_loop=True, input_layout="contiguous")
    by = {r["cell"]: r["impl"] for r in rows}
    # (a) has a fused layer and C++ kernels: three ways to run it; (b) has C++ depthwise
    # convolutions and no fused layer, so its "aten" layer is its "steploop" one; ConvLSTM runs
    # the step loop whatever the setting
    assert by == {"reference-convlstm": "steploop", "convlstm": "steploop", "a": "native", "b": "native",
                  "a+steploop": "steploop", "a+aten": "aten", "b+steploop": "steploop"}
    macs = {r["cell"]: r["macs"] for r in rows}
    assert macs["a+steploop"] == macs["a"] == macs["a+aten"] and macs["b+steploop"] == macs["b"]


def test_cells_cli_refuses_an_unknown_cell(tmp_path, capsys):
    assert main(["perf", "cells", "--cells", "a,nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cells_cli_writes_markdown_and_json(tmp_path, capsys):
    rc = main(["perf", "cells", "--cells", "d", "--channels", "4", "--size", "5", "--steps", "2",
               "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "cells.json").read_text())
    d = "native" if KERNELS else "steploop"      # a (d) layer alone: no fused layer
    assert [(r["cell"], r["impl"]) for r in doc["rows"]] == [
        ("reference-convlstm", "steploop"), ("convlstm", "steploop"), ("d", d)]
    assert doc["command"].startswith("bench perf cells") and "--cells d" in doc["command"]
    md = (tmp_path / "cells.md").read_text()
    assert "input channels_last_3d" in md
    assert "| cell | impl |" in md and f"| d | {d} |" in md and "speedup_over_mac_ratio" in md


# ------------------------------------------------------------------------------------ network
def test_peak_step_bytes_sees_the_largest_live_allocation():
    def step():
        a = torch.ones(1 << 20)              # 4 MiB
        b = torch.ones(1 << 20)              # 8 MiB live at once
        del a, b
        c = torch.ones(1 << 19)              # 2 MiB
        del c

    peak = perf_net.peak_step_bytes(step, device="cpu")
    assert 8 * 2**20 <= peak < 9 * 2**20


def test_peak_step_bytes_does_not_count_what_an_earlier_measured_step_kept():
    """The profiler's running total outlives its session: memory an earlier measured step
    allocated and kept (an earlier network's gradients) is not this step's."""
    kept = []

    def keep():
        kept.append(torch.ones(3 << 20))     # 12 MiB, alive after the step

    def step():
        a = torch.ones(1 << 20)              # 4 MiB
        del a

    assert 12 * 2**20 <= perf_net.peak_step_bytes(keep, device="cpu") < 13 * 2**20
    assert 4 * 2**20 <= perf_net.peak_step_bytes(step, device="cpu") < 5 * 2**20


def test_network_rows_small_preset():
    rows = perf_net.measure(presets=["small"], cells=["convlstm", "a"], batch=1, classes=5, repeats=1,
                            warmup=0)
    assert [(r["preset"], r["cell"], r["impl"], r["batch"], r["clip"]) for r in rows] == [
        ("small", "convlstm", "steploop", 1, "8x56"), ("small", "a", DEFAULT_A, 1, "8x56")]
    for r in rows:
        assert r["steps_per_s"] == pytest.approx(1e3 / r["step_ms"])
        assert r["train_clips_per_s"] == pytest.approx(r["batch"] * r["steps_per_s"])
        assert r["infer_clips_per_s"] > 0 and r["gmacs_per_clip"] > 0
        assert r["peak_step_mib"] > 1 and r["model_state_mib"] > 0
    assert rows[0]["step_vs_convlstm"] == 1.0
    # ConvLSTM's 4.7M recurrent weights (x2 with momentum) outweigh (a)'s
    assert rows[0]["model_state_mib"] > rows[1]["model_state_mib"]


@needs_kernels
def test_network_step_loop_rows_train_networks_built_with_the_other_impls():
    rows = perf_net.measure(presets=["small"], cells=["a", "d"], batch=1, classes=5, repeats=1, warmup=0,
                            memory=False, step_loop=True)
    by = {r["cell"]: r for r in rows}
    # (d)'s second layer is (a): both networks have a fused layer to compare against
    assert {k: r["impl"] for k, r in by.items()} == {
        "a": "native", "a+steploop": "steploop", "a+aten": "aten",
        "d": "native", "d+steploop": "steploop", "d+aten": "aten"}
    assert by["a+steploop"]["gmacs_per_clip"] == by["a"]["gmacs_per_clip"] == by["a+aten"]["gmacs_per_clip"]
    assert by["a+steploop"]["model_state_mib"] == by["a"]["model_state_mib"] == by["a+aten"]["model_state_mib"]


def test_peak_memory_grows_with_the_batch():
    def peak(batch):
        (row,) = perf_net.measure(presets=["small"], cells=["a"], batch=batch, classes=5, repeats=1, warmup=0)
        return row["peak_step_mib"]

    four, six, eight = peak(4), peak(6), peak(8)
    # activations grow linearly with the batch (weight gradients and workspaces do not)
    assert four < six < eight
    assert eight - six == pytest.approx(six - four, rel=0.2)


def test_data_vs_step_reports_a_loader_batch_beside_the_step():
    rows = [{"preset": "small", "cell": "a", "step_ms": 100.0}, {"preset": "small", "cell": "b", "step_ms": 50.0}]
    out = perf_net.data_vs_step(rows, preset="small", batch=2, clips=2, repeats=1)
    assert [r["codec"] for r in out] == ["mjpeg", "mpeg4"]
    for r in out:
        assert r["fastest_step_ms"] == 50.0 and r["clip"] == "8x56"
        assert r["backend"] in ("pyav", "opencv", "dali-cpu")
        assert r["data_over_step"] == pytest.approx(r["batch_ms"] / 50.0)
        assert r["keeps_up"] == ("yes" if r["data_over_step"] < 1 else "no")


@pytest.mark.parametrize("argv, message", [
    (["--presets", "huge"], "--presets"),
    (["--cells", "e"], "--cells"),
    (["--repeats", "0"], "--repeats"),
])
def test_network_cli_refuses_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["perf", "network", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_network_cli_writes_both_tables(tmp_path, capsys):
    rc = main(["perf", "network", "--presets", "small", "--cells", "a", "--batch", "1", "--classes", "3",
               "--repeats", "1", "--warmup", "0", "--data", "on", "--data-clips", "2", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "network.json").read_text())
    assert [r["cell"] for r in doc["rows"]] == ["a"]
    (data,) = doc["sections"].values()
    assert len(data) == 2 and all(r["batch"] == 1 for r in data)
    md = (tmp_path / "network.md").read_text()
    assert "Data pipeline against the training step" in md and "| small | a |" in md


# ------------------------------------------------------------------------------------ sweep
@pytest.mark.ray
def test_sweep_overhead_rows_and_the_mlflow_runs_they_made(tmp_path):
    import mlflow

    from bench.perf import sweep as perf_sweep

    rows = perf_sweep.measure(configs=["reuse-actors", "reuse-actors+mlflow"], trials=2, concurrency=1,
                              epochs=2, work=0.0, repeats=1, storage=tmp_path)
    assert [r["config"] for r in rows] == ["reuse-actors", "reuse-actors+mlflow"]
    for r in rows:
        assert r["wall_s"] > 0 and r["ideal_s"] == 0
        assert r["overhead_per_trial_s"] == pytest.approx(r["wall_s"] * 1 / 2)
    assert rows[0]["vs_reuse_actors"] == 1.0
    # the +mlflow configuration really tracked: one run per trial (warm-up sweep: 1 trial)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench-perf-sweep")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 + 2
    assert all(r.data.metrics.get("val_top1") == 0.5 for r in runs)


def test_sweep_cli_refuses_bad_arguments(tmp_path, capsys):
    assert main(["perf", "sweep", "--configs", "reuse-actors,fast", "--out", str(tmp_path)]) == 2
    assert "fast" in capsys.readouterr().err
    assert main(["perf", "sweep", "--work", "-1", "--out", str(tmp_path)]) == 2
    assert "--work" in capsys.readouterr().err


@needs_kernels
def test_impl_rows_build_the_other_impls_with_the_same_weights():
    from bench.models.native import implementation
    from bench.models.net import small_network
    from bench.perf._common import impl_rows

    torch.manual_seed(0)
    net = small_network(cell="c", num_classes=5)
    rows = impl_rows(net, lambda impl: small_network(cell="c", num_classes=5, recurrent_impl=impl))
    assert {k: implementation(m) for k, m in rows.items()} == {"steploop": "steploop", "aten": "aten"}
    assert implementation(net) == "native"                             # the original untouched
    for other in rows.values():
        for (n, p), (_, q) in zip(net.named_parameters(), other.named_parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), n
    convlstm = small_network(cell="convlstm", num_classes=5)
    assert impl_rows(convlstm, lambda impl: small_network(cell="convlstm", num_classes=5,
                                                          recurrent_impl=impl)) == {}


@pytest.mark.ray
@pytest.mark.slow
def test_perf_search_table(tmp_path, capsys):
    """`bench perf search` runs both modes on the same studies and writes their utilisation."""
    assert main(["perf", "search", "--slots", "2", "--cells", "1", "--seeds", "2", "--samples", "2",
                 "--epochs", "2", "--work", "0.05", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "search.json").read_text())["rows"]
    assert [(r["slots"], r["mode"], r["studies"], r["trials"]) for r in rows] == \
        [(2, "sequential", 2, 4), (2, "concurrent", 2, 4)]
    for r in rows:
        assert 0 < r["utilisation"] <= 1 and r["trial_s"] > 0
        assert r["utilisation"] == pytest.approx(r["trial_s"] / (2 * r["wall_s"]))
    assert "| 2 | 2 | 4 | concurrent |" in (tmp_path / "search.md").read_text()
