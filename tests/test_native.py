"""The C++ kernels of variant (a)'s fused layer (bench/models/csrc): their build and cache, what
happens without them, and each kernel against the ATen op it replaces."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from bench.models import _native


@pytest.fixture
def kernels(cpp_kernels):
    return cpp_kernels


def test_build_is_cached_by_source_and_compiler(tmp_path):
    first = _native.build(directory=tmp_path)
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert _native.build(directory=tmp_path) == first            # found, not rebuilt
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]    # no temporary left behind


def test_a_failing_compiler_is_named_in_the_error(tmp_path):
    fake = tmp_path / "fake-c++"
    fake.write_text("#!/bin/sh\necho 'fake-c++: error: no such target' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)fake-c\+\+ failed on .*variant_a\.cpp.*no such target"):
        _native.build(compiler=str(fake), directory=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())                 # nothing half-written


def test_load_falls_back_with_a_warning_when_the_build_fails(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler (c++, g++ or clang++ on PATH, or $CXX)")
    monkeypatch.setattr(_native, "build", broken)
    _native.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="using ATen ops: no C\\+\\+ compiler"):
            assert _native.load() is None
        _native.load.cache_clear()
        monkeypatch.setenv("GESTUREBENCH_NATIVE", "0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")                        # turned off: no warning
            assert _native.load() is None
    finally:
        _native.load.cache_clear()


def test_training_without_the_kernels_still_runs_the_fused_layer(monkeypatch):
    from bench.models.recurrent import ConvRecurrentLayer

    monkeypatch.setattr(_native, "load", lambda: None)
    torch.manual_seed(0)
    layer = ConvRecurrentLayer("a", in_channels=4, out_channels=4).double()
    x = torch.randn(1, 4, 3, 5, 5, dtype=torch.float64)
    grads = []
    for fused in (True, False):
        layer.cell.fused_layer = fused
        xg = x.clone().requires_grad_(True)
        y = layer(xg)
        assert (type(y.grad_fn).__name__ == "PermuteBackward0"
                and type(y.grad_fn.next_functions[0][0]).__name__ == "VariantALayerFunctionBackward") == fused
        y.sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


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
    from bench.models.fused import DepthwiseConvFunction

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    x.requires_grad_(True), w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: DepthwiseConvFunction.apply(a, b, kernels), (x, w))


@pytest.mark.parametrize("cell", ["b", "c", "d"])
def test_cells_separable_convolutions_give_the_same_gradients_through_the_kernels(kernels, cell, monkeypatch):
    from bench.models.recurrent import ConvRecurrentLayer

    calls = []
    orig = _native.NativeKernels.depthwise
    monkeypatch.setattr(_native.NativeKernels, "depthwise",
                        lambda self, *a, **kw: (calls.append(1), orig(self, *a, **kw))[1])
    torch.manual_seed(0)
    layer = ConvRecurrentLayer(cell, in_channels=4, out_channels=6).double()
    x = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64)
    grad = torch.randn(2, 6, 3, 5, 5, dtype=torch.float64)
    results = []
    for native in (True, False):
        for m in layer.modules():
            if hasattr(m, "native_kernels"):
                m.native_kernels = native
        layer.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        y = layer(xg)
        y.backward(grad)
        results.append([y.detach(), xg.grad] + [p.grad for p in layer.parameters()])
        if native:
            assert calls, "the separable convolutions did not go through the kernels"
    for a, ref in zip(*results):
        torch.testing.assert_close(a, ref, rtol=1e-10, atol=1e-12)


def test_mac_counting_sees_the_depthwise_convolutions_the_kernels_would_hide(kernels):
    from bench.models import count_macs
    from bench.models.recurrent import ConvRecurrentLayer

    layer = ConvRecurrentLayer("c", in_channels=4, out_channels=4)
    x = torch.randn(1, 4, 2, 5, 5)
    with torch.device("meta"):
        meta = count_macs(ConvRecurrentLayer("c", in_channels=4, out_channels=4), torch.empty(x.shape))
    assert count_macs(layer, x) == meta
