"""The C++ kernels of the recurrent layers (bench/models/native): their build and cache, the
switch that chooses them (``recurrent_impl``, ``GESTUREBENCH_NATIVE=0``), what happens without
them, and each kernel against the ATen op it replaces."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from bench.models import native
from bench.models.native import implementation, loader
from bench.models.recurrent import ConvRecurrentLayer


@pytest.fixture
def no_compiler(monkeypatch):
    """Builds fail as they do where no C++ compiler is installed (the outcome is not cached past
    the test)."""
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler (c++, g++ or clang++ on PATH, or $CXX)")
    monkeypatch.setattr(loader, "build", broken)
    monkeypatch.delenv("GESTUREBENCH_NATIVE", raising=False)
    loader.clear_cache()
    yield
    loader.clear_cache()


def test_build_is_cached_by_source_and_compiler(tmp_path):
    first = loader.build(directory=tmp_path)
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert loader.build(directory=tmp_path) == first             # found, not rebuilt
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]    # no temporary left behind


def test_a_failing_compiler_is_named_in_the_error(tmp_path):
    fake = tmp_path / "fake-c++"
    fake.write_text("#!/bin/sh\necho 'fake-c++: error: no such target' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)fake-c\+\+ failed on .*variant_a\.cpp.*no such target"):
        loader.build(compiler=str(fake), directory=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())                 # nothing half-written


def test_load_falls_back_with_a_warning_when_the_build_fails(no_compiler, monkeypatch):
    with pytest.warns(RuntimeWarning, match="using ATen ops: no C\\+\\+ compiler"):
        assert native.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # once a process
        assert native.load() is None
    with pytest.raises(RuntimeError, match="did not build: no C\\+\\+ compiler"):
        native.require()
    monkeypatch.setenv("GESTUREBENCH_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # turned off: no warning
        assert native.load() is None


def test_native_refuses_to_build_without_the_kernels_and_says_why(no_compiler, monkeypatch):
    with pytest.raises(RuntimeError, match="did not build: no C\\+\\+ compiler"):
        ConvRecurrentLayer("a", in_channels=4, out_channels=4, recurrent_impl="native")
    layer = ConvRecurrentLayer("a", in_channels=4, out_channels=4, recurrent_impl="auto")
    with pytest.warns(RuntimeWarning, match="using ATen ops"):    # "auto" falls back instead
        assert implementation(layer) == "aten"
    monkeypatch.setenv("GESTUREBENCH_NATIVE", "0")
    with pytest.raises(RuntimeError, match="GESTUREBENCH_NATIVE=0"):
        ConvRecurrentLayer("b", in_channels=4, out_channels=4, recurrent_impl="native")


def test_gesturebench_native_0_makes_auto_run_the_fused_layer_on_aten_ops(monkeypatch):
    """The environment override: "auto" resolves to ATen, and training still takes the fused
    layer, with the step loop's gradients."""
    from bench.models import small_network

    monkeypatch.setenv("GESTUREBENCH_NATIVE", "0")
    calls = []
    for name in ("fwd_step", "bwd_step", "depthwise", "depthwise_wgrad"):
        monkeypatch.setattr(loader.NativeKernels, name, lambda *a, _n=name, **k: calls.append(_n))
    torch.manual_seed(0)
    layer = ConvRecurrentLayer("a", in_channels=4, out_channels=4).double()
    assert implementation(layer) == "aten"
    assert implementation(small_network(cell="b")) == "aten"     # (b)'s step loop, then (a)'s fused layer
    assert implementation(small_network(cell="convlstm")) == "steploop"
    loop = ConvRecurrentLayer("a", in_channels=4, out_channels=4, recurrent_impl="steploop").double()
    loop.load_state_dict(layer.state_dict())
    x = torch.randn(1, 4, 3, 5, 5, dtype=torch.float64)
    grads = []
    for m, fused in ((layer, True), (loop, False)):
        xg = x.clone().requires_grad_(True)
        y = m(xg)
        assert (type(y.grad_fn).__name__ == "PermuteBackward0"
                and type(y.grad_fn.next_functions[0][0]).__name__ == "VariantALayerFunctionBackward") == fused
        y.sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
    assert not calls                                              # no kernel ran


def test_the_switch_imports_without_torch():
    """Configuration code validates ``recurrent_impl`` against RECURRENT_IMPLS without paying for
    torch."""
    code = ("import sys; from bench.models.native import RECURRENT_IMPLS, check_recurrent_impl; "
            "from bench.models import RECURRENT_IMPLS as again; "
            "assert again is RECURRENT_IMPLS and check_recurrent_impl('aten') == 'aten'; "
            "print(RECURRENT_IMPLS, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["('auto',", "'native',", "'aten',", "'steploop')", "False"]


def test_rational_tanh_is_within_float32_rounding_of_tanh(kernels):
    x = torch.cat([torch.linspace(-30, 30, 200_001), torch.tensor([0.0, 1e-30, -1e-30, 88.0, -88.0])])
    got = kernels.tanh(x)
    torch.testing.assert_close(got, torch.tanh(x), rtol=0, atol=3e-7)
    assert got.abs().max() <= 1.0 and got[-5] == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("b", "h", "w", "c", "k"), [(1, 28, 28, 16, 3), (2, 5, 7, 3, 5), (3, 4, 3, 9, 3),
                                                     (1, 1, 1, 4, 3)])
