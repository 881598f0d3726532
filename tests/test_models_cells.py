"""The recurrent cells, tested from the registry: a new cell is covered the day it is registered."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.models import create_cell, list_cells, register_cell, second_layer_cell
from bench.models.complexity import count_params, formula_params
from bench.models.convlstm import RecurrentCell
from bench.models.native import RECURRENT_IMPLS, RESOLVED_IMPLS, implementation
from bench.models.recurrent import ConvRecurrentLayer

CELLS = list_cells()
B, C_IN, C_OUT, H, W = 2, 5, 6, 7, 9


def _inputs(seed: int = 0, steps: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, C_IN, H, W, generator=g) for _ in range(steps)]


def _random_init(cell: nn.Module, seed: int = 1) -> nn.Module:
    """Break the constant 1/C_out start of the gates, so the tests see every weight at work."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return cell


def test_registry_lists_the_papers_cells_in_order() -> None:
    assert CELLS[:5] == ["convlstm", "a", "b", "c", "d"]
    assert [second_layer_cell(c) for c in CELLS[:5]] == ["convlstm", "a", "a", "a", "a"]


def test_registry_refuses_a_duplicate_name_and_names_unknown_cells() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_cell("a")(type("Dup", (RecurrentCell,), {}))
    with pytest.raises(ValueError, match=r"unknown cell 'e' \(known: convlstm, a, b, c, d"):
        create_cell("e", in_channels=1, out_channels=1)


@pytest.mark.parametrize("name", CELLS)
def test_step_shapes_and_state(name: str) -> None:
    cell = create_cell(name, in_channels=C_IN, out_channels=C_OUT, kernel_size=3)
    x = _inputs()[0]
    h, (h2, c) = cell(x, None)
    assert h.shape == c.shape == (B, C_OUT, H, W)
    assert h is h2
    h3, (_, c3) = cell(x, (h, c))
    assert h3.shape == (B, C_OUT, H, W) and not torch.equal(c3, c)


@pytest.mark.parametrize("name", CELLS)
def test_gradients_reach_every_parameter(name: str) -> None:
    cell = _random_init(create_cell(name, in_channels=C_IN, out_channels=C_OUT, kernel_size=3))
    state = None
    loss = torch.zeros(())
    for x in _inputs(steps=3):   # the hidden-state weights see a non-zero H from step 2 on
        h, state = cell(x, state)
        loss = loss + (h * torch.linspace(-1, 1, W)).sum()
    loss.backward()
    for pname, p in cell.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} got a zero gradient"


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("c_in", "c_out", "k"), [(256, 256, 3), (5, 6, 3), (16, 8, 5), (3, 32, 1)])
def test_parameter_counts_equal_the_papers_formulas(name: str, c_in: int, c_out: int, k: int) -> None:
    if name not in ("convlstm", "a", "b", "c", "d"):
        pytest.skip("the paper gives formulas for its five cells only")
    with torch.device("meta"):
        cell = create_cell(name, in_channels=c_in, out_channels=c_out, kernel_size=k)
    assert count_params(cell, bias=False) == formula_params(name, c_in=c_in, c_out=c_out, k=k)


@pytest.mark.parametrize("name", CELLS)
def test_wrong_input_shape_is_a_clear_error(name: str) -> None:
    cell = create_cell(name, in_channels=C_IN, out_channels=C_OUT)
    with pytest.raises(ValueError, match=rf"expects input \(B, {C_IN}, H, W\), got \(2, 4, 7, 9\)"):
        cell(torch.randn(B, C_IN - 1, H, W))
    with pytest.raises(ValueError, match="expects input"):
        cell(torch.randn(B, C_IN, 1, H, W))


def test_even_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        create_cell("a", in_channels=2, out_channels=2, kernel_size=2)


# --- the equations ------------------------------------------------------------------------

