"""The autograd functions behind the C++ kernels: variant (a)'s recurrence over a whole layer
with a hand-written backward (CPU training and inference), and the depthwise convolution of
the cells' depthwise-separable convolutions.

Variant (a) does 35x fewer multiply-adds than ConvLSTM, so what surrounds them weighs on its
time: autograd records ~55 nodes a step and ATen makes a full pass over a (B, H, W, C) tensor per
element-wise op. PyTorch has no fused ConvLSTM op, so `VariantALayerFunction` writes the
recurrence out once, as cuDNN's LSTM does for its cell:

- forward and backward loop over time only, with no autograd graph inside; the GEMMs (the 1 x 1
  convolutions, the gates' FC) stay MKL's;
- with the C++ kernels (``loader.NativeKernels``, ``csrc/variant_a.cpp``): a step's element-wise
  forward (tanh, C_t, tanh(C_t), H_t and GAP(H_t)) is one pass, its backward (through H_t and
  C_t, the three gate sums over H x W) another, and the depthwise K x K convolution and its
  gradients are C++ too; tanh(C_t) is recomputed in the backward from C_t, which the step
  before has just read (C_t stays in cache, tanh(C_t) would come from memory);
- without them (``native=None``), ATen ops with ``out=``/in-place, ``tanh_backward``/
  ``sigmoid_backward``, tanh as 2 sigmoid(2x) - 1 and the gate sums as one GEMV (``fast_tanh``,
  ``_hw_sum``);
- step 0 skips the hidden terms (H_{-1} = 0 and no bias: exactly zero), forward and backward;
- the input terms' gradients land in one (T, B, H, W, C) buffer directly, with no stack.

``bench perf cells --step-loop`` times the three ways side by side (rows ``a``, ``a+aten``,
``a+steploop``; docs/BENCHMARKS.md). Which one a layer runs is its ``recurrent_impl``
(``strategy.py``).

Layout: NHWC per step, ``(T, B, H, W, C)`` for a sequence, as the step loop of
``ConvRecurrentLayer`` runs it. ``tests/test_fused.py`` checks it against that loop (values
and every gradient, float64, with and without the kernels) and with ``gradcheck``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def fast_tanh(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1, written to ``out``.

    On CPU these four passes take less time than ATen's tanh (SLEEF's 1-ulp tanhf); the result
    is within 2e-7 of it (absolute), far below bf16/fp32 training noise. On other devices:
    ``torch.tanh``.
    """
    if x.device.type != "cpu":
        return torch.tanh(x, out=out)
    torch.mul(x, 2.0, out=out)
    torch.sigmoid(out, out=out)
    return out.mul_(2.0).sub_(1.0)


