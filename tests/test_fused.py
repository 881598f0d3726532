"""Variant (a)'s fused layer (hand-written backward) against the per-step autograd loop it
replaces in training: same outputs, same gradients for the input and every weight, with the
C++ steps (``recurrent_impl="native"``) and on ATen ops (``"aten"``)."""

from __future__ import annotations

import pytest
import torch

from bench.models import get_cell_class, list_cells
from bench.models.native import (
    FUSED_LAYERS,
    VariantALayerFunction,
    fast_tanh,
    implementation,
    loader,
)
from bench.models.net import small_network
from bench.models.recurrent import ConvRecurrentLayer

IMPLS = ["native", "aten"]               # the fused layer's two paths: C++ steps, ATen steps



def _perturbed_layer(c_in: int, c_out: int, k: int, dtype: torch.dtype, impl: str) -> ConvRecurrentLayer:
    torch.manual_seed(0)
    layer = ConvRecurrentLayer("a", in_channels=c_in, out_channels=c_out, kernel_size=k,
                               recurrent_impl=impl).to(dtype)
    with torch.no_grad():   # away from the constant 1/C gate initialisation, so every term matters
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


def _twin(layer: ConvRecurrentLayer, impl: str) -> ConvRecurrentLayer:
    """The same layer, same weights, built with another ``recurrent_impl``."""
    cell = layer.cell
    other = ConvRecurrentLayer(cell.cell_name, in_channels=cell.in_channels, out_channels=cell.out_channels,
                               kernel_size=cell.kernel_size, recurrent_impl=impl)
    other.to(next(layer.parameters()).dtype).load_state_dict(layer.state_dict())
    return other