def _sep(x: torch.Tensor, dw: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
    """Depthwise then pointwise convolution with the given weights, no bias."""
    x = F.conv2d(x, dw, padding=dw.shape[-1] // 2, groups=x.shape[1])
    return F.conv2d(x, pw)


def test_convlstm_is_the_sum_of_input_and_hidden_convolutions() -> None:
    """Eqs. (1)-(6), written with separate W_x* and W_h* kernels."""
    cell = _random_init(create_cell("convlstm", in_channels=C_IN, out_channels=C_OUT))
    x, h, c = _inputs()[0], torch.randn(B, C_OUT, H, W), torch.randn(B, C_OUT, H, W)
    w_x, w_h, b = cell.conv_x.weight, cell.conv_h.weight, cell.conv_x.bias
    z = F.conv2d(x, w_x, padding=1) + F.conv2d(h, w_h, padding=1) + b[None, :, None, None]
    i, f, o, g = torch.sigmoid(z[:, :C_OUT]), torch.sigmoid(z[:, C_OUT:2 * C_OUT]), \
        torch.sigmoid(z[:, 2 * C_OUT:3 * C_OUT]), torch.tanh(z[:, 3 * C_OUT:])
    c_ref = f * c + i * g
    h_ref = o * torch.tanh(c_ref)
    h_out, (_, c_out) = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_ref)
    torch.testing.assert_close(h_out, h_ref)


def test_variant_a_follows_eqs_8_to_16() -> None:
    """Gates from W_x GAP(X) + W_h GAP(H) + b; G from separable convs of X and H."""
    cell = _random_init(create_cell("a", in_channels=C_IN, out_channels=C_OUT))
    x, h, c = _inputs()[0], torch.randn(B, C_OUT, H, W), torch.randn(B, C_OUT, H, W)
    g = torch.tanh(_sep(x, cell.cand_x.depthwise.weight, cell.cand_x.pointwise.weight)
                   + _sep(h, cell.cand_h.depthwise.weight, cell.cand_h.pointwise.weight)
                   + cell.cand_x.pointwise.bias[None, :, None, None])
    z = x.mean((2, 3)) @ cell.gate_x.weight.T + h.mean((2, 3)) @ cell.gate_h.weight.T + cell.gate_x.bias
    i, f, o = torch.sigmoid(z)[..., None, None].chunk(3, dim=1)
    c_ref = f * c + i * g
    h_out, (_, c_out) = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_ref)
    torch.testing.assert_close(h_out, o * torch.tanh(c_ref))


def test_variant_a_gates_are_the_same_at_every_spatial_position() -> None:
    cell = _random_init(create_cell("a", in_channels=C_IN, out_channels=C_OUT))
    gates = cell.gates(_inputs()[0], torch.randn(B, C_OUT, H, W))
    for name in "ifo":
        full = getattr(gates, name).expand(B, C_OUT, H, W)
        assert torch.equal(full, full[:, :, :1, :1].expand_as(full)), name
    assert gates.g.std(dim=(2, 3)).min() > 0   # the candidate does vary over space


def test_variant_a_gate_weights_start_at_one_over_c_out() -> None:
    cell = create_cell("a", in_channels=C_IN, out_channels=C_OUT)
    assert torch.all(cell.gate_x.weight == 1.0 / C_OUT) and torch.all(cell.gate_h.weight == 1.0 / C_OUT)


def test_variant_b_attention_is_a_softmax_over_positions_applied_to_the_input() -> None:
    cell = _random_init(create_cell("b", in_channels=C_IN, out_channels=C_OUT))
    x, h = _inputs()[0], torch.randn(B, C_OUT, H, W)
    gates = cell.gates(x, h)
    a = gates.attention
    assert a.shape == (B, 1, H, W)
    assert torch.all(a > 0)
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(B, 1))
    assert a.flatten(1).std(dim=1).min() > 0   # a real map, not uniform
    # the rest of the cell is variant (a) applied to A o X
    a_cell = create_cell("a", in_channels=C_IN, out_channels=C_OUT)
    a_cell.load_state_dict({k: v for k, v in cell.state_dict().items() if not k.startswith("att_")})
    # and the attention map is the softmax of W_z * tanh(W_xa * X + W_ha * H + b_a)
    z = F.conv2d(torch.tanh(_sep(x, cell.att_x.depthwise.weight, cell.att_x.pointwise.weight)
                            + cell.att_x.pointwise.bias[None, :, None, None]
                            + _sep(h, cell.att_h.depthwise.weight, cell.att_h.pointwise.weight)),
                 cell.att_score.weight, padding=1)
    torch.testing.assert_close(a, F.softmax(z.flatten(2), dim=-1).view_as(z))
    ref = a_cell.gates(a * x, h)
    for name in "ifog":
        torch.testing.assert_close(getattr(gates, name), getattr(ref, name))


