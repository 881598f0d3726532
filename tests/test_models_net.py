"""The whole network: shapes, gradients, configuration errors."""

from __future__ import annotations

import os

import pytest
import torch

from bench.models import NetConfig, build_network, list_cells, small_network
from bench.models.complexity import count_params
from bench.models.native import RECURRENT_IMPLS, implementation

CELLS = list_cells()


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {c: small_network(cell=c, num_classes=7).eval() for c in CELLS}


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("frames", [16, 32])
def test_logits_shape_at_16_and_32_frames(nets: dict, name: str, frames: int) -> None:
    cfg = nets[name].cfg
    x = torch.randn(2, 3, frames, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        y = nets[name](x)
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", CELLS)
def test_layer_shapes_follow_spec(nets: dict, name: str) -> None:
    net = nets[name]
    cfg = net.cfg
    x = torch.randn(1, 3, 8, 56, 56)
    with torch.no_grad():
        r = net.res3d(x)
        assert r.shape == (1, cfg.res3d_channels[3], 4, 14, 14)          # T/2, H/4, W/4
        s = net.rnn2(net.rnn1(r))
        assert s.shape == (1, cfg.recurrent_channels, 4, 14, 14)          # spatial size kept
        t = net.top(s)
        assert t.shape[:3] == (1, net.top.out_channels, 4)


@pytest.mark.parametrize("name", CELLS)
def test_attention_cells_are_followed_by_variant_a(nets: dict, name: str) -> None:
    net = nets[name]
    assert net.rnn1.cell.cell_name == name
    assert net.rnn2.cell.cell_name == ("a" if name in ("b", "c", "d") else name)


@pytest.mark.parametrize("name", CELLS)
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    net = small_network(cell=name, num_classes=5).train()
    x = torch.randn(2, 3, 4, 32, 32)
    torch.nn.functional.cross_entropy(net(x), torch.tensor([1, 3])).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


def test_paper_preset_is_the_papers_network() -> None:
    cfg = NetConfig.preset("paper", cell="a", num_classes=249)
    assert cfg.res3d_channels == (64, 64, 128, 256) and cfg.recurrent_channels == 256
    assert [c for c, _ in cfg.mobilenet_blocks] == [256, 256] + [512] * 5 + [1024, 1024]
    assert [s for _, s in cfg.mobilenet_blocks] == [1, 2, 1, 1, 1, 1, 1, 2, 2]
    with torch.device("meta"):
        net = build_network(cfg)
        x = torch.empty(1, 3, 16, 112, 112)
        r = net.res3d(x)
        assert r.shape == (1, 256, 8, 28, 28)
        t = net.top(r)
        assert t.shape == (1, 1024, 8, 4, 4)
        assert net(x).shape == (1, 249)
    assert net.classifier.in_features == 1024
    # the two paper-size recurrent layers of variant (a) hold 2 x 529,920 parameters (with bias)
    assert count_params(net.rnn1) == count_params(net.rnn2) == 529_920


def test_odd_or_missing_time_axis_is_a_clear_error(nets: dict) -> None:
    net = nets["a"]
    with pytest.raises(ValueError, match="T must be even.*T=7"):
        net(torch.randn(1, 3, 7, 56, 56))
    with pytest.raises(ValueError, match=r"expected a clip \(B, 3, T, H, W\), got \(1, 3, 56, 56\)"):
        net(torch.randn(1, 3, 56, 56))
    with pytest.raises(ValueError, match="expected a clip"):
        net(torch.randn(1, 1, 8, 56, 56))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        NetConfig.preset("huge", cell="a")
    with pytest.raises(ValueError, match=r"unknown NetConfig field\(s\) \['colour'\]"):
        NetConfig.preset("small", cell="a", colour=1)
    with pytest.raises(ValueError, match="unknown cell 'z'"):
        NetConfig.preset("small", cell="z")
    with pytest.raises(ValueError, match="frames must be an even number"):
        NetConfig(frames=9)
    with pytest.raises(ValueError, match=r"NetConfig.recurrent_impl='fused': must be one of "
                                         r"auto, native, aten, steploop"):
        NetConfig.preset("small", cell="a", recurrent_impl="fused")


@pytest.mark.parametrize("impl", RECURRENT_IMPLS)
def test_the_network_builds_its_recurrent_layers_with_the_configured_impl(impl: str) -> None:
    if impl == "native" and os.environ.get("GESTUREBENCH_NATIVE") == "0":
        pytest.skip("GESTUREBENCH_NATIVE=0: the C++ kernels are turned off")
    cfg = NetConfig.preset("small", cell="c", num_classes=5, recurrent_impl=impl)
    assert cfg.recurrent_impl == impl and NetConfig().recurrent_impl == "auto"
    net = build_network(cfg)
    assert net.rnn1.recurrence.setting == net.rnn2.recurrence.setting == impl
    # on CPU where the kernels build: (c)'s layer and the (a) layer above it
    expected = {"auto": "native", "native": "native", "aten": "aten", "steploop": "steploop"}[impl]
    if os.environ.get("GESTUREBENCH_NATIVE") == "0" and impl == "auto":
        expected = "aten"
    assert implementation(net) == implementation(cfg) == expected
    assert implementation(cfg, device="cuda") == "steploop"       # the fused layer and the kernels are CPU's
    x = torch.randn(1, 3, 4, 32, 32)
    ref = small_network(cell="c", num_classes=5, recurrent_impl="steploop")
    ref.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)