def _through_fused(y: torch.Tensor) -> bool:
    """Whether autograd's graph behind ``y`` holds the fused layer's backward node."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "VariantALayerFunctionBackward":
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def _forward_backward(layer, x, grad):
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad)
    return [y.detach(), x.grad] + [p.grad for p in layer.parameters()], y


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("b", "c_in", "c_out", "t", "h", "w", "k", "layout"), [
    (2, 6, 8, 3, 5, 7, 3, torch.contiguous_format),
    (1, 8, 8, 4, 6, 6, 3, torch.channels_last_3d),
    (3, 4, 5, 2, 4, 3, 5, torch.channels_last_3d),
    (1, 3, 4, 1, 3, 3, 3, torch.contiguous_format),       # a single step: no recurrence at all
])
def test_fused_layer_matches_the_step_loop_values_and_gradients(b, c_in, c_out, t, h, w, k, layout, impl,
                                                               monkeypatch, request):
    native = impl == "native"
    if native:
        request.getfixturevalue("kernels")
    calls = []
    for name in ("fwd_step", "bwd_step", "depthwise", "depthwise_wgrad"):
        orig = getattr(loader.NativeKernels, name)
        monkeypatch.setattr(loader.NativeKernels, name,
                            lambda self, *a, _o=orig, _n=name, **kw: (calls.append(_n), _o(self, *a, **kw))[1])
    layer = _perturbed_layer(c_in, c_out, k, torch.float64, impl)
    assert implementation(layer) == impl
    x = torch.randn(b, c_in, t, h, w, dtype=torch.float64).contiguous(memory_format=layout)
    grad = torch.randn(b, c_out, t, h, w, dtype=torch.float64)
    fused, y = _forward_backward(layer, x, grad)
    # the C++ steps ran every step forward and backward, and the depthwise convolutions: the
    # hidden one past step 0 and the input's (all steps in one call)
    assert calls.count("fwd_step") == calls.count("bwd_step") == (t if native else 0)
    assert calls.count("depthwise_wgrad") == (t if native else 0)
    assert _through_fused(y)
    calls.clear()
    loop_layer = _twin(layer, "steploop")
    loop, y_loop = _forward_backward(loop_layer, x, grad)
    assert not _through_fused(y_loop) and not calls
    assert implementation(loop_layer) == "steploop"
    names = ["output", "input"] + [n for n, _ in layer.named_parameters()]
    for name, a, ref in zip(names, fused, loop):
        assert ref is not None and a is not None, name
        torch.testing.assert_close(a, ref, rtol=1e-10, atol=1e-12, msg=f"{name} differs")


@pytest.mark.parametrize("impl", IMPLS)
def test_fused_layer_in_float32_stays_within_float32_rounding_of_the_loop(impl, request):
    if impl == "native":
        request.getfixturevalue("kernels")
    layer = _perturbed_layer(16, 16, 3, torch.float32, impl)
    x = torch.randn(2, 16, 4, 7, 7)
    grad = torch.randn(2, 16, 4, 7, 7)
    fused, _ = _forward_backward(layer, x, grad)
    loop, _ = _forward_backward(_twin(layer, "steploop"), x, grad)
    for a, ref in zip(fused, loop):
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_fused_function_passes_gradcheck(impl, request):
    kernels = request.getfixturevalue("kernels") if impl == "native" else None
    torch.manual_seed(1)
    t, b, h, w, c = 3, 2, 4, 3, 3
    args = [torch.randn(t, b, h, w, c), torch.randn(t, b, 3 * c), torch.randn(c, 1, 3, 3) * 0.5,
            torch.randn(c, c) * 0.5, torch.randn(3 * c, c) * 0.5]
    args = [a.double().requires_grad_(True) for a in args]
    assert torch.autograd.gradcheck(lambda *xs: VariantALayerFunction.apply(*xs, kernels), args)


@pytest.mark.parametrize("cell", list_cells())
def test_training_on_cpu_takes_the_fused_layer_of_the_cells_that_have_one(cell):
    x = torch.randn(1, 4, 2, 5, 5, requires_grad=True)
    fused = get_cell_class(cell) in FUSED_LAYERS          # variant (a)
    assert _through_fused(ConvRecurrentLayer(cell, in_channels=4, out_channels=4)(x)) == fused
    assert not _through_fused(ConvRecurrentLayer(cell, in_channels=4, out_channels=4, recurrent_impl="steploop")(x))


@pytest.mark.parametrize("impl", IMPLS)
def test_inference_runs_the_fused_forward_with_the_cpp_steps_else_the_loop(impl, monkeypatch, request):
    native = impl == "native"
    if native:
        request.getfixturevalue("kernels")
    calls = []
    orig = loader.NativeKernels.fwd_step
    monkeypatch.setattr(loader.NativeKernels, "fwd_step",
                        lambda self, *a, **kw: (calls.append(1), orig(self, *a, **kw))[1])
    layer = _perturbed_layer(5, 6, 3, torch.float64, impl)
    x = torch.randn(2, 5, 4, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        assert y.grad_fn is None and len(calls) == (4 if native else 0)
        ref = _twin(layer, "steploop")(x)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["a", "c"])
def test_network_gradients_are_the_same_with_and_without_the_fused_layer(cell):
    """(a) is both layers of the (a) network and the second layer of (b), (c), (d)."""
    torch.manual_seed(0)
    net = small_network(cell=cell, num_classes=5).double()
    loop = small_network(cell=cell, num_classes=5, recurrent_impl="steploop").double()
    loop.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64)
    assert sum(type(m.cell) in FUSED_LAYERS for m in net.modules()
               if isinstance(m, ConvRecurrentLayer)) == (2 if cell == "a" else 1)
    target = torch.tensor([1, 3])
    grads = []
    for model, fused in ((net, True), (loop, False)):
        logits = model(x)
        assert _through_fused(logits) == fused
        torch.nn.functional.cross_entropy(logits, target).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-9, atol=1e-12, msg=n)


def test_fast_tanh_is_within_float32_rounding_of_tanh():
    x = torch.cat([torch.linspace(-30, 30, 100_001), torch.tensor([0.0, 1e-30, -1e-30, 88.0, -88.0])])
    out = torch.empty_like(x)
    got = fast_tanh(x, out=out)
    assert got is out
    torch.testing.assert_close(got, torch.tanh(x), rtol=0, atol=3e-7)
    assert got.abs().max() <= 1.0


def test_bfloat16_layers_train_and_infer_on_the_aten_path():
    """The kernels take float32/float64; a bfloat16 model keeps working through ATen ops."""
    torch.manual_seed(0)
    layer = ConvRecurrentLayer("a", in_channels=4, out_channels=4).to(torch.bfloat16)
    x = torch.randn(1, 4, 3, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    assert _through_fused(y) and y.dtype == torch.bfloat16
    assert implementation(layer) == "aten"
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad.float()).all()
    with torch.no_grad():
        assert torch.isfinite(layer(x).float()).all()
    x.grad = None
    other = ConvRecurrentLayer("c", in_channels=4, out_channels=4).to(torch.bfloat16)
    other(x).float().sum().backward()              # (c)'s separable convolutions: oneDNN in bf16
    assert torch.isfinite(x.grad.float()).all()