@pytest.mark.parametrize(("name", "replaced"), [("c", "i"), ("d", "o")])
def test_variants_c_d_replace_one_gate_by_a_channel_attention_map(name: str, replaced: str) -> None:
    cell = _random_init(create_cell(name, in_channels=C_IN, out_channels=C_OUT))
    gates = cell.gates(_inputs()[0], torch.randn(B, C_OUT, H, W))
    m = getattr(gates, replaced)
    assert m.shape == (B, C_OUT, H, W)
    assert torch.all(m > 0) and torch.all(m <= 1)
    torch.testing.assert_close(m.amax(dim=(2, 3)), torch.ones(B, C_OUT))
    assert m.std(dim=(2, 3)).min() > 0
    for other in set("ifo") - {replaced}:   # the others stay fully connected on GAP'd vectors
        assert getattr(gates, other).shape == (B, C_OUT, 1, 1)


@pytest.mark.parametrize("name", CELLS)
def test_a_layer_over_time_equals_stepping_the_cell(name: str) -> None:
    """The layer hoists input-only terms out of the time loop; the result must not change."""
    layer = ConvRecurrentLayer(name, in_channels=C_IN, out_channels=C_OUT)
    _random_init(layer.cell)
    x = torch.randn(B, C_IN, 4, H, W)
    state, ref = None, []
    for t in range(4):
        h, state = layer.cell(x[:, :, t], state)
        ref.append(h)
    torch.testing.assert_close(layer(x), torch.stack(ref, dim=2))


# --- the implementations: one function, whichever runs it ---------------------------------

@pytest.mark.parametrize("impl", RECURRENT_IMPLS)
@pytest.mark.parametrize("name", CELLS)
def test_every_recurrent_impl_agrees_with_the_step_loop(name: str, impl: str) -> None:
    """Same weights, float64: outputs, input gradient and every weight gradient of each
    ``recurrent_impl`` equal the per-step autograd loop's to float rounding, in training and in
    inference."""
    if impl == "native" and os.environ.get("GESTUREBENCH_NATIVE") == "0":
        pytest.skip("GESTUREBENCH_NATIVE=0: the C++ kernels are turned off")
    ref = ConvRecurrentLayer(name, in_channels=C_IN, out_channels=C_OUT, recurrent_impl="steploop").double()
    _random_init(ref)
    layer = ConvRecurrentLayer(name, in_channels=C_IN, out_channels=C_OUT, recurrent_impl=impl).double()
    layer.load_state_dict(ref.state_dict())
    assert implementation(layer) in RESOLVED_IMPLS and implementation(ref) == "steploop"
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, C_IN, 4, H, W, generator=g, dtype=torch.float64)
    grad = torch.randn(B, C_OUT, 4, H, W, generator=g, dtype=torch.float64)
    results = []
    for m in (layer, ref):
        xg = x.clone().requires_grad_(True)
        y = m(xg)
        y.backward(grad)
        with torch.no_grad():
            inferred = m(x)
        results.append([y.detach(), inferred, xg.grad] + [p.grad for p in m.parameters()])
    names = ["output", "inference output", "input gradient"] + [n for n, _ in ref.named_parameters()]
    for what, a, b in zip(names, *results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"{name}, {impl}: {what} differs")


def test_an_unknown_recurrent_impl_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"recurrent_impl='fast': must be one of auto, native, aten, steploop"):
        ConvRecurrentLayer("a", in_channels=2, out_channels=2, recurrent_impl="fast")