def test_depthwise_and_its_gradients_match_onednn(kernels, dtype, b, h, w, c, k):
    torch.manual_seed(0)
    x = torch.randn(b, h, w, c, dtype=dtype)
    weight = torch.randn(c, 1, k, k, dtype=dtype)
    d_out = torch.randn(b, h, w, c, dtype=dtype)
    taps = weight[:, 0].permute(1, 2, 0).contiguous()               # (K, K, C)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}

    out = torch.empty_like(x)
    kernels.depthwise(x, taps, out)
    ref = F.conv2d(x.permute(0, 3, 1, 2), weight, padding=k // 2, groups=c).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref, **tol)

    gi, gw, _ = torch.ops.aten.convolution_backward(
        d_out.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2), weight, None, (1, 1), (k // 2, k // 2), (1, 1),
        False, (0, 0), c, (True, True, False))
    kernels.depthwise(d_out, taps, out, flip=True)
    torch.testing.assert_close(out, gi.permute(0, 2, 3, 1), **tol)
    d_taps = torch.ones_like(taps)                                  # the kernel adds to what is there
    kernels.depthwise_wgrad(x, d_out, d_taps)
    torch.testing.assert_close(d_taps - 1, gw[:, 0].permute(1, 2, 0), **tol)


def test_kernels_are_deterministic_and_agree_across_thread_counts(kernels):
    torch.manual_seed(0)
    n, h, w, c = 2, 28, 28, 64                                      # above the threading threshold
    args = dict(dh=torch.randn(n, h, w, c), rec=torch.randn(n, h, w, c), r=torch.randn(n, c),
                ct=torch.randn(n, h, w, c), g=torch.rand(n, h, w, c) * 2 - 1,
                cp=torch.randn(n, h, w, c), z=torch.rand(n, 3 * c), dc=torch.randn(n, h, w, c))

    def run():
        dc, dg, dz = args["dc"].clone(), torch.empty_like(args["dc"]), torch.empty(n, 3 * c)
        kernels.bwd_step(args["dh"], args["rec"], args["r"], args["ct"], args["g"], args["cp"], args["z"],
                         True, dc, dg, dz)
        g, ct, hh, s = args["g"].clone(), *(torch.empty_like(args["g"]) for _ in range(2)), torch.empty(n, c)
        kernels.fwd_step(g, args["z"], args["cp"], ct, hh, s)
        return [dc, dg, dz, g, ct, hh, s]

    threads = torch.get_num_threads()
    try:
        first, again = run(), run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, one in zip(first, again, single):
        assert torch.equal(a, b)                                    # same thread count: bitwise
        torch.testing.assert_close(a, one, rtol=1e-5, atol=1e-5)   # sums in another order


def test_kernels_refuse_other_dtypes_and_strided_tensors(kernels):
    x = torch.randn(1, 4, 4, 8)
    with pytest.raises(TypeError, match="float32 or float64, not torch.float16"):
        kernels.depthwise(x.half(), torch.randn(3, 3, 8).half(), torch.empty_like(x).half())
    with pytest.raises(ValueError, match="contiguous"):
        kernels.depthwise(x.transpose(1, 2), torch.randn(3, 3, 8), torch.empty_like(x))
    with pytest.raises(TypeError, match="torch.float64 tensor on cpu, expected torch.float32"):
        kernels.depthwise(x, torch.randn(3, 3, 8, dtype=torch.float64), torch.empty_like(x))
    with pytest.raises(ValueError, match="expected 72 values, got shape \\(3, 3, 4\\)"):
        kernels.depthwise(x, torch.randn(3, 3, 4), torch.empty_like(x))


def test_depthwise_function_passes_gradcheck(kernels):
    from bench.models.native import DepthwiseConvFunction

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    x.requires_grad_(True), w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: DepthwiseConvFunction.apply(a, b, kernels), (x, w))


def _step_loop_cells_with_depthwise_convolutions() -> list[str]:
    """The registered cells without a fused layer whose depthwise convolutions the kernels run."""
    from bench.models import create_cell, list_cells

    out = []
    for name in list_cells():
        cell = create_cell(name, in_channels=4, out_channels=6)
        if type(cell) not in native.FUSED_LAYERS and any(native.DepthwiseConv2d.fits(m) for m in cell.modules()):
            out.append(name)
    return out


@pytest.mark.parametrize("cell", _step_loop_cells_with_depthwise_convolutions())
def test_cells_separable_convolutions_give_the_same_gradients_through_the_kernels(kernels, cell, monkeypatch):
    calls = []
    orig = loader.NativeKernels.depthwise
    monkeypatch.setattr(loader.NativeKernels, "depthwise",
                        lambda self, *a, **kw: (calls.append(1), orig(self, *a, **kw))[1])
    torch.manual_seed(0)
    layer = ConvRecurrentLayer(cell, in_channels=4, out_channels=6, recurrent_impl="native").double()
    loop = ConvRecurrentLayer(cell, in_channels=4, out_channels=6, recurrent_impl="steploop").double()
    loop.load_state_dict(layer.state_dict())
    assert implementation(layer) == "native" and implementation(loop) == "steploop"
    x = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64)
    grad = torch.randn(2, 6, 3, 5, 5, dtype=torch.float64)
    results = []
    for m in (layer, loop):
        xg = x.clone().requires_grad_(True)
        y = m(xg)
        y.backward(grad)
        results.append([y.detach(), xg.grad] + [p.grad for p in m.parameters()])
        if m is layer:
            assert calls, "the separable convolutions did not go through the kernels"
            calls.clear()
    assert not calls
    for a, ref in zip(*results):
        torch.testing.assert_close(a, ref, rtol=1e-10, atol=1e-12)


def test_mac_counting_sees_the_depthwise_convolutions_the_kernels_would_hide(kernels):
    from bench.models import count_macs

    layer = ConvRecurrentLayer("c", in_channels=4, out_channels=4)
    x = torch.randn(1, 4, 2, 5, 5)
    with torch.device("meta"):
        meta = count_macs(ConvRecurrentLayer("c", in_channels=4, out_channels=4), torch.empty(x.shape))
    assert count_macs(layer, x) == meta