def _hw_sum(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, HW, N) -> (B, N): the sum over H x W, weighted by the row ``weights`` (1, HW).

    A GEMV, not ``x.sum(1)``: on CPU ATen's reduction over a strided middle dim is slower than
    MKL's GEMV at the recurrent layers' shapes."""
    if x.shape[0] == 1:
        return torch.mm(weights, x[0])
    return torch.matmul(weights, x).squeeze(1)


class VariantALayerFunction(torch.autograd.Function):
    """H_1..H_T of variant (a) from its hoisted input terms, starting from H_0 = C_0 = 0.

    Inputs: ``xg`` (T, B, H, W, C) = W_xc * X_t + b_c; ``xfc`` (T, B, 3C) = W_x GAP(X_t) + b in
    gate order i, f, o; the hidden weights ``dw`` (C, 1, K, K) (depthwise of W_hc), ``pw``
    (C, C) (pointwise of W_hc) and ``wgh`` (3C, C) (W_h). Returns H as (T, B, H, W, C).
    """

    @staticmethod
    def forward(ctx, xg, xfc, dw, pw, wgh, native=None):
        ctx.native = native
        hs, zs, ss, taps, ds, gs, cs, tcs = VariantALayerFunction.run(xg, xfc, dw, pw, wgh, native, keep=True)
        ctx.save_for_backward(hs, zs, ss, dw, taps, pw, wgh, *ds, *gs, *cs, *tcs)
        return hs

    @staticmethod
    def run(xg, xfc, dw, pw, wgh, native, *, keep: bool):
        """The forward recurrence; ``keep``: hold every step's intermediates for the backward
        (otherwise only what the next step reads, as inference wants)."""
        steps, b, height, width, c = xg.shape
        hw = height * width
        pad = dw.shape[-1] // 2
        # the depthwise K x K in C++ too (odd K: its input gradient is the mirrored convolution)
        taps = dw[:, 0].permute(1, 2, 0).contiguous() if native is not None and dw.shape[-1] % 2 else None
        hs = torch.empty_like(xg)            # H_t, the output
        zs = xfc.new_empty(steps, b, 3 * c)  # i, f, o
        ss = xfc.new_zeros(steps, b, c)      # GAP(H_{t-1}); H_{-1} = 0
        # Per-step tensors, not (T, ...) buffers: glibc serves these sizes from its heap and
        # recycles them between iterations, where a buffer for the sequence is a fresh mmap
        # to page-fault in every time (7,500 faults an iteration at the paper's shapes).
        ds, gs, cs, tcs = [None], [], [], []  # depthwise(H_{t-1}) (none at t = 0), G_t, C_t, tanh(C_t)
        mean_row = xg.new_full((1, hw), 1.0 / hw)
        h_prev = None
        for t in range(steps):
            if t == 0:
                # H_{-1} = 0 and neither W_hc nor W_h has a bias: the hidden terms are exactly 0
                gpre = xg[0].clone().view(-1, c)
                z = torch.sigmoid(xfc[0], out=zs[0])
            else:
                # W_hc * H_{t-1}: depthwise K x K (C++, else oneDNN; NHWC), then the 1 x 1 as a
                # GEMM (MKL) that also adds the hoisted input term
                if taps is not None:
                    d = torch.empty_like(h_prev)
                    native.depthwise(h_prev, taps, d)
                else:
                    d = F.conv2d(h_prev.permute(0, 3, 1, 2), dw, padding=pad, groups=c).permute(0, 2, 3, 1)
                d = d.contiguous().view(-1, c)
                if keep:
                    ds.append(d)
                gpre = torch.addmm(xg[t].view(-1, c), d, pw.t())
                z = torch.sigmoid(torch.addmm(xfc[t], ss[t], wgh.t()), out=zs[t])
            s_next = ss[t + 1] if t + 1 < steps else None
            if native is not None:       # one pass: tanh, C_t, tanh(C_t), H_t and its GAP
                g = gpre.view(b, height, width, c)
                ct = torch.empty_like(g)
                native.fwd_step(g, z, cs[-1] if t else None, ct, hs[t], s_next)
                tc = None                # recomputed in the backward from C_t
            else:
                g = fast_tanh(gpre, out=gpre).view(b, height, width, c)
                i, f, o = z.view(b, 1, 1, 3 * c).split(c, dim=-1)
                ct = torch.mul(g, i)
                if t:
                    ct.addcmul_(cs[-1], f)                   # f o C_{t-1} + i o G_t
                tc = fast_tanh(ct, out=torch.empty_like(ct))
                torch.mul(tc, o, out=hs[t])                  # o o tanh(C_t)
                if s_next is not None:
                    s_next.copy_(_hw_sum(mean_row, hs[t].view(b, hw, c)))
            h_prev = hs[t]
            if not keep:
                cs.clear()               # C_{t-1}, all the next step reads
            cs.append(ct)
            if keep:
                gs.append(g)
                if tc is not None:
                    tcs.append(tc)
        return hs, zs, ss, taps, ds, gs, cs, tcs

    @staticmethod
    @once_differentiable          # the backward is written by hand: no double backward
    def backward(ctx, d_hs):
        hs, zs, ss, dw, taps, pw, wgh, *saved = ctx.saved_tensors
        steps, b, height, width, c = hs.shape
        ds, gs, cs, tcs = (saved[k * steps:(k + 1) * steps] for k in range(4))  # tcs: ATen steps only
        hw = height * width
        pad = dw.shape[-1] // 2
        native = ctx.native
        d_hs = d_hs.contiguous()
        d_xg = torch.empty_like(hs)
        d_xfc = zs.new_empty(zs.shape)
        d_dw = torch.zeros_like(dw)
        d_taps = torch.zeros_like(taps) if taps is not None else None  # d_dw as (K, K, C)
        d_pw = torch.zeros_like(pw)
        d_wgh = torch.zeros_like(wgh)
        ones_row = hs.new_ones(1, hw)
        if native is not None:
            dc_buf = torch.empty_like(hs[0])                 # dL/dC_t o f_t, handed to step t-1
        else:
            prods = hs.new_empty(b, height, width, 3 * c)    # dL/di, dL/df, dL/do before the sum
        dh_rec = r = dc_next = None                          # from step t+1 into H_t, C_t
        for t in reversed(range(steps)):
            z = zs[t]
            dz, dg = d_xfc[t], d_xg[t]
            if native is not None:       # one pass: dG_pre, dC_t o f, and the gates' sums
                native.bwd_step(d_hs[t], dh_rec, r, cs[t], gs[t], cs[t - 1] if t else None, z,
                                t < steps - 1, dc_buf, dg, dz)
            else:
                i, f, o = z.view(b, 1, 1, 3 * c).split(c, dim=-1)
                dh = d_hs[t] if dh_rec is None else dh_rec.add_(d_hs[t]).add_(r.view(b, 1, 1, c))
                torch.mul(dh, tcs[t], out=prods[..., 2 * c:])                      # -> dL/do
                dc = torch.ops.aten.tanh_backward(dh * o, tcs[t])                 # through tanh(C_t)
                if dc_next is not None:
                    dc.add_(dc_next)
                torch.mul(dc, gs[t], out=prods[..., :c])                           # -> dL/di
                if t:
                    torch.mul(dc, cs[t - 1], out=prods[..., c:2 * c])              # -> dL/df
                else:
                    prods[..., c:2 * c].zero_()
                torch.ops.aten.sigmoid_backward.grad_input(_hw_sum(ones_row, prods.view(b, hw, 3 * c)), z, grad_input=dz)
                torch.ops.aten.tanh_backward.grad_input(dc * i, gs[t], grad_input=dg)  # dL/d(pre-G_t)
                dc_next = dc.mul_(f)
            if t == 0:
                break                                        # H_{-1} = 0: nothing flows further
            dg2 = dg.view(-1, c)
            d_pw.addmm_(dg2.t(), ds[t])
            dd = torch.mm(dg2, pw).view(b, height, width, c)
            h_prev = hs[t - 1]
            d_wgh.addmm_(dz.t(), ss[t])
            # dL/dH_{t-1}: through the depthwise convolution, and through GAP a broadcast of r
            if taps is not None:
                dh_rec = torch.empty_like(dd)
                native.depthwise(dd, taps, dh_rec, flip=True)
                native.depthwise_wgrad(h_prev, dd, d_taps)
            else:
                gi, gw, _ = torch.ops.aten.convolution_backward(
                    dd.permute(0, 3, 1, 2), h_prev.permute(0, 3, 1, 2), dw, None, (1, 1), (pad, pad),
                    (1, 1), False, (0, 0), c, (True, True, False))
                d_dw.add_(gw)
                dh_rec = gi.permute(0, 2, 3, 1).contiguous()
            r = torch.mm(dz, wgh).mul_(1.0 / hw)
        if taps is not None:
            d_dw.copy_(d_taps.permute(2, 0, 1).unsqueeze(1))
        return d_xg, d_xfc, d_dw, d_pw, d_wgh, None


class DepthwiseConvFunction(torch.autograd.Function):
    """Depthwise K x K convolution (stride 1, zero padding K // 2, odd K) of a channels_last
    (B, C, H, W) tensor, forward and backward through the C++ kernels.

    ``strategy.DepthwiseConv2d`` (the depthwise stage of the cells' depthwise-separable
    convolutions under ``recurrent_impl`` "native" or "auto") calls it on CPU; docs/BENCHMARKS.md
    has what it buys inside the (a) layer and in the step loops of (b)-(d).
    """

    @staticmethod
    def forward(ctx, x, weight, native):
        xn = x.permute(0, 2, 3, 1).contiguous()          # a view when x is channels_last
        taps = weight[:, 0].permute(1, 2, 0).contiguous()
        # outputs are channels_last tensors, not permuted views: autograd then sums the
        # gradients that meet at a tensor in place (a view's would be added out of place)
        out = torch.empty(x.shape, dtype=x.dtype, memory_format=torch.channels_last)
        native.depthwise(xn, taps, out.permute(0, 2, 3, 1))
        ctx.native = native
        ctx.save_for_backward(xn, taps)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):
        xn, taps = ctx.saved_tensors
        g = d_out.permute(0, 2, 3, 1).contiguous()
        d_x = d_w = None
        if ctx.needs_input_grad[0]:
            d_x = torch.empty(d_out.shape, dtype=g.dtype, memory_format=torch.channels_last)
            ctx.native.depthwise(g, taps, d_x.permute(0, 2, 3, 1), flip=True)
        if ctx.needs_input_grad[1]:
            d_taps = torch.zeros_like(taps)
            ctx.native.depthwise_wgrad(xn, g, d_taps)
            d_w = d_taps.permute(2, 0, 1).unsqueeze(1).contiguous()
        return d_x, d_w, None


def variant_a_inference(xg, xfc, dw, pw, wgh, native):
    """H_1..H_T as ``VariantALayerFunction`` computes them, holding no more than a step's worth
    of intermediates: the layer's forward without autograd (evaluation, ``torch.no_grad``)."""
    return VariantALayerFunction.run(xg, xfc, dw, pw, wgh, native, keep=False)[0]
